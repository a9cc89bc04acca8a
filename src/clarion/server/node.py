"""The node: apps, their local hubs, the scaling backend, webhooks, and what happens when a
socket joins, leaves, signs in or publishes.

Local state (which socket is on which channel) lives in the hubs; what the cluster shares
(presence, counts, online users, cache) lives in the backend. Every event, this node's included,
comes back through the backend's bus before it is written to sockets, so all nodes see one order.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import secrets
from collections.abc import Coroutine
from typing import Any

from ..observability import metrics
from ..observability.logs import fields
from ..protocol import messages
from ..protocol import webhooks as hooks
from ..protocol.app import App
from ..protocol.channels import Kind, kind_of
from ..protocol.errors import ErrorCode
from ..protocol.history import gap
from ..protocol.session import Action, CatchUp, Close, Join, Leave, Member, Publish, Send, SignIn
from ..scaling.contracts import FIRST, FULL, Backend, Control, Envelope, History, Keep, Reaped, Restored
from . import fanout
from .config import Settings
from .connection import Connection
from .frames import text_frame
from .hub import AppHub, CatchingUp
from .webhooks import Webhooks

log = logging.getLogger("clarion.server")

# Pusher sends subscription counts for busy channels (over 100 subscribers) at most every 5 s.
COUNT_BUSY = 100
COUNT_INTERVAL = 5.0


class Node:
    def __init__(self, settings: Settings, backend: Backend, webhooks: Webhooks) -> None:
        self.settings = settings
        self.backend = backend
        self.webhooks = webhooks
        apps = [config.to_app() for config in settings.apps]
        self.apps_by_key: dict[str, App] = {app.key: app for app in apps}
        self.apps_by_id: dict[str, App] = {app.id: app for app in apps}
        fan = fanout.choose(settings.fanout)
        self.hubs: dict[str, AppHub] = {app.id: AppHub(app, fan) for app in apps}
        # socket_id = "<node>.<sequence>": unique per node, random across nodes.
        self._node_part = str(secrets.randbelow(9 * 10**8) + 10**8)
        self._sequence = itertools.count(secrets.randbelow(10**6))
        self._counts_flush: asyncio.Handle | None = None
        self._background: set[asyncio.Task[None]] = set()
        self._pending: list[Envelope] = []  # bus events of this loop turn, written together
        self._watch_held: dict[str, list[bytes]] = {}  # socket_id → watchlist events held for it
        self._counts_lock = asyncio.Lock()

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

    @staticmethod
    def now() -> float:
        return asyncio.get_running_loop().time()

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
        if len(run) == 1:
            sent = hub.broadcast(first.channel, text_frame(first.frame), first.exclude, first.serial, first.epoch)
        else:
            sent = hub.broadcast_run(first.channel, [(text_frame(e.frame), e.serial, e.epoch) for e in run])
        if sent:
            metrics.DELIVERIES.inc(sent)

    def on_control(self, message: Control) -> None:
        hub = self.hubs.get(message.app_id)
        if hub is None:
            return
        user_id = message.data.get("user_id")
        if not isinstance(user_id, str):
            return
        if message.kind == "terminate":
            self._terminate_local(hub, user_id)
        elif message.kind in ("online", "offline"):
            self._tell_watchers(hub, user_id, message.kind)

    def on_restored(self, restored: Restored) -> None:
        """After an outage: tell every node what this one's members and users did meanwhile."""
        self.spawn(self._announce_restored(restored))

    def spawn(self, work: Coroutine[Any, Any, None]) -> None:
        """Run ``work`` in the background, holding a reference and logging any failure."""
        task = asyncio.get_running_loop().create_task(work)
        self._background.add(task)
        task.add_done_callback(self._finished)

    def _finished(self, task: asyncio.Task[None]) -> None:
        self._background.discard(task)
        if not task.cancelled() and task.exception() is not None:
            log.error("background work failed", exc_info=task.exception())

    async def _announce_restored(self, restored: Restored) -> None:
        for app_id, channel, user_id, info in restored.members_added:
            hub = self.hubs.get(app_id)
            if hub is None:
                continue
            frame = messages.encode("pusher_internal:member_added", {"user_id": user_id, "user_info": info}, channel)
            await self.backend.publish(Envelope(app_id, channel, frame))
            self._webhook(hub, hooks.member_added(channel, user_id))
        await self._announce(Reaped(members_removed=restored.members_removed))
        for app_id, user_id in restored.users_online:
            await self.backend.control(Control("online", app_id, {"user_id": user_id}))
        for app_id, user_id in restored.users_offline:
            await self.backend.control(Control("offline", app_id, {"user_id": user_id}))

    async def publish(
        self, app: App, channel: str, frame: str, exclude: str | None, source: str, data: str | None = None
    ) -> None:
        metrics.EVENTS_PUBLISHED.labels(source=source).inc()
        keep = None
        if data is not None:
            # Server events only: Pusher never caches client events, and they are not history.
            if kind_of(channel).cache:
                await self.backend.remember(app.id, channel, data, frame, app.cache_ttl)
            rule = app.history_for(channel)
            if rule is not None:
                keep = Keep(rule.size, rule.ttl)
        await self.backend.publish(Envelope(app.id, channel, frame, exclude), keep)

    # --- connection side --------------------------------------------------------------------

    def answer(self, conn: Connection, action: Send) -> None:
        """Send a frame the session decided on, counting and logging errors and refusals."""
        if action.error_code is not None:
            self._count_error(conn, action.error_code)
        elif action.refused is not None:
            self._log_refused(conn, action.frame)
        conn.send(action.frame)

    async def carry_out(self, conn: Connection, actions: list[Action]) -> None:
        """Do what the protocol session decided for ``conn``."""
        hub = self.hubs[conn.session.app.id]
        for action in actions:
            if isinstance(action, Send):
                self.answer(conn, action)
            elif isinstance(action, Join):
                await self._join(hub, conn, action)
            elif isinstance(action, Leave):
                await self._leave(hub, conn, action)
            elif isinstance(action, Publish):
                frame = messages.channel_event(action.event, action.channel, action.data, action.user_id)
                await self.publish(hub.app, action.channel, frame, conn.socket_id, "client")
                self._webhook(
                    hub,
                    hooks.client_event(action.channel, action.event, action.data, conn.socket_id, action.user_id),
                )
            elif isinstance(action, SignIn):
                await self._sign_in(hub, conn, action)
            elif isinstance(action, CatchUp):
                await self._catch_up(hub, conn, action, fresh=False)
            elif isinstance(action, Close):
                log.info(
                    "closing connection",
                    extra=fields(app_id=hub.app.id, socket_id=conn.socket_id, code=action.code, reason=action.reason),
                )
                conn.close(action.code, action.reason)

    async def _join(self, hub: AppHub, conn: Connection, action: Join) -> None:
        """Every shared-state round trip happens first; then, with no await in between, the socket
        is registered and answered, so nothing on the channel reaches it before
        ``subscription_succeeded`` (and the cached event, on cache channels)."""
        name, member, app = action.channel, action.member, hub.app
        channel = hub.channels.get(name)
        if channel is not None and conn.socket_id in channel.sockets:
            # A repeated subscribe: answer again, register nothing.
            presence = await self._presence_payload(hub, name, member)
            cached = await self.backend.cached(app.id, name) if kind_of(name).cache else None
            self._answer(hub, conn, name, presence, cached)
            return
        result = None
        if member is not None and not hub.has_member(name, member.user_id):
            result = await self.backend.join(app.id, name, member.user_id, member.user_info, app.max_presence_members)
            if result == FULL:
                conn.session.channels.pop(name, None)
                message = f"Presence channel is full ({app.max_presence_members} members)"
                frame = messages.subscription_error(name, "LimitReached", message, 403)
                self._log_refused(conn, frame)
                conn.send(frame)
                return
        total = await self.backend.add_subscriptions(app.id, name, 1)
        presence = await self._presence_payload(hub, name, member)
        cached = await self.backend.cached(app.id, name) if kind_of(name).cache else None
        if conn.socket_id not in hub.connections or name not in conn.session.channels:
            # Gone, or unsubscribed, while we waited: take back what was added for it.
            await self.backend.add_subscriptions(app.id, name, -1)
            if member is not None and result is not None and not hub.has_member(name, member.user_id):
                await self.backend.leave(app.id, name, member.user_id)
            log.info(
                "subscription withdrawn: the socket left while it was made",
                extra=fields(app_id=app.id, socket_id=conn.socket_id, channel=name),
            )
            return
        hub.join(conn, name, member)
        self._answer(hub, conn, name, presence, cached)
        catching = self._start_catch_up(hub, conn, name) if action.catch_up is not None else None
        if total == 1:
            self._webhook(hub, hooks.channel_occupied(name))
        if member is not None and result == FIRST:
            payload = {"user_id": member.user_id, "user_info": member.user_info}
            added = messages.encode("pusher_internal:member_added", payload, name)
            await self.backend.publish(Envelope(app.id, name, added, conn.socket_id))
            self._webhook(hub, hooks.member_added(name, member.user_id))
        self._count_changed(hub, name)
        if catching is not None and action.catch_up is not None:
            await self._catch_up(hub, conn, action.catch_up, fresh=True, catching=catching)

    async def _presence_payload(self, hub: AppHub, name: str, member: Member | None) -> dict[str, Any] | None:
        if member is None:
            return None
        members = await self.backend.members(hub.app.id, name)
        members.setdefault(member.user_id, member.user_info)  # ours, even if a write is in flight
        return {"ids": list(members), "hash": members, "count": len(members)}

    def _answer(
        self,
        hub: AppHub,
        conn: Connection,
        name: str,
        presence: dict[str, Any] | None,
        cached: tuple[str, str, float] | None,
    ) -> None:
        conn.send(messages.subscription_succeeded(name, presence))
        if not kind_of(name).cache:
            return
        if cached is not None:
            conn.send(cached[1])
            return
        conn.send(messages.encode("pusher:cache_miss", {}, name))
        # Pusher de-duplicates cache_miss webhooks: one per channel (per node) until it is cached.
        if name not in hub.cache_miss_reported:
            if len(hub.cache_miss_reported) > 10_000:
                hub.cache_miss_reported.clear()  # bounded; a repeat webhook beats unbounded memory
            hub.cache_miss_reported.add(name)
            self._webhook(hub, hooks.cache_miss(name))

    async def _leave(self, hub: AppHub, conn: Connection, action: Leave) -> None:
        name, member, app = action.channel, action.member, hub.app
        left = hub.leave(conn, name, member)
        if left is None:
            return
        if member is not None and left.member_removed and await self.backend.leave(app.id, name, member.user_id):
            removed = messages.encode("pusher_internal:member_removed", {"user_id": member.user_id}, name)
            await self.backend.publish(Envelope(app.id, name, removed))
            self._webhook(hub, hooks.member_removed(name, member.user_id))
        if await self.backend.add_subscriptions(app.id, name, -1) == 0:
            self._webhook(hub, hooks.channel_vacated(name))
        self._count_changed(hub, name)

    async def drop(self, conn: Connection) -> None:
        """The socket is gone: leave every channel it was on, and sign its user out."""
        session = conn.session
        hub = self.hubs[session.app.id]
        hub.connections.pop(conn.socket_id, None)
        channels = list(session.channels.items())
        session.channels.clear()
        for channel, member in channels:
            await self._leave(hub, conn, Leave(channel, member))
        user_id = session.user_id
        if (
            user_id is not None
            and hub.sign_out(conn, user_id, session.watchlist)
            and await self.backend.user_offline(hub.app.id, user_id)
        ):
            await self.backend.control(Control("offline", hub.app.id, {"user_id": user_id}))

    # --- history: resume and rewind ---------------------------------------------------------

    def _start_catch_up(self, hub: AppHub, conn: Connection, name: str) -> CatchingUp | None:
        """Hold the socket's live frames on ``name`` from now until its history is sent."""
        channel = hub.channels.get(name)
        if channel is None or conn.socket_id not in channel.sockets:
            return None
        earlier = channel.catching.get(conn.socket_id)
        if earlier is not None and earlier.held is not None:
            return None  # one history read at a time per socket and channel
        # An earlier catch-up that only waits to skip in-flight duplicates is replaced: this one
        # reads at least as far, and skips the same frames.
        catching = channel.catching[conn.socket_id] = CatchingUp()
        return catching

    async def _catch_up(
        self, hub: AppHub, conn: Connection, action: CatchUp, *, fresh: bool, catching: CatchingUp | None = None
    ) -> None:
        """Send history and its end marker, then the live frames held meanwhile, then go live: in
        serial order, each event once.

        ``fresh``: asked for in the subscribe itself, so nothing went out live before the hold.
        Otherwise the socket may have had live events since its subscribe; those are not sent again.
        """
        name = action.channel
        if catching is None:
            catching = self._start_catch_up(hub, conn, name)
            if catching is None:
                # One history read at a time per socket and channel (or the join did not complete).
                conn.send(messages.catch_up_refused(name, action.is_resume, "busy"))
                return
        channel = hub.channels[name]
        live = None if fresh else channel.live_range(conn.socket_id)
        if action.is_resume:
            history = await self.backend.history(
                hub.app.id, name, after=action.serial, limit=action.limit, max_age=action.max_age
            )
        else:
            max_age = action.seconds if action.seconds is not None else action.max_age
            limit = action.count if action.count is not None else action.limit
            history = await self.backend.history(hub.app.id, name, after=None, limit=limit, max_age=max_age)
        if hub.channels.get(name) is not channel or channel.catching.get(conn.socket_id) is not catching:
            return  # unsubscribed or gone meanwhile
        del channel.catching[conn.socket_id]
        reason = self._unrecoverable(action, history, catching)
        if reason is not None:
            # Nothing replayed: the client must refetch its state; live frames held meanwhile follow.
            if action.is_resume:
                metrics.RESUMES.labels(outcome=reason).inc()
            conn.send(messages.catch_up_refused(name, action.is_resume, reason, history.epoch, history.serial))
            self._release(conn, catching, None, 0)
            return
        sent = 0
        for serial, frame in history.entries:
            if live is not None and live[0] < serial <= live[1]:
                continue  # it reached this socket live after the subscribe
            conn.send(messages.as_replayed(frame))
            sent += 1
        upto = max(history.serial, live[1] if live is not None else 0)
        metrics.REPLAYED.inc(sent)
        if action.is_resume:
            metrics.RESUMES.labels(outcome="recovered").inc()
            conn.send(messages.resumed(name, True, history.epoch, upto))
        else:
            conn.send(messages.rewound(name, sent, history.epoch, upto))
        self._release(conn, catching, history.epoch, upto)
        if not catching.caught_up(channel.last):
            channel.catching[conn.socket_id] = catching  # skip live frames the replay already sent

    @staticmethod
    def _unrecoverable(action: CatchUp, history: History, catching: CatchingUp) -> str | None:
        """Why a resume cannot give back everything missed, or None when it can."""
        if not history.available:
            return "unavailable"
        if catching.overflowed:
            return "overflow"
        if not action.is_resume:
            return None
        assert action.serial is not None and action.epoch is not None
        entries = history.entries
        first = entries[0][0] if entries else None
        return gap(action.epoch, action.serial, history.epoch, history.serial, first, len(entries))

    @staticmethod
    def _release(conn: Connection, catching: CatchingUp, epoch: str | None, upto: int) -> None:
        """Write the live frames held during the read that the replay did not already send."""
        held, catching.held = catching.held or [], None
        catching.epoch, catching.upto = epoch or "", upto
        for frame, serial, frame_epoch in held:
            if serial and frame_epoch == catching.epoch and serial <= catching.upto:
                continue
            conn.write(frame)
            if serial and frame_epoch == catching.epoch:
                catching.upto = serial

    # --- users ------------------------------------------------------------------------------

    async def _sign_in(self, hub: AppHub, conn: Connection, action: SignIn) -> None:
        app = hub.app
        if action.replaces is not None:
            # Signing in again (same user): the new watchlist replaces the old one.
            hub.unwatch(conn, action.replaces)
        came_online_here = hub.sign_in(conn, action.user_id, action.watchlist)
        conn.send(messages.encode("pusher:signin_success", {"user_data": action.user_data}))
        log.info("signed in", extra=fields(app_id=app.id, socket_id=conn.socket_id, user_id=action.user_id))
        if action.watchlist:
            # The socket already watches (so no change is missed), but the snapshot must come
            # first: changes heard while it is read are held for this socket and follow it.
            held: list[bytes] = []
            self._watch_held[conn.socket_id] = held
            try:
                online = await self.backend.online(app.id, action.watchlist)
            finally:
                del self._watch_held[conn.socket_id]
            statuses = (
                ("online", [user for user in action.watchlist if user in online]),
                ("offline", [user for user in action.watchlist if user not in online]),
            )
            events = [{"name": name, "user_ids": ids} for name, ids in statuses if ids]
            conn.send(messages.encode("pusher_internal:watchlist_events", {"events": events}))
            for frame in held:
                conn.write(frame)
        if conn.socket_id not in hub.connections:
            # Gone while the watchlist was read: drop() has signed it out; marking the user online
            # now would leave them online in the cluster for good.
            log.info(
                "sign-in withdrawn: the socket left while it was made",
                extra=fields(app_id=app.id, socket_id=conn.socket_id),
            )
            return
        news = came_online_here and await self.backend.user_online(app.id, action.user_id)
        # Gone during that round trip: drop() announces the user offline, and "online" would trail it.
        if news and conn.socket_id in hub.connections:
            await self.backend.control(Control("online", app.id, {"user_id": action.user_id}))

    def _tell_watchers(self, hub: AppHub, user_id: str, status: str) -> None:
        watching = hub.watchers.get(user_id)
        if not watching:
            return
        frame = text_frame(
            messages.encode("pusher_internal:watchlist_events", {"events": [{"name": status, "user_ids": [user_id]}]})
        )
        held = self._watch_held
        for conn in watching.values():
            waiting = held.get(conn.socket_id) if held else None
            if waiting is not None:
                waiting.append(frame)
            else:
                conn.write(frame)

    async def terminate_user(self, app: App, user_id: str) -> None:
        """Close every socket signed in as ``user_id``, on every node."""
        await self.backend.control(Control("terminate", app.id, {"user_id": user_id}))

    def _terminate_local(self, hub: AppHub, user_id: str) -> None:
        sockets = list(hub.users.get(user_id, {}).values())
        for conn in sockets:
            # 4009: pusher-js will not reconnect as is, which is the point.
            conn.send(messages.error(int(ErrorCode.UNAUTHORIZED), "Connection terminated by the app"))
            conn.close(int(ErrorCode.UNAUTHORIZED), "Connection terminated by the app")
        if sockets:
            log.info("user terminated", extra=fields(app_id=hub.app.id, user_id=user_id, sockets=len(sockets)))

    # --- subscription counts ----------------------------------------------------------------

    def _count_changed(self, hub: AppHub, name: str) -> None:
        app = hub.app
        kind = kind_of(name)
        if kind.is_presence or kind.kind is Kind.USER:
            return  # presence channels have member events instead; user channels are plumbing
        if not app.subscription_count_events and not self.webhooks.wants(app.id, "subscription_count"):
            return
        channel = hub.channels.get(name)
        busy = channel is not None and len(channel.sockets) > COUNT_BUSY
        last = channel.count_sent_at if channel is not None else float("-inf")
        now = self.now()
        due = max(now, last + COUNT_INTERVAL) if busy else now
        hub.counts_due.setdefault(name, due)
        if due <= now and self._counts_flush is None:
            # Joins and leaves in one loop turn coalesce into one count per channel.
            self._counts_flush = asyncio.get_running_loop().call_soon(self._schedule_counts)

    def _schedule_counts(self) -> None:
        self._counts_flush = None
        self.spawn(self.flush_counts())

    async def flush_counts(self) -> None:
        # One flush at a time: a count read from Redis is published before a later one is read,
        # so subscribers never see a count go back to an older value.
        async with self._counts_lock:
            await self._flush_counts()

    async def _flush_counts(self) -> None:
        now = self.now()
        for hub in self.hubs.values():
            for name, due in list(hub.counts_due.items()):
                if due > now:
                    continue
                del hub.counts_due[name]
                count = await self.backend.subscription_count(hub.app.id, name)
                channel = hub.channels.get(name)
                if channel is not None:
                    channel.count_sent_at = now
                if hub.app.subscription_count_events:
                    payload = {"subscription_count": count}
                    frame = messages.encode("pusher_internal:subscription_count", payload, name)
                    await self.backend.publish(Envelope(hub.app.id, name, frame))
                self._webhook(hub, hooks.subscription_count(name, count))

    # --- housekeeping -----------------------------------------------------------------------

    async def tick(self) -> None:
        """Once a second: due webhooks and throttled counts."""
        self.webhooks.tick(self.now())
        await self.flush_counts()

    async def heartbeat(self) -> None:
        """Beat, and announce what dead nodes' departure took away."""
        reaped = await self.backend.heartbeat()
        if reaped.members_removed or reaped.users_offline or reaped.channels_vacated:
            metrics.NODES_REAPED.inc()
            await self._announce(reaped)

    async def _announce(self, reaped: Reaped) -> None:
        for app_id, channel, user_id in reaped.members_removed:
            hub = self.hubs.get(app_id)
            if hub is None:
                continue
            frame = messages.encode("pusher_internal:member_removed", {"user_id": user_id}, channel)
            await self.backend.publish(Envelope(app_id, channel, frame))
            self._webhook(hub, hooks.member_removed(channel, user_id))
        for app_id, user_id in reaped.users_offline:
            await self.backend.control(Control("offline", app_id, {"user_id": user_id}))
        for app_id, channel in reaped.channels_vacated:
            hub = self.hubs.get(app_id)
            if hub is not None:
                self._webhook(hub, hooks.channel_vacated(channel))

    def _webhook(self, hub: AppHub, event: hooks.Event) -> None:
        target = self.webhooks.for_app(hub.app.id)
        if target is not None:
            target.emit(event, self.now())

    def _count_error(self, conn: Connection, code: int) -> None:
        metrics.PROTOCOL_ERRORS.labels(code=str(code)).inc()
        if code == ErrorCode.CLIENT_EVENT_REJECTED:
            log.info("client event rejected", extra=fields(app_id=conn.session.app.id, socket_id=conn.socket_id))

    def _log_refused(self, conn: Connection, frame: str) -> None:
        parsed = messages.parse_frame(frame)
        data: Any = parsed.data
        kind = data.get("type", "unknown") if isinstance(data, dict) else "unknown"
        metrics.SUBSCRIPTIONS_REFUSED.labels(type=kind).inc()
        log.info(
            "subscription refused",
            extra=fields(
                app_id=conn.session.app.id,
                socket_id=conn.socket_id,
                channel=parsed.channel,
                type=kind,
                error=data.get("error") if isinstance(data, dict) else None,
            ),
        )
