"""Log lines through the host (the agent's or master's log, tagged with the
plugin's name). Every plugin world imports ``log``."""

from wit_world.imports import log as _log

__all__ = ["trace", "debug", "info", "warn", "error"]


def trace(message: str) -> None:
    _log.log(_log.Level.TRACE, message)


def debug(message: str) -> None:
    _log.log(_log.Level.DEBUG, message)


def info(message: str) -> None:
    _log.log(_log.Level.INFO, message)


def warn(message: str) -> None:
    _log.log(_log.Level.WARN, message)


def error(message: str) -> None:
    _log.log(_log.Level.ERROR, message)
