"""The node: apps, their hubs, the bus, and what happens when a socket joins, leaves or publishes."""

from __future__ import annotations

import itertools
import logging
import secrets

from ..observability import metrics
from ..observability.logs import fields
from ..protocol import messages
from ..protocol.app import App
from ..protocol.errors import SubscriptionError
from ..protocol.session import Close, Join, Leave, Publish, Send
from ..scaling.bus import Bus, Envelope
from .config import Settings
from .connection import Connection
from .frames import text_frame
from .hub import AppHub

log = logging.getLogger("clarion.server")


class Node:
    def __init__(self, settings: Settings, bus: Bus) -> None:
        self.settings = settings
        self.bus = bus
        apps = [config.to_app() for config in settings.apps]
        self.apps_by_key: dict[str, App] = {app.key: app for app in apps}
        self.apps_by_id: dict[str, App] = {app.id: app for app in apps}
        self.hubs: dict[str, AppHub] = {app.id: AppHub(app) for app in apps}
        # socket_id = "<node>.<sequence>": unique per node, random across nodes.
        self._node_part = str(secrets.randbelow(9 * 10**8) + 10**8)
        self._sequence = itertools.count(secrets.randbelow(10**6))

    def new_socket_id(self) -> str:
        return f"{self._node_part}.{next(self._sequence)}"

    async def start(self) -> None:
        await self.bus.start(self.deliver)

    async def close(self) -> None:
        await self.bus.close()

    # --- bus side ---------------------------------------------------------------------------

    def deliver(self, envelope: Envelope) -> None:
        hub = self.hubs.get(envelope.app_id)
        if hub is None:
            return
        sent = hub.deliver(envelope.channel, text_frame(envelope.frame), envelope.exclude)
        if sent:
            metrics.DELIVERIES.inc(sent)

    async def publish(self, app: App, channel: str, frame: str, exclude: str | None, source: str) -> None:
        metrics.EVENTS_PUBLISHED.labels(source=source).inc()
        await self.bus.publish(Envelope(app.id, channel, frame, exclude))

    # --- connection side --------------------------------------------------------------------

    async def carry_out(self, conn: Connection, actions: list[Send | Join | Leave | Publish | Close]) -> None:
        """Do what the protocol session decided for ``conn``."""
        hub = self.hubs[conn.session.app.id]
        for action in actions:
            if isinstance(action, Send):
                if action.error_code is not None:
                    metrics.PROTOCOL_ERRORS.labels(code=str(action.error_code)).inc()
                elif action.refused is not None:
                    self._log_refused(conn, action.frame)
                conn.send(action.frame)
            elif isinstance(action, Join):
                self._join(hub, conn, action)
            elif isinstance(action, Leave):
                self._leave(hub, conn, action.channel, action)
            elif isinstance(action, Publish):
                frame = messages.channel_event(action.event, action.channel, action.data, action.user_id)
                await self.publish(hub.app, action.channel, frame, conn.socket_id, "client")
            elif isinstance(action, Close):
                conn.close(action.code, action.reason)

    def _join(self, hub: AppHub, conn: Connection, action: Join) -> None:
        try:
            joined = hub.join(conn, action.channel, action.member)
        except SubscriptionError as exc:
            conn.session.channels.pop(action.channel, None)
            frame = messages.subscription_error(exc.channel, exc.kind, exc.message, exc.status)
            self._log_refused(conn, frame)
            conn.send(frame)
            return
        channel = hub.channels[action.channel]
        presence = channel.presence_payload() if channel.members is not None else None
        conn.send(messages.subscription_succeeded(action.channel, presence))
        if joined.member_added and action.member is not None:
            hub.member_added(action.channel, action.member, exclude=conn.socket_id)

    def _leave(self, hub: AppHub, conn: Connection, channel: str, action: Leave) -> None:
        left = hub.leave(conn, channel, action.member)
        if left.member_removed and action.member is not None:
            hub.member_removed(channel, action.member)

    def drop(self, conn: Connection) -> None:
        """The socket is gone: leave every channel it was on."""
        hub = self.hubs[conn.session.app.id]
        for channel, member in list(conn.session.channels.items()):
            self._leave(hub, conn, channel, Leave(channel, member))
        conn.session.channels.clear()
        hub.connections.pop(conn.socket_id, None)

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
