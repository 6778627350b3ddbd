"""Bin-packing placement, written in Python with the Wasmos library
(sdk/python).

`[RESOURCE, BINPACK]` or `[RESOURCE, BINPACK, MAX_FILL]`, where RESOURCE is
`cpus`, `mem` or `disk`: among the agents with room, the fullest wins (its
share of RESOURCE in use once the task is there scores highest), so that
tasks fill agents one after another and leave whole agents free for big
tasks or for scaling down. With MAX_FILL (a fraction, 0 < MAX_FILL <= 1)
an agent the task would fill past that share is refused.

    wasmos task run --constraint mem:BINPACK:0.8 --mem 256 -- ./worker
"""

from wasmos import log, placement

RESOURCES = ("cpus", "mem", "disk")


def parse(constraint):
    """(resource, max fill) of a BINPACK constraint; ValueError says why."""
    if constraint.field not in RESOURCES:
        raise ValueError(
            f"[{constraint.field}, BINPACK]: the field must be one of {', '.join(RESOURCES)}"
        )
    if constraint.value is None:
        return constraint.field, 1.0
    try:
        fill = float(constraint.value)
    except ValueError:
        fill = -1.0
    if not 0.0 < fill <= 1.0:
        raise ValueError(
            f"[{constraint.field}, BINPACK, {constraint.value}]: the maximum fill must be"
            " a fraction above 0 and at most 1, e.g. 0.8"
        )
    return constraint.field, fill


def free(candidate, resource):
    return getattr(candidate, resource)


class BinPack(placement.Placement):
    def init(self, config):
        log.debug("binpack-py ready")

    def validate(self, constraints):
        for c in constraints:
            parse(c)

    def fills(self, task, candidate):
        """(fill once the task is there, max fill) per BINPACK rule."""
        agent = self.agents.get(candidate.agent)
        out = []
        for c in task.constraints:
            resource, limit = parse(c)
            total = agent.total(resource) if agent is not None else 0.0
            if total <= 0:
                out.append((float("inf"), limit))
                continue
            need = getattr(task.resources, resource)
            used = total - free(candidate, resource) + need
            out.append((used / total, limit))
        return out

    def filter(self, task, candidates):
        return [
            all(fill <= limit + 1e-9 for fill, limit in self.fills(task, c))
            for c in candidates
        ]

    def score(self, task, candidates):
        # The fuller the better; several rules add up.
        return [
            sum(min(fill, 1.0) for fill, _ in self.fills(task, c)) for c in candidates
        ]


WitWorld = placement.export(BinPack)
