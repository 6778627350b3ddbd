"""{{name}}: a placement plugin, made by `wasmos plugin new`.

`[field, AVOID, value]` keeps a task off agents whose `field` (`hostname`
or an attribute) equals `value`; among the rest it prefers agents with more
free cpus. The library keeps `self.agents` up to date; `filter` and `score`
get candidates as indices into it with what is free there.
"""

from wasmos import placement


class Plugin(placement.Placement):
    def validate(self, constraints):
        for c in constraints:
            if c.value is None:
                raise ValueError(f"[{c.field}, AVOID] needs a value to avoid")

    def filter(self, task, candidates):
        fits = []
        for c in candidates:
            agent = self.agents.get(c.agent)
            fits.append(
                agent is not None
                and all(agent.field(rule.field) != rule.value for rule in task.constraints)
            )
        return fits

    def score(self, task, candidates):
        return [c.cpus for c in candidates]


WitWorld = placement.export(Plugin)
