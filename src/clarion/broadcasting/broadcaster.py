"""The broadcaster: turns events into messages and sends them now, through the queue, or after
the surrounding database transaction commits."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Sequence
from typing import Any

import orjson

from . import encryption
from .channels import Channel
from .delivery import BroadcastQueue, SyncQueue
from .drivers import Driver, PusherDriver, driver_from_url
from .errors import BroadcastError, ConfigError
from .events import BroadcastEvent, PendingBroadcast
from .inprocess import InProcessQueue
from .messages import Message

log = logging.getLogger("clarion.broadcasting")

# A deferrer takes a callback and returns True when it will run it after the current
# transaction commits (and never on rollback); False when no transaction is open.
Deferrer = Callable[[Callable[[], None]], bool]


class Broadcaster:
    """``Broadcaster("pusher://KEY:SECRET@127.0.0.1:6001/APP_ID", master_key_base64=...)``.

    ``queue``: where ``queued`` events go: an :class:`~clarion.broadcasting.InProcessQueue`
    (tasks of this process; given this broadcaster's driver when it has none) or a
    :class:`~clarion.broadcasting.integrations.queue.RedisQueue` (a worker sends them); without
    one they are delivered at once by the synchronous queue.
    """

    def __init__(
        self,
        driver: Driver | str,
        *,
        queue: BroadcastQueue | None = None,
        master_key_base64: str | None = None,
        app_key: str | None = None,
        app_secret: str | None = None,
    ) -> None:
        self.driver: Driver = driver_from_url(driver) if isinstance(driver, str) else driver
        if isinstance(queue, InProcessQueue) and queue.driver is None:
            queue.driver = self.driver
        self.queue: BroadcastQueue = queue or SyncQueue(self.driver)
        self.master_key = encryption.parse_master_key(master_key_base64) if master_key_base64 else None
        pusher = self.driver if isinstance(self.driver, PusherDriver) else None
        self.app_key = app_key or (pusher.settings.key if pusher else None)
        self.app_secret = app_secret or (pusher.settings.secret if pusher else None)
        self.deferrers: list[Deferrer] = []
        self._tasks: set[asyncio.Task[None]] = set()

    # -- building messages ------------------------------------------------------------------------

    def on(self, *channels: Channel) -> PendingBroadcast:
        return PendingBroadcast(self, channels)

    def messages(self, event: BroadcastEvent) -> list[Message]:
        """The event as wire messages; [] when ``broadcast_when`` says no. Raises before anything
        is sent when the event cannot be encoded or names no channel."""
        if not event.broadcast_when():
            return []
        channels = [str(channel) for channel in event.broadcast_on()]
        if not channels:
            raise BroadcastError(f"{type(event).__name__}.broadcast_on() named no channel")
        name = event.broadcast_as()
        if not name or len(name) > 200:
            raise BroadcastError(f"{type(event).__name__}: an event name has 1 to 200 characters")
        try:
            data = orjson.dumps(dict(event.broadcast_with())).decode()
        except TypeError as exc:
            raise BroadcastError(f"{type(event).__name__}.broadcast_with() is not JSON: {exc}") from exc
        socket_id = event.except_socket
        plain = [c for c in channels if not encryption_needed(c)]
        out = [Message(tuple(plain), name, data, socket_id)] if plain else []
        for channel in channels:
            if encryption_needed(channel):
                # Pusher: one channel per encrypted event, since each channel has its own key.
                if self.master_key is None:
                    raise ConfigError(f"{channel} is encrypted: give the broadcaster an encryption master key")
                out.append(Message((channel,), name, encryption.encrypt(channel, data, self.master_key), socket_id))
        return out

    # -- sending ---------------------------------------------------------------------------------

    def broadcast(self, event: BroadcastEvent, *, queued: bool | None = None, session: Any = None) -> None:
        """Send (or queue) the event; inside a transaction, once it commits. Sync face."""
        messages = self.messages(event)
        if not messages:
            return
        use_queue = event.queued if queued is None else queued
        if event.after_commit and self._defer(lambda: self._deliver_after_commit(messages, use_queue), session):
            return
        self.deliver(messages, queued=use_queue)

    async def abroadcast(self, event: BroadcastEvent, *, queued: bool | None = None, session: Any = None) -> None:
        """The async face of :meth:`broadcast`."""
        messages = self.messages(event)
        if not messages:
            return
        use_queue = event.queued if queued is None else queued
        if event.after_commit and self._defer(lambda: self._deliver_after_commit(messages, use_queue), session):
            return
        await self.adeliver(messages, queued=use_queue)

    def deliver(self, messages: Sequence[Message], *, queued: bool) -> None:
        if queued:
            self.queue.enqueue(messages)
        else:
            self.driver.publish(messages)

    async def adeliver(self, messages: Sequence[Message], *, queued: bool) -> None:
        if queued:
            await self.queue.aenqueue(messages)
        else:
            await self.driver.apublish(messages)

    def _defer(self, callback: Callable[[], None], session: Any) -> bool:
        if session is not None:
            from .integrations.sqlalchemy import defer_until_commit

            return defer_until_commit(session, callback)
        return any(deferrer(callback) for deferrer in self.deferrers)

    def _deliver_after_commit(self, messages: list[Message], queued: bool) -> None:
        """Run by the transaction's commit hook: on an event loop, as a task; otherwise inline.
        Errors cannot reach the caller any more, so they are logged and counted."""
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            loop = None
        if loop is None:
            try:
                self.deliver(messages, queued=queued)
            except BroadcastError:
                log.exception("broadcast after commit failed: %s", ",".join(m.name for m in messages))
            return
        task = loop.create_task(self._adeliver_logged(messages, queued))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _adeliver_logged(self, messages: list[Message], queued: bool) -> None:
        try:
            await self.adeliver(messages, queued=queued)
        except BroadcastError:
            log.exception("broadcast after commit failed: %s", ",".join(m.name for m in messages))

    async def drain(self) -> None:
        """Wait for deliveries started by commit hooks on this event loop (for shutdown and tests)."""
        while self._tasks:
            await asyncio.gather(*list(self._tasks), return_exceptions=True)

    # -- users ------------------------------------------------------------------------------------

    def terminate_connections(self, user_id: str | int) -> None:
        """Close every socket of a signed-in user (log them out everywhere)."""
        self._pusher().terminate_connections(str(user_id))

    async def aterminate_connections(self, user_id: str | int) -> None:
        await self._pusher().aterminate_connections(str(user_id))

    def _pusher(self) -> PusherDriver:
        if not isinstance(self.driver, PusherDriver):
            raise ConfigError(f"the {self.driver.name} driver has no socket server to ask")
        return self.driver

    def close(self) -> None:
        self.driver.close()

    async def aclose(self, timeout: float = 5.0) -> None:
        """Wait for after-commit deliveries, give an in-process queue ``timeout`` seconds to send
        what it holds, then close the driver's connections."""
        await self.drain()
        if isinstance(self.queue, InProcessQueue):
            await self.queue.aclose(timeout)
        await self.driver.aclose()


def encryption_needed(channel: str) -> bool:
    return channel.startswith("private-encrypted-")
