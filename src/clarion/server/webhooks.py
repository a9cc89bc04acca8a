"""Webhook delivery: bounded queues, batched signed POSTs, retries with backoff beside them.

Nothing here runs on the path of a socket: ``emit`` only appends to a bounded queue (dropping and
counting when full), and tasks per target do the HTTP work. A dead endpoint costs a counter and a
log line, never latency.

Per target, one task sends fresh batches in order. A batch that fails is handed to the target's
retry heap, where it waits out its own backoff, and the fresh task goes straight on to newer
events: a target that keeps refusing one kind of event (the PHP SDK's ``webhook()`` answers 500
to any event on a ``private-encrypted-`` channel) delays nothing else. A second task retries the
due batches, a few at a time. What is finally dropped is counted per event type and logged with
its types, never its payloads. A retried batch can arrive after newer ones, as with Pusher:
``time_ms`` (set when the batch is first sent) orders them.
"""

from __future__ import annotations

import asyncio
import contextlib
import heapq
import itertools
import logging
import time
from dataclasses import dataclass, field
from urllib.parse import urlsplit

import aiohttp

from ..observability import metrics
from ..observability.logs import fields
from ..protocol import webhooks
from ..protocol.app import App
from ..tasks import cancel_and_wait

log = logging.getLogger("clarion.webhooks")

RETRY_CONCURRENCY = 4  # retried POSTs in flight at once per target


@dataclass(frozen=True, slots=True)
class Target:
    url: str
    event_types: frozenset[str]


@dataclass(frozen=True, slots=True)
class Policy:
    delay: float = webhooks.DEFAULT_DELAY  # hold vacated/removed this long
    retry_for: float = 300.0  # Pusher retries for 5 minutes
    first_backoff: float = 1.0
    max_backoff: float = 60.0
    timeout: float = 5.0
    queue_size: int = 10_000  # fresh events waiting per target; as many again may wait for retries
    batch_size: int = 100


def _where(url: str) -> str:
    """Scheme, host and path only: a query string may carry a token."""
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.hostname}{':' + str(parts.port) if parts.port else ''}{parts.path}"


@dataclass(slots=True, eq=False)
class _Batch:
    events: list[webhooks.Event]
    body: bytes  # signed once: a retry sends the same body, with the same time_ms
    deadline: float  # monotonic; no attempt starts after it
    backoff: float  # the wait before the next attempt
    attempts: int = 0
    due: float = field(default=0.0)


class _Sender:
    def __init__(self, app: App, target: Target, policy: Policy) -> None:
        self.app = app
        self.target = target
        self.policy = policy
        self.queue: asyncio.Queue[webhooks.Event] = asyncio.Queue(policy.queue_size)
        self.where = _where(target.url)
        self.dropping = False
        self.retrying: list[tuple[float, int, _Batch]] = []  # a heap by due time
        self.retrying_events = 0
        self._order = itertools.count()
        self._wake = asyncio.Event()
        self._in_flight: set[_Batch] = set()

    def offer(self, event: webhooks.Event) -> None:
        if event["name"] not in self.target.event_types:
            return
        try:
            self.queue.put_nowait(event)
        except asyncio.QueueFull:
            metrics.WEBHOOKS.labels(outcome="dropped_queue_full").inc()
            metrics.WEBHOOK_DROPPED.labels(event_type=event["name"], reason="queue_full").inc()
            if not self.dropping:  # one log line per overflow, not one per event
                self.dropping = True
                log.error("webhook queue full; dropping events", extra=fields(app_id=self.app.id, url=self.where))
            return
        self.dropping = False

    async def run(self, session: aiohttp.ClientSession) -> None:
        """Fresh batches, in order, one POST at a time."""
        while True:
            events = [await self.queue.get()]
            # Whatever piled up while the last POST was in flight goes in this one: batching
            # under load, no added wait at rest.
            while len(events) < self.policy.batch_size and not self.queue.empty():
                events.append(self.queue.get_nowait())
            try:
                batch = _Batch(
                    events,
                    webhooks.body(events, int(time.time() * 1000)),
                    deadline=time.monotonic() + self.policy.retry_for,
                    backoff=self.policy.first_backoff,
                )
                await self._attempt(session, batch)
            finally:
                for _ in events:
                    self.queue.task_done()

    async def retry(self, session: aiohttp.ClientSession) -> None:
        """Failed batches, each when its backoff is over, a few at a time."""
        while True:
            self._wake.clear()
            if not self.retrying:
                await self._wake.wait()
                continue
            wait = self.retrying[0][0] - time.monotonic()
            if wait > 0:
                # A newly failed batch wakes this early: it may be due before the current head.
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(wait):
                        await self._wake.wait()
                continue
            now = time.monotonic()
            due: list[_Batch] = []
            while self.retrying and self.retrying[0][0] <= now and len(due) < RETRY_CONCURRENCY:
                due.append(heapq.heappop(self.retrying)[2])
            await asyncio.gather(*(self._attempt(session, batch) for batch in due))

    async def _attempt(self, session: aiohttp.ClientSession, batch: _Batch) -> None:
        batch.attempts += 1
        self._in_flight.add(batch)
        try:
            problem = await self._post(session, batch)
        finally:
            self._in_flight.discard(batch)
        first = batch.attempts == 1
        if problem is None:
            metrics.WEBHOOKS.labels(outcome="sent").inc(len(batch.events))
            if not first:
                self._release(batch)
                log.info(
                    "webhook delivered after retries",
                    extra=fields(app_id=self.app.id, url=self.where, events=len(batch.events), attempts=batch.attempts),
                )
            return
        metrics.WEBHOOK_FAILURES.inc()
        now = time.monotonic()
        if now + batch.backoff > batch.deadline:
            if not first:
                self._release(batch)
            self._drop(batch, "retries_exhausted", problem)
            return
        if first:
            if self.retrying_events + len(batch.events) > self.policy.queue_size:
                self._drop(batch, "retry_full", problem)
                return
            self.retrying_events += len(batch.events)
            log.warning(
                "webhook delivery failed; retrying beside newer batches",
                extra=fields(
                    app_id=self.app.id,
                    url=self.where,
                    error=problem,
                    events=len(batch.events),
                    types=webhooks.type_counts(batch.events),
                ),
            )
        batch.due = now + batch.backoff
        batch.backoff = min(batch.backoff * 2, self.policy.max_backoff)
        heapq.heappush(self.retrying, (batch.due, next(self._order), batch))
        self._wake.set()

    async def _post(self, session: aiohttp.ClientSession, batch: _Batch) -> str | None:
        """None when the target took the batch, else what went wrong."""
        try:
            async with session.post(
                self.target.url,
                data=batch.body,
                headers=webhooks.headers(self.app.key, self.app.secret, batch.body),
                timeout=aiohttp.ClientTimeout(total=self.policy.timeout),
            ) as response:
                if 200 <= response.status < 300:
                    return None
                return f"HTTP {response.status}"
        except (aiohttp.ClientError, TimeoutError, OSError) as exc:
            return type(exc).__name__

    def _release(self, batch: _Batch) -> None:
        self.retrying_events -= len(batch.events)

    def _drop(self, batch: _Batch, reason: str, problem: str) -> None:
        """Count the batch's events per type and log what it held: its types, never payloads."""
        if reason == "retries_exhausted":
            metrics.WEBHOOKS.labels(outcome="dropped_retries_exhausted").inc(len(batch.events))
        for event in batch.events:
            metrics.WEBHOOK_DROPPED.labels(event_type=event["name"], reason=reason).inc()
        log.error(
            "webhook batch dropped",
            extra=fields(
                app_id=self.app.id,
                url=self.where,
                reason=reason,
                error=problem,
                attempts=batch.attempts,
                events=len(batch.events),
                types=webhooks.type_counts(batch.events),
            ),
        )

    def abandon(self) -> None:
        """At shutdown: what is still queued or waiting for a retry is dropped, and said so."""
        batches = [batch for _, _, batch in self.retrying] + list(self._in_flight)
        left = [event for batch in batches for event in batch.events]
        self._in_flight.clear()
        while not self.queue.empty():
            left.append(self.queue.get_nowait())
            self.queue.task_done()
        self.retrying.clear()
        self.retrying_events = 0
        if left:
            self._drop(_Batch(left, b"", 0.0, 0.0), "shutdown", "server shutting down")


_OPPOSITE = {
    "channel_occupied": "channel_vacated",
    "channel_vacated": "channel_occupied",
    "member_added": "member_removed",
    "member_removed": "member_added",
}


class AppWebhooks:
    """One app's webhook targets, with the vacated/removed delay in front of them."""

    def __init__(self, app: App, targets: list[Target], policy: Policy) -> None:
        self.app = app
        self.policy = policy
        self.debouncer = webhooks.Debouncer(policy.delay)
        self.senders = [_Sender(app, target, policy) for target in targets]
        self.wanted = frozenset().union(*(t.event_types for t in targets)) if targets else frozenset()

    def wants(self, name: str) -> bool:
        return name in self.wanted

    def emit(self, event: webhooks.Event, now: float) -> None:
        name = event["name"]
        # A held vacated/removed is cancelled by its opposite, so the opposite must reach the
        # debouncer even when no target wants it; targets filter what they send.
        if name not in self.wanted and _OPPOSITE.get(name) not in self.wanted:
            return
        for ready in self.debouncer.offer(event, now):
            self._fan(ready)

    def tick(self, now: float) -> None:
        for ready in self.debouncer.due(now):
            self._fan(ready)

    def _fan(self, event: webhooks.Event) -> None:
        for sender in self.senders:
            sender.offer(event)


class Webhooks:
    """Every app's webhooks on this node, and the sender tasks behind them."""

    def __init__(self, per_app: dict[str, AppWebhooks]) -> None:
        self.per_app = per_app
        self._session: aiohttp.ClientSession | None = None
        self._tasks: list[asyncio.Task[None]] = []

    def for_app(self, app_id: str) -> AppWebhooks | None:
        return self.per_app.get(app_id)

    def wants(self, app_id: str, name: str) -> bool:
        hooks = self.per_app.get(app_id)
        return hooks is not None and hooks.wants(name)

    async def start(self) -> None:
        senders = [sender for hooks in self.per_app.values() for sender in hooks.senders]
        if not senders:
            return
        self._session = aiohttp.ClientSession()
        self._tasks = [asyncio.create_task(sender.run(self._session)) for sender in senders]
        self._tasks += [asyncio.create_task(sender.retry(self._session)) for sender in senders]

    def tick(self, now: float) -> None:
        for hooks in self.per_app.values():
            hooks.tick(now)

    def depth(self) -> int:
        """Events waiting to be sent, queued or waiting for a retry, over every target."""
        return sum(
            sender.queue.qsize() + sender.retrying_events for hooks in self.per_app.values() for sender in hooks.senders
        )

    drain_for = 2.0  # seconds close() waits for the queues to empty (serve sets it from its timeout)

    async def close(self, drain: float | None = None) -> None:
        """Send what is held and queued, for at most ``drain`` seconds, then stop."""
        drain = self.drain_for if drain is None else drain
        for hooks in self.per_app.values():
            for event in hooks.debouncer.flush():
                hooks._fan(event)
        senders = [sender for hooks in self.per_app.values() for sender in hooks.senders]
        if senders:
            drained = asyncio.gather(*(sender.queue.join() for sender in senders))
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(drain):
                    await drained
        await cancel_and_wait(self._tasks)
        for sender in senders:
            sender.abandon()
        if self._session is not None:
            await self._session.close()
