"""BINPACK against a fake host (sdk/python/test.sh runs this); the e2e test
places real tasks with it."""

import unittest

from componentize_py_types import Err
from fakes import Host
from wit_world.imports import placement_types as pt
from wit_world.imports import types

import app


def agent(index, cpus=4.0, mem=1024.0):
    return pt.AgentChange_Upsert(
        pt.AgentView(index, f"a{index}", f"h{index}", [], types.Resources(cpus, mem, 100.0, 0, []))
    )


def task(value=None, field="cpus", cpus=1.0, mem=64.0):
    return pt.PlacementTask(
        "/app", [pt.Constraint(field, "BINPACK", value)], types.Resources(cpus, mem, 0.0, 0, []), []
    )


class BinPackTest(unittest.TestCase):
    def setUp(self):
        self.host = Host()
        self.world = app.WitWorld()
        self.world.init([])
        self.world.agents_changed([agent(0), agent(1), agent(2)])

    def test_the_fullest_agent_with_room_scores_best(self):
        # Free cpus of 4: a0 empty, a1 half full, a2 three quarters full.
        cands = [pt.Candidate(0, 4.0, 1024.0, 100.0), pt.Candidate(1, 2.0, 1024.0, 100.0),
                 pt.Candidate(2, 1.0, 1024.0, 100.0)]
        scores = self.world.score(task(), cands)
        self.assertEqual(scores, [0.25, 0.75, 1.0])
        self.assertEqual(self.world.filter(task(), cands), [True, True, True])

    def test_a_maximum_fill_refuses_agents_the_task_would_fill_past_it(self):
        cands = [pt.Candidate(0, 4.0, 1024.0, 100.0), pt.Candidate(1, 2.0, 1024.0, 100.0)]
        self.assertEqual(self.world.filter(task("0.5"), cands), [True, False])
        self.assertEqual(self.world.filter(task("0.75"), cands), [True, True])

    def test_memory_is_packed_by_its_own_share(self):
        cands = [pt.Candidate(0, 4.0, 1024.0, 100.0), pt.Candidate(1, 4.0, 512.0, 100.0)]
        scores = self.world.score(task(field="mem", mem=256.0), cands)
        self.assertEqual(scores, [0.25, 0.75])

    def test_an_unknown_agent_never_fits(self):
        self.world.agents_changed([pt.AgentChange_Removed(2)])
        self.assertEqual(self.world.filter(task(), [pt.Candidate(2, 4.0, 1.0, 1.0)]), [False])

    def test_bad_rules_are_refused_naming_what_is_wrong(self):
        for field, value, want in [
            ("rack", None, "must be one of cpus, mem, disk"),
            ("cpus", "lots", "maximum fill"),
            ("mem", "1.5", "at most 1"),
            ("mem", "0", "above 0"),
        ]:
            with self.assertRaises(Err) as e:
                self.world.validate([pt.Constraint(field, "BINPACK", value)])
            self.assertIn(want, e.exception.value)
        self.world.validate([pt.Constraint("disk", "BINPACK", "0.9")])


if __name__ == "__main__":
    unittest.main()
