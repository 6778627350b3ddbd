"""The Wasmos plugin library for Python (componentize-py).

One module per plugin world, each importing only what its world imports,
so a plugin pulls in just its own:

- ``wasmos.framework`` (schedulers), with ``wasmos.kv`` (their replicated
  store), ``wasmos.http`` (their API's requests and responses) and
  ``wasmos.offers`` (fitting tasks into offers);
- ``wasmos.placement`` (placement plugins, with the agents view);
- ``wasmos.isolator`` (isolators);
- ``wasmos.health`` (health checks);
- ``wasmos.log``, shared by every world.

A plugin subclasses its world's base class and exports it::

    from wasmos import health

    class Tcp(health.HealthCheck):
        def check(self, target):
            ...

    WitWorld = health.export(Tcp)

Build it with ``sdk/python/build.sh WORLD APP_DIR MODULE OUT.wasm``.
"""

from typing import Any, Callable, Dict, List, Optional

__all__ = ["Config", "config_of", "start"]

#: A plugin's configuration: its manifest's defaults with the cluster's
#: overrides, as key -> value.
Config = Dict[str, str]


def config_of(pairs: List) -> Config:
    """WIT ``list<key-value>`` as a dict (the last of a repeated key wins)."""
    return {kv.key: kv.value for kv in pairs}


def start(cls: type, config: List, prepare: Optional[Callable[[Any], None]] = None) -> Any:
    """A new instance of a plugin class for a world's ``init`` export:
    ``prepare``d, then ``init``ed with the configuration; a ``ValueError``
    from ``init`` becomes the export's error (the operator sees it)."""
    from componentize_py_types import Err

    plugin = cls()
    if prepare is not None:
        prepare(plugin)
    try:
        plugin.init(config_of(config))
    except ValueError as e:
        raise Err(str(e)) from None
    return plugin
