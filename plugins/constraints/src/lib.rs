//! `constraints`: Marathon's placement operators as a placement plugin.
//!
//! `[field, OPERATOR, value?]`, where field is `hostname` (`@hostname`) or
//! an agent attribute (`@zone` reads `zone`). An agent without the field
//! satisfies only UNLIKE. Counts are of the group's live tasks.
//!
//! - UNIQUE: no task of the group has the agent's value yet.
//! - CLUSTER v: the value is v; without v, the value of the group's first
//!   task (anything, for the first).
//! - GROUP_BY [n]: spread evenly: a value no task has yet, or (with at
//!   least n values in use) one that has the fewest tasks. Marathon's
//!   classic rule.
//! - LIKE re / UNLIKE re: the value matches / does not match the whole
//!   regular expression.
//! - MAX_PER n: fewer than n tasks have the value.
//! - IS v: the value is v (numbers compare at three decimals).
//!
//! Its score prefers agents with fewer tasks of the group, so that tasks
//! with constraints spread out.

use std::collections::HashMap;

use regex_lite::Regex;
use wasmos_sdk::placement::{Agents, Candidate, Constraint, Placement, PlacementTask};

/// The operators this plugin evaluates (also in plugin.toml).
pub const OPERATORS: &[&str] = &[
    "UNIQUE", "CLUSTER", "GROUP_BY", "LIKE", "UNLIKE", "MAX_PER", "IS",
];

/// An agent without the field.
const NONE: u32 = u32::MAX;

/// A field's values, interned: each agent's value as a small id. Built
/// once per version of the agents, so that a filter over thousands of
/// candidates reads arrays instead of hashing strings.
#[derive(Default)]
struct FieldIndex {
    /// Agent index → value id, or NONE.
    by_agent: Vec<u32>,
    /// Value id → value.
    values: Vec<String>,
}

impl FieldIndex {
    fn build(agents: &Agents, field: &str) -> FieldIndex {
        let mut ids: HashMap<&str, u32> = HashMap::new();
        let mut idx = FieldIndex {
            by_agent: vec![NONE; agents.capacity()],
            values: Vec::new(),
        };
        for a in agents.iter() {
            if let Some(v) = a.field(field) {
                let next = ids.len() as u32;
                let id = *ids.entry(v).or_insert_with(|| {
                    idx.values.push(v.to_string());
                    next
                });
                idx.by_agent[a.index as usize] = id;
            }
        }
        idx
    }

    fn value_of(&self, agent: u32) -> u32 {
        self.by_agent.get(agent as usize).copied().unwrap_or(NONE)
    }
}

/// How many of the group's tasks each value of a field has: a dense array
/// reused across calls, reset through the list of ids it touched.
#[derive(Default)]
struct Counts {
    by_value: Vec<u32>,
    touched: Vec<u32>,
}

impl Counts {
    fn fill(&mut self, idx: &FieldIndex, placed: &[(u32, u32)]) {
        for id in self.touched.drain(..) {
            self.by_value[id as usize] = 0;
        }
        if self.by_value.len() < idx.values.len() {
            self.by_value.resize(idx.values.len(), 0);
        }
        for (agent, n) in placed {
            let id = idx.value_of(*agent);
            if id != NONE {
                if self.by_value[id as usize] == 0 {
                    self.touched.push(id);
                }
                self.by_value[id as usize] += n;
            }
        }
    }

    fn of(&self, id: u32) -> u32 {
        self.by_value.get(id as usize).copied().unwrap_or(0)
    }

    /// Values with at least one task.
    fn used(&self) -> usize {
        self.touched.len()
    }

    /// The fewest tasks any used value has.
    fn fewest(&self) -> u32 {
        self.touched
            .iter()
            .map(|id| self.of(*id))
            .min()
            .unwrap_or(0)
    }
}

#[derive(Default)]
struct Constraints {
    regexes: HashMap<String, Regex>,
    fields: HashMap<String, FieldIndex>,
    version: Option<u64>,
    counts: Counts,
}

fn int_value(c: &Constraint, required: bool) -> Result<Option<u32>, String> {
    match c.value.as_deref() {
        None | Some("") if required => Err(format!("{} requires an integer value", c.operator)),
        None | Some("") => Ok(None),
        Some(v) => v
            .trim()
            .parse::<u32>()
            .map(Some)
            .map_err(|_| format!("{} value {v:?} must be an integer", c.operator)),
    }
}

fn full_match(pattern: &str) -> Result<Regex, String> {
    Regex::new(&format!("^(?:{pattern})$"))
        .map_err(|e| format!("{pattern:?} is not a valid regular expression: {e}"))
}

/// Values equal as Marathon compares them: numbers at three decimals.
fn same_value(a: &str, b: &str) -> bool {
    match (a.trim().parse::<f64>(), b.trim().parse::<f64>()) {
        (Ok(x), Ok(y)) => ((x * 1000.0).round() - (y * 1000.0).round()).abs() < 0.5,
        _ => a == b,
    }
}

fn check(c: &Constraint) -> Result<(), String> {
    let has_value = c.value.as_deref().is_some_and(|v| !v.is_empty());
    match c.operator.as_str() {
        "UNIQUE" if has_value => Err("UNIQUE does not accept a value".into()),
        "UNIQUE" | "CLUSTER" => Ok(()),
        "GROUP_BY" => int_value(c, false).map(|_| ()),
        "MAX_PER" => int_value(c, true).map(|_| ()),
        "LIKE" | "UNLIKE" => match c.value.as_deref() {
            Some(v) if !v.is_empty() => full_match(v).map(|_| ()),
            _ => Err(format!("{} requires a regular expression", c.operator)),
        },
        "IS" if !has_value => Err("IS requires a value".into()),
        "IS" => Ok(()),
        other => Err(format!(
            "unknown operator {other} (known: {})",
            OPERATORS.join(", ")
        )),
    }
}

impl Constraints {
    /// Makes sure `field` is indexed for the current agents.
    fn index(&mut self, agents: &Agents, field: &str) {
        if self.version != Some(agents.version()) {
            self.fields.clear();
            self.version = Some(agents.version());
        }
        if !self.fields.contains_key(field) {
            self.fields
                .insert(field.to_string(), FieldIndex::build(agents, field));
        }
    }

    fn regex(&mut self, pattern: &str) -> Option<Regex> {
        if !self.regexes.contains_key(pattern) {
            let re = full_match(pattern).ok()?;
            self.regexes.insert(pattern.to_string(), re);
        }
        self.regexes.get(pattern).cloned()
    }

    /// ANDs the verdicts of `c` into `out`, one per candidate.
    fn apply(
        &mut self,
        agents: &Agents,
        task: &PlacementTask,
        c: &Constraint,
        candidates: &[Candidate],
        out: &mut [bool],
    ) {
        let field = c.field.as_str();
        self.index(agents, field);
        let want = c.value.as_deref().filter(|v| !v.is_empty());
        let regex = match c.operator.as_str() {
            "LIKE" | "UNLIKE" => want.and_then(|p| self.regex(p)),
            _ => None,
        };
        let Some(idx) = self.fields.get(field) else {
            return;
        };
        self.counts.fill(idx, &task.placed);
        let counts = &self.counts;
        // Verdicts that depend only on the value: computed once per value.
        let mut memo: Vec<u8> = Vec::new();
        let mut by_value = |id: u32, f: &dyn Fn(&str) -> bool| -> bool {
            if memo.is_empty() {
                memo = vec![2; idx.values.len()];
            }
            let m = &mut memo[id as usize];
            if *m == 2 {
                *m = u8::from(f(&idx.values[id as usize]));
            }
            *m == 1
        };
        let min_groups = int_value(c, false).ok().flatten().unwrap_or(0) as usize;
        let max_per = int_value(c, true).ok().flatten();
        let (used, fewest) = (counts.used(), counts.fewest());
        for (cand, o) in candidates.iter().zip(out.iter_mut()) {
            if !*o {
                continue;
            }
            let id = idx.value_of(cand.agent);
            *o = match (c.operator.as_str(), id == NONE) {
                ("UNLIKE", true) => true,
                ("UNLIKE", false) => regex
                    .as_ref()
                    .is_some_and(|re| by_value(id, &|v| !re.is_match(v))),
                (_, true) => false,
                ("UNIQUE", _) => counts.of(id) == 0,
                ("CLUSTER", _) => match want {
                    Some(w) => by_value(id, &|v| v == w),
                    None => used == 0 || counts.of(id) > 0,
                },
                ("GROUP_BY", _) => {
                    let n = counts.of(id);
                    n == 0 || (used >= min_groups && n == fewest)
                }
                ("LIKE", _) => regex
                    .as_ref()
                    .is_some_and(|re| by_value(id, &|v| re.is_match(v))),
                ("MAX_PER", _) => max_per.is_some_and(|max| counts.of(id) < max),
                ("IS", _) => want.is_some_and(|w| by_value(id, &|v| same_value(v, w))),
                _ => false,
            };
        }
    }
}

impl Placement for Constraints {
    fn init(_config: wasmos_sdk::Config) -> Result<Self, String> {
        Ok(Constraints::default())
    }

    fn validate(&self, constraints: &[Constraint]) -> Result<(), String> {
        for c in constraints {
            if c.field.is_empty() {
                return Err("a constraint needs a field".into());
            }
            check(c).map_err(|e| format!("constraint [{}, {}]: {e}", c.field, c.operator))?;
        }
        Ok(())
    }

    fn filter(
        &mut self,
        agents: &Agents,
        task: &PlacementTask,
        candidates: &[Candidate],
    ) -> Vec<bool> {
        let mut out: Vec<bool> = candidates
            .iter()
            .map(|c| agents.get(c.agent).is_some())
            .collect();
        for c in &task.constraints {
            self.apply(agents, task, c, candidates, &mut out);
        }
        out
    }

    /// Fewer of the group's tasks on the agent, and in the agent's
    /// GROUP_BY values, is better: offers from several groups at once go
    /// to the emptiest.
    fn score(
        &mut self,
        agents: &Agents,
        task: &PlacementTask,
        candidates: &[Candidate],
    ) -> Vec<f64> {
        let on: HashMap<u32, u32> = task.placed.iter().copied().collect();
        let mut scores: Vec<f64> = candidates
            .iter()
            .map(|c| -f64::from(on.get(&c.agent).copied().unwrap_or(0)))
            .collect();
        for c in task.constraints.iter().filter(|c| c.operator == "GROUP_BY") {
            self.index(agents, &c.field);
            let Some(idx) = self.fields.get(&c.field) else {
                continue;
            };
            self.counts.fill(idx, &task.placed);
            for (cand, s) in candidates.iter().zip(scores.iter_mut()) {
                let id = idx.value_of(cand.agent);
                if id != NONE {
                    *s -= f64::from(self.counts.of(id));
                }
            }
        }
        scores
    }
}

wasmos_sdk::export_placement!(Constraints);

/// The plugin's logic compiled natively, with its state kept between
/// calls as the component keeps it: the native side of the benchmark.
#[derive(Default)]
pub struct Native(Constraints);

impl Native {
    pub fn filter(
        &mut self,
        agents: &Agents,
        task: &PlacementTask,
        candidates: &[Candidate],
    ) -> Vec<bool> {
        self.0.filter(agents, task, candidates)
    }
}
#[cfg(test)]
mod tests {
    use super::*;
    use wasmos_sdk::placement::{AgentChange, AgentView, KeyValue, Resources};

    fn view(index: u32, host: &str, attrs: &[(&str, &str)]) -> AgentView {
        AgentView {
            index,
            id: format!("a{index}"),
            hostname: host.into(),
            attributes: attrs
                .iter()
                .map(|(k, v)| KeyValue {
                    key: k.to_string(),
                    value: v.to_string(),
                })
                .collect(),
            resources: Resources {
                cpus: 1.0,
                mem: 1.0,
                disk: 0.0,
                gpus: 0,
                ports: vec![],
            },
        }
    }

    /// Three agents: h0 in rack r1, h1 in r1, h2 in r2 (h2 has no zone).
    fn agents() -> Agents {
        let mut a = Agents::default();
        a.apply(vec![
            AgentChange::Upsert(view(
                0,
                "h0",
                &[("rack", "r1"), ("zone", "a"), ("cores", "8")],
            )),
            AgentChange::Upsert(view(
                1,
                "h1",
                &[("rack", "r1"), ("zone", "b"), ("cores", "8.0")],
            )),
            AgentChange::Upsert(view(2, "h2", &[("rack", "r2")])),
        ]);
        a
    }

    fn c(field: &str, op: &str, value: Option<&str>) -> Constraint {
        Constraint {
            field: field.into(),
            operator: op.into(),
            value: value.map(String::from),
        }
    }

    /// Which of the three agents pass, given where the group already runs.
    fn pass(constraint: Constraint, placed: &[(u32, u32)]) -> Vec<bool> {
        let task = PlacementTask {
            group: "g".into(),
            constraints: vec![constraint],
            resources: Resources {
                cpus: 0.1,
                mem: 1.0,
                disk: 0.0,
                gpus: 0,
                ports: vec![],
            },
            placed: placed.to_vec(),
        };
        let cands: Vec<Candidate> = (0..3)
            .map(|agent| Candidate {
                agent,
                cpus: 1.0,
                mem: 1.0,
                disk: 0.0,
            })
            .collect();
        Constraints::default().filter(&agents(), &task, &cands)
    }

    #[test]
    fn unique_refuses_values_already_used() {
        assert_eq!(
            pass(c("hostname", "UNIQUE", None), &[(0, 1)]),
            [false, true, true]
        );
        assert_eq!(
            pass(c("rack", "UNIQUE", None), &[(0, 1)]),
            [false, false, true]
        );
        assert_eq!(
            pass(c("@hostname", "UNIQUE", None), &[]),
            [true, true, true]
        );
    }

    #[test]
    fn cluster_sticks_to_a_value_or_to_the_first_task() {
        assert_eq!(
            pass(c("rack", "CLUSTER", Some("r2")), &[]),
            [false, false, true]
        );
        assert_eq!(pass(c("rack", "CLUSTER", None), &[]), [true, true, true]);
        assert_eq!(
            pass(c("rack", "CLUSTER", None), &[(1, 1)]),
            [true, true, false]
        );
    }

    #[test]
    fn group_by_spreads_evenly() {
        // Marathon's classic rule: a value not used yet, or one of the
        // least used among those in use.
        assert_eq!(
            pass(c("rack", "GROUP_BY", None), &[(0, 1)]),
            [true, true, true]
        );
        assert_eq!(
            pass(c("rack", "GROUP_BY", None), &[(0, 2), (2, 1)]),
            [false, false, true]
        );
        // With fewer values in use than asked for, used values wait.
        assert_eq!(
            pass(c("rack", "GROUP_BY", Some("3")), &[(0, 1), (2, 1)]),
            [false, false, false]
        );
        // The score sends the next task to the emptier rack.
        let task = PlacementTask {
            group: "g".into(),
            constraints: vec![c("rack", "GROUP_BY", None)],
            resources: Resources {
                cpus: 0.1,
                mem: 1.0,
                disk: 0.0,
                gpus: 0,
                ports: vec![],
            },
            placed: vec![(0, 1)],
        };
        let cands: Vec<Candidate> = (0..3)
            .map(|agent| Candidate {
                agent,
                cpus: 1.0,
                mem: 1.0,
                disk: 0.0,
            })
            .collect();
        let scores = Constraints::default().score(&agents(), &task, &cands);
        assert!(scores[2] > scores[1] && scores[1] > scores[0], "{scores:?}");
    }

    #[test]
    fn like_and_unlike_match_the_whole_value_and_missing_fields_only_pass_unlike() {
        assert_eq!(
            pass(c("zone", "LIKE", Some("a|b")), &[]),
            [true, true, false]
        );
        assert_eq!(
            pass(c("hostname", "LIKE", Some("h")), &[]),
            [false, false, false],
            "full match"
        );
        assert_eq!(
            pass(c("zone", "UNLIKE", Some("a")), &[]),
            [false, true, true]
        );
    }

    #[test]
    fn max_per_and_is() {
        assert_eq!(
            pass(c("rack", "MAX_PER", Some("2")), &[(0, 1), (1, 1)]),
            [false, false, true]
        );
        assert_eq!(
            pass(c("cores", "IS", Some("8")), &[]),
            [true, true, false],
            "8.0 == 8"
        );
        assert_eq!(pass(c("rack", "IS", Some("r2")), &[]), [false, false, true]);
    }

    #[test]
    fn cached_indices_follow_agent_changes() {
        let mut p = Constraints::default();
        let mut a = agents();
        let task = PlacementTask {
            group: "g".into(),
            constraints: vec![c("rack", "CLUSTER", Some("r2"))],
            resources: Resources {
                cpus: 0.1,
                mem: 1.0,
                disk: 0.0,
                gpus: 0,
                ports: vec![],
            },
            placed: vec![],
        };
        let cands: Vec<Candidate> = (0..3)
            .map(|agent| Candidate {
                agent,
                cpus: 1.0,
                mem: 1.0,
                disk: 0.0,
            })
            .collect();
        assert_eq!(p.filter(&a, &task, &cands), [false, false, true]);
        a.apply(vec![AgentChange::Upsert(view(0, "h0", &[("rack", "r2")]))]);
        assert_eq!(
            p.filter(&a, &task, &cands),
            [true, false, true],
            "h0 moved to r2"
        );
        a.apply(vec![AgentChange::Removed(2)]);
        assert_eq!(
            p.filter(&a, &task, &cands),
            [true, false, false],
            "h2 is gone"
        );
    }

    #[test]
    fn validation_follows_marathon() {
        assert!(
            check(&c("hostname", "UNIQUE", Some("x")))
                .unwrap_err()
                .contains("does not accept")
        );
        assert!(check(&c("rack", "MAX_PER", None)).is_err());
        assert!(check(&c("rack", "MAX_PER", Some("two"))).is_err());
        assert!(check(&c("rack", "GROUP_BY", Some(""))).is_ok());
        assert!(check(&c("rack", "LIKE", Some("("))).is_err());
        assert!(check(&c("rack", "BOGUS", None)).is_err());
    }
}
