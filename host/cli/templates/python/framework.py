"""{{name}}: a framework plugin, made by `wasmos plugin new`.

`POST /frameworks/{{name}}/run` queues one task that echoes the configured
greeting; the next offer that fits runs it. `GET /frameworks/{{name}}/`
shows how many ran. The counts live in the framework's replicated
key-value store, so they survive master restarts and failovers.
"""

from wasmos import framework, kv, log, offers
from wasmos.http import HttpError, Response


class Plugin(framework.Framework):
    def init(self, config):
        self.greeting = config.get("greeting", "hello")
        self.interest = framework.OfferInterest()
        self.interest.want(kv.get_json("waiting", 0) > 0)

    def offers(self, batch):
        packer = offers.Packer(batch)
        waiting = kv.get_json("waiting", 0)
        launched = kv.get_json("launched", 0)
        while waiting > 0:
            try:
                fit = packer.place(offers.Need(cpus=0.1, mem=32))
            except offers.NoFit as why:
                log.info(f"a run waits: {why}")
                break
            launched += 1
            waiting -= 1
            spec = framework.task(f"{{name}}-{launched}", ["echo", self.greeting], cpus=0.1, mem=32)
            packer.add(fit, spec)
        kv.set_json("waiting", waiting)
        kv.set_json("launched", launched)
        packer.finish().send(refuse_seconds=30)
        self.interest.want(waiting > 0)

    def status(self, update):
        log.info(f"{update.task_id}: {framework.state_name(update.state)}")

    def http(self, request):
        if request.path == "/" and request.method == "GET":
            return Response.json(200, {"launched": kv.get_json("launched", 0),
                                       "waiting": kv.get_json("waiting", 0)})
        if request.path == "/run" and request.method == "POST":
            kv.set_json("waiting", kv.get_json("waiting", 0) + 1)
            self.interest.more()
            return Response.json(202, {"waiting": kv.get_json("waiting", 0)})
        raise HttpError(404, "no such endpoint: GET / or POST /run")


WitWorld = framework.export(Plugin)
