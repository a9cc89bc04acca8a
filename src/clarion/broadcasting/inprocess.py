"""The in-process queue: queued broadcasting inside the app's own event loop, for apps that run
without Redis (``make run``'s embedded defaults, a single-process deployment).

``enqueue`` only appends to memory and returns: a request never waits for the socket server.
Each channel has a *lane* (a deque) drained by one task at a time, so a channel's events keep
their order through retries, while other channels go on. A drain takes up to ``batch_size``
events from the lane's head and keeps them pinned until they are sent: a retry resends exactly
the same events, so their ``Idempotency-Key`` (made from the events' ids) is the same and a
socket server that applied them before the answer was lost applies nothing twice. Transient
failures (``BroadcastUnavailable``) retry with exponential backoff and jitter; after
``policy.max_tries`` the batch moves to the in-memory dead-letter list and the lane moves on. A
refused (4xx) batch is resent one event at a time to find the event the server refuses, which is
dead-lettered at once. Everything is logged and counted with the same signals and metric names as
the Redis queue (``clarion_broadcasts_*``), and ``clarion_broadcasts_dead_letters`` counts the
dead letters held here.

Limits: the queue is bounded (``max_pending``); a full queue raises :class:`QueueFull` to the
caller rather than dropping. It lives and dies with the process: events still pending when
:meth:`InProcessQueue.aclose` gives up waiting are logged with their ids and counted as failed.
Use the Redis queue (``integrations.queue.RedisQueue``) where events must survive a restart.

Replay (:meth:`InProcessQueue.replay`) puts dead letters back at the end of their lanes with their
message ids. The events of one dead batch stay together, so a whole batch replayed is sent as the
same batch with the same ``Idempotency-Key``: a socket server that did apply it (within its
idempotency window) publishes nothing again. Part of a batch replayed goes out under a key of
its own, since reusing the batch's key for fewer events could make the server skip them.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
import uuid
import weakref
from collections import deque
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from . import observe
from .delivery import RetryPolicy
from .drivers import Driver, driver_from_url
from .errors import BroadcastRefused, BroadcastUnavailable, ConfigError
from .messages import Message, idempotency_key

log = logging.getLogger("clarion.broadcasting.queue")

_QUEUES: weakref.WeakSet[InProcessQueue] = weakref.WeakSet()


def _dead_letters_held() -> float:
    return float(sum(len(queue._dead) for queue in list(_QUEUES)))


class QueueFull(BroadcastUnavailable):
    """The in-process queue holds ``max_pending`` events already: the caller decides what to do."""


@dataclass(frozen=True)
class Entry:
    """One event for one channel in a lane; ``batch`` ties the events of a replayed dead batch."""

    message: Message
    batch: str | None = None


@dataclass(frozen=True)
class HeldLetter:
    """A dead letter kept in memory: the event, its last error and how many tries it had."""

    id: str
    channel: str
    message: Message
    batch: str
    error: str
    status: int | None
    attempts: int
    failed_at: float

    def as_dict(self) -> dict[str, Any]:
        """The fields ``clarion broadcasts dead`` shows for the Redis queue's dead letters."""
        return {
            "id": self.id,
            "channel": self.channel,
            "name": self.message.name,
            "message_id": self.message.id,
            "error": self.error,
            "status": self.status,
            "attempts": self.attempts,
            "failed_at": self.failed_at,
        }


class InProcessQueue:
    """``Broadcaster(url, queue=InProcessQueue())``: queued events sent by tasks of this process.

    ``driver`` defaults to the broadcaster's. The queue binds to the event loop that first
    enqueues (or :meth:`start`); ``enqueue`` may then be called from any thread (a sync route in a
    thread pool), ``aenqueue`` from the loop."""

    def __init__(
        self,
        driver: Driver | str | None = None,
        *,
        policy: RetryPolicy | None = None,
        max_pending: int = 10_000,
        batch_size: int = 10,
        max_dead_letters: int = 1_000,
        max_sending: int = 8,
    ) -> None:
        if not 1 <= batch_size <= 10:
            raise ConfigError("batch_size must be 1..10 (Pusher's batch_events limit)")
        if max_pending < 1 or max_dead_letters < 1 or max_sending < 1:
            raise ConfigError("max_pending, max_dead_letters and max_sending must be positive")
        self.driver: Driver | None = driver_from_url(driver) if isinstance(driver, str) else driver
        self.policy = policy or RetryPolicy()
        self.max_pending = max_pending
        self.batch_size = batch_size
        self.max_dead_letters = max_dead_letters
        self.max_sending = max_sending
        self._lanes: dict[str, deque[Entry]] = {}
        self._drainers: dict[str, asyncio.Task[None]] = {}
        self._dead: deque[HeldLetter] = deque()
        self._count = 0  # events in lanes, including those in flight
        self._count_lock = threading.Lock()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._sending: asyncio.Semaphore | None = None
        self._closed = False
        if not _QUEUES:
            observe.DEAD_LETTERS.set_function(_dead_letters_held)
        _QUEUES.add(self)

    # -- life cycle -------------------------------------------------------------------------------

    def start(self, loop: asyncio.AbstractEventLoop | None = None) -> None:
        """Bind to ``loop`` (the running one by default). Idempotent on the same loop."""
        loop = loop or asyncio.get_running_loop()
        if self._loop is not None and self._loop is not loop and not self._loop.is_closed():
            raise ConfigError("this InProcessQueue already runs on another event loop")
        if self._loop is not loop:
            self._loop = loop
            self._sending = asyncio.Semaphore(self.max_sending)
        self._closed = False

    async def join(self, timeout: float | None = None) -> bool:
        """Wait until every queued event was sent or dead-lettered; False on timeout."""
        deadline = None if timeout is None else time.monotonic() + timeout
        while self._count or self._drainers:
            if deadline is not None and time.monotonic() >= deadline:
                return False
            await asyncio.sleep(0.01)
        return True

    async def aclose(self, timeout: float = 5.0) -> None:
        """Refuse new events, give pending ones ``timeout`` seconds, then log and count the rest."""
        self._closed = True
        if not await self.join(timeout):
            for task in list(self._drainers.values()):
                task.cancel()
            await asyncio.gather(*self._drainers.values(), return_exceptions=True)
        left = [entry.message for lane in self._lanes.values() for entry in lane]
        if left:
            error = BroadcastUnavailable("the process stopped before these events could be sent")
            observe.failed(left, error, refused=False)
            log.error("broadcast queue closed with %d events unsent (ids %s)", len(left), ",".join(m.id for m in left))
        self._lanes.clear()
        with self._count_lock:
            self._count = 0

    # -- producing --------------------------------------------------------------------------------

    def enqueue(self, messages: Sequence[Message]) -> None:
        """Queue the messages (one lane entry per channel) and return at once. Raises
        :class:`QueueFull` when the queue is full and ``ConfigError`` before it has a loop."""
        entries = _split(messages)
        if not entries:
            return
        loop = self._loop
        if loop is None:
            try:
                self.start()
            except RuntimeError as exc:
                raise ConfigError("start the InProcessQueue on the app's event loop before queueing") from exc
            loop = self._loop
        assert loop is not None
        if self._closed:
            raise QueueFull("the broadcast queue is closed")
        with self._count_lock:
            if self._count + len(entries) > self.max_pending:
                error = QueueFull(f"the broadcast queue holds {self._count} events (max_pending={self.max_pending})")
                observe.failed([entry.message for entry in entries], error, refused=False)
                raise error
            self._count += len(entries)
        observe.queued(len(entries))
        if _on_loop(loop):
            self._append(entries)
        else:
            loop.call_soon_threadsafe(self._append, entries)

    async def aenqueue(self, messages: Sequence[Message]) -> None:
        self.enqueue(messages)

    def pending(self) -> int:
        """Events waiting or in flight."""
        return self._count

    def _append(self, entries: Iterable[Entry]) -> None:
        for entry in entries:
            channel = entry.message.channels[0]
            self._lanes.setdefault(channel, deque()).append(entry)
            if channel not in self._drainers:
                self._drainers[channel] = asyncio.get_running_loop().create_task(
                    self._drain(channel), name=f"clarion-broadcast-lane:{channel}"
                )

    # -- draining ---------------------------------------------------------------------------------

    async def _drain(self, channel: str) -> None:
        lane = self._lanes[channel]
        try:
            while lane:
                batch = self._take(lane)
                await self._send(channel, batch)
                for _ in batch:
                    lane.popleft()
                with self._count_lock:
                    self._count -= len(batch)
        except Exception:  # a bug, not a delivery failure: never leave the lane silently stuck
            log.exception("the broadcast lane for %s stopped; its events are dead-lettered", channel)
            self._bury(channel, list(lane), "the lane stopped on an internal error", None, 0)
            with self._count_lock:
                self._count -= len(lane)
            lane.clear()
        finally:
            self._drainers.pop(channel, None)
            if not lane:
                self._lanes.pop(channel, None)

    def _take(self, lane: deque[Entry]) -> list[Entry]:
        """The lane's head: the events of one replayed batch together, or up to batch_size fresh ones."""
        tag = lane[0].batch
        batch: list[Entry] = []
        for entry in lane:
            if entry.batch != tag or len(batch) == self.batch_size:
                break
            batch.append(entry)
        return batch

    async def _send(self, channel: str, batch: list[Entry]) -> None:
        """Send the pinned batch until each event went or was dead-lettered. A refused batch is
        resent one event at a time, to dead-letter only the event the server refuses."""
        rest = batch
        whole = True
        while rest:
            chunk = rest if whole else rest[:1]
            if await self._try(channel, chunk) == "split":
                whole = False
                continue
            rest = rest[len(chunk) :]

    async def _try(self, channel: str, chunk: list[Entry]) -> str:
        """ "sent", "buried" (dead-lettered), or "split" (refused: try one at a time)."""
        assert self._sending is not None
        driver = self.driver
        if driver is None:
            raise ConfigError("this InProcessQueue has no driver: give driver=, or pass it to a Broadcaster")
        messages = [entry.message for entry in chunk]
        key = idempotency_key(messages)  # the same on every retry: the server applies it once
        attempts = 0
        while True:
            try:
                async with self._sending:
                    await driver.apublish(messages, key=key)
                return "sent"
            except BroadcastRefused as exc:
                if len(chunk) > 1:
                    return "split"
                self._bury(channel, chunk, exc.reason, exc.status, attempts + 1)
                return "buried"
            except BroadcastUnavailable as exc:
                attempts += 1
                if attempts >= self.policy.max_tries:
                    self._bury(channel, chunk, exc.reason, exc.status, attempts)
                    return "buried"
                delay = self.policy.delay(attempts)
                observe.retried(channel, attempts, delay, exc)
                await asyncio.sleep(delay)

    # -- dead letters -----------------------------------------------------------------------------

    def _bury(self, channel: str, entries: Sequence[Entry], error: str, status: int | None, attempts: int) -> None:
        if not entries:
            return
        messages = [entry.message for entry in entries]
        key = idempotency_key(messages)
        now = time.time()
        for entry in entries:
            if len(self._dead) >= self.max_dead_letters:
                oldest = self._dead.popleft()
                log.error(
                    "dead-letter list full (%d): forgetting %s on %s (id %s)",
                    self.max_dead_letters,
                    oldest.message.name,
                    oldest.channel,
                    oldest.message.id,
                )
            letter_id = uuid.uuid4().hex[:12]
            self._dead.append(HeldLetter(letter_id, channel, entry.message, key, error, status, attempts, now))
        observe.dead_lettered(channel, [m.id for m in messages], attempts, error)

    def dead_letters(self) -> list[HeldLetter]:
        return list(self._dead)

    def replay(self, ids: Iterable[str] | None = None) -> int:
        """Put dead letters back at the end of their lanes (all of them without ``ids``); call it on
        the queue's loop. The events keep their ids, and a dead batch's events stay together."""
        wanted = set(ids) if ids is not None else None
        chosen = [letter for letter in self._dead if wanted is None or letter.id in wanted]
        if not chosen:
            return 0
        if self._loop is None:
            self.start()
        taken = {letter.id for letter in chosen}
        self._dead = deque(letter for letter in self._dead if letter.id not in taken)
        with self._count_lock:
            self._count += len(chosen)
        self._append(Entry(letter.message, letter.batch) for letter in chosen)
        log.info("replayed %d dead-lettered broadcasts", len(chosen))
        return len(chosen)


def _split(messages: Sequence[Message]) -> list[Entry]:
    """One entry per channel, as the Redis queue's lanes hold them."""
    entries: list[Entry] = []
    for message in messages:
        for index, channel in enumerate(message.channels):
            record_id = message.id if len(message.channels) == 1 else f"{message.id}-{index}"
            entries.append(Entry(Message((channel,), message.name, message.data, message.socket_id, record_id)))
    return entries


def _on_loop(loop: asyncio.AbstractEventLoop) -> bool:
    try:
        return asyncio.get_running_loop() is loop
    except RuntimeError:
        return False
