"""The ``isolator`` world: computes how a container is set up (environment,
resource limits, cgroup limits, mounts); the agent validates and enforces.

Subclass :class:`Isolator`, override :meth:`Isolator.prepare` (and
``cleanup``, ``init``), then export the class::

    from wasmos import isolator

    class Files(isolator.Isolator):
        def prepare(self, spec):
            return isolator.Adjustments(rlimits={"nofile": (1024, 4096)})

    WitWorld = isolator.export(Files)

Raising ``ValueError`` in ``prepare`` stops the launch: the task fails with
the message.
"""

from typing import Dict, List, Mapping, Optional, Sequence, Tuple, Type, Union

import wit_world
from componentize_py_types import Err
from wit_world.imports import isolator_types

from . import Config, config_of, start

__all__ = ["Isolator", "Spec", "Adjustments", "RLIMITS", "export"]

#: The limits the host applies, by their names without ``RLIMIT_``.
RLIMITS = ("nofile", "nproc", "core", "stack", "fsize", "memlock", "as", "cpu", "data")


class Spec:
    """A container about to start, as the isolator sees it."""

    def __init__(self, raw: isolator_types.ContainerSpec) -> None:
        self.container_id: str = raw.container_id
        self.task_id: str = raw.task_id
        self.framework_id: str = raw.framework_id
        self.user: Optional[str] = raw.user
        r = raw.resources
        self.cpus, self.mem, self.disk, self.gpus = r.cpus, r.mem, r.disk, r.gpus
        self.labels: Dict[str, str] = config_of(raw.labels)
        #: The environment the task would get.
        self.environment: Dict[str, str] = config_of(raw.environment)

    def label(self, key: str, default: Optional[str] = None) -> Optional[str]:
        return self.labels.get(key, default)


class Adjustments:
    """What the isolator asks the host to do for the container."""

    def __init__(
        self,
        environment: Optional[Mapping[str, str]] = None,
        rlimits: Optional[Mapping[str, Union[int, Tuple[int, int]]]] = None,
        memory_mb: Optional[int] = None,
        cpu_shares: Optional[int] = None,
        pids_max: Optional[int] = None,
        mounts: Sequence[Tuple[str, str, bool]] = (),
    ) -> None:
        #: Variables added to the task's environment.
        self.environment: Dict[str, str] = dict(environment or {})
        #: name -> limit, or (soft, hard).
        self.rlimits: Dict[str, Union[int, Tuple[int, int]]] = dict(rlimits or {})
        self.memory_mb = memory_mb
        self.cpu_shares = cpu_shares
        self.pids_max = pids_max
        #: (source, target, read only) bind mounts.
        self.mounts = list(mounts)

    def to_wit(self) -> isolator_types.Adjustments:
        from wit_world.imports import types

        rlimits = []
        for name, value in self.rlimits.items():
            if name not in RLIMITS:
                raise ValueError(f"rlimit {name!r} is not one of {', '.join(RLIMITS)}")
            soft, hard = value if isinstance(value, tuple) else (value, value)
            if not 0 <= soft <= hard:
                raise ValueError(f"rlimit {name}: soft {soft} must be between 0 and hard {hard}")
            rlimits.append(isolator_types.Rlimit(name, int(soft), int(hard)))
        return isolator_types.Adjustments(
            [types.KeyValue(k, v) for k, v in self.environment.items()],
            rlimits,
            isolator_types.CgroupLimits(self.memory_mb, self.cpu_shares, self.pids_max),
            [isolator_types.Mount(s, t, bool(ro)) for s, t, ro in self.mounts],
        )


class Isolator:
    """An isolator. One instance serves every container of the agent."""

    def init(self, config: Config) -> None:
        """Reads the plugin's configuration; raise ``ValueError`` to refuse
        it."""

    def prepare(self, spec: Spec) -> Adjustments:
        """What the container needs; raise ``ValueError`` to stop the launch
        with the message. The default changes nothing."""
        return Adjustments()

    def cleanup(self, container_id: str) -> None:
        """The container ended (best effort)."""


def export(cls: Type[Isolator]) -> type:
    """The world class componentize-py looks for (``WitWorld``), serving
    one instance of ``cls``."""
    holder: List[Isolator] = []

    class _World(wit_world.WitWorld):
        def init(self, config) -> None:
            holder[:] = [start(cls, config)]

        def prepare(self, spec) -> isolator_types.Adjustments:
            if not holder:
                raise Err("the isolator was not initialised")
            try:
                return holder[0].prepare(Spec(spec)).to_wit()
            except ValueError as e:
                raise Err(str(e)) from None

        def cleanup(self, container_id) -> None:
            if holder:
                holder[0].cleanup(container_id)

    _World.__name__ = "WitWorld"
    return _World
