"""In-process twins of the scaling contracts: one node, nothing to connect to."""

from __future__ import annotations

from .bus import Deliver, Envelope


class MemoryBus:
    """Delivers synchronously to this process: the publisher's call returns after local fan-out."""

    def __init__(self) -> None:
        self._deliver: Deliver | None = None

    async def start(self, deliver: Deliver) -> None:
        self._deliver = deliver

    async def publish(self, envelope: Envelope) -> None:
        if self._deliver is not None:
            self._deliver(envelope)

    async def close(self) -> None:
        self._deliver = None

    @property
    def healthy(self) -> bool:
        return self._deliver is not None
