//! `marathon`: long-running services behind Marathon's REST API.
//!
//! Served at `/v2` (and `/ping`) on every master, and at
//! `/frameworks/marathon/v2/...`. Apps, their versions, their tasks and the
//! deployments that change them live in the framework's replicated
//! key-value store and are written in the same commit as the launches and
//! kills they cause, so a master failover in the middle of a deployment
//! neither loses nor restarts it: the next leader's instance reads them
//! back in `init` and carries on.
//!
//! The controller is level-triggered: after every call it compares each
//! app's tasks with what the app's current deployment step asks for
//! (a count, or a rolling replacement bounded by `upgradeStrategy`), kills
//! what is surplus and queues launches for what is missing; launches wait
//! for offers that fit, pass the placement plugins, and are out of backoff.

#![recursion_limit = "256"]

mod api;
mod app;
mod deploy;
mod groups;
mod ids;
mod model;
mod time;

use std::collections::{BTreeMap, BTreeSet, HashMap};

use serde_json::json;
use wasmos_sdk::framework::{
    Command, Container, DiscoveryPort, DockerInfo, DockerNetwork, DockerVolume, FetchUri,
    Framework, HealthCheck, KeyValue, Offer, OfferInterest, PersistentVolume, PortMapping,
    PortRange, Request, Resources, Response, Rule, TaskSpec, TaskStatus, Volume, VolumeSource,
    driver, is_terminal, state_name,
};
use wasmos_sdk::offers::{Need, Packer, Placement};
use wasmos_sdk::{kv, log};

use crate::app::App;
use crate::deploy::{ActionKind, rolling, rolling_step};
use crate::model::{
    APP_PREFIX, AppRecord, AppState, DEP_PREFIX, Delay, Deployment, Instance, LocalVolume, SEQ_KEY,
    SLOT_PREFIX, Slot, TASK_PREFIX, VER_PREFIX,
};

/// Offers declined while launches wait but nothing fits come back this soon.
const REFUSE_WHILE_WAITING: f64 = 2.0;
/// The most time one round of offers spends placing (the host stops a call
/// after 2 s by default).
const ROUND_BUDGET: std::time::Duration = std::time::Duration::from_millis(800);
/// Offers declined with nothing to launch.
const REFUSE_IDLE: f64 = 30.0;

/// Why launches of an app wait, from the last offers seen (not durable).
#[derive(Debug, Default, Clone)]
struct OfferStats {
    processed: u64,
    unused: u64,
    reasons: BTreeMap<String, u64>,
    last_unused_ms: Option<u64>,
    last_used_ms: Option<u64>,
}

pub struct Marathon {
    apps: BTreeMap<String, AppState>,
    /// Every task, by app and id (kept by `put_task` and `forget_task`):
    /// reconciling an app reads its own tasks in place. An app's tasks are
    /// read on every update of one of them, so that read must not cost a
    /// lookup per task among all of them (`wasmos-bench scale`).
    by_app: BTreeMap<String, BTreeMap<String, Instance>>,
    /// Each task's app.
    app_of: HashMap<String, String>,
    deployments: BTreeMap<String, Deployment>,
    /// Launches each app needs now (computed by `reconcile`).
    need: BTreeMap<String, u32>,
    /// Since when each app has been waiting for launches.
    waiting_since: BTreeMap<String, u64>,
    offer_stats: BTreeMap<String, OfferStats>,
    port_min: u32,
    port_max: u32,
    role: String,
    max_versions: usize,
    /// Most instances launched on one offer (Marathon's
    /// `--max_instances_per_offer`).
    max_per_offer: usize,
    offer_interest: OfferInterest,
    /// `need` when offers were last asked for: more than that revives.
    asked: BTreeMap<String, u32>,
    /// Recent events for `/v2/events`, by sequence number (not durable:
    /// Marathon's event bus is not either).
    events: std::collections::VecDeque<(u64, String, serde_json::Value)>,
    next_event: u64,
    /// Groups created explicitly (`grp/<id>`), possibly empty.
    groups: BTreeMap<String, groups::GroupRecord>,
    /// Resident instances' places, by slot id.
    slots: BTreeMap<String, Slot>,
    /// Agents being drained (their tasks move elsewhere), as of the last
    /// `drive`.
    draining: BTreeSet<String>,
    /// Apps whose record, tasks or deployments were saved since `http`
    /// began: what an API write can have changed.
    touched: std::cell::RefCell<BTreeSet<String>>,
}

/// Events kept for streams that fall behind.
const EVENTS_KEPT: usize = 2000;

/// Writes a record into the framework's replicated state, saying so if
/// it cannot (the call's other writes still commit).
pub(crate) fn put<T: serde::Serialize + ?Sized>(key: &str, value: &T) {
    if let Err(e) = kv::set_json(key, value) {
        log::error(&format!("cannot save {key}: {e}"));
    }
}

fn now() -> u64 {
    log::now_ms()
}

/// A uuid-shaped id from a durable counter and the clock (the plugin has
/// no randomness; the counter makes ids unique).
fn uuid(seq: u64, salt: u64) -> String {
    fn mix(mut z: u64) -> u64 {
        z = z.wrapping_add(0x9e37_79b9_7f4a_7c15);
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }
    let a = mix(seq ^ salt.rotate_left(17));
    let b = mix(a ^ seq.wrapping_mul(31));
    format!(
        "{:08x}-{:04x}-4{:03x}-{:04x}-{:012x}",
        a >> 32,
        (a >> 16) & 0xffff,
        a & 0xfff,
        0x8000 | (b >> 48) & 0x3fff,
        b & 0xffff_ffff_ffff
    )
}

impl Marathon {
    fn next_seq(&self) -> u64 {
        let seq = kv::get_json::<u64>(SEQ_KEY).unwrap_or(0) + 1;
        if let Err(e) = kv::set_json(SEQ_KEY, &seq) {
            log::error(&format!("cannot save the id counter: {e}"));
        }
        seq
    }

    fn new_uuid(&self) -> String {
        let seq = self.next_seq();
        uuid(seq, now())
    }

    fn save_app(&self, id: &str) {
        self.touched.borrow_mut().insert(id.to_string());
        if let Some(a) = self.apps.get(id) {
            put(&format!("{APP_PREFIX}{id}"), &a.rec);
        }
    }

    fn save_task(&self, t: &Instance) {
        self.touched.borrow_mut().insert(t.app_id.clone());
        put(&format!("{TASK_PREFIX}{}", t.id), t);
    }

    fn forget_task(&mut self, id: &str) {
        if let Some(app) = self.app_of.remove(id) {
            // A write that forgets a task moves its app's deployments.
            self.touched.borrow_mut().insert(app.clone());
            if let Some(tasks) = self.by_app.get_mut(&app) {
                tasks.remove(id);
                if tasks.is_empty() {
                    self.by_app.remove(&app);
                }
            }
        }
        kv::delete(&format!("{TASK_PREFIX}{id}"));
    }

    /// Keeps a task in memory (not in `kv`: see `save_task`).
    fn put_task(&mut self, t: Instance) {
        if let Some(before) = self.app_of.insert(t.id.clone(), t.app_id.clone())
            && before != t.app_id
            && let Some(tasks) = self.by_app.get_mut(&before)
        {
            tasks.remove(&t.id);
        }
        self.by_app
            .entry(t.app_id.clone())
            .or_default()
            .insert(t.id.clone(), t);
    }

    /// A task by id.
    pub(crate) fn task(&self, id: &str) -> Option<&Instance> {
        self.by_app.get(self.app_of.get(id)?)?.get(id)
    }

    /// Every task, by app and id.
    pub(crate) fn all_tasks(&self) -> impl Iterator<Item = &Instance> {
        self.by_app.values().flat_map(BTreeMap::values)
    }

    fn save_slot(&mut self, slot: Slot) {
        put(&format!("{SLOT_PREFIX}{}", slot.id), &slot);
        self.slots.insert(slot.id.clone(), slot);
    }

    /// Destroys a slot's volumes (on its agent, through the master) and
    /// forgets it.
    fn destroy_slot(&mut self, id: &str) {
        if let Some(slot) = self.slots.remove(id) {
            self.touched.borrow_mut().insert(slot.app_id.clone());
            let ids: Vec<String> = slot
                .volumes
                .iter()
                .map(|v| v.persistence_id.clone())
                .collect();
            log::info(&format!(
                "destroying the volumes of {} on {}: {}",
                slot.app_id,
                slot.host,
                ids.join(", ")
            ));
            driver::destroy_volumes(&slot.agent_id, &ids);
            kv::delete(&format!("{SLOT_PREFIX}{id}"));
        }
    }

    /// Whether a slot's task is still alive.
    fn slot_busy(&self, slot: &Slot) -> bool {
        slot.task
            .as_ref()
            .and_then(|t| self.task(t))
            .is_some_and(|t| !t.is_terminal())
    }

    fn save_deployment(&self, d: &Deployment) {
        self.touched.borrow_mut().extend(d.affected.iter().cloned());
        put(&format!("{DEP_PREFIX}{}", d.id), d);
    }

    fn remove_deployment(&mut self, id: &str) {
        if let Some(d) = self.deployments.remove(id) {
            self.touched.borrow_mut().extend(d.affected);
        }
        kv::delete(&format!("{DEP_PREFIX}{id}"));
    }

    /// Records an event for `/v2/events` (`eventType` and `timestamp` added).
    fn emit(&mut self, kind: &str, mut data: serde_json::Value) {
        data["eventType"] = json!(kind);
        data["timestamp"] = json!(time::format_ms(now()));
        self.next_event += 1;
        self.events
            .push_back((self.next_event, kind.to_string(), data));
        while self.events.len() > EVENTS_KEPT {
            self.events.pop_front();
        }
    }

    /// A deployment's plan in Marathon's full form (what clients parse).
    fn plan_json(d: &Deployment) -> serde_json::Value {
        let group = |apps: &BTreeMap<String, serde_json::Value>| {
            json!({
                "id": "/",
                "apps": apps.values().filter(|a| !a.is_null()).collect::<Vec<_>>(),
                "groups": [],
                "pods": [],
                "dependencies": [],
                "version": d.version,
            })
        };
        json!({
            "id": d.id,
            "version": d.version,
            "original": group(&d.original),
            "target": group(&d.target),
            "steps": d.steps.iter().map(|s| json!({ "actions": s.iter().map(|a| json!({ "action": a.kind.name(), "app": a.app })).collect::<Vec<_>>() })).collect::<Vec<_>>(),
        })
    }

    fn step_json(step: &[crate::deploy::Action]) -> serde_json::Value {
        json!({ "actions": step.iter().map(|a| json!({ "action": a.kind.name(), "app": a.app })).collect::<Vec<_>>() })
    }

    /// Apps visible through the API (not being deleted).
    fn visible_apps(&self) -> impl Iterator<Item = &AppState> {
        self.apps.values().filter(|a| !a.rec.deleting)
    }

    fn app_tasks<'a>(&'a self, app_id: &'a str) -> impl Iterator<Item = &'a Instance> + 'a {
        self.by_app
            .get(app_id)
            .into_iter()
            .flat_map(BTreeMap::values)
    }

    /// Deployments that touch an app.
    fn deployments_of(&self, app_id: &str) -> Vec<&Deployment> {
        let mut d: Vec<&Deployment> = self
            .deployments
            .values()
            .filter(|d| d.affected.iter().any(|a| a == app_id))
            .collect();
        d.sort_by_key(|d| d.seq);
        d
    }

    /// Stored versions of an app, oldest first.
    fn versions(&self, app_id: &str) -> Vec<String> {
        let prefix = format!("{VER_PREFIX}{app_id}/");
        kv::keys(&prefix)
            .into_iter()
            .filter_map(|k| k.strip_prefix(&prefix).map(str::to_string))
            .collect()
    }

    fn store_version(&self, app: &App) {
        let key = format!("{VER_PREFIX}{}/{}", app.id, app.version);
        put(&key, &app.to_json());
        let versions = self.versions(&app.id);
        if versions.len() > self.max_versions {
            for old in &versions[..versions.len() - self.max_versions] {
                kv::delete(&format!("{VER_PREFIX}{}/{old}", app.id));
            }
        }
    }

    /// A version timestamp later than any this framework handed out.
    fn new_version(&self) -> String {
        let last = kv::get_json::<u64>("last-version-ms").unwrap_or(0);
        let ms = now().max(last + 1);
        let _ = kv::set_json("last-version-ms", &ms);
        time::format_ms(ms)
    }

    /// Service ports in use by other apps.
    fn used_service_ports(&self, except: &str) -> BTreeSet<u32> {
        self.apps
            .values()
            .filter(|a| a.app.id != except)
            .flat_map(|a| a.app.service_ports())
            .filter(|p| *p != 0)
            .collect()
    }

    /// Gives every `0` service port of `app` a free one, keeping those the
    /// app already had.
    fn assign_service_ports(&self, app: &mut App, previous: Option<&App>) -> Result<(), String> {
        let mut used = self.used_service_ports(&app.id);
        let mut ports = app.service_ports();
        let prev: Vec<u32> = previous.map(App::service_ports).unwrap_or_default();
        for (i, p) in ports.iter_mut().enumerate() {
            if *p == 0 {
                if let Some(old) = prev.get(i).filter(|o| **o != 0 && !used.contains(o)) {
                    *p = *old;
                } else {
                    let free = (self.port_min..self.port_max).find(|c| !used.contains(c));
                    *p = free.ok_or_else(|| {
                        format!(
                            "no free service port left in [{}, {})",
                            self.port_min, self.port_max
                        )
                    })?;
                }
            }
            used.insert(*p);
        }
        app.set_service_ports(&ports);
        Ok(())
    }
}

/// Kills a task; it stays in the records until its end is reported, and
/// the kill is sent again every [`KILL_RETRY_MS`] until then.
fn kill_instance(t: &mut Instance) {
    t.goal_running = false;
    if !t.kill_sent {
        driver::kill(&t.id);
        t.kill_sent = true;
        t.kill_sent_at = Some(now());
    }
}

/// How long a kill may go unanswered before it is sent again (Marathon's
/// `--kill_retry_timeout`, 10 s by default).
pub(crate) const KILL_RETRY_MS: u64 = 10_000;

/// Tasks whose kill was sent at least [`KILL_RETRY_MS`] ago (or before
/// kills had a time) and whose end is not reported yet: their kill is due
/// again.
fn kills_due<'a>(tasks: impl Iterator<Item = &'a Instance>, now_ms: u64) -> Vec<String> {
    tasks
        .filter(|t| t.kill_sent && !t.is_terminal())
        .filter(|t| t.kill_sent_at.is_none_or(|at| now_ms >= at + KILL_RETRY_MS))
        .map(|t| t.id.clone())
        .collect()
}

impl Marathon {
    /// Moves deployments forward, then brings every app's tasks toward its
    /// target. Called after the calls that can change any app (a tick, an
    /// API write).
    fn drive(&mut self) {
        self.drive_some(true);
    }

    /// [`Self::drive`] for what offers can move: the deployments, and the
    /// apps waiting to launch. The others change only with their tasks'
    /// updates (`drive_app`), the API and the clock (`drive`): reconciling
    /// every app around every round of offers made a launch cost more the
    /// more tasks ran (`wasmos-bench scale`).
    fn drive_waiting(&mut self) {
        self.drive_some(false);
    }

    /// Advances every deployment, then reconciles every app (`all`) or
    /// those waiting to launch.
    fn drive_some(&mut self, all: bool) {
        self.draining = driver::draining_agents().into_iter().collect();
        self.advance_deployments(None);
        let app_ids: Vec<String> = if all {
            self.apps.keys().cloned().collect()
        } else {
            self.need.keys().cloned().collect()
        };
        for id in app_ids {
            self.reconcile(&id);
        }
        self.want_offers();
    }

    /// [`Self::drive`] for what an API write changed: the deployments
    /// touching the apps it saved, and those apps (a deployment moves only
    /// with its apps; `tick` drives everything anyway). Reconciling every
    /// app after every write made each POST cost in proportion to all the
    /// tasks (26 ms at 1,000 apps of 50, `wasmos-bench placement`), and
    /// advancing every deployment in proportion to the deployments under
    /// way (20 ms on average, 95 ms at worst, with 600 of them).
    fn drive_apps(&mut self, apps: &BTreeSet<String>) {
        self.draining = driver::draining_agents().into_iter().collect();
        self.advance_deployments_where(|affected| affected.iter().any(|a| apps.contains(a)));
        // An app gone from `apps` too: its wants go with it.
        for id in apps {
            self.reconcile(id);
        }
        self.want_offers();
    }

    /// [`Self::drive`] for what one app's change can move: the deployments
    /// that touch it, and it.
    fn drive_app(&mut self, app_id: &str) {
        self.advance_deployments(Some(app_id));
        self.reconcile(app_id);
        self.want_offers();
    }

    /// Advances the deployments (those touching `app_id`, or all), oldest
    /// first.
    fn advance_deployments(&mut self, app_id: Option<&str>) {
        self.advance_deployments_where(|affected| {
            app_id.is_none_or(|app| affected.iter().any(|a| a == app))
        });
    }

    /// Advances the deployments whose affected apps `touches` accepts,
    /// oldest first.
    fn advance_deployments_where(&mut self, touches: impl Fn(&[String]) -> bool) {
        let mut ids: Vec<(u64, String)> = self
            .deployments
            .values()
            .filter(|d| touches(&d.affected))
            .map(|d| (d.seq, d.id.clone()))
            .collect();
        ids.sort();
        for (_, id) in ids {
            self.advance(&id);
        }
    }

    /// Applies and checks the current step of one deployment, step after
    /// step while they complete.
    fn advance(&mut self, dep_id: &str) {
        loop {
            let Some(mut d) = self.deployments.get(dep_id).cloned() else {
                return;
            };
            if d.current >= d.steps.len() {
                log::info(&format!("deployment {} finished", d.id));
                let plan = Self::plan_json(&d);
                self.emit("deployment_success", json!({ "id": d.id, "plan": plan }));
                self.remove_deployment(dep_id);
                return;
            }
            let step = d.steps[d.current].clone();
            if !d.step_started {
                let plan = Self::plan_json(&d);
                self.emit(
                    "deployment_info",
                    json!({ "plan": plan, "currentStep": Self::step_json(&step) }),
                );
                for a in &step {
                    self.start_action(a.kind, &a.app);
                }
                d.step_started = true;
                self.deployments.insert(d.id.clone(), d.clone());
                self.save_deployment(&d);
            }
            // Every app is reconciled before its action is judged.
            for a in &step {
                self.reconcile(&a.app);
            }
            if !step.iter().all(|a| self.action_done(a.kind, &a.app)) {
                return;
            }
            for a in &step {
                self.finish_action(a.kind, &a.app);
            }
            let plan = Self::plan_json(&d);
            self.emit(
                "deployment_step_success",
                json!({ "plan": plan, "currentStep": Self::step_json(&step) }),
            );
            d.current += 1;
            d.step_started = false;
            self.deployments.insert(d.id.clone(), d.clone());
            self.save_deployment(&d);
        }
    }

    fn start_action(&mut self, kind: ActionKind, app_id: &str) {
        let Some(a) = self.apps.get_mut(app_id) else {
            return;
        };
        match kind {
            ActionKind::StartApplication => {}
            ActionKind::ScaleApplication => {
                a.rec.target = a.app.instances;
                a.rec.restarting = false;
            }
            ActionKind::RestartApplication => {
                a.rec.target = a.app.instances;
                a.rec.restarting = true;
                a.rec.delay = None;
            }
            ActionKind::StopApplication => {
                a.rec.target = 0;
                a.rec.deleting = true;
                a.rec.restarting = false;
            }
        }
        self.save_app(app_id);
    }

    fn action_done(&self, kind: ActionKind, app_id: &str) -> bool {
        let Some(a) = self.apps.get(app_id) else {
            // Gone: a stop is complete, anything else has nothing to do.
            return true;
        };
        let checked = model::Checks::of(&a.app);
        let inactive = inactive_after_ms(&a.app);
        let t = now();
        let alive: Vec<&Instance> = self
            .app_tasks(app_id)
            .filter(|t| !t.is_terminal())
            .collect();
        let active: Vec<&&Instance> = alive.iter().filter(|i| i.is_active(inactive, t)).collect();
        match kind {
            ActionKind::StartApplication => true,
            ActionKind::ScaleApplication => {
                active.len() as u32 == a.rec.target
                    && active.iter().all(|i| i.is_healthy(checked))
                    && alive.iter().all(|i| i.goal_running)
            }
            ActionKind::RestartApplication => {
                let cfg = a.config_version();
                active.len() as u32 == a.rec.target
                    && alive.iter().all(|i| i.config == cfg && i.goal_running)
                    && active.iter().all(|i| i.is_healthy(checked))
            }
            ActionKind::StopApplication => alive.is_empty(),
        }
    }

    fn finish_action(&mut self, kind: ActionKind, app_id: &str) {
        match kind {
            ActionKind::RestartApplication => {
                if let Some(a) = self.apps.get_mut(app_id) {
                    a.rec.restarting = false;
                    self.save_app(app_id);
                }
            }
            ActionKind::StopApplication
                if self.apps.get(app_id).is_some_and(|a| a.rec.deleting) =>
            {
                self.apps.remove(app_id);
                kv::delete(&format!("{APP_PREFIX}{app_id}"));
                for v in self.versions(app_id) {
                    kv::delete(&format!("{VER_PREFIX}{app_id}/{v}"));
                }
                let left: Vec<String> = self.app_tasks(app_id).map(|t| t.id.clone()).collect();
                for t in left {
                    self.forget_task(&t);
                }
                // A deleted app's volumes go, and their disk is unreserved.
                let slots: Vec<String> = self
                    .slots
                    .values()
                    .filter(|s| s.app_id == app_id)
                    .map(|s| s.id.clone())
                    .collect();
                for id in slots {
                    self.destroy_slot(&id);
                }
                log::info(&format!("app {app_id} removed"));
            }
            _ => {}
        }
    }

    /// What reconciling an app does: the tasks to kill, and how many to
    /// launch (`None`: no such app). Reads only, and copies no task: an app
    /// of many tasks is reconciled often.
    fn plan(&self, app_id: &str, t: u64) -> Option<(Vec<String>, u32)> {
        let a = self.apps.get(app_id)?;
        let checked = model::Checks::of(&a.app);
        let inactive = inactive_after_ms(&a.app);
        let target = a.rec.target;
        let mut to_kill: Vec<String> = Vec::new();
        let need;
        let active: Vec<&Instance> = self
            .app_tasks(app_id)
            .filter(|i| i.is_active(inactive, t))
            .collect();
        // Tasks to replace: of an older config during a restart, and on
        // agents being drained (replaced elsewhere first, within the
        // upgrade strategy's bounds, as a restart does).
        let cfg = a.config_version();
        let stale = |i: &Instance| {
            (a.rec.restarting && i.config != cfg)
                || i.agent_id
                    .as_ref()
                    .is_some_and(|x| self.draining.contains(x))
        };
        if a.rec.restarting || active.iter().any(|i| stale(i)) {
            let alive = self.app_tasks(app_id).filter(|i| !i.is_terminal()).count() as u32;
            let (new, old): (Vec<&Instance>, Vec<&Instance>) =
                active.into_iter().partition(|i| !stale(i));
            let healthy_old: Vec<&Instance> = old
                .iter()
                .copied()
                .filter(|i| i.is_healthy(checked))
                .collect();
            let healthy_new = new.iter().filter(|i| i.is_healthy(checked)).count() as u32;
            let bounds = rolling(
                target,
                a.app.upgrade_strategy.minimum_health_capacity,
                a.app.upgrade_strategy.maximum_over_capacity,
                healthy_old.len() as u32 + healthy_new,
                a.app.resident(),
            );
            let step = rolling_step(
                target,
                bounds,
                healthy_old.len() as u32,
                healthy_new,
                alive,
                new.len() as u32,
            );
            // Unhealthy old tasks hold no capacity worth keeping.
            to_kill.extend(
                old.iter()
                    .filter(|i| !i.is_healthy(checked))
                    .map(|i| i.id.clone()),
            );
            let mut healthy_old = healthy_old;
            order_for_kill(&mut healthy_old, &a.app.kill_selection);
            to_kill.extend(
                healthy_old
                    .iter()
                    .take(step.kill_healthy_old as usize)
                    .map(|i| i.id.clone()),
            );
            // More new tasks than wanted (scaled down during a restart).
            if new.len() as u32 > target {
                let mut refs = new.clone();
                order_for_kill(&mut refs, &a.app.kill_selection);
                let surplus: Vec<String> = refs
                    .iter()
                    .take(new.len() - target as usize)
                    .map(|i| i.id.clone())
                    .collect();
                to_kill.extend(surplus);
            }
            need = step.launch;
        } else if active.len() as u32 > target {
            let surplus = active.len() - target as usize;
            let mut refs = active;
            order_for_kill(&mut refs, &a.app.kill_selection);
            to_kill.extend(refs.iter().take(surplus).map(|i| i.id.clone()));
            need = 0;
        } else {
            need = target - active.len() as u32;
        }
        Some((to_kill, need))
    }

    /// Kills surplus tasks of an app and records how many launches it needs.
    fn reconcile(&mut self, app_id: &str) {
        let t = now();
        let Some((to_kill, need)) = self.plan(app_id, t) else {
            self.need.remove(app_id);
            return;
        };
        for id in to_kill {
            if let Some(mut i) = self.task(&id).cloned()
                && (i.goal_running || !i.kill_sent)
            {
                log::info(&format!("killing {id} ({})", app_id));
                kill_instance(&mut i);
                self.save_task(&i);
                self.put_task(i);
            }
        }
        if need > 0 {
            self.need.insert(app_id.to_string(), need);
            self.waiting_since.entry(app_id.to_string()).or_insert(t);
        } else {
            self.need.remove(app_id);
            self.waiting_since.remove(app_id);
            self.offer_stats.remove(app_id);
        }
    }

    /// Asks for offers only while something waits to launch.
    /// New launches wanted revive offers at once (even offers declined a
    /// moment ago while other apps waited for placement).
    fn want_offers(&mut self) {
        let grew = self
            .need
            .iter()
            .any(|(app, n)| self.asked.get(app).is_none_or(|before| n > before));
        if grew {
            self.offer_interest.more();
        } else {
            self.offer_interest.want(!self.need.is_empty());
        }
        self.asked.clone_from(&self.need);
    }
}

/// A volume of the app as the task mounts it; a persistent one is the
/// slot's volume at that path.
fn task_volume(v: &app::VolumeDef, slot: Option<&Slot>) -> Option<Volume> {
    use app::VolumeDef as V;
    Some(match v {
        V::Persistent { container_path, .. } => {
            let l = slot?
                .volumes
                .iter()
                .find(|l| &l.container_path == container_path)?;
            Volume {
                container_path: l.container_path.clone(),
                read_only: false,
                source: VolumeSource::Persistent(PersistentVolume {
                    id: l.persistence_id.clone(),
                    size_mb: l.size_mb,
                }),
            }
        }
        V::Host {
            container_path,
            host_path,
            read_only,
        } => Volume {
            container_path: container_path.clone(),
            read_only: *read_only,
            source: VolumeSource::Host(host_path.clone()),
        },
        V::External {
            container_path,
            name,
            driver,
            options,
            read_only,
        } => Volume {
            container_path: container_path.clone(),
            read_only: *read_only,
            source: VolumeSource::Docker(DockerVolume {
                name: name.clone(),
                driver: driver.clone(),
                options: options
                    .iter()
                    .map(|(k, v)| KeyValue {
                        key: k.clone(),
                        value: v.clone(),
                    })
                    .collect(),
            }),
        },
    })
}

/// A new persistence id: the app, the volume's path and a uuid, in the
/// characters a persistence id may hold.
fn persistence_id(app_id: &str, container_path: &str, uuid: &str) -> String {
    let clean = |s: &str, max: usize| -> String {
        s.chars()
            .map(|c| {
                if c.is_ascii_alphanumeric() || c == '-' || c == '_' {
                    c
                } else {
                    '_'
                }
            })
            .take(max)
            .collect()
    };
    format!(
        "{}.{}.{uuid}",
        clean(&ids::task_prefix(app_id), 48),
        clean(container_path, 32)
    )
}

/// Marathon's instance condition for a task state.
fn condition(state: &str) -> &'static str {
    match state {
        "TASK_STAGING" => "Staging",
        "TASK_STARTING" => "Starting",
        "TASK_RUNNING" => "Running",
        "TASK_KILLING" => "Killing",
        "TASK_FINISHED" => "Finished",
        "TASK_FAILED" => "Failed",
        "TASK_KILLED" => "Killed",
        "TASK_ERROR" => "Error",
        "TASK_LOST" | "TASK_GONE" => "Gone",
        "TASK_DROPPED" => "Dropped",
        "TASK_UNREACHABLE" => "Unreachable",
        "TASK_GONE_BY_OPERATOR" => "GoneByOperator",
        _ => "Unknown",
    }
}

fn inactive_after_ms(app: &App) -> Option<u64> {
    match app.unreachable {
        app::Unreachable::Disabled => None,
        app::Unreachable::Enabled { inactive_after, .. } => Some((inactive_after * 1000.0) as u64),
    }
}

fn expunge_after_ms(app: &App) -> Option<u64> {
    match app.unreachable {
        app::Unreachable::Disabled => None,
        app::Unreachable::Enabled { expunge_after, .. } => Some((expunge_after * 1000.0) as u64),
    }
}

/// Orders tasks so that the first are the ones to kill: unreachable,
/// staging, starting, then running; within a condition the youngest (or
/// oldest) first, as the app's killSelection says.
fn order_for_kill(tasks: &mut Vec<&Instance>, selection: &str) {
    fn weight(i: &Instance) -> u8 {
        if i.unreachable_since.is_some() {
            return 1;
        }
        match i.state.as_str() {
            "TASK_STAGING" => 2,
            "TASK_STARTING" => 3,
            "TASK_RUNNING" => 4,
            _ => 5,
        }
    }
    let youngest = selection != "OLDEST_FIRST";
    tasks.sort_by(|a, b| {
        weight(a).cmp(&weight(b)).then_with(|| {
            let (ka, kb) = (
                a.started_at.unwrap_or(a.staged_at),
                b.started_at.unwrap_or(b.staged_at),
            );
            if youngest { kb.cmp(&ka) } else { ka.cmp(&kb) }
        })
    });
}

impl Marathon {
    /// The task spec of a new instance of `a` on `host_ports` (and, for a
    /// resident one, on its slot's volumes).
    fn spec(
        &self,
        a: &AppState,
        task_id: &str,
        host_ports: &[u16],
        slot: Option<&Slot>,
    ) -> TaskSpec {
        let app = &a.app;
        let (shell, value, arguments) = match (&app.cmd, app.args.is_empty()) {
            (Some(cmd), _) => (true, cmd.clone(), Vec::new()),
            (None, false) => (false, app.args[0].clone(), app.args.clone()),
            (None, true) => (false, String::new(), Vec::new()),
        };
        let mut env: BTreeMap<String, String> = BTreeMap::new();
        env.insert("MARATHON_APP_ID".into(), app.id.clone());
        env.insert("MARATHON_APP_VERSION".into(), app.version.clone());
        env.insert("MARATHON_APP_RESOURCE_CPUS".into(), app.cpus.to_string());
        env.insert("MARATHON_APP_RESOURCE_MEM".into(), app.mem.to_string());
        env.insert("MARATHON_APP_RESOURCE_DISK".into(), app.disk.to_string());
        env.insert("MARATHON_APP_RESOURCE_GPUS".into(), app.gpus.to_string());
        let label_names: Vec<String> = app.labels.keys().cloned().collect();
        env.insert("MARATHON_APP_LABELS".into(), label_names.join(" "));
        for (k, v) in &app.labels {
            let name: String = k
                .chars()
                .map(|c| {
                    if c.is_ascii_alphanumeric() {
                        c.to_ascii_uppercase()
                    } else {
                        '_'
                    }
                })
                .collect();
            env.insert(format!("MARATHON_APP_LABEL_{name}"), v.clone());
        }
        if let Some(app::Container {
            docker: Some(d), ..
        }) = &app.container
        {
            env.insert("MARATHON_APP_DOCKER_IMAGE".into(), d.image.clone());
        }
        let service = app.service_ports();
        for (i, p) in host_ports.iter().enumerate() {
            if let Some(sp) = service.get(i).filter(|s| **s != 0) {
                env.insert(format!("PORT_{sp}"), p.to_string());
            }
            let name = if app.network_mode == "host" {
                app.port_definitions.get(i).and_then(|d| d.name.clone())
            } else {
                app.container
                    .as_ref()
                    .and_then(|c| c.port_mappings.get(i))
                    .and_then(|m| m.name.clone())
            };
            if let Some(n) = name {
                env.insert(
                    format!("PORT_{}", n.to_ascii_uppercase().replace('-', "_")),
                    p.to_string(),
                );
            }
        }
        env.extend(app.env.clone());
        let container = app.container.as_ref().and_then(|c| {
            c.docker.as_ref().map(|d| {
                Container::Docker(DockerInfo {
                    image: d.image.clone(),
                    network: if app.network_mode == "host" {
                        DockerNetwork::Host
                    } else {
                        DockerNetwork::Bridge
                    },
                    port_mappings: c
                        .port_mappings
                        .iter()
                        .zip(host_ports)
                        .map(|(m, hp)| PortMapping {
                            container_port: if m.container_port == 0 {
                                *hp
                            } else {
                                m.container_port as u16
                            },
                            protocol: m.protocol.split(',').next().unwrap_or("tcp").to_string(),
                        })
                        .collect(),
                    force_pull_image: d.force_pull_image,
                })
            })
        });
        TaskSpec {
            task_id: task_id.to_string(),
            name: app.id.trim_start_matches('/').to_string(),
            resources: Resources {
                cpus: app.cpus,
                mem: app.mem,
                disk: app.disk,
                gpus: app.gpus,
                ports: host_ports
                    .iter()
                    .map(|p| PortRange { begin: *p, end: *p })
                    .collect(),
            },
            command: Command {
                shell,
                value,
                arguments,
                environment: env
                    .into_iter()
                    .map(|(key, value)| KeyValue { key, value })
                    .collect(),
                user: app.user.clone(),
            },
            labels: app
                .labels
                .iter()
                .map(|(k, v)| KeyValue {
                    key: k.clone(),
                    value: v.clone(),
                })
                .collect(),
            kill_grace_period_ms: app
                .task_kill_grace_period_seconds
                .map(|s| (s * 1000.0) as u64),
            health_check: app.health_checks.first().map(health_spec),
            container,
            fetch: app
                .fetch
                .iter()
                .map(|f| FetchUri {
                    uri: f.uri.clone(),
                    extract: f.extract,
                    executable: f.executable,
                    dest_path: f.dest_path.clone(),
                })
                .collect(),
            readiness_check: app
                .readiness_checks
                .first()
                .map(|r| readiness_spec(r, app.readiness_port.unwrap_or(0))),
            accepted_roles: app.accepted_roles(),
            volumes: app
                .volumes
                .iter()
                .filter_map(|v| task_volume(v, slot))
                .collect(),
            discovery: host_ports
                .iter()
                .enumerate()
                .map(|(i, p)| {
                    let (name, protocol, labels) = if app.network_mode == "host" {
                        app.port_definitions
                            .get(i)
                            .map(|d| (d.name.clone(), d.protocol.clone(), d.labels.clone()))
                            .unwrap_or_default()
                    } else {
                        app.container
                            .as_ref()
                            .and_then(|c| c.port_mappings.get(i))
                            .map(|m| (m.name.clone(), m.protocol.clone(), m.labels.clone()))
                            .unwrap_or_default()
                    };
                    DiscoveryPort {
                        number: *p,
                        name,
                        protocol: match protocol.split(',').next() {
                            Some(p) if !p.is_empty() => p.to_string(),
                            _ => "tcp".to_string(),
                        },
                        labels: labels
                            .into_iter()
                            .map(|(key, value)| KeyValue { key, value })
                            .collect(),
                        service_port: service
                            .get(i)
                            .filter(|s| **s != 0)
                            .and_then(|s| u16::try_from(*s).ok()),
                    }
                })
                .collect(),
        }
    }

    /// The host ports a task of the app asks for: fixed (requirePorts,
    /// bridge hostPort) or any.
    fn wanted_ports(app: &App) -> Vec<Option<u16>> {
        if app.network_mode == "host" {
            app.port_definitions
                .iter()
                .map(|p| (app.require_ports && p.port != 0).then_some(p.port as u16))
                .collect()
        } else {
            app.container
                .as_ref()
                .map(|c| {
                    c.port_mappings
                        .iter()
                        .map(|m| m.host_port.filter(|p| *p != 0).map(|p| p as u16))
                        .collect()
                })
                .unwrap_or_default()
        }
    }

    /// Where an app's active tasks run: (agent id, count).
    /// A slot's task changed: a started task confirms its volumes; a task
    /// that never started on a new slot leaves it (its volumes may never
    /// have been made); a wiped slot goes once its task has ended.
    fn slot_status(&mut self, slot_id: &str, task_id: &str, state: &str) {
        let Some(mut slot) = self.slots.get(slot_id).cloned() else {
            return;
        };
        if slot.task.as_deref() != Some(task_id) {
            return;
        }
        match state {
            "TASK_STARTING" | "TASK_RUNNING" if !slot.confirmed => {
                slot.confirmed = true;
                self.save_slot(slot);
            }
            "TASK_ERROR" | "TASK_DROPPED" if !slot.confirmed => self.destroy_slot(slot_id),
            s if slot.wiping && wasmos_sdk::framework::is_terminal_name(s) => {
                self.destroy_slot(slot_id)
            }
            _ => {}
        }
    }

    /// Places a resident instance: on a free slot of its app whose
    /// volumes an offer holds (its agent), or, while the app has fewer
    /// slots than instances, on a new slot whose volumes the master makes
    /// from unreserved disk. None: it waits (for its slot's agent).
    fn resident_place(
        &self,
        a: &AppState,
        need: &Need,
        placement: &Placement,
        packer: &mut Packer,
        placed: &[(usize, Instance, Option<Slot>)],
    ) -> Option<(wasmos_sdk::offers::Fit, Slot)> {
        let app_id = &a.app.id;
        let taken: BTreeSet<&str> = placed
            .iter()
            .filter_map(|(_, _, s)| s.as_ref().map(|s| s.id.as_str()))
            .collect();
        let mine: Vec<&Slot> = self
            .slots
            .values()
            .filter(|s| &s.app_id == app_id && !s.wiping)
            .collect();
        for slot in mine
            .iter()
            .filter(|s| !taken.contains(s.id.as_str()) && !self.slot_busy(s))
        {
            let pinned = Need {
                volumes: slot
                    .volumes
                    .iter()
                    .map(|v| v.persistence_id.clone())
                    .collect(),
                ..need.clone()
            };
            // Its agent was chosen under the app's constraints already.
            let mine_only = Placement {
                group: app_id.clone(),
                rules: Vec::new(),
                placed: Vec::new(),
            };
            if let Ok(fit) = packer.place(&pinned, Some(&mine_only)) {
                return Some((fit, (*slot).clone()));
            }
        }
        let new_here = placed
            .iter()
            .filter(|(_, i, s)| {
                &i.app_id == app_id && s.as_ref().is_some_and(|s| !self.slots.contains_key(&s.id))
            })
            .count();
        if mine.len() + new_here >= a.rec.target as usize {
            return None;
        }
        let volumes: Vec<LocalVolume> = a
            .app
            .volumes
            .iter()
            .filter_map(|v| match v {
                app::VolumeDef::Persistent {
                    container_path,
                    size_mb,
                } => Some((container_path.clone(), *size_mb)),
                _ => None,
            })
            .map(|(container_path, size_mb)| LocalVolume {
                persistence_id: persistence_id(app_id, &container_path, &self.new_uuid()),
                container_path,
                size_mb,
            })
            .collect();
        let fresh = Need {
            new_volumes_mb: volumes.iter().map(|v| v.size_mb).sum(),
            ..need.clone()
        };
        let fit = packer.place(&fresh, Some(placement)).ok()?;
        Some((
            fit,
            Slot {
                id: self.new_uuid(),
                app_id: app_id.clone(),
                agent_id: String::new(),
                host: String::new(),
                volumes,
                task: None,
                confirmed: false,
                wiping: false,
            },
        ))
    }

    fn placed(&self, app_id: &str) -> Vec<(String, u32)> {
        let mut counts: BTreeMap<String, u32> = BTreeMap::new();
        for t in self
            .app_tasks(app_id)
            .filter(|t| t.goal_running && !t.is_terminal())
        {
            if let Some(a) = &t.agent_id {
                *counts.entry(a.clone()).or_default() += 1;
            }
        }
        counts.into_iter().collect()
    }

    fn note_reason(&mut self, app_id: &str, reason: &str) {
        let s = self.offer_stats.entry(app_id.to_string()).or_default();
        *s.reasons.entry(reason.to_string()).or_default() += 1;
    }
}

/// A Marathon readiness check as an HTTP check that never kills.
fn readiness_spec(r: &app::ReadinessCheck, port_index: usize) -> HealthCheck {
    let statuses: Vec<String> = r
        .http_status_codes_for_ready
        .iter()
        .map(u16::to_string)
        .collect();
    let statuses = if statuses.is_empty() {
        "200".to_string()
    } else {
        statuses.join(",")
    };
    HealthCheck {
        plugin: "health-http".into(),
        config: vec![
            KeyValue {
                key: "path".into(),
                value: r.path.clone(),
            },
            KeyValue {
                key: "port-index".into(),
                value: port_index.to_string(),
            },
            KeyValue {
                key: "statuses".into(),
                value: statuses,
            },
        ],
        delay_seconds: 0.0,
        interval_seconds: r.interval_seconds,
        timeout_seconds: r.timeout_seconds,
        grace_period_seconds: 0.0,
        max_consecutive_failures: 0,
    }
}

/// A Marathon health check as the task's health-check plugin.
fn health_spec(h: &app::HealthCheckDef) -> HealthCheck {
    let mut config: BTreeMap<String, String> = h.config.clone();
    let plugin = match (&h.plugin, h.protocol.as_str()) {
        (Some(p), _) => p.clone(),
        (None, "TCP" | "MESOS_TCP") => "health-tcp".into(),
        (None, "COMMAND") => {
            let command = match &h.command {
                Some(serde_json::Value::String(c)) => c.clone(),
                Some(serde_json::Value::Object(o)) => o
                    .get("value")
                    .and_then(serde_json::Value::as_str)
                    .unwrap_or_default()
                    .to_string(),
                _ => String::new(),
            };
            config.entry("command".into()).or_insert(command);
            "health-command".into()
        }
        (None, proto) => {
            if proto.ends_with("HTTPS") {
                config
                    .entry("scheme".into())
                    .or_insert_with(|| "https".into());
            }
            config
                .entry("path".into())
                .or_insert_with(|| h.path.clone().unwrap_or_else(|| "/".into()));
            if h.ignore_http1xx {
                config
                    .entry("statuses".into())
                    .or_insert_with(|| "200-399".into());
            } else {
                config
                    .entry("statuses".into())
                    .or_insert_with(|| "100-399".into());
            }
            "health-http".into()
        }
    };
    match (h.port, h.port_index) {
        (Some(p), _) => {
            config.entry("port".into()).or_insert_with(|| p.to_string());
        }
        (None, i) => {
            config
                .entry("port-index".into())
                .or_insert_with(|| i.unwrap_or(0).to_string());
        }
    }
    HealthCheck {
        plugin,
        config: config
            .into_iter()
            .map(|(key, value)| KeyValue { key, value })
            .collect(),
        // Marathon does not delay its own checks; the grace period covers
        // the start.
        delay_seconds: 0.0,
        interval_seconds: h.interval_seconds,
        timeout_seconds: h.timeout_seconds,
        grace_period_seconds: h.grace_period_seconds,
        // Marathon: 0 means the task is never killed for failing its check.
        max_consecutive_failures: match h.max_consecutive_failures {
            0 => u32::MAX,
            n => n,
        },
    }
}

impl Framework for Marathon {
    fn init(config: wasmos_sdk::Config) -> Result<Self, String> {
        let num = |k: &str, d: f64| -> Result<f64, String> {
            match config.get(k) {
                Some(v) => v
                    .parse::<f64>()
                    .map_err(|_| format!("config {k}={v:?} is not a number")),
                None => Ok(d),
            }
        };
        app::set_framework_role(config.get("mesos_role").map_or("*", String::as_str));
        let port_min = num("local_port_min", 10000.0)? as u32;
        let port_max = num("local_port_max", 20000.0)? as u32;
        if port_min >= port_max || port_max > 65536 {
            return Err(format!(
                "config local_port_min={port_min} must be below local_port_max={port_max} (at most 65536)"
            ));
        }
        let mut apps = BTreeMap::new();
        for k in kv::keys(APP_PREFIX) {
            let Some(rec) = kv::get_json::<AppRecord>(&k) else {
                continue;
            };
            match AppState::load(rec) {
                Ok(a) => {
                    apps.insert(a.app.id.clone(), a);
                }
                Err(e) => log::error(&e),
            }
        }
        let deployments = kv::keys(DEP_PREFIX)
            .iter()
            .filter_map(|k| kv::get_json::<Deployment>(k))
            .map(|d| (d.id.clone(), d))
            .collect();
        let mut m = Marathon {
            apps,
            by_app: BTreeMap::new(),
            app_of: HashMap::new(),
            deployments,
            need: BTreeMap::new(),
            waiting_since: BTreeMap::new(),
            offer_stats: BTreeMap::new(),
            port_min,
            port_max,
            role: config
                .get("mesos_role")
                .cloned()
                .unwrap_or_else(|| "*".into()),
            max_versions: num("max_versions", 50.0)?.max(1.0) as usize,
            max_per_offer: num("max_instances_per_offer", 100.0)?.max(1.0) as usize,
            offer_interest: OfferInterest::default(),
            asked: BTreeMap::new(),
            events: Default::default(),
            next_event: 0,
            groups: kv::keys(groups::GROUP_PREFIX)
                .iter()
                .filter_map(|k| {
                    let id = k.strip_prefix(groups::GROUP_PREFIX)?.to_string();
                    Some((id, kv::get_json::<groups::GroupRecord>(k)?))
                })
                .collect(),
            slots: kv::keys(SLOT_PREFIX)
                .iter()
                .filter_map(|k| kv::get_json::<Slot>(k))
                .map(|s| (s.id.clone(), s))
                .collect(),
            draining: BTreeSet::new(),
            touched: Default::default(),
        };
        for t in kv::keys(TASK_PREFIX)
            .iter()
            .filter_map(|k| kv::get_json::<Instance>(k))
        {
            m.put_task(t);
        }
        log::info(&format!(
            "marathon: {} apps, {} tasks, {} deployments in progress",
            m.apps.len(),
            m.app_of.len(),
            m.deployments.len()
        ));
        m.drive();
        Ok(m)
    }

    fn offers(&mut self, offers: Vec<Offer>) {
        self.drive_waiting();
        // Nothing new goes to an agent its tasks are moving off (a machine
        // in its maintenance window still offers).
        let (offers, leaving): (Vec<Offer>, Vec<Offer>) = offers
            .into_iter()
            .partition(|o| !self.draining.contains(&o.agent_id));
        if !leaving.is_empty() {
            let ids: Vec<String> = leaving.into_iter().map(|o| o.id).collect();
            driver::decline(&ids, Some(REFUSE_WHILE_WAITING));
        }
        let t = now();
        // The call must end well within the host's deadline whatever the
        // cluster's size: what is not placed when this much time has gone
        // waits for the next round (real time: the plugin's own CPU).
        let started = std::time::Instant::now();
        let out_of_time = || started.elapsed() > ROUND_BUDGET;
        let mut packer = Packer::new(&offers).limit_per_offer(self.max_per_offer);
        // New instances by the offer they were placed on, with the slot a
        // resident one runs on.
        let mut placed: Vec<(usize, Instance, Option<Slot>)> = Vec::new();
        let wanting: Vec<(String, u32)> = self.need.iter().map(|(k, v)| (k.clone(), *v)).collect();
        for (app_id, count) in wanting {
            let Some(a) = self.apps.get(&app_id).cloned() else {
                continue;
            };
            if let Some(d) = a.rec.delay.as_ref().filter(|d| d.until_ms > t) {
                packer.waiting(
                    &app_id,
                    format!(
                        "delayed after failed tasks: the next launch is in {:.0} s (backoffSeconds, backoffFactor; DELETE /v2/queue/{app_id}/delay resets it)",
                        (d.until_ms - t) as f64 / 1000.0
                    ),
                );
                continue;
            }
            let need = Need {
                cpus: a.app.cpus,
                mem: a.app.mem,
                disk: a.app.disk,
                gpus: a.app.gpus,
                ports: Self::wanted_ports(&a.app),
                roles: a.app.accepted_roles(),
                ..Need::default()
            };
            let placement = Placement {
                group: app_id.clone(),
                rules: a
                    .app
                    .constraints
                    .iter()
                    .filter_map(|c| Rule::from_marathon(c).ok())
                    .collect(),
                placed: self.placed(&app_id),
            };
            for _ in 0..count {
                if out_of_time() {
                    packer.waiting(
                        &app_id,
                        "not placed this round: the round's time was spent on other instances; the next round of offers goes on",
                    );
                    break;
                }
                {
                    let s = self.offer_stats.entry(app_id.clone()).or_default();
                    s.processed += offers.len() as u64;
                }
                let resident = if a.app.resident() {
                    match self.resident_place(&a, &need, &placement, &mut packer, &placed) {
                        Some(found) => Some(found),
                        None => {
                            packer.waiting(
                                &app_id,
                                "its instances' reservations and volumes are not offered now (NoCorrespondingReservationFound): it waits for their agents",
                            );
                            self.note_reason(&app_id, "NoCorrespondingReservationFound");
                            let s = self.offer_stats.entry(app_id.clone()).or_default();
                            s.unused += 1;
                            s.last_unused_ms = Some(t);
                            break;
                        }
                    }
                } else {
                    None
                };
                let placed_on = match resident {
                    Some((fit, slot)) => Ok((fit, Some(slot))),
                    None => packer.place(&need, Some(&placement)).map(|f| (f, None)),
                };
                let (fit, slot) = match placed_on {
                    Ok(found) => found,
                    Err(no) => {
                        if let Some(why) = no
                            .constraint
                            .as_deref()
                            .filter(|w| w.starts_with("placement failed"))
                        {
                            log::warn(&format!("{app_id}: {why}"));
                        }
                        for short in &no.shortfalls {
                            self.note_reason(&app_id, short.marathon_name());
                        }
                        let s = self.offer_stats.entry(app_id.clone()).or_default();
                        s.unused += 1;
                        s.last_unused_ms = Some(t);
                        break;
                    }
                };
                let task_id = format!(
                    "{}.instance-{}._app.1",
                    ids::task_prefix(&app_id),
                    self.new_uuid()
                );
                let slot = slot.map(|mut sl| {
                    sl.task = Some(task_id.clone());
                    sl.agent_id = packer.agent_id(fit.offer).to_string();
                    sl.host = packer.hostname(fit.offer).to_string();
                    sl
                });
                packer.add(
                    fit.offer,
                    self.spec(&a, &task_id, &fit.ports, slot.as_ref()),
                );
                placed.push((
                    fit.offer,
                    Instance {
                        id: task_id,
                        app_id: app_id.clone(),
                        version: a.app.version.clone(),
                        config: a.config_version(),
                        state: "TASK_STAGING".into(),
                        agent_id: Some(packer.agent_id(fit.offer).to_string()),
                        host: Some(packer.hostname(fit.offer).to_string()),
                        ports: fit.ports,
                        staged_at: t,
                        started_at: None,
                        goal_running: true,
                        kill_sent: false,
                        kill_sent_at: None,
                        healthy: None,
                        ready: None,
                        unreachable_since: None,
                        first_success: None,
                        last_success: None,
                        last_failure: None,
                        consecutive_failures: 0,
                        message: None,
                        slot: slot.as_ref().map(|sl| sl.id.clone()),
                    },
                    slot,
                ));
                let s = self.offer_stats.entry(app_id.clone()).or_default();
                s.last_used_ms = Some(t);
            }
        }
        let packed = packer.finish();
        // Instances still to place after this round (of apps not backing
        // off) want the rest of these offers back at once, competing
        // fairly for them; otherwise the rest is filtered for the default
        // time.
        let wanted: u32 = self
            .need
            .iter()
            .filter(|(app, _)| {
                self.apps
                    .get(*app)
                    .is_some_and(|a| a.rec.delay.is_none_or(|d| d.until_ms <= t))
            })
            .map(|(_, n)| n)
            .sum();
        let refuse = (placed.len() < wanted as usize).then_some(0.0);
        for launch in &packed.launches {
            let offer = offers.iter().position(|o| o.id == launch.offer_id);
            match launch.send_refusing(refuse) {
                Ok(()) => {
                    for (_, i, slot) in placed.iter().filter(|(at, _, _)| Some(*at) == offer) {
                        log::info(&format!("launching {} on {}", i.id, launch.hostname));
                        self.save_task(i);
                        self.put_task(i.clone());
                        if let Some(sl) = slot {
                            self.save_slot(sl.clone());
                        }
                    }
                }
                Err(e) => log::error(&format!("launch refused: {e}")),
            }
        }
        // Launches that still wait (nothing fit) want offers back soon.
        self.drive_waiting();
        if !packed.unused.is_empty() {
            let refuse = if self.need.is_empty() {
                REFUSE_IDLE
            } else {
                REFUSE_WHILE_WAITING
            };
            driver::decline(&packed.unused, Some(refuse));
        }
    }

    fn status(&mut self, update: TaskStatus) {
        let Some(mut t) = self.task(&update.task_id).cloned() else {
            if !is_terminal(update.state) && ids::app_of_task(&update.task_id).is_some() {
                log::warn(&format!(
                    "status {} for unknown task {}; killing it",
                    state_name(update.state),
                    update.task_id
                ));
                driver::kill(&update.task_id);
            }
            return;
        };
        let ts = (update.timestamp * 1000.0) as u64;
        let ts = if ts == 0 { now() } else { ts };
        let state = state_name(update.state).to_string();
        if update.agent_id.is_some() {
            t.agent_id = update.agent_id.clone();
        }
        if let Some(m) = &update.message {
            t.message = Some(m.clone());
        }
        match state.as_str() {
            "TASK_RUNNING" => {
                t.started_at.get_or_insert(ts);
                t.unreachable_since = None;
            }
            "TASK_UNREACHABLE" => {
                t.unreachable_since.get_or_insert(ts);
            }
            _ => {}
        }
        let was_healthy = t.healthy;
        if update.ready.is_some() {
            t.ready = update.ready;
        }
        if let Some(h) = update.healthy {
            if h {
                t.first_success.get_or_insert(ts);
                t.last_success = Some(ts);
                t.consecutive_failures = 0;
            } else {
                t.last_failure = Some(ts);
                t.consecutive_failures += 1;
            }
            t.healthy = Some(h);
        }
        t.state = state.clone();
        self.emit(
            "status_update_event",
            json!({
                "slaveId": t.agent_id.clone().unwrap_or_default(),
                "taskId": t.id,
                "taskStatus": state,
                "message": update.message.clone().unwrap_or_default(),
                "appId": t.app_id,
                "host": t.host.clone().unwrap_or_default(),
                "ipAddresses": [],
                "ports": t.ports,
                "version": t.version,
            }),
        );
        self.emit(
            "instance_changed_event",
            json!({
                "instanceId": t.instance_id(),
                "condition": condition(&state),
                "runSpecId": t.app_id,
                "agentId": t.agent_id.clone().unwrap_or_default(),
                "host": t.host.clone().unwrap_or_default(),
                "runSpecVersion": t.version,
            }),
        );
        if update.healthy.is_some() && update.healthy != was_healthy {
            self.emit(
                "health_status_changed_event",
                json!({
                    "appId": t.app_id,
                    "instanceId": t.instance_id(),
                    "version": t.version,
                    "alive": t.healthy,
                }),
            );
            self.emit(
                "instance_health_changed_event",
                json!({
                    "instanceId": t.instance_id(),
                    "runSpecId": t.app_id,
                    "runSpecVersion": t.version,
                    "healthy": t.healthy,
                }),
            );
        }
        if let Some(slot_id) = t.slot.clone() {
            self.slot_status(&slot_id, &t.id, &state);
        }
        let app_id = t.app_id.clone();
        if is_terminal(update.state) {
            if let Some(a) = self.apps.get_mut(&t.app_id) {
                if t.goal_running
                    && matches!(
                        state.as_str(),
                        "TASK_FAILED" | "TASK_FINISHED" | "TASK_ERROR"
                    )
                {
                    let app = &a.app;
                    let seconds = match a.rec.delay {
                        Some(d) => {
                            (d.seconds * app.backoff_factor).min(app.max_launch_delay_seconds)
                        }
                        None => app.backoff_seconds.min(app.max_launch_delay_seconds),
                    };
                    a.rec.delay = Some(Delay {
                        seconds,
                        until_ms: ts.max(now()) + (seconds * 1000.0) as u64,
                    });
                }
                if t.goal_running {
                    a.rec.last_failure = Some(json!({
                        "appId": t.app_id,
                        "host": t.host.clone().unwrap_or_default(),
                        "message": update.message.clone().unwrap_or_default(),
                        "state": state,
                        "taskId": t.id,
                        "instanceId": t.instance_id(),
                        "timestamp": time::format_ms(ts),
                        "version": t.version,
                        "slaveId": t.agent_id.clone().unwrap_or_default(),
                    }));
                    log::info(&format!("{} ended ({state}); it will be replaced", t.id));
                }
                let id = t.app_id.clone();
                self.save_app(&id);
            }
            self.forget_task(&update.task_id);
        } else {
            self.save_task(&t);
            self.put_task(t);
        }
        // Only this app moves: driving every app on every update made a
        // batch of updates cost (updates × every task), which at 17,000
        // tasks outran the call deadline (wasmos-bench scale).
        self.drive_app(&app_id);
    }

    fn tick(&mut self, now_ms: u64) {
        // Kills not answered by an end are sent again.
        for id in kills_due(self.all_tasks(), now_ms) {
            if let Some(mut t) = self.task(&id).cloned() {
                log::info(&format!("killing {id} again: its end is not reported yet"));
                driver::kill(&id);
                t.kill_sent_at = Some(now_ms);
                self.save_task(&t);
                self.put_task(t);
            }
        }
        // Unreachable tasks past the app's expunge time are forgotten (and
        // killed should they come back).
        let mut expunge = Vec::new();
        for t in self.all_tasks() {
            let Some(since) = t.unreachable_since else {
                continue;
            };
            let Some(a) = self.apps.get(&t.app_id) else {
                continue;
            };
            if let Some(after) = expunge_after_ms(&a.app)
                && now_ms >= since + after
            {
                expunge.push(t.id.clone());
            }
        }
        for id in expunge {
            log::info(&format!("{id} was unreachable too long; expunged"));
            driver::kill(&id);
            self.forget_task(&id);
        }
        // Backoff resets after delay + maxLaunchDelay without a failure.
        let mut reset = Vec::new();
        for (id, a) in &self.apps {
            if let Some(d) = a.rec.delay
                && now_ms > d.until_ms + (a.app.max_launch_delay_seconds * 1000.0) as u64
            {
                reset.push(id.clone());
            }
        }
        for id in reset {
            if let Some(a) = self.apps.get_mut(&id) {
                a.rec.delay = None;
            }
            self.save_app(&id);
        }
        self.drive();
    }

    fn http(&mut self, req: Request) -> Response {
        self.touched.borrow_mut().clear();
        let resp = api::handle(self, &req);
        // Reads change nothing (event streams poll often); a write drives
        // what it saved (everything when it saved nothing it can name);
        // `tick` drives the rest of the time.
        if !req.method.eq_ignore_ascii_case("GET") {
            let touched = std::mem::take(&mut *self.touched.borrow_mut());
            if touched.is_empty() {
                self.drive();
            } else {
                self.drive_apps(&touched);
            }
        }
        resp
    }
}

wasmos_sdk::export_framework!(Marathon);

#[cfg(test)]
mod tests {
    use super::*;

    fn inst(id: &str, state: &str, at: u64) -> Instance {
        Instance {
            id: id.into(),
            app_id: "/a".into(),
            version: String::new(),
            config: String::new(),
            state: state.into(),
            agent_id: None,
            host: None,
            ports: vec![],
            staged_at: at,
            started_at: Some(at),
            goal_running: true,
            kill_sent: false,
            kill_sent_at: None,
            healthy: None,
            ready: None,
            unreachable_since: None,
            first_success: None,
            last_success: None,
            last_failure: None,
            consecutive_failures: 0,
            message: None,
            slot: None,
        }
    }

    #[test]
    fn an_unanswered_kill_is_due_again_after_the_retry_timeout_until_the_task_ends() {
        let mut sent = inst("sent", "TASK_RUNNING", 1);
        sent.kill_sent = true;
        sent.kill_sent_at = Some(1_000);
        let mut ended = inst("ended", "TASK_KILLED", 1);
        ended.kill_sent = true;
        ended.kill_sent_at = Some(1_000);
        // Recorded before kills had a time: due at once.
        let mut old = inst("old", "TASK_KILLING", 1);
        old.kill_sent = true;
        let alive = inst("alive", "TASK_RUNNING", 1);
        let all = [&sent, &ended, &old, &alive];
        assert_eq!(kills_due(all.into_iter(), 10_999), vec!["old"]);
        assert_eq!(
            kills_due(all.into_iter(), 1_000 + KILL_RETRY_MS),
            vec!["sent", "old"]
        );
    }

    #[test]
    fn kills_take_staging_before_running_and_the_youngest_first() {
        let a = inst("a", "TASK_RUNNING", 1);
        let b = inst("b", "TASK_RUNNING", 5);
        let c = inst("c", "TASK_STAGING", 2);
        let mut v = vec![&a, &b, &c];
        order_for_kill(&mut v, "YOUNGEST_FIRST");
        let ids: Vec<&str> = v.iter().map(|i| i.id.as_str()).collect();
        assert_eq!(ids, ["c", "b", "a"]);
        order_for_kill(&mut v, "OLDEST_FIRST");
        let ids: Vec<&str> = v.iter().map(|i| i.id.as_str()).collect();
        assert_eq!(ids, ["c", "a", "b"]);
    }

    #[test]
    fn a_health_check_with_no_failure_limit_never_kills_its_task() {
        let def = |n: u32| -> app::HealthCheckDef {
            serde_json::from_value(serde_json::json!({"protocol": "COMMAND",
                "command": {"value": "false"}, "maxConsecutiveFailures": n}))
            .unwrap()
        };
        assert_eq!(health_spec(&def(0)).max_consecutive_failures, u32::MAX);
        assert_eq!(health_spec(&def(3)).max_consecutive_failures, 3);
    }

    #[test]
    fn uuids_are_distinct_and_uuid_shaped() {
        let a = uuid(1, 1000);
        let b = uuid(2, 1000);
        assert_ne!(a, b);
        assert_eq!(a.len(), 36);
        assert_eq!(a.matches('-').count(), 4);
    }
}
