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
        # socket_id → (user_id, status) changes heard for it while its sign-in is answered
        self._held: dict[str, list[tuple[str, str]]] = {}

    async def sign_in(self, hub: AppHub, conn: Socket, action: SignIn) -> None:
        """Register the socket as its user, mark the user online in the cluster, and only then
        answer ``signin_success``: a watcher that signs in after that answer, on any node, reads
        the user online. Then the watchlist's snapshot, then what changed while it was read."""
        app = hub.app
        backend = self.shared.backend
        if action.replaces is not None:
            # Signing in again (same user): the new watchlist replaces the old one.
            hub.unwatch(conn, action.replaces)
        # The socket watches from now on (so no change is missed), but what it hears is held until
        # the answer and the snapshot are out, to follow them.
        held: list[tuple[str, str]] | None = [] if action.watchlist else None
        if held is not None:
            self._held[conn.socket_id] = held
        try:
            hub.sign_in(conn, action.user_id, action.watchlist)
            # Every sign-in writes, not only a user's first socket here: another socket's write may
            # still be in flight, and this answer must not overtake it.
            news = await backend.user_online(app.id, action.user_id)
            if conn.socket_id not in hub.connections:
                await self._withdraw(hub, conn, action.user_id)
                return
            if news:
                await backend.control(Control("online", app.id, {"user_id": action.user_id}))
            conn.send(messages.encode("pusher:signin_success", {"user_data": action.user_data}))
            log.info("signed in", extra=fields(app_id=app.id, socket_id=conn.socket_id, user_id=action.user_id))
            if held is None:
                return
            online = await backend.online(app.id, action.watchlist)
        finally:
            if held is not None:
                del self._held[conn.socket_id]
        statuses = (
            ("online", [user for user in action.watchlist if user in online]),
            ("offline", [user for user in action.watchlist if user not in online]),
        )
        events = [{"name": name, "user_ids": ids} for name, ids in statuses if ids]
        conn.send(messages.encode("pusher_internal:watchlist_events", {"events": events}))
        # What changed meanwhile, less what the snapshot already says.
        for user_id, status in held:
            if (status == "online") != (user_id in online):
                conn.write(_change_frame(user_id, status))
                if status == "online":
                    online.add(user_id)
                else:
                    online.discard(user_id)

    async def _withdraw(self, hub: AppHub, conn: Socket, user_id: str) -> None:
        """The socket left while its user was marked online. drop() signs it out, now or once it
        has left its channels; if it already has, and no other socket here is that user, the
        write just made would leave the user online in the cluster for good: take it back."""
        if user_id not in hub.users:
            await self.shared.backend.user_offline(hub.app.id, user_id)
        log.info(
            "sign-in withdrawn: the socket left while it was made",
            extra=fields(app_id=hub.app.id, socket_id=conn.socket_id),
        )

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
        frame = _change_frame(user_id, status)
        held = self._held
        for conn in watching.values():
            waiting = held.get(conn.socket_id) if held else None
            if waiting is not None:
                waiting.append((user_id, status))
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


def _change_frame(user_id: str, status: str) -> bytes:
    return text_frame(
        messages.encode("pusher_internal:watchlist_events", {"events": [{"name": status, "user_ids": [user_id]}]})
    )
