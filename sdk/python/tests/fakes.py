"""A fake host for the library's unit tests (and the examples'): installs
itself over the stubs of the generated bindings (`componentize-py
bindings`), which raise NotImplementedError, and records what the plugin
asked for. End-to-end tests run the real host."""

import importlib

from componentize_py_types import Err


class Host:
    def __init__(self) -> None:
        self.kv = {}
        #: ("launch", offer ids, specs, refuse) / ("decline", ids, refuse) /
        #: ("kill", task id) / ("revive",) / ("suppress",) ...
        self.actions = []
        self.logs = []
        self.now = 1_700_000_000_000
        self.draining = []
        #: Replaces the placement service: (request, candidates) -> verdicts.
        self.evaluate = None
        #: What each `Packer.finish` explained: one list of decisions per call.
        self.explained = []
        #: When set, driver.launch refuses with this message.
        self.launch_error = None
        #: Ports a health check's probes find open, and what `http_get`
        #: answers on them: port -> (status, body).
        self.open_ports = {}
        self._install()

    def module(self, name):
        try:
            return importlib.import_module(f"wit_world.imports.{name}")
        except ImportError:
            return None

    def _install(self) -> None:
        state = self.module("state")
        if state is not None:
            state.get = lambda key: self.kv.get(key)
            state.set = self._set
            state.delete = lambda key: self.kv.pop(key, None) and None
            state.keys = lambda prefix: sorted(k for k in self.kv if k.startswith(prefix))
        driver = self.module("driver")
        if driver is not None:
            driver.launch = self._launch
            driver.decline = lambda ids, refuse: self.actions.append(("decline", list(ids), refuse))
            driver.kill = lambda task_id: self.actions.append(("kill", task_id))
            driver.revive = lambda: self.actions.append(("revive",))
            driver.suppress = lambda: self.actions.append(("suppress",))
            driver.destroy_volumes = lambda agent, ids: self.actions.append(
                ("destroy-volumes", agent, list(ids))
            )
            driver.draining_agents = lambda: list(self.draining)
        clock = self.module("clock")
        if clock is not None:
            clock.now_ms = lambda: self.now
        log = self.module("log")
        if log is not None:
            log.log = lambda level, message: self.logs.append((level.name, message))
        probe = self.module("probe")
        if probe is not None:
            probe.tcp_connect = lambda port, timeout: self._open(port) and None
            probe.http_get = lambda port, path, timeout: probe.HttpResponse(*self._open(port))
            probe.https_get = probe.http_get
        service = self.module("placement_service")
        if service is not None:
            service.evaluate = self._evaluate
            service.explain = lambda decisions: self.explained.append(list(decisions))

    def _set(self, key, value) -> None:
        if len(key.encode()) > 1024:
            raise Err("key over 1 KiB")
        if len(value) > 1 << 20:
            raise Err("value over 1 MiB")
        self.kv[key] = bytes(value)

    def _open(self, port):
        if port not in self.open_ports:
            raise Err(f"connection to port {port} refused")
        return self.open_ports[port]

    def _launch(self, offer_ids, tasks, refuse) -> None:
        if self.launch_error is not None:
            raise Err(self.launch_error)
        self.actions.append(("launch", list(offer_ids), list(tasks), refuse))

    def _evaluate(self, request, candidates):
        if self.evaluate is None:
            raise Err("no placement plugin declares the operator")
        return self.evaluate(request, candidates)

    def launched(self):
        """Every task spec launched so far, in order."""
        return [t for a in self.actions if a[0] == "launch" for t in a[2]]

    def take_actions(self):
        out, self.actions = self.actions, []
        return out
