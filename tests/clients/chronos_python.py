"""Drives a Wasmos cluster with chronos-python (PyPI `chronos-python` 1.2.1),
unchanged, on both of Chronos' API prefixes: Chronos 3's `/v1/scheduler`
(the client's default) and Chronos 2's `/scheduler`
(`scheduler_api_version=None`, which updates with PUT). The client treats a
bodiless answer that is not 204 as an error and every 4xx/5xx as one, so
each call below that returns has been answered as Chronos answers it.
The cluster speaks only HTTPS: the client is given `proto="https"`, and
httplib2 (under it) trusts the cluster's CA through HTTPLIB2_CA_CERTS. It
logs in as a user: httplib2 sends the password after the server's 401 with
a Basic challenge; without credentials the client raises UnauthorizedError.
Usage: chronos_python.py HOST:PORT CA.PEM USER PASSWORD"""

import os
import sys
import time

from common import wait

# httplib2 reads its CA bundle when it is first imported.
os.environ["HTTPLIB2_CA_CERTS"] = sys.argv[2]

import chronos
from chronos import ChronosAPIError

server, user, password = sys.argv[1], sys.argv[3], sys.argv[4]


def by_name(jobs, name):
    found = [j for j in jobs if j["name"] == name]
    return found[0] if found else None


def drive(c, legacy):
    tag = "legacy" if legacy else "v1"
    p = f"cp-{tag}"

    # The client's own integration-test job: never runs (R0), is listed,
    # found by name and by command, and has a 0.0 statistic.
    itest = {"command": "echo 1", "name": f"{p}-myjob", "owner": "", "disabled": False,
             "schedule": "R0/2014-01-01T00:00:00Z/PT60M"}
    if legacy:
        itest["async"] = False
    assert c.add(itest) is None
    listed = by_name(c.list(), f"{p}-myjob")
    assert listed is not None, c.list()
    assert listed["lastError"] == "" and listed["lastSuccess"] == "", listed
    assert listed["disabled"] is False and listed["schedule"].startswith("R0/"), listed
    if legacy:
        assert listed["epsilon"] == "PT60S" and listed["async"] is False, listed
    else:
        assert "epsilon" not in listed, listed
    assert by_name(c.search(name=f"{p}-myjob"), f"{p}-myjob") is not None
    assert by_name(c.search(command="echo"), f"{p}-myjob") is not None
    assert c.search(name="no-such-job") == []
    stat = c.job_stat(f"{p}-myjob")
    assert stat == {"histogram": {"75thPercentile": 0.0, "95thPercentile": 0.0,
                                  "98thPercentile": 0.0, "99thPercentile": 0.0,
                                  "median": 0.0, "mean": 0.0, "count": 0},
                    "taskStatHistory": []}, stat
    stats = c.scheduler_stat_99th()
    assert {"jobNameLabel": f"{p}-myjob", "time": 0.0} in stats, stats
    for f in (c.scheduler_stat_98th, c.scheduler_stat_95th, c.scheduler_stat_75th,
              c.scheduler_stat_median, c.scheduler_stat_mean):
        assert any(s["jobNameLabel"] == f"{p}-myjob" for s in f()), f

    # A repeating job every 2 s from now, and a dependent child.
    start = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(time.time() + 1))
    every = {"name": f"{p}-every", "command": "echo tick $CHRONOS_JOB_RUN_TIME", "owner": "ops@example.com",
             "disabled": False, "schedule": f"R/{start}/PT2S", "cpus": "0.05", "mem": 32}
    child = {"name": f"{p}-child", "command": "echo child", "owner": "", "disabled": False,
             "parents": [f"{p}-every"], "mem": 32}
    if legacy:
        every["async"] = False
        child["async"] = False
    assert c.add(every) is None
    assert c.add(child) is None
    wait("two successes of the repeating job",
         lambda: by_name(c.list(), f"{p}-every")["successCount"] >= 2)
    wait("the dependent child ran", lambda: by_name(c.list(), f"{p}-child")["successCount"] >= 1)
    got = by_name(c.list(), f"{p}-child")
    assert got["parents"] == [f"{p}-every"] and "schedule" not in got, got
    rows = c.scheduler_graph().splitlines()
    assert f"link,{p}-every,{p}-child" in rows, rows
    assert any(r.startswith(f"node,{p}-every,success,") for r in rows), rows
    stat = c.job_stat(f"{p}-every")
    assert stat["histogram"]["count"] >= 2, stat
    assert stat["taskStatHistory"] and stat["taskStatHistory"][0]["status"] == "TASK_FINISHED", stat

    # Update (2.x: PUT) to disable the repeating job: no more runs.
    every["disabled"] = True
    assert c.update(every) is None
    assert by_name(c.list(), f"{p}-every")["disabled"] is True

    # Run by hand: a long job, then kill its task.
    long = {"name": f"{p}-long", "command": "sleep 600", "owner": "", "disabled": False,
            "schedule": "R0/2030-01-01T00:00:00Z/PT1H", "mem": 32}
    if legacy:
        long["async"] = False
    assert c.add(long) is None
    assert c.run(f"{p}-long") is None
    wait("the manual run is running",
         lambda: any(r.startswith(f"node,{p}-long,") and r.endswith("1 running")
                     for r in c.scheduler_graph().splitlines()))
    assert c.delete_tasks(f"{p}-long") is None
    wait("the manual run killed",
         lambda: any(r == f"node,{p}-long,fresh,idle" for r in c.scheduler_graph().splitlines()))
    assert by_name(c.list(), f"{p}-long")["errorCount"] == 0, "a kill is not an error"

    # Errors: unknown jobs, bad names, a cycle.
    for call in (lambda: c.run("no-such-job"), lambda: c.delete("no-such-job"),
                 lambda: c.job_stat("no-such-job")):
        try:
            call()
            raise SystemExit("an unknown job was accepted")
        except ChronosAPIError:
            pass
    bad = dict(itest, name="job with spaces")
    try:
        c.add(bad)
        raise SystemExit("a job name with spaces was accepted")
    except ChronosAPIError:
        pass
    loop = dict(child, name=f"{p}-every", parents=[f"{p}-child"])
    loop.pop("schedule", None)
    try:
        c.add(loop)
        raise SystemExit("a cycle was accepted")
    except ChronosAPIError:
        pass
    assert "schedule" in by_name(c.list(), f"{p}-every"), "the refused cycle changed nothing"

    # Delete the parent: its child takes its schedule (Chronos' re-linking).
    assert c.delete(f"{p}-every") is None
    after = by_name(c.list(), f"{p}-child")
    assert "schedule" in after and "parents" not in after, after
    for name in (f"{p}-child", f"{p}-long", f"{p}-myjob"):
        assert c.delete(name) is None
    assert not [j for j in c.list() if j["name"].startswith(p)]


# chronos-python turns a 401 into "no remaining servers" (ChronosAPIError).
for creds in ({}, {"username": user, "password": "wrong-password"}):
    try:
        chronos.connect(server, proto="https", **creds).list()
        raise SystemExit(f"{creds} were accepted")
    except ChronosAPIError:
        pass
auth = {"proto": "https", "username": user, "password": password}
metrics = chronos.connect(server, **auth).metrics()
assert "version" in metrics and "gauges" in metrics, metrics
drive(chronos.connect([server], **auth), legacy=False)
drive(chronos.connect([server], scheduler_api_version=None, **auth), legacy=True)
print("chronos-python: ok")
