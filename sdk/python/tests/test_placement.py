"""The placement world's library: the agents view and the export's checks,
against a fake host."""

import unittest

from componentize_py_types import Err
from fakes import Host
from wit_world.imports import placement_types as pt
from wit_world.imports import types

from wasmos import placement


def view(index, host, rack, cpus=4.0):
    return pt.AgentView(
        index,
        f"id-{host}",
        host,
        [types.KeyValue("rack", rack)],
        types.Resources(cpus, 1024.0, 1000.0, 0, []),
    )


def task(*constraints):
    return pt.PlacementTask(
        "/app",
        [pt.Constraint(f, op, v) for f, op, v in constraints],
        types.Resources(1.0, 64.0, 0.0, 0, []),
        [],
    )


class Rack(placement.Placement):
    def init(self, config):
        self.rack = config.get("rack", "r1")

    def validate(self, constraints):
        for c in constraints:
            if c.value is None:
                raise ValueError(f"[{c.field}, {c.operator}] needs a value")

    def filter(self, task, candidates):
        return [self.agents[c.agent].field("@rack") == self.rack for c in candidates]

    def score(self, task, candidates):
        if task.group == "/short":
            return [1.0]
        return [self.agents[c.agent].cpus for c in candidates]


class PlacementTest(unittest.TestCase):
    def setUp(self):
        self.host = Host()
        self.world = placement.export(Rack)()
        self.world.init([types.KeyValue("rack", "r2")])

    def test_the_agents_view_follows_upserts_and_removals(self):
        self.world.agents_changed(
            [pt.AgentChange_Upsert(view(0, "h1", "r1")), pt.AgentChange_Upsert(view(1, "h2", "r2"))]
        )
        cands = [pt.Candidate(0, 1.0, 1.0, 1.0), pt.Candidate(1, 1.0, 1.0, 1.0)]
        self.assertEqual(self.world.filter(task(), cands), [False, True])
        self.world.agents_changed(
            [pt.AgentChange_Upsert(view(0, "h1", "r2", cpus=8.0)), pt.AgentChange_Removed(1)]
        )
        self.assertEqual(self.world.filter(task(), cands[:1]), [True])
        self.assertEqual(self.world.score(task(), cands[:1]), [8.0])
        agent = Rack.__new__(Rack)
        agent.agents = placement.Agents()
        agent.agents.apply([pt.AgentChange_Upsert(view(3, "h9", "r1"))])
        a = agent.agents[3]
        self.assertEqual((a.field("hostname"), a.field("@hostname"), a.field("rack")), ("h9", "h9", "r1"))
        self.assertIsNone(a.field("zone"))
        self.assertEqual((len(agent.agents), agent.agents.version), (1, 1))
        with self.assertRaisesRegex(ValueError, "not cpus, mem, disk or gpus"):
            a.total("ports")

    def test_a_bad_constraint_is_refused_with_the_plugins_reason(self):
        with self.assertRaises(Err) as e:
            self.world.validate([pt.Constraint("rack", "AVOID", None)])
        self.assertEqual(e.exception.value, "[rack, AVOID] needs a value")
        self.world.validate([pt.Constraint("rack", "AVOID", "r1")])

    def test_an_answer_of_the_wrong_length_is_an_error_not_a_silent_misplacement(self):
        self.world.agents_changed([pt.AgentChange_Upsert(view(0, "h1", "r1"))])
        cands = [pt.Candidate(0, 1.0, 1.0, 1.0)] * 2
        with self.assertRaisesRegex(ValueError, "returned 1 answers for 2 candidates"):
            self.world.score(pt.PlacementTask("/short", [], types.Resources(0, 0, 0, 0, []), []), cands)

    def test_before_init_nothing_fits(self):
        fresh = placement.export(Rack)()
        self.assertEqual(fresh.filter(task(), [pt.Candidate(0, 1.0, 1.0, 1.0)]), [False])


if __name__ == "__main__":
    unittest.main()
