"""Drivers put messages on the wire: ``pusher`` (signed HTTP to any Pusher-protocol server),
``log`` and ``null``. Each has an async and a sync face.

The pusher driver uses httpx: one library, one API and one connection pool per face, for async
apps (FastAPI) and for sync ones (Django views, scripts, the queue worker), with keep-alive and
per-phase timeouts.
"""

from __future__ import annotations

import asyncio
import logging
import time
import weakref
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol
from urllib.parse import parse_qs, quote, unquote, urlsplit

import httpx
import orjson

from ..protocol.signatures import body_md5, sign_api_request
from . import observe
from .errors import BroadcastRefused, BroadcastUnavailable, ConfigError
from .messages import Message, idempotency_key

MAX_BATCH = 10  # Pusher's batch_events limit
MAX_CHANNELS = 100  # Pusher's limit of channels per event
IDEMPOTENCY_HEADER = "Idempotency-Key"


class Driver(Protocol):
    name: str

    def publish(self, messages: Sequence[Message], key: str | None = None) -> None: ...

    async def apublish(self, messages: Sequence[Message], key: str | None = None) -> None: ...

    def close(self) -> None: ...

    async def aclose(self) -> None: ...


@dataclass(frozen=True)
class PusherSettings:
    app_id: str
    key: str
    secret: str
    base_url: str  # scheme://host:port
    timeout: float = 5.0
    batch_size: int = MAX_BATCH

    @classmethod
    def from_url(cls, url: str) -> PusherSettings:
        parts = urlsplit(url)
        if parts.scheme not in ("pusher", "pushers"):
            raise ConfigError(f"a pusher driver URL starts with pusher:// or pushers://, not {parts.scheme}://")
        key, secret = unquote(parts.username or ""), unquote(parts.password or "")
        app_id = parts.path.strip("/")
        if not key or not secret or not app_id or not parts.hostname:
            raise ConfigError("the pusher driver URL must be pusher://KEY:SECRET@HOST:PORT/APP_ID")
        try:
            port = parts.port
        except ValueError as exc:
            raise ConfigError(f"the pusher driver URL has a bad port: {exc}") from exc
        scheme = "https" if parts.scheme == "pushers" else "http"
        host = f"[{parts.hostname}]" if ":" in parts.hostname else parts.hostname
        base = f"{scheme}://{host}" + (f":{port}" if port else "")
        query = {k: v[-1] for k, v in parse_qs(parts.query).items()}
        try:
            timeout = float(query.pop("timeout", "5"))
            batch_size = int(query.pop("batch_size", str(MAX_BATCH)))
        except ValueError as exc:
            raise ConfigError(f"the pusher driver URL has a bad number: {exc}") from exc
        if query:
            raise ConfigError(f"unknown pusher driver option(s): {', '.join(sorted(query))}")
        if not 1 <= batch_size <= MAX_BATCH or timeout <= 0:
            raise ConfigError(f"batch_size must be 1..{MAX_BATCH} and timeout positive")
        return cls(app_id=app_id, key=key, secret=secret, base_url=base, timeout=timeout, batch_size=batch_size)


@dataclass(frozen=True)
class Request:
    method: str
    path: str
    params: dict[str, str]
    body: bytes
    headers: dict[str, str]


class PusherDriver:
    """Signed calls to the Pusher HTTP API of Clarion, Pusher, Reverb or Soketi."""

    name = "pusher"

    def __init__(self, settings: PusherSettings) -> None:
        self.settings = settings
        self._sync: httpx.Client | None = None
        # An httpx.AsyncClient belongs to the event loop it first ran on: one per loop, so a
        # broadcaster shared by the app's loop and another (a test's, a script's) works in both.
        self._async: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, httpx.AsyncClient] = (
            weakref.WeakKeyDictionary()
        )

    # -- the two faces' clients, made on first use and reused ------------------------------------

    def _client(self) -> httpx.Client:
        if self._sync is None:
            self._sync = httpx.Client(base_url=self.settings.base_url, timeout=self.settings.timeout)
        return self._sync

    def _aclient(self) -> httpx.AsyncClient:
        loop = asyncio.get_running_loop()
        client = self._async.get(loop)
        if client is None:
            client = httpx.AsyncClient(base_url=self.settings.base_url, timeout=self.settings.timeout)
            self._async[loop] = client
        return client

    def close(self) -> None:
        if self._sync is not None:
            self._sync.close()
            self._sync = None

    async def aclose(self) -> None:
        client = self._async.pop(asyncio.get_running_loop(), None)
        if client is not None:
            await client.aclose()
        self.close()

    # -- signing ------------------------------------------------------------------------------

    def sign(
        self,
        method: str,
        path: str,
        body: bytes = b"",
        query: Mapping[str, str] | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> Request:
        params = dict(query or {})
        params.update(auth_key=self.settings.key, auth_timestamp=str(int(time.time())), auth_version="1.0")
        if body:
            params["body_md5"] = body_md5(body)
        params["auth_signature"] = sign_api_request(self.settings.secret, method, path, params)
        all_headers = {"Content-Type": "application/json"} if body else {}
        all_headers.update(headers or {})
        return Request(method, path, params, body, all_headers)

    def _requests(self, messages: Sequence[Message], key: str | None) -> list[tuple[Request, Sequence[Message]]]:
        """One ``events`` call per message to several channels, ``batch_events`` calls of up to
        ``batch_size`` for the rest. Each request has an Idempotency-Key made from its messages'
        ids (or ``key`` when there is one request), so sending the same messages again is
        recognised."""
        app = quote(self.settings.app_id, safe="")
        calls: list[tuple[str, bytes, Sequence[Message]]] = []
        singles = [m for m in messages if len(m.channels) == 1]
        for message in messages:
            if len(message.channels) > MAX_CHANNELS:
                raise BroadcastRefused(400, f"an event may go to at most {MAX_CHANNELS} channels")
            if len(message.channels) > 1:
                body: dict[str, Any] = {"name": message.name, "data": message.data, "channels": list(message.channels)}
                if message.socket_id:
                    body["socket_id"] = message.socket_id
                calls.append((f"/apps/{app}/events", orjson.dumps(body), [message]))
        size = self.settings.batch_size
        for start in range(0, len(singles), size):
            chunk = singles[start : start + size]
            batch = [_batch_item(m) for m in chunk]
            calls.append((f"/apps/{app}/batch_events", orjson.dumps({"batch": batch}), chunk))
        return [
            (
                self.sign(
                    "POST",
                    path,
                    body,
                    headers={IDEMPOTENCY_HEADER: key if key and len(calls) == 1 else idempotency_key(group)},
                ),
                group,
            )
            for path, body, group in calls
        ]

    # -- publishing -----------------------------------------------------------------------------

    def publish(self, messages: Sequence[Message], key: str | None = None) -> None:
        for request, group in self._requests(messages, key):
            self.call(request, group)

    async def apublish(self, messages: Sequence[Message], key: str | None = None) -> None:
        for request, group in self._requests(messages, key):
            await self.acall(request, group)

    def call(self, request: Request, messages: Sequence[Message] = ()) -> Any:
        started = time.perf_counter()
        try:
            answer = self._client().request(
                request.method, request.path, params=request.params, content=request.body, headers=request.headers
            )
        except httpx.HTTPError as exc:
            raise self._failed(messages, BroadcastUnavailable(_describe(exc))) from exc
        return self._answer(answer, messages, started)

    async def acall(self, request: Request, messages: Sequence[Message] = ()) -> Any:
        started = time.perf_counter()
        try:
            answer = await self._aclient().request(
                request.method, request.path, params=request.params, content=request.body, headers=request.headers
            )
        except httpx.HTTPError as exc:
            raise self._failed(messages, BroadcastUnavailable(_describe(exc))) from exc
        return self._answer(answer, messages, started)

    def _answer(self, answer: httpx.Response, messages: Sequence[Message], started: float) -> Any:
        status = answer.status_code
        if status >= 500 or status == 429:
            raise self._failed(messages, BroadcastUnavailable(_reason(answer), status))
        if status >= 400:
            raise self._failed(messages, BroadcastRefused(status, _reason(answer)))
        if messages:
            observe.sent(self.name, messages, time.perf_counter() - started)
        if not answer.content:
            return None
        try:
            return answer.json()
        except ValueError:
            return answer.text

    @staticmethod
    def _failed(messages: Sequence[Message], error: BroadcastRefused | BroadcastUnavailable) -> Exception:
        observe.failed(messages, error, refused=isinstance(error, BroadcastRefused))
        return error

    # -- the rest of the HTTP API the SDK needs ---------------------------------------------------

    def _terminate(self, user_id: str) -> Request:
        app = quote(self.settings.app_id, safe="")
        return self.sign("POST", f"/apps/{app}/users/{quote(user_id, safe='')}/terminate_connections", b"{}")

    def terminate_connections(self, user_id: str) -> None:
        self.call(self._terminate(user_id))

    async def aterminate_connections(self, user_id: str) -> None:
        await self.acall(self._terminate(user_id))

    def _history(self, channel: str, query: Mapping[str, str]) -> Request:
        app = quote(self.settings.app_id, safe="")
        return self.sign("GET", f"/apps/{app}/channels/{quote(channel, safe='')}/history", query=query)

    def history(self, channel: str, query: Mapping[str, str]) -> Any:
        return self.call(self._history(channel, query))

    async def ahistory(self, channel: str, query: Mapping[str, str]) -> Any:
        return await self.acall(self._history(channel, query))


def _batch_item(message: Message) -> dict[str, Any]:
    item: dict[str, Any] = {"channel": message.channels[0], "name": message.name, "data": message.data}
    if message.socket_id:
        item["socket_id"] = message.socket_id
    return item


def _reason(answer: httpx.Response) -> str:
    try:
        body = answer.json()
    except ValueError:
        body = None
    if isinstance(body, dict) and isinstance(body.get("error"), str):
        return str(body["error"])[:300]
    return (answer.text.strip() or answer.reason_phrase)[:300]


def _describe(exc: httpx.HTTPError) -> str:
    return f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__


class LogDriver:
    """Logs what would be sent (channels, name, size; never the data) and sends nothing."""

    name = "log"

    def __init__(self, logger: logging.Logger | None = None) -> None:
        self.logger = logger or logging.getLogger("clarion.broadcasting.log_driver")

    def publish(self, messages: Sequence[Message], key: str | None = None) -> None:
        for message in messages:
            self.logger.info(
                "broadcast %s on %s (%d bytes)", message.name, ",".join(message.channels), len(message.data)
            )
        observe.sent(self.name, messages, 0.0)

    async def apublish(self, messages: Sequence[Message], key: str | None = None) -> None:
        self.publish(messages, key)

    def close(self) -> None:
        pass

    async def aclose(self) -> None:
        pass


class NullDriver(LogDriver):
    """Sends nothing and says nothing: for tests and for turning broadcasting off."""

    name = "null"

    def publish(self, messages: Sequence[Message], key: str | None = None) -> None:
        observe.sent(self.name, messages, 0.0)


def driver_from_url(url: str) -> Driver:
    scheme = urlsplit(url).scheme
    if scheme in ("pusher", "pushers"):
        return PusherDriver(PusherSettings.from_url(url))
    if scheme == "log":
        return LogDriver()
    if scheme == "null":
        return NullDriver()
    raise ConfigError(f"unknown broadcast driver {scheme or url!r}: use pusher://, pushers://, log:// or null://")
