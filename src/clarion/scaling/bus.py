"""The Bus contract: every published event reaches every node's local subscribers."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol


@dataclass(frozen=True, slots=True)
class Envelope:
    """One encoded Pusher frame for one channel of one app; ``exclude`` is a socket_id to skip."""

    app_id: str
    channel: str
    frame: str
    exclude: str | None = None


Deliver = Callable[[Envelope], None]


class Bus(Protocol):
    async def start(self, deliver: Deliver) -> None: ...

    async def publish(self, envelope: Envelope) -> None: ...

    async def close(self) -> None: ...

    @property
    def healthy(self) -> bool: ...
