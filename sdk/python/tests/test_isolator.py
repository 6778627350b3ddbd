"""The isolator world's library: specs in, adjustments out, errors that
stop a launch."""

import unittest

from componentize_py_types import Err
from fakes import Host
from wit_world.imports import isolator_types as it
from wit_world.imports import types

from wasmos import isolator


class ByLabel(isolator.Isolator):
    def init(self, config):
        self.default = int(config.get("nofile", "1024"))
        self.ended = []

    def prepare(self, spec):
        if spec.label("forbidden"):
            raise ValueError(f"task {spec.task_id} is forbidden")
        nofile = int(spec.label("nofile", str(self.default)))
        return isolator.Adjustments(
            environment={"TASK_MEM": str(int(spec.mem))},
            rlimits={"nofile": nofile, "core": (0, 0), **({"bogus": 1} if spec.label("bogus") else {})},
            pids_max=64,
        )

    def cleanup(self, container_id):
        self.ended.append(container_id)


def spec(**labels):
    return it.ContainerSpec(
        "c1", "t1", "fw", None, types.Resources(0.5, 128.0, 0.0, 0, []),
        [types.KeyValue(k, v) for k, v in labels.items()], [],
    )


class IsolatorTest(unittest.TestCase):
    def setUp(self):
        self.host = Host()
        self.world = isolator.export(ByLabel)()
        self.world.init([types.KeyValue("nofile", "2048")])

    def test_adjustments_reach_the_host_in_its_types(self):
        a = self.world.prepare(spec(nofile="4096"))
        self.assertEqual([(r.name, r.soft, r.hard) for r in a.rlimits], [("nofile", 4096, 4096), ("core", 0, 0)])
        self.assertEqual([(kv.key, kv.value) for kv in a.environment], [("TASK_MEM", "128")])
        self.assertEqual(a.cgroup, it.CgroupLimits(None, None, 64))
        self.assertEqual(self.world.prepare(spec()).rlimits[0].soft, 2048)

    def test_a_refusal_or_a_bad_limit_stops_the_launch_with_why(self):
        with self.assertRaises(Err) as e:
            self.world.prepare(spec(forbidden="1"))
        self.assertEqual(e.exception.value, "task t1 is forbidden")
        with self.assertRaises(Err) as e:
            self.world.prepare(spec(bogus="1"))
        self.assertIn("rlimit 'bogus' is not one of nofile", e.exception.value)


if __name__ == "__main__":
    unittest.main()
