"""The in-memory twin: one process, nothing to connect to. Several ``MemoryBackend`` nodes may
share one ``MemoryCluster`` (the contract suite does), which is how it mirrors the Redis twin."""

from __future__ import annotations

import secrets
import time
from collections import deque
from collections.abc import Callable
from typing import Any

from ..observability import metrics
from ..protocol.messages import with_position
from .claims import DEFAULT_LIMIT, Claims, skipped
from .contracts import (
    FULL,
    HELD,
    POSITION_TTL,
    Control,
    Envelope,
    History,
    Keep,
    Once,
    OnControl,
    OnEvent,
    OnRestored,
    Reaped,
)

DEFAULT_NODE_TTL = 15.0


def new_epoch() -> str:
    return secrets.token_hex(6)


class ChannelHistory:
    """One channel's position and its last events: a ring buffer of (serial, stored at, frame)."""

    __slots__ = ("entries", "epoch", "serial", "touched", "ttl")

    def __init__(self, size: int) -> None:
        self.epoch = new_epoch()
        self.serial = 0
        self.entries: deque[tuple[int, float, str]] = deque(maxlen=size)
        self.ttl = 0.0
        self.touched = 0.0


class MemoryCluster:
    """State shared by the nodes of one in-process cluster."""

    def __init__(
        self,
        node_ttl: float = DEFAULT_NODE_TTL,
        clock: Callable[[], float] = time.monotonic,
        claims_limit: int = DEFAULT_LIMIT,
    ) -> None:
        self.node_ttl = node_ttl
        self.clock = clock
        self.heartbeats: dict[str, float] = {}
        self.listeners: dict[str, tuple[OnEvent, OnControl]] = {}
        # (app, channel) → user → node → user_info
        self.presence: dict[tuple[str, str], dict[str, dict[str, Any]]] = {}
        self.users: dict[tuple[str, str], set[str]] = {}  # (app, user) → nodes
        self.stats: dict[tuple[str, str], dict[str, int]] = {}  # (app, channel) → node → count
        self.cache: dict[tuple[str, str], tuple[str, str, float]] = {}
        self.history: dict[tuple[str, str], ChannelHistory] = {}
        self.claims = Claims(claims_limit, clock)  # idempotency keys used, per app

    def node(self, node_id: str) -> MemoryBackend:
        return MemoryBackend(self, node_id)

    def forget(self, node_id: str) -> Reaped:
        """Take away everything ``node_id`` held; what the cluster lost is returned."""
        reaped = Reaped()
        for (app, channel), users in list(self.presence.items()):
            for user, nodes in list(users.items()):
                if node_id not in nodes:
                    continue
                del nodes[node_id]
                if not nodes:
                    del users[user]
                    reaped.members_removed.append((app, channel, user))
            if not users:
                del self.presence[(app, channel)]
        for (app, user), holders in list(self.users.items()):
            if node_id in holders:
                holders.discard(node_id)
                if not holders:
                    del self.users[(app, user)]
                    reaped.users_offline.append((app, user))
        for (app, channel), counts in list(self.stats.items()):
            if counts.pop(node_id, 0) and not any(counts.values()):
                del self.stats[(app, channel)]
                reaped.channels_vacated.append((app, channel))
        self.heartbeats.pop(node_id, None)
        self.listeners.pop(node_id, None)
        return reaped


class MemoryBackend:
    def __init__(self, cluster: MemoryCluster | None = None, node_id: str = "local") -> None:
        self.cluster = cluster if cluster is not None else MemoryCluster()
        self.node_id = node_id
        self._started = False

    @property
    def healthy(self) -> bool:
        return self._started

    async def start(self, on_event: OnEvent, on_control: OnControl, on_restored: OnRestored | None = None) -> None:
        self.cluster.listeners[self.node_id] = (on_event, on_control)
        self.cluster.heartbeats[self.node_id] = self.cluster.clock()
        self._started = True
        metrics.SCALING_UP.set(1)  # nothing to lose contact with

    async def close(self) -> None:
        self.cluster.listeners.pop(self.node_id, None)
        self._started = False

    # --- bus --------------------------------------------------------------------------------

    async def publish(self, envelope: Envelope, keep: Keep | None = None, once: Once | None = None) -> bool:
        if once is not None and not self.cluster.claims.take(envelope.app_id, once):
            skipped(envelope, "idempotency_key")
            return False
        if keep is not None:
            envelope = self._keep(envelope, keep)
        for on_event, _ in list(self.cluster.listeners.values()):
            on_event(envelope)
        return True

    def _keep(self, envelope: Envelope, keep: Keep) -> Envelope:
        key = (envelope.app_id, envelope.channel)
        history = self.cluster.history.get(key)
        if history is None:
            history = self.cluster.history[key] = ChannelHistory(keep.size)
        elif history.entries.maxlen != keep.size:
            history.entries = deque(history.entries, maxlen=keep.size)
        now = self.cluster.clock()
        history.serial += 1
        history.ttl = keep.ttl
        history.touched = now
        frame = with_position(envelope.frame, history.epoch, history.serial)
        history.entries.append((history.serial, now, frame))
        return Envelope(
            envelope.app_id, envelope.channel, frame, envelope.exclude, history.serial, history.epoch, envelope.received
        )

    async def history(self, app_id: str, channel: str, *, after: int | None, limit: int, max_age: float) -> History:
        history = self.cluster.history.get((app_id, channel))
        if history is None:
            return History(None, 0)
        oldest = self.cluster.clock() - max_age
        fresh = [(serial, frame) for serial, at, frame in history.entries if at > oldest]
        if after is None:
            entries = fresh[-limit:] if limit > 0 else []
        else:
            entries = [entry for entry in fresh if entry[0] > after][:limit]
        return History(history.epoch, history.serial, entries)

    async def control(self, message: Control) -> None:
        for _, on_control in list(self.cluster.listeners.values()):
            on_control(message)

    # --- presence ---------------------------------------------------------------------------

    async def join(self, app_id: str, channel: str, user_id: str, user_info: Any, limit: int) -> int:
        users = self.cluster.presence.setdefault((app_id, channel), {})
        nodes = users.get(user_id)
        if nodes is None:
            if limit > 0 and len(users) >= limit:
                if not users:
                    del self.cluster.presence[(app_id, channel)]
                return FULL
            nodes = users[user_id] = {}
        held = self.node_id in nodes
        nodes[self.node_id] = user_info
        return HELD if held else len(nodes)

    async def leave(self, app_id: str, channel: str, user_id: str) -> bool:
        users = self.cluster.presence.get((app_id, channel))
        if users is None or user_id not in users:
            return False
        nodes = users[user_id]
        if self.node_id not in nodes:
            return False
        del nodes[self.node_id]  # user_info may be None: test membership, not the popped value
        if nodes:
            return False
        del users[user_id]
        if not users:
            del self.cluster.presence[(app_id, channel)]
        return True

    async def members(self, app_id: str, channel: str) -> dict[str, Any]:
        users = self.cluster.presence.get((app_id, channel), {})
        return {user: next(reversed(nodes.values())) for user, nodes in users.items()}

    async def user_online(self, app_id: str, user_id: str) -> bool:
        nodes = self.cluster.users.setdefault((app_id, user_id), set())
        first = not nodes
        nodes.add(self.node_id)
        return first

    async def user_offline(self, app_id: str, user_id: str) -> bool:
        nodes = self.cluster.users.get((app_id, user_id))
        if nodes is None or self.node_id not in nodes:
            return False
        nodes.discard(self.node_id)
        if nodes:
            return False
        del self.cluster.users[(app_id, user_id)]
        return True

    async def online(self, app_id: str, user_ids: tuple[str, ...]) -> set[str]:
        return {user for user in user_ids if (app_id, user) in self.cluster.users}

    # --- stats ------------------------------------------------------------------------------

    async def add_subscriptions(self, app_id: str, channel: str, delta: int) -> int:
        counts = self.cluster.stats.setdefault((app_id, channel), {})
        mine = counts.get(self.node_id, 0) + delta
        if mine > 0:
            counts[self.node_id] = mine
        else:
            counts.pop(self.node_id, None)
        total = sum(counts.values())
        if total <= 0:
            del self.cluster.stats[(app_id, channel)]
            return 0
        return total

    async def subscription_count(self, app_id: str, channel: str) -> int:
        return sum(self.cluster.stats.get((app_id, channel), {}).values())

    async def channels(self, app_id: str, prefix: str = "") -> dict[str, int]:
        return {
            channel: sum(counts.values())
            for (app, channel), counts in self.cluster.stats.items()
            if app == app_id and channel.startswith(prefix)
        }

    # --- cache ------------------------------------------------------------------------------

    async def remember(
        self, app_id: str, channel: str, data: str, frame: str, ttl: float, once: Once | None = None
    ) -> None:
        if once is not None and self.cluster.claims.used(app_id, once):
            return
        self.cluster.cache[(app_id, channel)] = (data, frame, self.cluster.clock() + ttl)

    async def cached(self, app_id: str, channel: str) -> tuple[str, str, float] | None:
        entry = self.cluster.cache.get((app_id, channel))
        if entry is None:
            return None
        left = entry[2] - self.cluster.clock()
        if left <= 0:
            del self.cluster.cache[(app_id, channel)]
            return None
        return entry[0], entry[1], left

    # --- liveness ---------------------------------------------------------------------------

    async def heartbeat(self) -> Reaped:
        cluster = self.cluster
        now = cluster.clock()
        cluster.heartbeats[self.node_id] = now
        reaped = Reaped()
        for node_id, seen in list(cluster.heartbeats.items()):
            if node_id != self.node_id and now - seen > cluster.node_ttl:
                reaped.add(cluster.forget(node_id))
        # Expired cache entries and history go too, so memory stays bounded by live channels.
        for key in [key for key, entry in cluster.cache.items() if entry[2] <= now]:
            del cluster.cache[key]
        for key, history in list(cluster.history.items()):
            while history.entries and history.entries[0][1] <= now - history.ttl:
                history.entries.popleft()
            if now - history.touched > max(POSITION_TTL, history.ttl):
                del cluster.history[key]
        return reaped
