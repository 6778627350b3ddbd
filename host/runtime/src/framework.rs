//! The host side of the `framework` world.
//!
//! A [`FrameworkInstance`] is a sandboxed scheduler. Each call is a
//! transaction: the plugin's `state` writes go to an overlay it reads back,
//! its `driver` calls are recorded, and both come back as [`Effects`] for
//! the caller to commit. A call that fails yields no effects. Placement
//! questions (`placement-service`) are answered on the spot by the
//! [`PlacementEvaluator`] the host was given.

use std::collections::BTreeMap;
use std::sync::Arc;

use wasmos_core::{AgentId, FrameworkId, Offer, OfferId, TaskId, TaskSpec, TaskStatus, limits};
use wasmtime::Store;
use wasmtime::component::{Component, HasSelf};

use crate::bindings::framework::wasmos::plugin::{driver, placement_service, state};
use crate::bindings::framework::{Framework, FrameworkPre};
use crate::bindings::{clock, log, placement_types, types as wit};
use crate::convert::{config_to_wit, offer_to_wit, pairs_to_wit, status_to_wit, task_from_wit};
use crate::placement::{
    AgentRef, BriefVerdict, Decision, Judged, NumberedError, PlacementEvaluator, Rule, Verdict,
};
use crate::sandbox::{Common, HostData, Sandbox, World, link, wasi_view};
use crate::{CallError, LoadError, PluginHealth, PluginRuntime};

/// Limits on what one call may buffer.
const MAX_OVERLAY_BYTES: usize = 64 << 20;
const MAX_ACTIONS: usize = 10_000;

/// Read access to frameworks' replicated key-value namespaces.
pub trait KvSource: Send + Sync {
    fn get(&self, namespace: &FrameworkId, key: &str) -> Option<Vec<u8>>;
    /// Keys starting with `prefix`, in byte order.
    fn keys(&self, namespace: &FrameworkId, prefix: &str) -> Vec<String>;
    /// The agents being drained with their tasks to be killed (a
    /// framework's `driver.draining-agents`).
    fn draining_agents(&self) -> Vec<AgentId> {
        Vec::new()
    }
}

/// A change to the framework's key-value namespace.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KvOp {
    Set { key: String, value: Vec<u8> },
    Delete { key: String },
}

/// Something the framework asked the master to do.
#[derive(Debug, Clone, PartialEq)]
pub enum DriverAction {
    Launch {
        offer_ids: Vec<OfferId>,
        tasks: Vec<TaskSpec>,
        refuse_seconds: Option<f64>,
    },
    Decline {
        offer_ids: Vec<OfferId>,
        refuse_seconds: Option<f64>,
    },
    Kill {
        task_id: TaskId,
    },
    Revive,
    Suppress,
    /// Destroy persistent volumes of the framework's role on an agent.
    DestroyVolumes {
        agent_id: AgentId,
        volume_ids: Vec<String>,
    },
}

/// What a successful call asks the host to commit and do.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Effects {
    pub kv: Vec<KvOp>,
    pub actions: Vec<DriverAction>,
    /// Placement decisions to keep for operators (not replicated).
    pub decisions: Vec<Decision>,
    /// Whether the call explained its placements at all: its refusals are
    /// then all of the framework's groups that wait.
    pub explained: bool,
}

impl Effects {
    /// Nothing to commit (decisions are not committed).
    pub fn is_empty(&self) -> bool {
        self.kv.is_empty() && self.actions.is_empty()
    }
}

/// An HTTP request to a framework's own API.
#[derive(Debug, Clone, Default)]
pub struct HttpRequest {
    pub method: String,
    /// Below the mount point, starting with `/`.
    pub path: String,
    pub query: String,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

/// A framework's HTTP response.
#[derive(Debug, Clone)]
pub struct HttpResponse {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

/// Per-store state: the call's buffered effects and what answers imports.
pub struct FrameworkHost {
    common: Common,
    namespace: FrameworkId,
    kv: Arc<dyn KvSource>,
    placement: Arc<dyn PlacementEvaluator>,
    clock: Option<Clock>,
    overlay: BTreeMap<String, Option<Vec<u8>>>,
    overlay_bytes: usize,
    actions: Vec<DriverAction>,
    decisions: Vec<Decision>,
    explained: bool,
}

wasi_view!(FrameworkHost);

impl HostData for FrameworkHost {
    fn common(&mut self) -> &mut Common {
        &mut self.common
    }

    fn discard(&mut self) {
        self.overlay.clear();
        self.overlay_bytes = 0;
        self.actions.clear();
        self.decisions.clear();
        self.explained = false;
    }
}

impl FrameworkHost {
    fn take_effects(&mut self) -> Effects {
        self.overlay_bytes = 0;
        let kv = std::mem::take(&mut self.overlay)
            .into_iter()
            .map(|(key, v)| match v {
                Some(value) => KvOp::Set { key, value },
                None => KvOp::Delete { key },
            })
            .collect();
        Effects {
            kv,
            actions: std::mem::take(&mut self.actions),
            decisions: std::mem::take(&mut self.decisions),
            explained: std::mem::take(&mut self.explained),
        }
    }

    fn push_action(&mut self, a: DriverAction) -> Result<(), String> {
        if self.actions.len() >= MAX_ACTIONS {
            return Err(format!(
                "more than {MAX_ACTIONS} driver actions in one call"
            ));
        }
        self.actions.push(a);
        Ok(())
    }
}

impl wit::Host for FrameworkHost {}
impl placement_types::Host for FrameworkHost {}

impl log::Host for FrameworkHost {
    fn log(&mut self, level: log::Level, message: String) {
        self.common.log(level, message);
    }
}

impl clock::Host for FrameworkHost {
    fn now_ms(&mut self) -> u64 {
        match &self.clock {
            Some(c) => c(),
            None => crate::now_ms(),
        }
    }
}

impl state::Host for FrameworkHost {
    fn get(&mut self, key: String) -> Option<Vec<u8>> {
        match self.overlay.get(&key) {
            Some(v) => v.clone(),
            None => self.kv.get(&self.namespace, &key),
        }
    }

    fn set(&mut self, key: String, value: Vec<u8>) -> Result<(), String> {
        if key.len() > limits::MAX_KV_KEY {
            return Err(format!("key is longer than {} bytes", limits::MAX_KV_KEY));
        }
        if value.len() > limits::MAX_KV_VALUE {
            return Err(format!(
                "value is larger than {} bytes",
                limits::MAX_KV_VALUE
            ));
        }
        if self.overlay_bytes + key.len() + value.len() > MAX_OVERLAY_BYTES {
            return Err(format!(
                "more than {} MiB written in one call",
                MAX_OVERLAY_BYTES >> 20
            ));
        }
        self.overlay_bytes += key.len() + value.len();
        self.overlay.insert(key, Some(value));
        Ok(())
    }

    fn delete(&mut self, key: String) {
        self.overlay.insert(key, None);
    }

    fn keys(&mut self, prefix: String) -> Vec<String> {
        let mut keys: std::collections::BTreeSet<String> =
            self.kv.keys(&self.namespace, &prefix).into_iter().collect();
        for (k, v) in self.overlay.range(prefix.clone()..) {
            if !k.starts_with(&prefix) {
                break;
            }
            if v.is_some() {
                keys.insert(k.clone());
            } else {
                keys.remove(k);
            }
        }
        keys.into_iter().collect()
    }
}

impl driver::Host for FrameworkHost {
    fn launch(
        &mut self,
        offer_ids: Vec<String>,
        tasks: Vec<wit::TaskSpec>,
        refuse_seconds: Option<f64>,
    ) -> Result<(), String> {
        let offer_ids = parse_offer_ids(offer_ids)?;
        if offer_ids.is_empty() {
            return Err("launch needs at least one offer".into());
        }
        let tasks = tasks
            .into_iter()
            .map(task_from_wit)
            .collect::<Result<Vec<_>, _>>()?;
        check_refuse(refuse_seconds)?;
        self.push_action(DriverAction::Launch {
            offer_ids,
            tasks,
            refuse_seconds,
        })
    }

    fn decline(&mut self, offer_ids: Vec<String>, refuse_seconds: Option<f64>) {
        // A malformed id cannot name a real offer: ignore it, as Mesos
        // ignores declines of unknown offers.
        let Ok(offer_ids) = parse_offer_ids(offer_ids) else {
            return;
        };
        let refuse_seconds = refuse_seconds.filter(|_| check_refuse(refuse_seconds).is_ok());
        let _ = self.push_action(DriverAction::Decline {
            offer_ids,
            refuse_seconds,
        });
    }

    fn kill(&mut self, task_id: String) {
        if let Ok(task_id) = TaskId::new(task_id) {
            let _ = self.push_action(DriverAction::Kill { task_id });
        }
    }

    fn revive(&mut self) {
        let _ = self.push_action(DriverAction::Revive);
    }

    fn suppress(&mut self) {
        let _ = self.push_action(DriverAction::Suppress);
    }

    fn draining_agents(&mut self) -> Vec<String> {
        self.kv
            .draining_agents()
            .into_iter()
            .map(|a| a.to_string())
            .collect()
    }

    fn destroy_volumes(&mut self, agent_id: String, volume_ids: Vec<String>) {
        // Ids that cannot name a volume name none this agent holds.
        let Ok(agent_id) = agent_id.parse::<AgentId>() else {
            return;
        };
        let volume_ids: Vec<String> = volume_ids
            .into_iter()
            .filter(|id| wasmos_core::reservation::check_volume_id(id).is_ok())
            .collect();
        if !volume_ids.is_empty() {
            let _ = self.push_action(DriverAction::DestroyVolumes {
                agent_id,
                volume_ids,
            });
        }
    }
}

fn rules_from_wit(rules: Vec<placement_service::Rule>) -> Vec<Rule> {
    rules
        .into_iter()
        .map(|r| Rule {
            field: r.constraint.field,
            operator: r.constraint.operator.to_ascii_uppercase(),
            value: r.constraint.value.filter(|v| !v.is_empty()),
            plugin: r.plugin,
        })
        .collect()
}

impl placement_service::Host for FrameworkHost {
    fn validate(&mut self, rules: Vec<placement_service::Rule>) -> Result<(), String> {
        self.placement.validate(&rules_from_wit(rules))
    }

    fn evaluate(
        &mut self,
        request: placement_service::Request,
        candidates: Vec<placement_service::Candidate>,
    ) -> Result<Vec<placement_service::Verdict>, String> {
        let rules = rules_from_wit(request.rules);
        let resources = crate::convert::resources_from_wit(request.resources)?;
        let placed: Vec<(String, u32)> = request.placed;
        let candidates: Vec<AgentRef> = candidates
            .into_iter()
            .map(|c| AgentRef {
                agent_id: c.agent_id,
                cpus: c.cpus,
                mem: c.mem,
                disk: c.disk,
            })
            .collect();
        let verdicts =
            self.placement
                .evaluate(&request.group, &rules, &resources, &placed, &candidates)?;
        Ok(verdicts
            .into_iter()
            .map(
                |Verdict {
                     fits,
                     score,
                     reason,
                 }| placement_service::Verdict {
                    fits,
                    score,
                    reason,
                },
            )
            .collect())
    }

    fn agent_numbers(&mut self, agent_ids: Vec<String>) -> placement_service::Numbering {
        let (generation, numbers) = self.placement.numbers(&agent_ids);
        placement_service::Numbering {
            generation,
            numbers,
        }
    }

    fn evaluate_numbered(
        &mut self,
        request: placement_service::Request,
        generation: u64,
        candidates: Vec<placement_service::NumberedCandidate>,
    ) -> Result<placement_service::Evaluation, placement_service::EvaluateError> {
        use placement_service::EvaluateError;
        let rules = rules_from_wit(request.rules);
        let resources =
            crate::convert::resources_from_wit(request.resources).map_err(EvaluateError::Failed)?;
        let ev = self
            .placement
            .evaluate_numbered(
                &request.group,
                &rules,
                &resources,
                &request.placed,
                generation,
                &candidates,
            )
            .map_err(|e| match e {
                NumberedError::AgentsChanged => EvaluateError::AgentsChanged,
                NumberedError::Failed(why) => EvaluateError::Failed(why),
            })?;
        Ok(placement_service::Evaluation {
            verdicts: ev
                .verdicts
                .into_iter()
                .map(
                    |BriefVerdict {
                         fits,
                         score,
                         reason,
                     }| placement_service::BriefVerdict {
                        fits,
                        score,
                        reason,
                    },
                )
                .collect(),
            reasons: ev.reasons,
        })
    }

    fn explain(&mut self, decisions: Vec<placement_service::Decision>) {
        let room = MAX_ACTIONS.saturating_sub(self.decisions.len());
        let refusals = decisions.iter().filter(|d| d.chosen.is_none()).count();
        // What waits must all be told, or the host would take the groups
        // left out for placed: past the bound, placements go first (in
        // order), and if the refusals alone do not fit, the call does not
        // renew what waits.
        self.explained = refusals <= room;
        let mut placed_room = room.saturating_sub(refusals);
        let mut refusal_room = room;
        if decisions.len() > room {
            self.common.log(
                log::Level::Warn,
                format!(
                    "{} placement decisions dropped: at most {MAX_ACTIONS} are kept per call",
                    decisions.len() - room
                ),
            );
        }
        let kept = decisions.into_iter().filter(|d| {
            let budget = if d.chosen.is_none() {
                &mut refusal_room
            } else {
                &mut placed_room
            };
            let keep = *budget > 0;
            *budget = budget.saturating_sub(1);
            keep
        });
        for d in kept {
            let resources = crate::convert::resources_from_wit(d.resources).unwrap_or_default();
            let rules = rules_from_wit(d.rules)
                .into_iter()
                .map(|r| match &r.plugin {
                    Some(p) => format!("{r} by {p}"),
                    None => r.to_string(),
                })
                .collect();
            let candidates = d
                .candidates
                .into_iter()
                .take(Decision::MAX_CANDIDATES)
                .map(|c| Judged {
                    agent_id: c.agent_id,
                    hostname: c.hostname,
                    refused: c.refused,
                    score: c.score,
                })
                .collect();
            self.decisions.push(
                Decision {
                    task_id: d.task_id,
                    group: d.group,
                    resources,
                    rules,
                    offers: d.offers,
                    refusals: d.refusals,
                    candidates,
                    chosen: d.chosen,
                    summary: d.summary,
                }
                .bounded(),
            );
        }
    }
}

fn parse_offer_ids(ids: Vec<String>) -> Result<Vec<OfferId>, String> {
    ids.into_iter()
        .map(|s| OfferId::new(s.clone()).map_err(|e| format!("offer id {s:?}: {e}")))
        .collect()
}

fn check_refuse(refuse: Option<f64>) -> Result<(), String> {
    match refuse {
        Some(r) if !r.is_finite() || r < 0.0 => Err(format!("refuse-seconds {r} must be >= 0")),
        _ => Ok(()),
    }
}

/// What a framework's `clock.now-ms` reads: milliseconds since the Unix
/// epoch; a simulation gives its virtual time.
pub type Clock = Arc<dyn Fn() -> u64 + Send + Sync>;

/// The framework world, as the sandbox needs it.
pub(crate) struct FrameworkWorld {
    pre: FrameworkPre<FrameworkHost>,
    namespace: FrameworkId,
    kv: Arc<dyn KvSource>,
    placement: Arc<dyn PlacementEvaluator>,
    clock: Option<Clock>,
}

impl World for FrameworkWorld {
    type Host = FrameworkHost;
    type Bindings = Framework;

    fn new_host(&self, plugin: &str, memory_limit: usize) -> FrameworkHost {
        FrameworkHost {
            common: Common::new(plugin, memory_limit),
            namespace: self.namespace.clone(),
            kv: self.kv.clone(),
            placement: self.placement.clone(),
            clock: self.clock.clone(),
            overlay: BTreeMap::new(),
            overlay_bytes: 0,
            actions: Vec::new(),
            decisions: Vec::new(),
            explained: false,
        }
    }

    fn instantiate(&self, store: &mut Store<FrameworkHost>) -> wasmtime::Result<Framework> {
        self.pre.instantiate(store)
    }

    fn init(
        &self,
        b: &Framework,
        store: &mut Store<FrameworkHost>,
        config: &[(String, String)],
    ) -> wasmtime::Result<Result<(), String>> {
        b.call_init(store, &config_to_wit(config))
    }
}

/// Checks that a component is a framework plugin this host can run.
pub fn check(runtime: &PluginRuntime, component: &Component) -> Result<(), LoadError> {
    pre(runtime, component).map(|_| ())
}

fn pre(
    runtime: &PluginRuntime,
    component: &Component,
) -> Result<FrameworkPre<FrameworkHost>, LoadError> {
    let pre = link(runtime, "framework", component, |l| {
        wasmtime_wasi::p2::add_to_linker_sync(l)?;
        Framework::add_to_linker::<_, HasSelf<_>>(l, |h| h)
    })?;
    FrameworkPre::new(pre).map_err(|e| LoadError::WrongWorld {
        world: "framework".into(),
        message: format!("{e:#}"),
    })
}

/// A sandboxed framework plugin.
pub struct FrameworkInstance {
    sandbox: Sandbox<FrameworkWorld>,
}

impl std::fmt::Debug for FrameworkInstance {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FrameworkInstance")
            .field("name", &self.sandbox.name())
            .finish()
    }
}

impl FrameworkInstance {
    /// Links `component` against the framework world. Nothing runs yet:
    /// the first call instantiates it and calls `init`.
    pub fn new(
        runtime: &PluginRuntime,
        name: &str,
        namespace: FrameworkId,
        component: &Component,
        config: BTreeMap<String, String>,
        kv: Arc<dyn KvSource>,
        placement: Arc<dyn PlacementEvaluator>,
    ) -> Result<FrameworkInstance, LoadError> {
        let world = FrameworkWorld {
            pre: pre(runtime, component)?,
            namespace,
            kv,
            placement,
            clock: None,
        };
        Ok(FrameworkInstance {
            sandbox: Sandbox::new(runtime, name, world, config),
        })
    }

    /// Its `clock` import reads `clock` instead of the system's (a
    /// simulation's virtual time), from its next instance on.
    pub fn with_clock(mut self, clock: Clock) -> Self {
        self.sandbox.world_mut().clock = Some(clock);
        self.sandbox.discard();
        self
    }

    pub fn name(&self) -> &str {
        self.sandbox.name()
    }

    /// Health and the last error, for `plugin list` and the API.
    pub fn health(&self) -> (PluginHealth, Option<String>) {
        self.sandbox.health()
    }

    /// Forgets failures and the live instance (after a reconfiguration).
    pub fn reset(&mut self, config: BTreeMap<String, String>) {
        self.sandbox.reset(config)
    }

    /// Drops the instance so that the next call starts a new one, which
    /// rebuilds its memory from the replicated state in `init` (after a
    /// call whose effects could not be committed).
    pub fn restart(&mut self) {
        self.sandbox.restart()
    }

    pub fn offers(&mut self, offers: &[Offer]) -> Result<Effects, CallError> {
        let offers: Vec<wit::Offer> = offers.iter().map(offer_to_wit).collect();
        self.call(|fw, store| fw.call_offers(store, &offers))
            .map(|((), e)| e)
    }

    pub fn status(&mut self, status: &TaskStatus) -> Result<Effects, CallError> {
        let s = status_to_wit(status);
        self.call(|fw, store| fw.call_status(store, &s))
            .map(|((), e)| e)
    }

    /// Delivers several updates (of different tasks) in one sandboxed call
    /// whose effects commit together: one failure fails them all, and
    /// nothing of the batch is kept.
    pub fn status_batch(&mut self, updates: &[TaskStatus]) -> Result<Effects, CallError> {
        let wits: Vec<_> = updates.iter().map(status_to_wit).collect();
        self.call(|fw, store| {
            for s in &wits {
                fw.call_status(&mut *store, s)?;
            }
            Ok(())
        })
        .map(|((), e)| e)
    }

    pub fn tick(&mut self, now_ms: u64) -> Result<Effects, CallError> {
        self.call(|fw, store| fw.call_tick(store, now_ms))
            .map(|((), e)| e)
    }

    pub fn http(&mut self, req: HttpRequest) -> Result<(HttpResponse, Effects), CallError> {
        let req = wit::HttpRequest {
            method: req.method,
            path: req.path,
            query: req.query,
            headers: pairs_to_wit(req.headers.iter().map(|(k, v)| (k, v))),
            body: req.body,
        };
        let limit = self.sandbox.runtime().config().max_response_body;
        let deadline = self.sandbox.runtime().config().call_deadline;
        let plugin = self.name().to_string();
        let (resp, effects) = self.sandbox.call_checked(
            deadline,
            |fw, store, _| {
                let r = fw.call_handle_http(&mut *store, &req)?;
                Ok((r, store.data_mut().take_effects()))
            },
            |(resp, _)| {
                if resp.body.len() > limit {
                    Err(CallError::ResponseTooLarge { plugin, limit })
                } else {
                    Ok(())
                }
            },
        )?;
        Ok((
            HttpResponse {
                status: resp.status,
                headers: resp
                    .headers
                    .into_iter()
                    .map(|kv| (kv.key, kv.value))
                    .collect(),
                body: resp.body,
            },
            effects,
        ))
    }

    /// Runs `f` and takes the call's effects (which include those of
    /// `init`, when the instance is new).
    fn call<R>(
        &mut self,
        f: impl FnOnce(&Framework, &mut Store<FrameworkHost>) -> wasmtime::Result<R>,
    ) -> Result<(R, Effects), CallError> {
        self.sandbox.call(|fw, store, _fresh| {
            let r = f(fw, store)?;
            Ok((r, store.data_mut().take_effects()))
        })
    }
}
