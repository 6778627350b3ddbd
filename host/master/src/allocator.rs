//! The allocator: turns free resources into offers, fairly.
//!
//! Hierarchical dominant resource fairness (DRF), as Mesos allocates: each
//! cycle, every agent's free resources go, as one offer, to one eligible
//! framework (not suppressed, not refusing that agent after a decline). It
//! is found by walking the role tree (`eng/batch` is below `eng`; a
//! framework is a leaf below its role): at each level the child with the
//! smallest dominant share divided by its weight wins — a role's share
//! counting every framework below it, a share being the largest fraction
//! of any one resource of the cluster held (running, offered, launching).
//! Quotas come first: while a role holds less than its guarantee, its
//! frameworks are offered before anyone, and other roles are offered only
//! what leaves enough free to meet every unmet guarantee (the headroom);
//! a role never holds more than its limit (offers are cut to it).
//!
//! The allocator lives only in the leader's memory: offers are void when a
//! leader changes. It does no I/O; the leader feeds it the state and sends
//! what it returns.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::time::{Duration, Instant};

use wasmos_core::reservation::{self, RoleResources, Volume};
use wasmos_core::{
    AgentId, ExecutorId, ExecutorSpec, FrameworkId, Offer, OfferId, PortSet, Resources, TaskId,
    TaskSpec,
};
use wasmos_state::AgentPools;
use wasmos_state::roles::{RoleConfig, within};

/// Offers below both of these are not worth making (Mesos' defaults).
const MIN_OFFER_CPUS: f64 = 0.01;
const MIN_OFFER_MEM: f64 = 32.0;

/// The refuse filter a decline or a launch applies when it names none.
pub const DEFAULT_REFUSE: Duration = Duration::from_secs(5);

/// An agent the allocator may offer.
#[derive(Debug, Clone)]
pub struct AgentSlot {
    pub id: AgentId,
    pub hostname: String,
    /// Everything it has, reserved or not.
    pub total: Resources,
    pub attributes: BTreeMap<String, String>,
    /// What is free by the state's account (tasks hold theirs).
    pub free: AgentPools,
}

/// What one allocation cycle works from.
#[derive(Debug, Clone, Default)]
pub struct Inputs {
    /// Agents that are registered, active and connected.
    pub agents: Vec<AgentSlot>,
    /// Resources of live tasks, per framework.
    pub used_by_framework: BTreeMap<FrameworkId, Resources>,
    /// Frameworks ready to receive offers.
    pub frameworks: Vec<FrameworkId>,
    /// Every framework's role (absent: `*`).
    pub framework_roles: BTreeMap<FrameworkId, String>,
    /// Weights and quotas of the roles that have them.
    pub roles: BTreeMap<String, RoleConfig>,
}

impl Inputs {
    /// What a cycle works from in state `s`, given what its live tasks
    /// hold (`usage`): the agents that are active, not deactivated, not on
    /// a machine that is down, and `connected`; every framework's role.
    /// No framework is ready yet: the caller names them.
    pub fn from_state(
        s: &wasmos_state::State,
        usage: wasmos_state::usage::Usage,
        connected: impl Fn(&AgentId) -> bool,
    ) -> Inputs {
        let mut pools = usage.pools;
        let agents: Vec<AgentSlot> = s
            .agents
            .values()
            .filter(|a| {
                a.state == wasmos_core::AgentState::Active
                    && !a.deactivated
                    && !s.machine_down(&a.info)
                    && connected(&a.id)
            })
            .map(|a| AgentSlot {
                id: a.id.clone(),
                hostname: a.info.hostname.clone(),
                total: a.info.resources.clone(),
                attributes: a.info.attributes.clone(),
                free: pools.remove(&a.id).unwrap_or_default(),
            })
            .collect();
        Inputs {
            agents,
            used_by_framework: usage.by_framework,
            frameworks: Vec::new(),
            framework_roles: s
                .frameworks
                .values()
                .map(|f| (f.id.clone(), f.info.role.clone()))
                .collect(),
            roles: s.roles.clone(),
        }
    }

    /// Takes ports something on an agent's host is bound to out of what
    /// the agent has free: a task is never offered a port another process
    /// (a stray server, a task that outlived its record) already holds.
    pub fn withhold_ports(&mut self, bound: &HashMap<AgentId, PortSet>) {
        if bound.is_empty() {
            return;
        }
        for a in &mut self.agents {
            let Some(b) = bound.get(&a.id) else { continue };
            let free = &mut a.free;
            free.unreserved.ports = free.unreserved.ports.difference(b);
            for r in free.reserved.values_mut() {
                r.ports = r.ports.difference(b);
            }
            for r in free.static_reserved.values_mut() {
                r.ports = r.ports.difference(b);
            }
        }
    }

    /// A framework's role (`*` when it names none).
    fn role_of(&self, f: &FrameworkId) -> &str {
        self.framework_roles.get(f).map_or("*", String::as_str)
    }
}

/// One operation of an ACCEPT, applied in order to the offers' resources.
#[derive(Debug, Clone, PartialEq)]
pub enum OfferOp {
    /// Reserve unreserved resources for the framework's role.
    Reserve {
        role: String,
        resources: Resources,
    },
    /// Give reserved resources back to the unreserved pool.
    Unreserve {
        role: String,
        resources: Resources,
    },
    /// Make persistent volumes of reserved disk.
    Create(Vec<Volume>),
    /// Destroy persistent volumes, named by id and role (their disk stays
    /// reserved).
    Destroy(Vec<Volume>),
    Launch(Vec<TaskSpec>),
    /// Launch tasks that name no reservations (framework plugins: their
    /// contract has none) from the offers' reserved parts first, then the
    /// unreserved; each task's `reserved` is filled in to say what it took.
    LaunchReservedFirst(Vec<TaskSpec>),
}

/// An ACCEPT that passed the offer checks: what to commit, in order.
#[derive(Debug, Clone, PartialEq)]
pub struct Accepted {
    pub agent_id: AgentId,
    /// The operations that passed (a launch with only its accepted tasks).
    pub ops: Vec<OfferOp>,
    /// Tasks refused, with why; reported to the framework as TASK_ERROR.
    pub refused: Vec<(TaskId, String)>,
    /// Operations refused, with why (Mesos drops them, logging why).
    pub dropped: Vec<String>,
    /// Holds the offers' resources until [`Allocator::release`].
    pub hold: u64,
}

/// Why a whole launch was refused (reported as TASK_DROPPED, reason
/// REASON_INVALID_OFFERS, since retrying with fresh offers is safe).
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum AcceptError {
    #[error("offer {0} is not outstanding for this framework (rescinded, used, or never made)")]
    UnknownOffer(OfferId),
    #[error("offers of one launch must come from one agent")]
    MixedAgents,
    #[error("a launch needs at least one offer")]
    NoOffers,
}

#[derive(Debug, Clone)]
struct HeldOffer {
    offer: Offer,
    made: Instant,
}

/// Free resources of one agent as offers carve them: unreserved, reserved
/// by role, and volumes.
#[derive(Debug, Clone, Default, PartialEq)]
struct Pool {
    unreserved: Resources,
    reserved: RoleResources,
    /// The static part of `reserved`.
    static_reserved: RoleResources,
    volumes: Vec<Volume>,
}

impl Pool {
    fn of_offer(o: &Offer) -> Pool {
        Pool {
            unreserved: o.resources.saturating_sub(&reservation::total(&o.reserved)),
            reserved: o.reserved.clone(),
            static_reserved: o.static_reserved.clone(),
            volumes: o.volumes.clone(),
        }
    }

    fn add(&mut self, o: &Pool) {
        self.unreserved = self.unreserved.add(&o.unreserved);
        for (role, r) in &o.reserved {
            reservation::add(&mut self.reserved, role, r);
        }
        for (role, r) in &o.static_reserved {
            reservation::add(&mut self.static_reserved, role, r);
        }
        self.volumes.extend(o.volumes.iter().cloned());
    }

    fn take(&mut self, o: &Offer) {
        let p = Pool::of_offer(o);
        self.unreserved = self.unreserved.saturating_sub(&p.unreserved);
        for (role, r) in &p.reserved {
            if let Some(have) = self.reserved.get_mut(role) {
                *have = have.saturating_sub(r);
            }
        }
        for (role, r) in &p.static_reserved {
            if let Some(have) = self.static_reserved.get_mut(role) {
                *have = have.saturating_sub(r);
            }
        }
        self.volumes
            .retain(|v| !p.volumes.iter().any(|x| x.id == v.id));
    }

    /// Takes `r` of `role`'s reservation, dynamic first, or says why not.
    fn take_reserved(&mut self, role: &str, r: &Resources) -> Result<(), String> {
        let have = self.reserved.get(role).cloned().unwrap_or_default();
        if !have.contains(r) {
            return Err(format!(
                "role {role} has {have} reserved and unused here, not the {r} asked for"
            ));
        }
        reservation::take_dynamic_first(&mut self.reserved, &mut self.static_reserved, role, r);
        Ok(())
    }

    /// Applies one operation, or says why it cannot be.
    fn apply(&mut self, op: &OfferOp, framework_role: &str) -> Result<(), String> {
        match op {
            OfferOp::Reserve { role, resources } => {
                reservation::check_reservation_role(role)?;
                if role != framework_role {
                    return Err(format!(
                        "a framework of role {framework_role} cannot reserve for role {role}"
                    ));
                }
                self.unreserved = self.unreserved.checked_sub(resources).ok_or_else(|| {
                    format!(
                        "RESERVE of {resources}: the offers have {} unreserved",
                        self.unreserved
                    )
                })?;
                reservation::add(&mut self.reserved, role, resources);
            }
            OfferOp::Unreserve { role, resources } => {
                let dynamic = self
                    .reserved
                    .get(role)
                    .cloned()
                    .unwrap_or_default()
                    .saturating_sub(&self.static_reserved.get(role).cloned().unwrap_or_default());
                if !dynamic.contains(resources) {
                    return Err(format!(
                        "UNRESERVE of {resources}: role {role} has {dynamic} dynamically reserved in the offers (static reservations change only with the agent's --resources)"
                    ));
                }
                self.take_reserved(role, resources)?;
                self.unreserved = self.unreserved.add(resources);
            }
            OfferOp::Create(volumes) => {
                let mut next = self.clone();
                for v in volumes {
                    v.validate()?;
                    if next.volumes.iter().any(|x| x.id == v.id) {
                        return Err(format!("volume {} exists already", v.id));
                    }
                    next.take_reserved(&v.role, &v.resources())
                        .map_err(|e| format!("CREATE of volume {}: {e}", v.id))?;
                    next.volumes.push(v.clone());
                }
                *self = next;
            }
            OfferOp::Destroy(volumes) => {
                let mut next = self.clone();
                for d in volumes {
                    let i = next
                        .volumes
                        .iter()
                        .position(|v| v.id == d.id && v.role == d.role)
                        .ok_or_else(|| {
                            format!(
                                "DESTROY: volume {} of role {} is not in the offers",
                                d.id, d.role
                            )
                        })?;
                    let v = next.volumes.remove(i);
                    reservation::add(&mut next.reserved, &v.role, &v.resources());
                }
                *self = next;
            }
            OfferOp::Launch(_) | OfferOp::LaunchReservedFirst(_) => {}
        }
        Ok(())
    }

    /// Which reserved parts of the pool a task naming none draws on: as
    /// much of each role's as it needs, then the unreserved.
    fn reserved_first(&self, task: &TaskSpec) -> RoleResources {
        let mut need = task.resources.clone();
        let mut out = RoleResources::new();
        let accepted =
            |role: &String| task.accepted_roles.is_empty() || task.accepted_roles.contains(role);
        for (role, have) in self.reserved.iter().filter(|(r, _)| accepted(r)) {
            let take = Resources {
                cpus: need.cpus.min(have.cpus),
                mem: need.mem.min(have.mem),
                disk: need.disk.min(have.disk),
                gpus: need.gpus.min(have.gpus),
                ports: need.ports.difference(&need.ports.difference(&have.ports)),
            };
            if !take.is_empty() {
                need = need.saturating_sub(&take);
                out.insert(role.clone(), take);
            }
        }
        out
    }

    /// Takes what a task needs, or says what is missing.
    fn launch(&mut self, task: &TaskSpec) -> Result<(), String> {
        let mut next = self.clone();
        let unreserved = task
            .resources
            .saturating_sub(&reservation::total(&task.reserved));
        next.unreserved = next.unreserved.checked_sub(&unreserved).ok_or_else(|| {
            format!(
                "task needs {unreserved} unreserved but the offers have {} left",
                self.unreserved
            )
        })?;
        for (role, r) in &task.reserved {
            next.take_reserved(role, r)
                .map_err(|e| format!("task needs {r} reserved for {role}: {e}"))?;
        }
        for m in &task.volumes {
            let i = next
                .volumes
                .iter()
                .position(|v| v.id == m.id && v.role == m.role)
                .ok_or_else(|| {
                    format!(
                        "volume {} of role {} is not in the offers (or another task of this launch uses it)",
                        m.id, m.role
                    )
                })?;
            next.volumes.remove(i);
        }
        *self = next;
        Ok(())
    }
}

/// Offers, filters and holds of the current leader.
#[derive(Debug)]
pub struct Allocator {
    term: u64,
    next_offer: u64,
    offers: HashMap<OfferId, HeldOffer>,
    /// Agents frameworks declined, until when.
    filters: Filters,
    suppressed: HashSet<FrameworkId>,
    /// Offers accepted and not yet committed to the state, by hold.
    holds: HashMap<u64, Vec<Offer>>,
    next_hold: u64,
    /// Task ids accepted and not yet committed.
    launching: HashSet<TaskId>,
    /// Agents not offered while an operator changes their reservations.
    paused: HashMap<AgentId, u32>,
    /// How many times each framework was picked for an agent's resources
    /// this term: equal shares go to the one picked least (as Mesos'
    /// sorter does), so ties rotate instead of favouring one name. Kept
    /// for every framework picked during the term.
    picked: HashMap<FrameworkId, u64>,
}

impl Allocator {
    pub fn new(term: u64) -> Self {
        Allocator {
            term,
            next_offer: 0,
            offers: HashMap::new(),
            filters: Filters::default(),
            suppressed: HashSet::new(),
            holds: HashMap::new(),
            next_hold: 0,
            launching: HashSet::new(),
            paused: HashMap::new(),
            picked: HashMap::new(),
        }
    }

    /// Offers outstanding or held, of one agent or every one.
    fn taken(&self) -> impl Iterator<Item = &Offer> {
        self.offers
            .values()
            .map(|h| &h.offer)
            .chain(self.holds.values().flatten())
    }

    /// Makes new offers from free resources. Returns them for sending.
    pub fn allocate(&mut self, input: &Inputs, now: Instant) -> Vec<Offer> {
        self.filters.purge(now);
        let total = input
            .agents
            .iter()
            .fold(Resources::default(), |acc, a| acc.add(&a.total));
        let pools: Vec<Pool> = {
            let mut taken: HashMap<&AgentId, Vec<&Offer>> = HashMap::new();
            for o in self.taken() {
                taken.entry(&o.agent_id).or_default().push(o);
            }
            input
                .agents
                .iter()
                .map(|a| free_on(a, taken.get(&a.id).map_or(&[][..], Vec::as_slice)))
                .collect()
        };
        let nothing_free = pools.iter().all(|p| {
            !worth_offering(&p.unreserved) && p.reserved.is_empty() && p.volumes.is_empty()
        });
        if nothing_free {
            return Vec::new();
        }
        // What every framework holds: running + offered + being launched.
        let picked = std::mem::take(&mut self.picked);
        let mut held = Shares::new(input, total, self.taken(), picked);
        let mut cluster_free = pools
            .iter()
            .fold(Resources::default(), |acc, p| acc.add(&p.unreserved));

        let mut made = Vec::new();
        for (agent, pool) in input.agents.iter().zip(pools) {
            if self.paused.contains_key(&agent.id) {
                continue;
            }
            let free = pool.unreserved.clone();
            let declined = self.filters.on(&agent.id);
            let eligible_here = |f: &FrameworkId| {
                !self.suppressed.contains(f) && !Filters::blocks(declined, f, now)
            };
            // What goes to whom on this agent.
            let mut give: BTreeMap<FrameworkId, Pool> = BTreeMap::new();
            // Reserved resources (and volumes) go only to their role's
            // frameworks (or those of roles nested below it).
            let mut roles: Vec<&String> = pool.reserved.keys().collect();
            for v in &pool.volumes {
                if !roles.contains(&&v.role) {
                    roles.push(&v.role);
                }
            }
            for role in roles {
                let reserved = pool.reserved.get(role).cloned().unwrap_or_default();
                let volumes: Vec<Volume> = pool
                    .volumes
                    .iter()
                    .filter(|v| &v.role == role)
                    .cloned()
                    .collect();
                if reserved.is_empty() && volumes.is_empty() {
                    continue;
                }
                let framework = held.first(
                    &mut |f| eligible_here(f) && within(input.role_of(f), role),
                    &|r| within(r, role) || within(role, r),
                );
                let Some(framework) = framework else {
                    continue;
                };
                held.add(input, &framework, &reserved);
                let g = give.entry(framework).or_default();
                reservation::add(&mut g.reserved, role, &reserved);
                if let Some(s) = pool.static_reserved.get(role) {
                    reservation::add(&mut g.static_reserved, role, s);
                }
                g.volumes.extend(volumes);
            }
            if worth_offering(&free)
                && let Some((framework, offered)) =
                    self.unreserved_offer(input, &free, &cluster_free, &held, &eligible_here)
            {
                held.add(input, &framework, &offered);
                cluster_free = cluster_free.saturating_sub(&offered);
                give.entry(framework).or_default().unreserved = offered;
            }
            for (framework, g) in give {
                self.next_offer += 1;
                let offer = Offer {
                    // Ids made of a number and a term always validate.
                    id: OfferId::new(format!("O{}-{}", self.term, self.next_offer))
                        .unwrap_or_else(|_| unreachable!("offer ids are well formed")),
                    framework_id: framework,
                    agent_id: agent.id.clone(),
                    hostname: agent.hostname.clone(),
                    resources: g.unreserved.add(&reservation::total(&g.reserved)),
                    reserved: g.reserved,
                    static_reserved: g.static_reserved,
                    volumes: g.volumes,
                    attributes: agent.attributes.clone(),
                };
                self.offers.insert(
                    offer.id.clone(),
                    HeldOffer {
                        offer: offer.clone(),
                        made: now,
                    },
                );
                made.push(offer);
            }
        }
        // Kept for the term, also for frameworks not ready now (one that
        // disconnects for a while must not come back first in every tie):
        // one count per framework registered during the term.
        self.picked = held.picked;
        made
    }

    /// The framework that gets this agent's unreserved resources `free`,
    /// and what it gets (cut to quota limits and others' guarantees).
    fn unreserved_offer(
        &self,
        input: &Inputs,
        free: &Resources,
        cluster_free: &Resources,
        shares: &Shares,
        eligible_here: &dyn Fn(&FrameworkId) -> bool,
    ) -> Option<(FrameworkId, Resources)> {
        // What this agent may give a framework: its free resources cut to
        // the limits of the framework's role and of the roles above it.
        let room = |f: &FrameworkId| -> Resources {
            let mut offer = free.clone();
            for role in ancestors(input.role_of(f)) {
                if let Some(c) = input.roles.get(role)
                    && !c.quota.limits.is_empty()
                {
                    offer = c.quota.cap(&offer, &shares.role(role));
                }
            }
            offer
        };
        let mut candidate = |f: &FrameworkId| eligible_here(f) && worth_offering(&room(f));
        // A role whose limits leave this agent nothing worth offering rules
        // out everything below it.
        let open = |role: &str| {
            input.roles.get(role).is_none_or(|c| {
                c.quota.limits.is_empty() || worth_offering(&c.quota.cap(free, &shares.role(role)))
            })
        };
        let unmet = &shares.unmet;
        if !unmet.is_empty() {
            // Frameworks of a role short of its guarantee go first.
            let found = shares.first_short(
                &mut |f| shares.is_short(input.role_of(f)) && candidate(f),
                &|r| open(r) && (shares.is_short(r) || shares.below_unmet.contains_key(r)),
            );
            if let Some(framework) = found {
                let offered = room(&framework);
                return Some((framework, offered));
            }
        }
        let framework = shares.first_open(&mut candidate, &open)?;
        let mut offered = room(&framework);
        if !unmet.is_empty() {
            // The headroom: what other agents have free, plus what this
            // offer leaves here, must cover every unmet guarantee; the
            // offer gives up what it must.
            let elsewhere = scalars(&cluster_free.saturating_sub(free));
            offered = offered.saturating_sub(&shares.needed.saturating_sub(&elsewhere));
            if !worth_offering(&offered) {
                return None;
            }
        }
        Some((framework, offered))
    }

    /// Checks an ACCEPT's operations against the framework's offers, in
    /// order, and consumes the offers: their resources are held until
    /// [`Self::release`], and the unused rest is filtered for `refuse`.
    /// `exists` says whether a task id is already taken in the cluster
    /// state; `executors` are the framework's running executors by agent
    /// (a task that starts a new one takes its resources too).
    #[allow(clippy::too_many_arguments)]
    pub fn accept(
        &mut self,
        framework: &FrameworkId,
        framework_role: &str,
        offer_ids: &[OfferId],
        ops: Vec<OfferOp>,
        refuse: Option<Duration>,
        now: Instant,
        exists: impl Fn(&TaskId) -> bool,
        executors: &BTreeMap<(AgentId, ExecutorId), ExecutorSpec>,
    ) -> Result<Accepted, AcceptError> {
        let first = offer_ids.first().ok_or(AcceptError::NoOffers)?;
        let unique: HashSet<&OfferId> = offer_ids.iter().collect();
        for id in &unique {
            match self.offers.get(*id) {
                Some(h) if &h.offer.framework_id == framework => {}
                _ => return Err(AcceptError::UnknownOffer((*id).clone())),
            }
        }
        let agent_id = self.offers[first].offer.agent_id.clone();
        if unique
            .iter()
            .any(|id| self.offers[*id].offer.agent_id != agent_id)
        {
            return Err(AcceptError::MixedAgents);
        }
        let mut pool = Pool::default();
        let mut taken = Vec::new();
        for id in unique {
            if let Some(h) = self.offers.remove(id) {
                pool.add(&Pool::of_offer(&h.offer));
                taken.push(h.offer);
            }
        }
        self.next_hold += 1;
        let hold = self.next_hold;
        self.holds.insert(hold, taken);
        let mut accepted = Vec::new();
        let mut refused = Vec::new();
        let mut dropped = Vec::new();
        let mut running: BTreeMap<ExecutorId, ExecutorSpec> = executors
            .iter()
            .filter(|((a, _), _)| a == &agent_id)
            .map(|((_, e), spec)| (e.clone(), spec.clone()))
            .collect();
        for op in ops {
            let (tasks, reserved_first) = match op {
                OfferOp::Launch(tasks) => (tasks, false),
                OfferOp::LaunchReservedFirst(tasks) => (tasks, true),
                op => {
                    match pool.apply(&op, framework_role) {
                        Ok(()) => accepted.push(op),
                        Err(why) => dropped.push(why),
                    }
                    continue;
                }
            };
            let mut launch = Vec::new();
            // A task group (one LAUNCH_GROUP operation) launches whole or
            // not at all: the pool as it was before it, to go back to.
            let group = tasks.first().and_then(|t| t.group.clone());
            let before = group.as_ref().map(|_| (pool.clone(), running.clone()));
            let mut group_failed: Option<String> = None;
            for mut task in tasks {
                let id = task.task_id.clone();
                if exists(&id) || !self.launching.insert(id.clone()) {
                    let why = "a task with this id already exists".to_string();
                    group_failed.get_or_insert_with(|| format!("task {id}: {why}"));
                    refused.push((id, why));
                    continue;
                }
                if reserved_first && task.reserved.is_empty() {
                    task.reserved = pool.reserved_first(&task);
                }
                // Roles that exclude unreserved resources: the reservations
                // must cover the whole task.
                let unreserved_refused = !task.accepted_roles.is_empty()
                    && !task.accepted_roles.iter().any(|r| r == "*")
                    && !task
                        .resources
                        .saturating_sub(&reservation::total(&task.reserved))
                        .is_empty();
                // A task that starts its executor takes the executor's
                // resources from the offers too.
                let mut charge = task.clone();
                let mut starts = None;
                let agrees = match &task.executor {
                    None => Ok(()),
                    Some(e) => match running.get(&e.executor_id) {
                        Some(r) if !r.same_as(e) => Err(format!(
                            "executor {} runs on this agent with another description (command, resources or kind)",
                            e.executor_id
                        )),
                        Some(_) => Ok(()),
                        None => {
                            charge.resources = charge.resources.add(&e.resources);
                            starts = Some(e.clone());
                            Ok(())
                        }
                    },
                };
                let agrees = agrees.and_then(|()| {
                    if unreserved_refused {
                        Err(format!(
                            "the task accepts only resources reserved for {} (no unreserved ones), and the offers' reservations do not cover it",
                            task.accepted_roles.join(", ")
                        ))
                    } else {
                        Ok(())
                    }
                });
                let checked = agrees
                    .and_then(|()| task.validate().map_err(|e| e.to_string()))
                    .and_then(|_| pool.launch(&charge));
                match checked {
                    Ok(()) => {
                        if let Some(e) = starts {
                            running.insert(e.executor_id.clone(), e);
                        }
                        launch.push(task)
                    }
                    Err(why) => {
                        self.launching.remove(&id);
                        group_failed.get_or_insert_with(|| format!("task {id}: {why}"));
                        refused.push((id, why));
                    }
                }
            }
            if let (Some(why), Some((p, r))) = (group_failed, before) {
                pool = p;
                running = r;
                for t in launch.drain(..) {
                    self.launching.remove(&t.task_id);
                    refused.push((t.task_id, format!("its task group cannot launch: {why}")));
                }
            }
            if !launch.is_empty() {
                accepted.push(OfferOp::Launch(launch));
            }
        }
        self.filters
            .insert(framework, &agent_id, now + refuse.unwrap_or(DEFAULT_REFUSE));
        Ok(Accepted {
            agent_id,
            ops: accepted,
            refused,
            dropped,
            hold,
        })
    }

    /// Ends a hold once its operations are in the state (or failed to be).
    pub fn release(&mut self, hold: u64, tasks: &[TaskId]) {
        self.holds.remove(&hold);
        for t in tasks {
            self.launching.remove(t);
        }
    }

    /// Stops offering `agent` (for an operator's change to its
    /// reservations) and takes back its outstanding offers, returned for
    /// rescinding. Undone by [`Self::resume_agent`].
    pub fn pause_agent(&mut self, agent: &AgentId) -> Vec<Offer> {
        *self.paused.entry(agent.clone()).or_default() += 1;
        let ids: Vec<OfferId> = self
            .offers
            .iter()
            .filter(|(_, h)| &h.offer.agent_id == agent)
            .map(|(id, _)| id.clone())
            .collect();
        ids.into_iter()
            .filter_map(|id| self.offers.remove(&id).map(|h| h.offer))
            .collect()
    }

    pub fn resume_agent(&mut self, agent: &AgentId) {
        if let Some(n) = self.paused.get_mut(agent) {
            *n -= 1;
            if *n == 0 {
                self.paused.remove(agent);
            }
        }
    }

    /// Whether any offer of the agent is held between accept and commit.
    pub fn agent_held(&self, agent: &AgentId) -> bool {
        self.holds.values().flatten().any(|o| &o.agent_id == agent)
    }

    /// Gives offers back and filters their agents for `refuse`.
    pub fn decline(
        &mut self,
        framework: &FrameworkId,
        offer_ids: &[OfferId],
        refuse: Option<Duration>,
        now: Instant,
    ) {
        for id in offer_ids {
            if let Some(h) = self.offers.get(id)
                && &h.offer.framework_id == framework
            {
                let h = self.offers.remove(id).unwrap_or_else(|| unreachable!());
                self.filters.insert(
                    framework,
                    &h.offer.agent_id,
                    now + refuse.unwrap_or(DEFAULT_REFUSE),
                );
            }
        }
    }

    /// Clears the framework's filters and resumes its offers.
    pub fn revive(&mut self, framework: &FrameworkId) {
        self.suppressed.remove(framework);
        self.filters.remove_framework(framework);
    }

    /// Stops offers to the framework until it revives.
    pub fn suppress(&mut self, framework: &FrameworkId) {
        self.suppressed.insert(framework.clone());
    }

    /// Rescinds offers held longer than `timeout`, and every offer on an
    /// agent not in `live_agents` or for a framework not in `frameworks`.
    pub fn rescind(
        &mut self,
        now: Instant,
        timeout: Duration,
        live_agents: &HashSet<AgentId>,
        frameworks: &HashSet<FrameworkId>,
    ) -> Vec<Offer> {
        let stale: Vec<OfferId> = self
            .offers
            .iter()
            .filter(|(_, h)| {
                now.duration_since(h.made) > timeout
                    || !live_agents.contains(&h.offer.agent_id)
                    || !frameworks.contains(&h.offer.framework_id)
            })
            .map(|(id, _)| id.clone())
            .collect();
        stale
            .into_iter()
            .filter_map(|id| self.offers.remove(&id).map(|h| h.offer))
            .collect()
    }

    /// The agent of an outstanding offer.
    pub fn offer_agent(&self, offer: &OfferId) -> Option<AgentId> {
        self.offers.get(offer).map(|h| h.offer.agent_id.clone())
    }

    /// Drops a framework's offers and filters (it re-subscribed or is
    /// gone): what it was offered is free again.
    pub fn remove_framework(&mut self, framework: &FrameworkId) {
        self.offers
            .retain(|_, h| &h.offer.framework_id != framework);
        self.filters.remove_framework(framework);
        self.suppressed.remove(framework);
    }

    /// Offers outstanding for a framework.
    pub fn offers_of(&self, framework: &FrameworkId) -> usize {
        self.offers
            .values()
            .filter(|h| &h.offer.framework_id == framework)
            .count()
    }

    /// Every outstanding offer.
    pub fn offers(&self) -> Vec<Offer> {
        self.offers.values().map(|h| h.offer.clone()).collect()
    }

    /// Offers outstanding in total.
    pub fn outstanding(&self) -> usize {
        self.offers.len()
    }

    pub fn is_suppressed(&self, framework: &FrameworkId) -> bool {
        self.suppressed.contains(framework)
    }
}

/// Free resources on `agent`: the state's free minus what is offered or
/// held there (`taken`).
fn free_on(agent: &AgentSlot, taken: &[&Offer]) -> Pool {
    let mut pool = Pool {
        unreserved: agent.free.unreserved.clone(),
        reserved: agent.free.reserved.clone(),
        static_reserved: agent.free.static_reserved.clone(),
        volumes: agent.free.volumes.clone(),
    };
    for o in taken {
        pool.take(o);
    }
    pool.reserved.retain(|_, r| !r.is_empty());
    pool
}

/// Agents declined by frameworks, until when: by agent, so that a cycle
/// looks up each agent's once. Expired ones are ignored when read and
/// dropped at most once a second (a pass over every filter per cycle was
/// one per agent and framework that ever declined).
#[derive(Debug, Default)]
struct Filters {
    by_agent: HashMap<AgentId, HashMap<FrameworkId, Instant>>,
    purged: Option<Instant>,
}

impl Filters {
    fn insert(&mut self, framework: &FrameworkId, agent: &AgentId, until: Instant) {
        self.by_agent
            .entry(agent.clone())
            .or_default()
            .insert(framework.clone(), until);
    }

    fn on(&self, agent: &AgentId) -> Option<&HashMap<FrameworkId, Instant>> {
        self.by_agent.get(agent)
    }

    /// Whether `declined` (an agent's filters) holds `framework` off at
    /// `now`.
    fn blocks(
        declined: Option<&HashMap<FrameworkId, Instant>>,
        framework: &FrameworkId,
        now: Instant,
    ) -> bool {
        declined
            .and_then(|d| d.get(framework))
            .is_some_and(|until| *until > now)
    }

    fn remove_framework(&mut self, framework: &FrameworkId) {
        self.by_agent.retain(|_, d| {
            d.remove(framework);
            !d.is_empty()
        });
    }

    fn purge(&mut self, now: Instant) {
        if self
            .purged
            .is_some_and(|p| now.saturating_duration_since(p) < Duration::from_secs(1))
        {
            return;
        }
        self.purged = Some(now);
        self.by_agent.retain(|_, d| {
            d.retain(|_, until| *until > now);
            !d.is_empty()
        });
    }
}

/// A dominant share, ordered (`f64::total_cmp`).
#[derive(Debug, Clone, Copy, PartialEq)]
struct Share(f64);

impl Eq for Share {}

impl PartialOrd for Share {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for Share {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        self.0.total_cmp(&other.0)
    }
}

/// What each framework and each role holds during a cycle, kept as offers
/// are made: the ready frameworks in hierarchical DRF order (a tree of
/// roles, each node's children sorted), and the guarantees not met yet.
/// Picking a framework walks the tree from the smallest share down, so a
/// cycle costs about one descent per agent instead of a pass over every
/// framework and role (Mesos' sorter keeps the same order).
struct Shares {
    held: BTreeMap<FrameworkId, Resources>,
    total: Resources,
    /// Times each framework was picked this term (the allocator's, lent
    /// for the cycle).
    picked: HashMap<FrameworkId, u64>,
    /// Every role a framework holding something (or ready) is in, and
    /// every role above it: the cpus, mem, disk and gpus its frameworks
    /// hold, and how many times they were picked.
    roles: HashMap<String, (Resources, u64)>,
    /// Each node of the role tree (`""` the root, then roles) and its
    /// children — ready frameworks of that role, and roles below it with a
    /// ready framework — in DRF order.
    tree: HashMap<String, BTreeSet<Entry>>,
    /// Roles holding less than their guarantee, and what they still need.
    unmet: BTreeMap<String, Resources>,
    /// The sum of `unmet`.
    needed: Resources,
    /// For each role above an unmet one, how many unmet roles are below it.
    below_unmet: HashMap<String, usize>,
    /// The root's children that are unmet or have an unmet role below
    /// them, in DRF order: where frameworks short of a guarantee are found
    /// without passing every role.
    short_root: BTreeSet<Entry>,
    /// The root's children whose limits still leave room for an offer, in
    /// DRF order: a cycle where most roles are at their limits does not
    /// pass them for every agent.
    open_root: BTreeSet<Entry>,
}

/// A child in the role tree, ordered: weighted dominant share, times
/// picked, name (a framework before a role of the same name).
type Entry = (Share, u64, String, Child);

#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
enum Child {
    Framework(FrameworkId),
    Role(String),
}

/// `role` and the roles it is nested in, itself first: `a/b/c`, `a/b`, `a`.
fn ancestors(role: &str) -> impl Iterator<Item = &str> {
    std::iter::successors(Some(role), |r| r.rfind('/').map(|i| &r[..i]))
}

/// The tree node `role` hangs from: `a/b` for `a/b/c`, the root for `a`.
fn parent(role: &str) -> &str {
    role.rfind('/').map_or("", |i| &role[..i])
}

impl Shares {
    fn new<'a>(
        input: &Inputs,
        total: Resources,
        taken: impl Iterator<Item = &'a Offer>,
        picked: HashMap<FrameworkId, u64>,
    ) -> Shares {
        let mut held: BTreeMap<FrameworkId, Resources> = input.used_by_framework.clone();
        for f in &input.frameworks {
            held.entry(f.clone()).or_default();
        }
        for o in taken {
            let e = held.entry(o.framework_id.clone()).or_default();
            *e = e.add(&o.resources);
        }
        let mut roles: HashMap<String, (Resources, u64)> = HashMap::new();
        for (f, r) in &held {
            let n = picked.get(f).copied().unwrap_or(0);
            let r = scalars(r);
            for role in ancestors(input.role_of(f)) {
                let e = roles.entry(role.to_string()).or_default();
                e.0 = e.0.add(&r);
                e.1 += n;
            }
        }
        let mut shares = Shares {
            held,
            total,
            picked,
            roles,
            tree: HashMap::new(),
            unmet: BTreeMap::new(),
            needed: Resources::default(),
            below_unmet: HashMap::new(),
            short_root: BTreeSet::new(),
            open_root: BTreeSet::new(),
        };
        for f in &input.frameworks {
            let entry = shares.framework_entry(f);
            let role = input.role_of(f);
            shares
                .tree
                .entry(role.to_string())
                .or_default()
                .insert(entry);
            for r in ancestors(role) {
                let entry = shares.role_entry(input, r);
                if !shares
                    .tree
                    .entry(parent(r).to_string())
                    .or_default()
                    .insert(entry)
                {
                    break;
                }
            }
        }
        for (role, c) in &input.roles {
            let short = c.quota.guarantee().saturating_sub(&shares.role(role));
            shares.set_unmet(input, role, short);
        }
        let open: Vec<Entry> = shares
            .tree
            .get("")
            .into_iter()
            .flatten()
            .filter(|(_, _, name, _)| !shares.closed(input, name))
            .cloned()
            .collect();
        shares.open_root.extend(open);
        shares
    }

    /// Whether `role`'s limits leave no room worth offering on any agent
    /// (it only holds more as a cycle goes on: once closed, it stays so).
    fn closed(&self, input: &Inputs, role: &str) -> bool {
        input.roles.get(role).is_some_and(|c| {
            !c.quota.limits.is_empty()
                && !worth_offering(&c.quota.cap(&self.total, &self.role(role)))
        })
    }

    /// Whether `role` or a role above it is short of its guarantee.
    fn is_short(&self, role: &str) -> bool {
        ancestors(role).any(|r| self.unmet.contains_key(r))
    }

    /// `role` still needs `short` to meet its guarantee (nothing: met).
    fn set_unmet(&mut self, input: &Inputs, role: &str, short: Resources) {
        let was = self.unmet.remove(role);
        if let Some(was) = &was {
            self.needed = self.needed.saturating_sub(was);
        }
        let now = !short.is_empty();
        if now {
            self.needed = self.needed.add(&short);
            self.unmet.insert(role.to_string(), short);
        }
        if was.is_some() == now {
            return;
        }
        let top = ancestors(role).last().unwrap_or(role);
        let entry = self.role_entry(input, top);
        let in_tree = self.tree.get("").is_some_and(|t| t.contains(&entry));
        for a in ancestors(role).skip(1) {
            let n = self.below_unmet.entry(a.to_string()).or_default();
            if now {
                *n += 1;
            } else {
                *n -= 1;
                if *n == 0 {
                    self.below_unmet.remove(a);
                }
            }
        }
        let relevant = self.unmet.contains_key(top) || self.below_unmet.contains_key(top);
        if relevant && in_tree {
            self.short_root.insert(entry);
        } else {
            self.short_root.remove(&entry);
        }
    }

    fn picked(&self, framework: &FrameworkId) -> u64 {
        self.picked.get(framework).copied().unwrap_or(0)
    }

    /// What the frameworks of `role` and of the roles below it hold.
    fn role(&self, role: &str) -> Resources {
        self.roles
            .get(role)
            .map(|(r, _)| r.clone())
            .unwrap_or_default()
    }

    fn framework_entry(&self, f: &FrameworkId) -> Entry {
        let share = self
            .held
            .get(f)
            .map_or(0.0, |r| r.dominant_share(&self.total));
        (
            Share(share),
            self.picked(f),
            f.to_string(),
            Child::Framework(f.clone()),
        )
    }

    fn role_entry(&self, input: &Inputs, role: &str) -> Entry {
        let (held, picked) = self.roles.get(role).cloned().unwrap_or_default();
        let weight = input.roles.get(role).map_or(1.0, |c| c.weight);
        (
            Share(held.dominant_share(&self.total) / weight),
            picked,
            role.to_string(),
            Child::Role(role.to_string()),
        )
    }

    /// `framework` was picked for `r` more.
    fn add(&mut self, input: &Inputs, framework: &FrameworkId, r: &Resources) {
        let role = input.role_of(framework);
        let before = self.framework_entry(framework);
        let e = self.held.entry(framework.clone()).or_default();
        *e = e.add(r);
        *self.picked.entry(framework.clone()).or_default() += 1;
        let after = self.framework_entry(framework);
        if let Some(children) = self.tree.get_mut(role)
            && children.remove(&before)
        {
            children.insert(after);
        }
        let r = scalars(r);
        for a in ancestors(role) {
            let before = self.role_entry(input, a);
            let e = self.roles.entry(a.to_string()).or_default();
            e.0 = e.0.add(&r);
            e.1 += 1;
            let after = self.role_entry(input, a);
            if let Some(children) = self.tree.get_mut(parent(a))
                && children.remove(&before)
            {
                children.insert(after.clone());
            }
            if parent(a).is_empty() {
                if self.short_root.remove(&before) {
                    self.short_root.insert(after.clone());
                }
                if self.open_root.remove(&before) && !self.closed(input, a) {
                    self.open_root.insert(after);
                }
            }
        }
        for a in ancestors(role) {
            if let Some(c) = input.roles.get(a) {
                let guarantee = c.quota.guarantee();
                if !guarantee.is_empty() {
                    let short = guarantee.saturating_sub(&self.role(a));
                    self.set_unmet(input, a, short);
                }
            }
        }
    }

    /// The first ready framework in DRF order that `ok` accepts: down the
    /// role tree, the child with the smallest weighted dominant share
    /// that has one (ties to the one picked least, then by name; a
    /// framework directly in a role competes with the role's subroles).
    /// `enter` may rule out a role and everything below it.
    fn first(
        &self,
        ok: &mut dyn FnMut(&FrameworkId) -> bool,
        enter: &dyn Fn(&str) -> bool,
    ) -> Option<FrameworkId> {
        self.first_below("", ok, enter)
    }

    /// [`Self::first`] among the root's children that are short of a
    /// guarantee or hold a role that is.
    fn first_short(
        &self,
        ok: &mut dyn FnMut(&FrameworkId) -> bool,
        enter: &dyn Fn(&str) -> bool,
    ) -> Option<FrameworkId> {
        self.first_of(&self.short_root, ok, enter)
    }

    /// [`Self::first`] among the root's children that are not
    /// [`Self::closed`].
    fn first_open(
        &self,
        ok: &mut dyn FnMut(&FrameworkId) -> bool,
        enter: &dyn Fn(&str) -> bool,
    ) -> Option<FrameworkId> {
        self.first_of(&self.open_root, ok, enter)
    }

    fn first_below(
        &self,
        node: &str,
        ok: &mut dyn FnMut(&FrameworkId) -> bool,
        enter: &dyn Fn(&str) -> bool,
    ) -> Option<FrameworkId> {
        self.first_of(self.tree.get(node)?, ok, enter)
    }

    /// The first of `children` (in their order) that `ok` accepts, or
    /// that holds one below it.
    fn first_of(
        &self,
        children: &BTreeSet<Entry>,
        ok: &mut dyn FnMut(&FrameworkId) -> bool,
        enter: &dyn Fn(&str) -> bool,
    ) -> Option<FrameworkId> {
        for (_, _, _, child) in children {
            match child {
                Child::Framework(f) if ok(f) => return Some(f.clone()),
                Child::Framework(_) => {}
                Child::Role(r) => {
                    if enter(r)
                        && let Some(f) = self.first_below(r, ok, enter)
                    {
                        return Some(f);
                    }
                }
            }
        }
        None
    }
}

/// Cpus, mem, disk and gpus of `r` (what quotas are about).
fn scalars(r: &Resources) -> Resources {
    Resources {
        ports: Default::default(),
        ..r.clone()
    }
}

fn worth_offering(r: &Resources) -> bool {
    r.cpus.as_f64() >= MIN_OFFER_CPUS || r.mem.as_f64() >= MIN_OFFER_MEM
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fw(s: &str) -> FrameworkId {
        FrameworkId::new(s).unwrap()
    }

    fn agent(id: &str, res: &str) -> AgentSlot {
        AgentSlot {
            id: AgentId::new(id).unwrap(),
            hostname: id.into(),
            total: res.parse().unwrap(),
            attributes: BTreeMap::new(),
            free: AgentPools {
                unreserved: res.parse().unwrap(),
                ..Default::default()
            },
        }
    }

    /// Marks `used` of the agent's unreserved resources as held by tasks.
    fn use_on(inp: &mut Inputs, agent: usize, used: &str) {
        let a = &mut inp.agents[agent];
        a.free.unreserved = a.free.unreserved.saturating_sub(&used.parse().unwrap());
    }

    fn launch(
        a: &mut Allocator,
        f: &str,
        offers: &[OfferId],
        tasks: Vec<TaskSpec>,
        refuse: Option<Duration>,
        t0: Instant,
        exists: impl Fn(&TaskId) -> bool,
    ) -> Result<Accepted, AcceptError> {
        a.accept(
            &fw(f),
            "*",
            offers,
            vec![OfferOp::Launch(tasks)],
            refuse,
            t0,
            exists,
            &BTreeMap::new(),
        )
    }

    fn launched(acc: &Accepted) -> Vec<TaskSpec> {
        acc.ops
            .iter()
            .flat_map(|op| match op {
                OfferOp::Launch(t) => t.clone(),
                _ => Vec::new(),
            })
            .collect()
    }

    fn task(id: &str, res: &str) -> TaskSpec {
        TaskSpec::shell(TaskId::new(id).unwrap(), "true", res.parse().unwrap())
    }

    fn inputs(agents: Vec<AgentSlot>, frameworks: &[&str]) -> Inputs {
        Inputs {
            agents,
            frameworks: frameworks.iter().map(|f| fw(f)).collect(),
            ..Default::default()
        }
    }

    /// The DRF choice as it was made before the role tree: at each level of
    /// the role tree, sum every framework's holdings per child and take
    /// the smallest (kept as the oracle for `Shares::first`).
    fn reference_pick(
        candidates: &[FrameworkId],
        shares: &Shares,
        input: &Inputs,
    ) -> Option<FrameworkId> {
        let (held, total) = (&shares.held, &shares.total);
        let share = |r: &Resources| r.dominant_share(total);
        let mut node = String::new();
        let mut pool: Vec<FrameworkId> = candidates.to_vec();
        loop {
            // (score, times picked, name, Ok(framework) | Err(child role))
            let mut options: Vec<(f64, u64, String, Result<FrameworkId, String>)> = Vec::new();
            let mut children: Vec<String> = Vec::new();
            for f in &pool {
                let role = input.role_of(f);
                if role == node {
                    let mine = held.get(f).cloned().unwrap_or_default();
                    options.push((share(&mine), shares.picked(f), f.to_string(), Ok(f.clone())));
                    continue;
                }
                let rest = if node.is_empty() {
                    role
                } else {
                    &role[node.len() + 1..]
                };
                let seg = rest.split('/').next().unwrap_or(rest);
                let child = if node.is_empty() {
                    seg.to_string()
                } else {
                    format!("{node}/{seg}")
                };
                if !children.contains(&child) {
                    children.push(child);
                }
            }
            for child in children {
                let (sum, picked) = held
                    .iter()
                    .filter(|(f, _)| within(input.role_of(f), &child))
                    .fold((Resources::default(), 0), |(acc, n), (f, r)| {
                        (acc.add(r), n + shares.picked(f))
                    });
                let weight = input.roles.get(&child).map_or(1.0, |c| c.weight);
                options.push((share(&sum) / weight, picked, child.clone(), Err(child)));
            }
            let (_, _, _, best) =
                options
                    .into_iter()
                    .min_by(|(sa, pa, na, _), (sb, pb, nb, _)| {
                        sa.total_cmp(sb)
                            .then_with(|| pa.cmp(pb))
                            .then_with(|| na.cmp(nb))
                    })?;
            match best {
                Ok(f) => return Some(f),
                Err(role) => {
                    pool.retain(|f| within(input.role_of(f), &role));
                    node = role;
                }
            }
        }
    }

    /// The role tree kept as offers are made picks what a fresh pass over
    /// every framework and role picks, and holds what it would be built
    /// with from scratch (role sums, order, unmet guarantees), after every
    /// one of many random picks on random role trees.
    #[test]
    fn the_kept_role_tree_picks_what_a_fresh_pass_over_every_framework_picks() {
        let mut seed = 0x9e37_79b9_7f4a_7c15_u64;
        let mut next = |n: u64| {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            seed % n
        };
        let role_names = ["*", "a", "a/b", "a/b/c", "a/d", "e", "e/f", "e/f/g"];
        for round in 0..40 {
            let mut inp = inputs(vec![], &[]);
            for (i, r) in role_names.iter().enumerate() {
                if next(3) == 0 {
                    continue;
                }
                let g = next(4) as f64;
                inp.roles.insert(
                    r.to_string(),
                    role(
                        1.0 + next(3) as f64,
                        &[("cpus", g), ("mem", 100.0 * next(3) as f64)],
                        if i % 2 == 0 { &[] } else { &[("cpus", 50.0)] },
                    ),
                );
            }
            let mut picked = HashMap::new();
            for i in 0..12 {
                let f = fw(&format!("f{i:02}"));
                inp.framework_roles
                    .insert(f.clone(), role_names[next(8) as usize].to_string());
                if next(4) != 0 {
                    inp.frameworks.push(f.clone());
                }
                if next(2) == 0 {
                    let used = format!("cpus:{};mem:{}", next(5), 64 * next(5));
                    inp.used_by_framework
                        .insert(f.clone(), used.parse().unwrap());
                }
                if next(2) == 0 {
                    picked.insert(f, next(3));
                }
            }
            let total: Resources = "cpus:100;mem:2000".parse().unwrap();
            let mut shares = Shares::new(&inp, total.clone(), std::iter::empty(), picked);
            for step in 0..30 {
                let candidates: Vec<FrameworkId> = inp
                    .frameworks
                    .iter()
                    .filter(|_| next(3) != 0)
                    .cloned()
                    .collect();
                let kept = shares.first(&mut |f| candidates.contains(f), &|_| true);
                let fresh = reference_pick(&candidates, &shares, &inp);
                assert_eq!(kept, fresh, "round {round}, step {step}");
                let short: Vec<FrameworkId> = candidates
                    .iter()
                    .filter(|f| shares.is_short(inp.role_of(f)))
                    .cloned()
                    .collect();
                let kept_short = shares.first_short(&mut |f| short.contains(f), &|r| {
                    shares.is_short(r) || shares.below_unmet.contains_key(r)
                });
                let fresh_short = reference_pick(&short, &shares, &inp);
                assert_eq!(kept_short, fresh_short, "round {round}, step {step}");
                let not_closed = |r: &str| !shares.closed(&inp, r);
                assert_eq!(
                    shares.first_open(&mut |f| candidates.contains(f), &not_closed),
                    shares.first(&mut |f| candidates.contains(f), &not_closed),
                    "round {round}, step {step}"
                );
                let Some(f) = kept.or_else(|| inp.frameworks.first().cloned()) else {
                    break;
                };
                let more = format!("cpus:{};mem:{}", next(3), 32 * next(4));
                shares.add(&inp, &f, &more.parse().unwrap());
                let mut again = inp.clone();
                again.used_by_framework = shares.held.clone();
                let rebuilt = Shares::new(
                    &again,
                    total.clone(),
                    std::iter::empty(),
                    shares.picked.clone(),
                );
                assert_eq!(shares.tree, rebuilt.tree, "round {round}, step {step}");
                assert_eq!(shares.roles, rebuilt.roles, "round {round}, step {step}");
                assert_eq!(shares.unmet, rebuilt.unmet, "round {round}, step {step}");
                assert_eq!(shares.needed, rebuilt.needed, "round {round}, step {step}");
                assert_eq!(
                    shares.below_unmet, rebuilt.below_unmet,
                    "round {round}, step {step}"
                );
                assert_eq!(
                    shares.short_root, rebuilt.short_root,
                    "round {round}, step {step}"
                );
                assert_eq!(
                    shares.open_root, rebuilt.open_root,
                    "round {round}, step {step}"
                );
            }
        }
    }

    /// A limit no offer reaches changes nothing: the offers in one role
    /// without quotas are those made with the limit (which asks the role's
    /// room of every candidate), cycle after cycle, with declines and
    /// filters between.
    #[test]
    fn the_drf_order_offers_what_the_general_path_offers() {
        let agents: Vec<AgentSlot> = (0..40)
            .map(|i| {
                agent(
                    &format!("a{i:02}"),
                    &format!("cpus:{};mem:{}", 2 + i % 5, 1024 * (1 + i % 3)),
                )
            })
            .collect();
        let names = ["f0", "f1", "f2", "f3", "f4", "f5", "f6"];
        let mut fast = inputs(agents, &names);
        for (i, f) in names.iter().enumerate() {
            fast.used_by_framework.insert(
                fw(f),
                format!("cpus:{};mem:{}", i % 3, 100 * (i % 4))
                    .parse()
                    .unwrap(),
            );
        }
        let mut general = fast.clone();
        general.roles.insert(
            "*".into(),
            RoleConfig {
                weight: 1.0,
                quota: wasmos_state::roles::Quota {
                    guarantees: BTreeMap::new(),
                    limits: [("cpus".to_string(), 1e6)].into(),
                },
            },
        );
        let (mut a, mut b) = (Allocator::new(1), Allocator::new(1));
        let t0 = Instant::now();
        let key = |o: &Offer| {
            (
                o.framework_id.clone(),
                o.agent_id.clone(),
                o.resources.clone(),
            )
        };
        for cycle in 0..12u64 {
            let now = t0 + Duration::from_secs(cycle);
            let (oa, ob) = (a.allocate(&fast, now), b.allocate(&general, now));
            assert_eq!(
                oa.iter().map(key).collect::<Vec<_>>(),
                ob.iter().map(key).collect::<Vec<_>>(),
                "cycle {cycle}"
            );
            assert!(!oa.is_empty() || cycle > 0, "the first cycle offers");
            // Every other offer is declined for a while, by both.
            for (x, y) in oa.iter().zip(&ob).step_by(2) {
                let refuse = Some(Duration::from_secs(cycle % 4));
                a.decline(&x.framework_id, std::slice::from_ref(&x.id), refuse, now);
                b.decline(&y.framework_id, std::slice::from_ref(&y.id), refuse, now);
            }
        }
    }

    #[test]
    fn ports_bound_on_an_agents_host_are_never_offered() {
        let mut a = Allocator::new(1);
        let mut inp = inputs(
            vec![
                agent("a1", "cpus:4;mem:4096;ports:[31000-31009]"),
                agent("a2", "cpus:4;mem:4096;ports:[31000-31009]"),
            ],
            &["f"],
        );
        inp.agents[0]
            .free
            .reserved
            .insert("r".into(), "ports:[31005-31006]".parse().unwrap());
        let bound = HashMap::from([(
            AgentId::new("a1").unwrap(),
            "[31000-31001, 31005-31005]".parse::<PortSet>().unwrap(),
        )]);
        inp.withhold_ports(&bound);
        assert_eq!(
            inp.agents[0].free.reserved["r"].ports.to_string(),
            "[31006-31006]"
        );
        let offers = a.allocate(&inp, Instant::now());
        let ports = |agent: &str| {
            offers
                .iter()
                .find(|o| o.agent_id.as_str() == agent)
                .map(|o| o.resources.ports.to_string())
        };
        assert_eq!(ports("a1").as_deref(), Some("[31002-31004, 31006-31009]"));
        assert_eq!(ports("a2").as_deref(), Some("[31000-31009]"));
    }

    #[test]
    fn each_agent_goes_to_the_framework_with_the_smallest_dominant_share() {
        let mut a = Allocator::new(1);
        let mut inp = inputs(
            vec![
                agent("a1", "cpus:4;mem:4096"),
                agent("a2", "cpus:4;mem:4096"),
            ],
            &["big", "small"],
        );
        inp.used_by_framework
            .insert(fw("big"), "cpus:2;mem:100".parse().unwrap());
        use_on(&mut inp, 0, "cpus:2;mem:100");
        let offers = a.allocate(&inp, Instant::now());
        assert_eq!(offers.len(), 2);
        // `small` has share 0 and gets the first agent; after that its share
        // (2 of 8 cpus) ties with `big`'s (2 of 8): the tie goes by name.
        assert_eq!(offers[0].framework_id, fw("small"));
        assert_eq!(offers[0].resources.to_string(), "cpus:2;mem:3996;disk:0");
        assert_eq!(offers[1].framework_id, fw("big"));
    }

    #[test]
    fn equal_shares_take_turns_instead_of_going_to_the_first_name() {
        let mut a = Allocator::new(1);
        let inp = inputs(vec![agent("a1", "cpus:4;mem:4096")], &["a", "b", "c"]);
        let t0 = Instant::now();
        let mut got = Vec::new();
        for i in 0..6 {
            let now = t0 + Duration::from_millis(i);
            let o = a.allocate(&inp, now);
            assert_eq!(o.len(), 1, "cycle {i}");
            got.push(o[0].framework_id.to_string());
            // Declined without a filter: every share is 0 again.
            a.decline(
                &o[0].framework_id,
                &[o[0].id.clone()],
                Some(Duration::ZERO),
                now,
            );
        }
        assert_eq!(got, ["a", "b", "c", "a", "b", "c"]);
    }

    #[test]
    fn offered_resources_are_not_offered_twice() {
        let mut a = Allocator::new(1);
        let inp = inputs(vec![agent("a1", "cpus:4;mem:4096")], &["f"]);
        assert_eq!(a.allocate(&inp, Instant::now()).len(), 1);
        assert!(a.allocate(&inp, Instant::now()).is_empty());
    }

    #[test]
    fn a_decline_filters_the_agent_until_the_refuse_time_passes() {
        let mut a = Allocator::new(1);
        let inp = inputs(vec![agent("a1", "cpus:4;mem:4096")], &["f"]);
        let t0 = Instant::now();
        let o = a.allocate(&inp, t0);
        a.decline(
            &fw("f"),
            &[o[0].id.clone()],
            Some(Duration::from_secs(10)),
            t0,
        );
        assert!(a.allocate(&inp, t0 + Duration::from_secs(5)).is_empty());
        assert_eq!(a.allocate(&inp, t0 + Duration::from_secs(11)).len(), 1);
    }

    #[test]
    fn revive_clears_filters_and_suppress_stops_offers() {
        let mut a = Allocator::new(1);
        let inp = inputs(vec![agent("a1", "cpus:4;mem:4096")], &["f"]);
        let t0 = Instant::now();
        let o = a.allocate(&inp, t0);
        a.decline(
            &fw("f"),
            &[o[0].id.clone()],
            Some(Duration::from_secs(100)),
            t0,
        );
        a.revive(&fw("f"));
        let o = a.allocate(&inp, t0);
        assert_eq!(o.len(), 1);
        a.decline(&fw("f"), &[o[0].id.clone()], Some(Duration::ZERO), t0);
        a.suppress(&fw("f"));
        assert!(a.allocate(&inp, t0 + Duration::from_secs(1)).is_empty());
    }

    #[test]
    fn a_task_group_launches_whole_or_not_at_all_and_its_new_executor_takes_its_share() {
        let mut a = Allocator::new(1);
        let inp = inputs(vec![agent("a1", "cpus:1;mem:1024")], &["f"]);
        let t0 = Instant::now();
        let o = a.allocate(&inp, t0);
        let exec = ExecutorSpec {
            executor_id: ExecutorId::new("pod").unwrap(),
            kind: wasmos_core::ExecutorKind::Default,
            name: String::new(),
            command: None,
            resources: "cpus:0.25;mem:64".parse().unwrap(),
            fetch: Vec::new(),
            shutdown_grace_period_ms: None,
            info: None,
        };
        let member = |id: &str, res: &str| {
            let mut t = task(id, res);
            t.executor = Some(exec.clone());
            t.group = Some(TaskId::new("g1").unwrap());
            t
        };
        // 0.5 + 0.5 + the executor's 0.25 is more than the offer: the
        // group is refused whole, and nothing of the offer is used.
        let got = launch(
            &mut a,
            "f",
            &[o[0].id.clone()],
            vec![
                member("g1", "cpus:0.5;mem:64"),
                member("g2", "cpus:0.5;mem:64"),
            ],
            Some(Duration::ZERO),
            t0,
            |_| false,
        )
        .unwrap();
        assert!(launched(&got).is_empty(), "{:?}", got.ops);
        assert_eq!(got.refused.len(), 2, "{:?}", got.refused);
        a.release(got.hold, &[]);
        let o = a.allocate(&inp, t0);
        assert_eq!(o[0].resources, "cpus:1;mem:1024".parse().unwrap());
        // 0.25 + 0.25 + 0.25 fits: both launch, and what is left is what
        // the tasks and the executor (once) did not take.
        let got = launch(
            &mut a,
            "f",
            &[o[0].id.clone()],
            vec![
                member("g1", "cpus:0.25;mem:64"),
                member("g2", "cpus:0.25;mem:64"),
            ],
            Some(Duration::ZERO),
            t0,
            |_| false,
        )
        .unwrap();
        assert_eq!(launched(&got).len(), 2, "{:?}", got.refused);
    }

    #[test]
    fn a_launch_uses_offered_resources_once_and_reserves_them_until_released() {
        let mut a = Allocator::new(1);
        let inp = inputs(vec![agent("a1", "cpus:1;mem:1024")], &["f"]);
        let t0 = Instant::now();
        let o = a.allocate(&inp, t0);
        let got = launch(
            &mut a,
            "f",
            &[o[0].id.clone()],
            vec![
                task("t1", "cpus:0.5;mem:512"),
                task("t2", "cpus:0.5;mem:512"),
                task("t3", "cpus:0.5;mem:1"),
            ],
            Some(Duration::ZERO),
            t0,
            |_| false,
        )
        .unwrap();
        assert_eq!(launched(&got).len(), 2);
        assert_eq!(got.refused.len(), 1);
        assert!(
            got.refused[0].1.contains("offers have"),
            "{:?}",
            got.refused
        );
        // The offer is used up: launching on it again is refused.
        let again = launch(&mut a, "f", &[o[0].id.clone()], vec![], None, t0, |_| false);
        assert!(matches!(again, Err(AcceptError::UnknownOffer(_))));
        // Reserved resources are not re-offered before the commit...
        assert!(a.allocate(&inp, t0 + Duration::from_secs(1)).is_empty());
        // ...and after the release the state accounts for them.
        a.release(
            got.hold,
            &[TaskId::new("t1").unwrap(), TaskId::new("t2").unwrap()],
        );
        let mut after = inp.clone();
        use_on(&mut after, 0, "cpus:1;mem:1024");
        assert!(a.allocate(&after, t0 + Duration::from_secs(1)).is_empty());
    }

    #[test]
    fn launches_on_foreign_or_mixed_offers_are_refused() {
        let mut a = Allocator::new(1);
        let inp = inputs(
            vec![
                agent("a1", "cpus:1;mem:1024"),
                agent("a2", "cpus:1;mem:1024"),
            ],
            &["f", "g"],
        );
        let t0 = Instant::now();
        let o = a.allocate(&inp, t0);
        let (of, og): (Vec<_>, Vec<_>) = o.iter().partition(|o| o.framework_id == fw("f"));
        let r = launch(&mut a, "f", &[og[0].id.clone()], vec![], None, t0, |_| {
            false
        });
        assert!(matches!(r, Err(AcceptError::UnknownOffer(_))));
        let r = launch(&mut a, "f", &[], vec![], None, t0, |_| false);
        assert_eq!(r, Err(AcceptError::NoOffers));
        // Offers stay outstanding after a refused launch.
        assert_eq!(a.offers_of(&fw("f")), of.len());
    }

    #[test]
    fn duplicate_ids_in_one_launch_or_in_the_state_are_refused() {
        let mut a = Allocator::new(1);
        let inp = inputs(vec![agent("a1", "cpus:4;mem:4096")], &["f"]);
        let t0 = Instant::now();
        let o = a.allocate(&inp, t0);
        let got = launch(
            &mut a,
            "f",
            &[o[0].id.clone()],
            vec![
                task("x", "cpus:1"),
                task("x", "cpus:1"),
                task("old", "cpus:1"),
            ],
            None,
            t0,
            |id| id.as_str() == "old",
        )
        .unwrap();
        assert_eq!(launched(&got).len(), 1);
        assert_eq!(got.refused.len(), 2);
    }

    #[test]
    fn stale_offers_and_offers_on_lost_agents_are_rescinded() {
        let mut a = Allocator::new(1);
        let inp = inputs(
            vec![
                agent("a1", "cpus:1;mem:1024"),
                agent("a2", "cpus:1;mem:1024"),
            ],
            &["f"],
        );
        let t0 = Instant::now();
        a.allocate(&inp, t0);
        let live: HashSet<AgentId> = [AgentId::new("a1").unwrap()].into();
        let fws: HashSet<FrameworkId> = [fw("f")].into();
        let gone = a.rescind(t0, Duration::from_secs(60), &live, &fws);
        assert_eq!(gone.len(), 1);
        assert_eq!(gone[0].agent_id.as_str(), "a2");
        let gone = a.rescind(
            t0 + Duration::from_secs(61),
            Duration::from_secs(60),
            &live,
            &fws,
        );
        assert_eq!(gone.len(), 1);
        assert_eq!(a.outstanding(), 0);
    }

    /// Frameworks `(name, role)`, holding `held` (Mesos text form).
    fn with_roles(agents: Vec<AgentSlot>, fws: &[(&str, &str, &str)]) -> Inputs {
        let mut inp = inputs(agents, &fws.iter().map(|(f, _, _)| *f).collect::<Vec<_>>());
        for (f, role, held) in fws {
            inp.framework_roles.insert(fw(f), role.to_string());
            inp.used_by_framework.insert(fw(f), held.parse().unwrap());
        }
        inp
    }

    fn role(weight: f64, g: &[(&str, f64)], l: &[(&str, f64)]) -> RoleConfig {
        RoleConfig {
            weight,
            quota: wasmos_state::roles::Quota {
                guarantees: g.iter().map(|(k, v)| (k.to_string(), *v)).collect(),
                limits: l.iter().map(|(k, v)| (k.to_string(), *v)).collect(),
            },
        }
    }

    #[test]
    fn a_roles_weight_divides_its_share() {
        // a holds 3 of 10 cpus, b 1: by share b is behind, but a weighs 2
        // (0.3 / 2 = 0.15) against b's 1 (0.1): b first.
        let agents = vec![agent("a1", "cpus:10;mem:10000")];
        let mut inp = with_roles(
            agents.clone(),
            &[("fa", "a", "cpus:3"), ("fb", "b", "cpus:1")],
        );
        inp.roles.insert("a".into(), role(2.0, &[], &[]));
        let mut al = Allocator::new(1);
        assert_eq!(al.allocate(&inp, Instant::now())[0].framework_id, fw("fb"));
        // With a weight of 4, a (0.075) is behind b.
        inp.roles.insert("a".into(), role(4.0, &[], &[]));
        let mut al = Allocator::new(1);
        assert_eq!(al.allocate(&inp, Instant::now())[0].framework_id, fw("fa"));
    }

    #[test]
    fn shares_are_compared_role_by_role_down_the_tree() {
        // eng/x and eng/y hold 2 cpus each (eng: 4), ops 3: ops is behind
        // as a role, though each eng framework holds less than ops'.
        let agents = vec![agent("a1", "cpus:10;mem:10000")];
        let inp = with_roles(
            agents,
            &[
                ("f1", "eng/x", "cpus:2"),
                ("f2", "eng/y", "cpus:2"),
                ("f3", "ops", "cpus:3"),
            ],
        );
        let mut al = Allocator::new(1);
        assert_eq!(al.allocate(&inp, Instant::now())[0].framework_id, fw("f3"));
    }

    #[test]
    fn a_guarantee_comes_first_and_keeps_its_headroom() {
        let agents = vec![
            agent("a1", "cpus:4;mem:4000"),
            agent("a2", "cpus:4;mem:4000"),
        ];
        // q is guaranteed 4 cpus and holds more than the other by share:
        // it still gets the first agent.
        let mut inp = with_roles(
            agents.clone(),
            &[("fq", "q", "cpus:0"), ("fo", "*", "cpus:0")],
        );
        inp.used_by_framework
            .insert(fw("fq"), "mem:1000".parse().unwrap());
        inp.roles
            .insert("q".into(), role(1.0, &[("cpus", 4.0)], &[]));
        let mut al = Allocator::new(1);
        let offers = al.allocate(&inp, Instant::now());
        assert_eq!(offers[0].framework_id, fw("fq"));
        // q's framework is not taking offers (suppressed): the other role
        // gets one agent, and of the second only what q's guarantee does
        // not need (its memory, not its cpus).
        let mut al = Allocator::new(1);
        al.suppress(&fw("fq"));
        let offers = al.allocate(&inp, Instant::now());
        assert_eq!(offers.len(), 2, "{offers:?}");
        assert_eq!(offers[0].resources.to_string(), "cpus:4;mem:4000;disk:0");
        assert_eq!(offers[1].framework_id, fw("fo"));
        assert_eq!(offers[1].resources.to_string(), "cpus:0;mem:4000;disk:0");
    }

    #[test]
    fn a_limit_cuts_the_offer() {
        let agents = vec![agent("a1", "cpus:4;mem:4000")];
        let mut inp = with_roles(agents, &[("fl", "l", "cpus:0.5")]);
        inp.roles
            .insert("l".into(), role(1.0, &[], &[("cpus", 1.0)]));
        let mut al = Allocator::new(1);
        let offers = al.allocate(&inp, Instant::now());
        assert_eq!(offers[0].resources.to_string(), "cpus:0.5;mem:4000;disk:0");
        // At its cpus limit it is offered no more cpus (what the limit
        // does not name still goes, as in Mesos).
        inp.used_by_framework
            .insert(fw("fl"), "cpus:1".parse().unwrap());
        let mut al = Allocator::new(1);
        let offers = al.allocate(&inp, Instant::now());
        assert!(offers[0].resources.cpus.is_zero(), "{offers:?}");
    }

    fn reserved_agent(id: &str, unreserved: &str, role: &str, reserved: &str) -> AgentSlot {
        let mut a = agent(id, unreserved);
        let r: Resources = reserved.parse().unwrap();
        a.total = a.total.add(&r);
        a.free.reserved.insert(role.to_string(), r);
        a
    }

    #[test]
    fn reserved_resources_are_offered_only_to_their_role_and_its_subroles() {
        let agents = vec![reserved_agent(
            "a1",
            "cpus:1;mem:1000",
            "ops",
            "cpus:2;mem:500",
        )];
        // Only a framework of another role: it gets the unreserved part.
        let inp = with_roles(agents.clone(), &[("other", "*", "cpus:0")]);
        let mut al = Allocator::new(1);
        let offers = al.allocate(&inp, Instant::now());
        assert_eq!(offers.len(), 1);
        assert!(offers[0].reserved.is_empty(), "{offers:?}");
        assert_eq!(offers[0].resources.to_string(), "cpus:1;mem:1000;disk:0");
        // A framework of ops/db (below ops) gets the reservation; the other
        // role, behind it by share, the unreserved part.
        let inp = with_roles(
            agents,
            &[("other", "*", "cpus:0"), ("db", "ops/db", "cpus:0")],
        );
        let mut al = Allocator::new(1);
        let offers = al.allocate(&inp, Instant::now());
        let db = offers.iter().find(|o| o.framework_id == fw("db")).unwrap();
        assert_eq!(db.reserved["ops"].to_string(), "cpus:2;mem:500;disk:0");
        let other = offers
            .iter()
            .find(|o| o.framework_id == fw("other"))
            .unwrap();
        assert!(other.reserved.is_empty());
        assert_eq!(other.resources.to_string(), "cpus:1;mem:1000;disk:0");
    }

    #[test]
    fn reserve_create_and_launch_apply_in_order_to_the_offers() {
        let inp = with_roles(
            vec![agent("a1", "cpus:4;mem:4000;disk:1000")],
            &[("f", "db", "cpus:0")],
        );
        let mut al = Allocator::new(1);
        let t0 = Instant::now();
        let o = al.allocate(&inp, t0);
        let volume = Volume {
            id: "v1".into(),
            role: "db".into(),
            disk: wasmos_core::Scalar::whole(100),
            container_path: "data".into(),
            principal: None,
            uuid: String::new(),
        };
        let mut t = task("t1", "cpus:1;mem:100");
        t.reserved
            .insert("db".into(), "cpus:1;mem:100".parse().unwrap());
        t.volumes.push(wasmos_core::VolumeMount {
            id: "v1".into(),
            role: "db".into(),
            container_path: "data".into(),
            read_only: false,
            uuid: String::new(),
            create_mb: None,
        });
        let reserve = OfferOp::Reserve {
            role: "db".into(),
            resources: "cpus:1;mem:100;disk:100".parse().unwrap(),
        };
        let got = al
            .accept(
                &fw("f"),
                "db",
                &[o[0].id.clone()],
                vec![
                    // Not its role: dropped.
                    OfferOp::Reserve {
                        role: "web".into(),
                        resources: "cpus:1".parse().unwrap(),
                    },
                    reserve.clone(),
                    OfferOp::Create(vec![volume.clone()]),
                    OfferOp::Launch(vec![t.clone()]),
                ],
                None,
                t0,
                |_| false,
                &BTreeMap::new(),
            )
            .unwrap();
        assert_eq!(got.dropped.len(), 1, "{:?}", got.dropped);
        assert!(got.refused.is_empty(), "{:?}", got.refused);
        assert_eq!(got.ops.len(), 3);
        // Without the RESERVE the task's reserved part does not fit.
        let o = {
            al.release(got.hold, &[t.task_id.clone()]);
            al.revive(&fw("f"));
            al.allocate(&inp, t0)
        };
        let mut t2 = t.clone();
        t2.task_id = TaskId::new("t2").unwrap();
        let got = al
            .accept(
                &fw("f"),
                "db",
                &[o[0].id.clone()],
                vec![OfferOp::Launch(vec![t2])],
                None,
                t0,
                |_| false,
                &BTreeMap::new(),
            )
            .unwrap();
        assert_eq!(got.refused.len(), 1);
        assert!(
            got.refused[0].1.contains("reserved for db"),
            "{:?}",
            got.refused
        );
    }

    #[test]
    fn a_plugins_task_takes_its_roles_reservation_first_then_unreserved() {
        let agents = vec![reserved_agent(
            "a1",
            "cpus:1;mem:1000",
            "prod",
            "cpus:0.5;mem:100",
        )];
        let inp = with_roles(agents, &[("m", "prod", "cpus:0")]);
        let mut al = Allocator::new(1);
        let t0 = Instant::now();
        let o = al.allocate(&inp, t0);
        let got = al
            .accept(
                &fw("m"),
                "prod",
                &[o[0].id.clone()],
                vec![OfferOp::LaunchReservedFirst(vec![task(
                    "t",
                    "cpus:1;mem:50",
                )])],
                None,
                t0,
                |_| false,
                &BTreeMap::new(),
            )
            .unwrap();
        let t = &launched(&got)[0];
        assert_eq!(t.reserved["prod"].to_string(), "cpus:0.5;mem:50;disk:0");
        assert!(got.refused.is_empty(), "{:?}", got.refused);
    }

    #[test]
    fn static_reservations_are_offered_as_static_and_cannot_be_unreserved() {
        let mut a1 = reserved_agent("a1", "cpus:1;mem:1000", "ops", "cpus:2;mem:100");
        a1.free
            .static_reserved
            .insert("ops".into(), "cpus:1".parse().unwrap());
        let inp = with_roles(vec![a1], &[("f", "ops", "cpus:0")]);
        let mut al = Allocator::new(1);
        let t0 = Instant::now();
        let o = al.allocate(&inp, t0);
        assert_eq!(
            o[0].static_reserved["ops"].to_string(),
            "cpus:1;mem:0;disk:0"
        );
        let unreserve = |r: &str| OfferOp::Unreserve {
            role: "ops".into(),
            resources: r.parse().unwrap(),
        };
        // 1 cpu and the memory are dynamic; the second cpu is static.
        let got = al
            .accept(
                &fw("f"),
                "ops",
                &[o[0].id.clone()],
                vec![unreserve("cpus:2")],
                None,
                t0,
                |_| false,
                &BTreeMap::new(),
            )
            .unwrap();
        assert_eq!(got.dropped.len(), 1, "{got:?}");
        assert!(
            got.dropped[0].contains("dynamically reserved"),
            "{:?}",
            got.dropped
        );
        al.release(got.hold, &[]);
        al.revive(&fw("f"));
        let o = al.allocate(&inp, t0);
        let got = al
            .accept(
                &fw("f"),
                "ops",
                &[o[0].id.clone()],
                vec![unreserve("cpus:1;mem:100")],
                None,
                t0,
                |_| false,
                &BTreeMap::new(),
            )
            .unwrap();
        assert!(got.dropped.is_empty(), "{:?}", got.dropped);
    }
}
