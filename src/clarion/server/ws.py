"""``GET /app/{key}``: the Pusher WebSocket endpoint."""

from __future__ import annotations

import asyncio
import logging
import time

from aiohttp import WSMsgType, web

from ..observability import metrics
from ..observability.logs import fields
from ..protocol import messages
from ..protocol.errors import ErrorCode
from ..protocol.session import Session
from .connection import Connection, reject
from .keys import NODE

log = logging.getLogger("clarion.connection")

# Room for the envelope around an event's data (channel, event name, channel_data, auth).
FRAME_OVERHEAD = 8 * 1024
SUPPORTED_PROTOCOLS = range(4, 8)


def _version_problem(query: dict[str, str]) -> tuple[ErrorCode, str] | None:
    raw = query.get("protocol")
    if raw is None:
        return None  # Pusher infers the version; every current client sends protocol=7
    if not raw.isdigit():
        return ErrorCode.INVALID_VERSION, "Invalid version string format"
    if int(raw) not in SUPPORTED_PROTOCOLS:
        return ErrorCode.UNSUPPORTED_PROTOCOL, f"Unsupported protocol version {raw[:8]}"
    return None


async def websocket(request: web.Request) -> web.StreamResponse:
    node = request.app[NODE]
    settings = node.settings
    app = node.apps_by_key.get(request.match_info["key"])
    ws = web.WebSocketResponse(
        autoping=False,
        compress=False,
        max_msg_size=(app.max_message_size if app else 10 * 1024) + FRAME_OVERHEAD,
    )
    if not ws.can_prepare(request).ok:
        return web.json_response({"error": "WebSocket upgrade expected"}, status=400)
    await ws.prepare(request)

    if app is None:
        await reject(ws, ErrorCode.APP_NOT_FOUND, "Application does not exist")
        return ws
    if not app.enabled:
        await reject(ws, ErrorCode.APP_DISABLED, "Application disabled")
        return ws
    problem = _version_problem(dict(request.query))
    if problem is not None:
        await reject(ws, *problem)
        return ws
    if not app.origin_allowed(request.headers.get("Origin")):
        log.info("origin refused", extra=fields(app_id=app.id, origin=request.headers.get("Origin", "")[:200]))
        await reject(ws, ErrorCode.UNAUTHORIZED, "Origin not allowed")
        return ws
    hub = node.hubs[app.id]
    if app.max_connections is not None and len(hub.connections) >= app.max_connections:
        await reject(ws, ErrorCode.OVER_CONNECTION_QUOTA, "Application is over connection quota")
        return ws

    transport = request.transport
    assert transport is not None
    loop = asyncio.get_running_loop()
    session = Session(app, node.new_socket_id(), loop.time(), pong_timeout=settings.pong_timeout)
    conn = Connection(session, ws, transport, settings.max_buffer)
    hub.connections[conn.socket_id] = conn
    metrics.CONNECTIONS.labels(app_id=app.id).inc()
    metrics.CONNECTIONS_OPENED.labels(app_id=app.id).inc()
    opened = time.monotonic()
    log.info("connection opened", extra=fields(app_id=app.id, socket_id=conn.socket_id, remote=request.remote))
    reason = "client"
    try:
        conn.send(session.hello())
        async for msg in ws:
            if msg.type is WSMsgType.TEXT:
                metrics.FRAMES_RECEIVED.inc()
                actions = session.receive(msg.data, loop.time())
                if actions:
                    await node.carry_out(conn, actions)
            elif msg.type is WSMsgType.PING:
                session.last_seen = loop.time()
                session.ping_sent_at = None
                await ws.pong(msg.data)
            elif msg.type is WSMsgType.PONG:
                session.last_seen = loop.time()
                session.ping_sent_at = None
            elif msg.type is WSMsgType.BINARY:
                metrics.PROTOCOL_ERRORS.labels(code=str(int(ErrorCode.RECONNECT))).inc()
                conn.send(messages.error(int(ErrorCode.RECONNECT), "Binary frames are not supported"))
            elif msg.type is WSMsgType.ERROR:
                reason = "error"
                log.info(
                    "connection error",
                    extra=fields(app_id=app.id, socket_id=conn.socket_id, error=str(ws.exception())[:200]),
                )
    except Exception:
        reason = "server-error"
        log.exception("connection failed", extra=fields(app_id=app.id, socket_id=conn.socket_id))
    finally:
        if conn.closing and reason == "client":
            reason = "server"
        # Shielded: a shutdown cancelling this handler must not leave presence half-removed.
        await asyncio.shield(node.drop(conn))
        metrics.CONNECTIONS.labels(app_id=app.id).dec()
        metrics.CONNECTIONS_CLOSED.labels(reason=reason).inc()
        log.info(
            "connection closed",
            extra=fields(
                app_id=app.id,
                socket_id=conn.socket_id,
                reason=reason,
                code=ws.close_code,
                seconds=round(time.monotonic() - opened, 3),
            ),
        )
    return ws
