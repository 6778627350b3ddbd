//! Deployment plans and the rolling-upgrade arithmetic, as Marathon
//! computes them. Pure functions: the framework applies their results.

use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};

use crate::app::App;

#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq, PartialOrd, Ord)]
#[allow(clippy::enum_variant_names)] // Marathon's own action names.
pub enum ActionKind {
    StartApplication,
    StopApplication,
    ScaleApplication,
    RestartApplication,
}

impl ActionKind {
    pub fn name(self) -> &'static str {
        match self {
            ActionKind::StartApplication => "StartApplication",
            ActionKind::StopApplication => "StopApplication",
            ActionKind::ScaleApplication => "ScaleApplication",
            ActionKind::RestartApplication => "RestartApplication",
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Action {
    pub kind: ActionKind,
    pub app: String,
}

/// The steps that take `original` to `target` (apps by id; `None` = absent),
/// `restart` naming apps to restart even with an unchanged definition.
pub fn plan(
    original: &BTreeMap<String, Option<App>>,
    target: &BTreeMap<String, Option<App>>,
    restart: &BTreeSet<String>,
) -> Vec<Vec<Action>> {
    let mut steps: Vec<Vec<Action>> = Vec::new();
    let ids: BTreeSet<&String> = original.keys().chain(target.keys()).collect();
    let stops: Vec<Action> = ids
        .iter()
        .filter(|id| {
            original.get(**id).is_some_and(Option::is_some)
                && target.get(**id).is_none_or(Option::is_none)
        })
        .map(|id| Action {
            kind: ActionKind::StopApplication,
            app: (*id).clone(),
        })
        .collect();
    steps.push(stops);
    let starts: Vec<Action> = ids
        .iter()
        .filter(|id| {
            original.get(**id).is_none_or(Option::is_none)
                && target.get(**id).is_some_and(Option::is_some)
        })
        .map(|id| Action {
            kind: ActionKind::StartApplication,
            app: (*id).clone(),
        })
        .collect();
    steps.push(starts);
    // The rest in dependency order: apps with longer dependency chains
    // come later.
    let targets: BTreeMap<&String, &App> = target
        .iter()
        .filter_map(|(id, a)| a.as_ref().map(|a| (id, a)))
        .collect();
    let mut by_depth: BTreeMap<usize, Vec<Action>> = BTreeMap::new();
    for (id, app) in &targets {
        let old = original.get(*id).and_then(Option::as_ref);
        let kind = match old {
            None => Some(ActionKind::ScaleApplication),
            Some(o) if restart.contains(*id) || !o.same_config(app) => {
                Some(ActionKind::RestartApplication)
            }
            Some(o) if o.instances != app.instances => Some(ActionKind::ScaleApplication),
            Some(_) => None,
        };
        if let Some(kind) = kind {
            let depth = depth_of(id, &targets, &mut BTreeSet::new());
            by_depth.entry(depth).or_default().push(Action {
                kind,
                app: (*id).clone(),
            });
        }
    }
    steps.extend(by_depth.into_values());
    steps.retain(|s| !s.is_empty());
    steps
}

/// The length of the longest dependency chain below `id` (cycles cut).
fn depth_of(id: &str, apps: &BTreeMap<&String, &App>, seen: &mut BTreeSet<String>) -> usize {
    if !seen.insert(id.to_string()) {
        return 0;
    }
    let d = apps
        .get(&id.to_string())
        .map(|a| {
            a.dependencies
                .iter()
                .filter(|d| apps.contains_key(d))
                .map(|d| 1 + depth_of(d, apps, seen))
                .max()
                .unwrap_or(0)
        })
        .unwrap_or(0);
    seen.remove(id);
    d
}

/// What a rolling restart may do now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rolling {
    pub min_healthy: u32,
    pub max_capacity: u32,
}

/// Marathon's bounds for replacing `n` instances: at least `min_healthy`
/// healthy at all times, at most `max_capacity` instances alive.
/// `healthy_now` is the healthy count (old and new) when computed.
/// `resident`: the instances keep their volumes, so a new one can start
/// only where an old one ended.
pub fn rolling(
    n: u32,
    min_health: f64,
    max_over: f64,
    healthy_now: u32,
    resident: bool,
) -> Rolling {
    let mut min_healthy = (f64::from(n) * min_health - 1e-9).ceil().max(0.0) as u32;
    let mut max_capacity = (f64::from(n) * (1.0 + max_over) + 1e-9).floor() as u32;
    if min_healthy == max_capacity && max_capacity <= healthy_now {
        // No progress would ever be possible: one surplus instance, or,
        // for resident ones, one killed first.
        if resident {
            min_healthy = min_healthy.saturating_sub(1);
        } else {
            max_capacity += 1;
        }
    }
    Rolling {
        min_healthy,
        max_capacity,
    }
}

/// One decision of a rolling restart.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RollingStep {
    /// Old healthy instances to kill now (unhealthy old ones are always
    /// killed: they add no capacity).
    pub kill_healthy_old: u32,
    /// New instances to launch now.
    pub launch: u32,
}

/// `healthy` counts old and new healthy instances with goal running;
/// `alive` every instance not yet terminal (killed old ones included, as
/// they hold capacity until they end); `new_started` new ones alive.
pub fn rolling_step(
    n: u32,
    bounds: Rolling,
    healthy_old: u32,
    healthy_new: u32,
    alive: u32,
    new_started: u32,
) -> RollingStep {
    let healthy = healthy_old + healthy_new;
    let kill_healthy_old = healthy.saturating_sub(bounds.min_healthy).min(healthy_old);
    let launch = n
        .saturating_sub(new_started)
        .min(bounds.max_capacity.saturating_sub(alive));
    RollingStep {
        kill_healthy_old,
        launch,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn app(id: &str, v: serde_json::Value) -> App {
        App::from_json(id, &v).unwrap()
    }

    #[test]
    fn bounds_follow_marathons_worked_examples() {
        // Defaults, n=3: min 3, max 6.
        assert_eq!(
            rolling(3, 1.0, 1.0, 3, false),
            Rolling {
                min_healthy: 3,
                max_capacity: 6
            }
        );
        // n=4, {0.5, 0}: min 2, max 4.
        assert_eq!(
            rolling(4, 0.5, 0.0, 4, false),
            Rolling {
                min_healthy: 2,
                max_capacity: 4
            }
        );
        // n=1, {1, 0}: max bumped to 2.
        assert_eq!(
            rolling(1, 1.0, 0.0, 1, false),
            Rolling {
                min_healthy: 1,
                max_capacity: 2
            }
        );
        // A resident one, n=1, {0.5, 0}: the old one goes first.
        assert_eq!(
            rolling(1, 0.5, 0.0, 1, true),
            Rolling {
                min_healthy: 0,
                max_capacity: 1
            }
        );
    }

    #[test]
    fn half_capacity_kills_two_old_then_replaces_as_they_end() {
        let b = rolling(4, 0.5, 0.0, 4, false);
        // Four healthy old instances, nothing new yet.
        let s = rolling_step(4, b, 4, 0, 4, 0);
        assert_eq!(
            s,
            RollingStep {
                kill_healthy_old: 2,
                launch: 0
            }
        );
        // The two killed ones ended: two launches.
        let s = rolling_step(4, b, 2, 0, 2, 0);
        assert_eq!(
            s,
            RollingStep {
                kill_healthy_old: 0,
                launch: 2
            }
        );
        // One new became healthy: one more old may go.
        let s = rolling_step(4, b, 2, 1, 4, 2);
        assert_eq!(
            s,
            RollingStep {
                kill_healthy_old: 1,
                launch: 0
            }
        );
    }

    #[test]
    fn default_strategy_starts_all_new_before_killing() {
        let b = rolling(3, 1.0, 1.0, 3, false);
        let s = rolling_step(3, b, 3, 0, 3, 0);
        assert_eq!(
            s,
            RollingStep {
                kill_healthy_old: 0,
                launch: 3
            }
        );
        let s = rolling_step(3, b, 3, 2, 6, 3);
        assert_eq!(
            s,
            RollingStep {
                kill_healthy_old: 2,
                launch: 0
            }
        );
    }

    #[test]
    fn plans_stop_start_then_scale_or_restart_in_dependency_order() {
        let db = app("/db", json!({"cmd": "db"}));
        let web = app("/web", json!({"cmd": "web", "dependencies": ["/db"]}));
        let old = app("/old", json!({"cmd": "old"}));
        let original = BTreeMap::from([("/old".to_string(), Some(old))]);
        let target = BTreeMap::from([
            ("/db".to_string(), Some(db.clone())),
            ("/web".to_string(), Some(web)),
            ("/old".to_string(), None),
        ]);
        let steps = plan(&original, &target, &BTreeSet::new());
        let names: Vec<Vec<(&str, &str)>> = steps
            .iter()
            .map(|s| s.iter().map(|a| (a.kind.name(), a.app.as_str())).collect())
            .collect();
        assert_eq!(
            names,
            vec![
                vec![("StopApplication", "/old")],
                vec![("StartApplication", "/db"), ("StartApplication", "/web")],
                vec![("ScaleApplication", "/db")],
                vec![("ScaleApplication", "/web")],
            ]
        );
        // A scale-only change scales; a config change restarts.
        let mut more = db.clone();
        more.instances = 5;
        let o = BTreeMap::from([("/db".to_string(), Some(db.clone()))]);
        let t = BTreeMap::from([("/db".to_string(), Some(more))]);
        assert_eq!(
            plan(&o, &t, &BTreeSet::new())[0][0].kind,
            ActionKind::ScaleApplication
        );
        let mut changed = db.clone();
        changed.cmd = Some("db2".into());
        let t = BTreeMap::from([("/db".to_string(), Some(changed))]);
        assert_eq!(
            plan(&o, &t, &BTreeSet::new())[0][0].kind,
            ActionKind::RestartApplication
        );
        let t = BTreeMap::from([("/db".to_string(), Some(db))]);
        assert!(plan(&o, &t, &BTreeSet::new()).is_empty());
    }
}
