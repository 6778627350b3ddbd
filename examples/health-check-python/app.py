"""A TCP health check, written in Python and built with componentize-py.

Healthy when a TCP connection to the task's port opens. Check parameters:
`port-index` (default 0). The plugin has no sockets of its own: it asks the
host through `probe`, which reaches only the task's own ports.
"""

from componentize_py_types import Err

import wit_world
from wit_world.imports import health_types, log, probe


class WitWorld(wit_world.WitWorld):
    def init(self, config):
        log.log(log.Level.DEBUG, "health-tcp-py ready")

    def check(self, target):
        params = {kv.key: kv.value for kv in target.config}
        try:
            index = int(params.get("port-index", "0"))
        except ValueError:
            return health_types.CheckResult(False, "port-index is not a number")
        if index >= len(target.ports):
            return health_types.CheckResult(
                False, f"the task has no port at index {index} (it has {len(target.ports)})"
            )
        port = target.ports[index]
        try:
            probe.tcp_connect(port, target.timeout_ms)
        except Err as e:
            return health_types.CheckResult(False, str(e.value))
        return health_types.CheckResult(True, f"port {port} accepts connections (Python)")
