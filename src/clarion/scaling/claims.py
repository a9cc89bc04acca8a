"""Publishes that must happen at most once: the keys already used, kept in memory (the memory twin,
and the Redis twin while Redis is away), and the log line and counter for a publish skipped."""

from __future__ import annotations

import logging
import time
from collections import OrderedDict
from collections.abc import Callable

from ..observability import metrics
from ..observability.logs import fields
from .contracts import Envelope, Once

log = logging.getLogger("clarion.scaling")

# Enough for 300 s of keyed publishes at over 300/s; an entry costs about 200 B.
DEFAULT_LIMIT = 100_000
EVICTION_LOG_EVERY = 60.0  # seconds between two log lines about evicted keys


class Claims:
    """Keys used within their time to live, per app, oldest first. At most ``limit`` are kept:
    beyond it the oldest is forgotten early (logged and counted), so memory stays bounded."""

    __slots__ = ("_clock", "_evicted", "_logged_at", "_until", "limit")

    def __init__(self, limit: int = DEFAULT_LIMIT, clock: Callable[[], float] = time.monotonic) -> None:
        self.limit = limit
        self._clock = clock
        # Claim → expiry, the oldest first (an OrderedDict pops its front in O(1); a dict does not).
        self._until: OrderedDict[tuple[str, str], float] = OrderedDict()
        self._evicted = 0
        self._logged_at: float | None = None

    def __len__(self) -> int:
        return len(self._until)

    def used(self, app_id: str, once: Once) -> bool:
        """Whether ``once.key`` is claimed for ``app_id`` and still fresh (claims nothing)."""
        ends = self._until.get((app_id, once.key))
        return ends is not None and ends > self._clock()

    def take(self, app_id: str, once: Once) -> bool:
        """Claim ``once.key`` for ``app_id``; False when it is already claimed and still fresh."""
        now = self._clock()
        until = self._until
        # Expired keys leave from the front. Every key has the same ttl (one setting), so the
        # front is the next to expire.
        while until and next(iter(until.values())) <= now:
            until.popitem(last=False)
        claim = (app_id, once.key)
        ends = until.get(claim)
        if ends is not None:
            if ends > now:
                return False
            del until[claim]
        while len(until) >= self.limit:
            until.popitem(last=False)
            self._evicted += 1
            metrics.IDEMPOTENCY_KEYS_EVICTED.inc()
        if self._evicted and (self._logged_at is None or now - self._logged_at >= EVICTION_LOG_EVERY):
            log.warning(
                "idempotency keys forgotten before their ttl: the store is full",
                extra=fields(evicted=self._evicted, limit=self.limit),
            )
            self._logged_at, self._evicted = now, 0
        until[claim] = now + once.ttl
        return True


def skipped(envelope: Envelope, reason: str) -> None:
    """A publish that was not applied again: logged (no payload) and counted."""
    metrics.PUBLISHES_SKIPPED.labels(reason=reason).inc()
    log.info(
        "publish skipped: already applied",
        extra=fields(app_id=envelope.app_id, channel=envelope.channel, reason=reason),
    )
