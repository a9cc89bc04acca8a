"""The Redis twin: pub/sub carries events and control messages; hashes hold cluster-wide
presence, online users and subscription counts, each with this node's share recorded beside it so
that a dead node's share can be taken away exactly; strings with a TTL hold cache channels; a
hash (epoch, serial) and a stream per channel hold history. The Lua scripts are in
``redis_scripts``. All keys of a cluster start with its prefix (``CLARION_SCALING_PREFIX``).

Health is watched actively: a stalled Redis is silent, so nothing but a ping with a short timeout
notices it. While Redis is not known healthy the node never waits on it: ``publish`` delivers
locally at once, state changes are kept in a local mirror, reads answer from the mirror, and once
Redis answers again the mirror is written back (a Redis that restarted empty is rebuilt; one that
kept its data is reconciled, not double-counted).

Commands may run twice (redis-py sends a command again on a new connection when the first broke,
and the first may have been applied), so every script is idempotent; a publish whose command timed
out is delivered locally, and if Redis runs it after all, its copy on the bus is dropped here.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import secrets
import sys
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import orjson
from redis import asyncio as aioredis
from redis.asyncio.client import PubSub
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import RedisError
from redis.exceptions import TimeoutError as RedisTimeoutError

from ..observability import metrics
from ..observability.logs import fields
from ..tasks import cancel_and_wait
from . import redis_scripts as scripts
from .claims import Claims, skipped
from .contracts import (
    FIRST,
    FULL,
    HELD,
    POSITION_TTL,
    SEP,
    Control,
    Envelope,
    History,
    Keep,
    Once,
    OnControl,
    OnEvent,
    OnRestored,
    Reaped,
    Restored,
)
from .memory import new_epoch

__all__ = ["SEP", "RedisBackend"]

log = logging.getLogger("clarion.scaling")

T = TypeVar("T")

# How long a publish id stays claimed, in command timeouts: far longer than a command and its one
# retry (sent at once on a new connection) can take. Each claim costs Redis about 125 B meanwhile.
CLAIM_TIMEOUTS = 10
MIN_CLAIM_TTL = 10.0
# Publishes whose command failed after it may have been sent, remembered so that their copy on the
# bus is dropped if Redis runs them after all (it may have been stalled for minutes). Bounded.
MAX_DOUBTS = 10_000
DOUBT_TTL = 600.0
# Write-back passes while changes keep arriving in the local mirror; later ones wait for a beat.
WRITE_BACK_PASSES = 3
MAX_DIVERGED = 100_000


def _text(raw: bytes | str) -> str:
    return raw.decode() if isinstance(raw, bytes) else raw


class KeepsCancels(aioredis.Connection):
    """redis-py writes under ``asyncio.wait_for`` when a socket timeout is set. On Python 3.11 that
    drops a cancel landing as the write completes (CPython gh-86296; see clarion.tasks), and the
    event loop lines the two up: a timer that fires when Redis answers runs while the next command
    is being written. A loop of heartbeats lost up to 70 cancels in a row at 50 ms intervals
    (measured). ``asyncio.timeout`` keeps the cancel, so the write runs under it instead."""

    async def send_packed_command(self, command: Any, check_health: bool = True) -> None:
        timeout = self.socket_timeout
        if sys.version_info >= (3, 12) or not timeout:
            await super().send_packed_command(command, check_health)
            return
        self.socket_timeout = None  # one command at a time on a connection: nothing else reads it
        try:
            async with asyncio.timeout(timeout):
                await super().send_packed_command(command, check_health)
        except TimeoutError:
            await self.disconnect(nowait=True)
            raise RedisTimeoutError("Timeout writing to socket") from None
        finally:
            self.socket_timeout = timeout


class RedisBackend:
    def __init__(
        self,
        url: str,
        prefix: str,
        node_id: str,
        node_ttl: float = 15.0,
        retry_max: float = 10.0,
        timeout: float = 2.0,
        health_interval: float = 1.0,
    ) -> None:
        self.node_id = node_id
        self.prefix = prefix
        self.node_ttl = node_ttl
        self.retry_max = retry_max
        self.timeout = timeout
        self.health_interval = health_interval
        self.claim_ttl = max(MIN_CLAIM_TTL, CLAIM_TIMEOUTS * timeout)
        options: dict[str, Any] = {
            "socket_connect_timeout": timeout,
            "socket_timeout": timeout,
            # A broken connection (a pooled one that died with a restarted Redis) is replaced and the
            # command sent once more, instead of failing the first command after every restart; the
            # scripts are idempotent, so one applied before the break is not applied twice. A timeout
            # is not retried: Redis is stalled, and the caller goes the local way at once.
            "retry": Retry(NoBackoff(), 1, supported_errors=(RedisConnectionError,)),
            "connection_class": KeepsCancels,
        }
        # Reads and publishes use a pool. Every change to shared state goes through one connection,
        # so Redis applies this node's changes in the order they were made: a write-back after an
        # outage can never be overtaken by (and double-count) a change made just before it.
        self.redis = aioredis.Redis.from_url(url, **options)
        self.state = aioredis.Redis.from_url(url, single_connection_client=True, **options)
        self._bus = f"{prefix}:bus"
        self._healthy: bool | None = None  # unknown until Redis first answers or fails
        self._closing = False
        self._generation = 0  # of the bus reader: a replaced reader stops at its next turn
        self._reader: asyncio.Task[None] | None = None
        self._replaced: set[asyncio.Task[None]] = set()
        self._watcher: asyncio.Task[None] | None = None
        self._pubsub: PubSub | None = None
        self._pong = asyncio.Event()
        self._suspect = asyncio.Event()
        self._on_event: OnEvent | None = None
        self._on_control: OnControl | None = None
        self._on_restored: OnRestored | None = None
        # Members and users that changed while cut off: their announcements reached this node only.
        self._unannounced: set[tuple[str, ...]] = set()
        self._dirty = False  # the mirror changed while Redis was not written
        self._restoring = asyncio.Lock()
        self._cluster_size = 1  # live nodes at the last heartbeat
        self._announcing: set[asyncio.Task[None]] = set()
        self._join = self.state.register_script(scripts.JOIN)
        self._leave = self.state.register_script(scripts.LEAVE)
        self._online = self.state.register_script(scripts.ONLINE)
        self._count = self.state.register_script(scripts.COUNT)
        self._restore_script = self.state.register_script(scripts.RESTORE)
        self._beat = self.redis.register_script(scripts.BEAT)
        self._publish = self.redis.register_script(scripts.PUBLISH)
        self._publish_kept = self.redis.register_script(scripts.PUBLISH_KEPT)
        self._remember_unless_claimed = self.redis.register_script(scripts.REMEMBER_UNLESS_CLAIMED)
        self._history = self.redis.register_script(scripts.HISTORY)
        # Publish ids: unique per node and process, short (each is a key in Redis for claim_ttl).
        self._id_prefix = secrets.token_hex(5) + "."
        self._ids = itertools.count(1)
        self._in_doubt: dict[str, float] = {}  # publish id → when it was delivered locally
        self._local_claims = Claims()  # idempotency keys used while Redis was away
        # Kept channels that got events while Redis was away: their history has a hole, so their
        # epoch is ended on reconnect and resuming clients learn to refetch. Bounded.
        self._diverged: set[tuple[str, str]] = set()
        self._connected = asyncio.Event()
        self._subscribed = False  # the bus reader is subscribed and has written this node's share back
        # This node's share, kept locally so it can be written back after an outage.
        self._held_members: dict[tuple[str, str, str], Any] = {}
        self._held_users: set[tuple[str, str]] = set()
        self._held_counts: dict[tuple[str, str], int] = {}
        self._beaten = False

    # --- keys -------------------------------------------------------------------------------

    def _k(self, *parts: str) -> str:
        return ":".join((self.prefix, *parts))

    def _node_keys(self, node_id: str) -> tuple[str, str, str]:
        return (
            self._k("node", node_id, "presence"),
            self._k("node", node_id, "users"),
            self._k("node", node_id, "counts"),
        )

    def _new_id(self) -> str:
        return f"{self._id_prefix}{next(self._ids):x}"

    # --- health -----------------------------------------------------------------------------

    @property
    def healthy(self) -> bool:
        return self._healthy is True

    def _set_healthy(self, healthy: bool, error: str = "") -> None:
        if healthy == self._healthy:
            return
        was = self._healthy
        self._healthy = healthy
        metrics.SCALING_UP.set(1 if healthy else 0)
        if healthy and was is False:
            metrics.SCALING_RECONNECTS.inc()
        if healthy:
            log.info("redis connected", extra=fields(node=self.node_id))
        else:
            metrics.SCALING_ERRORS.inc()
            log.error(
                "redis unreachable; serving local sockets only", extra=fields(node=self.node_id, error=error[:200])
            )

    def _lost(self, exc: BaseException) -> None:
        self._set_healthy(False, str(exc) or type(exc).__name__)

    def _failed(self, exc: BaseException) -> None:
        """A command failed. A broken or refused connection means Redis is lost. A timeout may
        also mean that this process got no CPU for a while (the answer came, too late to count):
        the health check is run at once, and judges."""
        if isinstance(exc, (RedisTimeoutError, TimeoutError)):
            self._suspect.set()
        else:
            self._lost(exc)

    async def _attempt(self, command: Callable[[], Awaitable[T]], fallback: Callable[[], T]) -> T:
        """Redis's answer while Redis is healthy. While it is not, the local answer at once, never
        waiting on a dead connection; also when the command fails."""
        if self._healthy:
            try:
                return await command()
            except (RedisError, OSError) as exc:
                self._failed(exc)
        return fallback()

    def _changed_locally(self, key: tuple[str, ...] | None = None) -> None:
        """The mirror changed without Redis: write it back later, and announce ``key`` then."""
        self._dirty = True
        if key is not None:
            self._unannounced.add(key)

    async def _watch(self) -> None:
        while not self._closing:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(self.health_interval):
                    await self._suspect.wait()  # a command timed out: check now
            self._suspect.clear()
            try:
                await self._check()
            except Exception:
                log.exception("redis health check failed", extra=fields(node=self.node_id))

    async def _check(self) -> None:
        """Ping Redis with the short command timeout: a stalled Redis is silent, and the bus reader
        waits for ever. Then check that the bus connection answers too, and write back if needed."""
        if not await self._twice(self._redis_answers):
            return
        if not self._subscribed:
            return  # the reader is (re)connecting; it writes back when it is through
        if not await self._twice(self._bus_answers):
            # Redis answers but the bus connection does not (dropped silently): subscribe anew.
            self._set_healthy(False, "the bus connection did not answer a ping")
            self._restart_reader()
            return
        if not self._healthy or self._dirty:
            # Back from a stall with the bus connection intact (nothing published meanwhile was lost
            # on the way to this node), or a command timed out while Redis was fine: write the
            # mirror back, and serve again.
            try:
                await self._write_back()
            except (RedisError, OSError) as exc:
                self._lost(exc)

    async def _twice(self, check: Callable[[], Awaitable[BaseException | None]]) -> bool:
        """True when ``check`` passes, at once or, after a timeout, on a second try made at once: a
        single timeout may be this process's own stall rather than Redis's."""
        for attempt in (1, 2):
            failure = await check()
            if failure is None:
                return True
            metrics.SCALING_HEALTH_FAILURES.inc()
            if attempt == 2 or not isinstance(failure, (RedisTimeoutError, TimeoutError)):
                self._lost(failure)
                return False
        return False

    async def _redis_answers(self) -> BaseException | None:
        try:
            await self.redis.ping()
        except (RedisError, OSError) as exc:
            return exc
        return None

    async def _bus_answers(self) -> BaseException | None:
        """PING on the subscribed connection, answered once its PONG comes through the reader."""
        pubsub = self._pubsub
        if pubsub is None or pubsub.connection is None:
            return RedisConnectionError("the bus connection is gone")
        self._pong.clear()
        try:
            await pubsub.connection.send_command("PING", check_health=False)
            async with asyncio.timeout(self.timeout):
                await self._pong.wait()
        except (RedisError, OSError) as exc:
            return exc
        return None

    # --- lifecycle --------------------------------------------------------------------------

    async def start(
        self, on_event: OnEvent, on_control: OnControl, on_restored: OnRestored | None = None, wait: float = 5.0
    ) -> None:
        """Start the bus reader and the health check, and wait (up to ``wait`` s) for the first
        connection. Without Redis the node still starts, serving its own sockets, with ``/ready``
        at 503 and the failure logged."""
        self._on_event = on_event
        self._on_control = on_control
        self._on_restored = on_restored
        self._restart_reader()
        self._watcher = asyncio.create_task(self._watch())
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(wait):
                await self._connected.wait()
        if self._healthy is None:
            self._set_healthy(False, f"no answer within {wait:g} s")

    async def close(self) -> None:
        self._closing = True
        tasks = [task for task in (self._reader, self._watcher) if task is not None]
        await cancel_and_wait([*tasks, *self._replaced, *self._announcing])
        if self._healthy:
            # A clean stop hands its share back at once instead of waiting to be reaped.
            with contextlib.suppress(RedisError, OSError, TimeoutError):
                async with asyncio.timeout(3):
                    await self._forget_self()
        await self.redis.aclose()
        await self.state.aclose()

    def _restart_reader(self) -> None:
        self._generation += 1
        self._subscribed = False
        self._pubsub = None
        if self._reader is not None:
            # Cancelled, and in case the cancel is lost (see clarion.tasks), stopped by its generation.
            self._reader.cancel()
            self._replaced.add(self._reader)
            self._reader.add_done_callback(self._replaced.discard)
        self._reader = asyncio.create_task(self._read_forever(self._generation))

    async def _read_forever(self, generation: int) -> None:
        """Subscribe, write back, then dispatch; on any failure, back off and start over."""
        backoff = 0.2
        while not self._closing and generation == self._generation:
            pubsub = self.redis.pubsub(ignore_subscribe_messages=True)
            try:
                await pubsub.subscribe(self._bus)
                # Idle pooled connections opened before a drop are dead: let the next commands open
                # fresh ones rather than fail once each.
                await self.redis.connection_pool.disconnect(inuse_connections=False)
                await self._load_scripts()
                await self._write_back()
                if generation != self._generation:
                    return
                self._pubsub = pubsub
                self._subscribed = True
                self._connected.set()
                backoff = 0.2
                while True:
                    message = await pubsub.get_message(timeout=None)
                    if generation != self._generation:
                        return
                    if message is None:
                        continue
                    if message["type"] == "pong":
                        self._pong.set()
                    else:
                        self._dispatch(message["data"])
            except asyncio.CancelledError:
                raise
            except (RedisError, OSError) as exc:
                if generation == self._generation:
                    self._lost(exc)
            finally:
                if generation == self._generation:
                    self._subscribed = False
                    self._pubsub = None
                with contextlib.suppress(Exception):
                    await pubsub.aclose()  # type: ignore[no-untyped-call]
            await asyncio.sleep(backoff)
            backoff = min(backoff * 2, self.retry_max)

    def _dispatch(self, raw: bytes) -> None:
        try:
            message = orjson.loads(raw)
            if message[0] == "e":
                # ["e", app, channel, frame, exclude, serial, epoch, publish id, API receipt time];
                # older nodes sent the first five, or seven for a kept event, or eight.
                if self._in_doubt and len(message) > 7 and self._in_doubt.pop(message[7], None) is not None:
                    return  # delivered locally when its command failed, and run by Redis after all
                assert self._on_event is not None
                if len(message) > 8:
                    received = float(message[8] or 0)
                    self._on_event(
                        Envelope(
                            message[1], message[2], message[3], message[4] or None, message[5], message[6], received
                        )
                    )
                elif len(message) > 5:
                    self._on_event(Envelope(message[1], message[2], message[3], message[4] or None, *message[5:7]))
                else:
                    self._on_event(Envelope(message[1], message[2], message[3], message[4]))
            elif message[0] == "c":
                if self._in_doubt and len(message) > 4 and self._in_doubt.pop(message[4], None) is not None:
                    return
                assert self._on_control is not None
                self._on_control(Control(message[1], message[2], message[3]))
        except Exception:
            metrics.SCALING_ERRORS.inc()
            log.exception("bad bus message dropped", extra=fields(node=self.node_id))

    async def _load_scripts(self) -> None:
        """Load every script (a Redis that restarted has none), in one round trip, so that no
        publish or change pays for loading its script on the way."""
        async with self.redis.pipeline(transaction=False) as pipe:
            for script in (self._join, self._leave, self._online, self._count, self._restore_script):
                pipe.script_load(script.script)
            for script in (self._beat, self._publish, self._publish_kept, self._remember_unless_claimed, self._history):
                pipe.script_load(script.script)
            await pipe.execute()

    async def _write_back(self) -> None:
        """Write the mirror back, again while changes arrived in it meanwhile; then serve."""
        for _ in range(WRITE_BACK_PASSES):
            await self._restore()
            if not self._dirty:
                break
        self._set_healthy(True)

    async def _restore(self) -> None:
        """Write this node's share back in one script: add what Redis lacks, take away what it has
        extra (a Redis that restarted empty is rebuilt; one that kept its data is reconciled)."""
        async with self._restoring:
            held = {
                "members": [[app, channel, user, info] for (app, channel, user), info in self._held_members.items()],
                "users": [[app, user] for app, user in self._held_users],
                "counts": [[app, channel, n] for (app, channel), n in self._held_counts.items()],
            }
            # What changes from here on is written (and announced) by the next pass.
            news, self._unannounced = self._unannounced, set()
            self._dirty = False
            try:
                restored = await self._write_share(held, news)
            except BaseException:
                self._unannounced |= news
                self._dirty = True
                raise
        if restored and self._on_restored is not None:
            task = asyncio.create_task(self._announce_when_heard(restored))
            self._announcing.add(task)
            task.add_done_callback(self._announcing.discard)

    async def _write_share(self, held: dict[str, Any], news: set[tuple[str, ...]]) -> Restored:
        raw = await self._restore_script(
            keys=list(self._node_keys(self.node_id)), args=[self.prefix, orjson.dumps(held)]
        )
        diff = orjson.loads(raw)
        if self._diverged:
            diverged = list(self._diverged)
            for start in range(0, len(diverged), 1000):
                chunk = diverged[start : start + 1000]
                await self.redis.delete(*(self._k(app, "pos", channel) for app, channel in chunk))
                self._diverged.difference_update(chunk)
            log.warning("history epochs ended after an outage", extra=fields(node=self.node_id, channels=len(diverged)))
        # Announce only what changed while cut off: after Redis restarted empty, everything this
        # node held is "added" again, but the cluster had heard of it before. (cjson writes an
        # empty list as {}, hence the `or []`.)
        restored = Restored(
            members_added=[
                (a, c, u, orjson.loads(i)) for a, c, u, i in (diff["added"] or []) if ("m", a, c, u) in news
            ],
            members_removed=[(a, c, u) for a, c, u in (diff["removed"] or []) if ("m", a, c, u) in news],
            users_online=[(a, u) for a, u in (diff["online"] or []) if ("u", a, u) in news],
            users_offline=[(a, u) for a, u in (diff["offline"] or []) if ("u", a, u) in news],
        )
        # A member or user who left while cut off may already be missing from a Redis that
        # restarted empty; the departure is news if the cluster no longer has them.
        for kind, app, *rest in news:
            if kind == "m" and (app, *rest) not in self._held_members and (app, *rest) not in restored.members_removed:
                channel, user = rest
                if not await self.redis.hexists(self._k(app, "members", channel), user):
                    restored.members_removed.append((app, channel, user))
            elif kind == "u" and (app, *rest) not in self._held_users and (app, *rest) not in restored.users_offline:
                (user,) = rest
                if not await self.redis.hexists(self._k(app, "online"), user):
                    restored.users_offline.append((app, user))
        return restored

    async def _announce_when_heard(self, restored: Restored) -> None:
        """Pub/sub keeps nothing for absent listeners, and after an outage the other nodes come
        back on their own backoff: wait (bounded) until as many nodes listen on the bus as the
        cluster had before, then hand the news over for publishing."""
        deadline = asyncio.get_running_loop().time() + 2 * self.retry_max + self.node_ttl
        while asyncio.get_running_loop().time() < deadline:
            try:
                listeners = dict(await self.redis.pubsub_numsub(self._bus)).get(self._bus.encode(), 0)
            except (RedisError, OSError):
                listeners = 0
            if listeners >= self._cluster_size:
                break
            await asyncio.sleep(0.1)
        assert self._on_restored is not None
        log.info(
            "announcing what changed while cut off",
            extra=fields(node=self.node_id, added=len(restored.members_added), removed=len(restored.members_removed)),
        )
        self._on_restored(restored)

    async def _forget_self(self) -> None:
        await self._take_over(self.node_id)

    # --- bus --------------------------------------------------------------------------------

    async def publish(self, envelope: Envelope, keep: Keep | None = None, once: Once | None = None) -> bool:
        if not self._healthy:
            return self._publish_locally(envelope, keep, once)
        publish_id = self._new_id()
        if once is not None:
            claim, claim_ttl = self._k(envelope.app_id, "once", once.key), once.ttl
        else:
            claim, claim_ttl = self._k("pub", publish_id), self.claim_ttl
        try:
            applied = await self._send(envelope, keep, publish_id, claim, int(claim_ttl * 1000))
        except (RedisError, OSError) as exc:
            self._failed(exc)
            self._doubt(publish_id)
            return self._publish_locally(envelope, keep, once)
        if applied:
            return True
        skipped(envelope, "idempotency_key" if once is not None else "retry")
        # Without a key, the claim can only be this publish's own: its first attempt was applied.
        return once is None

    async def _send(self, envelope: Envelope, keep: Keep | None, publish_id: str, claim: str, claim_ms: int) -> bool:
        """One script: claim the publish (or its idempotency key), then publish (and keep)."""
        if keep is None:
            message = (
                "e",
                envelope.app_id,
                envelope.channel,
                envelope.frame,
                envelope.exclude,
                0,
                "",
                publish_id,
                envelope.received,
            )
            return bool(await self._publish(keys=[claim], args=[self._bus, orjson.dumps(message), claim_ms]))
        app_id, channel = envelope.app_id, envelope.channel
        serial = await self._publish_kept(
            keys=[claim, self._k(app_id, "pos", channel), self._k(app_id, "hist", channel)],
            args=[
                self._bus,
                app_id,
                channel,
                envelope.frame,
                envelope.exclude or "",
                keep.size,
                int(keep.ttl * 1000),
                int(max(POSITION_TTL, keep.ttl) * 1000),
                new_epoch(),
                publish_id,
                claim_ms,
                repr(envelope.received) if envelope.received else "",
            ],
        )
        return bool(serial)

    def _publish_locally(self, envelope: Envelope, keep: Keep | None, once: Once | None) -> bool:
        """Redis is away: this node's own sockets still get the event."""
        if once is not None and not self._local_claims.take(envelope.app_id, once):
            skipped(envelope, "idempotency_key")
            return False
        metrics.BUS_LOCAL_ONLY.inc()
        if keep is not None and len(self._diverged) < MAX_DIVERGED:
            self._diverged.add((envelope.app_id, envelope.channel))
            self._dirty = True
        assert self._on_event is not None
        self._on_event(envelope)
        return True

    def _doubt(self, publish_id: str) -> None:
        """The command for ``publish_id`` failed after it may have gone out: if Redis runs it after
        all, its copy on the bus must not reach this node's sockets a second time."""
        doubts = self._in_doubt
        if len(doubts) >= MAX_DOUBTS:
            del doubts[next(iter(doubts))]
        doubts[publish_id] = asyncio.get_running_loop().time()

    def _forget_doubts(self) -> None:
        if not self._in_doubt:
            return
        oldest = asyncio.get_running_loop().time() - DOUBT_TTL
        for publish_id, at in list(self._in_doubt.items()):
            if at < oldest:
                del self._in_doubt[publish_id]

    async def history(self, app_id: str, channel: str, *, after: int | None, limit: int, max_age: float) -> History:
        limit = max(limit, 0)

        async def read() -> History:
            epoch, serial, now, raw = await self._history(
                keys=[self._k(app_id, "pos", channel), self._k(app_id, "hist", channel)],
                args=["" if after is None else after, max(limit, 1), int(max_age * 1000)],
            )
            if not epoch:
                return History(None, 0)
            oldest = int(now) - int(max_age * 1000)
            entries: list[tuple[int, str]] = []
            for entry_id, values in raw:
                pairs = dict(zip(values[::2], values[1::2], strict=True))
                if int(pairs[b"t"]) > oldest:
                    entries.append((int(_text(entry_id).split("-", 1)[1]), _text(pairs[b"f"])))
            if after is None:
                entries.reverse()
            return History(_text(epoch), int(serial), entries[:limit])

        return await self._attempt(read, lambda: History(None, 0, available=False))

    async def control(self, message: Control) -> None:
        if self._healthy:
            publish_id = self._new_id()
            payload = orjson.dumps(("c", message.kind, message.app_id, message.data, publish_id))
            try:
                claim_ms = int(self.claim_ttl * 1000)
                await self._publish(keys=[self._k("pub", publish_id)], args=[self._bus, payload, claim_ms])
                return
            except (RedisError, OSError) as exc:
                self._failed(exc)
                self._doubt(publish_id)
        metrics.BUS_LOCAL_ONLY.inc()
        assert self._on_control is not None
        self._on_control(message)

    # --- presence ---------------------------------------------------------------------------

    def _presence_keys(self, app_id: str, channel: str) -> list[str]:
        return [
            self._k(app_id, "members", channel),
            self._k(app_id, "infos", channel),
            self._node_keys(self.node_id)[0],
        ]

    async def join(self, app_id: str, channel: str, user_id: str, user_info: Any, limit: int) -> int:
        key = (app_id, channel, user_id)
        info = orjson.dumps(user_info).decode()
        held = key in self._held_members

        async def in_redis() -> int:
            args: list[str | int] = [user_id, info, limit, SEP.join(key), int(held)]
            result = int(await self._join(keys=self._presence_keys(app_id, channel), args=args))
            if result != FULL:
                self._held_members[key] = info
            return result

        def locally() -> int:
            # Judged by what this node holds; the mirror is written back later.
            self._changed_locally(("m", *key))
            self._held_members[key] = info
            return HELD if held else FIRST

        return await self._attempt(in_redis, locally)

    async def leave(self, app_id: str, channel: str, user_id: str) -> bool:
        key = (app_id, channel, user_id)
        held = self._held_members.pop(key, None) is not None

        async def in_redis() -> bool:
            args: list[str | int] = [user_id, SEP.join(key), int(held)]
            return int(await self._leave(keys=self._presence_keys(app_id, channel), args=args)) == 1

        def locally() -> bool:
            self._changed_locally(("m", *key))
            return held

        return await self._attempt(in_redis, locally)

    async def members(self, app_id: str, channel: str) -> dict[str, Any]:
        async def in_redis() -> dict[str, Any]:
            raw = await self.redis.hgetall(self._k(app_id, "infos", channel))
            return {_text(user): orjson.loads(info) for user, info in raw.items()}

        def locally() -> dict[str, Any]:
            return {
                user: orjson.loads(info)
                for (app, chan, user), info in self._held_members.items()
                if (app, chan) == (app_id, channel)
            }

        return await self._attempt(in_redis, locally)

    # --- users ------------------------------------------------------------------------------

    async def _user_delta(self, app_id: str, user_id: str, delta: int, held: bool) -> int:
        users_key = self._node_keys(self.node_id)[1]
        args: list[str | int] = [user_id, SEP.join((app_id, user_id)), delta, int(held)]
        return int(await self._online(keys=[self._k(app_id, "online"), users_key], args=args))

    async def user_online(self, app_id: str, user_id: str) -> bool:
        key = (app_id, user_id)
        held = key in self._held_users
        self._held_users.add(key)

        async def in_redis() -> bool:
            return await self._user_delta(app_id, user_id, 1, held) == 1

        def locally() -> bool:
            self._changed_locally(("u", *key))
            return not held

        return await self._attempt(in_redis, locally)

    async def user_offline(self, app_id: str, user_id: str) -> bool:
        key = (app_id, user_id)
        held = key in self._held_users
        self._held_users.discard(key)

        async def in_redis() -> bool:
            return await self._user_delta(app_id, user_id, -1, held) == 0

        def locally() -> bool:
            self._changed_locally(("u", *key))
            return held

        return await self._attempt(in_redis, locally)

    async def online(self, app_id: str, user_ids: tuple[str, ...]) -> set[str]:
        if not user_ids:
            return set()

        async def in_redis() -> set[str]:
            counts = await self.redis.hmget(self._k(app_id, "online"), list(user_ids))
            return {user for user, n in zip(user_ids, counts, strict=True) if n is not None and int(n) > 0}

        def locally() -> set[str]:
            return {user for app, user in self._held_users if app == app_id and user in user_ids}

        return await self._attempt(in_redis, locally)

    # --- counts -----------------------------------------------------------------------------

    async def add_subscriptions(self, app_id: str, channel: str, delta: int) -> int:
        key = (app_id, channel)
        mine = max(self._held_counts.get(key, 0) + delta, 0)
        if mine > 0:
            self._held_counts[key] = mine
        else:
            self._held_counts.pop(key, None)

        async def in_redis() -> int:
            # This node's share as an absolute value: a repeated command counts nothing twice.
            keys = [self._k(app_id, "counts"), self._node_keys(self.node_id)[2]]
            return int(await self._count(keys=keys, args=[channel, SEP.join(key), mine]))

        def locally() -> int:
            self._changed_locally()
            return mine

        return await self._attempt(in_redis, locally)

    async def subscription_count(self, app_id: str, channel: str) -> int:
        async def in_redis() -> int:
            value = await self.redis.hget(self._k(app_id, "counts"), channel)
            return int(value) if value is not None else 0

        return await self._attempt(in_redis, lambda: self._held_counts.get((app_id, channel), 0))

    async def channels(self, app_id: str, prefix: str = "") -> dict[str, int]:
        async def in_redis() -> dict[str, int]:
            raw = await self.redis.hgetall(self._k(app_id, "counts"))
            counted = ((_text(name), int(count)) for name, count in raw.items())
            return {name: count for name, count in counted if count > 0 and name.startswith(prefix)}

        def locally() -> dict[str, int]:
            return {c: n for (a, c), n in self._held_counts.items() if a == app_id and c.startswith(prefix)}

        return await self._attempt(in_redis, locally)

    # --- cache ------------------------------------------------------------------------------

    async def remember(
        self, app_id: str, channel: str, data: str, frame: str, ttl: float, once: Once | None = None
    ) -> None:
        cache, value, ttl_ms = self._k(app_id, "cache", channel), orjson.dumps((data, frame)), int(ttl * 1000)

        async def in_redis() -> None:
            if once is None:
                await self.redis.set(cache, value, px=ttl_ms)
            else:
                await self._remember_unless_claimed(
                    keys=[cache, self._k(app_id, "once", once.key)], args=[value, ttl_ms]
                )

        await self._attempt(in_redis, lambda: None)  # while Redis is away, cache writes are dropped

    async def cached(self, app_id: str, channel: str) -> tuple[str, str, float] | None:
        key = self._k(app_id, "cache", channel)

        async def in_redis() -> tuple[str, str, float] | None:
            async with self.redis.pipeline(transaction=False) as pipe:
                pipe.get(key)
                pipe.pttl(key)
                value, left = await pipe.execute()
            if value is None or left is None or left <= 0:
                return None
            data, frame = orjson.loads(value)
            return data, frame, left / 1000

        return await self._attempt(in_redis, lambda: None)

    # --- liveness ---------------------------------------------------------------------------

    async def heartbeat(self) -> Reaped:
        """Beat; then take over any node that has not beaten for ``node_ttl``."""
        reaped = Reaped()
        self._forget_doubts()
        if not self._healthy:
            return reaped  # the health check writes back and serves again once Redis answers

        async def beat() -> None:
            if self._dirty:
                await self._restore()  # changes kept locally while the last write-back ran
            token = self._new_id()
            keys = [self._k("nodes"), self._k("node", self.node_id, "beat")]
            missing, *dead = await self._beat(keys=keys, args=[self.node_id, int(self.node_ttl * 1000), token])
            self._cluster_size = max(1, int(await self.redis.zcard(self._k("nodes"))) - len(dead))
            if missing and self._beaten:
                # Others took this node for dead (a long pause) or Redis lost its data: write back,
                # and drop the reaper's claim so that the node can be reaped again if it dies.
                log.warning("node was missing from the cluster; restoring its share", extra=fields(node=self.node_id))
                if await self.redis.delete(self._k("reaping", self.node_id)):
                    # A reaper announced this node's members as gone: whatever the write-back brings
                    # back to the cluster is news again. (After Redis merely restarted empty, nobody
                    # announced anything, and nothing is repeated.)
                    self._unannounced |= {("m", *key) for key in self._held_members}
                    self._unannounced |= {("u", *key) for key in self._held_users}
                await self._restore()
            self._beaten = True
            for raw in dead:
                node_id = _text(raw)
                if node_id != self.node_id and await self._claim_reaping(node_id):
                    lost = await self._take_over(node_id)
                    reaped.add(lost)
                    log.warning(
                        "took over a dead node's presence and counts",
                        extra=fields(node=self.node_id, dead=node_id, members=len(lost.members_removed)),
                    )

        await self._attempt(beat, lambda: None)
        return reaped

    async def _claim_reaping(self, node_id: str) -> bool:
        """One node reaps each dead node: whoever sets the claim first (or set it, when the answer
        to its first attempt was lost and the command repeated)."""
        key = self._k("reaping", node_id)
        if await self.redis.set(key, self.node_id, nx=True, px=60_000):
            return True
        owner = await self.redis.get(key)
        return owner is not None and _text(owner) == self.node_id

    async def _take_over(self, node_id: str) -> Reaped:
        """Remove everything ``node_id`` held, and report what the cluster lost by it."""
        reaped = Reaped()
        presence_key, users_key, counts_key = self._node_keys(node_id)
        for raw in await self.redis.smembers(presence_key):
            entry = _text(raw)
            app, channel, user = entry.split(SEP)
            keys = [self._k(app, "members", channel), self._k(app, "infos", channel), presence_key]
            if int(await self._leave(keys=keys, args=[user, entry, 1])) == 1:
                reaped.members_removed.append((app, channel, user))
        for raw in await self.redis.smembers(users_key):
            entry = _text(raw)
            app, user = entry.split(SEP)
            if int(await self._online(keys=[self._k(app, "online"), users_key], args=[user, entry, -1, 1])) == 0:
                reaped.users_offline.append((app, user))
        for raw_key in await self.redis.hkeys(counts_key):
            key = _text(raw_key)
            app, channel = key.split(SEP)
            if int(await self._count(keys=[self._k(app, "counts"), counts_key], args=[channel, key, 0])) == 0:
                reaped.channels_vacated.append((app, channel))
        await self.redis.delete(presence_key, users_key, counts_key, self._k("node", node_id, "beat"))
        await self.redis.zrem(self._k("nodes"), node_id)
        return reaped
