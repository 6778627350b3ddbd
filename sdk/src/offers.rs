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
    self, BriefVerdict, Candidate, Decision, EvaluateError, Evaluation, Judged, NumberedCandidate,
    Numbering, Request, Rule, Verdict,
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
        let mut counts = [0usize; SHORTFALLS];
        for s in &self.shortfalls {
            counts[*s as usize] += 1;
        }
        ALL_SHORTFALLS
            .into_iter()
            .filter(|s| counts[*s as usize] > 0)
            .max_by(|a, b| counts[*a as usize].cmp(&counts[*b as usize]).then(b.cmp(a)))
    }
}

impl NoFit {
    /// What would make the task fit, after [`NoFit`]'s sentence.
    pub fn hint(&self) -> &'static str {
        match self.main_shortfall() {
            None => "",
            Some(Shortfall::Cpus | Shortfall::Mem | Shortfall::Disk | Shortfall::Gpus) => {
                "; it fits once an agent has that much free: stop or scale down other work, add an agent, or ask for less"
            }
            Some(Shortfall::Ports) => {
                "; it fits once an agent has the ports free: stop what holds them, or ask for any port (0)"
            }
            Some(Shortfall::Constraints)
                if self
                    .constraint
                    .as_deref()
                    .is_some_and(|c| c.starts_with("placement failed")) =>
            {
                "; install the placement plugin the rule needs (`wasmos plugin list` shows those installed), or change the rule"
            }
            Some(Shortfall::Constraints) => {
                "; it fits once an agent with room meets the rules: add or free such an agent, or relax the constraint"
            }
            Some(Shortfall::Full) => "; the next round of offers places it",
            Some(Shortfall::Volumes) => {
                "; it fits once the volume's agent is back and offers it again"
            }
        }
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

/// What an offer lacks for a task (the first missing resource), or None
/// when the task fits in what is left of it.
fn shortfall(l: &Left, need: &Need, per_offer: usize) -> Option<Shortfall> {
    let ([cpus, mem, disk], gpus) = l.available(&need.roles);
    if l.placed >= per_offer {
        Some(Shortfall::Full)
    } else if need.cpus > cpus + EPSILON {
        Some(Shortfall::Cpus)
    } else if need.mem > mem + EPSILON {
        Some(Shortfall::Mem)
    } else if need.disk > disk + EPSILON {
        Some(Shortfall::Disk)
    } else if need.gpus > gpus {
        Some(Shortfall::Gpus)
    } else if !need.ports.is_empty() && take_ports(&mut l.ports.clone(), &need.ports).is_none() {
        Some(Shortfall::Ports)
    } else if need.volumes.iter().any(|v| !l.volumes.contains(v)) {
        Some(Shortfall::Volumes)
    } else if need.new_volumes_mb > 0.0
        && need.new_volumes_mb + need.disk > l.unreserved_disk() + EPSILON
    {
        Some(Shortfall::Disk)
    } else {
        None
    }
}

/// Every kind of [`Shortfall`], in order.
const ALL_SHORTFALLS: [Shortfall; SHORTFALLS] = [
    Shortfall::Cpus,
    Shortfall::Mem,
    Shortfall::Disk,
    Shortfall::Gpus,
    Shortfall::Ports,
    Shortfall::Constraints,
    Shortfall::Full,
    Shortfall::Volumes,
];
const SHORTFALLS: usize = 8;

/// Which offers have room for one need, kept between [`Packer::place`]
/// calls: a framework places an app's instances one after another with
/// the same need, and a placement changes only the offer it took from, so
/// the offers are looked at once per need instead of once per task.
#[derive(Debug)]
struct Fits {
    need: Need,
    /// Per offer: what it lacks for the need; None when it has room.
    shortfalls: Vec<Option<Shortfall>>,
    /// The offers with room, ascending.
    fitting: Vec<usize>,
    /// How many offers lack each kind (by `Shortfall as usize`).
    counts: [u32; SHORTFALLS],
}

impl Fits {
    /// Offer `i`, which had room, now lacks `short` (or still has room).
    fn update(&mut self, i: usize, short: Option<Shortfall>) {
        let Some(s) = short else {
            return;
        };
        if let Ok(k) = self.fitting.binary_search(&i) {
            self.fitting.remove(k);
        }
        if let Some(old) = self.shortfalls[i].replace(s) {
            self.counts[old as usize] -= 1;
        }
        self.counts[s as usize] += 1;
    }
}

/// How the packer has the placement plugins judge a window of offers:
/// the request, the window (offer indices) and all offers.
type Judge<'a> = &'a mut dyn FnMut(&Request, &[usize], &[Left]) -> Result<Evaluation, String>;

/// The index of `reason` in `reasons`, added if new.
fn intern(reasons: &mut Vec<String>, reason: &str) -> u32 {
    match reasons.iter().position(|r| r == reason) {
        Some(i) => i as u32,
        None => {
            reasons.push(reason.to_string());
            (reasons.len() - 1) as u32
        }
    }
}

/// A placement service that takes candidates by agent id and answers a
/// reason per verdict, on a window of offers.
fn judge_by_id(
    evaluate: &mut impl FnMut(&Request, &[Candidate]) -> Result<Vec<Verdict>, String>,
    request: &Request,
    window: &[usize],
    left: &[Left],
) -> Result<Evaluation, String> {
    let candidates: Vec<Candidate> = window
        .iter()
        .map(|&i| Candidate {
            agent_id: left[i].agent_id.clone(),
            cpus: left[i].cpus,
            mem: left[i].mem,
            disk: left[i].disk,
        })
        .collect();
    let mut ev = Evaluation {
        verdicts: Vec::new(),
        reasons: Vec::new(),
    };
    for v in evaluate(request, &candidates)? {
        let reason = v.reason.map(|r| intern(&mut ev.reasons, &r));
        ev.verdicts.push(BriefVerdict {
            fits: v.fits,
            score: v.score,
            reason,
        });
    }
    Ok(ev)
}

/// The host's placement service on a window of offers, their agents by
/// number (asked once per batch, and again when agents left since): no
/// agent id crosses per candidate, no reason text per verdict. Should
/// agents leave again before the second try, the window goes by id.
fn judge_numbered(
    numbering: &mut Option<Numbering>,
    request: &Request,
    window: &[usize],
    left: &[Left],
) -> Result<Evaluation, String> {
    for _ in 0..2 {
        let numbers = numbering.get_or_insert_with(|| {
            let ids: Vec<String> = left.iter().map(|l| l.agent_id.clone()).collect();
            placement_service::agent_numbers(&ids)
        });
        let mut known = Vec::with_capacity(window.len());
        let mut at = Vec::with_capacity(window.len());
        for (pos, &i) in window.iter().enumerate() {
            if let Some(agent) = numbers.numbers.get(i).copied().flatten() {
                let l = &left[i];
                known.push(NumberedCandidate {
                    agent,
                    cpus: l.cpus,
                    mem: l.mem,
                    disk: l.disk,
                });
                at.push(pos);
            }
        }
        let ev = match placement_service::evaluate_numbered(request, numbers.generation, &known) {
            Ok(ev) => ev,
            Err(EvaluateError::AgentsChanged) => {
                *numbering = None;
                continue;
            }
            Err(EvaluateError::Failed(why)) => return Err(why),
        };
        if known.len() == window.len() || ev.verdicts.len() != known.len() {
            return Ok(ev);
        }
        // Offers of agents placement does not know: unfit, as the host
        // judges unknown agents.
        let mut out = Evaluation {
            verdicts: Vec::with_capacity(window.len()),
            reasons: ev.reasons,
        };
        let mut judged = at.into_iter().zip(ev.verdicts).peekable();
        for (pos, &i) in window.iter().enumerate() {
            if let Some((_, v)) = judged.next_if(|(at, _)| *at == pos) {
                out.verdicts.push(v);
                continue;
            }
            let reason = intern(
                &mut out.reasons,
                &format!("agent {} is not known to placement", left[i].agent_id),
            );
            out.verdicts.push(BriefVerdict {
                fits: false,
                score: 0.0,
                reason: Some(reason),
            });
        }
        return Ok(out);
    }
    // Agents left twice while this window was judged: by id, which needs
    // no numbers.
    judge_by_id(&mut placement_service::evaluate, request, window, left)
}

/// Places tasks on a batch of offers, one at a time.
#[derive(Debug)]
pub struct Packer {
    left: Vec<Left>,
    /// At most this many tasks per offer (spreads a batch over agents).
    per_offer: usize,
    /// Tasks placed in this batch: (group, agent id).
    placed_now: Vec<(String, String)>,
    /// The decision of the last successful `place`, and its offer, until
    /// `add` names the task.
    pending: Option<(usize, Decision)>,
    /// Decisions of the tasks placed in this batch.
    decisions: Vec<Decision>,
    /// Where the next window of offers to judge starts.
    rotor: usize,
    /// The last refusal of each group still waiting (None: it was placed
    /// since), and where each group's is.
    refusals: Vec<Option<Decision>>,
    refusal_at: std::collections::HashMap<String, usize>,
    /// The offers with room for the need of the last `place`.
    fits: Option<Fits>,
    /// The placement service's numbers for the offers' agents, once asked.
    numbering: Option<Numbering>,
}

/// How many candidates a decision samples besides the chosen one: the best
/// others, then a few of those each reason ruled out.
const SAMPLE_BEST: usize = 3;
/// How many offers with room the placement plugins judge at a time.
const SCORE_AT_MOST: usize = 256;
const SAMPLE_PER_REASON: usize = 2;
const SAMPLE_MAX: usize = 24;

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
    /// Why each task went where it did, and why each waiting group fits
    /// nowhere ([`Packer::finish`] has sent them to the host).
    pub decisions: Vec<Decision>,
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
            pending: None,
            decisions: Vec::new(),
            rotor: 0,
            refusals: Vec::new(),
            refusal_at: std::collections::HashMap::new(),
            fits: None,
            numbering: None,
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
    /// with room, 256 at a time from a point that moves on with each task,
    /// until a window has a place: the best of that window wins.
    pub fn place(&mut self, need: &Need, placement: Option<&Placement>) -> Result<Fit, NoFit> {
        let mut numbering = self.numbering.take();
        let fit = self.place_judged(need, placement, &mut |request, window, left| {
            judge_numbered(&mut numbering, request, window, left)
        });
        self.numbering = numbering;
        fit
    }

    /// [`Packer::place`] with the placement service given (tests): it
    /// gets the candidates by agent id and answers a reason per verdict.
    pub fn place_with(
        &mut self,
        need: &Need,
        placement: Option<&Placement>,
        mut evaluate: impl FnMut(&Request, &[Candidate]) -> Result<Vec<Verdict>, String>,
    ) -> Result<Fit, NoFit> {
        self.place_judged(need, placement, &mut |request, window, left| {
            judge_by_id(&mut evaluate, request, window, left)
        })
    }

    /// Places a task, the placement plugins judging windows of offers
    /// through `judge` (the request, the offers' indices, all offers).
    fn place_judged(
        &mut self,
        need: &Need,
        placement: Option<&Placement>,
        judge: Judge<'_>,
    ) -> Result<Fit, NoFit> {
        let mut fits = match self.fits.take() {
            Some(f) if f.need == *need => f,
            _ => self.scan(need),
        };
        let fitting = &fits.fitting;
        let mut constraint = None;
        let mut judged: Option<Evaluation> = None;
        // The offers the placement plugins judged (all that had room,
        // unless a window sufficed), in the order of `judged`.
        let mut scored: Option<Vec<usize>> = None;
        let chosen = match placement.filter(|p| !p.rules.is_empty()) {
            _ if fitting.is_empty() => None,
            None => fitting.first().copied(),
            Some(p) => {
                // Many offers with room: the plugins judge them a window at
                // a time, from a point that moves on with each task, and
                // the first window with a place decides (as Kubernetes
                // scores a share of the nodes): the cost of a placement
                // stays bounded at any cluster size, and a task that fits
                // somewhere is never refused.
                let n = fitting.len();
                let from = if n > SCORE_AT_MOST {
                    let from = self.rotor % n;
                    self.rotor = self.rotor.wrapping_add(SCORE_AT_MOST);
                    from
                } else {
                    0
                };
                let request = Request {
                    group: p.group.clone(),
                    rules: p.rules.clone(),
                    resources: need.resources(),
                    placed: self.placed_with_batch(p),
                };
                let mut looked: Vec<usize> = Vec::new();
                let mut all = Evaluation {
                    verdicts: Vec::new(),
                    reasons: Vec::new(),
                };
                let mut best: Option<(usize, f64)> = None;
                for start in (0..n).step_by(SCORE_AT_MOST) {
                    let window: Vec<usize> = (start..n.min(start + SCORE_AT_MOST))
                        .map(|k| fitting[(from + k) % n])
                        .collect();
                    match judge(&request, &window, &self.left) {
                        Ok(ev) if ev.verdicts.len() == window.len() => {
                            // The best score; the first offer among equals.
                            for (&i, v) in window.iter().zip(&ev.verdicts) {
                                let better = match best {
                                    None => true,
                                    Some((j, s)) => v.score > s || (v.score == s && i < j),
                                };
                                if v.fits && better {
                                    best = Some((i, v.score));
                                }
                            }
                            looked.extend_from_slice(&window);
                            for v in ev.verdicts {
                                let reason = v
                                    .reason
                                    .and_then(|r| ev.reasons.get(r as usize))
                                    .map(|r| intern(&mut all.reasons, r));
                                all.verdicts.push(BriefVerdict { reason, ..v });
                            }
                            if best.is_some() {
                                break;
                            }
                        }
                        Ok(ev) => {
                            constraint = Some(format!(
                                "the placement service answered {} verdicts for {} candidates",
                                ev.verdicts.len(),
                                window.len()
                            ));
                            break;
                        }
                        Err(e) => {
                            constraint = Some(format!("placement failed: {e}"));
                            break;
                        }
                    }
                }
                if constraint.is_none() {
                    if best.is_none() {
                        constraint = all
                            .verdicts
                            .iter()
                            .find_map(|v| v.reason)
                            .map(|r| all.reasons[r as usize].clone());
                    }
                    judged = Some(all);
                    scored = Some(looked);
                }
                best.map(|(i, _)| i)
            }
        };
        let scored: &[usize] = scored.as_deref().unwrap_or(fitting);
        let mut decision = self.decide(
            need,
            placement,
            &fits,
            scored,
            judged.as_ref(),
            chosen,
            constraint.as_deref(),
        );
        let unscored = fitting.len() - scored.len().min(fitting.len());
        if chosen.is_some() && unscored > 0 {
            decision.summary.push_str(&format!(
                "; {unscored} more offers with room were not scored (the plugins judge {SCORE_AT_MOST} at a time, from a point that moves on with each task, until one has a place)"
            ));
        }
        let Some(i) = chosen else {
            let mut shortfalls = fits.shortfalls.clone();
            for &i in &fits.fitting {
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
            self.fits = Some(fits);
            let no_fit = NoFit {
                shortfalls: shortfalls.into_iter().flatten().collect(),
                constraint,
                need: Box::new(need.clone()),
                most,
            };
            self.refused(decision, &no_fit);
            return Err(no_fit);
        };
        self.pending = Some((i, decision));
        let l = &mut self.left[i];
        let ports = take_ports(&mut l.ports, &need.ports).unwrap_or_default();
        l.take(need);
        l.placed += 1;
        // Only this offer changed: the others' fit for the need stands.
        fits.update(i, shortfall(&self.left[i], need, self.per_offer));
        self.fits = Some(fits);
        if let Some(p) = placement {
            self.placed_now
                .push((p.group.clone(), self.left[i].agent_id.clone()));
        }
        Ok(Fit { offer: i, ports })
    }

    /// Which offers have room for `need`, looking at every one.
    fn scan(&self, need: &Need) -> Fits {
        let mut fits = Fits {
            need: need.clone(),
            shortfalls: Vec::with_capacity(self.left.len()),
            fitting: Vec::new(),
            counts: [0; SHORTFALLS],
        };
        for (i, l) in self.left.iter().enumerate() {
            let short = shortfall(l, need, self.per_offer);
            match short {
                Some(s) => fits.counts[s as usize] += 1,
                None => fits.fitting.push(i),
            }
            fits.shortfalls.push(short);
        }
        fits
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
        if let Some((at, mut d)) = self.pending.take()
            && at == offer
        {
            // Placed: whatever its group waited for before is moot.
            if let Some(i) = self.refusal_at.remove(&d.group) {
                self.refusals[i] = None;
            }
            d.task_id = Some(spec.task_id.clone());
            self.decisions.push(d);
        }
        if let Some(l) = self.left.get_mut(offer) {
            l.specs.push(spec);
        }
    }

    /// The decision record of one `place`: what was looked at, what ruled
    /// each offer out, and what was chosen.
    #[allow(clippy::too_many_arguments)]
    fn decide(
        &self,
        need: &Need,
        placement: Option<&Placement>,
        fits: &Fits,
        fitting: &[usize],
        judged: Option<&Evaluation>,
        chosen: Option<usize>,
        failed: Option<&str>,
    ) -> Decision {
        let verdicts = judged.map(|ev| ev.verdicts.as_slice());
        let reason_text = |r: Option<u32>| -> &str {
            r.and_then(|r| judged?.reasons.get(r as usize))
                .map_or("UnfulfilledConstraint", String::as_str)
        };
        let shortfalls = &fits.shortfalls;
        // Offer index → its verdict, when the placement plugins judged it
        // (sorted by offer, for lookups).
        let mut verdict_at: Vec<(usize, &BriefVerdict)> = match verdicts {
            Some(vs) => fitting.iter().copied().zip(vs).collect(),
            None => Vec::new(),
        };
        verdict_at.sort_unstable_by_key(|(i, _)| *i);
        let verdict_of = |i: usize| -> Option<&BriefVerdict> {
            verdict_at
                .binary_search_by_key(&i, |(j, _)| *j)
                .ok()
                .map(|k| verdict_at[k].1)
        };
        // What ruled out offer `i`, one the plugins looked at (or would
        // have): their verdict, or their failure.
        let judged_reason = |i: usize| -> Option<&str> {
            match verdict_of(i) {
                Some(v) if !v.fits => Some(reason_text(v.reason)),
                Some(_) => None,
                None if chosen.is_none() && verdicts.is_none() => failed,
                None => None,
            }
        };
        let judge = |i: usize, refused: Option<&str>| -> Judged {
            let l = &self.left[i];
            let refused = refused.map(|r| match shortfalls[i] {
                Some(Shortfall::Cpus) => format!("{r}: {} cpus free", round(l.cpus)),
                Some(Shortfall::Mem) => format!("{r}: {} MB free", round(l.mem)),
                Some(Shortfall::Disk) => format!("{r}: {} MB of disk free", round(l.disk)),
                Some(Shortfall::Gpus) => format!("{r}: {} GPUs free", l.gpus),
                _ => r.to_string(),
            });
            Judged {
                agent_id: l.agent_id.clone(),
                hostname: l.hostname.clone(),
                refused,
                score: verdict_of(i).map_or(0.0, |v| v.score),
            }
        };
        let mut candidates: Vec<Judged> = chosen.map(|i| judge(i, None)).into_iter().collect();
        // The best others.
        let mut able: Vec<usize> = fitting
            .iter()
            .copied()
            .filter(|i| Some(*i) != chosen && judged_reason(*i).is_none())
            .collect();
        if verdicts.is_some() {
            // Only the best few are shown: select them, then order those.
            let better = |a: &usize, b: &usize| {
                let score = |i: usize| verdict_of(i).map_or(0.0, |v| v.score);
                score(*b).total_cmp(&score(*a)).then(a.cmp(b))
            };
            if able.len() > SAMPLE_BEST {
                able.select_nth_unstable_by(SAMPLE_BEST, better);
            }
            let top = able.len().min(SAMPLE_BEST);
            able[..top].sort_by(better);
        }
        candidates.extend(able.iter().take(SAMPLE_BEST).map(|i| judge(*i, None)));
        // Every reason with how many offers it ruled out, and the first
        // few offers (by index) of each as samples. The shortfalls are
        // counted already; their samples are the first offers found with
        // each, which is usually near the front.
        let mut refusals: Vec<(&str, u32)> = Vec::new();
        let mut samples: Vec<(usize, &str)> = Vec::new();
        let mut wanted: usize = (0..SHORTFALLS)
            .map(|k| (fits.counts[k] as usize).min(SAMPLE_PER_REASON))
            .sum();
        let mut sampled = [0usize; SHORTFALLS];
        for (i, short) in shortfalls.iter().enumerate() {
            if wanted == 0 {
                break;
            }
            if let Some(s) = short
                && sampled[*s as usize] < SAMPLE_PER_REASON
            {
                sampled[*s as usize] += 1;
                wanted -= 1;
                samples.push((i, s.marathon_name()));
            }
        }
        for s in ALL_SHORTFALLS {
            if fits.counts[s as usize] > 0 {
                refusals.push((s.marathon_name(), fits.counts[s as usize]));
            }
        }
        let mut by_plugins: Vec<(usize, &str)> = fitting
            .iter()
            .filter_map(|&i| judged_reason(i).map(|r| (i, r)))
            .collect();
        by_plugins.sort_unstable_by_key(|(i, _)| *i);
        for (i, reason) in by_plugins {
            let seen = match refusals.iter_mut().find(|(r, _)| *r == reason) {
                Some((_, n)) => {
                    *n += 1;
                    *n as usize
                }
                None => {
                    refusals.push((reason, 1));
                    1
                }
            };
            if seen <= SAMPLE_PER_REASON {
                samples.push((i, reason));
            }
        }
        // In offer order, at most a few per reason, as many as fit.
        samples.sort_by_key(|(i, _)| *i);
        let mut shown: Vec<(&str, usize)> = Vec::new();
        for (i, reason) in samples {
            let n = match shown.iter_mut().find(|(r, _)| *r == reason) {
                Some((_, n)) => {
                    *n += 1;
                    *n
                }
                None => {
                    shown.push((reason, 1));
                    1
                }
            };
            if n <= SAMPLE_PER_REASON && candidates.len() < SAMPLE_MAX {
                candidates.push(judge(i, Some(reason)));
            }
        }
        refusals.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(b.0)));
        let offers = self.left.len() as u32;
        let summary = match chosen {
            Some(i) => {
                let l = &self.left[i];
                let mut s = if offers == 1 {
                    format!("placed on {}: the one offer looked at had room", l.hostname)
                } else {
                    format!(
                        "placed on {}: {} of {offers} offers could take it",
                        l.hostname,
                        able.len() + 1
                    )
                };
                if let Some(v) = verdict_of(i) {
                    s.push_str(&format!(", and it scored best ({})", round(v.score)));
                } else if offers > 1 && able.is_empty() {
                    s.push_str(", the only one");
                } else if offers > 1 {
                    s.push_str(", and it came first");
                }
                if !refusals.is_empty() {
                    let top: Vec<String> = refusals
                        .iter()
                        .take(3)
                        .map(|(r, n)| format!("{n} {r}"))
                        .collect();
                    s.push_str(&format!("; ruled out: {}", top.join(", ")));
                }
                s
            }
            // Filled in by `refused`, which knows the NoFit.
            None => String::new(),
        };
        Decision {
            task_id: None,
            group: placement.map(|p| p.group.clone()).unwrap_or_default(),
            resources: need.resources(),
            rules: placement.map(|p| p.rules.clone()).unwrap_or_default(),
            offers,
            refusals: refusals
                .into_iter()
                .map(|(r, n)| (r.to_string(), n))
                .collect(),
            candidates,
            chosen: chosen.map(|i| self.left[i].agent_id.clone()),
            summary,
        }
    }

    /// Keeps a refusal as its group's latest (a group without a name, as
    /// a task placed without [`Placement`], is not kept).
    fn refused(&mut self, mut d: Decision, why: &NoFit) {
        d.summary = format!("{why}{}", why.hint());
        self.keep_refusal(d);
    }

    fn keep_refusal(&mut self, d: Decision) {
        if d.group.is_empty() {
            return;
        }
        match self.refusal_at.get(&d.group) {
            Some(&i) => self.refusals[i] = Some(d),
            None => {
                self.refusal_at.insert(d.group.clone(), self.refusals.len());
                self.refusals.push(Some(d));
            }
        }
    }

    /// Records that `group` waits this round for something other than
    /// room in the offers (a backoff delay, its reservation): `why` says
    /// what. [`Packer::finish`] tells the host everything that waits, so a
    /// group that waits without being placed or refused must be named. A
    /// refusal of the group in this round already says more: it stays.
    pub fn waiting(&mut self, group: &str, why: impl Into<String>) {
        if self.refusal_at.contains_key(group) {
            return;
        }
        self.keep_refusal(Decision {
            task_id: None,
            group: group.to_string(),
            resources: Need::default().resources(),
            rules: Vec::new(),
            offers: self.left.len() as u32,
            refusals: Vec::new(),
            candidates: Vec::new(),
            chosen: None,
            summary: why.into(),
        });
    }

    /// The launches, one per offer with tasks, and the unused offers; the
    /// batch's decisions go to the host (`placement-service.explain`),
    /// where `wasmos task why` finds them.
    pub fn finish(self) -> Packed {
        let packed = self.finish_quietly();
        // Even with none: the host then knows nothing of this framework
        // waits.
        if cfg!(target_arch = "wasm32") {
            placement_service::explain(&packed.decisions);
        }
        packed
    }

    /// [`Packer::finish`] without telling the host (tests).
    pub fn finish_quietly(self) -> Packed {
        let mut decisions = self.decisions;
        decisions.extend(self.refusals.into_iter().flatten());
        let mut packed = Packed {
            decisions,
            ..Packed::default()
        };
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

    /// `[hostname, UNIQUE]` for `group`, which has a task on `on`.
    fn unique_placement(group: &str, on: &str) -> Placement {
        Placement {
            group: group.into(),
            rules: vec![Rule {
                constraint: Constraint {
                    field: "hostname".into(),
                    operator: "UNIQUE".into(),
                    value: None,
                },
                plugin: None,
            }],
            placed: vec![(on.into(), 1)],
        }
    }

    /// A stand-in for UNIQUE: an agent fits when the group has no task
    /// there; `preferred` scores 2, the others 1.
    fn unique_preferring(
        preferred: &'static str,
    ) -> impl Fn(&Request, &[Candidate]) -> Result<Vec<Verdict>, String> + Copy {
        move |r: &Request, c: &[Candidate]| {
            Ok(c.iter()
                .map(|c| {
                    let taken = r.placed.iter().any(|(a, n)| *a == c.agent_id && *n > 0);
                    Verdict {
                        fits: !taken,
                        score: if c.agent_id == preferred { 2.0 } else { 1.0 },
                        reason: taken.then(|| "constraints: [hostname, UNIQUE] not met".into()),
                    }
                })
                .collect())
        }
    }

    #[test]
    fn constraints_see_the_tasks_placed_earlier_in_the_batch() {
        let offers = [offer("a", 4.0, 400.0, &[]), offer("b", 4.0, 400.0, &[])];
        let mut p = Packer::new(&offers);
        let placement = unique_placement("web", "agent-x");
        let unique = unique_preferring("none");
        let n = need(0.1, 1.0, 0);
        assert_eq!(p.place_with(&n, Some(&placement), unique).unwrap().offer, 0);
        assert_eq!(p.place_with(&n, Some(&placement), unique).unwrap().offer, 1);
        let err = p.place_with(&n, Some(&placement), unique).unwrap_err();
        assert_eq!(
            err.shortfalls,
            [Shortfall::Constraints, Shortfall::Constraints]
        );
        assert_eq!(err.to_string(), "constraints: [hostname, UNIQUE] not met");
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
    fn every_placement_and_refusal_is_explained_with_the_reason_each_offer_was_ruled_out() {
        let offers = [
            offer("small", 0.2, 400.0, &[]),
            offer("a", 4.0, 400.0, &[]),
            offer("b", 4.0, 400.0, &[]),
            offer("c", 4.0, 400.0, &[]),
        ];
        let mut p = Packer::new(&offers);
        let placement = unique_placement("/web", "agent-a");
        let unique = unique_preferring("agent-c");
        let n = need(1.0, 1.0, 0);
        // A refusal first (nothing placed yet would not be: the group is
        // refused before, then placed: the refusal is dropped).
        let too_big = need(100.0, 1.0, 0);
        assert!(p.place_with(&too_big, Some(&placement), unique).is_err());
        let fit = p.place_with(&n, Some(&placement), unique).unwrap();
        assert_eq!(fit.offer, 3, "c scores best");
        p.add(fit.offer, spec("t1"));
        let fit = p.place_with(&n, Some(&placement), unique).unwrap();
        assert_eq!(fit.offer, 2);
        p.add(fit.offer, spec("t2"));
        // Nowhere left: a, b and c hold the group, small lacks cpus.
        assert!(p.place_with(&n, Some(&placement), unique).is_err());
        // A second refusal of the group replaces the first.
        assert!(p.place_with(&n, Some(&placement), unique).is_err());
        let packed = p.finish_quietly();
        let ds = &packed.decisions;
        assert_eq!(ds.len(), 3, "{ds:#?}");
        let first = &ds[0];
        assert_eq!(first.task_id.as_deref(), Some("t1"));
        assert_eq!(first.chosen.as_deref(), Some("agent-c"));
        assert_eq!(first.offers, 4);
        assert_eq!(
            first.refusals,
            [
                ("InsufficientCpus".to_string(), 1),
                ("constraints: [hostname, UNIQUE] not met".to_string(), 1)
            ]
        );
        let verdicts: Vec<(&str, Option<&str>, f64)> = first
            .candidates
            .iter()
            .map(|c| (c.hostname.as_str(), c.refused.as_deref(), c.score))
            .collect();
        assert_eq!(
            verdicts,
            [
                ("host-c", None, 2.0),
                ("host-b", None, 1.0),
                ("host-small", Some("InsufficientCpus: 0.2 cpus free"), 0.0),
                (
                    "host-a",
                    Some("constraints: [hostname, UNIQUE] not met"),
                    1.0
                ),
            ]
        );
        assert!(
            first.summary.starts_with(
                "placed on host-c: 2 of 4 offers could take it, and it scored best (2)"
            ),
            "{}",
            first.summary
        );
        assert_eq!(ds[1].task_id.as_deref(), Some("t2"));
        let waiting = &ds[2];
        assert_eq!(
            (waiting.task_id.as_ref(), waiting.chosen.as_ref()),
            (None, None)
        );
        assert_eq!(waiting.group, "/web");
        assert_eq!(
            waiting.refusals,
            [
                ("constraints: [hostname, UNIQUE] not met".to_string(), 3),
                ("InsufficientCpus".to_string(), 1)
            ]
        );
        assert!(
            waiting
                .summary
                .starts_with("constraints: [hostname, UNIQUE] not met; it fits once"),
            "{}",
            waiting.summary
        );
    }

    #[test]
    fn the_plugins_judge_a_window_of_offers_at_a_time_and_never_miss_a_place() {
        let offers: Vec<Offer> = (0..600)
            .map(|i| offer(&format!("o{i}"), 4.0, 400.0, &[]))
            .collect();
        let placement = unique_placement("/web", "nowhere");
        let n = need(0.1, 1.0, 0);
        // Every offer fits: one window of 256 is judged, the best of it wins.
        let mut judged = 0;
        let mut p = Packer::new(&offers);
        let fit = p
            .place_with(&n, Some(&placement), |r, c| {
                judged += c.len();
                unique_preferring("none")(r, c)
            })
            .unwrap();
        assert_eq!((judged, fit.offer), (SCORE_AT_MOST, 0));
        p.add(fit.offer, spec("t1"));
        // The next task's window starts further on.
        let fit = p
            .place_with(&n, Some(&placement), unique_preferring("none"))
            .unwrap();
        assert_eq!(fit.offer, SCORE_AT_MOST);
        p.add(fit.offer, spec("t2"));
        let d = &p.finish_quietly().decisions[0];
        assert!(
            d.summary
                .contains("344 more offers with room were not scored"),
            "{}",
            d.summary
        );
        // Only the last offer fits: the windows go on until they find it.
        let only_last = |_: &Request, c: &[Candidate]| -> Result<Vec<Verdict>, String> {
            Ok(c.iter()
                .map(|c| Verdict {
                    fits: c.agent_id == "agent-o599",
                    score: 0.0,
                    reason: None,
                })
                .collect())
        };
        let mut p = Packer::new(&offers);
        let fit = p.place_with(&n, Some(&placement), only_last).unwrap();
        assert_eq!(fit.offer, 599);
        p.add(fit.offer, spec("t3"));
        let d = &p.finish_quietly().decisions[0];
        assert!(
            d.summary.contains("1 of 600 offers could take it"),
            "{}",
            d.summary
        );
    }

    #[test]
    fn the_fit_kept_between_placements_is_what_a_fresh_look_at_every_offer_finds() {
        // Offers of uneven sizes and ports; needs that repeat (kept) and
        // change (looked at again); some placed with rules, some refused.
        let offers: Vec<Offer> = (0..40)
            .map(|k| {
                let ports: &[(u16, u16)] = if k % 3 == 0 { &[] } else { &[(31000, 31002)] };
                offer(
                    &format!("o{k}"),
                    0.5 + (k % 5) as f64,
                    100.0 * (1 + k % 4) as f64,
                    ports,
                )
            })
            .collect();
        let needs = [need(1.0, 100.0, 0), need(0.5, 50.0, 1), need(2.0, 300.0, 2)];
        let mut p = Packer::new(&offers).limit_per_offer(3);
        let any_but_the_first_three =
            |_: &Request, c: &[Candidate]| -> Result<Vec<Verdict>, String> {
                Ok(c.iter()
                    .map(|c| Verdict {
                        fits: !["agent-o0", "agent-o1", "agent-o2"].contains(&c.agent_id.as_str()),
                        score: 0.0,
                        reason: Some("no".into()),
                    })
                    .collect())
            };
        let rules = unique_placement("g", "hostname");
        let (mut placed, mut refused) = (0, 0);
        for step in 0..120 {
            let n = &needs[(step / 7) % needs.len()];
            let fit = if step % 2 == 0 {
                p.place_with(n, Some(&rules), any_but_the_first_three)
            } else {
                p.place_with(n, None, no_placement)
            };
            match fit {
                Ok(f) => {
                    p.add(f.offer, spec(&format!("t{step}")));
                    placed += 1;
                }
                Err(_) => refused += 1,
            }
            let kept = p.fits.as_ref().expect("a place keeps the fit of its need");
            let fresh = p.scan(n);
            assert_eq!(kept.shortfalls, fresh.shortfalls, "step {step}");
            assert_eq!(kept.fitting, fresh.fitting, "step {step}");
            assert_eq!(kept.counts, fresh.counts, "step {step}");
        }
        assert!(
            placed > 30 && refused > 10,
            "placed {placed}, refused {refused}"
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
