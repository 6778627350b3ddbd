"""marathon-python (PyPI `marathon` 0.13.0), unchanged, against a master
that is not the leader: the follower forwards the calls to the leader, and
relays the event stream rather than redirecting it: python-requests follows
a redirect to another host or port without the credentials it was given
(marathon-python follows its stream's redirects itself, other clients do
not).
Usage: marathon_follower.py FOLLOWER_URL CA.PEM USER PASSWORD"""

import collections
import collections.abc
import json
import queue
import sys
import threading

import requests

collections.Iterable = collections.abc.Iterable

from marathon import MarathonClient
from marathon.models import MarathonApp

from common import wait

url, ca, user, password = sys.argv[1:5]
c = MarathonClient(url, username=user, password=password, verify=ca)

events = queue.Queue()


def listen():
    try:
        for e in c.event_stream(raw=True):
            events.put(e)
    except Exception as e:  # reported by the main thread
        events.put(e)


threading.Thread(target=listen, daemon=True).start()


def next_event(seconds=60):
    try:
        e = events.get(timeout=seconds)
    except queue.Empty:
        raise SystemExit("no event from the follower's stream within a minute")
    if isinstance(e, Exception):
        raise SystemExit(f"the event stream through the follower failed: {e!r}")
    # raw=True: each event's data, as Marathon sent it.
    return json.loads(e)


# A plain python-requests reader, redirects followed as requests does.
plain = requests.get(f"{url}/v2/events", auth=(user, password), verify=ca, stream=True,
                     headers={"Accept": "text/event-stream"}, timeout=30)
assert plain.status_code == 200, (plain.status_code, plain.history, plain.text[:200])
assert not plain.history, f"redirected: {plain.history}"
line = next(l for l in plain.iter_lines() if l)
assert line == b"event: event_stream_attached", line
plain.close()

first = next_event()
assert first["eventType"] == "event_stream_attached", first
c.create_app("follow-me", MarathonApp(cmd="sleep 600", cpus=0.05, mem=16, instances=1))
seen = []
while True:
    e = next_event()
    seen.append(e["eventType"])
    if e["eventType"] == "deployment_success":
        break
assert "api_post_event" in seen, seen
wait("the app running", lambda: len(c.list_tasks("follow-me")) == 1)
c.delete_app("follow-me", force=True)
print("marathon-python follower: ok")
