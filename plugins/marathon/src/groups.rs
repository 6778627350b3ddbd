//! `/v2/groups`: apps organised by path. A group is the apps below its id
//! plus, when created explicitly (possibly empty), a record `grp/<id>` with
//! its dependencies, which every app below it inherits.

use std::collections::{BTreeMap, BTreeSet};

use serde_json::{Value, json};
use wasmos_sdk::framework::{Request, Response};
use wasmos_sdk::kv;

use crate::api::{deployment_result, flag};
use crate::app::{self, App, Invalid, invalid_body};
use crate::{Marathon, deploy, ids};

pub const GROUP_PREFIX: &str = "grp/";

/// An explicitly created group.
#[derive(Debug, Clone, Default, serde::Serialize, serde::Deserialize)]
pub struct GroupRecord {
    #[serde(default)]
    pub dependencies: Vec<String>,
}

fn invalid(path: &str, error: impl Into<String>) -> Response {
    Response::json(422, &invalid_body(&[Invalid::new(path, error)]))
}

impl Marathon {
    /// Whether a group exists: an explicit record or apps below it.
    pub(crate) fn group_exists(&self, group: &str) -> bool {
        group == "/"
            || self.groups.contains_key(group)
            || self.groups.keys().any(|g| ids::in_group(g, group))
            || self
                .visible_apps()
                .any(|a| ids::in_group(&a.app.id, group) && a.app.id != group)
    }

    /// Apps below `group` (at any depth).
    fn apps_under(&self, group: &str) -> Vec<App> {
        self.visible_apps()
            .filter(|a| ids::in_group(&a.app.id, group) && a.app.id != group)
            .map(|a| a.app.clone())
            .collect()
    }

    fn save_group(&mut self, id: &str, rec: GroupRecord) {
        crate::put(&format!("{GROUP_PREFIX}{id}"), &rec);
        self.groups.insert(id.to_string(), rec);
    }

    /// Forgets the explicit records of `group` and everything below it.
    pub(crate) fn forget_groups_under(&mut self, group: &str) {
        let gone: Vec<String> = self
            .groups
            .keys()
            .filter(|g| ids::in_group(g, group))
            .cloned()
            .collect();
        for g in gone {
            kv::delete(&format!("{GROUP_PREFIX}{g}"));
            self.groups.remove(&g);
        }
    }
}

/// What a group body asks for.
struct Walk {
    /// Every app the body defines, with its canonical id.
    apps: BTreeMap<String, App>,
    /// Every group the body names, with its dependencies.
    groups: BTreeMap<String, Vec<String>>,
    /// Groups whose direct apps the body lists (others are kept).
    apps_listed: BTreeSet<String>,
    /// Groups whose subgroups the body lists (others are kept).
    groups_listed: BTreeSet<String>,
}

/// Reads a group body rooted at `id`, resolving relative ids and passing
/// group dependencies down to every app below.
fn walk(
    id: &str,
    body: &Value,
    inherited: &[String],
    w: &mut Walk,
    path: &str,
) -> Result<(), Response> {
    let Some(o) = body.as_object() else {
        return Err(invalid(path, "error.expected.jsobject"));
    };
    if let Err(e) = ids::check(id).or_else(|e| if id == "/" { Ok(()) } else { Err(e) }) {
        return Err(invalid(&format!("{path}/id"), e));
    }
    let mut deps: Vec<String> = inherited.to_vec();
    let own: Vec<String> = match o.get("dependencies") {
        None | Some(Value::Null) => Vec::new(),
        Some(v) => serde_json::from_value::<Vec<String>>(v.clone())
            .map_err(|_| {
                invalid(
                    &format!("{path}/dependencies"),
                    "error.expected.jsarray of ids",
                )
            })?
            .iter()
            .map(|d| ids::canonical(d, &ids::parent(id)))
            .collect(),
    };
    deps.extend(own.iter().cloned());
    w.groups.insert(id.to_string(), own);
    if let Some(apps) = o.get("apps").filter(|a| !a.is_null()) {
        let Some(apps) = apps.as_array() else {
            return Err(invalid(&format!("{path}/apps"), "error.expected.jsarray"));
        };
        w.apps_listed.insert(id.to_string());
        for (i, a) in apps.iter().enumerate() {
            let Some(raw) = a.get("id").and_then(Value::as_str) else {
                return Err(invalid(
                    &format!("{path}/apps({i})/id"),
                    "error.path.missing",
                ));
            };
            let app_id = ids::canonical(raw, id);
            if ids::parent(&app_id) != id {
                return Err(invalid(
                    &format!("{path}/apps({i})/id"),
                    format!("identifier {app_id} is not child of {id}. Hint: use relative paths."),
                ));
            }
            let mut app = App::from_json(&app_id, &app::writable(a))
                .and_then(|a| a.check_role().map(|()| a))
                .map_err(|errs| {
                    let errs: Vec<Invalid> = errs
                        .into_iter()
                        .map(|e| Invalid::new(&format!("{path}/apps({i}){}", e.path), e.error))
                        .collect();
                    Response::json(422, &invalid_body(&errs))
                })?;
            for d in &deps {
                if !app.dependencies.contains(d) && d != &app_id {
                    app.dependencies.push(d.clone());
                }
            }
            if w.apps.insert(app_id.clone(), app).is_some() {
                return Err(invalid(
                    &format!("{path}/apps({i})/id"),
                    format!("app {app_id} is given twice"),
                ));
            }
        }
    }
    if let Some(groups) = o.get("groups").filter(|g| !g.is_null()) {
        let Some(groups) = groups.as_array() else {
            return Err(invalid(&format!("{path}/groups"), "error.expected.jsarray"));
        };
        w.groups_listed.insert(id.to_string());
        for (i, g) in groups.iter().enumerate() {
            let Some(raw) = g.get("id").and_then(Value::as_str) else {
                return Err(invalid(
                    &format!("{path}/groups({i})/id"),
                    "error.path.missing",
                ));
            };
            let gid = ids::canonical(raw, id);
            if ids::parent(&gid) != id {
                return Err(invalid(
                    &format!("{path}/groups({i})/id"),
                    format!("identifier {gid} is not child of {id}. Hint: use relative paths."),
                ));
            }
            walk(&gid, g, &deps, w, &format!("{path}/groups({i})"))?;
        }
    }
    Ok(())
}

/// POST and PUT of a group.
pub fn change(m: &mut Marathon, req: &Request, rest: &[&str], create: bool) -> Response {
    let body: Value = match serde_json::from_slice(&req.body) {
        Ok(b) => b,
        Err(e) => {
            return Response::json(
                400,
                &json!({ "message": "Invalid JSON", "details": e.to_string() }),
            );
        }
    };
    let path_id = ids::canonical(&rest.join("/"), "/");
    let id = match body.get("id").and_then(Value::as_str) {
        Some(raw) if rest.is_empty() => ids::canonical(raw, "/"),
        _ => path_id.clone(),
    };
    let force = flag(req, "force", false);
    if create {
        if id == "/" {
            return invalid("/id", "give the new group an id");
        }
        if m.group_exists(&id) {
            return Response::error(
                409,
                &format!("Group {id} is already created. Use PUT to change this group."),
            );
        }
        if m.apps.get(&id).is_some_and(|a| !a.rec.deleting) {
            return Response::error(409, &format!("An app with the path {id} already exists."));
        }
    } else if let Some(by) = body
        .get("scaleBy")
        .filter(|_| body.get("version").is_none())
    {
        let Some(by) = by.as_f64().filter(|b| b.is_finite() && *b >= 0.0) else {
            return invalid("/scaleBy", "must be a number of 0 or more");
        };
        if !m.group_exists(&id) {
            return Response::error(404, &format!("Group '{id}' does not exist"));
        }
        let targets = m
            .apps_under(&id)
            .into_iter()
            .map(|mut a| {
                a.instances = (f64::from(a.instances) * by - 1e-9).ceil().max(0.0) as u32;
                (a.id.clone(), Some(a))
            })
            .collect();
        return finish(m, req, targets, force, 200);
    } else if body.get("version").is_some() {
        return invalid(
            "/version",
            "rolling a whole group back is not supported; roll back its apps with PUT /v2/apps/{id} {\"version\": ...}",
        );
    }
    let mut w = Walk {
        apps: BTreeMap::new(),
        groups: BTreeMap::new(),
        apps_listed: BTreeSet::new(),
        groups_listed: BTreeSet::new(),
    };
    if let Err(r) = walk(&id, &body, &[], &mut w, "") {
        return r;
    }
    // New or changed constraints: the placement plugins must accept them.
    for (app_id, app) in &w.apps {
        if let Err(errs) = app.check_constraints(m.apps.get(app_id).map(|a| &a.app)) {
            let errs: Vec<Invalid> = errs
                .into_iter()
                .map(|e| Invalid::new(&format!("{app_id}{}", e.path), e.error))
                .collect();
            return Response::json(422, &invalid_body(&errs));
        }
    }
    let mut targets: BTreeMap<String, Option<App>> = BTreeMap::new();
    if create {
        if let Some(taken) = w
            .apps
            .keys()
            .find(|a| m.apps.get(*a).is_some_and(|x| !x.rec.deleting))
        {
            return Response::error(409, &format!("An app with id [{taken}] already exists."));
        }
    } else {
        // Apps no longer listed go; so does everything in a subgroup no
        // longer listed.
        for a in m.apps_under(&id) {
            let parent = ids::parent(&a.id);
            let dropped_app = w.apps_listed.contains(&parent) && !w.apps.contains_key(&a.id);
            let dropped_group = w
                .groups_listed
                .iter()
                .any(|g| child_of(g, &a.id).is_some_and(|c| !w.groups.contains_key(&c)));
            if dropped_app || dropped_group {
                targets.insert(a.id.clone(), None);
            }
        }
    }
    for (app_id, app) in w.apps {
        targets.insert(app_id, Some(app));
    }
    if flag(req, "dryRun", false) {
        let original: BTreeMap<String, Option<App>> = targets
            .keys()
            .map(|k| {
                (
                    k.clone(),
                    m.apps
                        .get(k)
                        .filter(|a| !a.rec.deleting)
                        .map(|a| a.app.clone()),
                )
            })
            .collect();
        let steps = deploy::plan(&original, &targets, &BTreeSet::new());
        return Response::json(
            200,
            &json!({ "steps": steps.iter().map(|s| json!({ "actions": s.iter().map(|a| json!({ "action": a.kind.name(), "app": a.app })).collect::<Vec<_>>() })).collect::<Vec<_>>() }),
        );
    }
    // Record the groups the body names (so that empty ones exist).
    let dropped: Vec<String> = if create {
        Vec::new()
    } else {
        m.groups
            .keys()
            .filter(|g| {
                w.groups_listed.iter().any(|l| {
                    child_of(l, g).is_some_and(|c| !w.groups.contains_key(&c))
                        || (ids::parent(g) == *l && !w.groups.contains_key(*g))
                })
            })
            .cloned()
            .collect()
    };
    let status = if create { 201 } else { 200 };
    let r = finish(m, req, targets, force, status);
    if r.status < 300 {
        for g in dropped {
            m.forget_groups_under(&g);
        }
        for (g, deps) in w.groups {
            if g != "/" {
                m.save_group(&g, GroupRecord { dependencies: deps });
            }
        }
    }
    r
}

/// The child group of `group` on the way down to `id`, if `id` lies in a
/// subgroup of `group` (not directly in it).
fn child_of(group: &str, id: &str) -> Option<String> {
    if !ids::in_group(id, group) || ids::parent(id) == group || id == group {
        return None;
    }
    let below = id[group.len()..].trim_start_matches('/');
    let first = below.split('/').next()?;
    Some(ids::canonical(first, group))
}

fn finish(
    m: &mut Marathon,
    _req: &Request,
    targets: BTreeMap<String, Option<App>>,
    force: bool,
    status: u16,
) -> Response {
    match m.deploy(targets, BTreeSet::new(), force) {
        Ok((d, v)) => deployment_result(status, &d, &v),
        Err(r) => r,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn walked(body: Value) -> Result<Walk, Response> {
        let mut w = Walk {
            apps: BTreeMap::new(),
            groups: BTreeMap::new(),
            apps_listed: BTreeSet::new(),
            groups_listed: BTreeSet::new(),
        };
        walk("/product", &body, &[], &mut w, "").map(|_| w)
    }

    #[test]
    fn group_trees_resolve_relative_ids_and_pass_dependencies_down() {
        let w = walked(json!({
            "id": "/product",
            "groups": [
                {"id": "database", "apps": [{"id": "mongo", "cmd": "mongod"}]},
                {"id": "/product/service", "dependencies": ["/product/database"],
                 "apps": [{"id": "rails-app", "cmd": "rails s"}]}
            ]
        }))
        .unwrap_or_else(|r| panic!("{}", String::from_utf8_lossy(&r.body)));
        let ids: Vec<&String> = w.apps.keys().collect();
        assert_eq!(
            ids,
            ["/product/database/mongo", "/product/service/rails-app"]
        );
        assert_eq!(
            w.apps["/product/service/rails-app"].dependencies,
            ["/product/database"]
        );
        assert!(w.apps["/product/database/mongo"].dependencies.is_empty());
        assert!(w.groups_listed.contains("/product"));
        assert!(!w.apps_listed.contains("/product"), "no apps key: kept");
    }

    #[test]
    fn ids_outside_the_group_and_bad_apps_are_refused_with_their_path() {
        let r = walked(json!({"apps": [{"id": "/elsewhere/x", "cmd": "x"}]}))
            .err()
            .unwrap();
        assert_eq!(r.status, 422);
        assert!(String::from_utf8_lossy(&r.body).contains("is not child of /product"));
        let r = walked(json!({"apps": [{"id": "x", "cpus": "many", "cmd": "x"}]}))
            .err()
            .unwrap();
        assert!(String::from_utf8_lossy(&r.body).contains("/apps(0)/cpus"));
    }

    #[test]
    fn child_of_names_the_subgroup_on_the_way_down() {
        assert_eq!(child_of("/a", "/a/b/c").as_deref(), Some("/a/b"));
        assert_eq!(child_of("/a", "/a/c"), None);
        assert_eq!(child_of("/", "/a/c").as_deref(), Some("/a"));
    }
}
