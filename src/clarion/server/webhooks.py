"""Webhook delivery: bounded queues, batched signed POSTs, retries with backoff.

Nothing here runs on the path of a socket: ``emit`` only appends to a bounded queue (dropping and
counting when full), and one sender task per target does the HTTP work. A dead endpoint costs a
counter and a log line, never latency.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from dataclasses import dataclass
from urllib.parse import urlsplit

import aiohttp

from ..observability import metrics
from ..observability.logs import fields
from ..protocol import webhooks
from ..protocol.app import App
from ..tasks import cancel_and_wait

log = logging.getLogger("clarion.webhooks")


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
    queue_size: int = 10_000
    batch_size: int = 100


def _where(url: str) -> str:
    """Scheme, host and path only: a query string may carry a token."""
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.hostname}{':' + str(parts.port) if parts.port else ''}{parts.path}"


class _Sender:
    def __init__(self, app: App, target: Target, policy: Policy) -> None:
        self.app = app
        self.target = target
        self.policy = policy
        self.queue: asyncio.Queue[webhooks.Event] = asyncio.Queue(policy.queue_size)
        self.where = _where(target.url)
        self.dropping = False

    def offer(self, event: webhooks.Event) -> None:
        if event["name"] not in self.target.event_types:
            return
        try:
            self.queue.put_nowait(event)
        except asyncio.QueueFull:
            metrics.WEBHOOKS.labels(outcome="dropped_queue_full").inc()
            if not self.dropping:  # one log line per overflow, not one per event
                self.dropping = True
                log.error("webhook queue full; dropping events", extra=fields(app_id=self.app.id, url=self.where))
            return
        self.dropping = False

    async def run(self, session: aiohttp.ClientSession) -> None:
        while True:
            batch = [await self.queue.get()]
            # Whatever piled up while the last POST was in flight goes in this one: batching
            # under load, no added wait at rest.
            while len(batch) < self.policy.batch_size and not self.queue.empty():
                batch.append(self.queue.get_nowait())
            try:
                await self._deliver(session, batch)
            finally:
                for _ in batch:
                    self.queue.task_done()

    async def _deliver(self, session: aiohttp.ClientSession, batch: list[webhooks.Event]) -> None:
        policy = self.policy
        deadline = time.monotonic() + policy.retry_for
        backoff = policy.first_backoff
        attempt = 0
        while True:
            attempt += 1
            payload = webhooks.body(batch, int(time.time() * 1000))
            problem: str
            try:
                async with session.post(
                    self.target.url,
                    data=payload,
                    headers=webhooks.headers(self.app.key, self.app.secret, payload),
                    timeout=aiohttp.ClientTimeout(total=policy.timeout),
                ) as response:
                    if 200 <= response.status < 300:
                        metrics.WEBHOOKS.labels(outcome="sent").inc(len(batch))
                        return
                    problem = f"HTTP {response.status}"
            except (aiohttp.ClientError, TimeoutError, OSError) as exc:
                problem = type(exc).__name__
            metrics.WEBHOOK_FAILURES.inc()
            if attempt == 1:
                log.warning(
                    "webhook delivery failed; retrying",
                    extra=fields(app_id=self.app.id, url=self.where, error=problem, events=len(batch)),
                )
            if time.monotonic() + backoff > deadline:
                metrics.WEBHOOKS.labels(outcome="dropped_retries_exhausted").inc(len(batch))
                log.error(
                    "webhook dropped after retries",
                    extra=fields(
                        app_id=self.app.id, url=self.where, error=problem, events=len(batch), attempts=attempt
                    ),
                )
                return
            await asyncio.sleep(backoff)
            backoff = min(backoff * 2, policy.max_backoff)


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

    def tick(self, now: float) -> None:
        for hooks in self.per_app.values():
            hooks.tick(now)

    async def close(self, drain: float = 2.0) -> None:
        """Send what is held and queued, for at most ``drain`` seconds, then stop."""
        for hooks in self.per_app.values():
            for event in hooks.debouncer.flush():
                hooks._fan(event)
        queues = [sender.queue for hooks in self.per_app.values() for sender in hooks.senders]
        if queues:
            drained = asyncio.gather(*(queue.join() for queue in queues))
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(drain):
                    await drained
        await cancel_and_wait(self._tasks)
        if self._session is not None:
            await self._session.close()
