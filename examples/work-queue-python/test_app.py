"""The work queue against a fake host (sdk/python/test.sh runs this): jobs
are queued, packed into offers, retried, cancelled, and all of it is in kv,
so a new instance carries on. The e2e test runs it on a real cluster."""

import json
import unittest

from fakes import Host
from wit_world.imports import types

import app


def offer(oid, cpus=1.0, mem=256.0):
    return types.Offer(
        oid, f"agent-{oid}", f"host-{oid}", types.Resources(cpus, mem, 100.0, 0, []), [], [], []
    )


def status(task_id, state, exit_code=None, message=None):
    return types.TaskStatus(
        task_id, state, "agent-a", message, None, exit_code, None, None, 0.0, "u"
    )


class WorkQueueTest(unittest.TestCase):
    def setUp(self):
        self.host = Host()
        self.world = self.new_instance()

    def new_instance(self, config=(("max-retries", "1"),)):
        world = app.WitWorld()
        world.init([types.KeyValue(k, v) for k, v in config])
        return world

    def call(self, method, path, body=None, query=""):
        raw = json.dumps(body).encode() if body is not None else b""
        r = self.world.handle_http(
            types.HttpRequest(method, path, query, [types.KeyValue("x-wasmos-principal", "alice")], raw)
        )
        return r.status, json.loads(r.body) if r.body else None

    def test_jobs_run_in_order_of_submission_as_far_as_offers_go(self):
        for i in range(3):
            code, job = self.call("POST", "/jobs", {"cmd": f"echo {i}", "cpus": 0.4})
            self.assertEqual(code, 201, job)
        self.assertEqual(job["submitted_by"], "alice")
        self.world.offers([offer("a")])
        launched = self.host.launched()
        self.assertEqual([t.task_id for t in launched], ["wq.job-1.1", "wq.job-2.1"])
        self.assertEqual(launched[0].command.value, "echo 0")
        self.assertEqual(self.call("GET", "/jobs/job-3")[1]["waiting_for"],
                         "no offer has 0.4 cpus free (the most is 0.2)")
        self.assertEqual(self.call("GET", "/")[1]["launched"], 2)

    def test_a_failed_job_is_retried_then_failed_and_stale_statuses_change_nothing(self):
        self.call("POST", "/jobs", {"id": "flaky", "cmd": "exit 3"})
        self.world.offers([offer("a")])
        self.world.status(status("wq.flaky.1", types.TaskState.FAILED, 3, "exited 3"))
        self.assertEqual(self.call("GET", "/jobs/flaky")[1]["state"], "queued")
        self.world.offers([offer("b")])
        self.assertEqual(self.host.launched()[-1].task_id, "wq.flaky.2")
        # A late update about the first attempt is ignored.
        self.world.status(status("wq.flaky.1", types.TaskState.RUNNING))
        self.assertEqual(self.call("GET", "/jobs/flaky")[1]["state"], "launched")
        self.world.status(status("wq.flaky.2", types.TaskState.FAILED, 3, "exited 3"))
        job = self.call("GET", "/jobs/flaky")[1]
        self.assertEqual((job["state"], job["attempts"], job["exit_code"]), ("failed", 2, 3))
        self.assertEqual(job["last_failure"], "TASK_FAILED: exited 3")

    def test_state_survives_a_new_instance(self):
        self.call("POST", "/jobs", {"id": "long", "cmd": "sleep 100"})
        self.world.offers([offer("a")])
        self.world = self.new_instance()
        self.world.status(status("wq.long.1", types.TaskState.RUNNING))
        self.world.status(status("wq.long.1", types.TaskState.FINISHED, 0))
        self.assertEqual(self.call("GET", "/jobs/long")[1]["state"], "finished")
        self.assertEqual(self.call("POST", "/jobs", {"cmd": "true"})[1]["id"], "job-2")

    def test_cancelling_kills_a_running_job_and_drops_a_queued_one(self):
        self.call("POST", "/jobs", {"id": "run", "cmd": "sleep 100"})
        self.world.offers([offer("a")])
        self.call("POST", "/jobs", {"id": "wait", "cmd": "true"})
        self.host.take_actions()
        self.assertEqual(self.call("DELETE", "/jobs/run")[1]["state"], "cancelling")
        self.assertEqual(self.host.actions, [("kill", "wq.run.1")])
        self.world.status(status("wq.run.1", types.TaskState.KILLED))
        self.assertEqual(self.call("GET", "/jobs/run")[1]["state"], "cancelled")
        self.assertEqual(self.call("DELETE", "/jobs/wait")[1]["state"], "cancelled")
        self.host.take_actions()
        self.world.offers([offer("b")])
        self.assertEqual(self.host.launched(), [], "nothing is left to launch")
        self.world.tick(0)
        self.assertIn(("suppress",), self.host.actions)

    def test_bad_submissions_are_400s_that_name_the_field_and_change_nothing(self):
        cases = [
            ({"cmd": ""}, "cmd"),
            ({"cmd": "true", "id": "a/b"}, "id"),
            ({"cmd": "true", "cpus": "lots"}, "cpus"),
            ({"cmd": "true", "mem": 0}, "mem"),
            ([1, 2], "JSON object"),
        ]
        for body, field in cases:
            code, err = self.call("POST", "/jobs", body)
            self.assertEqual(code, 400, body)
            self.assertIn(field, err["message"])
        self.assertEqual(self.host.kv, {})
        self.call("POST", "/jobs", {"id": "x", "cmd": "true"})
        self.assertEqual(self.call("POST", "/jobs", {"id": "x", "cmd": "true"})[0], 409)
        self.assertEqual(self.call("GET", "/jobs", query="state=bogus")[0], 400)
        self.assertEqual(self.call("GET", "/jobs/nope")[0], 404)

    def test_a_bad_configuration_is_refused(self):
        from componentize_py_types import Err

        with self.assertRaisesRegex(Err, "max-retries"):
            self.new_instance((("max-retries", "many"),))


if __name__ == "__main__":
    unittest.main()
