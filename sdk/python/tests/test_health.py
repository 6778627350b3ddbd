"""The health-check world's library: targets, probes and verdicts, against
a fake host."""

import unittest

from fakes import Host
from wit_world.imports import health_types, types

from wasmos import health


class HttpCheck(health.HealthCheck):
    def check(self, target):
        response = health.http_get(target.port(), target.param("path", "/"), target.timeout_ms)
        if response.status != 200:
            return health.unhealthy(f"status {response.status}")
        return health.healthy(response.body.decode())


def target(ports=(8080,), **params):
    return health_types.CheckTarget(
        "t1", "127.0.0.1", list(ports), [types.KeyValue(k.replace("_", "-"), v) for k, v in params.items()], 500
    )


class HealthTest(unittest.TestCase):
    def setUp(self):
        self.host = Host()
        self.world = health.export(HttpCheck)()
        self.world.init([])

    def test_a_probe_answer_becomes_the_verdict(self):
        self.host.open_ports = {8080: (200, b"ok"), 9000: (503, b"")}
        self.assertEqual(self.world.check(target()), health_types.CheckResult(True, "ok"))
        self.assertEqual(
            self.world.check(target(ports=(8080, 9000), port_index="1")),
            health_types.CheckResult(False, "status 503"),
        )

    def test_a_refused_probe_or_a_bad_parameter_is_unhealthy_with_why(self):
        self.assertEqual(
            self.world.check(target()),
            health_types.CheckResult(False, "connection to port 8080 refused"),
        )
        self.assertEqual(
            self.world.check(target(port_index="2")).message,
            "the task has no port at index 2 (it has 1)",
        )
        self.assertEqual(self.world.check(target(port="http")).message, "port 'http' is not a port number")

    def test_a_check_before_init_is_unhealthy(self):
        fresh = health.export(HttpCheck)()
        self.assertFalse(fresh.check(target()).healthy)


if __name__ == "__main__":
    unittest.main()
