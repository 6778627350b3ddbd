//! A template placement plugin. Copy this directory to start your own.
//!
//! `[field, AVOID, value]` keeps a task off agents whose `field`
//! (`hostname` or an attribute) equals `value`; among the rest it prefers
//! agents with more free cpus. The SDK keeps `agents` (the plugin's view of
//! the cluster) up to date; `filter` and `score` get candidates as indices
//! into it plus their free resources.
//!
//! Build: `cargo build --release --target wasm32-wasip2 -p wasmos-example-placement`.

use wasmos_sdk::placement::{Agents, Candidate, Constraint, Placement, PlacementTask};

struct Avoid;

impl Placement for Avoid {
    fn init(_config: wasmos_sdk::Config) -> Result<Self, String> {
        Ok(Avoid)
    }

    fn validate(&self, constraints: &[Constraint]) -> Result<(), String> {
        match constraints.iter().find(|c| c.value.is_none()) {
            Some(c) => Err(format!("[{}, AVOID] needs a value to avoid", c.field)),
            None => Ok(()),
        }
    }

    fn filter(
        &mut self,
        agents: &Agents,
        task: &PlacementTask,
        candidates: &[Candidate],
    ) -> Vec<bool> {
        candidates
            .iter()
            .map(|c| {
                let Some(agent) = agents.get(c.agent) else {
                    return false;
                };
                task.constraints.iter().all(|rule| {
                    let avoided = rule.value.as_deref();
                    agent.field(&rule.field) != avoided
                })
            })
            .collect()
    }

    fn score(
        &mut self,
        _agents: &Agents,
        _task: &PlacementTask,
        candidates: &[Candidate],
    ) -> Vec<f64> {
        candidates.iter().map(|c| c.cpus).collect()
    }
}

wasmos_sdk::export_placement!(Avoid);
