"""Runs a Mesos framework written with pymesos (PyPI `pymesos` 0.3.15),
unchanged, against Wasmos' v1 scheduler API. pymesos speaks plain HTTP
only (raw sockets), so it talks to the master's plaintext listener
(`--plain-listen`), authenticated as a principal with HTTP Basic, as a
Mesos framework with `--authenticate_http_frameworks` would. pymesos
acknowledges every update that carries a uuid from its I/O thread, and
dies on any non-2xx answer to that: each acknowledgement below that does
not kill the driver was answered 202.

Usage: pymesos_scheduler.py MODE HOST:PORT PRINCIPAL SECRET [FRAMEWORK_ID]

MODE:
  tour      subscribe, launch two tasks (one finishes after checking it does
            not run as root, one keeps running), reconcile explicitly,
            implicitly and an unknown task, kill the running one, refuse a
            bad task, then tear the framework down.
  start     subscribe with a failover timeout (env FAILOVER, seconds),
            launch one long task, wait for TASK_RUNNING, print
            `framework: ID` and `left: <unix time>`, and vanish without
            tearing down (the process exits at once).
  resume    re-subscribe as FRAMEWORK_ID, reconcile, expect the task of
            `start` running, kill it, and tear down.
  greedy    subscribe in role $ROLE (as framework $NAME) and, once the file
            $GO exists, launch one task of $CPUS cpus per offer (sleep 600),
            forever; print `framework: ID` when subscribed.
  stateful  subscribe in role $ROLE; in one ACCEPT reserve what a task
            needs, create persistent volume `v1` on it and launch a task
            writing to it; once that task has finished, launch a second one
            on the volume as offered, which succeeds only if it reads what
            the first wrote (and the file is in the role's volumes directory
            $VOLUMES on the agent); then destroy the volume and unreserve, and wait
            for offers with nothing reserved. Fails if any offer carries
            resources reserved for another role.
  stateful-write, stateful-read
            `stateful` in two runs: the first (with a failover timeout,
            env FAILOVER) stops once the writer finished, printing
            `framework: ID`; the second re-subscribes as FRAMEWORK_ID and
            reads the volume back, then cleans up.
  reserved  subscribe in role $ROLE and wait for an offer holding $CPUS cpus
            statically reserved for it (`role` and no `reservation`).
  executor  launch two tasks to one custom executor ($EXECUTOR_SCRIPT,
            i.e. pymesos_executor.py, run with $EXECUTOR_PYTHON; with a
            failover timeout when env FAILOVER is set, so that it can
            outlive a restart of agent and master): one keeps running; the other, launched
            to the running executor, finishes (not as root), reporting the
            container's memory limit, grown for it; the executor's updates
            carry its executor_id; exchange framework messages with the executor;
            once the file $GO exists, message it again, then kill the
            running task; the executor, left without tasks, is shut down
            (executorLost). A task naming the same executor id with another
            command is refused. `framework: ID` is printed while the
            executor runs.
  maintenance
            run one long task; once subscribed with it running, print
            `framework: ID`; wait for an inverse offer for its agent (its
            machine scheduled for maintenance) and accept it, and for an offer
            carrying its `unavailability`; then write what they said as JSON
            to the file $DONE and keep running.
  faults    the fault run's framework (tests/faults): partition-aware,
            with a failover timeout, it launches a task from an offer
            whenever fewer than two of its tasks are active (task `f-<n>`
            appends a line to $RUNS/f-<n>, then sleeps 0-5 s), and appends
            each launch (written before the ACCEPT), subscription and
            status update to $HISTORY (JSON lines). Started again after a
            crash, it reads $HISTORY back and re-subscribes as the framework
            id it recorded. Once the file $STOP exists it launches nothing
            more, reconciles until every task it launched is in a terminal
            state (two minutes at most), records the states and tears down.
  group     LAUNCH_GROUP to the default executor: a group whose tasks both
            finish, a group where one task fails and the other is killed for
            it, and an invalid group refused whole (REASON_TASK_GROUP_INVALID).
"""

import json
import os
import sys
import threading
import time

from addict import Dict
from pymesos import MesosSchedulerDriver, Scheduler, decode_data, encode_data

from common import wait

mode, master, principal, secret = sys.argv[1:5]
resume_id = sys.argv[5] if len(sys.argv) > 5 else None


def resources(cpus, mem):
    return [
        dict(name="cpus", type="SCALAR", scalar=dict(value=cpus)),
        dict(name="mem", type="SCALAR", scalar=dict(value=mem)),
    ]


class Recorder(Scheduler):
    def __init__(self, to_launch):
        self.lock = threading.Lock()
        self.to_launch = list(to_launch)
        self.updates = []  # (task id, state, reason, carried a uuid)
        self.registered_id = None
        self.was_reregistered = False
        self.errors = []
        self.offers = 0

    def registered(self, driver, framework_id, master_info):
        self.registered_id = framework_id.value

    def reregistered(self, driver, master_info):
        self.was_reregistered = True

    def resourceOffers(self, driver, offers):
        with self.lock:
            for offer in offers:
                self.offers += 1
                launch = []
                while self.to_launch:
                    task_id, command, extra = self.to_launch.pop(0)
                    t = Dict()
                    t.task_id.value = task_id
                    t.agent_id.value = offer.agent_id.value
                    t.name = task_id
                    t.command.value = command
                    t.resources = resources(0.1, 32)
                    for k, v in extra.items():
                        t[k] = v
                    launch.append(t)
                if launch:
                    driver.launchTasks(offer.id, launch, filters=dict(refuse_seconds=1))
                else:
                    driver.declineOffer(offer.id, filters=dict(refuse_seconds=3600))

    def statusUpdate(self, driver, update):
        with self.lock:
            self.updates.append((update.task_id.value, update.state, update.get("reason"),
                                 "uuid" in update))

    def error(self, driver, message):
        self.errors.append(message)

    def seen(self, task_id, state, reason=None):
        with self.lock:
            return any(u[0] == task_id and u[1] == state and (reason is None or u[2] == reason)
                       for u in self.updates)

    def states(self, task_id):
        with self.lock:
            return [u[1] for u in self.updates if u[0] == task_id]


def framework(name, failover=None, fid=None):
    f = Dict()
    f.user = ""  # the agents' unprivileged task user
    f.name = name
    f.principal = principal
    f.hostname = "pymesos-test"
    if failover is not None:
        f.failover_timeout = failover
    if fid:
        f.id.value = fid
    return f


def driver_for(sched, f):
    d = MesosSchedulerDriver(sched, f, master, use_addict=True,
                             principal=principal, secret=secret)
    d.start()
    return d


def tour():
    nonroot = 'test "$(id -u)" != 0'
    sched = Recorder([
        ("py-done", nonroot, {}),
        ("py-long", "sleep 600", {}),
        # A command and an executor both: refused, with the reason.
        ("py-bad", "true", {"executor": {"executor_id": {"value": "e"},
                                         "command": {"value": "true"}}}),
    ])
    d = driver_for(sched, framework("pymesos-tour"))
    wait("SUBSCRIBED", lambda: sched.registered_id is not None)
    wait("py-done TASK_FINISHED (a task that is not root)",
         lambda: sched.seen("py-done", "TASK_FINISHED"), 90)
    assert "TASK_FAILED" not in sched.states("py-done"), sched.updates
    wait("py-long TASK_RUNNING", lambda: sched.seen("py-long", "TASK_RUNNING"), 90)
    wait("py-bad TASK_ERROR", lambda: sched.seen("py-bad", "TASK_ERROR", "REASON_TASK_INVALID"))
    # Every update from an agent carried a uuid (pymesos acknowledged it).
    with sched.lock:
        agent_updates = [u for u in sched.updates if u[1] in ("TASK_RUNNING", "TASK_FINISHED")]
    assert agent_updates and all(u[3] for u in agent_updates), sched.updates

    d.reconcileTasks([{"task_id": {"value": "py-long"}}])
    wait("explicit reconciliation of py-long",
         lambda: sched.seen("py-long", "TASK_RUNNING", "REASON_RECONCILIATION"))
    d.reconcileTasks([{"task_id": {"value": "py-never-launched"}}])
    wait("an unknown task reconciled as TASK_LOST (not partition aware)",
         lambda: sched.seen("py-never-launched", "TASK_LOST", "REASON_RECONCILIATION"))
    with sched.lock:
        before = len(sched.updates)
    d.reconcileTasks([])
    wait("implicit reconciliation", lambda: len(sched.updates) > before)
    with sched.lock:
        implicit = sched.updates[before:]
    assert all(u[0] == "py-long" and not u[3] for u in implicit), implicit

    d.killTask({"value": "py-long"})
    wait("py-long TASK_KILLED", lambda: sched.seen("py-long", "TASK_KILLED"), 60)
    assert not sched.errors, sched.errors
    d.stop()  # TEARDOWN
    d.join()
    print("pymesos tour: ok", flush=True)


def start():
    sched = Recorder([("py-survivor", "sleep 600", {})])
    driver_for(sched, framework("pymesos-failover", failover=float(os.environ["FAILOVER"])))
    wait("SUBSCRIBED", lambda: sched.registered_id is not None)
    wait("py-survivor TASK_RUNNING", lambda: sched.seen("py-survivor", "TASK_RUNNING"), 90)
    print(f"framework: {sched.registered_id}", flush=True)
    print(f"left: {time.time()}", flush=True)
    print("pymesos start: ok", flush=True)
    os._exit(0)


def resume():
    sched = Recorder([])
    d = driver_for(sched, framework("pymesos-failover", failover=3600, fid=resume_id))
    wait("re-SUBSCRIBED", lambda: sched.was_reregistered, 90)
    d.reconcileTasks([{"task_id": {"value": "py-survivor"}}])
    wait("py-survivor still running", lambda: sched.seen("py-survivor", "TASK_RUNNING"), 60)
    d.killTask({"value": "py-survivor"})
    wait("py-survivor TASK_KILLED", lambda: sched.seen("py-survivor", "TASK_KILLED"), 60)
    assert not sched.errors, sched.errors
    d.stop()
    d.join()
    print("pymesos resume: ok", flush=True)


class Greedy(Scheduler):
    """Takes one task's worth of every offer once $GO exists."""

    def __init__(self):
        self.n = 0
        self.registered_id = None

    def registered(self, driver, framework_id, master_info):
        self.registered_id = framework_id.value

    def resourceOffers(self, driver, offers):
        cpus = float(os.environ["CPUS"])
        for offer in offers:
            free = sum(r.scalar.value for r in offer.resources if r.name == "cpus")
            if not os.path.exists(os.environ["GO"]) or free < cpus:
                driver.declineOffer(offer.id, filters=dict(refuse_seconds=1))
                continue
            self.n += 1
            t = Dict()
            t.task_id.value = f"{os.environ['NAME']}-{self.n}"
            t.agent_id.value = offer.agent_id.value
            t.name = t.task_id.value
            t.command.value = "sleep 600"
            t.resources = resources(cpus, 32)
            driver.launchTasks(offer.id, [t], filters=dict(refuse_seconds=0))


def greedy():
    sched = Greedy()
    f = framework(os.environ["NAME"], failover=5)
    f.role = os.environ["ROLE"]
    driver_for(sched, f)
    wait("SUBSCRIBED", lambda: sched.registered_id is not None)
    print(f"framework: {sched.registered_id}", flush=True)
    while True:
        time.sleep(1)


def scalar(name, value, role=None, **extra):
    r = dict(name=name, type="SCALAR", scalar=dict(value=value), **extra)
    if role:
        # The pre-refinement format pymesos frameworks use.
        r["role"] = role
        r["reservation"] = dict(principal=principal)
    return r


class Stateful(Scheduler):
    """Reserve, create a volume, write, read it back, destroy, unreserve."""

    def __init__(self, role):
        self.role = role
        self.lock = threading.Lock()
        self.phase = "reserve"
        self.updates = {}
        self.registered_id = None
        self.was_reregistered = False
        self.foreign = []
        self.errors = []

    def registered(self, driver, framework_id, master_info):
        self.registered_id = framework_id.value

    def reregistered(self, driver, master_info):
        self.was_reregistered = True

    def statusUpdate(self, driver, update):
        with self.lock:
            self.updates.setdefault(update.task_id.value, []).append(update.state)

    def error(self, driver, message):
        self.errors.append(message)

    def task(self, offer, task_id, command, resources):
        t = Dict()
        t.task_id.value = task_id
        t.agent_id.value = offer.agent_id.value
        t.name = task_id
        t.command.value = command
        t.resources = resources
        return t

    def resourceOffers(self, driver, offers):
        with self.lock:
            for offer in offers:
                mine = [r for r in offer.resources if r.get("role", "*") == self.role]
                self.foreign += [r for r in offer.resources
                                 if r.get("role", "*") not in ("*", self.role)]
                volume = [r for r in mine if r.get("disk", {}).get("persistence")]
                reserved = [r for r in mine if not r.get("disk", {}).get("persistence")]
                free = {r.name: r.scalar.value for r in offer.resources
                        if r.get("role", "*") == "*" and r.type == "SCALAR"}
                if self.phase == "reserve" and free.get("cpus", 0) >= 0.1 \
                        and free.get("disk", 0) >= 16:
                    want = [scalar("cpus", 0.1, self.role), scalar("mem", 32, self.role),
                            scalar("disk", 16, self.role)]
                    vol = scalar("disk", 8, self.role, disk=dict(
                        persistence=dict(id="v1", principal=principal),
                        volume=dict(container_path="data", mode="RW")))
                    writer = self.task(offer, "py-writer",
                                       'echo kept > data/f && test "$(id -u)" != 0',
                                       want[:2] + [vol])
                    driver.acceptOffers([offer.id], [
                        dict(type="RESERVE", reserve=dict(resources=want)),
                        dict(type="CREATE", create=dict(volumes=[vol])),
                        dict(type="LAUNCH", launch=dict(task_infos=[writer])),
                    ], filters=dict(refuse_seconds=0))
                    self.phase = "writing"
                elif self.phase == "read" and volume:
                    cpu_mem = [r for r in reserved if r.name in ("cpus", "mem")]
                    reader = self.task(offer, "py-reader", 'test "$(cat data/f)" = kept',
                                       cpu_mem + volume)
                    driver.launchTasks(offer.id, [reader], filters=dict(refuse_seconds=0))
                    self.phase = "reading"
                elif self.phase == "clean" and volume:
                    driver.acceptOffers([offer.id], [
                        dict(type="DESTROY", destroy=dict(volumes=volume)),
                        dict(type="UNRESERVE", unreserve=dict(resources=[
                            scalar("cpus", 0.1, self.role), scalar("mem", 32, self.role),
                            scalar("disk", 16, self.role)])),
                    ], filters=dict(refuse_seconds=0))
                    self.phase = "cleaning"
                elif self.phase == "cleaning" and not mine:
                    self.phase = "done"
                    driver.declineOffer(offer.id, filters=dict(refuse_seconds=3600))
                else:
                    driver.declineOffer(offer.id, filters=dict(refuse_seconds=0.2))

    def states(self, task_id):
        with self.lock:
            return list(self.updates.get(task_id, []))

    def advance(self, to):
        with self.lock:
            self.phase = to


def stateful(part="all"):
    role = os.environ["ROLE"]
    sched = Stateful(role)
    if part == "read":
        sched.phase = "read"
    f = framework("pymesos-stateful", failover=float(os.environ.get("FAILOVER", "0")),
                  fid=resume_id if part == "read" else None)
    f.role = role
    d = driver_for(sched, f)
    if part == "read":
        wait("re-SUBSCRIBED", lambda: sched.registered_id is not None
             or sched.was_reregistered, 90)
    else:
        wait("SUBSCRIBED", lambda: sched.registered_id is not None)
    if part != "read":
        write_phase(sched)
    if part == "write":
        print(f"framework: {sched.registered_id}", flush=True)
        print("pymesos stateful write: ok", flush=True)
        os._exit(0)
    read_phase(sched, d)


def write_phase(sched):
    wait("py-writer TASK_FINISHED (it wrote to its volume)",
         lambda: "TASK_FINISHED" in sched.states("py-writer")
         or "TASK_FAILED" in sched.states("py-writer"), 90)
    assert sched.states("py-writer")[-1] == "TASK_FINISHED", sched.states("py-writer")
    # The data is on the agent, outside the writer's sandbox.
    where = os.environ["VOLUMES"]
    dirs = [n for n in os.listdir(where) if n.startswith("v1.")]
    assert len(dirs) == 1, os.listdir(where)
    with open(os.path.join(where, dirs[0], "f")) as f:
        assert f.read() == "kept\n"


def read_phase(sched, d):
    sched.advance("read")
    wait("py-reader TASK_FINISHED (it read what py-writer left)",
         lambda: "TASK_FINISHED" in sched.states("py-reader")
         or "TASK_FAILED" in sched.states("py-reader"), 90)
    assert sched.states("py-reader")[-1] == "TASK_FINISHED", sched.states("py-reader")
    sched.advance("clean")
    wait("offers with nothing reserved for the role", lambda: sched.phase == "done", 90)
    assert not sched.foreign, f"offered another role's reservation: {sched.foreign}"
    assert not sched.errors, sched.errors
    d.stop()
    d.join()
    print("pymesos stateful: ok", flush=True)


class Watcher(Scheduler):
    def __init__(self, role, cpus):
        self.role, self.cpus, self.seen = role, cpus, False

    def resourceOffers(self, driver, offers):
        for offer in offers:
            mine = [r for r in offer.resources if r.name == "cpus" and r.get("role") == self.role]
            got = sum(r.scalar.value for r in mine)
            # A static reservation: the role alone, no `reservation`.
            if abs(got - self.cpus) < 1e-6 and not any("reservation" in r for r in mine):
                self.seen = True
            driver.declineOffer(offer.id, filters=dict(refuse_seconds=0.2))


def reserved():
    role = os.environ["ROLE"]
    sched = Watcher(role, float(os.environ["CPUS"]))
    f = framework("pymesos-reserved")
    f.role = role
    d = driver_for(sched, f)
    wait(f"an offer of {sched.cpus} cpus reserved for {role}", lambda: sched.seen, 60)
    d.stop()
    d.join()
    print("pymesos reserved: ok", flush=True)


class WithExecutor(Recorder):
    """Launches tasks to a custom executor; records its messages and its end."""

    def __init__(self, to_launch):
        super().__init__(to_launch)
        self.messages = []
        self.lost = []
        self.agent_id = None
        self.data = {}
        self.senders = set()

    def resourceOffers(self, driver, offers):
        with self.lock:
            if self.to_launch and offers:
                self.agent_id = offers[0].agent_id.value
        super().resourceOffers(driver, offers)

    def statusUpdate(self, driver, update):
        super().statusUpdate(driver, update)
        with self.lock:
            if "data" in update:
                self.data[update.task_id.value] = decode_data(update.data).decode()
            if update.get("source") == "SOURCE_EXECUTOR":
                self.senders.add(update.get("executor_id", {}).get("value"))

    def frameworkMessage(self, driver, executor_id, agent_id, data):
        with self.lock:
            self.messages.append((executor_id.value, decode_data(data).decode()))

    def executorLost(self, driver, executor_id, agent_id, status):
        with self.lock:
            self.lost.append((executor_id.value, status))

    def got(self, message):
        with self.lock:
            return any(m == ("pyexec", message) for m in self.messages)


def executor_info(command):
    e = Dict()
    e.executor_id.value = "pyexec"
    e.name = "pymesos test executor"
    e.command.value = command
    e.resources = resources(0.1, 64)
    return e


def by_executor(data, command):
    return {"executor": executor_info(command), "data": encode_data(data.encode()),
            "command": None}


# The memory limit of the cgroup the command runs in (v1 or v2), in bytes.
MEMORY_LIMIT = ("p=$(grep :memory: /proc/self/cgroup | cut -d: -f3); "
                "if [ -n \"$p\" ]; then cat /sys/fs/cgroup/memory$p/memory.limit_in_bytes; "
                "else cat /sys/fs/cgroup$(cut -d: -f3 /proc/self/cgroup | head -1)/memory.max; fi")


def executor():
    python, script = os.environ["EXECUTOR_PYTHON"], os.environ["EXECUTOR_SCRIPT"]
    command = f"exec {python} {script}"
    sched = WithExecutor([("ex-long", "", by_executor("sleep 600", command))])
    failover = os.environ.get("FAILOVER")
    d = driver_for(sched, framework("pymesos-executor",
                                    failover=float(failover) if failover else None))
    wait("SUBSCRIBED", lambda: sched.registered_id is not None)
    wait("ex-long TASK_RUNNING", lambda: sched.seen("ex-long", "TASK_RUNNING"), 90)
    # A second task for the running executor: its container grows to hold
    # the executor (64 MB) and both tasks (32 MB each). ex-done reports the
    # limit it runs under (its output, as status data).
    with sched.lock:
        sched.to_launch.append(("ex-done", "", by_executor(
            f'test "$(id -u)" != 0 && {MEMORY_LIMIT}', command)))
    d.reviveOffers()
    wait("ex-done TASK_FINISHED (run by the executor, not as root)",
         lambda: sched.seen("ex-done", "TASK_FINISHED") or sched.seen("ex-done", "TASK_FAILED"), 90)
    assert sched.states("ex-done")[-1] == "TASK_FINISHED", sched.updates
    with sched.lock:
        limit = int(sched.data["ex-done"].split()[0])
    assert limit >= 128 << 20, f"the executor's container holds {limit} bytes, not 128 MB"
    with sched.lock:
        assert sched.senders == {"pyexec"}, f"executor_id of executors' updates: {sched.senders}"
    wait("the executor's message about ex-done", lambda: sched.got("ex-done exited 0"))
    # Every update came from the executor with its uuid (pymesos acked it).
    with sched.lock:
        assert all(u[3] for u in sched.updates if u[0].startswith("ex-")), sched.updates
    d.sendFrameworkMessage(dict(value="pyexec"), dict(value=sched.agent_id),
                           encode_data(b"ping"))
    wait("the executor's answer to ping", lambda: sched.got("echo:ping"))
    # Another command under the same executor id: refused, not run.
    with sched.lock:
        sched.to_launch.append(("ex-other", "", by_executor("true", "exec /bin/false")))
    d.reviveOffers()
    wait("ex-other TASK_ERROR", lambda: sched.seen("ex-other", "TASK_ERROR"), 60)
    print(f"framework: {sched.registered_id}", flush=True)
    wait("the go-ahead", lambda: os.path.exists(os.environ["GO"]), 180)
    # Still there (after an agent restart too): it answers again. Framework
    # messages are best effort (pymesos drops one sent while it is not
    # subscribed, as after a master restart): asked until answered.
    def ask_again():
        d.sendFrameworkMessage(dict(value="pyexec"), dict(value=sched.agent_id),
                               encode_data(b"again"))
        deadline = time.time() + 3
        while time.time() < deadline and not sched.got("echo:again"):
            time.sleep(0.1)
        return sched.got("echo:again")
    wait("the executor's answer to again", ask_again, 90)
    d.killTask({"value": "ex-long"})
    wait("ex-long TASK_KILLED", lambda: sched.seen("ex-long", "TASK_KILLED"), 60)
    wait("the executor, left without tasks, shut down (executorLost)",
         lambda: any(e == "pyexec" for e, _ in sched.lost), 60)
    assert not sched.errors, sched.errors
    d.stop()
    d.join()
    print("pymesos executor: ok", flush=True)


class Groups(Recorder):
    """Launches task groups to the default executor, one per offer."""

    def __init__(self, groups):
        super().__init__([])
        self.groups = list(groups)

    def resourceOffers(self, driver, offers):
        with self.lock:
            for offer in offers:
                if not self.groups:
                    driver.declineOffer(offer.id, filters=dict(refuse_seconds=3600))
                    continue
                name, tasks = self.groups.pop(0)
                infos = []
                for task_id, command in tasks:
                    t = Dict()
                    t.task_id.value = task_id
                    t.agent_id.value = offer.agent_id.value
                    t.name = task_id
                    if command is not None:
                        t.command.value = command
                    t.resources = resources(0.1, 32)
                    infos.append(t)
                e = Dict()
                e.type = "DEFAULT"
                e.executor_id.value = name
                e.resources = resources(0.1, 32)
                driver.acceptOffers([offer.id], [dict(type="LAUNCH_GROUP", launch_group=dict(
                    executor=e, task_group=dict(tasks=infos)))], filters=dict(refuse_seconds=0))


def group():
    sched = Groups([
        ("pod-ok", [("g-ok-a", "true"), ("g-ok-b", "sleep 1")]),
        ("pod-bad", [("g-bad", "sleep 1; exit 3"), ("g-victim", "sleep 600")]),
        ("pod-invalid", [("g-fine", "true"), ("g-no-command", None)]),
    ])
    d = driver_for(sched, framework("pymesos-group"))
    wait("SUBSCRIBED", lambda: sched.registered_id is not None)
    for t in ("g-ok-a", "g-ok-b"):
        wait(f"{t} TASK_FINISHED", lambda: sched.seen(t, "TASK_FINISHED"), 90)
    wait("g-bad TASK_FAILED", lambda: sched.seen("g-bad", "TASK_FAILED"), 90)
    wait("g-victim TASK_KILLED (its group failed)", lambda: sched.seen("g-victim", "TASK_KILLED"), 60)
    for t in ("g-fine", "g-no-command"):
        wait(f"{t} refused with its group",
             lambda: sched.seen(t, "TASK_ERROR", "REASON_TASK_GROUP_INVALID"), 60)
    assert "TASK_RUNNING" not in sched.states("g-fine"), sched.updates
    assert not sched.errors, sched.errors
    d.stop()
    d.join()
    print("pymesos group: ok", flush=True)


class Maintained(Scheduler):
    """One long task; inverse offers accepted; offers' unavailability kept."""

    def __init__(self):
        self.lock = threading.Lock()
        self.registered_id = None
        self.launched = False
        self.running = False
        self.inverse = []
        self.unavailable = []

    def registered(self, driver, framework_id, master_info):
        self.registered_id = framework_id.value

    def resourceOffers(self, driver, offers):
        with self.lock:
            for offer in offers:
                if offer.get("unavailability"):
                    self.unavailable.append(offer.unavailability.start.nanoseconds)
                if self.launched:
                    driver.declineOffer(offer.id, filters=dict(refuse_seconds=1))
                    continue
                self.launched = True
                t = Dict()
                t.task_id.value = "py-maintained"
                t.agent_id.value = offer.agent_id.value
                t.name = "py-maintained"
                t.command.value = "sleep 600"
                t.resources = resources(0.1, 32)
                driver.launchTasks(offer.id, [t], filters=dict(refuse_seconds=1))

    def inverseOffers(self, driver, offers):
        with self.lock:
            self.inverse.extend(offers)
        driver.acceptInverseOffers([o.id for o in offers])

    def statusUpdate(self, driver, update):
        if update.task_id.value == "py-maintained" and update.state == "TASK_RUNNING":
            self.running = True


def maintenance():
    sched = Maintained()
    driver_for(sched, framework("pymesos-maintained"))
    wait("SUBSCRIBED", lambda: sched.registered_id is not None)
    wait("py-maintained TASK_RUNNING", lambda: sched.running, 90)
    print(f"framework: {sched.registered_id}", flush=True)
    wait("an inverse offer", lambda: sched.inverse, 90)
    wait("an offer with its unavailability", lambda: sched.unavailable, 90)
    o = sched.inverse[0]
    with open(os.environ["DONE"] + ".tmp", "w") as f:
        json.dump({"agent": o.agent_id.value, "framework": o.framework_id.value,
                   "start": o.unavailability.start.nanoseconds,
                   "offer_start": sched.unavailable[0]}, f)
    os.rename(os.environ["DONE"] + ".tmp", os.environ["DONE"])
    while True:
        time.sleep(1)


TERMINAL = {"TASK_FINISHED", "TASK_FAILED", "TASK_KILLED", "TASK_LOST", "TASK_ERROR",
            "TASK_DROPPED", "TASK_GONE", "TASK_GONE_BY_OPERATOR", "TASK_UNKNOWN"}


class Faults(Scheduler):
    """The fault run's framework: see `faults` in the module's text."""

    def __init__(self, history, runs):
        self.lock = threading.Lock()
        self.runs = runs
        self.fid = None
        self.n = 0
        self.latest = {}  # task id -> (agent id, last state)
        self.stopping = False
        if os.path.exists(history):
            with open(history) as f:
                for line in f:
                    try:
                        e = json.loads(line)
                    except ValueError:
                        continue  # a line cut short by a crash
                    if "subscribed" in e:
                        self.fid = e["subscribed"]
                    if "launch" in e:
                        self.n = max(self.n, int(e["launch"].split("-")[1]))
                        self.latest[e["launch"]] = (e["agent"], None)
                    if "update" in e and e["update"] in self.latest:
                        self.latest[e["update"]] = (self.latest[e["update"]][0], e["state"])
        self.log = open(history, "a")

    def record(self, **e):
        e["at"] = time.time()
        self.log.write(json.dumps(e) + "\n")
        self.log.flush()
        os.fsync(self.log.fileno())

    def active(self):
        return [(t, a) for t, (a, s) in self.latest.items() if s not in TERMINAL]

    def reconcile(self, driver):
        with self.lock:
            tasks = [{"task_id": {"value": t}, "agent_id": {"value": a}} for t, a in self.active()]
        if tasks:
            driver.reconcileTasks(tasks)

    def registered(self, driver, framework_id, master_info):
        with self.lock:
            self.fid = framework_id.value
            self.record(subscribed=self.fid)

    def reregistered(self, driver, master_info):
        with self.lock:
            self.record(subscribed=self.fid, again=True)

    def resourceOffers(self, driver, offers):
        with self.lock:
            for offer in offers:
                if self.stopping or len(self.active()) >= 2:
                    driver.declineOffer(offer.id, filters=dict(refuse_seconds=1))
                    continue
                self.n += 1
                task_id = f"f-{self.n}"
                # Recorded before the ACCEPT: a crash in between leaves a
                # launch that reconciliation reports unknown.
                self.record(launch=task_id, agent=offer.agent_id.value)
                self.latest[task_id] = (offer.agent_id.value, None)
                t = Dict()
                t.task_id.value = task_id
                t.agent_id.value = offer.agent_id.value
                t.name = task_id
                t.command.value = f"echo ran >> {self.runs}/{task_id}; sleep {self.n % 6}"
                t.resources = resources(0.05, 16)
                driver.launchTasks(offer.id, [t], filters=dict(refuse_seconds=1))

    def statusUpdate(self, driver, update):
        with self.lock:
            task_id = update.task_id.value
            self.record(update=task_id, state=update.state, reason=update.get("reason"))
            if task_id in self.latest:
                self.latest[task_id] = (self.latest[task_id][0], update.state)


def faults():
    sched = Faults(os.environ["HISTORY"], os.environ["RUNS"])
    f = framework("pymesos-faults", failover=3600, fid=sched.fid)
    f.capabilities = [dict(type="PARTITION_AWARE")]
    f.checkpoint = True
    d = driver_for(sched, f)
    last = time.time()
    while not os.path.exists(os.environ["STOP"]):
        time.sleep(0.5)
        if time.time() - last > 10:
            last = time.time()
            try:
                sched.reconcile(d)
            except Exception as e:  # not connected now: the next round
                print(f"reconcile: {e}", flush=True)
    with sched.lock:
        sched.stopping = True
    deadline = time.time() + 120
    while time.time() < deadline:
        with sched.lock:
            if not sched.active():
                break
        try:
            sched.reconcile(d)
        except Exception as e:
            print(f"reconcile: {e}", flush=True)
        time.sleep(2)
    with sched.lock:
        sched.record(final={t: s for t, (_, s) in sched.latest.items()})
    d.stop()
    d.join()
    print("pymesos faults: ok", flush=True)


{"tour": tour, "start": start, "resume": resume, "greedy": greedy,
 "stateful": stateful, "stateful-write": lambda: stateful("write"),
 "stateful-read": lambda: stateful("read"), "reserved": reserved,
 "executor": executor, "group": group, "maintenance": maintenance,
 "faults": faults}[mode]()
