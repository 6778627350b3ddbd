//! Why each task went where it did, and why a waiting group fits nowhere:
//! the decision records frameworks send (`placement-service.explain`; the
//! SDK's packer sends them by itself) and, for a launch no record came
//! with (a Mesos API framework's), the bare fact of the framework's
//! choice. Kept in the leading master's memory, bounded: the newest
//! [`Placements::TASKS`] tasks and [`Placements::WAITING`] waiting groups.
//! They are diagnostics, not state: a new leader starts without them.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};

use serde::{Deserialize, Serialize};
use wasmos_core::{FrameworkId, Resources};
use wasmos_runtime::placement::{Decision, Judged};

/// One agent looked at, as served.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Candidate {
    pub agent_id: String,
    pub hostname: String,
    /// Why it could not take the task; absent if it could.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub refused: Option<String>,
    pub score: f64,
}

/// How many offers one reason ruled out.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Refusal {
    pub reason: String,
    pub offers: u32,
}

/// A placement decision as `/api/wasmos/v1/tasks/{id}/placement` serves it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Record {
    /// Absent for a group that waits.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub task_id: Option<String>,
    pub framework_id: String,
    /// The app id, job name or task group it was placed for.
    pub group: String,
    /// When it was decided (seconds since the Unix epoch).
    pub at: f64,
    /// Whether the framework explained itself (false: only its choice is
    /// known).
    pub explained: bool,
    pub resources: Resources,
    pub rules: Vec<String>,
    /// Offers looked at.
    pub offers: u32,
    pub refusals: Vec<Refusal>,
    /// The chosen agent first, then a sample of the others.
    pub candidates: Vec<Candidate>,
    /// The agent chosen; absent while the group waits.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub chosen: Option<String>,
    pub summary: String,
}

impl Record {
    fn from_decision(framework: &FrameworkId, at: f64, d: Decision) -> Record {
        Record {
            task_id: d.task_id,
            framework_id: framework.to_string(),
            group: d.group,
            at,
            explained: true,
            resources: d.resources,
            rules: d.rules,
            offers: d.offers,
            refusals: d
                .refusals
                .into_iter()
                .map(|(reason, offers)| Refusal { reason, offers })
                .collect(),
            candidates: d
                .candidates
                .into_iter()
                .map(
                    |Judged {
                         agent_id,
                         hostname,
                         refused,
                         score,
                     }| Candidate {
                        agent_id,
                        hostname,
                        refused,
                        score,
                    },
                )
                .collect(),
            chosen: d.chosen,
            summary: d.summary,
        }
    }
}

/// A launch no decision came with: what the master saw of it.
#[derive(Debug, Clone)]
pub struct Unexplained {
    pub task_id: String,
    pub group: String,
    pub agent_id: String,
    pub hostname: String,
    pub resources: Resources,
}

/// A bounded map that forgets its oldest entries.
#[derive(Debug)]
struct Ring<K> {
    cap: usize,
    seq: u64,
    map: HashMap<K, (u64, Arc<Record>)>,
    order: VecDeque<(u64, K)>,
}

impl<K: std::hash::Hash + Eq + Clone> Ring<K> {
    fn new(cap: usize) -> Self {
        Ring {
            cap,
            seq: 0,
            map: HashMap::new(),
            order: VecDeque::new(),
        }
    }

    fn put(&mut self, k: K, r: Arc<Record>) {
        self.seq += 1;
        self.map.insert(k.clone(), (self.seq, r));
        self.order.push_back((self.seq, k));
        // Forget the oldest live entries past the cap (an entry replaced
        // or removed since leaves a stale place in the order: skipped).
        while self.map.len() > self.cap {
            let Some((seq, k)) = self.order.pop_front() else {
                break;
            };
            if self.map.get(&k).is_some_and(|(s, _)| *s == seq) {
                self.map.remove(&k);
            }
        }
        if self.order.len() > 2 * self.cap.max(1) {
            let map = &self.map;
            self.order
                .retain(|(seq, k)| map.get(k).is_some_and(|(s, _)| s == seq));
        }
    }

    fn remove(&mut self, k: &K) {
        self.map.remove(k);
    }
}

#[derive(Debug)]
struct Inner {
    tasks: Ring<String>,
    /// By framework, then group: each framework has its own bound, so
    /// one with many waiting groups cannot push out another's.
    waiting: HashMap<String, Ring<String>>,
    waiting_cap: usize,
}

/// The records, shared by the leader's tasks.
#[derive(Debug)]
pub struct Placements {
    inner: Mutex<Inner>,
}

impl Default for Placements {
    fn default() -> Self {
        Self::with_capacity(Self::TASKS, Self::WAITING)
    }
}

impl Placements {
    /// Tasks whose decision is kept (the newest).
    pub const TASKS: usize = 10_000;
    /// Waiting groups whose latest refusal is kept, per framework.
    pub const WAITING: usize = 2_000;

    pub fn with_capacity(tasks: usize, waiting: usize) -> Self {
        Placements {
            inner: Mutex::new(Inner {
                tasks: Ring::new(tasks),
                waiting: HashMap::new(),
                waiting_cap: waiting,
            }),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Keeps a framework's decisions, in order: a placed task's replaces
    /// its group's refusal, a refusal is its group's newest. With `renew`
    /// (the framework looked at everything that waits, as the SDK's
    /// packer does each round of offers), the refusals are all that waits:
    /// older ones of groups not refused again are dropped.
    pub fn record(&self, framework: &FrameworkId, at: f64, decisions: Vec<Decision>, renew: bool) {
        if decisions.is_empty() && !renew {
            return;
        }
        let mut inner = self.lock();
        let inner = &mut *inner;
        let cap = inner.waiting_cap;
        let waiting = inner
            .waiting
            .entry(framework.to_string())
            .or_insert_with(|| Ring::new(cap));
        if renew {
            *waiting = Ring::new(cap);
        }
        for d in decisions {
            let r = Record::from_decision(framework, at, d);
            match r.task_id.clone() {
                Some(task) if r.chosen.is_some() => {
                    waiting.remove(&r.group);
                    inner.tasks.put(task, Arc::new(r));
                }
                _ if !r.group.is_empty() => waiting.put(r.group.clone(), Arc::new(r)),
                _ => {}
            }
        }
        if waiting.map.is_empty() {
            inner.waiting.remove(framework.as_str());
        }
    }

    /// Keeps the bare facts of launches no decision came with.
    pub fn record_unexplained(
        &self,
        framework: &FrameworkId,
        at: f64,
        launches: impl IntoIterator<Item = Unexplained>,
    ) {
        let mut inner = self.lock();
        for u in launches {
            // An explanation sent with this launch stays; a bare record of
            // an earlier launch of the same id (a reused one) is replaced.
            if inner
                .tasks
                .map
                .get(&u.task_id)
                .is_some_and(|(_, r)| r.explained)
            {
                continue;
            }
            let r = Record {
                task_id: Some(u.task_id.clone()),
                framework_id: framework.to_string(),
                group: u.group,
                at,
                explained: false,
                resources: u.resources,
                rules: Vec::new(),
                offers: 1,
                refusals: Vec::new(),
                candidates: vec![Candidate {
                    agent_id: u.agent_id.clone(),
                    hostname: u.hostname.clone(),
                    refused: None,
                    score: 0.0,
                }],
                chosen: Some(u.agent_id),
                summary: format!(
                    "framework {framework} chose {} (it accepted that agent's offer) and gave no reasons: \
                     only frameworks that explain their placements (the bundled ones, and plugins placing with the Rust or Python SDK's packer) say why",
                    u.hostname
                ),
            };
            inner.tasks.put(u.task_id, Arc::new(r));
        }
    }

    /// The decision that placed a task; for an `exec` task not placed yet
    /// that is its own group (no `--group`), its refusal.
    pub fn task(&self, id: &str) -> Option<Arc<Record>> {
        let inner = self.lock();
        if let Some((_, r)) = inner.tasks.map.get(id) {
            return Some(r.clone());
        }
        inner
            .waiting
            .get("exec")?
            .map
            .get(id)
            .map(|(_, r)| r.clone())
    }

    /// A framework's waiting groups' refusals (one group's if given),
    /// newest first.
    pub fn waiting(&self, framework: &str, group: Option<&str>) -> Vec<Arc<Record>> {
        let inner = self.lock();
        let Some(ring) = inner.waiting.get(framework) else {
            return Vec::new();
        };
        let mut out: Vec<Arc<Record>> = match group {
            Some(g) => ring
                .map
                .get(g)
                .map(|(_, r)| r.clone())
                .into_iter()
                .collect(),
            None => ring.map.values().map(|(_, r)| r.clone()).collect(),
        };
        out.sort_by(|a, b| b.at.total_cmp(&a.at).then(a.group.cmp(&b.group)));
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn decision(task: Option<&str>, group: &str, chosen: Option<&str>) -> Decision {
        Decision {
            task_id: task.map(String::from),
            group: group.into(),
            resources: Resources::default(),
            rules: vec!["[hostname, UNIQUE]".into()],
            offers: 2,
            refusals: vec![("InsufficientCpus".into(), 1)],
            candidates: Vec::new(),
            chosen: chosen.map(String::from),
            summary: "s".into(),
        }
    }

    fn fw() -> FrameworkId {
        "marathon".parse().unwrap()
    }

    #[test]
    fn a_placed_task_replaces_its_groups_refusal_and_a_refusal_is_the_groups_newest() {
        let p = Placements::default();
        p.record(&fw(), 1.0, vec![decision(None, "/a", None)], false);
        p.record(&fw(), 2.0, vec![decision(None, "/a", None)], false);
        let w = p.waiting("marathon", Some("/a"));
        assert_eq!(w.len(), 1);
        assert_eq!(w[0].at, 2.0);
        assert!(p.waiting("chronos", None).is_empty());
        p.record(
            &fw(),
            3.0,
            vec![decision(Some("t1"), "/a", Some("ag1"))],
            false,
        );
        assert!(p.waiting("marathon", None).is_empty());
        let t = p.task("t1").unwrap();
        assert_eq!(
            (t.chosen.as_deref(), t.explained, t.refusals[0].offers),
            (Some("ag1"), true, 1)
        );
    }

    #[test]
    fn only_the_newest_records_are_kept() {
        let p = Placements::with_capacity(3, 2);
        for i in 0..10 {
            let id = format!("t{i}");
            let placed = || vec![decision(Some(&id), "/a", Some("ag"))];
            p.record(&fw(), i as f64, placed(), false);
            // Replacing a kept one does not grow the order without bound.
            p.record(&fw(), i as f64, placed(), false);
            let refused = vec![decision(None, &format!("/g{i}"), None)];
            p.record(&fw(), i as f64, refused, false);
        }
        let kept: Vec<bool> = (0..10)
            .map(|i| p.task(&format!("t{i}")).is_some())
            .collect();
        assert_eq!(kept, [vec![false; 7], vec![true; 3]].concat());
        let inner = p.lock();
        assert!(inner.tasks.order.len() <= 6, "{}", inner.tasks.order.len());
        drop(inner);
        let groups: Vec<String> = p
            .waiting("marathon", None)
            .iter()
            .map(|r| r.group.clone())
            .collect();
        assert_eq!(groups, ["/g9", "/g8"]);
    }

    #[test]
    fn an_unexplained_launch_names_the_frameworks_choice_without_replacing_an_explanation() {
        let p = Placements::default();
        p.record(
            &fw(),
            1.0,
            vec![decision(Some("t1"), "/a", Some("ag1"))],
            false,
        );
        let bare = |id: &str| Unexplained {
            task_id: id.into(),
            group: String::new(),
            agent_id: "ag2".into(),
            hostname: "h2".into(),
            resources: Resources::default(),
        };
        p.record_unexplained(&fw(), 2.0, [bare("t1"), bare("t2")]);
        assert!(p.task("t1").unwrap().explained);
        let t2 = p.task("t2").unwrap();
        assert!(!t2.explained);
        assert_eq!(t2.chosen.as_deref(), Some("ag2"));
        assert!(t2.summary.contains("gave no reasons"), "{}", t2.summary);
    }

    #[test]
    fn one_frameworks_many_waiting_groups_do_not_push_out_anothers() {
        let p = Placements::with_capacity(10, 3);
        let exec: FrameworkId = "exec".parse().unwrap();
        p.record(&fw(), 0.0, vec![decision(None, "/web", None)], false);
        for i in 0..10 {
            let refused = vec![decision(None, &format!("t{i}"), None)];
            p.record(&exec, i as f64, refused, false);
        }
        assert_eq!(p.waiting("exec", None).len(), 3);
        assert_eq!(p.waiting("marathon", None).len(), 1);
        // A queued exec task that is its own group finds its refusal; a
        // job of the same name does not answer for a task.
        assert_eq!(p.task("t9").unwrap().group, "t9");
        assert!(p.task("/web").is_none());
    }

    #[test]
    fn a_round_that_explains_itself_renews_what_waits() {
        let p = Placements::default();
        let other: FrameworkId = "chronos".parse().unwrap();
        p.record(&fw(), 1.0, vec![decision(None, "/gone", None)], true);
        p.record(&other, 1.0, vec![decision(None, "job", None)], true);
        // The next round refuses only /a: /gone no longer waits.
        p.record(&fw(), 2.0, vec![decision(None, "/a", None)], true);
        let groups = |f: &str| -> Vec<String> {
            p.waiting(f, None).iter().map(|r| r.group.clone()).collect()
        };
        assert_eq!(groups("marathon"), ["/a"]);
        assert_eq!(groups("chronos"), ["job"], "another framework's stay");
        // A round with nothing waiting clears them.
        p.record(&fw(), 3.0, Vec::new(), true);
        assert!(groups("marathon").is_empty());
        // A call that did not explain changes nothing.
        p.record(&other, 3.0, Vec::new(), false);
        assert_eq!(groups("chronos"), ["job"]);
    }
}
