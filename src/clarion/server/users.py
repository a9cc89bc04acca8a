"""Users: sign-in (``pusher:signin``), watchlists and their online/offline events, sign-out when
a socket goes, and ``terminate_connections``. Who is online lives in the backend, cluster-wide;
which socket is which user, and who watches whom, in each app's hub."""

from __future__ import annotations

import logging

from ..observability.logs import fields
from ..protocol import messages
from ..protocol.app import App
from ..protocol.errors import ErrorCode
from ..protocol.session import SignIn
from ..scaling.contracts import Control
from .frames import text_frame
from .hub import AppHub, Socket
from .shared import Shared

log = logging.getLogger("clarion.server")


class Users:
    __slots__ = ("_held", "shared")

    def __init__(self, shared: Shared) -> None:
        self.shared = shared
        self._held: dict[str, list[bytes]] = {}  # socket_id → watchlist events held for it

    async def sign_in(self, hub: AppHub, conn: Socket, action: SignIn) -> None:
        app = hub.app
        backend = self.shared.backend
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
            self._held[conn.socket_id] = held
            try:
                online = await backend.online(app.id, action.watchlist)
            finally:
                del self._held[conn.socket_id]
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
        news = came_online_here and await backend.user_online(app.id, action.user_id)
        # Gone during that round trip: drop() announces the user offline, and "online" would trail it.
        if news and conn.socket_id in hub.connections:
            await backend.control(Control("online", app.id, {"user_id": action.user_id}))

    async def sign_out(self, hub: AppHub, conn: Socket) -> None:
        """The socket is gone: forget it as its user, and tell the cluster if that was their last."""
        session = conn.session
        user_id = session.user_id
        if user_id is None or not hub.sign_out(conn, user_id, session.watchlist):
            return
        backend = self.shared.backend
        if await backend.user_offline(hub.app.id, user_id):
            await backend.control(Control("offline", hub.app.id, {"user_id": user_id}))

    def tell_watchers(self, hub: AppHub, user_id: str, status: str) -> None:
        """``user_id`` came online or went offline, somewhere in the cluster."""
        watching = hub.watchers.get(user_id)
        if not watching:
            return
        frame = text_frame(
            messages.encode("pusher_internal:watchlist_events", {"events": [{"name": status, "user_ids": [user_id]}]})
        )
        held = self._held
        for conn in watching.values():
            waiting = held.get(conn.socket_id) if held else None
            if waiting is not None:
                waiting.append(frame)
            else:
                conn.write(frame)

    async def terminate(self, app: App, user_id: str) -> None:
        """Close every socket signed in as ``user_id``, on every node."""
        await self.shared.backend.control(Control("terminate", app.id, {"user_id": user_id}))

    def terminate_here(self, hub: AppHub, user_id: str) -> None:
        sockets = list(hub.users.get(user_id, {}).values())
        for conn in sockets:
            # 4009: pusher-js will not reconnect as is, which is the point.
            conn.send(messages.error(int(ErrorCode.UNAUTHORIZED), "Connection terminated by the app"))
            conn.close(int(ErrorCode.UNAUTHORIZED), "Connection terminated by the app")
        if sockets:
            log.info("user terminated", extra=fields(app_id=hub.app.id, user_id=user_id, sockets=len(sockets)))
