"""What the node's parts share: the apps' hubs, the scaling backend, the webhooks, the clock and
the background-task holder. Each part (joins, catch-up, users, counts) keeps its own state and
reaches the others only through what it is given."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Coroutine
from typing import Any

from ..protocol import webhooks as hooks
from ..scaling.contracts import Backend
from .hub import AppHub
from .webhooks import Webhooks

log = logging.getLogger("clarion.server")

Clock = Callable[[], float]


def loop_time() -> float:
    """The event loop's clock, which the connections' sessions read too."""
    return asyncio.get_running_loop().time()


class Shared:
    __slots__ = ("_background", "backend", "clock", "hubs", "webhooks")

    def __init__(self, hubs: dict[str, AppHub], backend: Backend, webhooks: Webhooks, clock: Clock) -> None:
        self.hubs = hubs
        self.backend = backend
        self.webhooks = webhooks
        self.clock = clock
        self._background: set[asyncio.Task[None]] = set()

    def webhook(self, app_id: str, event: hooks.Event) -> None:
        target = self.webhooks.for_app(app_id)
        if target is not None:
            target.emit(event, self.clock())

    def spawn(self, work: Coroutine[Any, Any, None]) -> None:
        """Run ``work`` in the background, holding a reference and logging any failure."""
        task = asyncio.get_running_loop().create_task(work)
        self._background.add(task)
        task.add_done_callback(self._finished)

    def _finished(self, task: asyncio.Task[None]) -> None:
        self._background.discard(task)
        if not task.cancelled() and task.exception() is not None:
            log.error("background work failed", exc_info=task.exception())
