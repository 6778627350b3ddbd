"""A TCP health check, written in Python with the Wasmos library
(sdk/python) and built with componentize-py.

Healthy when a TCP connection to the task's port opens. Check parameters:
`port` or `port-index` (default 0). The plugin has no sockets of its own: it
asks the host to probe, and the host reaches only the task's own ports.
"""

from wasmos import health, log


class TcpCheck(health.HealthCheck):
    def init(self, config):
        log.debug("health-tcp-py ready")

    def check(self, target):
        # A bad parameter or a refused connection comes back unhealthy,
        # with the reason.
        port = target.port()
        health.tcp_connect(port, target.timeout_ms)
        return health.healthy(f"port {port} accepts connections (Python)")


WitWorld = health.export(TcpCheck)
