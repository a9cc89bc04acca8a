"""Webhook events, bodies and signatures, and the delay that keeps quick reconnects quiet.

Pusher delays ``channel_vacated`` and ``member_removed`` by a few seconds; when the channel is
occupied again (or the member comes back) inside that window, neither webhook is sent.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import orjson

from .signatures import webhook_signature

EVENT_TYPES = frozenset(
    {
        "channel_occupied",
        "channel_vacated",
        "member_added",
        "member_removed",
        "client_event",
        "cache_miss",
        "subscription_count",
    }
)
DEFAULT_DELAY = 3.0

Event = dict[str, Any]


def channel_occupied(channel: str) -> Event:
    return {"name": "channel_occupied", "channel": channel}


def channel_vacated(channel: str) -> Event:
    return {"name": "channel_vacated", "channel": channel}


def member_added(channel: str, user_id: str) -> Event:
    return {"name": "member_added", "channel": channel, "user_id": user_id}


def member_removed(channel: str, user_id: str) -> Event:
    return {"name": "member_removed", "channel": channel, "user_id": user_id}


def cache_miss(channel: str) -> Event:
    return {"name": "cache_miss", "channel": channel}


def subscription_count(channel: str, count: int) -> Event:
    return {"name": "subscription_count", "channel": channel, "subscription_count": count}


def client_event(channel: str, event: str, data: str, socket_id: str, user_id: str | None) -> Event:
    payload: Event = {"name": "client_event", "channel": channel, "event": event, "data": data, "socket_id": socket_id}
    if user_id is not None:
        payload["user_id"] = user_id
    return payload


def body(events: list[Event], time_ms: int) -> bytes:
    return orjson.dumps({"time_ms": time_ms, "events": events})


def type_counts(events: list[Event]) -> str:
    """``channel_occupied:2,client_event:1``: what a batch held, for a log line. Never payloads."""
    counts: dict[str, int] = {}
    for event in events:
        counts[event["name"]] = counts.get(event["name"], 0) + 1
    return ",".join(f"{name}:{count}" for name, count in sorted(counts.items()))


def headers(key: str, secret: str, payload: bytes) -> dict[str, str]:
    return {
        "Content-Type": "application/json",
        "X-Pusher-Key": key,
        "X-Pusher-Signature": webhook_signature(secret, payload),
    }


def _hold_key(event: Event) -> tuple[str, ...] | None:
    """The identity under which a delayed event waits, and which its opposite cancels."""
    name = event["name"]
    if name in ("channel_vacated", "channel_occupied"):
        return ("channel", event["channel"])
    if name in ("member_removed", "member_added"):
        return ("member", event["channel"], event["user_id"])
    return None


@dataclass
class Debouncer:
    """Holds vacated/removed events for ``delay`` seconds; a matching occupied/added cancels both."""

    delay: float = DEFAULT_DELAY
    _held: dict[tuple[str, ...], tuple[float, Event]] = field(default_factory=dict)

    def offer(self, event: Event, now: float) -> list[Event]:
        """What to send now for ``event`` (possibly nothing)."""
        key = _hold_key(event)
        if key is None:
            return [event]
        if event["name"] in ("channel_vacated", "member_removed"):
            self._held[key] = (now + self.delay, event)
            return []
        if self._held.pop(key, None) is not None:
            return []  # back within the window: neither the removal nor this re-add is news
        return [event]

    def due(self, now: float) -> list[Event]:
        """Held events whose delay has passed, oldest first."""
        ready = [(at, key) for key, (at, _) in self._held.items() if at <= now]
        ready.sort()
        return [self._held.pop(key)[1] for _, key in ready]

    def flush(self) -> list[Event]:
        events = [event for _, event in sorted(self._held.values(), key=lambda item: item[0])]
        self._held.clear()
        return events

    def __len__(self) -> int:
        return len(self._held)
