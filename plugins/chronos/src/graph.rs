//! The dependency graph: edges run from each parent to the jobs that list
//! it in `parents`.
//!
//! Chronos' trigger rule (reference §3.4) keeps one counter per edge: a
//! parent's success adds one to each edge out of it, and a child runs when
//! it has one parent, or when the edge just counted equals the smallest of
//! its edges — that is, once every parent has succeeded since the child
//! last started (when its edges go back to zero).

use std::collections::{BTreeMap, BTreeSet};

use crate::job::Kind;
use crate::model::JobRecord;

/// The parents-to-children index of `jobs`.
pub fn children(jobs: &BTreeMap<String, JobRecord>) -> BTreeMap<String, BTreeSet<String>> {
    let mut out: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for (name, j) in jobs {
        for p in j.def.parents() {
            out.entry(p.clone()).or_default().insert(name.clone());
        }
    }
    out
}

/// If giving `name` the parents `parents` closes a cycle, the cycle
/// (`name -> ... -> name`, parent to child).
pub fn cycle(
    jobs: &BTreeMap<String, JobRecord>,
    name: &str,
    parents: &[String],
) -> Option<Vec<String>> {
    // Walk up from each new parent; reaching `name` is a cycle.
    let mut stack: Vec<Vec<String>> = parents.iter().map(|p| vec![p.clone()]).collect();
    let mut seen = BTreeSet::new();
    while let Some(path) = stack.pop() {
        let Some(top) = path.last() else { continue };
        if top == name {
            let mut cycle: Vec<String> = path.iter().rev().cloned().collect();
            cycle.push(name.to_string());
            return Some(cycle);
        }
        if !seen.insert(top.clone()) {
            continue;
        }
        if let Some(j) = jobs.get(top) {
            for p in j.def.parents() {
                let mut next = path.clone();
                next.push(p.clone());
                stack.push(next);
            }
        }
    }
    None
}

/// Counts a parent's success on the edge into `child`; true when the child
/// should now run.
pub fn count_success(child: &mut JobRecord, parent: &str) -> bool {
    let parents = child.def.parents().to_vec();
    if parents.is_empty() || !parents.iter().any(|p| p == parent) {
        return false;
    }
    let n = child.parent_counts.entry(parent.to_string()).or_insert(0);
    *n += 1;
    let counted = *n;
    if parents.len() == 1 {
        return true;
    }
    let min = parents
        .iter()
        .map(|p| child.parent_counts.get(p).copied().unwrap_or(0))
        .min()
        .unwrap_or(0);
    counted == min
}

/// How deleting `deleted` changes each child, as Chronos does it: children
/// of a dependent job take its parents in its place; children of a
/// scheduled job become scheduled jobs on its schedule.
pub fn relink_after_delete(
    jobs: &BTreeMap<String, JobRecord>,
    deleted: &JobRecord,
) -> Vec<(String, Kind)> {
    let name = &deleted.def.name;
    let mut out = Vec::new();
    for (child, j) in jobs {
        let parents = j.def.parents();
        if child == name || !parents.iter().any(|p| p == name) {
            continue;
        }
        let kind = match &deleted.def.kind {
            Kind::Dependent { parents: grand } => {
                let mut next: BTreeSet<String> =
                    parents.iter().filter(|p| *p != name).cloned().collect();
                next.extend(grand.iter().cloned());
                next.remove(child);
                if next.is_empty() {
                    continue;
                }
                Kind::Dependent {
                    parents: next.into_iter().collect(),
                }
            }
            Kind::Scheduled { time_zone, .. } => Kind::Scheduled {
                schedule: deleted.schedule.clone().unwrap_or_default(),
                time_zone: time_zone.clone(),
            },
        };
        out.push((child.clone(), kind));
    }
    out
}

/// The graph in Graphviz DOT: vertices numbered from 1 in name order,
/// labelled with their names, edges parent -> child.
pub fn dot(jobs: &BTreeMap<String, JobRecord>) -> String {
    let ids: BTreeMap<&str, usize> = jobs
        .keys()
        .enumerate()
        .map(|(i, n)| (n.as_str(), i + 1))
        .collect();
    let mut out = String::from("digraph G {\n");
    for (name, id) in &ids {
        out.push_str(&format!(
            "  {id} [ label=\"{}\" ];\n",
            name.replace('"', "\\\"")
        ));
    }
    for (name, j) in jobs {
        for p in j.def.parents() {
            if let (Some(from), Some(to)) = (ids.get(p.as_str()), ids.get(name.as_str())) {
                out.push_str(&format!("  {from} -> {to};\n"));
            }
        }
    }
    out.push_str("}\n");
    out
}

/// Chronos' CSV graph: `node,<name>,<status>,<state>` per job, then
/// `link,<parent>,<child>` per edge.
pub fn csv(jobs: &BTreeMap<String, JobRecord>, state: impl Fn(&str) -> String) -> String {
    let mut out = String::new();
    for (name, j) in jobs {
        out.push_str(&format!(
            "node,{name},{},{}\n",
            j.counters.status(),
            state(name)
        ));
    }
    for (name, j) in jobs {
        for p in j.def.parents() {
            if jobs.contains_key(p) {
                out.push_str(&format!("link,{p},{name}\n"));
            }
        }
    }
    out
}

/// The graph drawn as a tree for a terminal: roots (jobs without parents
/// that exist) first, each child under each of its parents.
pub fn tree(jobs: &BTreeMap<String, JobRecord>, label: impl Fn(&str) -> String) -> String {
    let mut t = Tree {
        kids: children(jobs),
        label: &label,
        path: Vec::new(),
        out: String::new(),
    };
    for (name, j) in jobs {
        if j.def.parents().iter().all(|p| !jobs.contains_key(p)) {
            t.walk(name, "", None);
        }
    }
    t.out
}

struct Tree<'a> {
    kids: BTreeMap<String, BTreeSet<String>>,
    label: &'a dyn Fn(&str) -> String,
    /// The jobs from the root to here (a cycle is drawn once).
    path: Vec<String>,
    out: String,
}

impl Tree<'_> {
    /// Draws `name` after `prefix`; `last` is None for a root, else
    /// whether it is its parent's last child.
    fn walk(&mut self, name: &str, prefix: &str, last: Option<bool>) {
        let branch = match last {
            None => "",
            Some(true) => "└── ",
            Some(false) => "├── ",
        };
        let line = format!("{prefix}{branch}{}\n", (self.label)(name));
        self.out.push_str(&line);
        if self.path.iter().any(|p| p == name) {
            return;
        }
        self.path.push(name.to_string());
        let below: Vec<String> = self
            .kids
            .get(name)
            .map(|k| k.iter().cloned().collect())
            .unwrap_or_default();
        let next_prefix = match last {
            None => String::new(),
            Some(true) => format!("{prefix}    "),
            Some(false) => format!("{prefix}│   "),
        };
        for (i, k) in below.iter().enumerate() {
            self.walk(k, &next_prefix, Some(i + 1 == below.len()));
        }
        self.path.pop();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::job::{Counters, JobDef};

    fn job(name: &str, kind: Kind) -> JobRecord {
        JobRecord {
            def: JobDef {
                name: name.into(),
                command: "true".into(),
                shell: true,
                retries: 2,
                owner: String::new(),
                owner_name: String::new(),
                description: String::new(),
                cpus: 0.1,
                mem: 32.0,
                disk: 0.0,
                disabled: false,
                soft_error: false,
                data_processing_job_type: false,
                high_priority: false,
                run_as_user: "root".into(),
                concurrent: false,
                max_completion_time: 0,
                fetch: vec![],
                uris_given: false,
                environment_variables: vec![],
                arguments: vec![],
                container: None,
                constraints: vec![],
                kind,
                epsilon: None,
                async_: false,
            },
            counters: Counters::default(),
            schedule: Some("R/2026-01-01T00:00:00.000Z/PT1H".into()),
            parent_counts: BTreeMap::new(),
            skipped: 0,
            created_ms: 0,
            updated_ms: 0,
        }
    }

    fn sched() -> Kind {
        Kind::Scheduled {
            schedule: "R/2026-01-01T00:00:00Z/PT1H".into(),
            time_zone: "UTC".into(),
        }
    }

    fn dep(parents: &[&str]) -> Kind {
        Kind::Dependent {
            parents: parents.iter().map(|s| s.to_string()).collect(),
        }
    }

    fn graph(jobs: &[(&str, Kind)]) -> BTreeMap<String, JobRecord> {
        jobs.iter()
            .map(|(n, k)| (n.to_string(), job(n, k.clone())))
            .collect()
    }

    #[test]
    fn a_child_of_two_runs_once_both_parents_succeeded_since_it_started() {
        let mut c = job("c", dep(&["a", "b"]));
        assert!(!count_success(&mut c, "a"));
        assert!(!count_success(&mut c, "a"), "a twice is not b");
        assert!(count_success(&mut c, "b"));
        c.parent_counts.clear(); // c started
        assert!(!count_success(&mut c, "b"));
        assert!(count_success(&mut c, "a"));
        let mut single = job("s", dep(&["a"]));
        assert!(count_success(&mut single, "a"));
        assert!(
            count_success(&mut single, "a"),
            "every success of its one parent"
        );
        assert!(!count_success(&mut single, "z"), "not a parent");
    }

    #[test]
    fn cycles_are_found_with_their_path() {
        let g = graph(&[("a", sched()), ("b", dep(&["a"])), ("c", dep(&["b"]))]);
        assert_eq!(
            cycle(&g, "a", &["c".into()]),
            Some(vec!["a".into(), "b".into(), "c".into(), "a".into()])
        );
        assert_eq!(cycle(&g, "d", &["c".into()]), None);
        assert_eq!(cycle(&g, "c", &["a".into()]), None, "replacing c's parents");
    }

    #[test]
    fn deleting_a_parent_relinks_its_children_as_chronos_does() {
        let g = graph(&[
            ("root", sched()),
            ("mid", dep(&["root"])),
            ("leaf", dep(&["mid", "other"])),
            ("other", sched()),
        ]);
        // A dependent job's children inherit its parents.
        let r = relink_after_delete(&g, &g["mid"]);
        assert_eq!(r, vec![("leaf".to_string(), dep(&["other", "root"]))]);
        // A scheduled job's children take its schedule.
        let r = relink_after_delete(&g, &g["root"]);
        assert_eq!(r.len(), 1);
        assert_eq!(r[0].0, "mid");
        assert!(
            matches!(&r[0].1, Kind::Scheduled { schedule, .. } if schedule.starts_with("R/2026"))
        );
    }

    #[test]
    fn dot_csv_and_tree_show_the_edges() {
        let g = graph(&[("a", sched()), ("b", dep(&["a"])), ("c", dep(&["a", "b"]))]);
        assert_eq!(
            dot(&g),
            "digraph G {\n  1 [ label=\"a\" ];\n  2 [ label=\"b\" ];\n  3 [ label=\"c\" ];\n  1 -> 2;\n  1 -> 3;\n  2 -> 3;\n}\n"
        );
        let csv = csv(&g, |_| "idle".into());
        assert_eq!(csv.lines().count(), 6);
        assert!(csv.starts_with("node,a,fresh,idle\n"));
        assert!(csv.contains("link,b,c\n"));
        let t = tree(&g, |n| n.to_string());
        assert_eq!(t, "a\n├── b\n│   └── c\n└── c\n");
    }
}
