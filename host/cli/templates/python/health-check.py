"""{{name}}: a health check, made by `wasmos plugin new`.

Healthy when `GET <path>` on the task's port answers 2xx and its body
contains `expect` (check parameters `path`, `expect`, `port` or
`port-index`). The plugin cannot open sockets: it asks the host, which
lets it reach only the task's own ports.
"""

from wasmos import health


class Plugin(health.HealthCheck):
    def check(self, target):
        port = target.port()
        response = health.http_get(port, target.param("path", "/"), target.timeout_ms)
        if not 200 <= response.status < 300:
            return health.unhealthy(f"HTTP {response.status}")
        expect = target.param("expect", "")
        if expect not in response.body.decode("utf-8", "replace"):
            return health.unhealthy(f"the body does not contain {expect!r}")
        return health.healthy(f"HTTP {response.status}")


WitWorld = health.export(Plugin)
