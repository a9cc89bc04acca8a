"""What the server refuses a socket, counted and logged: one line each, never the payload."""

from __future__ import annotations

import logging
from typing import Any

from ..observability import metrics
from ..observability.logs import fields
from ..protocol import messages
from ..protocol.errors import ErrorCode
from .hub import Socket

log = logging.getLogger("clarion.server")


def protocol_error(conn: Socket, code: int, auth: str | None = None) -> None:
    """A ``pusher:error`` frame is going out (``auth``: it refuses that credential)."""
    metrics.PROTOCOL_ERRORS.labels(code=str(code)).inc()
    if auth is not None:
        metrics.AUTH_FAILURES.labels(kind=auth).inc()
        log.info("auth failed", extra=fields(app_id=conn.session.app.id, socket_id=conn.socket_id, kind=auth))
    if code == ErrorCode.CLIENT_EVENT_REJECTED:
        log.info("client event rejected", extra=fields(app_id=conn.session.app.id, socket_id=conn.socket_id))


def subscription_refused(conn: Socket, frame: str, rate_limited: str | None = None) -> None:
    """A ``pusher:subscription_error`` frame is going out (``rate_limited``: by that limit)."""
    parsed = messages.parse_frame(frame)
    data: Any = parsed.data
    kind = data.get("type", "unknown") if isinstance(data, dict) else "unknown"
    metrics.SUBSCRIPTIONS_REFUSED.labels(type=kind).inc()
    if kind == "AuthError":
        metrics.AUTH_FAILURES.labels(kind="channel_auth").inc()
    if rate_limited is not None:
        metrics.RATE_LIMITED.labels(what=rate_limited).inc()
    log.info(
        "subscription refused",
        extra=fields(
            app_id=conn.session.app.id,
            socket_id=conn.socket_id,
            channel=parsed.channel,
            type=kind,
            error=data.get("error") if isinstance(data, dict) else None,
        ),
    )
