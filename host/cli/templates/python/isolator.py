"""{{name}}: an isolator, made by `wasmos plugin new`.

Every task gets RLIMIT_NOFILE set to the configured `limit` and
`WASMOS_NOFILE` in its environment. An isolator only computes adjustments;
the agent validates and enforces them. Raising ValueError stops the launch
with the message.
"""

from wasmos import isolator


class Plugin(isolator.Isolator):
    def init(self, config):
        raw = config.get("limit", "4096")
        try:
            self.limit = int(raw)
        except ValueError:
            raise ValueError(f"limit {raw!r} is not a number") from None

    def prepare(self, spec):
        return isolator.Adjustments(
            environment={"WASMOS_NOFILE": str(self.limit)},
            rlimits={"nofile": self.limit},
        )


WitWorld = isolator.export(Plugin)
