"""What the dashboard's debug console sees of an app: its events, as plain dicts.

A hub holds a list of taps (``AppHub.taps``), one per open console; every hook checks that list
first, so while no console is open an event costs one truth test and nothing is built. An event is
built once and handed to every tap; a tap never blocks (``dashboard.Console.offer``).
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from typing import Any

Event = dict[str, Any]
Tap = Callable[[Event], None]


def emit(taps: list[Tap], kind: str, **fields: Any) -> None:
    event = {"type": kind, "time": round(time.time(), 3), **fields}
    for tap in taps:
        tap(event)


def published(taps: list[Tap], payloads: bool, channel: str, frame: str, source: str, socket_id: str | None) -> None:
    """An event published through this node: ``api_message`` (HTTP API) or ``client_event``.
    Its data only when the app enables ``debug_payloads``."""
    try:
        message = json.loads(frame)
    except ValueError:
        message = {}
    fields: dict[str, Any] = {"channel": channel, "event": message.get("event")}
    if socket_id is not None:
        fields["socket_id"] = socket_id
    if payloads:
        fields["data"] = message.get("data")
        if "user_id" in message:
            fields["user_id"] = message["user_id"]
    emit(taps, "client_event" if source == "client" else "api_message", **fields)
