"""Unit tests of {{name}} against a fake host: `./test.sh`."""

import unittest

from componentize_py_types import Err
from fakes import Host
from wit_world.imports import isolator_types as it
from wit_world.imports import types

import app


class PluginTest(unittest.TestCase):
    def setUp(self):
        self.host = Host()
        self.world = app.WitWorld()

    def test_every_task_gets_the_configured_limit(self):
        self.world.init([types.KeyValue("limit", "1024")])
        spec = it.ContainerSpec("c1", "t1", "fw", None, types.Resources(0.1, 32.0, 0.0, 0, []), [], [])
        a = self.world.prepare(spec)
        self.assertEqual([(r.name, r.soft, r.hard) for r in a.rlimits], [("nofile", 1024, 1024)])

    def test_a_bad_limit_is_refused(self):
        with self.assertRaises(Err):
            self.world.init([types.KeyValue("limit", "many")])


if __name__ == "__main__":
    unittest.main()
