"""Queued broadcasting on Redis, with Dramatiq as the task queue.

Why Dramatiq: a kept, plain-Python task queue with a durable Redis broker (messages are acked
only after the actor ran, and a dead worker's messages are given back), delayed messages, a
worker with threads and graceful shutdown, and a sync ``send()`` that Django views and scripts
call as easily as async apps do. The worker needs no app code: events are validated, encoded
and (for encrypted channels) sealed before they are queued, so Django and FastAPI apps share one
``clarion broadcast-worker``.

Why lanes: a retrying task queue reorders (a failed task waits while later ones run), and the
socket server must see each channel's events in order. So each channel has a *lane*, a Redis
list that holds its events in order; Dramatiq messages only say "drain lane X". One drainer at a
time holds a lane's lease and sends from its head, up to ``batch_size`` events per
``batch_events`` call. The batch in flight is pinned (its size is stored), so a retry resends
exactly the same events with the same ``Idempotency-Key`` and a server that applied them before
the answer was lost applies nothing twice. A transient failure pins the lane (``hold``) and
schedules a delayed drain with exponential backoff and jitter; later events wait behind it. After
``max_tries`` the batch moves to the dead-letter list with its error and the lane moves on; a
refused (4xx) batch is split to find the event the server refuses, which is dead-lettered at once.
``clarion broadcasts dead`` lists dead letters, ``clarion broadcasts replay`` puts them back
with their ids, a dead batch's events together, so a batch replayed whole keeps its key.
A sweeper in the worker re-drains lanes nobody holds, should a drain message ever be lost.

Keys (``prefix`` default ``clarion-broadcasts``): ``{prefix}:lanes`` (set of channels with
events), ``{prefix}:lane:{channel}`` (list), ``{prefix}:inflight:{channel}`` (hash n, attempts),
``{prefix}:lease:{channel}``, ``{prefix}:hold:{channel}``, ``{prefix}:dead`` (list).
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import threading
import time
import uuid
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import dramatiq
import orjson
import redis
from dramatiq.brokers.redis import RedisBroker

from .. import observe
from ..delivery import RetryPolicy
from ..drivers import Driver, driver_from_url
from ..errors import BroadcastRefused, BroadcastUnavailable, ConfigError
from ..messages import Message, idempotency_key

log = logging.getLogger("clarion.broadcasting.queue")

QUEUE_NAME = "clarion-broadcasts"
ACTOR_NAME = "clarion_drain_lane"

_RELEASE = """
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
"""
_RENEW = """
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('PEXPIRE', KEYS[1], ARGV[2]) end
return 0
"""
# KEYS: lease, lane, inflight; ARGV: token, n
_COMMIT = """
if redis.call('GET', KEYS[1]) ~= ARGV[1] then return 0 end
redis.call('LTRIM', KEYS[2], tonumber(ARGV[2]), -1)
redis.call('DEL', KEYS[3])
return 1
"""
# KEYS: lease, lane, inflight, dead; ARGV: token, n, entries...
_DEAD_LETTER = """
if redis.call('GET', KEYS[1]) ~= ARGV[1] then return 0 end
for i = 3, #ARGV do redis.call('RPUSH', KEYS[4], ARGV[i]) end
redis.call('LTRIM', KEYS[2], tonumber(ARGV[2]), -1)
redis.call('DEL', KEYS[3])
return 1
"""
# KEYS: lanes, lane; ARGV: channel
_FORGET_IF_EMPTY = """
if redis.call('LLEN', KEYS[2]) == 0 then redis.call('SREM', KEYS[1], ARGV[1]) return 1 end
return 0
"""
# KEYS: dead, lanes, lane; ARGV: entry, record, channel
_REPLAY = """
if redis.call('LREM', KEYS[1], 1, ARGV[1]) == 0 then return 0 end
redis.call('RPUSH', KEYS[3], ARGV[2])
redis.call('SADD', KEYS[2], ARGV[3])
return 1
"""


@dataclass(frozen=True)
class DeadLetter:
    id: str
    channel: str
    name: str
    message_id: str
    error: str
    status: int | None
    attempts: int
    failed_at: float
    raw: bytes

    @classmethod
    def parse(cls, raw: bytes) -> DeadLetter:
        entry = orjson.loads(raw)
        record = entry["record"]
        return cls(
            id=entry["id"],
            channel=entry["channel"],
            name=record["name"],
            message_id=record["id"],
            error=entry["error"],
            status=entry.get("status"),
            attempts=entry["attempts"],
            failed_at=entry["failed_at"],
            raw=raw,
        )

    def as_dict(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "channel": self.channel,
            "name": self.name,
            "message_id": self.message_id,
            "error": self.error,
            "status": self.status,
            "attempts": self.attempts,
            "failed_at": self.failed_at,
        }


class RedisQueue:
    """The queue both faces share: apps enqueue; ``clarion broadcast-worker`` drains.

    ``driver`` is needed only where events are sent (the worker)."""

    def __init__(
        self,
        redis_url: str = "redis://127.0.0.1:6379/0",
        *,
        prefix: str = "clarion-broadcasts",
        driver: Driver | str | None = None,
        policy: RetryPolicy | None = None,
        batch_size: int = 10,
        lease_seconds: float = 30.0,
    ) -> None:
        if not 1 <= batch_size <= 10:
            raise ConfigError("batch_size must be 1..10 (Pusher's batch_events limit)")
        self.prefix = prefix
        self.redis_url = redis_url
        self.redis: redis.Redis = redis.Redis.from_url(redis_url)
        self.driver: Driver | None = driver_from_url(driver) if isinstance(driver, str) else driver
        self.policy = policy or RetryPolicy()
        self.batch_size = batch_size
        self.lease_ms = int(lease_seconds * 1000)
        self.broker = RedisBroker(url=redis_url, namespace=f"{prefix}-dramatiq")  # type: ignore[no-untyped-call]
        self.actor: dramatiq.Actor[[str, bool], None] = dramatiq.Actor(
            self._drain,
            broker=self.broker,
            actor_name=ACTOR_NAME,
            queue_name=QUEUE_NAME,
            priority=0,
            # Dramatiq's own retries cover only a drain that crashed (Redis gone, a bug): delivery
            # failures are retried by the lane, which keeps the order.
            options={"max_retries": 20, "min_backoff": 1000, "max_backoff": 60000},
        )
        self._release = self.redis.register_script(_RELEASE)
        self._renew = self.redis.register_script(_RENEW)
        self._commit = self.redis.register_script(_COMMIT)
        self._dead_letter = self.redis.register_script(_DEAD_LETTER)
        self._forget = self.redis.register_script(_FORGET_IF_EMPTY)
        self._replay = self.redis.register_script(_REPLAY)

    # -- keys ---------------------------------------------------------------------------------

    @property
    def lanes_key(self) -> str:
        return f"{self.prefix}:lanes"

    @property
    def dead_key(self) -> str:
        return f"{self.prefix}:dead"

    def _key(self, kind: str, channel: str) -> str:
        return f"{self.prefix}:{kind}:{channel}"

    # -- producing ----------------------------------------------------------------------------

    def enqueue(self, messages: Sequence[Message]) -> None:
        """Append each message to its channels' lanes (one record per channel) and wake a drainer.
        Raises when Redis cannot take them: a request that could not queue its event knows it."""
        lanes: dict[str, list[bytes]] = {}
        for message in messages:
            for index, channel in enumerate(message.channels):
                record_id = message.id if len(message.channels) == 1 else f"{message.id}-{index}"
                one = Message((channel,), message.name, message.data, message.socket_id, record_id)
                lanes.setdefault(channel, []).append(one.to_record())
        with self.redis.pipeline(transaction=True) as pipe:
            for channel, records in lanes.items():
                pipe.rpush(self._key("lane", channel), *records)
                pipe.sadd(self.lanes_key, channel)
            pipe.execute()
        observe.queued(sum(len(r) for r in lanes.values()))
        for channel in lanes:
            self._wake(channel)

    async def aenqueue(self, messages: Sequence[Message]) -> None:
        await asyncio.to_thread(self.enqueue, messages)

    def _wake(self, channel: str, delay_ms: int | None = None, retry: bool = False) -> None:
        try:
            self.actor.send_with_options(args=(channel, retry), delay=delay_ms)
        except Exception:  # the events are in their lane: the sweeper will find them
            log.exception("could not send a drain message for %s; the sweeper will drain it", channel)

    # -- draining (in the worker) ---------------------------------------------------------------

    def _drain(self, channel: str, retry: bool = False) -> None:
        if self.driver is None:
            raise ConfigError("this queue has no driver: only the worker drains (give driver=)")
        if not retry and self.redis.exists(self._key("hold", channel)):
            return  # a delayed retry owns this lane
        lease = self._key("lease", channel)
        token = uuid.uuid4().hex
        if not self.redis.set(lease, token, nx=True, px=self.lease_ms):
            return  # another drainer has it, and will drain what is there
        try:
            while True:
                batch, attempts = self._batch(channel)
                if not batch:
                    self._release(keys=[lease], args=[token])
                    self._forget(keys=[self.lanes_key, self._key("lane", channel)], args=[channel])
                    # An event pushed while we released would have found the lease taken.
                    if self.redis.llen(self._key("lane", channel)) and self.redis.set(
                        lease, token, nx=True, px=self.lease_ms
                    ):
                        continue
                    token = ""
                    return
                if not self._send(channel, token, batch, attempts):
                    return
                self._renew(keys=[lease], args=[token, self.lease_ms])
        finally:
            if token:
                self._release(keys=[lease], args=[token])

    def _batch(self, channel: str) -> tuple[list[bytes], int]:
        inflight = self._key("inflight", channel)
        pinned = self.redis.hmget(inflight, "n", "attempts")
        if pinned[0] is not None:
            n, attempts = int(pinned[0]), int(pinned[1] or 0)
            return _raw(self.redis.lrange(self._key("lane", channel), 0, n - 1)), attempts
        records = _raw(self.redis.lrange(self._key("lane", channel), 0, self.batch_size - 1))
        # A replayed dead batch is sent as it was (same events, same Idempotency-Key); fresh
        # events are never mixed into it.
        tag = _batch_tag(records[0]) if records else None
        records = list(itertools.takewhile(lambda raw: _batch_tag(raw) == tag, records))
        if records:
            self.redis.hset(inflight, mapping={"n": len(records), "attempts": 0})
        return records, 0

    def _send(self, channel: str, token: str, batch: list[bytes], attempts: int) -> bool:
        """Send the pinned batch. True: go on with the lane; False: the lane waits for a retry."""
        assert self.driver is not None
        messages = [Message.from_record(raw) for raw in batch]
        try:
            self.driver.publish(messages, key=idempotency_key(messages))
        except BroadcastRefused as exc:
            if len(batch) > 1:
                # Find the event the server refuses: resend one at a time.
                self.redis.hset(self._key("inflight", channel), mapping={"n": 1, "attempts": 0})
                return True
            self._bury(channel, token, batch, exc.reason, exc.status, attempts + 1)
            return True
        except BroadcastUnavailable as exc:
            attempts = int(self.redis.hincrby(self._key("inflight", channel), "attempts", 1))
            if attempts >= self.policy.max_tries:
                self._bury(channel, token, batch, exc.reason, exc.status, attempts)
                return True
            delay = self.policy.delay(attempts)
            observe.retried(channel, attempts, delay, exc)
            delay_ms = max(1, int(delay * 1000))
            self.redis.set(self._key("hold", channel), "1", px=delay_ms)
            self._wake(channel, delay_ms=delay_ms, retry=True)
            return False
        self._commit(
            keys=[self._key("lease", channel), self._key("lane", channel), self._key("inflight", channel)],
            args=[token, len(batch)],
        )
        return True

    def _bury(
        self, channel: str, token: str, batch: list[bytes], error: str, status: int | None, attempts: int
    ) -> None:
        now = time.time()
        key = idempotency_key([Message.from_record(raw) for raw in batch])
        entries = [
            orjson.dumps(
                {
                    "id": uuid.uuid4().hex[:12],
                    "channel": channel,
                    "batch": key,
                    "record": orjson.loads(raw),
                    "error": error,
                    "status": status,
                    "attempts": attempts,
                    "failed_at": now,
                }
            )
            for raw in batch
        ]
        self._dead_letter(
            keys=[
                self._key("lease", channel),
                self._key("lane", channel),
                self._key("inflight", channel),
                self.dead_key,
            ],
            args=[token, len(batch), *entries],
        )
        observe.dead_lettered(channel, [orjson.loads(raw)["id"] for raw in batch], attempts, error)

    # -- the sweeper -------------------------------------------------------------------------

    def sweep(self) -> int:
        """Wake a drainer for every lane with events that nobody holds; how many were woken."""
        woken = 0
        for raw in self.redis.sscan_iter(self.lanes_key, count=500):
            channel = raw.decode()
            if self.redis.exists(self._key("lease", channel), self._key("hold", channel)):
                continue
            if self.redis.llen(self._key("lane", channel)) == 0:
                self._forget(keys=[self.lanes_key, self._key("lane", channel)], args=[channel])
                continue
            self._wake(channel)
            woken += 1
        return woken

    def pending(self) -> int:
        """Events waiting in every lane."""
        return sum(self.redis.llen(self._key("lane", raw.decode())) for raw in self.redis.sscan_iter(self.lanes_key))

    # -- dead letters -------------------------------------------------------------------------

    def dead_letter_count(self) -> float:
        """For ``clarion_broadcasts_dead_letters``: read from Redis at each scrape (NaN while
        Redis cannot be read, so a scrape shows the gap instead of a stale number)."""
        try:
            return float(self.redis.llen(self.dead_key))
        except redis.RedisError:
            log.warning("cannot read the dead-letter count from Redis")
            return float("nan")

    def dead_letters(self) -> list[DeadLetter]:
        return [DeadLetter.parse(raw) for raw in _raw(self.redis.lrange(self.dead_key, 0, -1))]

    def replay(self, ids: Iterable[str] | None = None) -> int:
        """Put dead letters back at the end of their lanes (all of them without ``ids``).

        Each event keeps its message id, and the events of one dead batch are tagged with it, so
        a drainer sends them together and apart from fresh events: a whole batch replayed goes
        out with the Idempotency-Key of its last try, and a socket server that had applied it
        (within its idempotency window) publishes nothing again. Part of a batch gets a key of
        its own; an event the server applied under the old key is then published again."""
        wanted = set(ids) if ids is not None else None
        woken: set[str] = set()
        count = 0
        for letter in self.dead_letters():
            if wanted is not None and letter.id not in wanted:
                continue
            entry = orjson.loads(letter.raw)
            record = orjson.dumps({**entry["record"], "batch": entry.get("batch")})
            keys = [self.dead_key, self.lanes_key, self._key("lane", letter.channel)]
            if self._replay(keys=keys, args=[letter.raw, record, letter.channel]):
                count += 1
                woken.add(letter.channel)
        for channel in woken:
            self._wake(channel)
        return count

    def close(self) -> None:
        self.broker.close()
        self.redis.close()
        if self.driver is not None:
            self.driver.close()


def _batch_tag(raw: bytes) -> str | None:
    """The dead batch a replayed record came from (None for a fresh record)."""
    tag = orjson.loads(raw).get("batch")
    return tag if isinstance(tag, str) else None


def _raw(items: Any) -> list[bytes]:
    """redis-py's list answers, typed loosely, as the bytes they are (no decode_responses)."""
    return [item if isinstance(item, bytes) else str(item).encode() for item in items]


class BroadcastWorker:
    """Dramatiq's worker on the queue's broker, plus the sweeper."""

    def __init__(self, queue: RedisQueue, *, threads: int = 4, sweep_interval: float = 5.0) -> None:
        self.queue = queue
        self.worker = dramatiq.Worker(queue.broker, worker_threads=threads, worker_timeout=100)
        self.sweep_interval = sweep_interval
        self._stop = threading.Event()
        self._sweeper = threading.Thread(target=self._sweep_loop, name="clarion-sweeper", daemon=True)

    def start(self) -> None:
        self.worker.start()
        self._sweeper.start()

    def stop(self) -> None:
        self._stop.set()
        self.worker.stop()
        self._sweeper.join(timeout=5)

    def _sweep_loop(self) -> None:
        while not self._stop.wait(self.sweep_interval):
            try:
                self.queue.sweep()
            except redis.RedisError as exc:
                log.warning("sweep failed: %s", exc)
