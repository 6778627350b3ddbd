//! Fitting tasks into offers: the one packing routine every framework uses.
//!
//! A framework with tasks waiting gets a batch of offers. A [`Packer`] keeps
//! what is left of each offer while tasks are placed on it, one at a time:
//! [`Packer::place`] finds the offers with room for the task's
//! [`Need`] (cpus, mem, disk, GPUs, fixed and any ports, and whose resources
//! it accepts: `Need.roles`, reservations first), asks the placement
//! service about its constraints when it has any (counting the tasks placed
//! earlier in the same batch), takes the resources of the best offer and
//! says which host ports the task got. The framework builds the task's spec
//! from that and hands it back with [`Packer::add`]; [`Packer::finish`]
//! groups the specs by offer and lists the offers nothing was placed on.
//!
//! When a task fits nowhere, [`NoFit`] says why, per offer (Marathon's
//! `InsufficientCpus`, ... names, for `/v2/queue`) and in one sentence for
//! people ("no offer has 2 cpus free; the most is 1.8").

use std::fmt;

use crate::framework::bindings::wasmos::plugin::placement_service::{
    self, Candidate, Request, Rule, Verdict,
};
use crate::framework::bindings::wasmos::plugin::types::{Offer, PortRange, Resources, TaskSpec};

/// Floating-point slack when comparing resources.
const EPSILON: f64 = 1e-9;

/// What one task needs from an offer.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Need {
    pub cpus: f64,
    pub mem: f64,
    pub disk: f64,
    pub gpus: u32,
    /// One entry per port the task gets, in order (`PORT0` first): a fixed
    /// host port, or None for any free one.
    pub ports: Vec<Option<u16>>,
    /// Whose resources it may take (the task spec's `accepted-roles`): `*`
    /// for unreserved, a role for its reservations. Empty: any.
    pub roles: Vec<String>,
    /// Persistent volumes (by id) the task uses again: only an offer that
    /// holds them all fits.
    pub volumes: Vec<String>,
    /// Unreserved disk the task's new persistent volumes take (the master
    /// reserves it for the framework's role), besides `disk`.
    pub new_volumes_mb: f64,
}

impl Need {
    /// `n` ports, any of them.
    pub fn any_ports(n: usize) -> Vec<Option<u16>> {
        vec![None; n]
    }

    /// The scalar resources, as the placement service takes them.
    pub fn resources(&self) -> Resources {
        Resources {
            cpus: self.cpus,
            mem: self.mem,
            disk: self.disk,
            gpus: self.gpus,
            ports: Vec::new(),
        }
    }
}

/// How a task with constraints is placed.
#[derive(Debug, Clone, Default)]
pub struct Placement {
    /// The group constraints count tasks of (an app id, a job name).
    pub group: String,
    pub rules: Vec<Rule>,
    /// Where the group's live tasks run now: (agent id, how many). Tasks
    /// placed earlier in the same batch are added by the packer.
    pub placed: Vec<(String, u32)>,
}

/// What an offer lacked for a task; the first missing resource is named.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Shortfall {
    Cpus,
    Mem,
    Disk,
    Gpus,
    Ports,
    /// The resources were there but a placement rule refused the agent.
    Constraints,
    /// The offer already holds as many tasks as the packer places on one.
    Full,
    /// The offer lacks a persistent volume the task uses again.
    Volumes,
}

impl Shortfall {
    /// Marathon's name for it (`/v2/queue`'s `rejectSummary...`).
    pub fn marathon_name(self) -> &'static str {
        match self {
            Shortfall::Cpus => "InsufficientCpus",
            Shortfall::Mem => "InsufficientMemory",
            Shortfall::Disk => "InsufficientDisk",
            Shortfall::Gpus => "InsufficientGpus",
            Shortfall::Ports => "InsufficientPorts",
            Shortfall::Constraints => "UnfulfilledConstraint",
            Shortfall::Full => "MaxInstancesPerOffer",
            Shortfall::Volumes => "NoCorrespondingReservationFound",
        }
    }
}

/// Why a task fits none of the offers.
#[derive(Debug, Clone, PartialEq)]
pub struct NoFit {
    /// One entry per offer looked at, in offer order.
    pub shortfalls: Vec<Shortfall>,
    /// The placement plugins' reason, when constraints refused every offer
    /// that had room (or the placement service failed).
    pub constraint: Option<String>,
    need: Box<Need>,
    /// The most of each scalar any offer still had: (cpus, mem, disk, gpus).
    most: (f64, f64, f64, u32),
}

impl NoFit {
    /// The shortfall most offers had (the first in [`Shortfall`] order on
    /// a tie), if any offer was looked at.
    pub fn main_shortfall(&self) -> Option<Shortfall> {
        let mut counts = [0usize; 8];
        for s in &self.shortfalls {
            counts[*s as usize] += 1;
        }
        let all = [
            Shortfall::Cpus,
            Shortfall::Mem,
            Shortfall::Disk,
            Shortfall::Gpus,
            Shortfall::Ports,
            Shortfall::Constraints,
            Shortfall::Full,
            Shortfall::Volumes,
        ];
        all.into_iter()
            .filter(|s| counts[*s as usize] > 0)
            .max_by(|a, b| counts[*a as usize].cmp(&counts[*b as usize]).then(b.cmp(a)))
    }
}

impl fmt::Display for NoFit {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let (cpus, mem, disk, gpus) = self.most;
        match self.main_shortfall() {
            None => write!(f, "no offers yet"),
            Some(Shortfall::Cpus) => write!(
                f,
                "no offer has {} cpus free (the most is {})",
                self.need.cpus,
                round(cpus)
            ),
            Some(Shortfall::Mem) => write!(
                f,
                "no offer has {} MB of memory free (the most is {})",
                self.need.mem,
                round(mem)
            ),
            Some(Shortfall::Disk) => write!(
                f,
                "no offer has {} MB of disk free (the most is {})",
                self.need.disk,
                round(disk)
            ),
            Some(Shortfall::Gpus) => write!(
                f,
                "no offer has {} GPUs free (the most is {gpus})",
                self.need.gpus
            ),
            Some(Shortfall::Ports) => {
                let fixed: Vec<String> = self
                    .need
                    .ports
                    .iter()
                    .flatten()
                    .map(|p| p.to_string())
                    .collect();
                if fixed.is_empty() {
                    write!(f, "no offer has {} free ports", self.need.ports.len())
                } else {
                    write!(f, "no offer has port(s) {} free", fixed.join(", "))
                }
            }
            Some(Shortfall::Constraints) => match &self.constraint {
                Some(why) => write!(f, "{why}"),
                None => write!(f, "constraints not met"),
            },
            Some(Shortfall::Full) => write!(f, "every offer of this round is full"),
            Some(Shortfall::Volumes) => write!(
                f,
                "no offer holds the persistent volume(s) {} (their agent has not offered them)",
                self.need.volumes.join(", ")
            ),
        }
    }
}

fn round(x: f64) -> f64 {
    (x * 1000.0).round() / 1000.0
}

/// Where a task was placed: the offer's index and the host ports it got,
/// in the order of [`Need::ports`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Fit {
    pub offer: usize,
    pub ports: Vec<u16>,
}

impl Fit {
    /// The ports as ranges for a [`TaskSpec`], in the task's order.
    pub fn port_ranges(&self) -> Vec<PortRange> {
        self.ports
            .iter()
            .map(|p| PortRange { begin: *p, end: *p })
            .collect()
    }
}

/// What is left of one offer.
#[derive(Debug, Clone)]
struct Left {
    offer_id: String,
    agent_id: String,
    hostname: String,
    cpus: f64,
    mem: f64,
    disk: f64,
    gpus: u32,
    ports: Vec<PortRange>,
    /// The reserved part of the scalars, by role: [cpus, mem, disk] and gpus.
    reserved: Vec<(String, [f64; 3], u32)>,
    /// Ids of the persistent volumes offered and not yet taken.
    volumes: Vec<String>,
    specs: Vec<TaskSpec>,
    /// Tasks placed on it so far.
    placed: usize,
}

impl Left {
    /// The scalars a task accepting `roles` may take here: [cpus, mem,
    /// disk] and gpus.
    fn available(&self, roles: &[String]) -> ([f64; 3], u32) {
        if roles.is_empty() {
            return ([self.cpus, self.mem, self.disk], self.gpus);
        }
        let mut out = ([0.0; 3], 0);
        if roles.iter().any(|r| r == "*") {
            out = ([self.cpus, self.mem, self.disk], self.gpus);
            for (_, s, g) in &self.reserved {
                for (o, r) in out.0.iter_mut().zip(s) {
                    *o -= r;
                }
                out.1 = out.1.saturating_sub(*g);
            }
        }
        for (_, s, g) in self.reserved.iter().filter(|(r, _, _)| roles.contains(r)) {
            for (o, r) in out.0.iter_mut().zip(s) {
                *o += r;
            }
            out.1 += g;
        }
        out
    }

    /// Takes a task's scalars: from the reservations it accepts first (as
    /// the master assigns them), the rest unreserved.
    fn take(&mut self, need: &Need) {
        let mut want = [need.cpus, need.mem, need.disk];
        let mut gpus = need.gpus;
        for (role, s, g) in self.reserved.iter_mut() {
            if !need.roles.is_empty() && !need.roles.contains(role) {
                continue;
            }
            for (w, r) in want.iter_mut().zip(s.iter_mut()) {
                let t = w.min(*r).max(0.0);
                *r -= t;
                *w -= t;
            }
            let t = gpus.min(*g);
            *g -= t;
            gpus -= t;
        }
        self.cpus -= need.cpus;
        self.mem -= need.mem;
        self.disk -= need.disk + need.new_volumes_mb;
        self.gpus -= need.gpus;
        self.volumes.retain(|v| !need.volumes.contains(v));
    }

    /// Unreserved disk left (what new volumes are made of).
    fn unreserved_disk(&self) -> f64 {
        self.disk - self.reserved.iter().map(|(_, s, _)| s[2]).sum::<f64>()
    }
}

/// Places tasks on a batch of offers, one at a time.
#[derive(Debug)]
pub struct Packer {
    left: Vec<Left>,
    /// At most this many tasks per offer (spreads a batch over agents).
    per_offer: usize,
    /// Tasks placed in this batch: (group, agent id).
    placed_now: Vec<(String, String)>,
}

/// The tasks to launch on one offer.
#[derive(Debug, Clone)]
pub struct Launch {
    pub offer_id: String,
    pub agent_id: String,
    pub hostname: String,
    pub specs: Vec<TaskSpec>,
}

impl Launch {
    /// Asks the master to launch the tasks on the offer (`driver.launch`);
    /// what is left of the offer is declined for the default 5 s.
    pub fn send(&self) -> Result<(), String> {
        self.send_refusing(None)
    }

    /// [`Launch::send`], declining what is left for `refuse_seconds`.
    pub fn send_refusing(&self, refuse_seconds: Option<f64>) -> Result<(), String> {
        crate::framework::driver::launch(
            std::slice::from_ref(&self.offer_id),
            &self.specs,
            refuse_seconds,
        )
    }
}

/// The result of a batch: launches per offer and the offers left unused.
#[derive(Debug, Clone, Default)]
pub struct Packed {
    pub launches: Vec<Launch>,
    pub unused: Vec<String>,
}

impl Packer {
    pub fn new(offers: &[Offer]) -> Packer {
        Packer {
            left: offers
                .iter()
                .map(|o| Left {
                    offer_id: o.id.clone(),
                    agent_id: o.agent_id.clone(),
                    hostname: o.hostname.clone(),
                    cpus: o.resources.cpus,
                    mem: o.resources.mem,
                    disk: o.resources.disk,
                    gpus: o.resources.gpus,
                    ports: o.resources.ports.clone(),
                    reserved: o
                        .reserved
                        .iter()
                        .map(|r| {
                            let x = &r.resources;
                            (r.role.clone(), [x.cpus, x.mem, x.disk], x.gpus)
                        })
                        .collect(),
                    volumes: o.volumes.iter().map(|v| v.id.clone()).collect(),
                    specs: Vec::new(),
                    placed: 0,
                })
                .collect(),
            per_offer: usize::MAX,
            placed_now: Vec::new(),
        }
    }

    /// Places at most `n` tasks on each offer, so that a large batch is
    /// spread over agents instead of filling the first one.
    pub fn limit_per_offer(mut self, n: usize) -> Packer {
        self.per_offer = n.max(1);
        self
    }

    /// How many offers the batch has.
    pub fn len(&self) -> usize {
        self.left.len()
    }

    pub fn is_empty(&self) -> bool {
        self.left.is_empty()
    }

    /// The agent of offer `i`.
    pub fn agent_id(&self, i: usize) -> &str {
        self.left.get(i).map_or("", |l| l.agent_id.as_str())
    }

    /// The hostname of offer `i`'s agent.
    pub fn hostname(&self, i: usize) -> &str {
        self.left.get(i).map_or("", |l| l.hostname.as_str())
    }

    /// Finds the best offer for a task and takes what it needs from it.
    /// Without `placement` (or with no rules) the first offer with room
    /// wins; with rules, the placement plugins filter and score the offers
    /// with room.
    pub fn place(&mut self, need: &Need, placement: Option<&Placement>) -> Result<Fit, NoFit> {
        self.place_with(need, placement, placement_service::evaluate)
    }

    /// [`Packer::place`] with the placement service given (tests).
    pub fn place_with(
        &mut self,
        need: &Need,
        placement: Option<&Placement>,
        evaluate: impl FnOnce(&Request, &[Candidate]) -> Result<Vec<Verdict>, String>,
    ) -> Result<Fit, NoFit> {
        let mut shortfalls = vec![None; self.left.len()];
        let mut fitting = Vec::new();
        for (i, l) in self.left.iter().enumerate() {
            let ([cpus, mem, disk], gpus) = l.available(&need.roles);
            let short = if l.placed >= self.per_offer {
                Some(Shortfall::Full)
            } else if need.cpus > cpus + EPSILON {
                Some(Shortfall::Cpus)
            } else if need.mem > mem + EPSILON {
                Some(Shortfall::Mem)
            } else if need.disk > disk + EPSILON {
                Some(Shortfall::Disk)
            } else if need.gpus > gpus {
                Some(Shortfall::Gpus)
            } else if take_ports(&mut l.ports.clone(), &need.ports).is_none() {
                Some(Shortfall::Ports)
            } else if need.volumes.iter().any(|v| !l.volumes.contains(v)) {
                Some(Shortfall::Volumes)
            } else if need.new_volumes_mb > 0.0
                && need.new_volumes_mb + need.disk > l.unreserved_disk() + EPSILON
            {
                Some(Shortfall::Disk)
            } else {
                None
            };
            match short {
                Some(s) => shortfalls[i] = Some(s),
                None => fitting.push(i),
            }
        }
        let mut constraint = None;
        let chosen = match placement.filter(|p| !p.rules.is_empty()) {
            _ if fitting.is_empty() => None,
            None => fitting.first().copied(),
            Some(p) => {
                let candidates: Vec<Candidate> = fitting
                    .iter()
                    .map(|&i| Candidate {
                        agent_id: self.left[i].agent_id.clone(),
                        cpus: self.left[i].cpus,
                        mem: self.left[i].mem,
                        disk: self.left[i].disk,
                    })
                    .collect();
                let request = Request {
                    group: p.group.clone(),
                    rules: p.rules.clone(),
                    resources: need.resources(),
                    placed: self.placed_with_batch(p),
                };
                match evaluate(&request, &candidates) {
                    Ok(verdicts) if verdicts.len() == fitting.len() => {
                        // The best score; the first offer among equals.
                        let best = fitting
                            .iter()
                            .zip(&verdicts)
                            .filter(|(_, v)| v.fits)
                            .max_by(|(i, a), (j, b)| a.score.total_cmp(&b.score).then(j.cmp(i)))
                            .map(|(i, _)| *i);
                        if best.is_none() {
                            constraint = verdicts.iter().find_map(|v| v.reason.clone());
                        }
                        best
                    }
                    Ok(verdicts) => {
                        constraint = Some(format!(
                            "the placement service answered {} verdicts for {} candidates",
                            verdicts.len(),
                            fitting.len()
                        ));
                        None
                    }
                    Err(e) => {
                        constraint = Some(format!("placement failed: {e}"));
                        None
                    }
                }
            }
        };
        let Some(i) = chosen else {
            for i in fitting {
                shortfalls[i] = Some(Shortfall::Constraints);
            }
            let most = self.left.iter().fold((0.0, 0.0, 0.0, 0), |m, l| {
                (
                    f64::max(m.0, l.cpus),
                    f64::max(m.1, l.mem),
                    f64::max(m.2, l.disk),
                    m.3.max(l.gpus),
                )
            });
            return Err(NoFit {
                shortfalls: shortfalls.into_iter().flatten().collect(),
                constraint,
                need: Box::new(need.clone()),
                most,
            });
        };
        let l = &mut self.left[i];
        let ports = take_ports(&mut l.ports, &need.ports).unwrap_or_default();
        l.take(need);
        l.placed += 1;
        if let Some(p) = placement {
            self.placed_now.push((p.group.clone(), l.agent_id.clone()));
        }
        Ok(Fit { offer: i, ports })
    }

    /// The group's placements, with those made in this batch.
    fn placed_with_batch(&self, p: &Placement) -> Vec<(String, u32)> {
        let mut placed = p.placed.clone();
        for (group, agent) in &self.placed_now {
            if *group != p.group {
                continue;
            }
            match placed.iter_mut().find(|(a, _)| a == agent) {
                Some((_, n)) => *n += 1,
                None => placed.push((agent.clone(), 1)),
            }
        }
        placed
    }

    /// Records the spec of a task placed on offer `offer`.
    pub fn add(&mut self, offer: usize, spec: TaskSpec) {
        if let Some(l) = self.left.get_mut(offer) {
            l.specs.push(spec);
        }
    }

    /// The launches, one per offer with tasks, and the unused offers.
    pub fn finish(self) -> Packed {
        let mut packed = Packed::default();
        for l in self.left {
            if l.specs.is_empty() {
                packed.unused.push(l.offer_id);
            } else {
                packed.launches.push(Launch {
                    offer_id: l.offer_id,
                    agent_id: l.agent_id,
                    hostname: l.hostname,
                    specs: l.specs,
                });
            }
        }
        packed
    }
}

/// Takes the ports a task needs from an offer's free ranges: the fixed
/// ones first (None if any is not free), then any, lowest first.
pub fn take_ports(free: &mut Vec<PortRange>, wants: &[Option<u16>]) -> Option<Vec<u16>> {
    let mut scratch = free.clone();
    let mut out = vec![0u16; wants.len()];
    for (i, w) in wants.iter().enumerate() {
        if let Some(p) = w {
            let idx = scratch.iter().position(|r| r.begin <= *p && *p <= r.end)?;
            let r = scratch.remove(idx);
            if r.begin < *p {
                scratch.push(PortRange {
                    begin: r.begin,
                    end: p - 1,
                });
            }
            if *p < r.end {
                scratch.push(PortRange {
                    begin: p + 1,
                    end: r.end,
                });
            }
            out[i] = *p;
        }
    }
    scratch.sort_by_key(|r| r.begin);
    for (i, w) in wants.iter().enumerate() {
        if w.is_none() {
            let r = scratch.first_mut()?;
            out[i] = r.begin;
            if r.begin == r.end {
                scratch.remove(0);
            } else {
                r.begin += 1;
            }
        }
    }
    *free = scratch;
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::framework::bindings::wasmos::plugin::placement_types::Constraint;
    use crate::framework::bindings::wasmos::plugin::types::OfferedVolume;

    fn offer(id: &str, cpus: f64, mem: f64, ports: &[(u16, u16)]) -> Offer {
        Offer {
            id: id.into(),
            agent_id: format!("agent-{id}"),
            hostname: format!("host-{id}"),
            resources: Resources {
                cpus,
                mem,
                disk: 100.0,
                gpus: 0,
                ports: ports
                    .iter()
                    .map(|(b, e)| PortRange { begin: *b, end: *e })
                    .collect(),
            },
            attributes: Vec::new(),
            reserved: Vec::new(),
            volumes: Vec::new(),
        }
    }

    fn need(cpus: f64, mem: f64, ports: usize) -> Need {
        Need {
            cpus,
            mem,
            ports: Need::any_ports(ports),
            ..Need::default()
        }
    }

    fn spec(id: &str) -> TaskSpec {
        TaskSpec {
            task_id: id.into(),
            name: id.into(),
            resources: need(0.0, 0.0, 0).resources(),
            command: crate::framework::Command {
                shell: true,
                value: "true".into(),
                arguments: Vec::new(),
                environment: Vec::new(),
                user: None,
            },
            labels: Vec::new(),
            kill_grace_period_ms: None,
            health_check: None,
            container: None,
            fetch: Vec::new(),
            readiness_check: None,
            accepted_roles: Vec::new(),
            volumes: Vec::new(),
            discovery: Vec::new(),
        }
    }

    fn no_placement(_: &Request, _: &[Candidate]) -> Result<Vec<Verdict>, String> {
        panic!("tasks without rules never ask the placement service")
    }

    #[test]
    fn a_task_takes_only_what_its_accepted_roles_allow_reserved_first() {
        // 1 cpu offered, 0.75 of it reserved for prod.
        let mut o = offer("a", 1.0, 100.0, &[]);
        o.reserved = vec![
            crate::framework::bindings::wasmos::plugin::types::RoleResources {
                role: "prod".into(),
                resources: Resources {
                    cpus: 0.75,
                    mem: 50.0,
                    disk: 0.0,
                    gpus: 0,
                    ports: Vec::new(),
                },
            },
        ];
        let roles = |r: &[&str], cpus: f64| Need {
            roles: r.iter().map(|s| s.to_string()).collect(),
            ..need(cpus, 10.0, 0)
        };
        let mut p = Packer::new(std::slice::from_ref(&o));
        // Unreserved only: 0.25 is there, 0.5 is not.
        assert_eq!(
            p.place_with(&roles(&["*"], 0.5), None, no_placement)
                .unwrap_err()
                .shortfalls,
            vec![Shortfall::Cpus]
        );
        // prod's reservation first: 0.5 of its 0.75.
        p.place_with(&roles(&["prod", "*"], 0.5), None, no_placement)
            .unwrap();
        // Left: 0.25 reserved, 0.25 unreserved.
        assert!(
            p.place_with(&roles(&["prod"], 0.5), None, no_placement)
                .is_err()
        );
        p.place_with(&roles(&["prod"], 0.25), None, no_placement)
            .unwrap();
        p.place_with(&roles(&["*"], 0.25), None, no_placement)
            .unwrap();
        assert!(p.place_with(&roles(&[], 0.01), None, no_placement).is_err());
    }

    #[test]
    fn a_task_reusing_volumes_goes_only_where_they_are_offered_and_new_ones_take_unreserved_disk() {
        let mut b = offer("b", 1.0, 100.0, &[]);
        b.volumes = vec![OfferedVolume {
            id: "db.data.1".into(),
            role: "db".into(),
            size_mb: 10.0,
            container_path: "data".into(),
        }];
        let offers = [offer("a", 1.0, 100.0, &[]), b];
        let mut p = Packer::new(&offers);
        let again = Need {
            volumes: vec!["db.data.1".into()],
            ..need(0.1, 10.0, 0)
        };
        assert_eq!(p.place_with(&again, None, no_placement).unwrap().offer, 1);
        // Taken: no second task gets it.
        let err = p.place_with(&again, None, no_placement).unwrap_err();
        assert_eq!(err.main_shortfall(), Some(Shortfall::Volumes));
        assert_eq!(
            Shortfall::Volumes.marathon_name(),
            "NoCorrespondingReservationFound"
        );
        // 100 MB of disk per offer: a new 60 MB volume fits once on each.
        let fresh = Need {
            new_volumes_mb: 60.0,
            ..need(0.1, 10.0, 0)
        };
        assert_eq!(p.place_with(&fresh, None, no_placement).unwrap().offer, 0);
        assert_eq!(p.place_with(&fresh, None, no_placement).unwrap().offer, 1);
        let err = p.place_with(&fresh, None, no_placement).unwrap_err();
        assert_eq!(err.main_shortfall(), Some(Shortfall::Disk));
    }

    #[test]
    fn tasks_fill_the_first_offer_then_spill_to_the_next() {
        let offers = [offer("a", 1.0, 100.0, &[]), offer("b", 1.0, 100.0, &[])];
        let mut p = Packer::new(&offers);
        let n = need(0.4, 40.0, 0);
        let got: Vec<usize> = (0..4)
            .map(|_| p.place_with(&n, None, no_placement).unwrap().offer)
            .collect();
        assert_eq!(got, [0, 0, 1, 1]);
        let err = p.place_with(&n, None, no_placement).unwrap_err();
        assert_eq!(err.main_shortfall(), Some(Shortfall::Cpus));
        assert_eq!(
            err.to_string(),
            "no offer has 0.4 cpus free (the most is 0.2)"
        );
    }

    #[test]
    fn the_first_missing_resource_is_named_per_offer() {
        let offers = [offer("a", 0.1, 500.0, &[]), offer("b", 2.0, 10.0, &[])];
        let mut p = Packer::new(&offers);
        let err = p
            .place_with(&need(1.0, 64.0, 0), None, no_placement)
            .unwrap_err();
        assert_eq!(err.shortfalls, [Shortfall::Cpus, Shortfall::Mem]);
        assert_eq!(err.main_shortfall(), Some(Shortfall::Cpus));
        let p = Packer::new(&[]);
        assert!(p.is_empty());
    }

    #[test]
    fn fixed_ports_are_taken_exactly_and_others_from_the_front() {
        let mut free = vec![PortRange {
            begin: 31000,
            end: 31005,
        }];
        let got = take_ports(&mut free, &[None, Some(31003), None]).unwrap();
        assert_eq!(got, [31000, 31003, 31001]);
        assert!(
            take_ports(&mut free, &[Some(31003)]).is_none(),
            "a port taken is not free again"
        );
        assert!(take_ports(&mut free, &[Some(40000)]).is_none());
        assert_eq!(
            take_ports(&mut free, &[None, None]).unwrap(),
            [31002, 31004]
        );
        assert!(take_ports(&mut free, &[]).unwrap().is_empty());
    }

    #[test]
    fn ports_run_out_per_offer() {
        let offers = [offer("a", 4.0, 400.0, &[(31000, 31002)])];
        let mut p = Packer::new(&offers);
        let fit = p
            .place_with(&need(0.1, 1.0, 2), None, no_placement)
            .unwrap();
        assert_eq!(fit.ports, [31000, 31001]);
        assert_eq!(fit.port_ranges().len(), 2);
        let err = p
            .place_with(&need(0.1, 1.0, 2), None, no_placement)
            .unwrap_err();
        assert_eq!(err.main_shortfall(), Some(Shortfall::Ports));
        assert_eq!(err.to_string(), "no offer has 2 free ports");
    }

    #[test]
    fn constraints_see_the_tasks_placed_earlier_in_the_batch() {
        let offers = [offer("a", 4.0, 400.0, &[]), offer("b", 4.0, 400.0, &[])];
        let mut p = Packer::new(&offers);
        let placement = Placement {
            group: "web".into(),
            rules: vec![Rule {
                constraint: Constraint {
                    field: "hostname".into(),
                    operator: "UNIQUE".into(),
                    value: None,
                },
                plugin: None,
            }],
            placed: vec![("agent-x".into(), 1)],
        };
        // A stand-in for UNIQUE: an agent fits when the group has no task there.
        let unique = |r: &Request, c: &[Candidate]| -> Result<Vec<Verdict>, String> {
            Ok(c.iter()
                .map(|c| {
                    let taken = r.placed.iter().any(|(a, n)| *a == c.agent_id && *n > 0);
                    Verdict {
                        fits: !taken,
                        score: 0.0,
                        reason: taken.then(|| "hostname UNIQUE not met".to_string()),
                    }
                })
                .collect())
        };
        let n = need(0.1, 1.0, 0);
        assert_eq!(p.place_with(&n, Some(&placement), unique).unwrap().offer, 0);
        assert_eq!(p.place_with(&n, Some(&placement), unique).unwrap().offer, 1);
        let err = p.place_with(&n, Some(&placement), unique).unwrap_err();
        assert_eq!(
            err.shortfalls,
            [Shortfall::Constraints, Shortfall::Constraints]
        );
        assert_eq!(err.to_string(), "hostname UNIQUE not met");
        let failing = |_: &Request, _: &[Candidate]| -> Result<Vec<Verdict>, String> {
            Err("no plugin for operator UNIQUE".into())
        };
        let err = Packer::new(&offers)
            .place_with(&n, Some(&placement), failing)
            .unwrap_err();
        assert_eq!(
            err.to_string(),
            "placement failed: no plugin for operator UNIQUE"
        );
    }

    #[test]
    fn a_limit_per_offer_spreads_a_batch() {
        let offers = [offer("a", 8.0, 800.0, &[]), offer("b", 8.0, 800.0, &[])];
        let mut p = Packer::new(&offers).limit_per_offer(2);
        let n = need(0.1, 1.0, 0);
        let got: Vec<usize> = (0..4)
            .map(|_| p.place_with(&n, None, no_placement).unwrap().offer)
            .collect();
        assert_eq!(got, [0, 0, 1, 1]);
        let err = p.place_with(&n, None, no_placement).unwrap_err();
        assert_eq!(err.main_shortfall(), Some(Shortfall::Full));
    }

    #[test]
    fn finish_groups_specs_by_offer_and_lists_the_unused() {
        let offers = [
            offer("a", 1.0, 100.0, &[]),
            offer("b", 1.0, 100.0, &[]),
            offer("c", 1.0, 100.0, &[]),
        ];
        let mut p = Packer::new(&offers);
        p.add(2, spec("t1"));
        p.add(0, spec("t2"));
        p.add(2, spec("t3"));
        assert_eq!(p.hostname(2), "host-c");
        let packed = p.finish();
        let launches: Vec<(String, Vec<String>)> = packed
            .launches
            .iter()
            .map(|l| {
                (
                    l.offer_id.clone(),
                    l.specs.iter().map(|s| s.task_id.clone()).collect(),
                )
            })
            .collect();
        assert_eq!(
            launches,
            [
                ("a".to_string(), vec!["t2".to_string()]),
                ("c".to_string(), vec!["t1".to_string(), "t3".to_string()])
            ]
        );
        assert_eq!(packed.unused, ["b"]);
    }
}
