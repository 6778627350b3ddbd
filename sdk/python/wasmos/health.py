"""The ``health-check`` world: a check the agent runs on its interval for
every task that names the plugin.

Subclass :class:`HealthCheck`, override :meth:`HealthCheck.check` (and
:meth:`HealthCheck.init` to read the configuration), then export the class
with ``WitWorld = export(MyCheck)``. Probes (``http_get``, ``https_get``,
``tcp_connect``, ``exec``) reach only the task's own host and ports; a
failed probe raises :class:`ProbeError`.
"""

from typing import List, Optional, Type

import wit_world
from componentize_py_types import Err
from wit_world.imports import health_types, probe

from . import Config, config_of, start

__all__ = [
    "HealthCheck",
    "Target",
    "Result",
    "ProbeError",
    "healthy",
    "unhealthy",
    "http_get",
    "https_get",
    "tcp_connect",
    "exec_command",
    "export",
]

#: What a check returns: ``healthy`` and a message shown to users.
Result = health_types.CheckResult


class ProbeError(Exception):
    """A probe that could not be made (refused, timed out, not allowed)."""


def healthy(message: str) -> Result:
    return health_types.CheckResult(True, message)


def unhealthy(message: str) -> Result:
    return health_types.CheckResult(False, message)


class Target:
    """The task to check: its id, host, ports, the check's parameters and
    how long the check may take."""

    def __init__(self, raw: health_types.CheckTarget) -> None:
        self.task_id: str = raw.task_id
        self.host: str = raw.host
        self.ports: List[int] = list(raw.ports)
        self.params: Config = config_of(raw.config)
        self.timeout_ms: int = raw.timeout_ms

    def param(self, key: str, default: Optional[str] = None) -> Optional[str]:
        """A parameter of the check, or ``default``."""
        return self.params.get(key, default)

    def port(self) -> int:
        """The port to check: ``port`` if given, else the task's port at
        ``port-index`` (default 0). Raises ``ValueError`` with a message
        for users."""
        given = self.param("port")
        if given is not None:
            try:
                return int(given)
            except ValueError:
                raise ValueError(f"port {given!r} is not a port number") from None
        raw_index = self.param("port-index", "0")
        try:
            index = int(raw_index)
        except ValueError:
            raise ValueError(f"port-index {raw_index!r} is not a number") from None
        if not 0 <= index < len(self.ports):
            raise ValueError(
                f"the task has no port at index {index} (it has {len(self.ports)})"
            )
        return self.ports[index]


def _probe(call, *args):
    try:
        return call(*args)
    except Err as e:
        raise ProbeError(str(e.value)) from None


def http_get(port: int, path: str, timeout_ms: int) -> probe.HttpResponse:
    """``GET http://<task host>:<port><path>``: status and the first 4 KiB."""
    return _probe(probe.http_get, port, path, timeout_ms)


def https_get(port: int, path: str, timeout_ms: int) -> probe.HttpResponse:
    """The same over TLS (the task's certificate is not verified)."""
    return _probe(probe.https_get, port, path, timeout_ms)


def tcp_connect(port: int, timeout_ms: int) -> None:
    """Opens and closes a TCP connection to the task's port."""
    _probe(probe.tcp_connect, port, timeout_ms)


def exec_command(command: str, timeout_ms: int) -> probe.ExecResult:
    """Runs ``/bin/sh -c command`` where the task runs (exit code, output)."""
    return _probe(probe.exec, command, timeout_ms)


class HealthCheck:
    """A health check. One instance serves every check of the agent."""

    def init(self, config: Config) -> None:
        """Reads the plugin's configuration; raise ``ValueError`` to refuse
        it (the message reaches the operator)."""

    def check(self, target: Target) -> Result:
        """Checks ``target`` once."""
        raise NotImplementedError("a health check overrides check()")


def export(cls: Type[HealthCheck]) -> type:
    """The world class componentize-py looks for (``WitWorld``), serving
    one instance of ``cls``."""
    holder: List[HealthCheck] = []

    class _World(wit_world.WitWorld):
        def init(self, config) -> None:
            holder[:] = [start(cls, config)]

        def check(self, target) -> Result:
            if not holder:
                return unhealthy("the plugin was not initialised")
            try:
                return holder[0].check(Target(target))
            except ValueError as e:
                return unhealthy(str(e))
            except ProbeError as e:
                return unhealthy(str(e))

    _World.__name__ = "WitWorld"
    return _World
