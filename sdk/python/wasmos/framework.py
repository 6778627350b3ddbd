"""The ``framework`` world: a scheduler that runs inside the leading master.

Subclass :class:`Framework` and override what the framework needs (every
method has a default), then export the class::

    from wasmos import framework, kv
    from wasmos.http import Response

    class Hello(framework.Framework):
        def http(self, request):
            return Response.text(200, "hello from a plugin\\n")

    WitWorld = framework.export(Hello)

The instance can be rebuilt at any time (after a failure, on a new leader)
and ``init`` always runs first on a new one: keep what must last in
:mod:`wasmos.kv`. Calls are serialized, each under a deadline; an exception
that escapes ``offers``, ``status`` or ``tick`` fails the call, which then
commits nothing (a status update is delivered again).

The master's actions: :func:`launch`, :func:`decline`, :func:`kill`,
:func:`revive`, :func:`suppress`, :func:`destroy_volumes`,
:func:`draining_agents`; :func:`task` builds a task's spec and
:mod:`wasmos.offers` fits tasks into offers.
"""

from typing import Any, Dict, Iterable, List, Mapping, Optional, Sequence, Type, Union

import wit_world
from componentize_py_types import Err
from wit_world.imports import clock, driver, types

from . import Config, start
from .http import HttpError, Request, Response

__all__ = [
    "Framework",
    "export",
    "Offer",
    "TaskSpec",
    "TaskState",
    "TaskStatus",
    "DriverError",
    "launch",
    "decline",
    "kill",
    "revive",
    "suppress",
    "destroy_volumes",
    "draining_agents",
    "now_ms",
    "task",
    "is_terminal",
    "state_name",
    "OfferInterest",
]

Offer = types.Offer
TaskSpec = types.TaskSpec
TaskState = types.TaskState
TaskStatus = types.TaskStatus
KeyValue = types.KeyValue


class DriverError(ValueError):
    """The master refused an action at once (e.g. a malformed task)."""


class Framework:
    """A scheduler. Override what the framework needs."""

    def init(self, config: Config) -> None:
        """The first call on a new instance, with the plugin's configuration.
        Read durable state from :mod:`wasmos.kv` here; raise ``ValueError``
        to refuse the configuration (the plugin is marked failed with the
        message)."""

    def offers(self, offers: List[Offer]) -> None:
        """New offers. The default declines them all for 5 seconds."""
        ids = [o.id for o in offers]
        if ids:
            decline(ids)

    def status(self, update: TaskStatus) -> None:
        """A task's status changed (in order per task, at least once)."""

    def tick(self, now_ms: int) -> None:
        """About once a second."""

    def http(self, request: Request) -> Response:
        """A request to ``/frameworks/<name>/...``. The default is 404."""
        return Response.error(404, "no such endpoint")


def export(cls: Type[Framework]) -> type:
    """The world class componentize-py looks for (``WitWorld``), serving
    one instance of ``cls``."""
    holder: List[Framework] = []

    class _World(wit_world.WitWorld):
        def init(self, config) -> None:
            holder[:] = [start(cls, config)]

        def offers(self, offers) -> None:
            if holder:
                holder[0].offers(list(offers))

        def status(self, update) -> None:
            if holder:
                holder[0].status(update)

        def tick(self, now_ms) -> None:
            if holder:
                holder[0].tick(now_ms)

        def handle_http(self, request):
            if not holder:
                return Response.error(503, "plugin not initialized").to_wit()
            try:
                response = holder[0].http(Request.from_wit(request))
            except HttpError as e:
                response = e.response()
            return response.to_wit()

    _World.__name__ = "WitWorld"
    return _World


def launch(
    offer_ids: Sequence[str],
    tasks: Sequence[TaskSpec],
    refuse_seconds: Optional[float] = None,
) -> None:
    """Launches ``tasks`` on the offers (all from one agent); what is left of
    them is declined for ``refuse_seconds`` (default 5). Raises
    :class:`DriverError` when a task is malformed; a task that does not fit
    comes back later as ``TASK_ERROR`` through ``status``."""
    try:
        driver.launch(list(offer_ids), list(tasks), refuse_seconds)
    except Err as e:
        raise DriverError(str(e.value)) from None


def decline(offer_ids: Sequence[str], refuse_seconds: Optional[float] = None) -> None:
    """Gives offers back; their agents are not offered again for
    ``refuse_seconds`` (default 5)."""
    driver.decline(list(offer_ids), refuse_seconds)


def kill(task_id: str) -> None:
    """Kills a task (SIGTERM, then SIGKILL after its grace period)."""
    driver.kill(task_id)


def revive() -> None:
    """Asks for offers again, clearing refuse filters."""
    driver.revive()


def suppress() -> None:
    """Asks for no offers until :func:`revive`."""
    driver.suppress()


def destroy_volumes(agent_id: str, volume_ids: Sequence[str]) -> None:
    """Destroys persistent volumes of the framework's role on an agent."""
    driver.destroy_volumes(agent_id, list(volume_ids))


def draining_agents() -> List[str]:
    """The agents to move tasks off (being drained or in maintenance)."""
    return list(driver.draining_agents())


def now_ms() -> int:
    """Milliseconds since the Unix epoch, as the master sees it."""
    return clock.now_ms()


def _pairs(values: Union[None, Mapping[str, str], Iterable]) -> List[KeyValue]:
    if values is None:
        return []
    if isinstance(values, Mapping):
        return [types.KeyValue(str(k), str(v)) for k, v in values.items()]
    return [types.KeyValue(str(k), str(v)) for k, v in values]


def task(
    task_id: str,
    command: Union[str, Sequence[str]],
    *,
    name: Optional[str] = None,
    cpus: float = 0.1,
    mem: float = 32.0,
    disk: float = 0.0,
    gpus: int = 0,
    ports: Sequence[int] = (),
    env: Union[None, Mapping[str, str], Iterable] = None,
    user: Optional[str] = None,
    labels: Union[None, Mapping[str, str], Iterable] = None,
    kill_grace_period_ms: Optional[int] = None,
    health_check: Optional[types.HealthCheck] = None,
    readiness_check: Optional[types.HealthCheck] = None,
    container: Optional[types.Container] = None,
    fetch: Sequence[types.FetchUri] = (),
    accepted_roles: Sequence[str] = (),
    volumes: Sequence[types.Volume] = (),
    discovery: Sequence[types.DiscoveryPort] = (),
) -> TaskSpec:
    """A task's spec with the usual defaults. ``command`` is a shell line
    (a string, run with ``/bin/sh -c``) or an argv (a list, executed
    directly); ``ports`` are the host ports it was given (an offer's
    ``Fit.ports``), ``PORT0``... in its environment."""
    if isinstance(command, str):
        cmd = types.Command(True, command, [], _pairs(env), user)
    else:
        argv = [str(a) for a in command]
        if not argv:
            raise ValueError("a task's command needs at least the program")
        cmd = types.Command(False, argv[0], argv, _pairs(env), user)
    resources = types.Resources(
        float(cpus),
        float(mem),
        float(disk),
        int(gpus),
        [types.PortRange(p, p) for p in ports],
    )
    return types.TaskSpec(
        task_id,
        name if name is not None else task_id,
        resources,
        cmd,
        _pairs(labels),
        kill_grace_period_ms,
        health_check,
        container,
        list(fetch),
        readiness_check,
        list(accepted_roles),
        list(volumes),
        list(discovery),
    )


_TERMINAL = {
    TaskState.FINISHED,
    TaskState.FAILED,
    TaskState.KILLED,
    TaskState.ERROR,
    TaskState.LOST,
    TaskState.DROPPED,
    TaskState.GONE,
    TaskState.GONE_BY_OPERATOR,
}


def is_terminal(state: TaskState) -> bool:
    """Whether the task will not change again."""
    return state in _TERMINAL


def state_name(state: TaskState) -> str:
    """The Mesos name of a state, e.g. ``TASK_RUNNING``."""
    return "TASK_" + state.name


class OfferInterest:
    """Asks the master for offers only while the framework has something to
    launch: ``revive`` when it starts wanting, ``suppress`` when it stops,
    nothing while that does not change. Keep one per instance."""

    def __init__(self) -> None:
        self._suppressed: Optional[bool] = None

    def want(self, want: bool) -> None:
        if self._suppressed != (not want):
            if want:
                revive()
            else:
                suppress()
            self._suppressed = not want

    def more(self) -> None:
        """New work arrived: revive now, even while already asking, so offers
        declined a moment ago come back at once."""
        revive()
        self._suppressed = False


def statuses_by_name() -> Dict[str, TaskState]:
    """Every state by its Mesos name (``TASK_RUNNING`` → RUNNING)."""
    return {state_name(s): s for s in TaskState}
