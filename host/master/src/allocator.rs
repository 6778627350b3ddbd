//! The allocator: turns free resources into offers, fairly.
//!
//! Dominant resource fairness (DRF): each cycle, every agent's free
//! resources go, as one offer, to the eligible framework with the smallest
//! dominant share (its largest share of any one resource across the
//! cluster, counting what it runs, holds in offers, and is launching).
//! Eligible: not suppressed, and not refusing that agent (a decline's
//! filter). This is Mesos' hierarchical DRF with one role.
//!
//! The allocator lives only in the leader's memory: offers are void when a
//! leader changes. It does no I/O; the leader feeds it the state and sends
//! what it returns.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::time::{Duration, Instant};

use wasmos_core::{AgentId, FrameworkId, Offer, OfferId, Resources, TaskId, TaskSpec};

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
    pub total: Resources,
    pub attributes: BTreeMap<String, String>,
}

/// What one allocation cycle works from.
#[derive(Debug, Clone, Default)]
pub struct Inputs {
    /// Agents that are registered, active and connected.
    pub agents: Vec<AgentSlot>,
    /// Resources of live tasks, per agent.
    pub used_by_agent: BTreeMap<AgentId, Resources>,
    /// Resources of live tasks, per framework.
    pub used_by_framework: BTreeMap<FrameworkId, Resources>,
    /// Frameworks ready to receive offers.
    pub frameworks: Vec<FrameworkId>,
}

/// A launch that passed the offer checks.
#[derive(Debug, Clone, PartialEq)]
pub struct AcceptedLaunch {
    pub agent_id: AgentId,
    pub tasks: Vec<TaskSpec>,
    /// Tasks refused, with why; reported to the framework as TASK_ERROR.
    pub refused: Vec<(TaskId, String)>,
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

/// Offers, filters and reservations of the current leader.
#[derive(Debug)]
pub struct Allocator {
    term: u64,
    next_offer: u64,
    offers: HashMap<OfferId, HeldOffer>,
    /// (framework, agent) → refuse until.
    filters: HashMap<(FrameworkId, AgentId), Instant>,
    suppressed: HashSet<FrameworkId>,
    /// Accepted tasks not yet in the state (between accept and commit).
    reserved: HashMap<TaskId, (AgentId, FrameworkId, Resources)>,
}

impl Allocator {
    pub fn new(term: u64) -> Self {
        Allocator {
            term,
            next_offer: 0,
            offers: HashMap::new(),
            filters: HashMap::new(),
            suppressed: HashSet::new(),
            reserved: HashMap::new(),
        }
    }

    /// Makes new offers from free resources. Returns them for sending.
    pub fn allocate(&mut self, input: &Inputs, now: Instant) -> Vec<Offer> {
        self.filters.retain(|_, until| *until > now);
        let total = input
            .agents
            .iter()
            .fold(Resources::default(), |acc, a| acc.add(&a.total));
        // Each framework's allocation: running + offered + reserved.
        let mut allocation: BTreeMap<FrameworkId, Resources> = input
            .frameworks
            .iter()
            .map(|f| {
                let used = input.used_by_framework.get(f).cloned().unwrap_or_default();
                (f.clone(), used)
            })
            .collect();
        for h in self.offers.values() {
            if let Some(a) = allocation.get_mut(&h.offer.framework_id) {
                *a = a.add(&h.offer.resources);
            }
        }
        for (_, fw, r) in self.reserved.values() {
            if let Some(a) = allocation.get_mut(fw) {
                *a = a.add(r);
            }
        }

        let mut made = Vec::new();
        for agent in &input.agents {
            let free = self.free_on(agent, input);
            if !worth_offering(&free) {
                continue;
            }
            let pick = allocation
                .iter()
                .filter(|(f, _)| !self.suppressed.contains(*f))
                .filter(|(f, _)| !self.filters.contains_key(&((*f).clone(), agent.id.clone())))
                .map(|(f, a)| (a.dominant_share(&total), f.clone()))
                .min_by(|(sa, fa), (sb, fb)| sa.total_cmp(sb).then_with(|| fa.cmp(fb)));
            let Some((_, framework)) = pick else { continue };
            self.next_offer += 1;
            let offer = Offer {
                // Ids made of a number and a term always validate.
                id: OfferId::new(format!("O{}-{}", self.term, self.next_offer))
                    .unwrap_or_else(|_| unreachable!("offer ids are well formed")),
                framework_id: framework.clone(),
                agent_id: agent.id.clone(),
                hostname: agent.hostname.clone(),
                resources: free,
                attributes: agent.attributes.clone(),
            };
            if let Some(a) = allocation.get_mut(&framework) {
                *a = a.add(&offer.resources);
            }
            self.offers.insert(
                offer.id.clone(),
                HeldOffer {
                    offer: offer.clone(),
                    made: now,
                },
            );
            made.push(offer);
        }
        made
    }

    /// Free resources on `agent`: total minus running, offered, reserved.
    fn free_on(&self, agent: &AgentSlot, input: &Inputs) -> Resources {
        let mut free = agent.total.clone();
        if let Some(used) = input.used_by_agent.get(&agent.id) {
            free = free.saturating_sub(used);
        }
        for h in self
            .offers
            .values()
            .filter(|h| h.offer.agent_id == agent.id)
        {
            free = free.saturating_sub(&h.offer.resources);
        }
        for (a, _, r) in self.reserved.values() {
            if a == &agent.id {
                free = free.saturating_sub(r);
            }
        }
        free
    }

    /// Checks a launch against the framework's offers, consumes the offers,
    /// reserves the accepted tasks' resources until [`Self::release`], and
    /// filters the unused rest for `refuse`. `exists` says whether a task id
    /// is already taken in the cluster state.
    pub fn accept(
        &mut self,
        framework: &FrameworkId,
        offer_ids: &[OfferId],
        tasks: Vec<TaskSpec>,
        refuse: Option<Duration>,
        now: Instant,
        exists: impl Fn(&TaskId) -> bool,
    ) -> Result<AcceptedLaunch, AcceptError> {
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
        let mut pool = Resources::default();
        for id in unique {
            if let Some(h) = self.offers.remove(id) {
                pool = pool.add(&h.offer.resources);
            }
        }
        let mut accepted = Vec::new();
        let mut refused = Vec::new();
        let mut seen = HashSet::new();
        for task in tasks {
            let id = task.task_id.clone();
            if !seen.insert(id.clone()) || exists(&id) || self.reserved.contains_key(&id) {
                refused.push((id, "a task with this id already exists".into()));
                continue;
            }
            if let Err(e) = task.validate() {
                refused.push((id, e.to_string()));
                continue;
            }
            match pool.checked_sub(&task.resources) {
                Some(left) => {
                    pool = left;
                    self.reserved.insert(
                        id,
                        (agent_id.clone(), framework.clone(), task.resources.clone()),
                    );
                    accepted.push(task);
                }
                None => refused.push((
                    id,
                    format!(
                        "task needs {} but the offers have {} left",
                        task.resources, pool
                    ),
                )),
            }
        }
        self.filters.insert(
            (framework.clone(), agent_id.clone()),
            now + refuse.unwrap_or(DEFAULT_REFUSE),
        );
        Ok(AcceptedLaunch {
            agent_id,
            tasks: accepted,
            refused,
        })
    }

    /// Ends reservations once the tasks are in the state (or failed to be).
    pub fn release(&mut self, tasks: &[TaskId]) {
        for t in tasks {
            self.reserved.remove(t);
        }
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
                    (framework.clone(), h.offer.agent_id),
                    now + refuse.unwrap_or(DEFAULT_REFUSE),
                );
            }
        }
    }

    /// Clears the framework's filters and resumes its offers.
    pub fn revive(&mut self, framework: &FrameworkId) {
        self.suppressed.remove(framework);
        self.filters.retain(|(f, _), _| f != framework);
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
        self.filters.retain(|(f, _), _| f != framework);
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

fn worth_offering(r: &Resources) -> bool {
    r.cpus.as_f64() >= MIN_OFFER_CPUS || r.mem.as_f64() >= MIN_OFFER_MEM
}

#[cfg(test)]
mod tests {
    use super::*;
    use wasmos_core::CommandSpec;

    fn fw(s: &str) -> FrameworkId {
        FrameworkId::new(s).unwrap()
    }

    fn agent(id: &str, res: &str) -> AgentSlot {
        AgentSlot {
            id: AgentId::new(id).unwrap(),
            hostname: id.into(),
            total: res.parse().unwrap(),
            attributes: BTreeMap::new(),
        }
    }

    fn task(id: &str, res: &str) -> TaskSpec {
        TaskSpec {
            task_id: TaskId::new(id).unwrap(),
            name: id.into(),
            resources: res.parse().unwrap(),
            command: CommandSpec {
                shell: true,
                value: "true".into(),
                ..Default::default()
            },
            labels: BTreeMap::new(),
            kill_grace_period_ms: None,
            health_check: None,
            container: None,
            fetch: Vec::new(),
            readiness_check: None,
        }
    }

    fn inputs(agents: Vec<AgentSlot>, frameworks: &[&str]) -> Inputs {
        Inputs {
            agents,
            frameworks: frameworks.iter().map(|f| fw(f)).collect(),
            ..Default::default()
        }
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
        inp.used_by_agent.insert(
            AgentId::new("a1").unwrap(),
            "cpus:2;mem:100".parse().unwrap(),
        );
        let offers = a.allocate(&inp, Instant::now());
        assert_eq!(offers.len(), 2);
        // `small` has share 0 and gets the first agent; after that its share
        // (2 of 8 cpus) ties with `big`'s (2 of 8): the tie goes by name.
        assert_eq!(offers[0].framework_id, fw("small"));
        assert_eq!(offers[0].resources.to_string(), "cpus:2;mem:3996;disk:0");
        assert_eq!(offers[1].framework_id, fw("big"));
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
    fn a_launch_uses_offered_resources_once_and_reserves_them_until_released() {
        let mut a = Allocator::new(1);
        let inp = inputs(vec![agent("a1", "cpus:1;mem:1024")], &["f"]);
        let t0 = Instant::now();
        let o = a.allocate(&inp, t0);
        let got = a
            .accept(
                &fw("f"),
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
        assert_eq!(got.tasks.len(), 2);
        assert_eq!(got.refused.len(), 1);
        assert!(
            got.refused[0].1.contains("offers have"),
            "{:?}",
            got.refused
        );
        // The offer is used up: launching on it again is refused.
        let again = a.accept(&fw("f"), &[o[0].id.clone()], vec![], None, t0, |_| false);
        assert!(matches!(again, Err(AcceptError::UnknownOffer(_))));
        // Reserved resources are not re-offered before the commit...
        assert!(a.allocate(&inp, t0 + Duration::from_secs(1)).is_empty());
        // ...and after the release the state accounts for them.
        a.release(&[TaskId::new("t1").unwrap(), TaskId::new("t2").unwrap()]);
        let mut after = inp.clone();
        after.used_by_agent.insert(
            AgentId::new("a1").unwrap(),
            "cpus:1;mem:1024".parse().unwrap(),
        );
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
        let r = a.accept(&fw("f"), &[og[0].id.clone()], vec![], None, t0, |_| false);
        assert!(matches!(r, Err(AcceptError::UnknownOffer(_))));
        let r = a.accept(&fw("f"), &[], vec![], None, t0, |_| false);
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
        let got = a
            .accept(
                &fw("f"),
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
        assert_eq!(got.tasks.len(), 1);
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
}
