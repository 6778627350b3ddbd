//! The host side of the `placement` world, and the [`PlacementService`]
//! that frameworks ask through their `placement-service` import.
//!
//! Each placement plugin keeps its own view of the agents: the service
//! holds the one true [`AgentTable`] and, before a call, sends an instance
//! only what changed since it last looked (everything, to a new instance).
//! `filter` and `score` then take candidates as small fixed-size records
//! that point into that view, so a call costs about the same whatever the
//! agents' attributes — the point of the design (reference/wasm-costs.md:
//! ~1.1 µs per candidate when full agent records cross the boundary).

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex, RwLock};

use wasmos_core::Resources;
use wasmtime::Store;
use wasmtime::component::{Component, HasSelf};

use crate::bindings::placement::{Placement, PlacementPre};
use crate::bindings::placement_types as pt;
use crate::bindings::{log, types as wit};
use crate::convert::{config_to_wit, pairs_to_wit, resources_to_wit};
use crate::sandbox::{Common, HostData, Sandbox, World, link, wasi_view};
use crate::{CallError, LoadError, PluginHealth, PluginRuntime};

/// A placement rule as a framework states it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rule {
    pub field: String,
    /// Upper case.
    pub operator: String,
    /// None when empty.
    pub value: Option<String>,
    /// The plugin that must evaluate it; by default the one declaring its
    /// operator.
    pub plugin: Option<String>,
}

impl std::fmt::Display for Rule {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.value {
            Some(v) => write!(f, "[{}, {}, {}]", self.field, self.operator, v),
            None => write!(f, "[{}, {}]", self.field, self.operator),
        }
    }
}

/// A candidate agent, as frameworks know it (from an offer).
#[derive(Debug, Clone, PartialEq)]
pub struct AgentRef {
    pub agent_id: String,
    pub cpus: f64,
    pub mem: f64,
    pub disk: f64,
}

/// The verdict for one candidate.
#[derive(Debug, Clone, PartialEq)]
pub struct Verdict {
    pub fits: bool,
    pub score: f64,
    pub reason: Option<String>,
}

impl Verdict {
    /// Fits, with no score.
    pub fn fit() -> Verdict {
        Verdict {
            fits: true,
            score: 0.0,
            reason: None,
        }
    }
}

/// A verdict whose reason is an index into its [`Evaluation`]'s reasons.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct BriefVerdict {
    pub fits: bool,
    pub score: f64,
    pub reason: Option<u32>,
}

/// Verdicts for numbered candidates, each reason given once.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Evaluation {
    pub verdicts: Vec<BriefVerdict>,
    pub reasons: Vec<String>,
}

impl Evaluation {
    /// Every candidate fits, with no score.
    fn all_fit(n: usize) -> Evaluation {
        Evaluation {
            verdicts: vec![
                BriefVerdict {
                    fits: true,
                    score: 0.0,
                    reason: None,
                };
                n
            ],
            reasons: Vec::new(),
        }
    }

    /// The index of `reason`, added if new.
    fn reason(&mut self, reason: String) -> u32 {
        match self.reasons.iter().position(|r| *r == reason) {
            Some(i) => i as u32,
            None => {
                self.reasons.push(reason);
                (self.reasons.len() - 1) as u32
            }
        }
    }
}

/// Why numbered candidates were not judged.
#[derive(Debug, Clone, PartialEq)]
pub enum NumberedError {
    /// The numbers are of an older generation.
    AgentsChanged,
    Failed(String),
}

/// One agent a framework looked at for a task, and what became of it.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct Judged {
    pub agent_id: String,
    pub hostname: String,
    /// Why it could not take the task; None if it could.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub refused: Option<String>,
    pub score: f64,
}

/// Why a framework placed a task where it did, or why one fits nowhere
/// (its `placement-service.explain`), as the host keeps it: bounded by
/// [`Decision::bounded`].
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct Decision {
    /// None for a refusal: the group waits.
    pub task_id: Option<String>,
    pub group: String,
    pub resources: Resources,
    /// The rules as `[field, OPERATOR, value]`, with the plugin named
    /// when the framework chose one.
    pub rules: Vec<String>,
    pub offers: u32,
    /// Offers ruled out, by reason, most first.
    pub refusals: Vec<(String, u32)>,
    pub candidates: Vec<Judged>,
    pub chosen: Option<String>,
    pub summary: String,
}

impl Decision {
    /// At most this many sampled candidates and refusal reasons.
    pub const MAX_CANDIDATES: usize = 32;
    /// Longest kept string, in bytes.
    pub const MAX_TEXT: usize = 512;
    /// About the most one kept decision may take, in bytes: past it the
    /// sample shrinks, then the rules and reasons.
    pub const MAX_BYTES: usize = 8 << 10;

    /// Roughly what it holds, in bytes.
    pub fn approx_bytes(&self) -> usize {
        let text = |s: &String| s.len() + 24;
        128 + self.group.len()
            + self.summary.len()
            + self.task_id.as_ref().map_or(0, String::len)
            + self.chosen.as_ref().map_or(0, String::len)
            + self.rules.iter().map(text).sum::<usize>()
            + self.refusals.iter().map(|r| text(&r.0)).sum::<usize>()
            + self
                .candidates
                .iter()
                .map(|c| {
                    64 + c.agent_id.len()
                        + c.hostname.len()
                        + c.refused.as_ref().map_or(0, String::len)
                })
                .sum::<usize>()
    }

    /// Cuts what a plugin sent to the host's bounds: a decision is a
    /// diagnostic, so too much is trimmed rather than refused.
    pub fn bounded(mut self) -> Decision {
        // Ports are not what a decision is about; their ranges are unbounded.
        self.resources.ports = Default::default();
        self.refusals
            .sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(&b.0)));
        fn cut(s: &mut String) {
            if s.len() > Decision::MAX_TEXT {
                let mut end = Decision::MAX_TEXT;
                while !s.is_char_boundary(end) {
                    end -= 1;
                }
                s.truncate(end);
                s.push('…');
            }
        }
        self.candidates.truncate(Self::MAX_CANDIDATES);
        self.refusals.truncate(Self::MAX_CANDIDATES);
        self.rules.truncate(Self::MAX_CANDIDATES);
        for t in [&mut self.group, &mut self.summary]
            .into_iter()
            .chain(self.task_id.as_mut())
            .chain(self.chosen.as_mut())
            .chain(self.rules.iter_mut())
            .chain(self.refusals.iter_mut().map(|r| &mut r.0))
        {
            cut(t);
        }
        for c in &mut self.candidates {
            cut(&mut c.agent_id);
            cut(&mut c.hostname);
            if let Some(r) = c.refused.as_mut() {
                cut(r);
            }
            if !c.score.is_finite() {
                c.score = 0.0;
            }
        }
        while self.approx_bytes() > Self::MAX_BYTES {
            if self.candidates.len() > 1 {
                self.candidates.pop();
            } else if self.refusals.len() > 1 {
                self.refusals.pop();
            } else if self.rules.len() > 1 {
                self.rules.pop();
            } else {
                break;
            }
        }
        self
    }
}

/// Answers frameworks' placement questions.
pub trait PlacementEvaluator: Send + Sync {
    /// Checks rules before use.
    fn validate(&self, rules: &[Rule]) -> Result<(), String>;
    /// One verdict per candidate, in order.
    fn evaluate(
        &self,
        group: &str,
        rules: &[Rule],
        resources: &Resources,
        placed: &[(String, u32)],
        candidates: &[AgentRef],
    ) -> Result<Vec<Verdict>, String>;
    /// Each agent's number (None: unknown), and their generation.
    fn numbers(&self, agent_ids: &[String]) -> (u64, Vec<Option<u32>>);
    /// [`PlacementEvaluator::evaluate`] for candidates numbered by
    /// [`PlacementEvaluator::numbers`] of `generation`.
    fn evaluate_numbered(
        &self,
        group: &str,
        rules: &[Rule],
        resources: &Resources,
        placed: &[(String, u32)],
        generation: u64,
        candidates: &[pt::Candidate],
    ) -> Result<Evaluation, NumberedError>;
}

/// What placement plugins know of an agent.
#[derive(Debug, Clone, PartialEq)]
pub struct PlacementAgent {
    pub id: String,
    pub hostname: String,
    pub attributes: BTreeMap<String, String>,
    pub resources: Resources,
}

/// The agents, each at a stable index, and a version that changes with
/// them.
#[derive(Debug, Default)]
pub struct AgentTable {
    version: u64,
    /// Moves on whenever an agent leaves (its index may then be reused):
    /// indices handed out hold while it stays.
    generation: u64,
    by_index: BTreeMap<u32, PlacementAgent>,
    index_of: HashMap<String, u32>,
    free: Vec<u32>,
    next: u32,
}

impl AgentTable {
    /// Replaces the table's contents; keeps the indices of agents that
    /// stay; bumps the version if anything changed.
    pub fn set(&mut self, agents: Vec<PlacementAgent>) {
        let mut changed = false;
        let mut removed = false;
        let keep: std::collections::HashSet<&str> = agents.iter().map(|a| a.id.as_str()).collect();
        let gone: Vec<(String, u32)> = self
            .index_of
            .iter()
            .filter(|(id, _)| !keep.contains(id.as_str()))
            .map(|(id, i)| (id.clone(), *i))
            .collect();
        for (id, i) in gone {
            self.index_of.remove(&id);
            self.by_index.remove(&i);
            self.free.push(i);
            changed = true;
            removed = true;
        }
        for a in agents {
            match self.index_of.get(&a.id) {
                Some(i) => {
                    if self.by_index.get(i) != Some(&a) {
                        self.by_index.insert(*i, a);
                        changed = true;
                    }
                }
                None => {
                    let i = self.free.pop().unwrap_or_else(|| {
                        self.next += 1;
                        self.next - 1
                    });
                    self.index_of.insert(a.id.clone(), i);
                    self.by_index.insert(i, a);
                    changed = true;
                }
            }
        }
        if changed {
            self.version += 1;
        }
        if removed {
            self.generation += 1;
        }
    }

    pub fn index_of(&self, agent_id: &str) -> Option<u32> {
        self.index_of.get(agent_id).copied()
    }

    pub fn len(&self) -> usize {
        self.by_index.len()
    }

    pub fn is_empty(&self) -> bool {
        self.by_index.is_empty()
    }
}

fn agent_to_wit(index: u32, a: &PlacementAgent) -> pt::AgentView {
    pt::AgentView {
        index,
        id: a.id.clone(),
        hostname: a.hostname.clone(),
        attributes: pairs_to_wit(&a.attributes),
        resources: resources_to_wit(&a.resources),
    }
}

/// Per-store state of a placement plugin.
pub struct PlacementHost {
    common: Common,
}

wasi_view!(PlacementHost);

impl HostData for PlacementHost {
    fn common(&mut self) -> &mut Common {
        &mut self.common
    }
}

impl wit::Host for PlacementHost {}
impl pt::Host for PlacementHost {}

impl log::Host for PlacementHost {
    fn log(&mut self, level: log::Level, message: String) {
        self.common.log(level, message);
    }
}

pub(crate) struct PlacementWorld {
    pre: PlacementPre<PlacementHost>,
}

impl World for PlacementWorld {
    type Host = PlacementHost;
    type Bindings = Placement;

    fn new_host(&self, plugin: &str, memory_limit: usize) -> PlacementHost {
        PlacementHost {
            common: Common::new(plugin, memory_limit),
        }
    }

    fn instantiate(&self, store: &mut Store<PlacementHost>) -> wasmtime::Result<Placement> {
        self.pre.instantiate(store)
    }

    fn init(
        &self,
        b: &Placement,
        store: &mut Store<PlacementHost>,
        config: &[(String, String)],
    ) -> wasmtime::Result<Result<(), String>> {
        b.call_init(store, &config_to_wit(config))
    }
}

fn pre(
    runtime: &PluginRuntime,
    component: &Component,
) -> Result<PlacementPre<PlacementHost>, LoadError> {
    let pre = link(runtime, "placement", component, |l| {
        wasmtime_wasi::p2::add_to_linker_sync(l)?;
        Placement::add_to_linker::<_, HasSelf<_>>(l, |h| h)
    })?;
    PlacementPre::new(pre).map_err(|e| LoadError::WrongWorld {
        world: "placement".into(),
        message: format!("{e:#}"),
    })
}

/// Checks that a component is a placement plugin this host can run.
pub fn check(runtime: &PluginRuntime, component: &Component) -> Result<(), LoadError> {
    pre(runtime, component).map(|_| ())
}

/// A sandboxed placement plugin with its own view of the agents.
pub struct PlacementInstance {
    sandbox: Sandbox<PlacementWorld>,
    /// What this instance was last sent, and of which table version.
    sent: BTreeMap<u32, PlacementAgent>,
    sent_version: Option<u64>,
}

impl PlacementInstance {
    pub fn new(
        runtime: &PluginRuntime,
        name: &str,
        component: &Component,
        config: BTreeMap<String, String>,
    ) -> Result<Self, LoadError> {
        let world = PlacementWorld {
            pre: pre(runtime, component)?,
        };
        Ok(PlacementInstance {
            sandbox: Sandbox::new(runtime, name, world, config),
            sent: BTreeMap::new(),
            sent_version: None,
        })
    }

    pub fn health(&self) -> (PluginHealth, Option<String>) {
        self.sandbox.health()
    }

    pub fn reset(&mut self, config: BTreeMap<String, String>) {
        self.sandbox.reset(config);
    }

    /// The changes that bring `sent` to `table`.
    fn changes(sent: &BTreeMap<u32, PlacementAgent>, table: &AgentTable) -> Vec<pt::AgentChange> {
        let mut out = Vec::new();
        for i in sent.keys() {
            if !table.by_index.contains_key(i) {
                out.push(pt::AgentChange::Removed(*i));
            }
        }
        for (i, a) in &table.by_index {
            if sent.get(i) != Some(a) {
                out.push(pt::AgentChange::Upsert(agent_to_wit(*i, a)));
            }
        }
        out
    }

    /// Runs `f` after bringing the instance's view of the agents up to
    /// date; `check` judges the result.
    fn call_synced<R>(
        &mut self,
        table: &AgentTable,
        f: impl FnOnce(&Placement, &mut Store<PlacementHost>) -> wasmtime::Result<R>,
        check: impl FnOnce(&R) -> Result<(), CallError>,
    ) -> Result<R, CallError> {
        let sent = &mut self.sent;
        let sent_version = &mut self.sent_version;
        let deadline = self.sandbox.runtime().config().call_deadline;
        self.sandbox.call_checked(
            deadline,
            |p, store, fresh| {
                if fresh {
                    sent.clear();
                    *sent_version = None;
                }
                if *sent_version != Some(table.version) {
                    let changes = Self::changes(sent, table);
                    if !changes.is_empty() {
                        p.call_agents_changed(&mut *store, &changes)?;
                    }
                    *sent = table.by_index.clone();
                    *sent_version = Some(table.version);
                }
                f(p, store)
            },
            check,
        )
    }

    /// The plugin's check of constraints.
    pub fn validate(
        &mut self,
        table: &AgentTable,
        constraints: &[pt::Constraint],
    ) -> Result<Result<(), String>, CallError> {
        self.call_synced(
            table,
            |p, store| p.call_validate(store, constraints),
            |_| Ok(()),
        )
    }

    /// A store and an instance without `init`, for the benchmarks (which
    /// drop what this returns outside the timing).
    #[doc(hidden)]
    pub fn instantiate_bare(&self) -> Result<Box<dyn std::any::Any>, String> {
        self.sandbox
            .instantiate_bare()
            .map_err(|e| format!("{e:#}"))
    }

    /// Drops the live instance (as a failed call does).
    pub fn discard(&mut self) {
        self.sandbox.discard();
        self.sent.clear();
        self.sent_version = None;
    }

    /// Builds the instance now if there is none (store, instantiation,
    /// `init`), rather than on the next call. The benchmarks time this.
    pub fn warm(&mut self) -> Result<(), CallError> {
        self.sandbox.warm()
    }

    /// Filter alone: one entry per candidate.
    pub fn filter(
        &mut self,
        table: &AgentTable,
        task: &pt::PlacementTask,
        candidates: &[pt::Candidate],
    ) -> Result<Vec<bool>, CallError> {
        let plugin = self.sandbox.name().to_string();
        let n = candidates.len();
        self.call_synced(
            table,
            |p, store| p.call_filter(store, task, candidates),
            |fits| {
                if fits.len() == n {
                    Ok(())
                } else {
                    Err(CallError::Contract {
                        plugin,
                        message: format!(
                            "returned {} filter entries for {n} candidates",
                            fits.len()
                        ),
                    })
                }
            },
        )
    }

    /// Filter and score in one go; a result without one entry per
    /// candidate (or with a score that is not a number) is a failure.
    pub fn filter_score(
        &mut self,
        table: &AgentTable,
        task: &pt::PlacementTask,
        candidates: &[pt::Candidate],
    ) -> Result<(Vec<bool>, Vec<f64>), CallError> {
        let plugin = self.sandbox.name().to_string();
        let n = candidates.len();
        self.call_synced(
            table,
            |p, store| {
                let fits = p.call_filter(&mut *store, task, candidates)?;
                let scores = p.call_score(&mut *store, task, candidates)?;
                Ok((fits, scores))
            },
            |(fits, scores)| {
                let message = if fits.len() != n || scores.len() != n {
                    format!(
                        "returned {} filter and {} score entries for {n} candidates",
                        fits.len(),
                        scores.len()
                    )
                } else if scores.iter().any(|s| !s.is_finite()) {
                    "returned a score that is not a finite number".into()
                } else {
                    return Ok(());
                };
                Err(CallError::Contract { plugin, message })
            },
        )
    }
}

/// A plugin, its name, and the rules it evaluates in one request.
type Route<'r> = (Arc<Installed>, String, Vec<&'r Rule>);

struct Installed {
    instance: Mutex<PlacementInstance>,
    operators: Vec<String>,
    digest: String,
}

/// The installed placement plugins and the agents they place onto.
pub struct PlacementService {
    runtime: PluginRuntime,
    table: RwLock<AgentTable>,
    plugins: RwLock<BTreeMap<String, Arc<Installed>>>,
}

impl std::fmt::Debug for PlacementService {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PlacementService").finish()
    }
}

impl PlacementService {
    pub fn new(runtime: &PluginRuntime) -> Arc<PlacementService> {
        Arc::new(PlacementService {
            runtime: runtime.clone(),
            table: RwLock::new(AgentTable::default()),
            plugins: RwLock::new(BTreeMap::new()),
        })
    }

    /// Replaces the agents plugins see.
    pub fn set_agents(&self, agents: Vec<PlacementAgent>) {
        self.table
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .set(agents);
    }

    /// Installs or replaces a plugin (same digest: only reconfigures it).
    pub fn install(
        &self,
        name: &str,
        digest: &str,
        component: &Component,
        operators: Vec<String>,
        config: BTreeMap<String, String>,
    ) -> Result<(), LoadError> {
        if let Some(p) = self.plugins_read().get(name)
            && p.digest == digest
        {
            p.instance
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .reset(config);
            return Ok(());
        }
        let instance = PlacementInstance::new(&self.runtime, name, component, config)?;
        self.plugins
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .insert(
                name.to_string(),
                Arc::new(Installed {
                    instance: Mutex::new(instance),
                    operators: operators.iter().map(|o| o.to_ascii_uppercase()).collect(),
                    digest: digest.to_string(),
                }),
            );
        Ok(())
    }

    pub fn remove(&self, name: &str) {
        self.plugins
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .remove(name);
    }

    /// Names and digests of the installed plugins.
    pub fn installed(&self) -> Vec<(String, String)> {
        self.plugins_read()
            .iter()
            .map(|(n, p)| (n.clone(), p.digest.clone()))
            .collect()
    }

    pub fn health(&self, name: &str) -> Option<(PluginHealth, Option<String>)> {
        self.plugins_read().get(name).map(|p| {
            p.instance
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .health()
        })
    }

    fn plugins_read(&self) -> std::sync::RwLockReadGuard<'_, BTreeMap<String, Arc<Installed>>> {
        self.plugins.read().unwrap_or_else(|p| p.into_inner())
    }

    /// Which plugin evaluates each rule, grouped by plugin.
    fn route<'r>(&self, rules: &'r [Rule]) -> Result<Vec<Route<'r>>, String> {
        let plugins = self.plugins_read();
        let mut by: BTreeMap<String, Vec<&Rule>> = BTreeMap::new();
        for r in rules {
            let name = match &r.plugin {
                Some(p) if plugins.contains_key(p) => p.clone(),
                Some(p) => {
                    return Err(format!(
                        "constraint {r} names placement plugin {p}, which is not installed"
                    ));
                }
                None => plugins
                    .iter()
                    .find(|(_, p)| p.operators.iter().any(|o| o == &r.operator))
                    .map(|(n, _)| n.clone())
                    .ok_or_else(|| {
                        let known: Vec<String> =
                            plugins.values().flat_map(|p| p.operators.clone()).collect();
                        format!(
                            "constraint {r}: no placement plugin handles operator {} (known: {})",
                            r.operator,
                            if known.is_empty() {
                                "none installed".into()
                            } else {
                                known.join(", ")
                            }
                        )
                    })?,
            };
            by.entry(name).or_default().push(r);
        }
        Ok(by
            .into_iter()
            .filter_map(|(name, rules)| plugins.get(&name).map(|p| (p.clone(), name, rules)))
            .collect())
    }
}

fn constraints_to_wit(rules: &[&Rule]) -> Vec<pt::Constraint> {
    rules
        .iter()
        .map(|r| pt::Constraint {
            field: r.field.clone(),
            operator: r.operator.clone(),
            value: r.value.clone(),
        })
        .collect()
}

impl PlacementEvaluator for PlacementService {
    fn validate(&self, rules: &[Rule]) -> Result<(), String> {
        for (plugin, name, rules) in self.route(rules)? {
            let table = self.table.read().unwrap_or_else(|p| p.into_inner());
            let mut inst = plugin.instance.lock().unwrap_or_else(|e| e.into_inner());
            match inst.validate(&table, &constraints_to_wit(&rules)) {
                Ok(Ok(())) => {}
                Ok(Err(why)) => return Err(why),
                Err(e) => return Err(format!("placement plugin {name} failed: {e}")),
            }
        }
        Ok(())
    }

    fn evaluate(
        &self,
        group: &str,
        rules: &[Rule],
        resources: &Resources,
        placed: &[(String, u32)],
        candidates: &[AgentRef],
    ) -> Result<Vec<Verdict>, String> {
        let routes = self.route(rules)?;
        if routes.is_empty() {
            return Ok(candidates.iter().map(|_| Verdict::fit()).collect());
        }
        let table = self.table.read().unwrap_or_else(|p| p.into_inner());
        // Candidates the table does not know cannot be judged: unfit.
        let mut known = Vec::with_capacity(candidates.len());
        let mut positions = Vec::with_capacity(candidates.len());
        let mut verdicts: Vec<Verdict> = candidates
            .iter()
            .enumerate()
            .map(|(pos, c)| match table.index_of(&c.agent_id) {
                Some(agent) => {
                    known.push(pt::Candidate {
                        agent,
                        cpus: c.cpus,
                        mem: c.mem,
                        disk: c.disk,
                    });
                    positions.push(pos);
                    Verdict::fit()
                }
                None => Verdict {
                    fits: false,
                    score: 0.0,
                    reason: Some(format!("agent {} is not known to placement", c.agent_id)),
                },
            })
            .collect();
        let ev = judge(&table, routes, group, resources, placed, &known)?;
        for (pos, v) in positions.into_iter().zip(ev.verdicts) {
            verdicts[pos] = Verdict {
                fits: v.fits,
                score: v.score,
                reason: v.reason.map(|r| ev.reasons[r as usize].clone()),
            };
        }
        Ok(verdicts)
    }

    fn numbers(&self, agent_ids: &[String]) -> (u64, Vec<Option<u32>>) {
        let table = self.table.read().unwrap_or_else(|p| p.into_inner());
        let numbers = agent_ids.iter().map(|id| table.index_of(id)).collect();
        (table.generation, numbers)
    }

    fn evaluate_numbered(
        &self,
        group: &str,
        rules: &[Rule],
        resources: &Resources,
        placed: &[(String, u32)],
        generation: u64,
        candidates: &[pt::Candidate],
    ) -> Result<Evaluation, NumberedError> {
        let routes = self.route(rules).map_err(NumberedError::Failed)?;
        if routes.is_empty() {
            return Ok(Evaluation::all_fit(candidates.len()));
        }
        let table = self.table.read().unwrap_or_else(|p| p.into_inner());
        if table.generation != generation {
            return Err(NumberedError::AgentsChanged);
        }
        // Numbers of this generation name agents in the table, or none
        // ever did: those are unfit, as unknown ids are.
        let (known, positions): (Vec<pt::Candidate>, Vec<usize>) = candidates
            .iter()
            .enumerate()
            .filter(|(_, c)| table.by_index.contains_key(&c.agent))
            .map(|(pos, c)| (*c, pos))
            .unzip();
        if known.len() == candidates.len() {
            return judge(&table, routes, group, resources, placed, &known)
                .map_err(NumberedError::Failed);
        }
        let mut out = Evaluation::all_fit(candidates.len());
        let unknown = out.reason("the agent is not known to placement".into());
        for v in &mut out.verdicts {
            v.fits = false;
            v.reason = Some(unknown);
        }
        let ev = judge(&table, routes, group, resources, placed, &known)
            .map_err(NumberedError::Failed)?;
        for (pos, v) in positions.into_iter().zip(ev.verdicts) {
            out.verdicts[pos] = BriefVerdict {
                reason: v.reason.map(|r| out.reason(ev.reasons[r as usize].clone())),
                ..v
            };
        }
        Ok(out)
    }
}

/// The verdicts of the routed plugins on candidates the table knows: each
/// plugin filters and scores them all at once; the scores add up, and the
/// first plugin to refuse a candidate gives its reason (the rule that
/// refused it, or all of its rules).
fn judge(
    table: &AgentTable,
    routes: Vec<Route<'_>>,
    group: &str,
    resources: &Resources,
    placed: &[(String, u32)],
    candidates: &[pt::Candidate],
) -> Result<Evaluation, String> {
    let mut out = Evaluation::all_fit(candidates.len());
    if routes.is_empty() {
        return Ok(out);
    }
    let placed: Vec<(u32, u32)> = placed
        .iter()
        .filter_map(|(id, n)| table.index_of(id).map(|i| (i, *n)))
        .collect();
    for (plugin, name, rules) in routes {
        let task = pt::PlacementTask {
            group: group.to_string(),
            constraints: constraints_to_wit(&rules),
            resources: resources_to_wit(resources),
            placed: placed.clone(),
        };
        let mut inst = plugin.instance.lock().unwrap_or_else(|e| e.into_inner());
        let (fits, scores) = inst
            .filter_score(table, &task, candidates)
            .map_err(|e| format!("placement plugin {name} failed: {e}"))?;
        let blame = blame(&mut inst, table, &task, &rules, candidates, &fits);
        // Each reason is written once: by the rule blamed (its position
        // in `rules`), or all of the plugin's rules.
        let mut by_rule: Vec<Option<u32>> = vec![None; rules.len()];
        let mut all_rules: Option<u32> = None;
        let Evaluation { verdicts, reasons } = &mut out;
        for (k, v) in verdicts.iter_mut().enumerate() {
            v.score += scores[k];
            if fits[k] || !v.fits {
                continue;
            }
            v.fits = false;
            let blamed = blame
                .get(&k)
                .and_then(|rule| rules.iter().position(|r| std::ptr::eq(*r, *rule)));
            let slot = match blamed {
                Some(i) => &mut by_rule[i],
                None => &mut all_rules,
            };
            let reason = match *slot {
                Some(r) => r,
                None => {
                    let text = match blamed {
                        Some(i) => rules[i].to_string(),
                        None => rules
                            .iter()
                            .map(|r| r.to_string())
                            .collect::<Vec<_>>()
                            .join(", "),
                    };
                    reasons.push(format!("{name}: {text} not met"));
                    let r = (reasons.len() - 1) as u32;
                    *slot = Some(r);
                    r
                }
            };
            v.reason = Some(reason);
        }
    }
    Ok(out)
}

/// Which of a plugin's rules refused each refused candidate (by position
/// in `candidates`), when it evaluates several: each rule is asked alone
/// about the refused ones (the first 64), in order, and the first that refuses one is
/// named. A candidate only the rules together refuse is not in the map.
fn blame<'r>(
    inst: &mut PlacementInstance,
    table: &AgentTable,
    task: &pt::PlacementTask,
    rules: &[&'r Rule],
    candidates: &[pt::Candidate],
    fits: &[bool],
) -> HashMap<usize, &'r Rule> {
    let mut out = HashMap::new();
    // Each rule is asked about at most this many of the refused: the
    // rest keep the plugin's combined reason (this is on the hot path).
    const MOST: usize = 64;
    let refused: Vec<usize> = (0..candidates.len())
        .filter(|k| !fits[*k])
        .take(MOST)
        .collect();
    if rules.len() < 2 || refused.is_empty() {
        return out;
    }
    let subset: Vec<pt::Candidate> = refused.iter().map(|k| candidates[*k]).collect();
    for rule in rules {
        let alone = pt::PlacementTask {
            constraints: constraints_to_wit(&[*rule]),
            ..task.clone()
        };
        let Ok(fits) = inst.filter(table, &alone, &subset) else {
            break;
        };
        for (j, ok) in fits.iter().enumerate() {
            if !ok {
                out.entry(refused[j]).or_insert(*rule);
            }
        }
        if out.len() == refused.len() {
            break;
        }
    }
    out
}

/// A service with no plugins: every rule is refused. For hosts (and tests)
/// that place nothing.
#[derive(Debug, Default)]
pub struct NoPlacement;

impl PlacementEvaluator for NoPlacement {
    fn validate(&self, rules: &[Rule]) -> Result<(), String> {
        match rules.first() {
            Some(r) => Err(format!(
                "constraint {r}: no placement plugins are installed"
            )),
            None => Ok(()),
        }
    }

    fn evaluate(
        &self,
        _: &str,
        rules: &[Rule],
        _: &Resources,
        _: &[(String, u32)],
        candidates: &[AgentRef],
    ) -> Result<Vec<Verdict>, String> {
        self.validate(rules)?;
        Ok(candidates.iter().map(|_| Verdict::fit()).collect())
    }

    /// Any agent may be judged: as [`NoPlacement::evaluate`], all fit
    /// when there are no rules.
    fn numbers(&self, agent_ids: &[String]) -> (u64, Vec<Option<u32>>) {
        (0, (0..agent_ids.len() as u32).map(Some).collect())
    }

    fn evaluate_numbered(
        &self,
        _: &str,
        rules: &[Rule],
        _: &Resources,
        _: &[(String, u32)],
        _: u64,
        candidates: &[pt::Candidate],
    ) -> Result<Evaluation, NumberedError> {
        self.validate(rules).map_err(NumberedError::Failed)?;
        Ok(Evaluation::all_fit(candidates.len()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_decision_from_a_plugin_is_cut_to_the_hosts_bounds() {
        let long = "x".repeat(5000);
        let d = Decision {
            task_id: Some(long.clone()),
            group: "g".into(),
            resources: Resources::default(),
            rules: vec![long.clone(); 100],
            offers: 7,
            refusals: (0..100).map(|i| (format!("r{i}"), i)).collect(),
            candidates: (0..100)
                .map(|i| Judged {
                    agent_id: format!("a{i}"),
                    hostname: long.clone(),
                    refused: Some(long.clone()),
                    score: if i == 0 { f64::NAN } else { 1.0 },
                })
                .collect(),
            chosen: Some("a0".into()),
            summary: "é".repeat(2000),
        }
        .bounded();
        assert!(
            d.approx_bytes() <= Decision::MAX_BYTES,
            "{}",
            d.approx_bytes()
        );
        assert!(!d.candidates.is_empty() && d.candidates.len() <= Decision::MAX_CANDIDATES);
        assert_eq!(d.candidates[0].agent_id, "a0", "the chosen stays first");
        assert_eq!(d.candidates[0].score, 0.0, "not a number: 0");
        assert!(d.summary.len() <= Decision::MAX_TEXT + '…'.len_utf8());
        assert_eq!(
            d.refusals[0],
            ("r99".to_string(), 99),
            "the biggest reason is kept"
        );
    }

    fn agent(id: &str, rack: &str) -> PlacementAgent {
        PlacementAgent {
            id: id.into(),
            hostname: id.into(),
            attributes: [("rack".to_string(), rack.to_string())].into(),
            resources: Resources::default(),
        }
    }

    #[test]
    fn indices_are_stable_and_versions_move_only_on_change() {
        let mut t = AgentTable::default();
        t.set(vec![agent("a", "r1"), agent("b", "r2")]);
        let (ia, ib, v) = (
            t.index_of("a").unwrap(),
            t.index_of("b").unwrap(),
            t.version,
        );
        t.set(vec![agent("b", "r2"), agent("a", "r1")]);
        assert_eq!(t.version, v, "same agents: same version");
        t.set(vec![agent("b", "r3")]);
        assert_eq!(t.index_of("b"), Some(ib), "b keeps its index");
        assert_eq!(t.index_of("a"), None);
        assert!(t.version > v);
        t.set(vec![agent("b", "r3"), agent("c", "r1")]);
        assert_eq!(t.index_of("c"), Some(ia), "a freed index is reused");
    }

    #[test]
    fn deltas_bring_a_view_up_to_date() {
        let mut t = AgentTable::default();
        t.set(vec![agent("a", "r1"), agent("b", "r2")]);
        let sent = t.by_index.clone();
        t.set(vec![agent("a", "r9"), agent("c", "r1")]);
        let changes = PlacementInstance::changes(&sent, &t);
        let removed = changes
            .iter()
            .filter(|c| matches!(c, pt::AgentChange::Removed(_)))
            .count();
        let upserts = changes
            .iter()
            .filter(|c| matches!(c, pt::AgentChange::Upsert(_)))
            .count();
        assert_eq!(
            (removed, upserts),
            (0, 2),
            "b's index went to c; a changed: {changes:?}"
        );
        assert!(PlacementInstance::changes(&t.by_index.clone(), &t).is_empty());
    }
}
