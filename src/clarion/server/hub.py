"""One app's live state on this node: its connections and the channel → sockets map.

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
    __slots__ = ("members", "name", "sockets")

    def __init__(self, name: str, presence: bool) -> None:
        self.name = name
        self.sockets: dict[str, Connection] = {}
        # presence: user_id → {socket_id: user_info}; a user in two tabs is one member.
        self.members: dict[str, dict[str, Any]] | None = {} if presence else None

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


class AppHub:
    __slots__ = ("app", "channels", "connections")

    def __init__(self, app: App) -> None:
        self.app = app
        self.connections: dict[str, Connection] = {}
        self.channels: dict[str, Channel] = {}

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
        self.deliver_text(
            name,
            messages.encode(
                "pusher_internal:member_added", {"user_id": member.user_id, "user_info": member.user_info}, name
            ),
            exclude,
        )

    def member_removed(self, name: str, member: Member) -> None:
        self.deliver_text(name, messages.encode("pusher_internal:member_removed", {"user_id": member.user_id}, name))

    # --- counts -----------------------------------------------------------------------------

    def subscription_count(self, name: str) -> int:
        channel = self.channels.get(name)
        return len(channel.sockets) if channel is not None else 0

    def user_count(self, name: str) -> int:
        channel = self.channels.get(name)
        return len(channel.members) if channel is not None and channel.members is not None else 0

    def users(self, name: str) -> list[str]:
        channel = self.channels.get(name)
        return list(channel.members) if channel is not None and channel.members is not None else []
