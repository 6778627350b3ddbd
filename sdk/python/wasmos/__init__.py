"""The Wasmos plugin library for Python (componentize-py).

One module per plugin world, each importing only what its world imports,
so a plugin pulls in just its own: ``wasmos.health`` (health checks) for
now, with ``wasmos.log`` shared by every world. A plugin subclasses the
world's base class and exports it::

    from wasmos import health

    class Tcp(health.HealthCheck):
        def check(self, target):
            ...

    WitWorld = health.export(Tcp)

Build it with ``sdk/python/build.sh WORLD APP_DIR MODULE OUT.wasm``.
"""

from typing import Dict, List

__all__ = ["Config", "config_of"]

#: A plugin's configuration: its manifest's defaults with the cluster's
#: overrides, as key -> value.
Config = Dict[str, str]


def config_of(pairs: List) -> Config:
    """WIT ``list<key-value>`` as a dict (the last of a repeated key wins)."""
    return {kv.key: kv.value for kv in pairs}
