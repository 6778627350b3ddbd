"""Unit tests of {{name}} against a fake host: `./test.sh`."""

import json
import unittest

from fakes import Host
from wit_world.imports import types

import app


def offer(oid):
    return types.Offer(oid, "agent-1", "host-1", types.Resources(1.0, 256.0, 0.0, 0, []), [], [], [])


class PluginTest(unittest.TestCase):
    def setUp(self):
        self.host = Host()
        self.world = app.WitWorld()
        self.world.init([types.KeyValue("greeting", "hi")])

    def test_a_run_asked_for_is_launched_on_the_next_offer(self):
        r = self.world.handle_http(types.HttpRequest("POST", "/run", "", [], b""))
        self.assertEqual(r.status, 202)
        self.world.offers([offer("o1")])
        launched = self.host.launched()
        self.assertEqual([t.task_id for t in launched], ["{{name}}-1"])
        self.assertEqual(launched[0].command.arguments, ["echo", "hi"])
        r = self.world.handle_http(types.HttpRequest("GET", "/", "", [], b""))
        self.assertEqual(json.loads(r.body), {"launched": 1, "waiting": 0})


if __name__ == "__main__":
    unittest.main()
