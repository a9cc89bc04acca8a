"""One port for WebSockets and the HTTP API.

Each new TCP connection starts here. Once its request head has arrived: a WebSocket upgrade to
``/app/{key}`` is answered here and the connection becomes a lean ``Connection``; any other
request is handed, bytes and all, to aiohttp, which serves the HTTP API, health and metrics.
A proxy that pools its connections to Clarion may send an upgrade on a connection that already
carried HTTP requests, so aiohttp has it: ``adopt`` takes such a connection back from aiohttp.

Keeping aiohttp out of WebSocket connections is what makes an idle socket cheap (no request
object, no handler task, no stream reader) and its handshake fast; the measurements are in
docs/benchmarks.md.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import logging
from collections.abc import Callable
from urllib.parse import parse_qsl, unquote, urlsplit

from aiohttp import web

from ..observability import metrics
from ..observability.logs import fields
from ..protocol.errors import ErrorCode
from ..protocol.session import Session
from . import taps
from .connection import CLOSE_TIMEOUT, Connection, hang_up, refuse, remote
from .limits import client_address
from .node import Node

log = logging.getLogger("clarion.connection")

MAX_HEAD = 16 * 1024  # bytes of request line and headers
GUID = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11"
# Room for the envelope around an event's data (channel, event name, channel_data, auth).
FRAME_OVERHEAD = 8 * 1024
SUPPORTED_PROTOCOLS = range(4, 8)
RETRY_AFTER = 5  # seconds, in the Retry-After of a WebSocket refused by a limit


def version_problem(query: dict[str, str]) -> tuple[ErrorCode, str] | None:
    raw = query.get("protocol")
    if raw is None:
        return None  # Pusher infers the version; every current client sends protocol=7
    if not raw.isdigit():
        return ErrorCode.INVALID_VERSION, "Invalid version string format"
    if int(raw) not in SUPPORTED_PROTOCOLS:
        return ErrorCode.UNSUPPORTED_PROTOCOL, f"Unsupported protocol version {raw[:8]}"
    return None


def accept_key(key: str) -> str:
    # SHA-1 is what RFC 6455 section 4.2.2 prescribes for the accept key; it secures nothing.
    return base64.b64encode(hashlib.sha1(key.encode() + GUID).digest()).decode()  # noqa: S324


# Handshake headers that hold one value (RFC 6455 4.1, RFC 9110 7.2); a second copy is refused.
_HEADER_NAMES = {name.lower(): name for name in ("Host", "Origin", "Sec-WebSocket-Key", "Sec-WebSocket-Version")}
SINGLE_HEADERS = frozenset(_HEADER_NAMES)
# Headers whose copies form one list (RFC 9110 5.3): "Connection: keep-alive" then "Connection: Upgrade".
LIST_HEADERS = frozenset(("connection", "upgrade", "sec-websocket-protocol", "sec-websocket-extensions"))


def _tokens(value: str) -> list[str]:
    return [token.strip().lower() for token in value.split(",")]


class Upgrade:
    """A parsed WebSocket upgrade request, or None from ``read`` when the head is something else."""

    __slots__ = ("headers", "key", "path", "query")

    def __init__(self, path: str, query: dict[str, str], headers: dict[str, str], key: str) -> None:
        self.path = path
        self.query = query
        self.headers = headers
        self.key = key

    @staticmethod
    def read(head: bytes) -> Upgrade | str | None:
        """``Upgrade`` for a valid upgrade to ``/app/...``; an error message for a broken one;
        None for a request aiohttp should serve."""
        try:
            text = head.decode("latin-1")
        except UnicodeDecodeError:  # pragma: no cover - latin-1 decodes any bytes
            return None
        line, _, rest = text.partition("\r\n")
        parts = line.split(" ")
        if len(parts) != 3 or parts[0] != "GET" or not parts[2].startswith("HTTP/1.1"):
            return None
        target = urlsplit(parts[1])
        if not target.path.startswith("/app/"):
            return None
        headers: dict[str, str] = {}
        for raw in rest.split("\r\n"):
            name, sep, value = raw.partition(":")
            if not sep:
                return None  # malformed: aiohttp answers 400
            name = name.strip().lower()
            value = value.strip()
            if name in headers:
                if name in SINGLE_HEADERS:
                    # Two keys (or versions, hosts, origins) make the request ambiguous: a proxy
                    # may have checked one and we would act on the other.
                    return f"{_HEADER_NAMES[name]} must be sent once"
                if name in LIST_HEADERS:
                    value = f"{headers[name]}, {value}"  # RFC 9110 5.3: one comma-separated list
            headers[name] = value
        if "websocket" not in _tokens(headers.get("upgrade", "")):
            return None  # plain GET on the WebSocket path: aiohttp answers 400
        if "upgrade" not in _tokens(headers.get("connection", "")):
            return "Connection: Upgrade expected"
        if headers.get("sec-websocket-version") != "13":
            return "Sec-WebSocket-Version 13 expected"
        key = headers.get("sec-websocket-key", "")
        try:
            if len(base64.b64decode(key, validate=True)) != 16:
                return "Sec-WebSocket-Key must be 16 bytes in base64"
        except ValueError:
            return "Sec-WebSocket-Key must be 16 bytes in base64"
        query = dict(parse_qsl(target.query, keep_blank_values=True))
        return Upgrade(unquote(target.path), query, headers, key)


class FrontDoor(asyncio.Protocol):
    """The first protocol of every connection, until its request head is read."""

    __slots__ = ("_buffer", "_timer", "http", "node", "transport")

    def __init__(self, node: Node, http: Callable[[], asyncio.Protocol]) -> None:
        self.node = node
        self.http = http
        self.transport: asyncio.Transport | None = None
        self._buffer = bytearray()
        self._timer: asyncio.TimerHandle | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # A stream transport; uvloop's does not subclass asyncio.Transport, so no isinstance check.
        stream: asyncio.Transport = transport  # type: ignore[assignment]
        self.transport = stream
        # Half-open and slowloris sockets: no complete request head in time, no connection.
        timeout = self.node.settings.handshake_timeout
        self._timer = asyncio.get_running_loop().call_later(timeout, stream.abort)

    def connection_lost(self, exc: Exception | None) -> None:
        if self._timer is not None:
            self._timer.cancel()

    def data_received(self, data: bytes) -> None:
        buffer = self._buffer
        buffer += data
        end = buffer.find(b"\r\n\r\n")
        transport = self.transport
        assert transport is not None
        if end < 0:
            # Too long once even the earliest possible end of the head would be past the limit.
            if len(buffer) - 3 > MAX_HEAD:
                self._answer(431, "Request Header Fields Too Large")
            return
        if end > MAX_HEAD:  # a whole head in one read is held to the same limit
            self._answer(431, "Request Header Fields Too Large")
            return
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        upgrade = Upgrade.read(bytes(buffer[:end]))
        if upgrade is None:
            self._hand_to_http()
        elif isinstance(upgrade, str):
            self._answer(400, upgrade)
        else:
            self._open(upgrade, bytes(buffer[end + 4 :]))

    def _hand_to_http(self) -> None:
        transport = self.transport
        assert transport is not None
        protocol = self.http()
        transport.set_protocol(protocol)
        protocol.connection_made(transport)
        protocol.data_received(bytes(self._buffer))
        self._buffer = bytearray()

    def _answer(self, status: int, message: str, retry_after: int | None = None) -> None:
        """Refuse a handshake with an HTTP status, counted and logged (refusals by a limit are
        logged by ``Admission``, aggregated: a storm of them must not become a storm of lines)."""
        assert self.transport is not None
        metrics.CONNECTIONS_REFUSED.labels(code=str(status)).inc()
        if retry_after is None:
            log.info("handshake refused", extra=fields(status=status, error=message, remote=remote(self.transport)))
        body = message.encode()
        retry = f"Retry-After: {retry_after}\r\n" if retry_after is not None else ""
        self.transport.write(
            f"HTTP/1.1 {status} {message[:80]}\r\nContent-Type: text/plain\r\nContent-Length: {len(body)}\r\n"
            f"{retry}Connection: close\r\n\r\n".encode()
            + body
        )
        self.transport.close()
        # A client that never reads the answer must not hold the socket open.
        asyncio.get_running_loop().call_later(CLOSE_TIMEOUT, hang_up, self.transport, None)

    def _open(self, upgrade: Upgrade, rest: bytes) -> None:
        transport = self.transport
        assert transport is not None
        node = self.node
        admission = node.admission
        address = client_address(remote(transport), upgrade.headers.get("x-forwarded-for"), admission.trusted_proxies)
        refused = admission.admit(address)
        if refused is not None:
            status, message, limit = refused
            if limit is not None:
                metrics.RATE_LIMITED.labels(what=limit).inc()
            self._answer(status, message, RETRY_AFTER)
            return
        app = node.apps_by_key.get(upgrade.path[len("/app/") :])
        transport.write(
            b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
            b"Sec-WebSocket-Accept: " + accept_key(upgrade.key).encode() + b"\r\n\r\n"
        )
        origin = upgrade.headers.get("origin")
        refusal: tuple[ErrorCode, str] | None = None
        if app is None:
            refusal = ErrorCode.APP_NOT_FOUND, "Application does not exist"
        elif not app.enabled:
            refusal = ErrorCode.APP_DISABLED, "Application disabled"
        else:
            refusal = version_problem(upgrade.query)
            if refusal is None and not app.origin_allowed(origin):
                log.info("origin refused", extra=fields(app_id=app.id, origin=(origin or "")[:200]))
                refusal = ErrorCode.UNAUTHORIZED, "Origin not allowed"
            hub = node.hubs[app.id] if refusal is None else None
            if hub is not None and app.max_connections is not None and len(hub.connections) >= app.max_connections:
                refusal = ErrorCode.OVER_CONNECTION_QUOTA, "Application is over connection quota"
        if refusal is not None or app is None:
            assert refusal is not None
            transport.set_protocol(_Hangup(transport))
            refuse(transport, *refusal)
            return
        hub = node.hubs[app.id]
        loop = asyncio.get_running_loop()
        session = Session(app, node.new_socket_id(), loop.time(), pong_timeout=node.settings.pong_timeout)
        conn = Connection(node, session, transport, node.settings.max_buffer, app.max_message_size + FRAME_OVERHEAD)
        transport.set_protocol(conn)
        hub.connections[conn.socket_id] = conn
        admission.opened(conn.socket_id, address)
        metrics.CONNECTIONS.labels(app_id=app.id).inc()
        metrics.CONNECTIONS_OPENED.labels(app_id=app.id).inc()
        if hub.taps:
            taps.emit(hub.taps, "connected", socket_id=conn.socket_id)
        log.info(
            "connection opened",
            extra=fields(app_id=app.id, socket_id=conn.socket_id, remote=remote(transport)),
        )
        conn.send(session.hello())
        if rest:
            conn.data_received(rest)


def adopt(request: web.Request, node: Node) -> web.Response | None:
    """Take over a WebSocket upgrade that arrived on a connection aiohttp serves (after earlier
    requests on it): the socket leaves aiohttp and opens as if it had come through the front door.
    None once adopted (aiohttp then writes nothing); otherwise the 400 to answer."""
    version = request.version
    head = f"{request.method} {request.raw_path} HTTP/{version.major}.{version.minor}\r\n" + "\r\n".join(
        f"{name.decode('latin-1')}: {value.decode('latin-1')}" for name, value in request.raw_headers
    )
    upgrade = Upgrade.read(head.encode("latin-1"))
    transport = request.transport
    if upgrade is None or isinstance(upgrade, str) or transport is None or transport.is_closing():
        error = upgrade if isinstance(upgrade, str) else "WebSocket upgrade expected"
        return web.json_response({"error": error}, status=400)
    protocol = request.protocol
    # Bytes after the head (none from a client that waits for the 101, as clients do) are kept.
    rest = bytes(getattr(protocol, "_message_tail", b""))
    # aiohttp lets go: with its transport cleared, its connection_lost forgets the connection
    # (its server's count, timers, request loop) without closing the socket.
    protocol.transport = None
    protocol.connection_lost(None)
    door = FrontDoor(node, _no_http)
    door.transport = transport
    door._open(upgrade, rest)
    if not transport.is_closing() and not transport.is_reading():
        transport.resume_reading()
    return None


def _no_http() -> asyncio.Protocol:  # pragma: no cover - an adopted socket is never handed back
    raise RuntimeError("an adopted WebSocket has no HTTP protocol to return to")


class _Hangup(asyncio.Protocol):
    """A refused socket: read nothing more, close once the client answers our close frame (and
    in any case once ``refuse``'s timer runs out, aborting if the client reads nothing)."""

    __slots__ = ("transport",)

    def __init__(self, transport: asyncio.Transport) -> None:
        self.transport = transport

    def data_received(self, data: bytes) -> None:
        self.transport.close()
