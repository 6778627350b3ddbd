//! What live tasks hold, per agent and per framework, without a pass over
//! every task.
//!
//! An allocation cycle needs each agent's free pools and each framework's
//! share; computed from every task, that pass was most of a cycle at 100,000
//! tasks (issue 19's B1). The state keeps an index of the live tasks on each
//! agent, with a revision that changes whenever a task starts or ends there;
//! the leader keeps, in a [`UsageMemo`], each agent's pools and
//! per-framework use with the revision and the agent record they came from,
//! and recomputes only the agents where either changed (for each allocation
//! cycle, and for the state endpoints).

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::OnceLock;
use std::sync::atomic::{AtomicU64, Ordering};

use wasmos_core::{AgentId, FrameworkId, Resources, TaskId};

use crate::{AgentPools, AgentRecord, ExecutorsSeen, State, TaskRecord};

/// The live tasks on each agent: derived from `State::tasks`, built on
/// first use and then kept up to date by the state's own changes. Neither
/// serialised nor compared: a state read from a snapshot builds its own.
#[derive(Debug, Clone, Default)]
pub struct LiveIndex(OnceLock<Index>);

impl PartialEq for LiveIndex {
    fn eq(&self, _: &Self) -> bool {
        true
    }
}

#[derive(Debug, Clone)]
struct Index {
    /// Tells indexes apart, so that a memo made from another one (another
    /// state's) is not trusted.
    id: u64,
    next_rev: u64,
    on: HashMap<AgentId, Live>,
}

#[derive(Debug, Clone, Default)]
struct Live {
    rev: u64,
    tasks: BTreeSet<TaskId>,
}

static INDEXES: AtomicU64 = AtomicU64::new(1);

impl Index {
    fn build(tasks: &BTreeMap<TaskId, TaskRecord>) -> Index {
        let mut on: HashMap<AgentId, Live> = HashMap::new();
        for t in tasks.values().filter(|t| !t.state().is_terminal()) {
            on.entry(t.agent_id.clone())
                .or_default()
                .tasks
                .insert(t.spec.task_id.clone());
        }
        Index {
            id: INDEXES.fetch_add(1, Ordering::Relaxed),
            next_rev: 1,
            on,
        }
    }

    fn set(&mut self, agent: &AgentId, task: &TaskId, live: bool) {
        let l = self.on.entry(agent.clone()).or_default();
        let changed = if live {
            l.tasks.insert(task.clone())
        } else {
            l.tasks.remove(task)
        };
        if changed {
            l.rev = self.next_rev;
            self.next_rev += 1;
        }
    }
}

impl LiveIndex {
    fn get(&self, tasks: &BTreeMap<TaskId, TaskRecord>) -> &Index {
        self.0.get_or_init(|| Index::build(tasks))
    }

    /// `t` was added or changed (nothing to do while the index is not
    /// built: building reads the tasks as they are then).
    pub(crate) fn update(&mut self, t: &TaskRecord) {
        if let Some(i) = self.0.get_mut() {
            i.set(&t.agent_id, &t.spec.task_id, !t.state().is_terminal());
        }
    }

    /// `t` is no longer among the tasks.
    pub(crate) fn remove(&mut self, t: &TaskRecord) {
        if let Some(i) = self.0.get_mut() {
            i.set(&t.agent_id, &t.spec.task_id, false);
        }
    }
}

/// What an allocator keeps between cycles (see the module's text).
#[derive(Default)]
pub struct UsageMemo {
    index: u64,
    agents: HashMap<AgentId, Memo>,
}

struct Memo {
    rev: u64,
    record: AgentRecord,
    pools: AgentPools,
    by_framework: Vec<(FrameworkId, Resources)>,
}

/// Each agent's free pools, each agent's and each framework's use, as
/// [`State::pools_by_agent`], [`State::used_by_agent`] and
/// [`State::used_by_framework`] give them.
pub struct Usage {
    pub pools: BTreeMap<AgentId, AgentPools>,
    pub by_agent: BTreeMap<AgentId, Resources>,
    pub by_framework: BTreeMap<FrameworkId, Resources>,
}

/// What `tasks` (live, on one agent) hold: in the agent's pools, and per
/// framework.
fn hold<'a>(
    pools: Option<&mut AgentPools>,
    tasks: impl Iterator<Item = &'a TaskRecord>,
) -> Vec<(FrameworkId, Resources)> {
    let mut pools = pools;
    let mut executors = ExecutorsSeen::default();
    let mut by_framework: BTreeMap<&FrameworkId, Resources> = BTreeMap::new();
    for t in tasks {
        let used = by_framework.entry(&t.framework_id).or_default();
        *used = used.add(&t.spec.resources);
        if let Some(p) = pools.as_deref_mut() {
            p.hold(&t.spec);
        }
        if let Some(e) = executors.first(t) {
            *used = used.add(&e.resources);
            if let Some(p) = pools.as_deref_mut() {
                p.hold_executor(e);
            }
        }
    }
    by_framework
        .into_iter()
        .map(|(f, r)| (f.clone(), r))
        .collect()
}

impl State {
    /// [`State::pools_by_agent`] and [`State::used_by_framework`] in one,
    /// recomputing only the agents whose live tasks or record changed since
    /// `memo` last saw them.
    pub fn usage(&self, memo: &mut UsageMemo) -> Usage {
        let index = self.live.get(&self.tasks);
        if memo.index != index.id {
            *memo = UsageMemo {
                index: index.id,
                agents: HashMap::new(),
            };
        }
        let tasks_on = |id: &AgentId| {
            index
                .on
                .get(id)
                .into_iter()
                .flat_map(|l| l.tasks.iter())
                .filter_map(|t| self.tasks.get(t))
        };
        let mut pools = BTreeMap::new();
        let mut by_agent: BTreeMap<AgentId, Resources> = BTreeMap::new();
        let mut by_framework: BTreeMap<FrameworkId, Resources> = BTreeMap::new();
        let mut add = |agent: &AgentId, used: &[(FrameworkId, Resources)]| {
            if used.is_empty() {
                return;
            }
            let a = by_agent.entry(agent.clone()).or_default();
            for (fw, r) in used {
                *a = a.add(r);
                let e = by_framework.entry(fw.clone()).or_default();
                *e = e.add(r);
            }
        };
        for (id, a) in &self.agents {
            let rev = index.on.get(id).map_or(0, |l| l.rev);
            let kept = memo
                .agents
                .get(id)
                .is_some_and(|m| m.rev == rev && &m.record == a);
            if !kept {
                let mut p = a.idle_pools();
                let by_framework = hold(Some(&mut p), tasks_on(id));
                memo.agents.insert(
                    id.clone(),
                    Memo {
                        rev,
                        record: a.clone(),
                        pools: p,
                        by_framework,
                    },
                );
            }
            let m = &memo.agents[id];
            pools.insert(id.clone(), m.pools.clone());
            add(id, &m.by_framework);
        }
        memo.agents.retain(|id, _| self.agents.contains_key(id));
        // Live tasks on agents the state no longer knows still count for
        // their frameworks.
        for (id, l) in &index.on {
            if !l.tasks.is_empty() && !self.agents.contains_key(id) {
                add(id, &hold(None, tasks_on(id)));
            }
        }
        Usage {
            pools,
            by_agent,
            by_framework,
        }
    }
}
