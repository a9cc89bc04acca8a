"""How queued events are delivered: the retry policy, the queue protocol, and the synchronous
queue (for tests and scripts) that delivers at once in the caller with the same policy."""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol

from . import observe
from .errors import BroadcastUnavailable

if TYPE_CHECKING:
    from .drivers import Driver
    from .messages import Message


@dataclass(frozen=True)
class RetryPolicy:
    """Exponential backoff with full jitter: try n waits uniform(0, min(cap, base * 2**(n-1)))."""

    max_tries: int = 8
    base: float = 0.5
    cap: float = 60.0

    def delay(self, attempts: int) -> float:
        ceiling = min(self.cap, self.base * 2 ** max(0, attempts - 1))
        return random.uniform(ceiling / 10, ceiling)


class BroadcastQueue(Protocol):
    def enqueue(self, messages: Sequence[Message]) -> None: ...

    async def aenqueue(self, messages: Sequence[Message]) -> None: ...


class SyncQueue:
    """The synchronous mode: the caller delivers now, retrying unavailability like the worker,
    and gets the last error once the tries are spent (nothing is dropped unseen)."""

    def __init__(self, driver: Driver, policy: RetryPolicy | None = None) -> None:
        self.driver = driver
        self.policy = policy or RetryPolicy(max_tries=3, base=0.2, cap=2.0)

    def enqueue(self, messages: Sequence[Message]) -> None:
        observe.queued(len(messages))
        for attempt in range(1, self.policy.max_tries + 1):
            try:
                self.driver.publish(messages)
                return
            except BroadcastUnavailable as exc:
                if attempt == self.policy.max_tries:
                    raise
                delay = self.policy.delay(attempt)
                observe.retried(",".join(sorted({c for m in messages for c in m.channels})), attempt, delay, exc)
                time.sleep(delay)

    async def aenqueue(self, messages: Sequence[Message]) -> None:
        observe.queued(len(messages))
        for attempt in range(1, self.policy.max_tries + 1):
            try:
                await self.driver.apublish(messages)
                return
            except BroadcastUnavailable as exc:
                if attempt == self.policy.max_tries:
                    raise
                delay = self.policy.delay(attempt)
                observe.retried(",".join(sorted({c for m in messages for c in m.channels})), attempt, delay, exc)
                await asyncio.sleep(delay)
