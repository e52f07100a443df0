"""A small, typed client for the Toxiproxy HTTP API (server 2.x).

We keep our own client rather than using ``toxiproxy-python`` because that library
sends its requests without any timeout (a stalled Toxiproxy would hang a campaign,
and with it the rollback that must always run), talks to one global server address
(we run several servers side by side in tests), and reports a failed ``/reset`` —
for instance a 503 — as a plain ``False`` that callers easily ignore. Here every
request carries a timeout, and every answer outside 2xx raises :class:`ToxiproxyError`
with the status and the body the server sent.

Endpoints, as the server (v2.12.0) routes them::

    GET    /version
    POST   /reset                              enable every proxy, remove every toxic
    GET    /proxies                            {name: proxy with its toxics}
    POST   /proxies                            create (409 if the name exists)
    POST   /populate                           create or replace a list of proxies
    GET    /proxies/{proxy}                    404 if unknown
    POST   /proxies/{proxy}                    update fields, e.g. {"enabled": false}
    DELETE /proxies/{proxy}
    GET    /proxies/{proxy}/toxics
    POST   /proxies/{proxy}/toxics             add (409 if the toxic name exists)
    GET    /proxies/{proxy}/toxics/{toxic}
    PATCH  /proxies/{proxy}/toxics/{toxic}     update attributes and/or toxicity
    DELETE /proxies/{proxy}/toxics/{toxic}

Every operation is described once as a :class:`_Call` (method, path, body, parser);
:class:`ToxiproxyClient` and :class:`AsyncToxiproxyClient` only differ in how they send it.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from types import TracebackType
from typing import Any, Generic, Literal, Self, TypeVar
from urllib.parse import quote

import httpx

__all__ = [
    "DEFAULT_TIMEOUT_S",
    "DEFAULT_URL",
    "AsyncToxiproxyClient",
    "Proxy",
    "ProxySpec",
    "Stream",
    "Toxic",
    "ToxiproxyClient",
    "ToxiproxyError",
    "ToxiproxyUnreachable",
]

DEFAULT_URL = "http://127.0.0.1:8474"
DEFAULT_TIMEOUT_S = 5.0

Stream = Literal["upstream", "downstream"]
_STREAMS: tuple[Stream, ...] = ("upstream", "downstream")

T = TypeVar("T")


class ToxiproxyError(Exception):
    """The Toxiproxy API answered outside 2xx (``status`` is the HTTP status) or could
    not be reached at all (``status`` is ``None``; see :class:`ToxiproxyUnreachable`)."""

    def __init__(self, method: str, url: str, status: int | None, body: str) -> None:
        self.method = method
        self.url = url
        self.status = status
        self.body = body
        where = f"{method} {url}"
        what = f"HTTP {status}" if status is not None else "no answer"
        detail = f": {body.strip()}" if body.strip() else ""
        super().__init__(f"Toxiproxy {where} -> {what}{detail}")


class ToxiproxyUnreachable(ToxiproxyError):
    """The request timed out, or the connection was refused or dropped."""

    def __init__(self, method: str, url: str, reason: str) -> None:
        super().__init__(method, url, None, reason)


@dataclass(frozen=True, slots=True)
class Toxic:
    """A toxic as the server reports it."""

    name: str
    type: str
    stream: Stream
    toxicity: float
    attributes: Mapping[str, Any] = field(default_factory=dict)

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> Toxic:
        stream = data.get("stream", "downstream")
        if stream not in _STREAMS:
            raise ValueError(f"unknown toxic stream {stream!r}")
        return cls(
            name=str(data["name"]),
            type=str(data["type"]),
            stream=stream,
            toxicity=float(data.get("toxicity", 1.0)),
            attributes=dict(data.get("attributes") or {}),
        )


@dataclass(frozen=True, slots=True)
class Proxy:
    """A proxy as the server reports it; ``listen`` holds the real port even when the
    proxy was created with port 0."""

    name: str
    listen: str
    upstream: str
    enabled: bool
    toxics: tuple[Toxic, ...] = ()

    @property
    def listen_host(self) -> str:
        return self.listen.rsplit(":", 1)[0].strip("[]")

    @property
    def listen_port(self) -> int:
        return int(self.listen.rsplit(":", 1)[1])

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> Proxy:
        return cls(
            name=str(data["name"]),
            listen=str(data["listen"]),
            upstream=str(data["upstream"]),
            enabled=bool(data.get("enabled", True)),
            toxics=tuple(Toxic.from_json(t) for t in data.get("toxics") or ()),
        )


@dataclass(frozen=True, slots=True)
class ProxySpec:
    """What to ask for when creating or populating a proxy."""

    name: str
    upstream: str
    listen: str = "127.0.0.1:0"
    enabled: bool = True

    def to_json(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "upstream": self.upstream,
            "listen": self.listen,
            "enabled": self.enabled,
        }


# --------------------------------------------------------------------------- operations


@dataclass(frozen=True, slots=True)
class _Call(Generic[T]):
    method: str
    path: str
    parse: Callable[[httpx.Response], T]
    body: Any = None


def _json(response: httpx.Response) -> Any:
    return response.json()


def _nothing(_: httpx.Response) -> None:
    return None


def _parse_version(response: httpx.Response) -> str:
    # 2.x servers answer {"version": "..."}; older ones answered the bare text.
    try:
        data = response.json()
    except (json.JSONDecodeError, ValueError):
        return response.text.strip()
    if isinstance(data, Mapping) and "version" in data:
        return str(data["version"])
    return response.text.strip()


def _parse_proxy(response: httpx.Response) -> Proxy:
    return Proxy.from_json(_json(response))


def _parse_proxy_map(response: httpx.Response) -> dict[str, Proxy]:
    return {name: Proxy.from_json(data) for name, data in _json(response).items()}


def _parse_populated(response: httpx.Response) -> list[Proxy]:
    return [Proxy.from_json(data) for data in _json(response).get("proxies") or ()]


def _parse_toxic(response: httpx.Response) -> Toxic:
    return Toxic.from_json(_json(response))


def _parse_toxic_list(response: httpx.Response) -> list[Toxic]:
    return [Toxic.from_json(data) for data in _json(response) or ()]


def _seg(name: str) -> str:
    if not name:
        raise ValueError("a proxy or toxic name must not be empty")
    return quote(name, safe="")


def _check_toxicity(toxicity: float) -> float:
    if not 0.0 <= toxicity <= 1.0:
        raise ValueError(f"toxicity must lie in [0, 1], got {toxicity}")
    return float(toxicity)


class _Calls:
    """Every API operation as data; shared by the sync and the async client."""

    @staticmethod
    def version() -> _Call[str]:
        return _Call("GET", "/version", _parse_version)

    @staticmethod
    def reset() -> _Call[None]:
        return _Call("POST", "/reset", _nothing)

    @staticmethod
    def proxies() -> _Call[dict[str, Proxy]]:
        return _Call("GET", "/proxies", _parse_proxy_map)

    @staticmethod
    def create_proxy(spec: ProxySpec) -> _Call[Proxy]:
        return _Call("POST", "/proxies", _parse_proxy, spec.to_json())

    @staticmethod
    def populate(specs: Sequence[ProxySpec]) -> _Call[list[Proxy]]:
        return _Call("POST", "/populate", _parse_populated, [s.to_json() for s in specs])

    @staticmethod
    def get_proxy(name: str) -> _Call[Proxy]:
        return _Call("GET", f"/proxies/{_seg(name)}", _parse_proxy)

    @staticmethod
    def update_proxy(
        name: str, *, listen: str | None, upstream: str | None, enabled: bool | None
    ) -> _Call[Proxy]:
        # Fields left out keep their current value on the server.
        body: dict[str, Any] = {}
        if listen is not None:
            body["listen"] = listen
        if upstream is not None:
            body["upstream"] = upstream
        if enabled is not None:
            body["enabled"] = enabled
        return _Call("POST", f"/proxies/{_seg(name)}", _parse_proxy, body)

    @staticmethod
    def delete_proxy(name: str) -> _Call[None]:
        return _Call("DELETE", f"/proxies/{_seg(name)}", _nothing)

    @staticmethod
    def toxics(proxy: str) -> _Call[list[Toxic]]:
        return _Call("GET", f"/proxies/{_seg(proxy)}/toxics", _parse_toxic_list)

    @staticmethod
    def get_toxic(proxy: str, name: str) -> _Call[Toxic]:
        return _Call("GET", f"/proxies/{_seg(proxy)}/toxics/{_seg(name)}", _parse_toxic)

    @staticmethod
    def add_toxic(
        proxy: str,
        type: str,
        *,
        stream: Stream,
        toxicity: float,
        attributes: Mapping[str, Any] | None,
        name: str | None,
    ) -> _Call[Toxic]:
        if stream not in _STREAMS:
            raise ValueError(f"stream must be one of {_STREAMS}, got {stream!r}")
        body: dict[str, Any] = {
            "type": type,
            "stream": stream,
            "toxicity": _check_toxicity(toxicity),
            "attributes": dict(attributes or {}),
        }
        if name is not None:
            body["name"] = name
        return _Call("POST", f"/proxies/{_seg(proxy)}/toxics", _parse_toxic, body)

    @staticmethod
    def update_toxic(
        proxy: str,
        name: str,
        *,
        attributes: Mapping[str, Any] | None,
        toxicity: float | None,
    ) -> _Call[Toxic]:
        # The server merges the attributes given into the toxic's current ones and keeps
        # the toxicity when it is left out.
        body: dict[str, Any] = {}
        if attributes is not None:
            body["attributes"] = dict(attributes)
        if toxicity is not None:
            body["toxicity"] = _check_toxicity(toxicity)
        path = f"/proxies/{_seg(proxy)}/toxics/{_seg(name)}"
        return _Call("PATCH", path, _parse_toxic, body)

    @staticmethod
    def remove_toxic(proxy: str, name: str) -> _Call[None]:
        return _Call("DELETE", f"/proxies/{_seg(proxy)}/toxics/{_seg(name)}", _nothing)


def _finish(call: _Call[T], response: httpx.Response) -> T:
    if not response.is_success:
        raise ToxiproxyError(call.method, str(response.url), response.status_code, response.text)
    try:
        return call.parse(response)
    except (ValueError, KeyError, TypeError, AttributeError) as exc:
        raise ToxiproxyError(
            call.method, str(response.url), response.status_code, f"unreadable answer: {exc}"
        ) from exc


def _unreachable(call: _Call[Any], base_url: str, exc: httpx.TransportError) -> ToxiproxyError:
    reason = f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
    return ToxiproxyUnreachable(call.method, base_url.rstrip("/") + call.path, reason)


def _request_kwargs(call: _Call[Any]) -> dict[str, Any]:
    return {} if call.body is None else {"json": call.body}


# --------------------------------------------------------------------------- clients


class ToxiproxyClient:
    """Blocking client. Every request is bounded by ``timeout`` seconds (connect, read,
    write and pool each); use it as a context manager or call :meth:`close`."""

    def __init__(
        self,
        base_url: str = DEFAULT_URL,
        *,
        timeout: float = DEFAULT_TIMEOUT_S,
        transport: httpx.BaseTransport | None = None,
    ) -> None:
        self.base_url = base_url.rstrip("/")
        self.timeout = timeout
        self._http = httpx.Client(base_url=self.base_url, timeout=timeout, transport=transport)

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def _send(self, call: _Call[T]) -> T:
        try:
            response = self._http.request(call.method, call.path, **_request_kwargs(call))
        except httpx.TransportError as exc:
            raise _unreachable(call, self.base_url, exc) from exc
        return _finish(call, response)

    def version(self) -> str:
        return self._send(_Calls.version())

    def is_running(self) -> bool:
        """True when the API answers ``/version``; never raises."""
        try:
            self.version()
        except ToxiproxyError:
            return False
        return True

    def reset(self) -> None:
        """Enable every proxy and remove every toxic."""
        self._send(_Calls.reset())

    def proxies(self) -> dict[str, Proxy]:
        return self._send(_Calls.proxies())

    def create_proxy(
        self, name: str, upstream: str, listen: str = "127.0.0.1:0", *, enabled: bool = True
    ) -> Proxy:
        return self._send(_Calls.create_proxy(ProxySpec(name, upstream, listen, enabled)))

    def populate(self, specs: Sequence[ProxySpec]) -> list[Proxy]:
        """Create the proxies, replacing those whose listen or upstream address differ;
        proxies that already match are left untouched (so it is safe to repeat)."""
        return self._send(_Calls.populate(specs))

    def get_proxy(self, name: str) -> Proxy:
        return self._send(_Calls.get_proxy(name))

    def update_proxy(
        self,
        name: str,
        *,
        listen: str | None = None,
        upstream: str | None = None,
        enabled: bool | None = None,
    ) -> Proxy:
        return self._send(
            _Calls.update_proxy(name, listen=listen, upstream=upstream, enabled=enabled)
        )

    def disable_proxy(self, name: str) -> Proxy:
        """Take the proxy down: new connections are refused, open ones are dropped."""
        return self.update_proxy(name, enabled=False)

    def enable_proxy(self, name: str) -> Proxy:
        return self.update_proxy(name, enabled=True)

    def delete_proxy(self, name: str) -> None:
        self._send(_Calls.delete_proxy(name))

    def toxics(self, proxy: str) -> list[Toxic]:
        return self._send(_Calls.toxics(proxy))

    def get_toxic(self, proxy: str, name: str) -> Toxic:
        return self._send(_Calls.get_toxic(proxy, name))

    def add_toxic(
        self,
        proxy: str,
        type: str,
        *,
        stream: Stream = "downstream",
        toxicity: float = 1.0,
        attributes: Mapping[str, Any] | None = None,
        name: str | None = None,
    ) -> Toxic:
        """Add a toxic; the server names it ``<type>_<stream>`` when ``name`` is None."""
        return self._send(
            _Calls.add_toxic(
                proxy, type, stream=stream, toxicity=toxicity, attributes=attributes, name=name
            )
        )

    def update_toxic(
        self,
        proxy: str,
        name: str,
        *,
        attributes: Mapping[str, Any] | None = None,
        toxicity: float | None = None,
    ) -> Toxic:
        return self._send(
            _Calls.update_toxic(proxy, name, attributes=attributes, toxicity=toxicity)
        )

    def remove_toxic(self, proxy: str, name: str) -> None:
        self._send(_Calls.remove_toxic(proxy, name))


class AsyncToxiproxyClient:
    """The same operations for asyncio code; see :class:`ToxiproxyClient`."""

    def __init__(
        self,
        base_url: str = DEFAULT_URL,
        *,
        timeout: float = DEFAULT_TIMEOUT_S,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        self.base_url = base_url.rstrip("/")
        self.timeout = timeout
        self._http = httpx.AsyncClient(base_url=self.base_url, timeout=timeout, transport=transport)

    async def aclose(self) -> None:
        await self._http.aclose()

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()

    async def _send(self, call: _Call[T]) -> T:
        try:
            response = await self._http.request(call.method, call.path, **_request_kwargs(call))
        except httpx.TransportError as exc:
            raise _unreachable(call, self.base_url, exc) from exc
        return _finish(call, response)

    async def version(self) -> str:
        return await self._send(_Calls.version())

    async def is_running(self) -> bool:
        try:
            await self.version()
        except ToxiproxyError:
            return False
        return True

    async def reset(self) -> None:
        await self._send(_Calls.reset())

    async def proxies(self) -> dict[str, Proxy]:
        return await self._send(_Calls.proxies())

    async def create_proxy(
        self, name: str, upstream: str, listen: str = "127.0.0.1:0", *, enabled: bool = True
    ) -> Proxy:
        return await self._send(_Calls.create_proxy(ProxySpec(name, upstream, listen, enabled)))

    async def populate(self, specs: Sequence[ProxySpec]) -> list[Proxy]:
        return await self._send(_Calls.populate(specs))

    async def get_proxy(self, name: str) -> Proxy:
        return await self._send(_Calls.get_proxy(name))

    async def update_proxy(
        self,
        name: str,
        *,
        listen: str | None = None,
        upstream: str | None = None,
        enabled: bool | None = None,
    ) -> Proxy:
        return await self._send(
            _Calls.update_proxy(name, listen=listen, upstream=upstream, enabled=enabled)
        )

    async def disable_proxy(self, name: str) -> Proxy:
        return await self.update_proxy(name, enabled=False)

    async def enable_proxy(self, name: str) -> Proxy:
        return await self.update_proxy(name, enabled=True)

    async def delete_proxy(self, name: str) -> None:
        await self._send(_Calls.delete_proxy(name))

    async def toxics(self, proxy: str) -> list[Toxic]:
        return await self._send(_Calls.toxics(proxy))

    async def get_toxic(self, proxy: str, name: str) -> Toxic:
        return await self._send(_Calls.get_toxic(proxy, name))

    async def add_toxic(
        self,
        proxy: str,
        type: str,
        *,
        stream: Stream = "downstream",
        toxicity: float = 1.0,
        attributes: Mapping[str, Any] | None = None,
        name: str | None = None,
    ) -> Toxic:
        return await self._send(
            _Calls.add_toxic(
                proxy, type, stream=stream, toxicity=toxicity, attributes=attributes, name=name
            )
        )

    async def update_toxic(
        self,
        proxy: str,
        name: str,
        *,
        attributes: Mapping[str, Any] | None = None,
        toxicity: float | None = None,
    ) -> Toxic:
        return await self._send(
            _Calls.update_toxic(proxy, name, attributes=attributes, toxicity=toxicity)
        )

    async def remove_toxic(self, proxy: str, name: str) -> None:
        await self._send(_Calls.remove_toxic(proxy, name))
