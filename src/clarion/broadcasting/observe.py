"""Monitoring hooks: blinker signals, Prometheus metrics and log lines for every broadcast and
authorization. Log lines carry channel and event names, ids and reasons, never payloads.

Connect to the signals to feed your own monitoring::

    from clarion.broadcasting import signals

    @signals.broadcast_dead_lettered.connect
    def page_someone(sender, **info): ...

Metrics live in prometheus_client's default registry, so an app that already serves
``prometheus_client`` metrics exposes them with nothing more.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from blinker import Namespace
from prometheus_client import Counter, Gauge, Histogram

if TYPE_CHECKING:
    from .messages import Message

log = logging.getLogger("clarion.broadcasting")
auth_log = logging.getLogger("clarion.broadcasting.auth")

signals = Namespace()
broadcast_sent = signals.signal("broadcast-sent")
broadcast_failed = signals.signal("broadcast-failed")
broadcast_retried = signals.signal("broadcast-retried")
broadcast_dead_lettered = signals.signal("broadcast-dead-lettered")
authorization_allowed = signals.signal("authorization-allowed")
authorization_refused = signals.signal("authorization-refused")

SENT = Counter("clarion_broadcasts_sent", "Events the socket server accepted, per driver", ["driver"])
FAILED = Counter(
    "clarion_broadcasts_failed", "Failed deliveries: 'refused' (4xx) or 'unavailable' (retryable)", ["reason"]
)
RETRIED = Counter("clarion_broadcasts_retried", "Queued batches scheduled for another try")
DEAD_LETTERED = Counter("clarion_broadcasts_dead_lettered", "Queued events moved to the dead-letter store")
# Dead letters waiting for a replay: read at each scrape from where the queue keeps them (Redis in
# the worker, memory in an app with the in-process queue), through set_function.
DEAD_LETTERS = Gauge("clarion_broadcasts_dead_letters", "Broadcasts in the dead-letter store")
QUEUED = Counter("clarion_broadcasts_queued", "Events put on the broadcast queue")
AUTHORIZATIONS = Counter(
    "clarion_broadcast_authorizations", "Channel and user authorizations, by kind and result", ["kind", "result"]
)
LATENCY = Histogram(
    "clarion_broadcast_publish_seconds",
    "Time of one publish call to the socket server (one event or one batch)",
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0),
)


def _names(messages: Sequence[Message]) -> str:
    return ",".join(sorted({f"{c}/{m.name}" for m in messages for c in m.channels}))


def sent(driver: str, messages: Sequence[Message], seconds: float) -> None:
    SENT.labels(driver).inc(len(messages))
    LATENCY.observe(seconds)
    log.debug("broadcast sent: %s (%d events, %.1f ms)", _names(messages), len(messages), seconds * 1000)
    broadcast_sent.send(driver, messages=messages, seconds=seconds)


def failed(messages: Sequence[Message], error: Exception, *, refused: bool) -> None:
    FAILED.labels("refused" if refused else "unavailable").inc(len(messages))
    log.warning("broadcast failed: %s: %s", _names(messages), error)
    broadcast_failed.send(None, messages=messages, error=error)


def retried(channel: str, attempts: int, delay: float, error: Exception) -> None:
    RETRIED.inc()
    log.warning("broadcast on %s: try %d failed (%s); next try in %.2f s", channel, attempts, error, delay)
    broadcast_retried.send(None, channel=channel, attempts=attempts, delay=delay, error=error)


def dead_lettered(channel: str, ids: Sequence[str], attempts: int, error: str) -> None:
    DEAD_LETTERED.inc(len(ids))
    log.error("broadcast on %s dead-lettered after %d tries: %s (ids %s)", channel, attempts, error, ",".join(ids))
    broadcast_dead_lettered.send(None, channel=channel, ids=list(ids), attempts=attempts, error=error)


def queued(count: int) -> None:
    QUEUED.inc(count)


def authorization(
    kind: str, *, allowed: bool, user_id: Any, channel: str | None, pattern: str | None, reason: str
) -> None:
    """One log line per decision: allowed or refused, who, which channel and which route decided."""
    AUTHORIZATIONS.labels(kind, "allowed" if allowed else "refused").inc()
    auth_log.info(
        "%s %s: user=%s channel=%s pattern=%s reason=%s",
        kind,
        "allowed" if allowed else "refused",
        user_id if user_id is not None else "-",
        channel or "-",
        pattern or "-",
        reason,
    )
    signal = authorization_allowed if allowed else authorization_refused
    signal.send(None, kind=kind, user_id=user_id, channel=channel, pattern=pattern, reason=reason)
