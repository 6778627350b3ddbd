"""The framework's replicated key-value store (framework plugins only).

Every call into a framework is a transaction: writes made during it are
read back by later reads in the same call, and become durable together with
the call's driver actions when it returns; a call that raises commits
nothing. Keep here whatever must survive a master failover or a plugin
restart, and rebuild in-memory caches from it in ``init``.

Limits: keys up to 1 KiB, values up to 1 MiB.
"""

import json
from typing import Any, List, Optional

from componentize_py_types import Err
from wit_world.imports import state

__all__ = ["KvError", "get", "set", "delete", "keys", "get_json", "set_json"]


class KvError(ValueError):
    """The store refused a write (a key or value over its limit)."""


def get(key: str) -> Optional[bytes]:
    """The raw value at ``key``, or None."""
    return state.get(key)


def set(key: str, value: bytes) -> None:
    """Stores raw bytes at ``key``; raises :class:`KvError`."""
    try:
        state.set(key, bytes(value))
    except Err as e:
        raise KvError(str(e.value)) from None


def delete(key: str) -> None:
    """Removes ``key`` (a missing key is not an error)."""
    state.delete(key)


def keys(prefix: str = "") -> List[str]:
    """Every key that starts with ``prefix``, in byte order."""
    return list(state.keys(prefix))


def get_json(key: str, default: Any = None) -> Any:
    """The value at ``key`` decoded from JSON; ``default`` when missing or
    not JSON."""
    raw = state.get(key)
    if raw is None:
        return default
    try:
        return json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, ValueError):
        return default


def set_json(key: str, value: Any) -> None:
    """Stores ``value`` as JSON at ``key``; raises :class:`KvError`."""
    set(key, json.dumps(value, separators=(",", ":")).encode("utf-8"))
