"""One app's live state on this node: connections, channel → sockets, signed-in users and
watchlists. What the cluster shares (presence, counts, cache) lives in the scaling backend.

Delivery takes a frame already encoded as WebSocket bytes and writes it to each local subscriber;
the loop does no encoding and no awaiting.
"""

from __future__ import annotations

from collections.abc import Container, Iterable
from dataclasses import dataclass
from typing import Any, Protocol

import orjson

from ..observability.metrics import AppMetrics
from ..protocol.app import App
from ..protocol.session import Member, Session
from . import fanout, taps
from .fanout import Subscriber

# Live frames held for one socket while its history is read; past this, it must refetch instead.
MAX_HELD = 1000
# How long a member listed to a joiner may still have its member_added on the way (see Listed):
# it is published after the member's join is written, so it trails the write by a round trip or,
# with Redis stalled, by the commands' timeouts (seconds).
LISTED_WINDOW = 30.0
MEMBER_EVENT = "pusher_internal:member_"

Position = tuple[str, int]  # (epoch, serial)


class Socket(Subscriber, Protocol):
    """A client socket as the hub and the node see it: ``Connection`` is the real one, and the
    in-process tests use a fake that records frames."""

    session: Session
    closing: bool

    @property
    def socket_id(self) -> str: ...

    def send(self, text: str) -> None: ...

    def close(self, code: int, reason: str) -> None: ...


class CatchingUp:
    """A socket on a kept channel that is being sent history. While the history read is in flight,
    its live frames are held (``held``); after the replay, live frames up to ``upto`` are skipped,
    because the replay already sent them."""

    __slots__ = ("epoch", "held", "overflowed", "upto")

    def __init__(self) -> None:
        self.held: list[tuple[bytes, int, str]] | None = []
        self.overflowed = False
        self.epoch = ""
        self.upto = 0

    def caught_up(self, last: Position | None) -> bool:
        """Whether live delivery on this node has passed what the replay sent."""
        return self.upto == 0 or (last is not None and last[0] == self.epoch and last[1] >= self.upto)

    def offer(self, frame: bytes, serial: int, epoch: str) -> tuple[bool, bool]:
        """(write it now, done catching up)."""
        held = self.held
        if held is not None:
            if len(held) < MAX_HELD:
                held.append((frame, serial, epoch))
            else:
                self.overflowed = True
            return False, False
        if not serial:
            return True, False  # member, count and client events have no position
        if epoch == self.epoch and serial <= self.upto:
            return False, False
        return True, True


class SkipCached:
    """A socket just answered with a cache channel's last event, which may still be on its way
    live: it is cached before it is published, so a subscribe can read it in between. The first
    live frame after the answer is dropped if it is that event (with or without its position);
    either way the socket is live from then on."""

    __slots__ = ("event",)

    def __init__(self, cached: str) -> None:
        self.event = cached.encode()

    def offer(self, frame: bytes, serial: int, epoch: str) -> tuple[bool, bool]:
        """(write it now, done): as ``CatchingUp.offer``."""
        length = frame[1] & 0x7F
        payload = memoryview(frame)[2 + (2 if length == 126 else 8 if length == 127 else 0) :]
        event = self.event
        same = payload == event or (
            len(payload) > len(event) and payload[: len(event) - 1] == event[:-1] and payload[len(event) - 1] == 44
        )  # 44: the comma before the position fields that with_position appends
        return not same, True


class Overheard:
    """The member events of a presence channel that reach this node while a socket's join is in
    flight. Its member list is read during the join, and it is registered only once the join is
    done: what came in between reaches it from here, once it is answered."""

    __slots__ = ("events", "overflowed")

    def __init__(self) -> None:
        self.events: list[tuple[bool, str, str]] = []  # (added, user_id, frame)
        self.overflowed = False

    def hear(self, frame: str) -> None:
        if "pusher_internal:member_" not in frame:
            return
        message = orjson.loads(frame)
        event = message.get("event")
        if event not in ("pusher_internal:member_added", "pusher_internal:member_removed"):
            return
        if len(self.events) >= MAX_HELD:
            self.overflowed = True
            return
        user_id = str(orjson.loads(message["data"])["user_id"])
        self.events.append((event == "pusher_internal:member_added", user_id, frame))

    def news(self, known: set[str]) -> list[str]:
        """The frames that change the member list ``known`` (the one the socket was answered
        with), in order: an arrival it already lists, or a departure of someone it does not,
        happened before the list was read."""
        frames = []
        for added, user_id, frame in self.events:
            if added == (user_id in known):
                continue
            if added:
                known.add(user_id)
            else:
                known.discard(user_id)
            frames.append(frame)
        return frames


class Listed:
    """A presence channel's member events as this node has told them, so no socket is told of a
    member it already lists. A member's ``member_added`` is published after its join is written,
    so a joiner whose list was read in between lists it, and then hears it arrive: pusher-js
    would fire ``member_added`` for someone it lists (Echo's ``joining`` twice)."""

    __slots__ = ("heard", "pending")

    def __init__(self) -> None:
        # Members whose member_added this node has passed on, or that have been listed for longer
        # than LISTED_WINDOW: a later member_added of theirs, with no member_removed since, is
        # one every socket here knows already.
        self.heard: set[str] = set()
        # Members listed to joiners before their member_added was heard: user → (the joiners, until).
        self.pending: dict[str, tuple[set[str], float]] = {}

    def listed(self, socket_id: str, known: Iterable[str], now: float) -> None:
        for user_id in known:
            if user_id in self.heard:
                continue
            entry = self.pending.get(user_id)
            if entry is None:
                self.pending[user_id] = ({socket_id}, now + LISTED_WINDOW)
            else:
                entry[0].add(socket_id)

    def member_event(self, frame: str) -> set[str] | None:
        """The sockets not to tell ``frame``: None for all of them to hear it, an empty set for
        every one, the joiners that list the member for the rest."""
        message = orjson.loads(frame)
        event = message.get("event")
        if event not in ("pusher_internal:member_added", "pusher_internal:member_removed"):
            return set()
        user_id = str(orjson.loads(message["data"])["user_id"])
        listed = self.pending.pop(user_id, None)
        if event == "pusher_internal:member_removed":
            self.heard.discard(user_id)
            return set()
        if user_id in self.heard:
            return None
        self.heard.add(user_id)
        return listed[0] if listed is not None else set()

    def expire(self, now: float) -> None:
        """Members listed long enough ago that their member_added, if any, has come by now."""
        for user_id in [u for u, (_, until) in self.pending.items() if until <= now]:
            del self.pending[user_id]
            self.heard.add(user_id)


class Channel:
    __slots__ = ("catching", "count_sent_at", "first", "joined_at", "last", "listed", "members", "name", "sockets")

    def __init__(self, name: str, presence: bool, kept: bool) -> None:
        self.name = name
        self.sockets: dict[str, Socket] = {}
        # presence: user_id → {socket_id: user_info}; a user in two tabs is one member.
        self.members: dict[str, dict[str, Any]] | None = {} if presence else None
        self.listed: Listed | None = Listed() if presence else None
        self.count_sent_at = float("-inf")
        # Kept channels (with history): the first and last positions delivered here, and each
        # socket's last position at its join, so a catch-up knows what a socket already got live.
        self.joined_at: dict[str, Position | None] | None = {} if kept else None
        self.first: Position | None = None
        self.last: Position | None = None
        # Sockets whose live frames on the channel wait (catch-up) or may be a duplicate (cache).
        self.catching: dict[str, CatchingUp | SkipCached] = {}

    def live_range(self, socket_id: str) -> tuple[int, int] | None:
        """Serials (low, high], in this channel's current epoch, that ``socket_id`` got live."""
        if self.joined_at is None or self.last is None:
            return None
        joined = self.joined_at.get(socket_id)
        if joined is None:
            low = self.first[1] - 1 if self.first is not None and self.first[0] == self.last[0] else 0
        elif joined[0] == self.last[0]:
            low = joined[1]
        else:
            low = 0
        return (low, self.last[1]) if self.last[1] > low else None


@dataclass(frozen=True, slots=True)
class Joined:
    occupied: bool  # the channel had no subscriber on this node before
    member_added: bool  # the user had no socket on this channel on this node before


@dataclass(frozen=True, slots=True)
class Left:
    vacated: bool
    member_removed: bool


class AppHub:
    __slots__ = (
        "app",
        "cache_miss_reported",
        "channels",
        "connections",
        "counts_due",
        "fan",
        "listing",
        "metrics",
        "overhearing",
        "taps",
        "users",
        "watchers",
    )

    def __init__(self, app: App, fan: fanout.Fanout = fanout.fanout_python) -> None:
        self.app = app
        self.fan = fan  # the fan-out loop: native or python
        self.connections: dict[str, Socket] = {}
        self.channels: dict[str, Channel] = {}
        self.users: dict[str, dict[str, Socket]] = {}  # user_id → its signed-in sockets
        self.watchers: dict[str, dict[str, Socket]] = {}  # watched user_id → watching sockets
        self.cache_miss_reported: set[str] = set()
        self.counts_due: dict[str, float] = {}  # channel → when its subscription_count may go out
        self.taps: list[taps.Tap] = []  # open debug consoles (server/taps.py); empty costs one test
        self.metrics = AppMetrics(app.id)
        self.overhearing: dict[str, list[Overheard]] = {}  # presence channel → joins in flight
        self.listing: set[str] = set()  # presence channels with members listed but not yet heard

    # --- membership -------------------------------------------------------------------------

    def join(self, conn: Socket, name: str, member: Member | None) -> Joined:
        channel = self.channels.get(name)
        created = channel is None
        if channel is None:
            channel = Channel(name, presence=member is not None, kept=self.app.history_for(name) is not None)
        member_added = False
        if member is not None and channel.members is not None:
            sockets = channel.members.get(member.user_id)
            if sockets is None:
                sockets = channel.members[member.user_id] = {}
                member_added = True
            sockets[conn.socket_id] = member.user_info
        if created:
            self.channels[name] = channel
            self.metrics.channels.inc()
        if conn.socket_id not in channel.sockets:
            self.metrics.subscriptions.inc()
        channel.sockets[conn.socket_id] = conn
        if channel.joined_at is not None:
            channel.joined_at[conn.socket_id] = channel.last
        if self.taps:
            self._tap_membership("subscribed", "occupied" if created else None, conn, name, member)
        return Joined(occupied=created, member_added=member_added)

    def has_member(self, name: str, user_id: str) -> bool:
        """Whether ``user_id`` already has a socket on presence channel ``name`` on this node."""
        channel = self.channels.get(name)
        return channel is not None and channel.members is not None and user_id in channel.members

    def leave(self, conn: Socket, name: str, member: Member | None) -> Left | None:
        """None when the socket was not on the channel."""
        channel = self.channels.get(name)
        if channel is None or channel.sockets.pop(conn.socket_id, None) is None:
            return None
        self.metrics.subscriptions.dec()
        channel.catching.pop(conn.socket_id, None)
        if channel.joined_at is not None:
            channel.joined_at.pop(conn.socket_id, None)
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
            self.metrics.channels.dec()
        if self.taps:
            self._tap_membership("unsubscribed", "vacated" if vacated else None, conn, name, member)
        return Left(vacated=vacated, member_removed=member_removed)

    def _tap_membership(self, kind: str, then: str | None, conn: Socket, name: str, member: Member | None) -> None:
        # A user id is personal data: shown only where the app shows payloads.
        user = {"user_id": member.user_id} if member is not None and self.app.debug_payloads else {}
        taps.emit(self.taps, kind, channel=name, socket_id=conn.socket_id, **user)
        if then is not None:
            taps.emit(self.taps, then, channel=name)

    def overhear(self, name: str) -> Overheard:
        """Start keeping the member events of ``name`` for a join in flight."""
        overheard = Overheard()
        self.overhearing.setdefault(name, []).append(overheard)
        return overheard

    def stop_overhearing(self, name: str, overheard: Overheard) -> None:
        joins = self.overhearing.get(name)
        if joins is not None:
            joins.remove(overheard)
            if not joins:
                del self.overhearing[name]

    def listed(self, name: str, socket_id: str, known: Iterable[str], now: float) -> None:
        """``socket_id`` was answered with ``known`` as the members of presence channel ``name``."""
        channel = self.channels.get(name)
        if channel is not None and channel.listed is not None:
            channel.listed.listed(socket_id, known, now)
            if channel.listed.pending:
                self.listing.add(name)

    def expire_listed(self, now: float) -> None:
        for name in list(self.listing):
            channel = self.channels.get(name)
            if channel is not None and channel.listed is not None:
                channel.listed.expire(now)
                if channel.listed.pending:
                    continue
            self.listing.discard(name)

    def heard(self, name: str, frames: list[str]) -> None:
        """Frames the bus delivers on ``name``, while some join on it is in flight."""
        for overheard in self.overhearing.get(name, ()):
            for frame in frames:
                overheard.hear(frame)

    # --- users ------------------------------------------------------------------------------

    def sign_in(self, conn: Socket, user_id: str, watchlist: tuple[str, ...]) -> bool:
        """Register ``conn`` as ``user_id``; True when that user just came online."""
        sockets = self.users.setdefault(user_id, {})
        came_online = not sockets
        sockets[conn.socket_id] = conn
        for watched in watchlist:
            self.watchers.setdefault(watched, {})[conn.socket_id] = conn
        return came_online

    def unwatch(self, conn: Socket, watchlist: tuple[str, ...]) -> None:
        for watched in watchlist:
            watching = self.watchers.get(watched)
            if watching is not None:
                watching.pop(conn.socket_id, None)
                if not watching:
                    del self.watchers[watched]

    def sign_out(self, conn: Socket, user_id: str, watchlist: tuple[str, ...]) -> bool:
        """Forget ``conn``; True when ``user_id`` has no signed-in socket left."""
        self.unwatch(conn, watchlist)
        sockets = self.users.get(user_id)
        if sockets is None or sockets.pop(conn.socket_id, None) is None:
            return False
        if sockets:
            return False
        del self.users[user_id]
        return True

    # --- delivery ---------------------------------------------------------------------------

    def broadcast(self, name: str, frame: bytes, exclude: str | None = None, serial: int = 0, epoch: str = "") -> int:
        """Write one pre-encoded frame to every local subscriber of ``name`` but ``exclude``."""
        channel = self.channels.get(name)
        if channel is None:
            return 0
        if serial:
            channel.last = (epoch, serial)
            if channel.first is None:
                channel.first = channel.last
        if channel.catching:
            return self._broadcast_slowly(channel, frame, () if exclude is None else (exclude,), serial, epoch)
        # Writing never touches channel.sockets (a dropped slow consumer leaves later, from its
        # own handler), so the fan-out walks the live dict and copies nothing.
        skip = channel.sockets.get(exclude) if exclude is not None else None
        return fanout.send(self.fan, channel.sockets, frame, skip)

    def broadcast_run(self, name: str, frames: list[tuple[bytes, int, str]]) -> int:
        """Several frames for one channel, as one write per subscriber. Counts deliveries."""
        channel = self.channels.get(name)
        if channel is None:
            return 0
        if channel.catching:
            return sum(self.broadcast(name, frame, None, serial, epoch) for frame, serial, epoch in frames)
        for _, serial, epoch in frames:
            if serial:
                channel.last = (epoch, serial)
                if channel.first is None:
                    channel.first = channel.last
        joined = b"".join(frame for frame, _, _ in frames)
        return fanout.send(self.fan, channel.sockets, joined) * len(frames)

    def broadcast_except(self, name: str, frame: bytes, excluded: Container[str]) -> int:
        """A member event to every local subscriber of ``name`` but ``excluded`` (rare: the slow loop)."""
        channel = self.channels.get(name)
        return 0 if channel is None else self._broadcast_slowly(channel, frame, excluded, 0, "")

    def _broadcast_slowly(
        self, channel: Channel, frame: bytes, excluded: Container[str], serial: int, epoch: str
    ) -> int:
        """The slower loop, while some socket on the channel is catching up (or was just answered
        with the cached event), or for a member event some sockets must not hear."""
        sent = 0
        done = []
        catching = channel.catching
        for socket_id, conn in channel.sockets.items():
            if socket_id in excluded:
                continue
            catch = catching.get(socket_id)
            if catch is not None:
                write, finished = catch.offer(frame, serial, epoch)
                if finished:
                    done.append(socket_id)
                if not write:
                    continue
            if conn.write(frame):
                sent += 1
        for socket_id in done:
            del catching[socket_id]
        return sent
