"""The framework world's library: kv, HTTP, the driver, task specs, offer
interest and packing, against a fake host."""

import unittest

from componentize_py_types import Err
from fakes import Host
from wit_world.imports import placement_service, types

from wasmos import framework, kv, offers
from wasmos.http import HttpError, Request, Response


def offer(oid, cpus=1.0, mem=256.0, ports=((31000, 31009),), reserved=(), volumes=()):
    return types.Offer(
        oid,
        f"agent-{oid}",
        f"host-{oid}",
        types.Resources(cpus, mem, 1000.0, 0, [types.PortRange(b, e) for b, e in ports]),
        [],
        [
            types.RoleResources(role, types.Resources(c, m, 0.0, 0, []))
            for role, c, m in reserved
        ],
        [types.OfferedVolume(v, "r", 10.0, "data") for v in volumes],
    )


def wit_request(method, path, query="", body=b"", headers=()):
    return types.HttpRequest(
        method, path, query, [types.KeyValue(k, v) for k, v in headers], body
    )


class KvTest(unittest.TestCase):
    def setUp(self):
        self.host = Host()

    def test_values_round_trip_and_keys_list_a_prefix_in_byte_order(self):
        kv.set_json("job/b", {"n": 2})
        kv.set_json("job/a", {"n": 1})
        kv.set("other", b"x")
        self.assertEqual(kv.get_json("job/a"), {"n": 1})
        self.assertEqual(kv.keys("job/"), ["job/a", "job/b"])
        kv.delete("job/a")
        kv.delete("never-there")
        self.assertEqual(kv.keys("job/"), ["job/b"])
        self.assertIsNone(kv.get("job/a"))

    def test_undecodable_or_missing_json_gives_the_default(self):
        kv.set("bad", b"{not json")
        self.assertEqual(kv.get_json("bad", "dflt"), "dflt")
        self.assertIsNone(kv.get_json("missing"))

    def test_a_refused_write_raises_with_the_hosts_reason(self):
        with self.assertRaisesRegex(kv.KvError, "over 1 MiB"):
            kv.set("big", b"x" * ((1 << 20) + 1))


class HttpTest(unittest.TestCase):
    def test_paths_and_queries_are_decoded(self):
        r = Request.from_wit(
            wit_request(
                "GET",
                "//jobs/a%20b+c/",
                "a=1&name=hello%20world+x&bad=%zz&e=1&e%5B%5D=2",
                headers=[("Content-Type", "application/json")],
            )
        )
        self.assertEqual(r.segments(), ["jobs", "a%20b+c"])
        self.assertEqual(r.decoded_segments(), ["jobs", "a b+c"])
        self.assertEqual(r.query_param("name"), "hello world x")
        self.assertEqual(r.query_param("bad"), "%zz")
        self.assertEqual(r.query_params("e"), ["1", "2"])
        self.assertEqual(r.query_param("missing", "d"), "d")
        self.assertEqual(r.header("content-type"), "application/json")

    def test_a_bad_json_body_is_a_400_that_says_why(self):
        r = Request("POST", "/jobs", body=b'{"cmd": ')
        with self.assertRaises(HttpError) as e:
            r.json()
        self.assertEqual(e.exception.status, 400)
        self.assertIn("invalid JSON body", e.exception.message)

    def test_responses_carry_their_content_type(self):
        w = Response.json(201, {"id": "j1"}).to_wit()
        self.assertEqual((w.status, w.body), (201, b'{"id":"j1"}'))
        self.assertEqual(w.headers[0].value, "application/json")
        self.assertEqual(Response.error(404, "no job").body, b'{"message":"no job"}')
        self.assertEqual(Response.text(200, "hi").headers[0][1], "text/plain; charset=utf-8")


class Echo(framework.Framework):
    def init(self, config):
        if config.get("fail"):
            raise ValueError("fail is set")
        self.greeting = config.get("greeting", "hi")

    def http(self, request):
        if request.path == "/boom":
            raise HttpError(418, "no coffee")
        return Response.text(200, self.greeting)


class ExportTest(unittest.TestCase):
    def setUp(self):
        self.host = Host()
        self.world = framework.export(Echo)()

    def test_a_refused_configuration_is_the_init_error(self):
        with self.assertRaises(Err) as e:
            self.world.init([types.KeyValue("fail", "1")])
        self.assertEqual(e.exception.value, "fail is set")

    def test_http_before_init_is_503_and_http_errors_become_responses(self):
        self.assertEqual(self.world.handle_http(wit_request("GET", "/")).status, 503)
        self.world.init([types.KeyValue("greeting", "hello")])
        ok = self.world.handle_http(wit_request("GET", "/"))
        self.assertEqual((ok.status, ok.body), (200, b"hello"))
        boom = self.world.handle_http(wit_request("GET", "/boom"))
        self.assertEqual((boom.status, boom.body), (418, b'{"message":"no coffee"}'))

    def test_the_default_offers_handler_declines_everything(self):
        self.world.init([])
        self.world.offers([offer("o1"), offer("o2")])
        self.assertEqual(self.host.actions, [("decline", ["o1", "o2"], None)])


class DriverTest(unittest.TestCase):
    def setUp(self):
        self.host = Host()

    def test_task_builds_shell_and_argv_commands_with_defaults(self):
        t = framework.task("t1", "echo $PORT0", ports=[31000], env={"A": "1"}, labels={"x": "y"})
        self.assertTrue(t.command.shell)
        self.assertEqual(t.command.value, "echo $PORT0")
        self.assertEqual([(p.begin, p.end) for p in t.resources.ports], [(31000, 31000)])
        self.assertEqual((t.resources.cpus, t.resources.mem), (0.1, 32.0))
        self.assertEqual(t.name, "t1")
        self.assertEqual([(kv.key, kv.value) for kv in t.command.environment], [("A", "1")])
        argv = framework.task("t2", ["sleep", "5"], user="nobody")
        self.assertFalse(argv.command.shell)
        self.assertEqual((argv.command.value, argv.command.arguments), ("sleep", ["sleep", "5"]))
        self.assertEqual(argv.command.user, "nobody")
        with self.assertRaisesRegex(ValueError, "at least the program"):
            framework.task("t3", [])

    def test_a_refused_launch_raises_with_the_masters_reason(self):
        self.host.launch_error = "task id 'a/b' has a '/'"
        with self.assertRaisesRegex(framework.DriverError, "has a '/'"):
            framework.launch(["o1"], [framework.task("a/b", "true")])

    def test_offer_interest_revives_and_suppresses_only_on_change(self):
        interest = framework.OfferInterest()
        interest.want(True)
        interest.want(True)
        interest.want(False)
        interest.want(False)
        interest.more()
        interest.want(True)
        self.assertEqual(
            [a[0] for a in self.host.actions], ["revive", "suppress", "revive"]
        )

    def test_terminal_states_and_their_mesos_names(self):
        self.assertTrue(framework.is_terminal(framework.TaskState.FINISHED))
        self.assertTrue(framework.is_terminal(framework.TaskState.GONE_BY_OPERATOR))
        self.assertFalse(framework.is_terminal(framework.TaskState.UNREACHABLE))
        self.assertEqual(framework.state_name(framework.TaskState.KILLING), "TASK_KILLING")
        self.assertEqual(framework.now_ms(), self.host.now)


class PackerTest(unittest.TestCase):
    def setUp(self):
        self.host = Host()

    def test_tasks_fill_the_first_offer_with_room_and_get_ports_lowest_first(self):
        p = offers.Packer([offer("a", cpus=0.5), offer("b", cpus=2.0)])
        first = p.place(offers.Need(cpus=0.4, mem=64, ports=[None, 31005]))
        self.assertEqual((first.offer, first.ports), (0, [31000, 31005]))
        second = p.place(offers.Need(cpus=0.4, mem=64, ports=[None]))
        self.assertEqual((second.offer, second.agent_id, second.ports), (1, "agent-b", [31000]))
        third = p.place(offers.Need(cpus=0.1, ports=[31005]))
        self.assertEqual(third.offer, 1, "31005 is taken on a")
        p.add(first, framework.task("t1", "true"))
        packed = p.finish()
        self.assertEqual([l.offer_id for l in packed.launches], ["a"])
        self.assertEqual(packed.unused, ["b"])
        packed.send(refuse_seconds=30)
        self.assertEqual(
            [(a[0], a[1], a[-1]) for a in self.host.actions],
            [("launch", ["a"], 30), ("decline", ["b"], 30)],
        )

    def test_no_fit_names_what_most_offers_lacked(self):
        p = offers.Packer([offer("a", cpus=1.0), offer("b", cpus=1.5)])
        with self.assertRaises(offers.NoFit) as e:
            p.place(offers.Need(cpus=2, mem=1))
        self.assertEqual(str(e.exception), "no offer has 2 cpus free (the most is 1.5)")
        self.assertEqual(e.exception.main_shortfall().marathon_name(), "InsufficientCpus")
        with self.assertRaisesRegex(offers.NoFit, r"port\(s\) 80 free"):
            p.place(offers.Need(cpus=0.1, ports=[80]))
        with self.assertRaisesRegex(offers.NoFit, "no offers yet"):
            offers.Packer([]).place(offers.Need())

    def test_reserved_resources_go_only_to_tasks_that_accept_the_role(self):
        p = offers.Packer([offer("a", cpus=2.0, reserved=[("web", 1.5, 0.0)])])
        with self.assertRaisesRegex(offers.NoFit, "cpus"):
            p.place(offers.Need(cpus=1.0, roles=["*"]))
        fit = p.place(offers.Need(cpus=1.5, roles=["web"]))
        self.assertEqual(fit.offer, 0)
        # The reservation is used up; 0.5 unreserved cpus remain.
        with self.assertRaisesRegex(offers.NoFit, "cpus"):
            p.place(offers.Need(cpus=0.1, roles=["web"]))
        p.place(offers.Need(cpus=0.5, roles=["*"]))

    def test_per_offer_limit_spreads_a_batch(self):
        p = offers.Packer([offer("a"), offer("b")], per_offer=1)
        self.assertEqual([p.place(offers.Need(cpus=0.1)).offer for _ in range(2)], [0, 1])
        with self.assertRaisesRegex(offers.NoFit, "full"):
            p.place(offers.Need(cpus=0.1))

    def test_constraints_go_to_the_placement_service_with_the_batch_counted(self):
        asked = []

        def evaluate(request, candidates):
            asked.append((dict(request.placed), [c.agent_id for c in candidates]))
            # UNIQUE by hand: an agent with one of the group's tasks is unfit;
            # among the rest, the most memory scores best.
            return [
                placement_service.Verdict(
                    request_count(request, c.agent_id) == 0,
                    c.mem,
                    "UNIQUE: taken" if request_count(request, c.agent_id) else None,
                )
                for c in candidates
            ]

        self.host.evaluate = evaluate
        p = offers.Packer([offer("a", mem=128), offer("b", mem=512), offer("c", mem=256)])
        rules = [offers.rule("hostname", "unique")]
        self.assertEqual(rules[0].constraint.operator, "UNIQUE")
        placement = offers.Placement("/app", rules, placed=[("agent-c", 1)])
        got = [p.place(offers.Need(cpus=0.1), placement).agent_id for _ in range(2)]
        self.assertEqual(got, ["agent-b", "agent-a"])
        self.assertEqual(asked[1][0], {"agent-c": 1, "agent-b": 1})
        with self.assertRaises(offers.NoFit) as e:
            p.place(offers.Need(cpus=0.1), placement)
        self.assertEqual(str(e.exception), "UNIQUE: taken")
        self.assertEqual(e.exception.main_shortfall(), offers.Shortfall.CONSTRAINTS)

    def test_finish_explains_each_placement_and_what_still_waits(self):
        def evaluate(request, candidates):
            return [
                placement_service.Verdict(
                    request_count(request, c.agent_id) == 0,
                    c.mem,
                    None if request_count(request, c.agent_id) == 0 else "constraints: [hostname, UNIQUE] not met",
                )
                for c in candidates
            ]

        self.host.evaluate = evaluate
        p = offers.Packer([offer("a", mem=128), offer("b", mem=512), offer("small", cpus=0.01)])
        placement = offers.Placement("/app", [offers.rule("hostname", "UNIQUE")])
        for i in range(2):
            fit = p.place(offers.Need(cpus=0.1), placement)
            p.add(fit, framework.task(f"t{i}", "sleep 9"))
        with self.assertRaises(offers.NoFit):
            p.place(offers.Need(cpus=0.1), placement)
        p.waiting("/delayed", "delayed after failed tasks")
        packed = p.finish()
        self.assertEqual(self.host.explained, [packed.decisions])
        first, second, refused, delayed = packed.decisions
        self.assertEqual((first.task_id, first.chosen), ("t0", "agent-b"))
        self.assertEqual(first.candidates[0].hostname, "host-b")
        self.assertEqual(first.refusals, [("InsufficientCpus", 1)])
        self.assertTrue(first.summary.startswith("placed on host-b: 2 of 3 offers"), first.summary)
        self.assertEqual((second.task_id, second.chosen), ("t1", "agent-a"))
        self.assertEqual((refused.task_id, refused.chosen, refused.group), (None, None, "/app"))
        self.assertEqual(
            dict(refused.refusals),
            {"constraints: [hostname, UNIQUE] not met": 2, "InsufficientCpus": 1},
        )
        self.assertEqual((delayed.group, delayed.summary), ("/delayed", "delayed after failed tasks"))

    def test_a_failing_placement_service_is_the_reason(self):
        p = offers.Packer([offer("a")])
        placement = offers.Placement("/app", [offers.rule("rack", "GROUP_BY")])
        with self.assertRaisesRegex(offers.NoFit, "placement failed: no placement plugin"):
            p.place(offers.Need(cpus=0.1), placement)

    def test_take_ports_keeps_the_rest_free(self):
        free = [(100, 102), (200, 200)]
        self.assertEqual(offers.take_ports(free, [None, 200, None]), [100, 200, 101])
        self.assertEqual(free, [(102, 102)])
        self.assertIsNone(offers.take_ports(free, [None, None]))
        self.assertEqual(free, [(102, 102)], "a failed take changes nothing")


def request_count(request, agent_id):
    return dict(request.placed).get(agent_id, 0)


if __name__ == "__main__":
    unittest.main()
