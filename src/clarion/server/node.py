"""The node: its apps and their hubs, the scaling backend and the webhooks; its lifecycle, the
bus flush (the hot path), and the dispatch of what a socket's protocol session decided.

The work itself lives with its parts, each holding its own state: ``joins.Joins`` (subscribe and
unsubscribe), ``catch_up.CatchUps`` (resume and rewind), ``users.Users`` (sign-in, watchlists,
terminate) and ``counts.Counts`` (subscription counts). What they share is ``shared.Shared``.

Local state (which socket is on which channel) lives in the hubs; what the cluster shares
(presence, counts, online users, cache) lives in the backend. Every event, this node's included,
comes back through the backend's bus before it is written to sockets, so all nodes see one order.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import secrets
import time
from collections.abc import Coroutine
from typing import Any, assert_never

from ..observability import metrics
from ..observability.logs import fields
from ..protocol import messages
from ..protocol import webhooks as hooks
from ..protocol.app import App
from ..protocol.channels import kind_of
from ..protocol.session import Action, CatchUp, Close, Join, Leave, Publish, Send, SignIn
from ..scaling.contracts import Backend, Control, Envelope, Keep, Once, Reaped, Restored
from . import fanout, limits, refusals, taps
from .catch_up import CatchUps
from .config import Settings
from .counts import Counts
from .frames import text_frame
from .hub import MEMBER_EVENT, AppHub, Listed, Socket
from .joins import Joins
from .shared import Clock, Shared, loop_time
from .users import Users
from .webhooks import Webhooks

log = logging.getLogger("clarion.server")


class Node:
    def __init__(self, settings: Settings, backend: Backend, webhooks: Webhooks, clock: Clock = loop_time) -> None:
        self.settings = settings
        self.backend = backend
        self.webhooks = webhooks
        apps = settings.apps
        self.apps_by_key: dict[str, App] = {app.key: app for app in apps}
        self.apps_by_id: dict[str, App] = {app.id: app for app in apps}
        fan = fanout.choose(settings.fanout)
        self.hubs: dict[str, AppHub] = {app.id: AppHub(app, fan) for app in apps}
        self.shared = Shared(self.hubs, backend, webhooks, clock)
        self.counts = Counts(self.shared)
        self.catch_ups = CatchUps(self.shared)
        self.joins = Joins(self.shared, self.counts, self.catch_ups)
        self.users = Users(self.shared)
        self.admission = limits.admission(settings)
        self.api_limits = limits.ApiLimits()
        # socket_id = "<node>.<sequence>": unique per node, random across nodes.
        self._node_part = str(secrets.randbelow(9 * 10**8) + 10**8)
        self._sequence = itertools.count(secrets.randbelow(10**6))
        self._pending: list[Envelope] = []  # bus events of this loop turn, written together

    def new_socket_id(self) -> str:
        return f"{self._node_part}.{next(self._sequence)}"

    @property
    def ready(self) -> bool:
        return self.backend.healthy

    async def start(self) -> None:
        await self.backend.start(self.on_event, self.on_control, self.on_restored)
        await self.webhooks.start()

    async def close(self) -> None:
        await self.backend.close()
        await self.webhooks.close()

    def spawn(self, work: Coroutine[Any, Any, None]) -> None:
        """Run ``work`` in the background, holding a reference and logging any failure."""
        self.shared.spawn(work)

    # --- bus side ---------------------------------------------------------------------------

    def on_event(self, envelope: Envelope) -> None:
        """An event from the bus. Events that arrive in the same loop turn are written together:
        at rest that is one event and no delay; under load a socket gets several frames in one
        write (one syscall) instead of one write each."""
        pending = self._pending
        pending.append(envelope)
        if len(pending) == 1:
            asyncio.get_running_loop().call_soon(self._flush)

    async def settle(self) -> None:
        """Let the local fan-out of what was just published run before the caller goes on.

        The HTTP API answers after this: an answer written first wakes the publisher, which then
        competes with the subscribers for the CPU while they read (measured: at 1 subscriber the
        median latency 0.93 -> 0.66 ms). Yielding once, rather than flushing here, keeps the events
        of requests handled in the same loop turn in one write: the flush was scheduled first.
        Through Redis nothing is pending here yet: the event comes back from Redis on its own.
        """
        if self._pending:
            await asyncio.sleep(0)

    def _flush(self) -> None:
        pending, self._pending = self._pending, []
        count = len(pending)
        start = 0
        while start < count:
            first = pending[start]
            end = start + 1
            if first.exclude is None:
                # Coalesce a run of events for the same channel; order across channels is kept.
                while (
                    end < count
                    and pending[end].channel == first.channel
                    and pending[end].app_id == first.app_id
                    and pending[end].exclude is None
                ):
                    end += 1
            self._write_run(pending[start:end])
            start = end

    def _write_run(self, run: list[Envelope]) -> None:
        first = run[0]
        hub = self.hubs.get(first.app_id)
        if hub is None:
            return
        if hub.cache_miss_reported:
            # Something was published on the channel: a later miss is news again.
            hub.cache_miss_reported.discard(first.channel)
        if hub.overhearing and first.channel in hub.overhearing:
            hub.heard(first.channel, [envelope.frame for envelope in run])
        channel = hub.channels.get(first.channel) if first.channel.startswith("presence-") else None
        if channel is not None and channel.listed is not None and any(MEMBER_EVENT in e.frame for e in run):
            sent = self._write_members(hub, channel.listed, run)
        elif len(run) == 1:
            sent = hub.broadcast(first.channel, text_frame(first.frame), first.exclude, first.serial, first.epoch)
        else:
            sent = hub.broadcast_run(first.channel, [(text_frame(e.frame), e.serial, e.epoch) for e in run])
        if sent:
            hub.metrics.deliveries.inc(sent)
            # Per event, never per socket: how long from the API's receipt to these writes.
            now = time.time()
            latency = hub.metrics.latency
            for envelope in run:
                if envelope.received:
                    latency.observe(max(0.0, now - envelope.received))

    @staticmethod
    def _write_members(hub: AppHub, listed: Listed, run: list[Envelope]) -> int:
        """A presence channel's frames one by one, member events told only to the sockets that
        do not list the member already (hub.Listed)."""
        sent = 0
        for envelope in run:
            frame = text_frame(envelope.frame)
            excluded = listed.member_event(envelope.frame) if MEMBER_EVENT in envelope.frame else set()
            if excluded is None:
                continue  # every socket here knows the member
            if excluded:
                if envelope.exclude is not None:
                    excluded.add(envelope.exclude)
                sent += hub.broadcast_except(envelope.channel, frame, excluded)
            else:
                sent += hub.broadcast(envelope.channel, frame, envelope.exclude, envelope.serial, envelope.epoch)
        return sent

    def on_control(self, message: Control) -> None:
        hub = self.hubs.get(message.app_id)
        if hub is None:
            return
        user_id = message.data.get("user_id")
        if not isinstance(user_id, str):
            return
        if message.kind == "terminate":
            self.users.terminate_here(hub, user_id)
        elif message.kind in ("online", "offline"):
            self.users.tell_watchers(hub, user_id, message.kind)

    def on_restored(self, restored: Restored) -> None:
        """After an outage: tell every node what this one's members and users did meanwhile."""
        self.spawn(self._announce_restored(restored))

    async def _announce_restored(self, restored: Restored) -> None:
        for app_id, channel, user_id, info in restored.members_added:
            if app_id not in self.hubs:
                continue
            frame = messages.encode("pusher_internal:member_added", {"user_id": user_id, "user_info": info}, channel)
            await self.backend.publish(Envelope(app_id, channel, frame))
            self.shared.webhook(app_id, hooks.member_added(channel, user_id))
        await self._announce(Reaped(members_removed=restored.members_removed))
        for app_id, user_id in restored.users_online:
            await self.backend.control(Control("online", app_id, {"user_id": user_id}))
        for app_id, user_id in restored.users_offline:
            await self.backend.control(Control("offline", app_id, {"user_id": user_id}))

    async def publish(
        self,
        app: App,
        channel: str,
        frame: str,
        exclude: str | None,
        source: str,
        data: str | None = None,
        once: Once | None = None,
        received: float = 0.0,
    ) -> None:
        hub = self.hubs.get(app.id)
        if hub is not None:
            hub.metrics.publish(source)
            if hub.taps:
                taps.published(hub.taps, app.debug_payloads, channel, frame, source, exclude)
        keep = None
        if data is not None:
            # Server events only: Pusher never caches client events, and they are not history.
            if kind_of(channel).cache:
                await self.backend.remember(app.id, channel, data, frame, app.cache_ttl, once)
            rule = app.history_for(channel)
            if rule is not None:
                keep = Keep(rule.size, rule.ttl)
        await self.backend.publish(Envelope(app.id, channel, frame, exclude, received=received), keep, once)

    async def terminate_user(self, app: App, user_id: str) -> None:
        """Close every socket signed in as ``user_id``, on every node."""
        await self.users.terminate(app, user_id)

    # --- connection side --------------------------------------------------------------------

    def answer(self, conn: Socket, action: Send) -> None:
        """Send a frame the session decided on, counting and logging errors and refusals."""
        if action.error_code is not None:
            refusals.protocol_error(conn, action.error_code, action.auth)
        elif action.refused is not None:
            refusals.subscription_refused(conn, action.frame, action.rate_limited)
        conn.send(action.frame)

    async def carry_out(self, conn: Socket, actions: list[Action]) -> None:
        """Do what the protocol session decided for ``conn``. Every kind of action has its case:
        mypy proves it (``assert_never``), so a new one cannot be dropped here unnoticed."""
        hub = self.hubs[conn.session.app.id]
        for action in actions:
            match action:
                case Send():
                    self.answer(conn, action)
                case Join():
                    await self.joins.join(hub, conn, action)
                case Leave():
                    await self.joins.leave(hub, conn, action)
                case Publish():
                    await self._relay(hub, conn, action)
                case SignIn():
                    await self.users.sign_in(hub, conn, action)
                case CatchUp():
                    await self.catch_ups.run(hub, conn, action, fresh=False)
                case Close():
                    log.info(
                        "closing connection",
                        extra=fields(
                            app_id=hub.app.id, socket_id=conn.socket_id, code=action.code, reason=action.reason
                        ),
                    )
                    conn.close(action.code, action.reason)
                case _:
                    assert_never(action)

    async def _relay(self, hub: AppHub, conn: Socket, action: Publish) -> None:
        """A client event, to the channel's other subscribers (and its webhook)."""
        hub.metrics.client_events.inc()
        frame = messages.channel_event(action.event, action.channel, action.data, action.user_id)
        await self.publish(hub.app, action.channel, frame, conn.socket_id, "client")
        self.shared.webhook(
            hub.app.id, hooks.client_event(action.channel, action.event, action.data, conn.socket_id, action.user_id)
        )

    async def drop(self, conn: Socket) -> None:
        """The socket is gone: leave every channel it was on, and sign its user out."""
        hub = self.hubs[conn.session.app.id]
        hub.connections.pop(conn.socket_id, None)
        if hub.taps:
            taps.emit(hub.taps, "disconnected", socket_id=conn.socket_id, reason=getattr(conn, "reason", None))
        for channel, member in conn.session.gone():
            await self.joins.leave(hub, conn, Leave(channel, member))
        await self.users.sign_out(hub, conn)

    # --- housekeeping -----------------------------------------------------------------------

    async def tick(self) -> None:
        """Once a second: due webhooks and throttled counts; gauges read rather than kept."""
        now = self.shared.clock()
        self.webhooks.tick(now)
        for hub in self.hubs.values():
            if hub.listing:
                hub.expire_listed(now)
        metrics.WEBHOOK_QUEUE_DEPTH.set(self.webhooks.depth())
        if metrics.MULTIPROCESS:
            # A scrape on another worker reads this worker's figures from its file.
            metrics.refresh_process()
        await self.counts.flush()

    async def heartbeat(self) -> None:
        """Beat, and announce what dead nodes' departure took away."""
        reaped = await self.backend.heartbeat()
        if reaped.members_removed or reaped.users_offline or reaped.channels_vacated:
            metrics.NODES_REAPED.inc()
            await self._announce(reaped)

    async def _announce(self, reaped: Reaped) -> None:
        for app_id, channel, user_id in reaped.members_removed:
            if app_id not in self.hubs:
                continue
            frame = messages.encode("pusher_internal:member_removed", {"user_id": user_id}, channel)
            await self.backend.publish(Envelope(app_id, channel, frame))
            self.shared.webhook(app_id, hooks.member_removed(channel, user_id))
        for app_id, user_id in reaped.users_offline:
            await self.backend.control(Control("offline", app_id, {"user_id": user_id}))
        for app_id, channel in reaped.channels_vacated:
            if app_id in self.hubs:
                self.shared.webhook(app_id, hooks.channel_vacated(channel))
