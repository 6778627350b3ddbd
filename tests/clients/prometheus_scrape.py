"""Scrapes a master's /metrics as Prometheus does (its Accept header, a
bearer token) and parses the answer with the Prometheus project's own
Python parsers (PyPI `prometheus-client`): the OpenMetrics one, and the
classic text format one for a scraper that asks for text/plain 0.0.4.
Checks the families every master exports (gauges of the state, counters
and histograms of what the master did) and that JSON clients still get
JSON.

Usage: prometheus_scrape.py MASTER_URL CA.PEM TOKEN AGENTS"""

import json
import ssl
import sys
import urllib.request

from prometheus_client.openmetrics.parser import text_string_to_metric_families as openmetrics
from prometheus_client.parser import text_string_to_metric_families as classic

url, ca, token, agents = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])
context = ssl.create_default_context(cafile=ca)


def get(accept, path="/metrics", base=url):
    req = urllib.request.Request(base.rstrip("/") + path, headers={
        "Accept": accept, "Authorization": f"Bearer {token}"})
    with urllib.request.urlopen(req, context=context, timeout=10) as r:
        return r.headers.get("Content-Type", ""), r.read().decode()


PROMETHEUS = ("application/openmetrics-text;version=1.0.0,application/openmetrics-text;"
              "version=0.0.1;q=0.75,text/plain;version=0.0.4;q=0.5,*/*;q=0.1")
ctype, body = get(PROMETHEUS)
assert ctype.startswith("application/openmetrics-text"), ctype
families = {f.name: f for f in openmetrics(body)}
for name in ["wasmos_master_leader", "wasmos_raft_term", "wasmos_raft_last_log_index",
             "wasmos_agents", "wasmos_frameworks", "wasmos_tasks", "wasmos_resources",
             "wasmos_plugins", "wasmos_offers_outstanding", "wasmos_agents_connected"]:
    assert name in families, (name, sorted(families))
    assert families[name].type == "gauge", (name, families[name].type)


def value(name, **labels):
    """The first sample named `name` (a family's, or a counter's `_total`,
    a histogram's `_count` or `_bucket`) with these labels."""
    for f in families.values():
        for s in f.samples:
            if s.name == name and all(s.labels.get(k) == v for k, v in labels.items()):
                return s.value
    raise SystemExit(f"no sample {name} {labels}")


assert value("wasmos_master_leader") == 1
assert value("wasmos_raft_term") >= 1
assert value("wasmos_agents", state="active") == agents
assert value("wasmos_resources", resource="cpus", kind="total") > 0
assert value("wasmos_frameworks", kind="plugin") >= 1
assert value("wasmos_tasks", state="TASK_RUNNING") >= 1

# What the leader did: counters (OpenMetrics names them without _total,
# their samples with it) and histograms.
for name, kind in [("wasmos_offers", "counter"), ("wasmos_task_launches", "counter"),
                   ("wasmos_status_updates", "counter"), ("wasmos_plugin_call_failures", "counter"),
                   ("wasmos_allocation_cycle_seconds", "histogram"),
                   ("wasmos_raft_commit_seconds", "histogram"),
                   ("wasmos_plugin_call_seconds", "histogram")]:
    assert name in families, (name, sorted(families))
    assert families[name].type == kind, (name, families[name].type)
assert value("wasmos_offers_total") >= 1
assert value("wasmos_task_launches_total", outcome="launched") >= 1
assert value("wasmos_status_updates_total", state="TASK_RUNNING") >= 1
assert value("wasmos_allocation_cycle_seconds_count") >= 1
assert value("wasmos_raft_commit_seconds_count") >= 1
# The app went through the marathon plugin: its calls were timed.
assert value("wasmos_plugin_call_seconds_count", plugin="marathon") >= 1
assert value("wasmos_plugin_call_seconds_bucket", plugin="marathon", le="+Inf") >= 1

# A scraper of the classic text format gets it too.
ctype, body = get("text/plain;version=0.0.4")
assert ctype.startswith("text/plain"), ctype
assert "wasmos_tasks" in {f.name for f in classic(body)}

# Marathon's and Chronos' clients ask for JSON, and get the frameworks' JSON.
ctype, body = get("application/json")
assert ctype.startswith("application/json"), ctype
assert "gauges" in json.loads(body), body[:200]
# Every daemon, as Prometheus' HTTP service discovery finds them: the
# masters, and each agent through a master.
_, body = get("application/json", "/api/wasmos/v1/prometheus/targets")
groups = json.loads(body)
assert any(g["labels"]["wasmos_role"] == "master" and g["targets"] for g in groups), groups
agent_groups = [g for g in groups if g["labels"]["wasmos_role"] == "agent"]
assert len(agent_groups) == agents, groups
for g in agent_groups:
    base = "https://" + g["targets"][0]
    ctype, body = get(PROMETHEUS, g["labels"]["__metrics_path__"], base)
    assert ctype.startswith("application/openmetrics-text"), ctype
    families = {f.name: f for f in openmetrics(body)}
    assert value("wasmos_agent_registered") == 1
    assert value("wasmos_agent_tasks", state="TASK_RUNNING") >= 1
    assert value("wasmos_agent_resources", resource="cpus", kind="total") > 0
    assert value("wasmos_agent_resources", resource="cpus", kind="used") > 0
    assert families["wasmos_agent_plugin_call_seconds"].type == "histogram"
    # Without a Prometheus Accept: Mesos' agent metrics, as JSON.
    ctype, body = get("application/json", g["labels"]["__metrics_path__"], base)
    snapshot = json.loads(body)
    assert snapshot["slave/tasks_running"] >= 1, snapshot
    assert snapshot["slave/cpus_total"] > 0, snapshot
print("prometheus scrape: ok", flush=True)
