"""One app's live state on this node: connections, channel → sockets, signed-in users, watchlists
and cache channels' last events.

Delivery takes a frame already encoded as WebSocket bytes and writes it to each local subscriber;
the loop does no encoding and no awaiting.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from ..protocol import messages
from ..protocol.app import App
from ..protocol.errors import SubscriptionError
from ..protocol.session import Member
from .connection import Connection
from .frames import text_frame


class Channel:
    __slots__ = ("count_sent_at", "members", "name", "sockets")

    def __init__(self, name: str, presence: bool) -> None:
        self.name = name
        self.sockets: dict[str, Connection] = {}
        # presence: user_id → {socket_id: user_info}; a user in two tabs is one member.
        self.members: dict[str, dict[str, Any]] | None = {} if presence else None
        self.count_sent_at = float("-inf")

    def presence_payload(self) -> dict[str, Any]:
        assert self.members is not None
        info = {user_id: next(reversed(sockets.values())) for user_id, sockets in self.members.items()}
        return {"ids": list(info), "hash": info, "count": len(info)}


@dataclass(frozen=True, slots=True)
class Joined:
    occupied: bool  # the channel had no subscriber on this node before
    member_added: bool


@dataclass(frozen=True, slots=True)
class Left:
    vacated: bool
    member_removed: bool


@dataclass(frozen=True, slots=True)
class CachedEvent:
    """A cache channel's last event: the frame to replay, and what ``info=cache`` reports."""

    data: str
    frame: bytes
    expires: float


class AppHub:
    __slots__ = (
        "app",
        "cache",
        "cache_miss_reported",
        "channels",
        "connections",
        "counts_due",
        "users",
        "watchers",
    )

    def __init__(self, app: App) -> None:
        self.app = app
        self.connections: dict[str, Connection] = {}
        self.channels: dict[str, Channel] = {}
        self.users: dict[str, dict[str, Connection]] = {}  # user_id → its signed-in sockets
        self.watchers: dict[str, dict[str, Connection]] = {}  # watched user_id → watching sockets
        self.cache: dict[str, CachedEvent] = {}
        self.cache_miss_reported: set[str] = set()
        self.counts_due: dict[str, float] = {}  # channel → when its subscription_count may go out

    # --- membership -------------------------------------------------------------------------

    def join(self, conn: Connection, name: str, member: Member | None) -> Joined:
        channel = self.channels.get(name)
        created = channel is None
        if channel is None:
            channel = Channel(name, presence=member is not None)
        member_added = False
        if member is not None and channel.members is not None:
            sockets = channel.members.get(member.user_id)
            if sockets is None:
                if len(channel.members) >= self.app.max_presence_members:
                    raise SubscriptionError(
                        name,
                        "LimitReached",
                        f"Presence channel is full ({self.app.max_presence_members} members)",
                        403,
                    )
                sockets = channel.members[member.user_id] = {}
                member_added = True
            sockets[conn.socket_id] = member.user_info
        if created:
            self.channels[name] = channel
        channel.sockets[conn.socket_id] = conn
        return Joined(occupied=created, member_added=member_added)

    def leave(self, conn: Connection, name: str, member: Member | None) -> Left:
        channel = self.channels.get(name)
        if channel is None or channel.sockets.pop(conn.socket_id, None) is None:
            return Left(vacated=False, member_removed=False)
        member_removed = False
        if member is not None and channel.members is not None:
            sockets = channel.members.get(member.user_id)
            if sockets is not None:
                sockets.pop(conn.socket_id, None)
                if not sockets:
                    del channel.members[member.user_id]
                    member_removed = True
        vacated = not channel.sockets
        if vacated:
            del self.channels[name]
        return Left(vacated=vacated, member_removed=member_removed)

    # --- users ------------------------------------------------------------------------------

    def sign_in(self, conn: Connection, user_id: str, watchlist: tuple[str, ...]) -> bool:
        """Register ``conn`` as ``user_id``; True when that user just came online."""
        sockets = self.users.setdefault(user_id, {})
        came_online = not sockets
        sockets[conn.socket_id] = conn
        for watched in watchlist:
            self.watchers.setdefault(watched, {})[conn.socket_id] = conn
        return came_online

    def unwatch(self, conn: Connection, watchlist: tuple[str, ...]) -> None:
        for watched in watchlist:
            watching = self.watchers.get(watched)
            if watching is not None:
                watching.pop(conn.socket_id, None)
                if not watching:
                    del self.watchers[watched]

    def sign_out(self, conn: Connection, user_id: str, watchlist: tuple[str, ...]) -> bool:
        """Forget ``conn``; True when ``user_id`` has no signed-in socket left."""
        self.unwatch(conn, watchlist)
        sockets = self.users.get(user_id)
        if sockets is None or sockets.pop(conn.socket_id, None) is None:
            return False
        if sockets:
            return False
        del self.users[user_id]
        return True

    # --- cache channels ---------------------------------------------------------------------

    def remember(self, name: str, data: str, frame: str, now: float) -> None:
        self.cache[name] = CachedEvent(data, text_frame(frame), now + self.app.cache_ttl)
        self.cache_miss_reported.discard(name)

    def cached(self, name: str, now: float) -> CachedEvent | None:
        entry = self.cache.get(name)
        if entry is not None and entry.expires <= now:
            del self.cache[name]
            return None
        return entry

    def expire_cache(self, now: float) -> None:
        for name in [name for name, entry in self.cache.items() if entry.expires <= now]:
            del self.cache[name]

    # --- delivery ---------------------------------------------------------------------------

    def deliver(self, name: str, frame: bytes, exclude: str | None = None) -> int:
        """Write one pre-encoded frame to every local subscriber of ``name`` but ``exclude``."""
        channel = self.channels.get(name)
        if channel is None:
            return 0
        sent = 0
        # write() never touches channel.sockets (a dropped slow consumer leaves later, from its
        # own handler), so iterating the live dict is safe and copies nothing.
        for socket_id, conn in channel.sockets.items():
            if socket_id != exclude and conn.write(frame):
                sent += 1
        return sent

    def deliver_text(self, name: str, text: str, exclude: str | None = None) -> int:
        return self.deliver(name, text_frame(text), exclude)

    def member_added(self, name: str, member: Member, exclude: str) -> None:
        payload = {"user_id": member.user_id, "user_info": member.user_info}
        self.deliver_text(name, messages.encode("pusher_internal:member_added", payload, name), exclude)

    def member_removed(self, name: str, member: Member) -> None:
        self.deliver_text(name, messages.encode("pusher_internal:member_removed", {"user_id": member.user_id}, name))

    # --- counts -----------------------------------------------------------------------------

    def subscription_count(self, name: str) -> int:
        channel = self.channels.get(name)
        return len(channel.sockets) if channel is not None else 0

    def user_count(self, name: str) -> int:
        channel = self.channels.get(name)
        return len(channel.members) if channel is not None and channel.members is not None else 0

    def users_of(self, name: str) -> list[str]:
        channel = self.channels.get(name)
        return list(channel.members) if channel is not None and channel.members is not None else []
