"""Drives a Wasmos cluster with marathon-python (PyPI `marathon` 0.13.0),
unchanged: the client parses every model strictly, so any key or format
Marathon would not send fails here. The cluster speaks only HTTPS: the
client verifies it against the cluster's CA (`verify=`), and logs in as a
user with HTTP Basic (`username=`, `password=`); a token works as
`auth_token=` (DC/OS' `Authorization: token=...`), and no credentials get
401.
Usage: marathon_python.py MASTER_URL CA.PEM USER PASSWORD TOKEN"""

import collections
import collections.abc
import sys
import time

from common import wait

# marathon-python 0.13.0 predates Python 3.10, which moved Iterable out of
# `collections`; restore the alias it uses (a client-side fix only).
collections.Iterable = collections.abc.Iterable

from marathon import MarathonClient
from marathon.exceptions import NotFoundError
from marathon.models import MarathonApp, MarathonConstraint, MarathonGroup, MarathonHealthCheck
from marathon.models.container import MarathonContainer, MarathonContainerVolume

from marathon.exceptions import MarathonHttpError

url, ca, user, password, token = sys.argv[1:6]
try:
    MarathonClient(url, verify=ca).list_apps()
    raise SystemExit("no credentials were accepted")
except MarathonHttpError as e:
    assert e.status_code == 401, e
assert MarathonClient(url, auth_token=token, verify=ca).list_apps() is not None

c = MarathonClient(url, username=user, password=password, verify=ca)


def deployed(app_id, n):
    app = c.get_app(app_id, embed_tasks=True)
    running = [t for t in c.list_tasks(app_id) if t.state == "TASK_RUNNING"]
    return not app.deployments and len(running) == n


assert b"pong" in c.ping()
info = c.get_info()
assert info.name == "marathon", info
assert c.get_leader()
assert "gauges" in c.get_metrics()

app = c.create_app(
    "mp-web",
    MarathonApp(
        cmd="exec python3 -m http.server --bind 127.0.0.1 $PORT0",
        cpus=0.1,
        mem=128,
        instances=2,
        labels={"team": "a"},
        constraints=[MarathonConstraint("hostname", "MAX_PER", 5)],
        health_checks=[
            MarathonHealthCheck(protocol="HTTP", path="/", port_index=0, interval_seconds=1,
                                grace_period_seconds=30, timeout_seconds=2,
                                max_consecutive_failures=3)
        ],
    ),
)
assert app.id == "/mp-web", app.id
assert len(c.list_deployments()) == 1
wait("two healthy tasks", lambda: deployed("mp-web", 2) and
     c.get_app("mp-web").tasks_healthy == 2)

apps = c.list_apps(embed_counts=True, embed_tasks=True, embed_failures=True, embed_task_stats=True)
assert [a.id for a in apps] == ["/mp-web"]
assert c.list_apps(label="team==a")[0].id == "/mp-web"
assert c.list_apps(label="team==b") == []
tasks = c.list_tasks("mp-web")
assert all(t.health_check_results[0].alive for t in tasks)
assert all(t.started_at is not None for t in tasks)
endpoints = c.list_endpoints()
assert len(endpoints) == 2

c.scale_app("mp-web", instances=3)
wait("three tasks", lambda: deployed("mp-web", 3))
victim = c.list_tasks("mp-web")[0]
c.kill_task("mp-web", victim.id, scale=True)
wait("two tasks after a kill with scale", lambda: deployed("mp-web", 2))
assert c.get_app("mp-web").instances == 2
assert victim.id not in [t.id for t in c.list_tasks("mp-web")]
other = c.list_tasks("mp-web")[0]
assert c.kill_given_tasks([other.id]) is True
wait("the killed task replaced",
     lambda: deployed("mp-web", 2) and other.id not in [t.id for t in c.list_tasks("mp-web")])

current = c.get_app("mp-web")
current.cmd = "exec python3 -m http.server --bind 127.0.0.1 $PORT0 # v2"
c.update_app("mp-web", current)
assert c.list_queue() is not None
wait("the restart", lambda: deployed("mp-web", 2), 90)
versions = c.list_versions("mp-web")
assert len(versions) >= 3, versions
old = c.get_version("mp-web", versions[-1])
assert old.cmd == "exec python3 -m http.server --bind 127.0.0.1 $PORT0"

# Roll back to the first version: the original command again.
rolled = c.rollback_app("mp-web", versions[-1])
assert "deploymentId" in rolled, rolled
wait("the rollback", lambda: deployed("mp-web", 2), 90)
assert c.get_app("mp-web").cmd == "exec python3 -m http.server --bind 127.0.0.1 $PORT0"

# A deployment that cannot finish (MAX_PER 5 on one host), reverted by
# deleting it: the app goes back to its two instances.
stuck = c.scale_app("mp-web", instances=7)
wait("the stuck deployment", lambda: len(c.list_tasks("mp-web")) == 5)
revert = c.delete_deployment(stuck["deploymentId"])
assert "deploymentId" in revert, revert
wait("the revert", lambda: deployed("mp-web", 2) and c.get_app("mp-web").instances == 2, 90)
# A forced delete cancels without reverting.
stuck = c.scale_app("mp-web", instances=7)
wait("the second stuck deployment", lambda: len(c.list_tasks("mp-web")) == 5)
assert c.delete_deployment(stuck["deploymentId"], force=True) == {}
wait("the cancelled deployment gone", lambda: c.list_deployments() == [])
assert c.get_app("mp-web").instances == 7

group = c.get_group("/")
assert [a.id for a in group.apps] == ["/mp-web"]

stream = c.event_stream()
first = next(stream)
assert type(first).__name__ == "MarathonEventStreamAttached", first

c.delete_app("mp-web", force=True)
wait("the app removed", lambda: c.list_apps() == [])

# Volumes go through the client's strict models both ways (mode as sent,
# upper case; the container without an image runs on the host).
c.create_app("mp-vol", MarathonApp(
    cmd="sleep 600", cpus=0.05, mem=16, instances=0,
    container=MarathonContainer(type="MESOS", volumes=[
        MarathonContainerVolume(container_path="logs", host_path="/var/log/mp", mode="RO")])))
vol = c.get_app("mp-vol").container.volumes[0]
assert (vol.container_path, vol.host_path, vol.mode) == ("logs", "/var/log/mp", "RO"), vol
c.delete_app("mp-vol", force=True)
wait("the volume app removed", lambda: c.list_apps() == [])

# Groups: a tree of apps with relative ids and inherited dependencies.
c.create_group(MarathonGroup(
    id="/shop",
    apps=[MarathonApp(id="db", cmd="sleep 600", cpus=0.05, mem=16, instances=1)],
    groups=[MarathonGroup(id="front", dependencies=["/shop/db"], apps=[
        MarathonApp(id="web", cmd="sleep 600", cpus=0.05, mem=16, instances=2)])],
))
wait("the group deployed", lambda: deployed("/shop/db", 1) and deployed("/shop/front/web", 2))
shop = c.get_group("/shop")
assert [a.id for a in shop.apps] == ["/shop/db"], shop
assert [g.id for g in shop.groups] == ["/shop/front"], shop
assert c.get_app("/shop/front/web").dependencies == ["/shop/db"]
c.scale_group("/shop", 2)
wait("the group scaled", lambda: deployed("/shop/db", 2) and deployed("/shop/front/web", 4))
c.delete_group("/shop", force=True)
wait("the group removed", lambda: c.list_apps() == [])
try:
    c.get_group("/shop")
    raise SystemExit("a removed group is still there")
except NotFoundError:
    pass
print("marathon-python: ok")
