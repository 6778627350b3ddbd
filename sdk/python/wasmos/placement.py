"""The ``placement`` world: decides which agents may take a task, and which
are better.

The library keeps the plugin's view of the agents (:class:`Agents`) up to
date from the host's changes. Subclass :class:`Placement`, override
:meth:`Placement.filter` (and ``score``, ``validate``, ``init`` as needed)
against it, then export the class::

    from wasmos import placement

    class Avoid(placement.Placement):
        def filter(self, task, candidates):
            return [
                all(self.agents[c.agent].field(r.field) != r.value
                    for r in task.constraints)
                for c in candidates
            ]

    WitWorld = placement.export(Avoid)

Only tasks with a constraint whose operator the plugin declares in its
manifest (``operators = ["AVOID"]``) reach it, with just those constraints.
Candidates come as indices into :class:`Agents` with what is free there;
keep per-candidate work small (caches keyed on ``agents.version``).
"""

from typing import Dict, Iterator, List, Optional, Type

import wit_world
from componentize_py_types import Err
from wit_world.imports import placement_types

from . import Config, config_of, start

__all__ = [
    "Placement",
    "Agents",
    "Agent",
    "Constraint",
    "PlacementTask",
    "Candidate",
    "export",
]

Constraint = placement_types.Constraint
PlacementTask = placement_types.PlacementTask
Candidate = placement_types.Candidate


class Agent:
    """An agent as placement sees it: what it offers in all (not what is
    free: that comes with each candidate)."""

    __slots__ = ("index", "id", "hostname", "attributes", "cpus", "mem", "disk", "gpus")

    def __init__(self, view: placement_types.AgentView) -> None:
        self.index: int = view.index
        self.id: str = view.id
        self.hostname: str = view.hostname
        self.attributes: Dict[str, str] = config_of(view.attributes)
        r = view.resources
        self.cpus: float = r.cpus
        self.mem: float = r.mem
        self.disk: float = r.disk
        self.gpus: int = r.gpus

    def field(self, name: str) -> Optional[str]:
        """``hostname`` (or ``@hostname``) is the host name; anything else an
        attribute (``@zone`` is ``zone``)."""
        if name in ("hostname", "@hostname"):
            return self.hostname
        return self.attributes.get(name[1:] if name.startswith("@") else name)

    def total(self, resource: str) -> float:
        """What the agent offers of ``cpus``, ``mem``, ``disk`` or ``gpus``."""
        if resource not in ("cpus", "mem", "disk", "gpus"):
            raise ValueError(f"{resource!r} is not cpus, mem, disk or gpus")
        return float(getattr(self, resource))

    def __repr__(self) -> str:
        return f"Agent({self.index}, {self.hostname})"


class Agents:
    """The agents, as the host last described them, by index."""

    def __init__(self) -> None:
        self._by_index: Dict[int, Agent] = {}
        #: Changes whenever the agents do: caches built from them are valid
        #: while it stays the same.
        self.version = 0

    def apply(self, changes: List[placement_types.AgentChange]) -> None:
        if changes:
            self.version += 1
        for change in changes:
            if isinstance(change, placement_types.AgentChange_Upsert):
                self._by_index[change.value.index] = Agent(change.value)
            else:
                self._by_index.pop(change.value, None)

    def get(self, index: int) -> Optional[Agent]:
        """The agent at ``index``, if known."""
        return self._by_index.get(index)

    def __getitem__(self, index: int) -> Agent:
        return self._by_index[index]

    def __contains__(self, index: int) -> bool:
        return index in self._by_index

    def __iter__(self) -> Iterator[Agent]:
        return iter(self._by_index.values())

    def __len__(self) -> int:
        return len(self._by_index)


class Placement:
    """A placement plugin. One instance serves every call; ``self.agents``
    is kept up to date by the library."""

    agents: Agents

    def init(self, config: Config) -> None:
        """Reads the plugin's configuration; raise ``ValueError`` to refuse
        it."""

    def validate(self, constraints: List[Constraint]) -> None:
        """Checks constraints before they are used (when an app is created,
        say): raise ``ValueError`` with what is wrong. The default accepts
        all."""

    def filter(self, task: PlacementTask, candidates: List[Candidate]) -> List[bool]:
        """For each candidate, whether the task may go there (one entry per
        candidate, in order)."""
        raise NotImplementedError("a placement plugin overrides filter()")

    def score(self, task: PlacementTask, candidates: List[Candidate]) -> List[float]:
        """For each candidate, how good a place it is (higher is better; the
        host adds the scores of all placement plugins). Default: 0 for all."""
        return [0.0] * len(candidates)


def _checked(what: str, values: List, candidates: List) -> List:
    if len(values) != len(candidates):
        raise ValueError(
            f"{what} returned {len(values)} answers for {len(candidates)} candidates"
        )
    return values


def export(cls: Type[Placement]) -> type:
    """The world class componentize-py looks for (``WitWorld``), serving
    one instance of ``cls``."""
    holder: List[Placement] = []

    class _World(wit_world.WitWorld):
        def init(self, config) -> None:
            def with_agents(plugin: Placement) -> None:
                plugin.agents = Agents()

            holder[:] = [start(cls, config, with_agents)]

        def agents_changed(self, changes) -> None:
            if holder:
                holder[0].agents.apply(changes)

        def validate(self, constraints) -> None:
            if not holder:
                raise Err("plugin not initialized")
            try:
                holder[0].validate(list(constraints))
            except ValueError as e:
                raise Err(str(e)) from None

        def filter(self, task, candidates) -> List[bool]:
            if not holder:
                return [False] * len(candidates)
            fits = holder[0].filter(task, list(candidates))
            return [bool(f) for f in _checked("filter", list(fits), candidates)]

        def score(self, task, candidates) -> List[float]:
            if not holder:
                return [0.0] * len(candidates)
            scores = holder[0].score(task, list(candidates))
            return [float(s) for s in _checked("score", list(scores), candidates)]

    _World.__name__ = "WitWorld"
    return _World
