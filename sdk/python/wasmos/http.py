"""Requests and responses of a framework's own API, mounted by the master at
``/frameworks/<name>/``.

A framework's :meth:`~wasmos.framework.Framework.http` gets a
:class:`Request` and returns a :class:`Response`; raising
:class:`HttpError` anywhere below it answers with that status and
``{"message": ...}``, the error shape of every Wasmos API.
"""

import json as _json
from typing import Any, List, Optional, Tuple
from urllib.parse import unquote, unquote_plus

__all__ = ["Request", "Response", "HttpError"]


class HttpError(Exception):
    """Answers the request with ``status`` and ``{"message": message}``."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message

    def response(self) -> "Response":
        return Response.error(self.status, self.message)


class Request:
    """A request to the plugin's API."""

    def __init__(
        self,
        method: str,
        path: str,
        query: str = "",
        headers: Optional[List[Tuple[str, str]]] = None,
        body: bytes = b"",
    ) -> None:
        self.method = method
        #: Below the plugin's mount point, starting with ``/``.
        self.path = path
        #: The raw query string, without ``?``.
        self.query = query
        self.headers: List[Tuple[str, str]] = list(headers or [])
        self.body = bytes(body)

    @classmethod
    def from_wit(cls, raw: Any) -> "Request":
        return cls(
            raw.method,
            raw.path,
            raw.query,
            [(kv.key, kv.value) for kv in raw.headers],
            raw.body,
        )

    def segments(self) -> List[str]:
        """The path's non-empty segments: ``/jobs/j1/`` is ``["jobs", "j1"]``."""
        return [s for s in self.path.split("/") if s]

    def decoded_segments(self) -> List[str]:
        """The segments percent-decoded (``%20`` is a space; ``+`` stays)."""
        return [unquote(s) for s in self.segments()]

    def query_params(self, name: str) -> List[str]:
        """Every value of a query parameter, percent-decoded: repeated
        (``a=1&a=2``) or in the ``a[]=1`` form."""
        alt = name + "[]"
        out = []
        for pair in self.query.split("&"):
            if not pair:
                continue
            key, _, value = pair.partition("=")
            if unquote_plus(key) in (name, alt):
                out.append(unquote_plus(value))
        return out

    def query_param(self, name: str, default: Optional[str] = None) -> Optional[str]:
        """A query parameter (the first, if repeated), or ``default``."""
        values = self.query_params(name)
        return values[0] if values else default

    def header(self, name: str) -> Optional[str]:
        """A header, by case-insensitive name."""
        wanted = name.lower()
        for key, value in self.headers:
            if key.lower() == wanted:
                return value
        return None

    def json(self) -> Any:
        """The body as JSON; raises :class:`HttpError` 400 saying what is
        wrong."""
        try:
            return _json.loads(self.body.decode("utf-8"))
        except (UnicodeDecodeError, ValueError) as e:
            raise HttpError(400, f"invalid JSON body: {e}") from None

    def __repr__(self) -> str:
        return f"Request({self.method} {self.path}?{self.query})"


class Response:
    """A response from the plugin's API."""

    def __init__(
        self,
        status: int,
        headers: Optional[List[Tuple[str, str]]] = None,
        body: bytes = b"",
    ) -> None:
        self.status = status
        self.headers: List[Tuple[str, str]] = list(headers or [])
        self.body = bytes(body)

    @staticmethod
    def json(status: int, value: Any) -> "Response":
        """``value`` as JSON."""
        try:
            body = _json.dumps(value, separators=(",", ":")).encode("utf-8")
        except (TypeError, ValueError) as e:
            return Response.error(500, f"cannot encode the response: {e}")
        return Response(status, [("content-type", "application/json")], body)

    @staticmethod
    def text(status: int, body: str) -> "Response":
        """Plain text."""
        return Response(
            status, [("content-type", "text/plain; charset=utf-8")], body.encode("utf-8")
        )

    @staticmethod
    def error(status: int, message: str) -> "Response":
        """``{"message": ...}``, the error shape of every Wasmos API."""
        return Response.json(status, {"message": message})

    @staticmethod
    def empty(status: int) -> "Response":
        """No body."""
        return Response(status)

    def to_wit(self) -> Any:
        from wit_world.imports import types

        return types.HttpResponse(
            self.status,
            [types.KeyValue(k, v) for k, v in self.headers],
            self.body,
        )

    def __repr__(self) -> str:
        return f"Response({self.status}, {len(self.body)} bytes)"
