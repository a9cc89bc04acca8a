"""Clusters of backend nodes for the contract suite: the in-memory twin (nodes sharing one
``MemoryCluster`` with a fake clock) and the Redis twin (``RedisBackend`` nodes sharing a unique
prefix on the shared Redis). Every node is started the way the server starts it, with callbacks
that record what the bus brings, and beats once, as the server's heartbeat loop does at once."""

from __future__ import annotations

import abc
import contextlib
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import pytest
from redis import asyncio as aioredis

from clarion.scaling.contracts import Backend, Control, Envelope, Reaped, Restored
from clarion.scaling.memory import MemoryCluster
from clarion.scaling.redis import RedisBackend
from fakeclock import FakeClock
from pusherclient import wait_for
from redisproc import SHARED_REDIS_URL

MEMORY_NODE_TTL = 15.0
REDIS_NODE_TTL = 1.0


@dataclass
class Received:
    events: list[Envelope] = field(default_factory=list)
    controls: list[Control] = field(default_factory=list)
    restored: list[Restored] = field(default_factory=list)


async def delete_prefix(url: str, prefix: str) -> int:
    client = aioredis.Redis.from_url(url)
    try:
        keys = [key async for key in client.scan_iter(match=f"{prefix}:*", count=1000)]
        if keys:
            await client.delete(*keys)
        return len(keys)
    finally:
        await client.aclose()


class Cluster(abc.ABC):
    """N nodes of one cluster, and the means to let (fake or real) time pass for them."""

    kind: str
    node_ttl: float

    def __init__(self) -> None:
        self.nodes: list[Backend] = []
        self.received: dict[str, Received] = {}

    @abc.abstractmethod
    def _build(self, node_id: str) -> Backend: ...

    @abc.abstractmethod
    def now(self) -> float: ...

    async def node(self, name: str | None = None) -> Any:
        """A started node that has beaten once. Typed Any: tests reach RedisBackend internals."""
        node_id = name or f"n{len(self.nodes)}-{uuid.uuid4().hex[:6]}"
        backend = self._build(node_id)
        got = self.received[node_id] = Received()
        await backend.start(got.events.append, got.controls.append, got.restored.append)
        await backend.heartbeat()
        self.nodes.append(backend)
        return backend

    @abc.abstractmethod
    async def after(self, seconds: float, predicate: Callable[[], Awaitable[bool]]) -> None:
        """Assert ``predicate`` holds once ``seconds`` have passed (fake time jumps; real time is
        polled for, with a margin)."""

    @abc.abstractmethod
    async def reap(self, survivors: list[Backend], limit: float | None = None) -> tuple[Reaped, float]:
        """Keep ``survivors`` beating as the server does (every node_ttl/3 or more often) until
        one of them reaps something; the merged result and the time that passed."""

    async def close(self) -> None:
        for node in self.nodes:
            await node.close()


class MemoryTwin(Cluster):
    kind = "memory"
    node_ttl = MEMORY_NODE_TTL

    def __init__(self) -> None:
        super().__init__()
        self.clock = FakeClock()
        self.cluster = MemoryCluster(node_ttl=self.node_ttl, clock=self.clock)

    def _build(self, node_id: str) -> Backend:
        return self.cluster.node(node_id)

    def now(self) -> float:
        return self.clock.now

    async def after(self, seconds: float, predicate: Callable[[], Awaitable[bool]]) -> None:
        self.clock.advance(seconds)
        assert await predicate()

    async def reap(self, survivors: list[Backend], limit: float | None = None) -> tuple[Reaped, float]:
        reaped = Reaped()
        started = self.now()
        step = self.node_ttl / 4
        while not reaped and self.now() - started < (limit or 3 * self.node_ttl):
            self.clock.advance(step)
            for node in survivors:
                reaped.add(await node.heartbeat())
        return reaped, self.now() - started


class RedisTwin(Cluster):
    kind = "redis"
    node_ttl = REDIS_NODE_TTL

    def __init__(self, url: str = SHARED_REDIS_URL) -> None:
        super().__init__()
        self.url = url
        self.prefix = f"contract-{uuid.uuid4().hex[:12]}"

    def _build(self, node_id: str) -> Backend:
        return RedisBackend(self.url, self.prefix, node_id, node_ttl=self.node_ttl)

    def now(self) -> float:
        return time.monotonic()

    async def after(self, seconds: float, predicate: Callable[[], Awaitable[bool]]) -> None:
        await wait_for(predicate, timeout=seconds + 3, interval=0.02)

    async def reap(self, survivors: list[Backend], limit: float | None = None) -> tuple[Reaped, float]:
        reaped = Reaped()
        started = self.now()

        async def beat() -> bool:
            for node in survivors:
                reaped.add(await node.heartbeat())
            return bool(reaped)

        with contextlib.suppress(AssertionError):  # nothing reaped in time: the caller's asserts judge
            await wait_for(beat, timeout=limit or 3 * self.node_ttl + 2, interval=self.node_ttl / 10)
        return reaped, self.now() - started

    async def close(self) -> None:
        await super().close()
        await delete_prefix(self.url, self.prefix)


@pytest.fixture(params=["memory", "redis"])
async def cluster(request: pytest.FixtureRequest) -> AsyncIterator[Cluster]:
    twin: Cluster = MemoryTwin() if request.param == "memory" else RedisTwin()
    try:
        yield twin
    finally:
        await twin.close()


@pytest.fixture
async def redis_cluster() -> AsyncIterator[RedisTwin]:
    twin = RedisTwin()
    try:
        yield twin
    finally:
        await twin.close()


async def delivered(cluster: Cluster, nodes: list[Backend], last: Envelope | Control) -> None:
    """Wait until every node has received ``last`` (sent after everything the test checks)."""

    def arrived() -> bool:
        for node in nodes:
            got = cluster.received[node.node_id]
            if last not in (got.events if isinstance(last, Envelope) else got.controls):
                return False
        return True

    await wait_for(arrived, timeout=10)
