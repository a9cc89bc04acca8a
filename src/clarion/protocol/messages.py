"""Pusher v7 frames: parsing client frames and encoding server frames.

``data`` on the wire is usually a JSON *string* holding JSON (double encoding); pusher-js parses
it again. Channel events keep ``data`` exactly as the publisher gave it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import orjson

from .errors import ErrorCode, ProtocolError


def loads(text: str | bytes) -> Any:
    """Strict RFC 8259 JSON: no NaN or Infinity, no lone surrogates, nesting at most 1024 deep.

    Each of those would otherwise pass parsing and break later, where the value is signed,
    measured or sent on to other clients.
    """
    return orjson.loads(text)


@dataclass(frozen=True, slots=True)
class ClientFrame:
    event: str
    data: Any
    channel: str | None


def parse_frame(text: str) -> ClientFrame:
    """Parse one client text frame, or raise ``ProtocolError`` (4200) saying what is wrong."""
    try:
        message = loads(text)
    except ValueError:
        raise ProtocolError(ErrorCode.RECONNECT, "Invalid message format: not JSON") from None
    if not isinstance(message, dict):
        raise ProtocolError(ErrorCode.RECONNECT, "Invalid message format: expected a JSON object")
    event = message.get("event")
    if not isinstance(event, str) or not event:
        raise ProtocolError(ErrorCode.RECONNECT, "Invalid message format: 'event' must be a non-empty string")
    channel = message.get("channel")
    if channel is not None and not isinstance(channel, str):
        raise ProtocolError(ErrorCode.RECONNECT, "Invalid message format: 'channel' must be a string")
    data = message.get("data")
    # Clients may double-encode too (pusher-js does for client events' objects only when given a
    # string); accept an object or a string holding one for pusher: events.
    if event.startswith("pusher:") and isinstance(data, str) and data[:1] in ("{", "["):
        try:
            data = loads(data)
        except ValueError:
            raise ProtocolError(ErrorCode.RECONNECT, "Invalid message format: 'data' is not valid JSON") from None
    return ClientFrame(event=event, data=data, channel=channel)


def dumps(value: Any) -> str:
    """Compact JSON, UTF-8 kept as is (smaller frames than ASCII escapes)."""
    return orjson.dumps(value).decode()


_dumps = dumps


def encode(event: str, data: Any, channel: str | None = None, **extra: Any) -> str:
    """A server frame. ``data`` that is not already a string is JSON-encoded into one."""
    frame: dict[str, Any] = {"event": event}
    if channel is not None:
        frame["channel"] = channel
    frame["data"] = data if isinstance(data, str) else _dumps(data)
    frame.update(extra)
    return _dumps(frame)


def connection_established(socket_id: str, activity_timeout: int) -> str:
    return encode("pusher:connection_established", {"socket_id": socket_id, "activity_timeout": activity_timeout})


def error(code: int | None, message: str) -> str:
    # pusher:error carries an object, as Pusher's protocol document shows it.
    return _dumps({"event": "pusher:error", "data": {"code": code, "message": message}})


PING = _dumps({"event": "pusher:ping", "data": "{}"})
PONG = _dumps({"event": "pusher:pong", "data": "{}"})


def subscription_succeeded(channel: str, presence: dict[str, Any] | None = None) -> str:
    return encode(
        "pusher_internal:subscription_succeeded", {"presence": presence} if presence is not None else {}, channel
    )


def subscription_error(channel: str, kind: str, message: str, status: int) -> str:
    return _dumps(
        {
            "event": "pusher:subscription_error",
            "channel": channel,
            "data": {"type": kind, "error": message, "status": status},
        }
    )


def channel_event(event: str, channel: str, data: str, user_id: str | None = None) -> str:
    frame: dict[str, Any] = {"event": event, "channel": channel, "data": data}
    if user_id is not None:
        frame["user_id"] = user_id
    return _dumps(frame)


# --- Clarion's recovery extension -------------------------------------------------------------
# Positions ride as extra top-level fields of channel events, which stock Pusher clients ignore.
# They are spliced into the already-encoded frame (once per event, not per socket); the Redis twin
# splices the same way inside its publish script, so both twins produce the same bytes.


def with_position(frame: str, epoch: str, serial: int) -> str:
    """``frame`` (a JSON object) with ``"epoch"`` and ``"serial"`` added at the end."""
    return f'{frame[:-1]},"epoch":"{epoch}","serial":{serial}}}'


def as_replayed(frame: str) -> str:
    """A stored event marked as coming from history rather than live."""
    return f'{frame[:-1]},"replayed":true}}'


def resumed(channel: str, recovered: bool, epoch: str | None, serial: int, reason: str | None = None) -> str:
    data: dict[str, Any] = {"channel": channel, "recovered": recovered, "epoch": epoch, "serial": serial}
    if reason is not None:
        data["reason"] = reason
    return encode("clarion:resumed", data, channel)


def rewound(channel: str, count: int, epoch: str | None, serial: int, reason: str | None = None) -> str:
    data: dict[str, Any] = {"channel": channel, "count": count, "epoch": epoch, "serial": serial}
    if reason is not None:
        data["reason"] = reason
    return encode("clarion:rewound", data, channel)


def catch_up_refused(channel: str, resume: bool, reason: str, epoch: str | None = None, serial: int = 0) -> str:
    """The end marker of a resume or rewind that sends nothing: the client refetches instead."""
    if resume:
        return resumed(channel, False, epoch, serial, reason)
    return rewound(channel, 0, epoch, serial, reason)
