"""The Redis twin: pub/sub carries events and control messages; hashes hold cluster-wide
presence, online users and subscription counts, each with this node's share recorded beside it so
that a dead node's share can be taken away exactly; strings with a TTL hold cache channels; a
hash (epoch, serial) and a stream per channel hold history.

Every multi-key change is one Lua script, so a crash between two writes cannot leave counts
half-done. All keys of a cluster start with its prefix (``CLARION_SCALING_PREFIX``).

While Redis is unreachable the node keeps serving its own sockets: ``publish`` delivers locally,
state changes are kept in a local mirror, and on reconnect the mirror is written back (a Redis that
restarted empty is rebuilt; one that kept its data is reconciled, not double-counted).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import Any

import orjson
from redis import asyncio as aioredis
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import RedisError

from ..observability import metrics
from ..observability.logs import fields
from ..tasks import cancel_and_wait
from .contracts import (
    FULL,
    POSITION_TTL,
    Control,
    Envelope,
    History,
    Keep,
    OnControl,
    OnEvent,
    OnRestored,
    Reaped,
    Restored,
)
from .memory import new_epoch

log = logging.getLogger("clarion.scaling")

SEP = "\x1f"  # joins app, channel and user ids inside one Redis member (never in a valid name)

_JOIN = """
-- KEYS: members (user -> nodes holding), infos (user -> info), node set; ARGV: user, info, limit, entry
if redis.call('SISMEMBER', KEYS[3], ARGV[4]) == 1 then
  redis.call('HSET', KEYS[2], ARGV[1], ARGV[2])
  return 0
end
if redis.call('HEXISTS', KEYS[1], ARGV[1]) == 0 then
  local limit = tonumber(ARGV[3])
  if limit > 0 and redis.call('HLEN', KEYS[1]) >= limit then return -1 end
end
redis.call('SADD', KEYS[3], ARGV[4])
redis.call('HSET', KEYS[2], ARGV[1], ARGV[2])
return redis.call('HINCRBY', KEYS[1], ARGV[1], 1)
"""

_PUBLISH_KEPT = """
-- KEYS: position hash (e = epoch, s = serial), history stream.
-- ARGV: bus, app, channel, frame, exclude, size, ttl ms, position ttl ms, epoch if new.
-- The next serial, the stored entry and the bus message happen together, so every node sees
-- events in serial order and history never misses one that was delivered.
local epoch = redis.call('HGET', KEYS[1], 'e')
if not epoch then
  epoch = ARGV[9]
  redis.call('DEL', KEYS[2])  -- entries of a forgotten epoch would clash with the new serials
  redis.call('HSET', KEYS[1], 'e', epoch, 's', 0)
end
local serial = redis.call('HINCRBY', KEYS[1], 's', 1)
redis.call('PEXPIRE', KEYS[1], ARGV[8])
local t = redis.call('TIME')
local now = t[1] * 1000 + math.floor(t[2] / 1000)
local frame = string.sub(ARGV[4], 1, -2) .. ',"epoch":"' .. epoch .. '","serial":' .. serial .. '}'
redis.call('XADD', KEYS[2], 'MAXLEN', '~', ARGV[6], '0-' .. serial, 'f', frame, 't', now)
redis.call('PEXPIRE', KEYS[2], ARGV[7])
redis.call('PUBLISH', ARGV[1], cjson.encode({'e', ARGV[2], ARGV[3], frame, ARGV[5], serial, epoch}))
return serial
"""

_HISTORY = """
-- KEYS: position hash, history stream. ARGV: after ('' for the newest), limit, max age ms.
-- Returns {epoch or false, serial, now ms, entries}.
local pos = redis.call('HMGET', KEYS[1], 'e', 's')
if not pos[1] then return {false, 0, 0, {}} end
local t = redis.call('TIME')
local now = t[1] * 1000 + math.floor(t[2] / 1000)
local entries
if ARGV[1] == '' then
  entries = redis.call('XREVRANGE', KEYS[2], '+', '-', 'COUNT', ARGV[2])
else
  entries = redis.call('XRANGE', KEYS[2], '0-' .. (tonumber(ARGV[1]) + 1), '+', 'COUNT', ARGV[2])
end
return {pos[1], tonumber(pos[2]), now, entries}
"""

_LEAVE = """
-- KEYS: members, infos, node set; ARGV: user, entry. Returns 1 when the user left cluster-wide.
if redis.call('SREM', KEYS[3], ARGV[2]) == 0 then return -1 end
local n = redis.call('HINCRBY', KEYS[1], ARGV[1], -1)
if n <= 0 then
  redis.call('HDEL', KEYS[1], ARGV[1])
  redis.call('HDEL', KEYS[2], ARGV[1])
  return 1
end
return 0
"""

_ONLINE = """
-- KEYS: online (user -> nodes), node set; ARGV: user, entry, delta. Returns the cluster count.
local member = redis.call('SISMEMBER', KEYS[2], ARGV[2])
if tonumber(ARGV[3]) > 0 then
  if member == 1 then return -1 end
  redis.call('SADD', KEYS[2], ARGV[2])
else
  if member == 0 then return -1 end
  redis.call('SREM', KEYS[2], ARGV[2])
end
local n = redis.call('HINCRBY', KEYS[1], ARGV[1], ARGV[3])
if n <= 0 then redis.call('HDEL', KEYS[1], ARGV[1]) return 0 end
return n
"""

_COUNT = """
-- KEYS: counts (channel -> total), node counts (app\\x1fchannel -> mine); ARGV: channel, entry, delta
-- This node's share never goes below zero, and only what it held comes off the total.
local before = tonumber(redis.call('HGET', KEYS[2], ARGV[2]) or '0')
local delta = tonumber(ARGV[3])
if before + delta < 0 then delta = -before end
if before + delta > 0 then
  redis.call('HSET', KEYS[2], ARGV[2], before + delta)
else
  redis.call('HDEL', KEYS[2], ARGV[2])
end
local total = tonumber(redis.call('HGET', KEYS[1], ARGV[1]) or '0')
if delta ~= 0 then total = redis.call('HINCRBY', KEYS[1], ARGV[1], delta) end
if total <= 0 then redis.call('HDEL', KEYS[1], ARGV[1]) return 0 end
return total
"""

_RESTORE = """
-- Make Redis hold exactly this node's share. KEYS: node presence set, node users set, node counts;
-- ARGV: prefix, JSON {members: [[app, channel, user, info]], users: [[app, user]], counts: [[app, channel, n]]}.
local prefix, held = ARGV[1], cjson.decode(ARGV[2])
local SEP = '\\31'  -- Lua's decimal escape: the unit separator, as SEP in Python
local function k(app, what, name)
  if name then return prefix .. ':' .. app .. ':' .. what .. ':' .. name end
  return prefix .. ':' .. app .. ':' .. what
end
local function split(entry)
  local parts = {}
  for part in string.gmatch(entry, '([^' .. SEP .. ']+)') do table.insert(parts, part) end
  return parts
end
-- What the write-back changed for everyone: {added, removed, online, offline}, as the
-- announcements the other nodes missed while this one was cut off.
local diff = {added = {}, removed = {}, online = {}, offline = {}}
-- presence
local want = {}
for _, m in ipairs(held.members) do want[m[1] .. SEP .. m[2] .. SEP .. m[3]] = m end
for _, entry in ipairs(redis.call('SMEMBERS', KEYS[1])) do
  if not want[entry] then
    local p = split(entry)
    redis.call('SREM', KEYS[1], entry)
    if redis.call('HINCRBY', k(p[1], 'members', p[2]), p[3], -1) <= 0 then
      redis.call('HDEL', k(p[1], 'members', p[2]), p[3])
      redis.call('HDEL', k(p[1], 'infos', p[2]), p[3])
      table.insert(diff.removed, p)
    end
  end
end
for entry, m in pairs(want) do
  redis.call('HSET', k(m[1], 'infos', m[2]), m[3], m[4])
  if redis.call('SADD', KEYS[1], entry) == 1 then
    if redis.call('HINCRBY', k(m[1], 'members', m[2]), m[3], 1) == 1 then table.insert(diff.added, m) end
  end
end
-- online users
local wantu = {}
for _, u in ipairs(held.users) do wantu[u[1] .. SEP .. u[2]] = u end
for _, entry in ipairs(redis.call('SMEMBERS', KEYS[2])) do
  if not wantu[entry] then
    local p = split(entry)
    redis.call('SREM', KEYS[2], entry)
    if redis.call('HINCRBY', k(p[1], 'online'), p[2], -1) <= 0 then
      redis.call('HDEL', k(p[1], 'online'), p[2])
      table.insert(diff.offline, p)
    end
  end
end
for entry, u in pairs(wantu) do
  if redis.call('SADD', KEYS[2], entry) == 1 then
    if redis.call('HINCRBY', k(u[1], 'online'), u[2], 1) == 1 then table.insert(diff.online, u) end
  end
end
-- subscription counts
local wantc = {}
for _, c in ipairs(held.counts) do wantc[c[1] .. SEP .. c[2]] = c end
local stored = redis.call('HGETALL', KEYS[3])
for i = 1, #stored, 2 do
  if not wantc[stored[i]] then wantc[stored[i]] = {split(stored[i])[1], split(stored[i])[2], 0} end
end
for entry, c in pairs(wantc) do
  local delta = c[3] - tonumber(redis.call('HGET', KEYS[3], entry) or '0')
  if delta ~= 0 then
    if c[3] > 0 then redis.call('HSET', KEYS[3], entry, c[3]) else redis.call('HDEL', KEYS[3], entry) end
    if redis.call('HINCRBY', k(c[1], 'counts'), c[2], delta) <= 0 then redis.call('HDEL', k(c[1], 'counts'), c[2]) end
  end
end
return cjson.encode(diff)
"""

_BEAT = """
-- KEYS: nodes (zset node -> last beat ms); ARGV: node, ttl ms.
-- Returns {1 if this node was missing (new, reaped, or Redis restarted), dead node ids...}.
local t = redis.call('TIME')
local now = t[1] * 1000 + math.floor(t[2] / 1000)
local added = redis.call('ZADD', KEYS[1], now, ARGV[1])
local dead = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', now - tonumber(ARGV[2]))
table.insert(dead, 1, added)
return dead
"""


def _text(raw: bytes | str) -> str:
    return raw.decode() if isinstance(raw, bytes) else raw


class RedisBackend:
    def __init__(
        self,
        url: str,
        prefix: str,
        node_id: str,
        node_ttl: float = 15.0,
        retry_max: float = 10.0,
    ) -> None:
        self.node_id = node_id
        self.prefix = prefix
        self.node_ttl = node_ttl
        self.retry_max = retry_max
        options: dict[str, Any] = {
            "socket_connect_timeout": 2,
            "socket_timeout": 5,
            # A pooled connection that died with a restarted Redis is replaced and the command tried
            # once more, instead of failing the first command after every restart.
            "retry": Retry(NoBackoff(), 1),
            "retry_on_error": [RedisConnectionError],
        }
        # Reads and PUBLISH use a pool. Every change to shared state goes through one connection, so
        # Redis applies this node's changes in the order they were made: a write-back after an
        # outage can never be overtaken by (and double-count) a change made just before it.
        self.redis = aioredis.Redis.from_url(url, **options)
        self.state = aioredis.Redis.from_url(url, single_connection_client=True, **options)
        self._bus = f"{prefix}:bus"
        self._healthy = False
        self._closing = False
        self._reader: asyncio.Task[None] | None = None
        self._on_event: OnEvent | None = None
        self._on_control: OnControl | None = None
        self._on_restored: OnRestored | None = None
        # Members and users that changed while cut off: their announcements reached this node only.
        self._unannounced: set[tuple[str, ...]] = set()
        self._cluster_size = 1  # live nodes at the last heartbeat
        self._announcing: asyncio.Task[None] | None = None
        self._join = self.state.register_script(_JOIN)
        self._leave = self.state.register_script(_LEAVE)
        self._online = self.state.register_script(_ONLINE)
        self._count = self.state.register_script(_COUNT)
        self._restore_script = self.state.register_script(_RESTORE)
        self._beat = self.redis.register_script(_BEAT)
        self._publish_kept = self.redis.register_script(_PUBLISH_KEPT)
        self._history = self.redis.register_script(_HISTORY)
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

    # --- lifecycle --------------------------------------------------------------------------

    @property
    def healthy(self) -> bool:
        return self._healthy

    async def start(
        self, on_event: OnEvent, on_control: OnControl, on_restored: OnRestored | None = None, wait: float = 5.0
    ) -> None:
        """Start the bus reader and wait (up to ``wait`` s) for the first connection. Without Redis
        the node still starts, serving its own sockets, with ``/ready`` at 503."""
        self._on_event = on_event
        self._on_control = on_control
        self._on_restored = on_restored
        self._reader = asyncio.create_task(self._read_forever())
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(wait):
                await self._connected.wait()

    async def close(self) -> None:
        self._closing = True
        if self._reader is not None:
            await cancel_and_wait([self._reader])
        # A clean stop hands its share back at once instead of waiting to be reaped.
        with contextlib.suppress(RedisError, OSError, TimeoutError):
            async with asyncio.timeout(3):
                await self._forget_self()
        await self.redis.aclose()
        await self.state.aclose()

    async def _read_forever(self) -> None:
        """Subscribe, then dispatch; on any failure, back off, reconnect and write state back."""
        backoff = 0.2
        while not self._closing:
            pubsub = self.redis.pubsub(ignore_subscribe_messages=True)
            try:
                await pubsub.subscribe(self._bus)
                # Idle pooled connections opened before a drop are dead (they are not retried):
                # let the next commands open fresh ones rather than fail once each.
                await self.redis.connection_pool.disconnect(inuse_connections=False)
                await self._restore()
                self._subscribed = True
                self._set_healthy(True)
                self._connected.set()
                backoff = 0.2
                while True:
                    message = await pubsub.get_message(timeout=None)
                    if message is not None:
                        self._dispatch(message["data"])
            except asyncio.CancelledError:
                raise
            except (RedisError, OSError) as exc:
                self._set_healthy(False, str(exc))
            finally:
                self._subscribed = False
                with contextlib.suppress(Exception):
                    await pubsub.aclose()  # type: ignore[no-untyped-call]
            await asyncio.sleep(backoff)
            backoff = min(backoff * 2, self.retry_max)

    def _set_healthy(self, healthy: bool, error: str = "") -> None:
        if healthy == self._healthy:
            return
        self._healthy = healthy
        metrics.SCALING_UP.set(1 if healthy else 0)
        if healthy:
            log.info("redis connected", extra=fields(node=self.node_id))
        else:
            metrics.SCALING_ERRORS.inc()
            log.error(
                "redis unreachable; serving local sockets only", extra=fields(node=self.node_id, error=error[:200])
            )

    def _dispatch(self, raw: bytes) -> None:
        try:
            message = orjson.loads(raw)
            if message[0] == "e":
                assert self._on_event is not None
                if len(message) > 5:  # kept in history: the publish script added the position
                    self._on_event(Envelope(message[1], message[2], message[3], message[4] or None, *message[5:7]))
                else:
                    self._on_event(Envelope(message[1], message[2], message[3], message[4]))
            elif message[0] == "c":
                assert self._on_control is not None
                self._on_control(Control(message[1], message[2], message[3]))
        except Exception:
            metrics.SCALING_ERRORS.inc()
            log.exception("bad bus message dropped", extra=fields(node=self.node_id))

    async def _restore(self) -> None:
        """Write this node's share back in one script: add what Redis lacks, take away what it has
        extra (a Redis that restarted empty is rebuilt; one that kept its data is reconciled)."""
        held = {
            "members": [[app, channel, user, info] for (app, channel, user), info in self._held_members.items()],
            "users": [[app, user] for app, user in self._held_users],
            "counts": [[app, channel, n] for (app, channel), n in self._held_counts.items()],
        }
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
        news, self._unannounced = self._unannounced, set()
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
        if restored and self._on_restored is not None:
            self._announcing = asyncio.create_task(self._announce_when_heard(restored))

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

    async def publish(self, envelope: Envelope, keep: Keep | None = None) -> None:
        if keep is not None:
            await self._publish_with_history(envelope, keep)
            return
        message = ("e", envelope.app_id, envelope.channel, envelope.frame, envelope.exclude)
        if not await self._broadcast(orjson.dumps(message)):
            assert self._on_event is not None
            self._on_event(envelope)

    async def _publish_with_history(self, envelope: Envelope, keep: Keep) -> None:
        app_id, channel = envelope.app_id, envelope.channel
        if self._healthy:
            try:
                await self._publish_kept(
                    keys=[self._k(app_id, "pos", channel), self._k(app_id, "hist", channel)],
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
                    ],
                )
                return
            except (RedisError, OSError) as exc:
                self._set_healthy(False, str(exc))
        metrics.BUS_LOCAL_ONLY.inc()
        if len(self._diverged) < 100_000:
            self._diverged.add((app_id, channel))
        assert self._on_event is not None
        self._on_event(envelope)

    async def history(self, app_id: str, channel: str, *, after: int | None, limit: int, max_age: float) -> History:
        if limit <= 0:
            limit = 0
        try:
            epoch, serial, now, raw = await self._history(
                keys=[self._k(app_id, "pos", channel), self._k(app_id, "hist", channel)],
                args=["" if after is None else after, max(limit, 1), int(max_age * 1000)],
            )
        except (RedisError, OSError) as exc:
            self._set_healthy(False, str(exc))
            return History(None, 0, available=False)
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

    async def control(self, message: Control) -> None:
        if not await self._broadcast(orjson.dumps(("c", message.kind, message.app_id, message.data))):
            assert self._on_control is not None
            self._on_control(message)

    async def _broadcast(self, payload: bytes) -> bool:
        """PUBLISH on the bus; False when Redis is away and the caller must deliver locally."""
        if self._healthy:
            try:
                await self.redis.publish(self._bus, payload)
                return True
            except (RedisError, OSError) as exc:
                self._set_healthy(False, str(exc))
        # Redis is away: this node's own sockets still get it.
        metrics.BUS_LOCAL_ONLY.inc()
        return False

    # --- presence ---------------------------------------------------------------------------

    def _presence_keys(self, app_id: str, channel: str) -> list[str]:
        return [
            self._k(app_id, "members", channel),
            self._k(app_id, "infos", channel),
            self._node_keys(self.node_id)[0],
        ]

    async def join(self, app_id: str, channel: str, user_id: str, user_info: Any, limit: int) -> int:
        self._note_change(("m", app_id, channel, user_id))
        info = orjson.dumps(user_info).decode()
        entry = SEP.join((app_id, channel, user_id))
        try:
            result = int(
                await self._join(keys=self._presence_keys(app_id, channel), args=[user_id, info, limit, entry])
            )
        except (RedisError, OSError) as exc:
            self._set_healthy(False, str(exc))
            self._unannounced.add(("m", app_id, channel, user_id))
            # Outage: judge by what this node holds; the mirror is written back later.
            held = (app_id, channel, user_id) in self._held_members
            self._held_members[(app_id, channel, user_id)] = info
            return 0 if held else 1
        if result != FULL:
            self._held_members[(app_id, channel, user_id)] = info
        return result

    async def leave(self, app_id: str, channel: str, user_id: str) -> bool:
        self._note_change(("m", app_id, channel, user_id))
        held = self._held_members.pop((app_id, channel, user_id), None) is not None
        entry = SEP.join((app_id, channel, user_id))
        try:
            return int(await self._leave(keys=self._presence_keys(app_id, channel), args=[user_id, entry])) == 1
        except (RedisError, OSError) as exc:
            self._set_healthy(False, str(exc))
            self._unannounced.add(("m", app_id, channel, user_id))
            return held

    def _note_change(self, key: tuple[str, ...]) -> None:
        if not self._healthy:
            self._unannounced.add(key)

    async def members(self, app_id: str, channel: str) -> dict[str, Any]:
        try:
            raw = await self.redis.hgetall(self._k(app_id, "infos", channel))
        except (RedisError, OSError) as exc:
            self._set_healthy(False, str(exc))
            return {
                user: orjson.loads(info)
                for (app, chan, user), info in self._held_members.items()
                if (app, chan) == (app_id, channel)
            }
        return {_text(user): orjson.loads(info) for user, info in raw.items()}

    # --- users ------------------------------------------------------------------------------

    async def _user_delta(self, app_id: str, user_id: str, delta: int) -> int:
        users_key = self._node_keys(self.node_id)[1]
        entry = SEP.join((app_id, user_id))
        return int(await self._online(keys=[self._k(app_id, "online"), users_key], args=[user_id, entry, delta]))

    async def user_online(self, app_id: str, user_id: str) -> bool:
        self._note_change(("u", app_id, user_id))
        first_here = (app_id, user_id) not in self._held_users
        self._held_users.add((app_id, user_id))
        try:
            return await self._user_delta(app_id, user_id, 1) == 1
        except (RedisError, OSError) as exc:
            self._set_healthy(False, str(exc))
            self._unannounced.add(("u", app_id, user_id))
            return first_here

    async def user_offline(self, app_id: str, user_id: str) -> bool:
        self._note_change(("u", app_id, user_id))
        held = (app_id, user_id) in self._held_users
        self._held_users.discard((app_id, user_id))
        try:
            return await self._user_delta(app_id, user_id, -1) == 0
        except (RedisError, OSError) as exc:
            self._set_healthy(False, str(exc))
            self._unannounced.add(("u", app_id, user_id))
            return held

    async def online(self, app_id: str, user_ids: tuple[str, ...]) -> set[str]:
        if not user_ids:
            return set()
        try:
            counts = await self.redis.hmget(self._k(app_id, "online"), list(user_ids))
        except (RedisError, OSError) as exc:
            self._set_healthy(False, str(exc))
            return {user for app, user in self._held_users if app == app_id and user in user_ids}
        return {user for user, count in zip(user_ids, counts, strict=True) if count is not None and int(count) > 0}

    # --- stats ------------------------------------------------------------------------------

    async def add_subscriptions(self, app_id: str, channel: str, delta: int) -> int:
        key = (app_id, channel)
        mine = self._held_counts.get(key, 0) + delta
        if mine > 0:
            self._held_counts[key] = mine
        else:
            self._held_counts.pop(key, None)
        counts_key = self._node_keys(self.node_id)[2]
        try:
            return int(
                await self._count(keys=[self._k(app_id, "counts"), counts_key], args=[channel, SEP.join(key), delta])
            )
        except (RedisError, OSError) as exc:
            self._set_healthy(False, str(exc))
            return max(mine, 0)

    async def subscription_count(self, app_id: str, channel: str) -> int:
        try:
            value = await self.redis.hget(self._k(app_id, "counts"), channel)
        except (RedisError, OSError) as exc:
            self._set_healthy(False, str(exc))
            return self._held_counts.get((app_id, channel), 0)
        return int(value) if value is not None else 0

    async def channels(self, app_id: str, prefix: str = "") -> dict[str, int]:
        try:
            raw = await self.redis.hgetall(self._k(app_id, "counts"))
        except (RedisError, OSError) as exc:
            self._set_healthy(False, str(exc))
            return {c: n for (a, c), n in self._held_counts.items() if a == app_id and c.startswith(prefix)}
        counted = ((_text(name), int(count)) for name, count in raw.items())
        return {name: count for name, count in counted if count > 0 and name.startswith(prefix)}

    # --- cache ------------------------------------------------------------------------------

    async def remember(self, app_id: str, channel: str, data: str, frame: str, ttl: float) -> None:
        try:
            await self.redis.set(self._k(app_id, "cache", channel), orjson.dumps((data, frame)), px=int(ttl * 1000))
        except (RedisError, OSError) as exc:
            self._set_healthy(False, str(exc))

    async def cached(self, app_id: str, channel: str) -> tuple[str, str, float] | None:
        key = self._k(app_id, "cache", channel)
        try:
            async with self.redis.pipeline(transaction=False) as pipe:
                pipe.get(key)
                pipe.pttl(key)
                value, left = await pipe.execute()
        except (RedisError, OSError) as exc:
            self._set_healthy(False, str(exc))
            return None
        if value is None or left is None or left <= 0:
            return None
        data, frame = orjson.loads(value)
        return data, frame, left / 1000

    # --- liveness ---------------------------------------------------------------------------

    async def heartbeat(self) -> Reaped:
        """Beat; then take over any node that has not beaten for ``node_ttl``."""
        reaped = Reaped()
        try:
            missing, *dead = await self._beat(keys=[self._k("nodes")], args=[self.node_id, int(self.node_ttl * 1000)])
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
            if self._subscribed and not self._healthy:
                # A command failed while the bus stayed up: what changed meanwhile is only in the
                # local mirror. Write it back and serve again (only the reader set healthy before).
                await self._restore()
                self._set_healthy(True)
            self._beaten = True
            for raw in dead:
                node_id = _text(raw)
                if node_id == self.node_id:
                    continue
                # One node reaps each dead node: whoever sets the claim first.
                if await self.redis.set(self._k("reaping", node_id), self.node_id, nx=True, px=60_000):
                    lost = await self._take_over(node_id)
                    reaped.add(lost)
                    log.warning(
                        "took over a dead node's presence and counts",
                        extra=fields(node=self.node_id, dead=node_id, members=len(lost.members_removed)),
                    )
        except (RedisError, OSError) as exc:
            self._set_healthy(False, str(exc))
        return reaped

    async def _take_over(self, node_id: str) -> Reaped:
        """Remove everything ``node_id`` held, and report what the cluster lost by it."""
        reaped = Reaped()
        presence_key, users_key, counts_key = self._node_keys(node_id)
        for raw in await self.redis.smembers(presence_key):
            entry = _text(raw)
            app, channel, user = entry.split(SEP)
            keys = [self._k(app, "members", channel), self._k(app, "infos", channel), presence_key]
            if int(await self._leave(keys=keys, args=[user, entry])) == 1:
                reaped.members_removed.append((app, channel, user))
        for raw in await self.redis.smembers(users_key):
            entry = _text(raw)
            app, user = entry.split(SEP)
            if int(await self._online(keys=[self._k(app, "online"), users_key], args=[user, entry, -1])) == 0:
                reaped.users_offline.append((app, user))
        for raw_key, raw_count in (await self.redis.hgetall(counts_key)).items():
            key = _text(raw_key)
            app, channel = key.split(SEP)
            total = int(
                await self._count(keys=[self._k(app, "counts"), counts_key], args=[channel, key, -int(raw_count)])
            )
            if total == 0:
                reaped.channels_vacated.append((app, channel))
        await self.redis.delete(presence_key, users_key, counts_key)
        await self.redis.zrem(self._k("nodes"), node_id)
        return reaped
