"""Unit tests of {{name}} against a fake host: `./test.sh`."""

import unittest

from fakes import Host
from wit_world.imports import placement_types as pt
from wit_world.imports import types

import app


def agent(index, rack):
    view = pt.AgentView(index, f"a{index}", f"h{index}", [types.KeyValue("rack", rack)],
                        types.Resources(4.0, 1024.0, 100.0, 0, []))
    return pt.AgentChange_Upsert(view)


class PluginTest(unittest.TestCase):
    def setUp(self):
        self.host = Host()
        self.world = app.WitWorld()
        self.world.init([])
        self.world.agents_changed([agent(0, "r1"), agent(1, "r2")])

    def test_agents_with_the_avoided_value_are_refused(self):
        task = pt.PlacementTask("/app", [pt.Constraint("rack", "AVOID", "r1")],
                                types.Resources(1.0, 64.0, 0.0, 0, []), [])
        cands = [pt.Candidate(0, 2.0, 512.0, 10.0), pt.Candidate(1, 1.0, 512.0, 10.0)]
        self.assertEqual(self.world.filter(task, cands), [False, True])
        self.assertEqual(self.world.score(task, cands), [2.0, 1.0])


if __name__ == "__main__":
    unittest.main()
