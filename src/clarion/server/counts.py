"""Subscription counts: ``pusher_internal:subscription_count`` to a channel's subscribers and the
``subscription_count`` webhook, coalesced per loop turn and throttled on busy channels as Pusher
throttles them."""

from __future__ import annotations

import asyncio

from ..protocol import messages
from ..protocol import webhooks as hooks
from ..protocol.channels import Kind, kind_of
from ..scaling.contracts import Envelope
from .hub import AppHub
from .shared import Shared

# Pusher sends subscription counts for busy channels (over 100 subscribers) at most every 5 s.
COUNT_BUSY = 100
COUNT_INTERVAL = 5.0


class Counts:
    __slots__ = ("_lock", "_scheduled", "shared")

    def __init__(self, shared: Shared) -> None:
        self.shared = shared
        self._scheduled: asyncio.Handle | None = None
        # One flush at a time: a count read from Redis is published before a later one is read,
        # so subscribers never see a count go back to an older value.
        self._lock = asyncio.Lock()

    def changed(self, hub: AppHub, name: str) -> None:
        """A socket joined or left ``name``: its count is due now, or when the throttle allows."""
        app = hub.app
        kind = kind_of(name)
        if kind.is_presence or kind.kind is Kind.USER:
            return  # presence channels have member events instead; user channels are plumbing
        if not app.subscription_count_events and not self.shared.webhooks.wants(app.id, "subscription_count"):
            return
        channel = hub.channels.get(name)
        busy = channel is not None and len(channel.sockets) > COUNT_BUSY
        last = channel.count_sent_at if channel is not None else float("-inf")
        now = self.shared.clock()
        due = max(now, last + COUNT_INTERVAL) if busy else now
        hub.counts_due.setdefault(name, due)
        if due <= now and self._scheduled is None:
            # Joins and leaves in one loop turn coalesce into one count per channel.
            self._scheduled = asyncio.get_running_loop().call_soon(self._schedule)

    def _schedule(self) -> None:
        self._scheduled = None
        self.shared.spawn(self.flush())

    async def flush(self) -> None:
        """Send every count that is due (the node's tick calls this once a second)."""
        async with self._lock:
            await self._flush()

    async def _flush(self) -> None:
        shared = self.shared
        now = shared.clock()
        for hub in shared.hubs.values():
            for name, due in list(hub.counts_due.items()):
                if due > now:
                    continue
                del hub.counts_due[name]
                count = await shared.backend.subscription_count(hub.app.id, name)
                channel = hub.channels.get(name)
                if channel is not None:
                    channel.count_sent_at = now
                if hub.app.subscription_count_events:
                    payload = {"subscription_count": count}
                    frame = messages.encode("pusher_internal:subscription_count", payload, name)
                    await shared.backend.publish(Envelope(hub.app.id, name, frame))
                shared.webhook(hub.app.id, hooks.subscription_count(name, count))
