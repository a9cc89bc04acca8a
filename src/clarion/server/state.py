"""The node: apps, their hubs, the bus, webhooks, and what happens when a socket joins, leaves,
signs in or publishes."""

from __future__ import annotations

import asyncio
import itertools
import logging
import secrets

from ..observability import metrics
from ..observability.logs import fields
from ..protocol import messages
from ..protocol import webhooks as hooks
from ..protocol.app import App
from ..protocol.channels import Kind, kind_of
from ..protocol.errors import ErrorCode, SubscriptionError
from ..protocol.session import Action, Close, Join, Leave, Publish, Send, SignIn
from ..scaling.bus import Bus, Envelope
from .config import Settings
from .connection import Connection
from .frames import text_frame
from .hub import AppHub
from .webhooks import Webhooks

log = logging.getLogger("clarion.server")

# Pusher sends subscription counts for busy channels (over 100 subscribers) at most every 5 s.
COUNT_BUSY = 100
COUNT_INTERVAL = 5.0


class Node:
    def __init__(self, settings: Settings, bus: Bus, webhooks: Webhooks) -> None:
        self.settings = settings
        self.bus = bus
        self.webhooks = webhooks
        apps = [config.to_app() for config in settings.apps]
        self.apps_by_key: dict[str, App] = {app.key: app for app in apps}
        self.apps_by_id: dict[str, App] = {app.id: app for app in apps}
        self.hubs: dict[str, AppHub] = {app.id: AppHub(app) for app in apps}
        # socket_id = "<node>.<sequence>": unique per node, random across nodes.
        self._node_part = str(secrets.randbelow(9 * 10**8) + 10**8)
        self._sequence = itertools.count(secrets.randbelow(10**6))
        self._counts_flush: asyncio.Handle | None = None

    def new_socket_id(self) -> str:
        return f"{self._node_part}.{next(self._sequence)}"

    async def start(self) -> None:
        await self.bus.start(self.deliver)
        await self.webhooks.start()

    async def close(self) -> None:
        await self.bus.close()
        await self.webhooks.close()

    @staticmethod
    def now() -> float:
        return asyncio.get_running_loop().time()

    # --- bus side ---------------------------------------------------------------------------

    def deliver(self, envelope: Envelope) -> None:
        hub = self.hubs.get(envelope.app_id)
        if hub is None:
            return
        sent = hub.deliver(envelope.channel, text_frame(envelope.frame), envelope.exclude)
        if sent:
            metrics.DELIVERIES.inc(sent)

    async def publish(
        self, app: App, channel: str, frame: str, exclude: str | None, source: str, data: str | None = None
    ) -> None:
        metrics.EVENTS_PUBLISHED.labels(source=source).inc()
        if data is not None and kind_of(channel).cache:
            # Server events only: Pusher never caches client events.
            self.hubs[app.id].remember(channel, data, frame, self.now())
        await self.bus.publish(Envelope(app.id, channel, frame, exclude))

    # --- connection side --------------------------------------------------------------------

    async def carry_out(self, conn: Connection, actions: list[Action]) -> None:
        """Do what the protocol session decided for ``conn``."""
        hub = self.hubs[conn.session.app.id]
        for action in actions:
            if isinstance(action, Send):
                if action.error_code is not None:
                    self._count_error(conn, action.error_code)
                elif action.refused is not None:
                    self._log_refused(conn, action.frame)
                conn.send(action.frame)
            elif isinstance(action, Join):
                self._join(hub, conn, action)
            elif isinstance(action, Leave):
                self._leave(hub, conn, action)
            elif isinstance(action, Publish):
                frame = messages.channel_event(action.event, action.channel, action.data, action.user_id)
                await self.publish(hub.app, action.channel, frame, conn.socket_id, "client")
                self._webhook(
                    hub,
                    hooks.client_event(action.channel, action.event, action.data, conn.socket_id, action.user_id),
                )
            elif isinstance(action, SignIn):
                self._sign_in(hub, conn, action)
            elif isinstance(action, Close):
                log.info(
                    "closing connection",
                    extra=fields(app_id=hub.app.id, socket_id=conn.socket_id, code=action.code, reason=action.reason),
                )
                conn.close(action.code, action.reason)

    def _join(self, hub: AppHub, conn: Connection, action: Join) -> None:
        name = action.channel
        try:
            joined = hub.join(conn, name, action.member)
        except SubscriptionError as exc:
            conn.session.channels.pop(name, None)
            frame = messages.subscription_error(exc.channel, exc.kind, exc.message, exc.status)
            self._log_refused(conn, frame)
            conn.send(frame)
            return
        channel = hub.channels[name]
        presence = channel.presence_payload() if channel.members is not None else None
        conn.send(messages.subscription_succeeded(name, presence))
        if kind_of(name).cache:
            self._replay_cache(hub, conn, name)
        if joined.occupied:
            self._webhook(hub, hooks.channel_occupied(name))
        if joined.member_added and action.member is not None:
            hub.member_added(name, action.member, exclude=conn.socket_id)
            self._webhook(hub, hooks.member_added(name, action.member.user_id))
        self._count_changed(hub, name)

    def _leave(self, hub: AppHub, conn: Connection, action: Leave) -> None:
        left = hub.leave(conn, action.channel, action.member)
        if left.member_removed and action.member is not None:
            hub.member_removed(action.channel, action.member)
            self._webhook(hub, hooks.member_removed(action.channel, action.member.user_id))
        if left.vacated:
            self._webhook(hub, hooks.channel_vacated(action.channel))
        self._count_changed(hub, action.channel)

    def drop(self, conn: Connection) -> None:
        """The socket is gone: leave every channel it was on, and sign its user out."""
        session = conn.session
        hub = self.hubs[session.app.id]
        for channel, member in list(session.channels.items()):
            self._leave(hub, conn, Leave(channel, member))
        session.channels.clear()
        if session.user_id is not None and hub.sign_out(conn, session.user_id, session.watchlist):
            self._tell_watchers(hub, session.user_id, "offline")
        hub.connections.pop(conn.socket_id, None)

    # --- users ------------------------------------------------------------------------------

    def _sign_in(self, hub: AppHub, conn: Connection, action: SignIn) -> None:
        if action.replaces is not None:
            # Signing in again (same user): the new watchlist replaces the old one.
            hub.unwatch(conn, action.replaces)
        came_online = hub.sign_in(conn, action.user_id, action.watchlist)
        conn.send(messages.encode("pusher:signin_success", {"user_data": action.user_data}))
        log.info("signed in", extra=fields(app_id=hub.app.id, socket_id=conn.socket_id, user_id=action.user_id))
        if action.watchlist:
            online = [user for user in action.watchlist if user in hub.users]
            offline = [user for user in action.watchlist if user not in hub.users]
            events = [
                {"name": name, "user_ids": ids} for name, ids in (("online", online), ("offline", offline)) if ids
            ]
            conn.send(messages.encode("pusher_internal:watchlist_events", {"events": events}))
        if came_online:
            self._tell_watchers(hub, action.user_id, "online")

    def _tell_watchers(self, hub: AppHub, user_id: str, status: str) -> None:
        watching = hub.watchers.get(user_id)
        if not watching:
            return
        frame = text_frame(
            messages.encode("pusher_internal:watchlist_events", {"events": [{"name": status, "user_ids": [user_id]}]})
        )
        for conn in watching.values():
            conn.write(frame)

    def terminate_user(self, app: App, user_id: str) -> int:
        """Close every socket signed in as ``user_id`` (4009: do not reconnect as is)."""
        sockets = list(self.hubs[app.id].users.get(user_id, {}).values())
        for conn in sockets:
            conn.send(messages.error(int(ErrorCode.UNAUTHORIZED), "Connection terminated by the app"))
            conn.close(int(ErrorCode.UNAUTHORIZED), "Connection terminated by the app")
        if sockets:
            log.info("user terminated", extra=fields(app_id=app.id, user_id=user_id, sockets=len(sockets)))
        return len(sockets)

    # --- cache channels ---------------------------------------------------------------------

    def _replay_cache(self, hub: AppHub, conn: Connection, name: str) -> None:
        cached = hub.cached(name, self.now())
        if cached is not None:
            conn.write(cached.frame)
            return
        conn.send(messages.encode("pusher:cache_miss", {}, name))
        # Pusher de-duplicates cache_miss webhooks; one per channel until it is cached again.
        if name not in hub.cache_miss_reported:
            hub.cache_miss_reported.add(name)
            self._webhook(hub, hooks.cache_miss(name))

    # --- subscription counts ----------------------------------------------------------------

    def _count_changed(self, hub: AppHub, name: str) -> None:
        app = hub.app
        kind = kind_of(name)
        if kind.is_presence or kind.kind is Kind.USER:
            return  # presence channels have member events instead; user channels are private plumbing
        wants_webhook = self.webhooks.wants(app.id, "subscription_count")
        if not app.subscription_count_events and not wants_webhook:
            return
        channel = hub.channels.get(name)
        count = len(channel.sockets) if channel is not None else 0
        last = channel.count_sent_at if channel is not None else float("-inf")
        now = self.now()
        due = max(now, last + COUNT_INTERVAL) if count > COUNT_BUSY else now
        hub.counts_due.setdefault(name, due)
        if due <= now and self._counts_flush is None:
            # Joins and leaves in one loop turn coalesce into one count per channel.
            self._counts_flush = asyncio.get_running_loop().call_soon(self.flush_counts)

    def flush_counts(self) -> None:
        self._counts_flush = None
        now = self.now()
        for hub in self.hubs.values():
            if not hub.counts_due:
                continue
            for name, due in list(hub.counts_due.items()):
                if due > now:
                    continue
                del hub.counts_due[name]
                channel = hub.channels.get(name)
                count = len(channel.sockets) if channel is not None else 0
                if channel is not None:
                    channel.count_sent_at = now
                    if hub.app.subscription_count_events:
                        payload = {"subscription_count": count}
                        hub.deliver_text(name, messages.encode("pusher_internal:subscription_count", payload, name))
                self._webhook(hub, hooks.subscription_count(name, count))

    # --- housekeeping -----------------------------------------------------------------------

    def tick(self) -> None:
        """Once a second: due webhooks, throttled counts, expired cache entries."""
        now = self.now()
        self.webhooks.tick(now)
        self.flush_counts()
        for hub in self.hubs.values():
            hub.expire_cache(now)

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
        kind = parsed.data.get("type", "unknown") if isinstance(parsed.data, dict) else "unknown"
        metrics.SUBSCRIPTIONS_REFUSED.labels(type=kind).inc()
        log.info(
            "subscription refused",
            extra=fields(
                app_id=conn.session.app.id,
                socket_id=conn.socket_id,
                channel=parsed.channel,
                type=kind,
                error=parsed.data.get("error") if isinstance(parsed.data, dict) else None,
            ),
        )
