"""Unit tests of {{name}} against a fake host: `./test.sh`."""

import unittest

from fakes import Host
from wit_world.imports import health_types, types

import app


def target(**params):
    return health_types.CheckTarget("t1", "127.0.0.1", [8080],
                                    [types.KeyValue(k, v) for k, v in params.items()], 500)


class PluginTest(unittest.TestCase):
    def setUp(self):
        self.host = Host()
        self.world = app.WitWorld()
        self.world.init([])

    def test_the_body_decides(self):
        self.host.open_ports = {8080: (200, b"all good")}
        self.assertTrue(self.world.check(target(expect="good")).healthy)
        self.assertFalse(self.world.check(target(expect="bad")).healthy)

    def test_a_refused_connection_is_unhealthy(self):
        self.assertFalse(self.world.check(target()).healthy)


if __name__ == "__main__":
    unittest.main()
