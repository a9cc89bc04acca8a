"""A driver whose answers a test decides, for the queues' retry and dead-letter logic (the real
server's side is covered against ``clarion serve`` in tests/sdk)."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

from clarion.broadcasting import BroadcastRefused, BroadcastUnavailable, Message


class ScriptedDriver:
    """A driver whose answers the test decides: ``down`` channels are unavailable, ``refuse``
    names are refused; every call is recorded with its key."""

    name = "scripted"

    def __init__(self) -> None:
        self.down: set[str] = set()
        self.refuse: set[str] = set()
        self.calls: list[tuple[list[str], str | None, bool]] = []  # (message ids, key, accepted)
        self.delivered: list[Message] = []
        self.gate: asyncio.Event | None = None

    def publish(self, messages: Sequence[Message], key: str | None = None) -> None:
        ids = [m.id for m in messages]
        if any(c in self.down for m in messages for c in m.channels):
            self.calls.append((ids, key, False))
            raise BroadcastUnavailable("connection refused")
        self.calls.append((ids, key, True))
        self.delivered.extend(messages)

    async def apublish(self, messages: Sequence[Message], key: str | None = None) -> None:
        if self.gate is not None:
            await self.gate.wait()
        ids = [m.id for m in messages]
        if any(c in self.down for m in messages for c in m.channels):
            self.calls.append((ids, key, False))
            raise BroadcastUnavailable("connection refused")
        if any(m.name in self.refuse for m in messages):
            self.calls.append((ids, key, False))
            raise BroadcastRefused(413, "event too large")
        self.calls.append((ids, key, True))
        self.delivered.extend(messages)

    def close(self) -> None:
        pass

    async def aclose(self) -> None:
        pass
