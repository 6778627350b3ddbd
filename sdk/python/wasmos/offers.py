"""Fitting tasks into offers (framework plugins only).

A framework with tasks waiting gets a batch of offers. A :class:`Packer`
keeps what is left of each offer while tasks are placed on it, one at a
time: :meth:`Packer.place` finds the offers with room for the task's
:class:`Need` (cpus, mem, disk, GPUs, fixed and any ports, the roles whose
resources it accepts, reservations first), asks the placement service about
its constraints when it has any (counting the tasks placed earlier in the
same batch), takes the resources of the best offer and says which host
ports the task got. Build the task's spec from that and hand it back with
:meth:`Packer.add`; :meth:`Packer.finish` groups the specs by offer and
lists the offers nothing was placed on::

    packer = offers.Packer(batch)
    for job in waiting:
        try:
            fit = packer.place(offers.Need(cpus=job.cpus, mem=job.mem))
        except offers.NoFit as why:
            log.info(f"{job.id} waits: {why}")
            continue
        packer.add(fit, framework.task(job.id, job.cmd, cpus=..., ports=fit.ports))
    packer.finish().send()

When a task fits nowhere, :class:`NoFit` says why, per offer (Marathon's
``InsufficientCpus``... names) and in one sentence for people.
"""

import enum
from collections import Counter
from typing import Callable, List, Optional, Sequence, Tuple

from wit_world.imports import placement_service, placement_types, types

from . import framework

__all__ = [
    "Need",
    "Placement",
    "rule",
    "Shortfall",
    "NoFit",
    "Fit",
    "Packer",
    "Launch",
    "Packed",
    "take_ports",
]

#: Floating-point slack when comparing resources.
EPSILON = 1e-9


class Need:
    """What one task needs from an offer."""

    def __init__(
        self,
        cpus: float = 0.0,
        mem: float = 0.0,
        disk: float = 0.0,
        gpus: int = 0,
        ports: Sequence[Optional[int]] = (),
        roles: Sequence[str] = (),
        volumes: Sequence[str] = (),
        new_volumes_mb: float = 0.0,
    ) -> None:
        self.cpus = float(cpus)
        self.mem = float(mem)
        self.disk = float(disk)
        self.gpus = int(gpus)
        #: One entry per port the task gets (``PORT0`` first): a fixed host
        #: port, or None for any free one. ``Need(ports=[None] * 2)``.
        self.ports: List[Optional[int]] = list(ports)
        #: Whose resources it may take: ``*`` for unreserved, a role for its
        #: reservations. Empty: any.
        self.roles: List[str] = list(roles)
        #: Persistent volumes (by id) the task uses again.
        self.volumes: List[str] = list(volumes)
        #: Unreserved disk the task's new persistent volumes take.
        self.new_volumes_mb = float(new_volumes_mb)

    def resources(self) -> types.Resources:
        """The scalars, as the placement service takes them."""
        return types.Resources(self.cpus, self.mem, self.disk, self.gpus, [])


def rule(field: str, operator: str, value: Optional[str] = None, plugin: Optional[str] = None):
    """A placement rule, Marathon style (``rule("rack", "GROUP_BY")``),
    evaluated by ``plugin`` or else the plugin that declares the operator."""
    if not field or not operator:
        raise ValueError("a constraint needs a field and an operator")
    constraint = placement_types.Constraint(field, operator.upper(), value or None)
    return placement_service.Rule(constraint, plugin)


class Placement:
    """How a task with constraints is placed."""

    def __init__(
        self,
        group: str,
        rules: Sequence = (),
        placed: Sequence[Tuple[str, int]] = (),
    ) -> None:
        #: The group the constraints count tasks of (an app id, a queue).
        self.group = group
        #: ``rule(...)`` values.
        self.rules = list(rules)
        #: Where the group's live tasks run now: (agent id, how many). Tasks
        #: placed earlier in the same batch are added by the packer.
        self.placed = [(a, int(n)) for a, n in placed]


class Shortfall(enum.IntEnum):
    """What an offer lacked for a task; the first missing resource counts."""

    CPUS = 0
    MEM = 1
    DISK = 2
    GPUS = 3
    PORTS = 4
    #: The resources were there but a placement rule refused the agent.
    CONSTRAINTS = 5
    #: The offer already holds as many tasks as the packer puts on one.
    FULL = 6
    #: The offer lacks a persistent volume the task uses again.
    VOLUMES = 7

    def marathon_name(self) -> str:
        """Marathon's name for it (``/v2/queue``'s reject summaries)."""
        return _MARATHON_NAMES[self]


_MARATHON_NAMES = {
    Shortfall.CPUS: "InsufficientCpus",
    Shortfall.MEM: "InsufficientMemory",
    Shortfall.DISK: "InsufficientDisk",
    Shortfall.GPUS: "InsufficientGpus",
    Shortfall.PORTS: "InsufficientPorts",
    Shortfall.CONSTRAINTS: "UnfulfilledConstraint",
    Shortfall.FULL: "MaxInstancesPerOffer",
    Shortfall.VOLUMES: "NoCorrespondingReservationFound",
}


def _round(x: float) -> float:
    return round(x * 1000.0) / 1000.0


class NoFit(Exception):
    """Why a task fits none of the offers; ``str()`` says it for people."""

    def __init__(
        self,
        shortfalls: List[Shortfall],
        constraint: Optional[str],
        need: Need,
        most: Tuple[float, float, float, int],
    ) -> None:
        self.shortfalls = shortfalls
        #: The placement plugins' reason, when constraints refused every
        #: offer that had room (or the placement service failed).
        self.constraint = constraint
        self.need = need
        self.most = most
        super().__init__(self.sentence())

    def main_shortfall(self) -> Optional[Shortfall]:
        """The shortfall most offers had (the first on a tie)."""
        if not self.shortfalls:
            return None
        counts = Counter(self.shortfalls)
        return max(sorted(counts), key=lambda s: (counts[s], -int(s)))

    def sentence(self) -> str:
        cpus, mem, disk, gpus = self.most
        need = self.need
        main = self.main_shortfall()
        if main is None:
            return "no offers yet"
        if main == Shortfall.CPUS:
            return f"no offer has {need.cpus:g} cpus free (the most is {_round(cpus):g})"
        if main == Shortfall.MEM:
            return f"no offer has {need.mem:g} MB of memory free (the most is {_round(mem):g})"
        if main == Shortfall.DISK:
            return f"no offer has {need.disk:g} MB of disk free (the most is {_round(disk):g})"
        if main == Shortfall.GPUS:
            return f"no offer has {need.gpus} GPUs free (the most is {gpus})"
        if main == Shortfall.PORTS:
            fixed = [str(p) for p in need.ports if p is not None]
            if not fixed:
                return f"no offer has {len(need.ports)} free ports"
            return f"no offer has port(s) {', '.join(fixed)} free"
        if main == Shortfall.CONSTRAINTS:
            return self.constraint or "constraints not met"
        if main == Shortfall.FULL:
            return "every offer of this round is full"
        return (
            f"no offer holds the persistent volume(s) {', '.join(need.volumes)}"
            " (their agent has not offered them)"
        )


class Fit:
    """Where a task was placed: the offer's index in the batch and the host
    ports it got, in the order of :attr:`Need.ports`."""

    def __init__(self, offer: int, agent_id: str, hostname: str, ports: List[int]) -> None:
        self.offer = offer
        self.agent_id = agent_id
        self.hostname = hostname
        self.ports = ports

    def __repr__(self) -> str:
        return f"Fit(offer={self.offer}, agent={self.agent_id}, ports={self.ports})"


def take_ports(free: List[Tuple[int, int]], wants: Sequence[Optional[int]]) -> Optional[List[int]]:
    """Takes the ports a task needs from free inclusive ranges (changed in
    place): the fixed ones first (None if any is not free), then any, lowest
    first."""
    scratch = list(free)
    out = [0] * len(wants)
    for i, want in enumerate(wants):
        if want is None:
            continue
        at = next((j for j, (b, e) in enumerate(scratch) if b <= want <= e), None)
        if at is None:
            return None
        begin, end = scratch.pop(at)
        if begin < want:
            scratch.append((begin, want - 1))
        if want < end:
            scratch.append((want + 1, end))
        out[i] = want
    scratch.sort()
    for i, want in enumerate(wants):
        if want is not None:
            continue
        if not scratch:
            return None
        begin, end = scratch[0]
        out[i] = begin
        if begin == end:
            scratch.pop(0)
        else:
            scratch[0] = (begin + 1, end)
    free[:] = scratch
    return out


class _Left:
    """What is left of one offer."""

    def __init__(self, offer: types.Offer) -> None:
        r = offer.resources
        self.offer_id = offer.id
        self.agent_id = offer.agent_id
        self.hostname = offer.hostname
        self.cpus, self.mem, self.disk, self.gpus = r.cpus, r.mem, r.disk, r.gpus
        self.ports = [(p.begin, p.end) for p in r.ports]
        # role -> [cpus, mem, disk, gpus] reserved for it
        self.reserved = [
            (x.role, [x.resources.cpus, x.resources.mem, x.resources.disk, x.resources.gpus])
            for x in offer.reserved
        ]
        self.volumes = [v.id for v in offer.volumes]
        self.specs: List[types.TaskSpec] = []
        self.placed = 0

    def available(self, roles: List[str]) -> List[float]:
        """[cpus, mem, disk, gpus] a task accepting ``roles`` may take."""
        if not roles:
            return [self.cpus, self.mem, self.disk, self.gpus]
        out = [0.0, 0.0, 0.0, 0]
        if "*" in roles:
            out = [self.cpus, self.mem, self.disk, self.gpus]
            for _, s in self.reserved:
                out = [o - r for o, r in zip(out, s)]
        for role, s in self.reserved:
            if role in roles:
                out = [o + r for o, r in zip(out, s)]
        return out

    def take(self, need: Need) -> None:
        """Takes a task's scalars: from the reservations it accepts first (as
        the master assigns them), the rest unreserved."""
        want = [need.cpus, need.mem, need.disk, need.gpus]
        for role, s in self.reserved:
            if need.roles and role not in need.roles:
                continue
            for k in range(4):
                t = max(min(want[k], s[k]), 0)
                s[k] -= t
                want[k] -= t
        self.cpus -= need.cpus
        self.mem -= need.mem
        self.disk -= need.disk + need.new_volumes_mb
        self.gpus -= need.gpus
        self.volumes = [v for v in self.volumes if v not in need.volumes]

    def unreserved_disk(self) -> float:
        return self.disk - sum(s[2] for _, s in self.reserved)

    def shortfall(self, need: Need, per_offer: int) -> Optional[Shortfall]:
        cpus, mem, disk, gpus = self.available(need.roles)
        if self.placed >= per_offer:
            return Shortfall.FULL
        if need.cpus > cpus + EPSILON:
            return Shortfall.CPUS
        if need.mem > mem + EPSILON:
            return Shortfall.MEM
        if need.disk > disk + EPSILON:
            return Shortfall.DISK
        if need.gpus > gpus:
            return Shortfall.GPUS
        if take_ports(list(self.ports), need.ports) is None:
            return Shortfall.PORTS
        if any(v not in self.volumes for v in need.volumes):
            return Shortfall.VOLUMES
        if need.new_volumes_mb > 0 and (
            need.new_volumes_mb + need.disk > self.unreserved_disk() + EPSILON
        ):
            return Shortfall.DISK
        return None


class Launch:
    """The tasks to launch on one offer."""

    def __init__(self, offer_id: str, agent_id: str, hostname: str, specs: List) -> None:
        self.offer_id = offer_id
        self.agent_id = agent_id
        self.hostname = hostname
        self.specs = specs

    def send(self, refuse_seconds: Optional[float] = None) -> None:
        """Asks the master to launch the tasks on the offer; what is left of
        it is declined for ``refuse_seconds`` (default 5)."""
        framework.launch([self.offer_id], self.specs, refuse_seconds)


class Packed:
    """A batch's result: launches per offer, the offers left unused, and
    why each task went where it did and each waiting group fits nowhere
    (``decisions``, already sent to the host by :meth:`Packer.finish`)."""

    def __init__(self, launches: List[Launch], unused: List[str], decisions=None) -> None:
        self.launches = launches
        self.unused = unused
        self.decisions = decisions or []

    def send(self, refuse_seconds: Optional[float] = None) -> None:
        """Launches everything and declines the unused offers, all with
        ``refuse_seconds`` (default 5)."""
        for launch in self.launches:
            launch.send(refuse_seconds)
        if self.unused:
            framework.decline(self.unused, refuse_seconds)


Evaluate = Callable[[placement_service.Request, List[placement_service.Candidate]], List]


class Packer:
    """Places tasks on a batch of offers, one at a time."""

    def __init__(self, offers: Sequence[types.Offer], per_offer: Optional[int] = None) -> None:
        self._left = [_Left(o) for o in offers]
        #: At most this many tasks per offer (spreads a batch over agents).
        self.per_offer = max(per_offer, 1) if per_offer is not None else 1 << 62
        self._placed_now: List[Tuple[str, str]] = []
        # Decisions of the tasks placed in this batch; the last refusal of
        # each group still waiting; the last place's, until `add`.
        self._decisions: List = []
        self._refusals: dict = {}
        self._pending = None

    def __len__(self) -> int:
        return len(self._left)

    def place(
        self,
        need: Need,
        placement: Optional[Placement] = None,
        evaluate: Optional[Evaluate] = None,
    ) -> Fit:
        """Finds the best offer for a task and takes what it needs from it;
        raises :class:`NoFit`. Without ``placement`` (or with no rules) the
        first offer with room wins; with rules, the placement plugins filter
        and score the offers with room (``evaluate`` replaces the placement
        service, for tests)."""
        shortfalls: List[Optional[Shortfall]] = []
        fitting: List[int] = []
        for i, left in enumerate(self._left):
            short = left.shortfall(need, self.per_offer)
            shortfalls.append(short)
            if short is None:
                fitting.append(i)
        constraint = None
        chosen: Optional[int] = None
        verdicts = None
        if fitting and (placement is None or not placement.rules):
            chosen = fitting[0]
        elif fitting and placement is not None:
            chosen, constraint, verdicts = self._evaluate(need, placement, fitting, evaluate)
        decision = self._decide(need, placement, shortfalls, fitting, verdicts, chosen, constraint)
        if chosen is None:
            for i in fitting:
                shortfalls[i] = Shortfall.CONSTRAINTS
            most = (
                max((x.cpus for x in self._left), default=0.0),
                max((x.mem for x in self._left), default=0.0),
                max((x.disk for x in self._left), default=0.0),
                max((x.gpus for x in self._left), default=0),
            )
            no_fit = NoFit([s for s in shortfalls if s is not None], constraint, need, most)
            decision.summary = no_fit.sentence()
            self._keep_refusal(decision)
            raise no_fit
        self._pending = (chosen, decision)
        left = self._left[chosen]
        ports = take_ports(left.ports, need.ports) or []
        left.take(need)
        left.placed += 1
        if placement is not None:
            self._placed_now.append((placement.group, left.agent_id))
        return Fit(chosen, left.agent_id, left.hostname, ports)

    def _evaluate(self, need, placement, fitting, evaluate):
        candidates = [
            placement_service.Candidate(
                self._left[i].agent_id, self._left[i].cpus, self._left[i].mem, self._left[i].disk
            )
            for i in fitting
        ]
        request = placement_service.Request(
            placement.group, list(placement.rules), need.resources(), self._placed_with_batch(placement)
        )
        try:
            verdicts = (evaluate or placement_service.evaluate)(request, candidates)
        except Exception as e:  # the service's Err, or the test's
            return None, f"placement failed: {getattr(e, 'value', e)}", None
        if len(verdicts) != len(fitting):
            return None, (
                f"the placement service answered {len(verdicts)} verdicts"
                f" for {len(fitting)} candidates"
            ), None
        best = None
        for i, v in zip(fitting, verdicts):
            if v.fits and (best is None or v.score > best[1]):
                best = (i, v.score)
        if best is None:
            return None, next((v.reason for v in verdicts if v.reason), None), verdicts
        return best[0], None, verdicts

    def _decide(self, need, placement, shortfalls, fitting, verdicts, chosen, failed):
        """The decision record of one `place` (as the Rust SDK's): offers
        looked at, what ruled each out, a sample of agents, the choice."""
        verdict_at = dict(zip(fitting, verdicts)) if verdicts is not None else {}

        def reason(i):
            if shortfalls[i] is not None:
                return shortfalls[i].marathon_name()
            v = verdict_at.get(i)
            if v is not None:
                return None if v.fits else (v.reason or "UnfulfilledConstraint")
            if chosen is None and verdicts is None and i in fitting:
                return failed
            return None

        def judged(i, why):
            left = self._left[i]
            v = verdict_at.get(i)
            return placement_service.Judged(
                left.agent_id, left.hostname, why, v.score if v is not None else 0.0
            )

        able = [i for i in fitting if i != chosen and reason(i) is None]
        if verdicts is not None:
            able.sort(key=lambda i: (-verdict_at[i].score, i))
        candidates = ([judged(chosen, None)] if chosen is not None else []) + [
            judged(i, None) for i in able[:3]
        ]
        counts: Counter = Counter()
        for i in range(len(self._left)):
            why = reason(i)
            if why is None:
                continue
            counts[why] += 1
            if counts[why] <= 2 and len(candidates) < 24:
                candidates.append(judged(i, why))
        refusals = sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))
        summary = ""
        if chosen is not None:
            summary = (
                f"placed on {self._left[chosen].hostname}: {len(able) + 1}"
                f" of {len(self._left)} offers could take it"
            )
            if refusals:
                top = ", ".join(f"{n} {r}" for r, n in refusals[:3])
                summary += f"; ruled out: {top}"
        return placement_service.Decision(
            None,
            placement.group if placement is not None else "",
            need.resources(),
            list(placement.rules) if placement is not None else [],
            len(self._left),
            refusals,
            candidates,
            self._left[chosen].agent_id if chosen is not None else None,
            summary,
        )

    def _keep_refusal(self, decision) -> None:
        if decision.group:
            self._refusals.pop(decision.group, None)
            self._refusals[decision.group] = decision

    def waiting(self, group: str, why: str) -> None:
        """Records that ``group`` waits this round for something other than
        room (a backoff, a reservation): :meth:`finish` tells the host
        everything that waits, so such a group must be named."""
        if group and group not in self._refusals:
            self._keep_refusal(
                placement_service.Decision(
                    None, group, Need().resources(), [], len(self._left), [], [], None, why
                )
            )

    def _placed_with_batch(self, placement: Placement) -> List[Tuple[str, int]]:
        placed = dict(placement.placed)
        for group, agent in self._placed_now:
            if group == placement.group:
                placed[agent] = placed.get(agent, 0) + 1
        return list(placed.items())

    def add(self, fit: Fit, spec: types.TaskSpec) -> None:
        """Records the spec of a task placed by ``fit``."""
        if self._pending is not None and self._pending[0] == fit.offer:
            decision = self._pending[1]
            self._pending = None
            # Placed: whatever its group waited for before is moot.
            self._refusals.pop(decision.group, None)
            decision.task_id = spec.task_id
            self._decisions.append(decision)
        self._left[fit.offer].specs.append(spec)

    def finish(self) -> Packed:
        """The launches, one per offer with tasks, and the unused offers;
        the batch's decisions go to the host (``placement-service.explain``),
        where ``wasmos task why`` finds them (even none: nothing waits)."""
        launches, unused = [], []
        for left in self._left:
            if left.specs:
                launches.append(Launch(left.offer_id, left.agent_id, left.hostname, left.specs))
            else:
                unused.append(left.offer_id)
        decisions = self._decisions + list(self._refusals.values())
        placement_service.explain(decisions)
        return Packed(launches, unused, decisions)
