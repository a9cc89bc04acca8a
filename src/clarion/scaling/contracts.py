"""What crosses nodes, as contracts in three parts: the bus (with history), presence (with
signed-in users), and counts (with cache channels and the node's liveness). Each part could run on
its own engine (a NATS bus, say, while presence stays on Redis); today both twins, the in-memory
one (one process, the embedded default) and the Redis one (many nodes), implement all three, and
``tests/contracts`` runs one suite per part against both.

A *node* is one server process. Every method speaks for the node it was built for: presence and
counts are held per node, so when a node dies the others can take exactly its share away.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

SEP = "\x1f"  # joins ids inside one key or member (never in a channel name, user id or idempotency key)


@dataclass(frozen=True, slots=True)
class Envelope:
    """One encoded Pusher frame for one channel of one app; ``exclude`` is a socket_id to skip.
    An event kept in history has its position (``epoch``, ``serial``) here and in the frame.
    ``received`` is the wall time (``time.time()``) at which the HTTP API received the publish on
    the node that took it, 0 when it did not come from the API; it travels on the bus."""

    app_id: str
    channel: str
    frame: str
    exclude: str | None = None
    serial: int = 0
    epoch: str = ""
    received: float = 0.0


@dataclass(frozen=True, slots=True)
class Keep:
    """Keep this event in the channel's history: the last ``size`` events, each for ``ttl`` s."""

    size: int
    ttl: float


@dataclass(slots=True)
class History:
    """A read of one channel's history. ``epoch`` is None when nothing is kept for the channel
    (never published, or forgotten); ``serial`` is its latest position; ``entries`` are
    (serial, frame) pairs, oldest first. ``available`` is False when the store could not be read."""

    epoch: str | None
    serial: int
    entries: list[tuple[int, str]] = field(default_factory=list)
    available: bool = True


# How long a quiet channel's position (epoch and serial) outlives its last event. Long enough that
# a client away for a while still learns "nothing was missed" rather than "history lost".
POSITION_TTL = 24 * 3600.0


@dataclass(frozen=True, slots=True)
class Control:
    """A message for every node's own logic rather than for sockets (terminate a user, a user
    came online or went offline)."""

    kind: str
    app_id: str
    data: dict[str, Any] = field(default_factory=dict)


@dataclass(slots=True)
class Reaped:
    """What a dead node held and the cluster has now let go of: presence members that left,
    users that went offline, channels now empty. The reaping node announces them."""

    members_removed: list[tuple[str, str, str]] = field(default_factory=list)  # app, channel, user
    users_offline: list[tuple[str, str]] = field(default_factory=list)  # app, user
    channels_vacated: list[tuple[str, str]] = field(default_factory=list)  # app, channel

    def add(self, other: Reaped) -> None:
        self.members_removed += other.members_removed
        self.users_offline += other.users_offline
        self.channels_vacated += other.channels_vacated

    def __bool__(self) -> bool:
        return bool(self.members_removed or self.users_offline or self.channels_vacated)


@dataclass(slots=True)
class Restored:
    """What a node's write-back after an outage changed for the whole cluster: members and users
    that joined or left on that node while it was cut off, which the other nodes never heard of."""

    members_added: list[tuple[str, str, str, Any]] = field(default_factory=list)  # app, channel, user, info
    members_removed: list[tuple[str, str, str]] = field(default_factory=list)
    users_online: list[tuple[str, str]] = field(default_factory=list)
    users_offline: list[tuple[str, str]] = field(default_factory=list)

    def __bool__(self) -> bool:
        return bool(self.members_added or self.members_removed or self.users_online or self.users_offline)


@dataclass(frozen=True, slots=True)
class Once:
    """Publish at most once per ``key`` (per app) within ``ttl`` s: a publish whose key was
    already used is skipped (an ``Idempotency-Key`` retried by an HTTP API client)."""

    key: str
    ttl: float

    @classmethod
    def for_event(cls, idempotency_key: str, index: int, channel: str, ttl: float) -> Once:
        """The key of one event (``index`` in its request) on one channel, so a retried batch that
        was half applied publishes only what is missing."""
        return cls(SEP.join((idempotency_key, str(index), channel)), ttl)


OnEvent = Callable[[Envelope], None]
OnControl = Callable[[Control], None]
OnRestored = Callable[[Restored], None]

# Presence.join results
FULL = -1
HELD = 0  # this node already held the member (idempotent re-join)
FIRST = 1  # the member is new to the whole cluster


class Part(Protocol):
    """What every part has: the node it speaks for, its health and its lifecycle."""

    node_id: str

    @property
    def healthy(self) -> bool:
        """False while the part's store is unreachable (``/ready`` answers 503)."""
        ...

    async def start(self, on_event: OnEvent, on_control: OnControl, on_restored: OnRestored | None = None) -> None:
        """``on_event``/``on_control`` hear the bus; ``on_restored`` hears what a write-back after an
        outage changed (the memory twin never loses contact, so it never calls it). A part uses the
        listeners it needs."""
        ...

    async def close(self) -> None: ...


class Bus(Part, Protocol):
    """Every node, this one included, gets each envelope and control message once, in publish
    order per publisher; channels with ``keep`` also have a history."""

    async def publish(self, envelope: Envelope, keep: Keep | None = None, once: Once | None = None) -> bool:
        """With ``keep``, the event also gets the channel's next serial (in its frame and
        envelope) and is stored, atomically, so serial order is delivery order on every node.
        With ``once``, nothing happens if the key was used within its ``ttl``. Never applied twice,
        even when the store's client retries. False when skipped as already published."""
        ...

    async def control(self, message: Control) -> None: ...

    async def history(self, app_id: str, channel: str, *, after: int | None, limit: int, max_age: float) -> History:
        """Entries younger than ``max_age`` s: the oldest ``limit`` with a serial above ``after``, or,
        when ``after`` is None, the newest ``limit``."""
        ...


class Presence(Part, Protocol):
    """Members per (app, channel) and signed-in users per app, held per node."""

    async def join(self, app_id: str, channel: str, user_id: str, user_info: Any, limit: int) -> int:
        """FULL when the channel has ``limit`` other users, HELD when this node already holds the
        user, FIRST when the user is new to the cluster, more when other nodes hold them too."""
        ...

    async def leave(self, app_id: str, channel: str, user_id: str) -> bool:
        """True when the user has left the channel cluster-wide."""
        ...

    async def members(self, app_id: str, channel: str) -> dict[str, Any]: ...

    async def user_online(self, app_id: str, user_id: str) -> bool:
        """Mark the user online on this node; True when they just came online cluster-wide."""
        ...

    async def user_offline(self, app_id: str, user_id: str) -> bool:
        """True when the user has no signed-in socket left anywhere."""
        ...

    async def online(self, app_id: str, user_ids: tuple[str, ...]) -> set[str]: ...


class Counts(Part, Protocol):
    """Subscriptions per channel cluster-wide, cache channels, and the node's liveness (which
    takes over what dead nodes held)."""

    async def add_subscriptions(self, app_id: str, channel: str, delta: int) -> int:
        """Apply this node's change; the cluster-wide count after it."""
        ...

    async def subscription_count(self, app_id: str, channel: str) -> int: ...

    async def channels(self, app_id: str, prefix: str = "") -> dict[str, int]:
        """Occupied channels (count > 0) whose name starts with ``prefix``."""
        ...

    async def remember(
        self, app_id: str, channel: str, data: str, frame: str, ttl: float, once: Once | None = None
    ) -> None:
        """Cache the channel's last event, before it is published. With ``once`` (the publish's),
        nothing is written when its key was already used: a retried publish is not applied again,
        and must not bring its event back over a later one."""
        ...

    async def cached(self, app_id: str, channel: str) -> tuple[str, str, float] | None:
        """(data, frame, seconds left) of the channel's last event, if still fresh."""
        ...

    async def heartbeat(self) -> Reaped:
        """Beat for this node; take over (and report) what nodes that stopped beating held."""
        ...


class Backend(Bus, Presence, Counts, Protocol):
    """All three parts on one engine, as both twins are."""
