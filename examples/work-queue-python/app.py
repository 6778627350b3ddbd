"""A work queue, written in Python with the Wasmos library (sdk/python).

Jobs posted to its API run as tasks, first come first served, each retried
up to `max-retries` times when it fails or its agent is lost. Every job
lives in the framework's replicated store (`kv`), so the queue carries on
where it was after a master failover or a plugin restart.

The API, below /frameworks/<name>/:

    POST   /jobs        {"cmd": "...", "id"?, "cpus"?, "mem"?, "retries"?}
    GET    /jobs        every job (?state=queued|launched|running|cancelling|
                        finished|failed|cancelled)
    GET    /jobs/<id>   one job
    DELETE /jobs/<id>   cancel it (kills its task if it runs)
    GET    /            counts by state

Configuration: `max-retries` (default 2), `task-prefix` (default `wq`; a
job's tasks are `<prefix>.<job>.<attempt>`).
"""

import re

from wasmos import framework, kv, log, offers
from wasmos.framework import TaskState
from wasmos.http import HttpError, Response

JOB_ID = re.compile(r"^[A-Za-z0-9_-]{1,64}$")
STATES = ("queued", "launched", "running", "cancelling", "finished", "failed", "cancelled")
#: States after which a job does not change.
DONE = ("finished", "failed", "cancelled")
#: Task states after which a job is tried again (while it has retries).
RETRIED = {
    TaskState.FAILED,
    TaskState.ERROR,
    TaskState.LOST,
    TaskState.DROPPED,
    TaskState.GONE,
    TaskState.GONE_BY_OPERATOR,
    TaskState.KILLED,
}


def job_key(job_id):
    return f"job/{job_id}"


def queue_key(job):
    # Queued jobs in submission order: keys() lists them sorted.
    return f"queued/{job['seq']:012d}"


class WorkQueue(framework.Framework):
    def init(self, config):
        try:
            self.max_retries = int(config.get("max-retries", "2"))
        except ValueError:
            raise ValueError("max-retries must be a whole number") from None
        if self.max_retries < 0:
            raise ValueError("max-retries must not be negative")
        self.prefix = config.get("task-prefix", "wq")
        if not JOB_ID.match(self.prefix):
            raise ValueError("task-prefix may hold letters, digits, - and _ only")
        self.interest = framework.OfferInterest()
        log.info(f"work queue ready: {len(kv.keys('queued/'))} job(s) waiting")

    # -- the queue ---------------------------------------------------------

    def queued(self):
        """Queued jobs, oldest first."""
        jobs = []
        for key in kv.keys("queued/"):
            job = kv.get_json(job_key(kv.get(key).decode()))
            if job is not None and job["state"] == "queued":
                jobs.append(job)
        return jobs

    def save(self, job):
        kv.set_json(job_key(job["id"]), job)
        if job["state"] == "queued":
            kv.set(queue_key(job), job["id"].encode())
        else:
            kv.delete(queue_key(job))

    def job_of_task(self, task_id):
        prefix, _, rest = task_id.partition(".")
        job_id, _, attempt = rest.rpartition(".")
        if prefix != self.prefix or not job_id:
            return None
        job = kv.get_json(job_key(job_id))
        # A status of an earlier attempt changes nothing.
        if job is None or job.get("task") != task_id:
            return None
        return job

    # -- the framework -----------------------------------------------------

    def offers(self, batch):
        packer = offers.Packer(batch)
        for job in self.queued():
            try:
                fit = packer.place(offers.Need(cpus=job["cpus"], mem=job["mem"]))
            except offers.NoFit as why:
                if job.get("waiting_for") != str(why):
                    job["waiting_for"] = str(why)
                    self.save(job)
                continue
            job["attempts"] += 1
            job["task"] = f"{self.prefix}.{job['id']}.{job['attempts']}"
            job["state"] = "launched"
            job["agent"] = fit.agent_id
            job.pop("waiting_for", None)
            self.save(job)
            packer.add(
                fit,
                framework.task(
                    job["task"],
                    job["cmd"],
                    name=job["id"],
                    cpus=job["cpus"],
                    mem=job["mem"],
                    labels={"work-queue/job": job["id"]},
                ),
            )
        packer.finish().send()
        self.interest.want(bool(kv.keys("queued/")))

    def status(self, update):
        job = self.job_of_task(update.task_id)
        if job is None or job["state"] in DONE:
            return
        name = framework.state_name(update.state)
        if job["state"] == "cancelling":
            if not framework.is_terminal(update.state):
                return
            job["state"] = "cancelled"
        elif update.state == TaskState.RUNNING:
            job["state"] = "running"
        elif update.state == TaskState.FINISHED:
            job["state"] = "finished"
            job["exit_code"] = update.exit_code
        elif update.state in RETRIED:
            job["exit_code"] = update.exit_code
            job["last_failure"] = f"{name}: {update.message or 'no message'}"
            if job["attempts"] > job["retries"]:
                job["state"] = "failed"
                log.warn(f"job {job['id']} failed after {job['attempts']} attempt(s)")
            else:
                job["state"] = "queued"
                self.interest.more()
        else:
            return
        job["updated_ms"] = framework.now_ms()
        self.save(job)

    def tick(self, now_ms):
        self.interest.want(bool(kv.keys("queued/")))

    def http(self, request):
        parts = request.decoded_segments()
        if parts == []:
            if request.method != "GET":
                raise HttpError(405, "use GET")
            return Response.json(200, self.counts())
        if parts == ["jobs"] and request.method == "GET":
            state = request.query_param("state")
            if state is not None and state not in STATES:
                raise HttpError(400, f"state must be one of {', '.join(STATES)}")
            jobs = [kv.get_json(k) for k in kv.keys("job/")]
            return Response.json(200, [j for j in jobs if state is None or j["state"] == state])
        if parts == ["jobs"] and request.method == "POST":
            return Response.json(201, self.submit(request.json(), request.header("x-wasmos-principal")))
        if len(parts) == 2 and parts[0] == "jobs":
            job = kv.get_json(job_key(parts[1]))
            if job is None:
                raise HttpError(404, f"no job {parts[1]!r}")
            if request.method == "GET":
                return Response.json(200, job)
            if request.method == "DELETE":
                return Response.json(200, self.cancel(job))
            raise HttpError(405, "use GET or DELETE")
        raise HttpError(404, "no such endpoint; see GET /jobs")

    # -- the API -----------------------------------------------------------

    def counts(self):
        counts = {s: 0 for s in STATES}
        for key in kv.keys("job/"):
            job = kv.get_json(key)
            counts[job["state"]] = counts.get(job["state"], 0) + 1
        return counts

    def submit(self, body, principal):
        if not isinstance(body, dict):
            raise HttpError(400, "the body must be a JSON object")
        cmd = body.get("cmd")
        if not isinstance(cmd, str) or not cmd.strip():
            raise HttpError(400, "cmd: a shell command is required")
        seq = int(kv.get("next-seq") or b"1")
        job_id = body.get("id", f"job-{seq}")
        if not isinstance(job_id, str) or not JOB_ID.match(job_id):
            raise HttpError(400, "id: 1-64 letters, digits, - and _")
        if kv.get(job_key(job_id)) is not None:
            raise HttpError(409, f"job {job_id!r} exists")
        job = {
            "id": job_id,
            "cmd": cmd,
            "cpus": number(body, "cpus", 0.1, 0.01, 64),
            "mem": number(body, "mem", 32, 4, 1 << 20),
            "retries": int(number(body, "retries", self.max_retries, 0, 100)),
            "state": "queued",
            "attempts": 0,
            "seq": seq,
            "submitted_by": principal,
            "submitted_ms": framework.now_ms(),
        }
        kv.set("next-seq", str(seq + 1).encode())
        self.save(job)
        log.info(f"job {job_id} queued by {principal or 'anonymous'}")
        self.interest.more()
        return job

    def cancel(self, job):
        if job["state"] in DONE:
            return job
        if job["state"] in ("launched", "running"):
            framework.kill(job["task"])
            job["state"] = "cancelling"
        else:
            job["state"] = "cancelled"
        self.save(job)
        return job


def number(body, field, default, low, high):
    value = body.get(field, default)
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise HttpError(400, f"{field}: a number is required")
    if not low <= value <= high:
        raise HttpError(400, f"{field}: must be between {low} and {high}")
    return value


WitWorld = framework.export(WorkQueue)
