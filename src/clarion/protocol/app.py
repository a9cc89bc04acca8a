"""An app's identity and limits, as the protocol core sees them (plain data, no I/O)."""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import Enum

from .channels import DEFAULT_MAX_CHANNEL_NAME


class ClientEvents(Enum):
    """Who may send ``client-`` events on private and presence channels: only sockets
    subscribed to the channel (``members``, Pusher's rule), any socket of the app (``all``, as
    Reverb's ``accept_client_events_from``), or nobody (``none``)."""

    MEMBERS = "members"
    ALL = "all"
    NONE = "none"


@dataclass(frozen=True, slots=True)
class HistoryRule:
    """Channels whose name starts with ``prefix`` keep their last ``size`` server events for
    ``ttl`` seconds, so a client can resume or rewind. ``size`` 0 keeps nothing."""

    prefix: str
    size: int
    ttl: float


# Off for public channels: anyone may read them, and they carry the widest, busiest streams, where
# a write per event costs most and a client can refetch public state cheaply. On for the private
# and presence channels that carry a user's or tenant's own updates.
DEFAULT_HISTORY = (HistoryRule("private-", 100, 300.0), HistoryRule("presence-", 100, 300.0))


@dataclass(frozen=True, slots=True)
class App:
    id: str
    key: str
    secret: str
    enabled: bool = True
    max_connections: int | None = None
    max_message_size: int = 10 * 1024  # bytes of event data, Pusher's 10 KB
    max_channel_name_length: int = DEFAULT_MAX_CHANNEL_NAME
    max_event_name_length: int = 200
    max_channels_per_connection: int = 100
    max_channels_per_event: int = 100
    max_batch_events: int = 10
    max_presence_members: int = 100
    max_presence_user_info: int = 1024
    client_events: ClientEvents = ClientEvents.MEMBERS
    client_event_rate: int = 10  # per second per connection
    activity_timeout: int = 30  # seconds, sent to clients in connection_established
    signin_timeout: float = 0.0  # seconds a socket has to pusher:signin; 0 = no limit
    cache_ttl: float = 30 * 60.0  # seconds a cache channel keeps its last event
    subscription_count_events: bool = False  # pusher_internal:subscription_count to subscribers
    allowed_origins: tuple[str, ...] = field(default=("*",))
    history: tuple[HistoryRule, ...] = DEFAULT_HISTORY

    def history_for(self, channel: str) -> HistoryRule | None:
        """The rule with the longest matching prefix; None when the channel keeps no history."""
        best: HistoryRule | None = None
        for rule in self.history:
            if channel.startswith(rule.prefix) and (best is None or len(rule.prefix) > len(best.prefix)):
                best = rule
        return best if best is not None and best.size > 0 else None

    def origin_allowed(self, origin: str | None) -> bool:
        if "*" in self.allowed_origins:
            return True
        if origin is None:
            # Non-browser clients send no Origin; an allow-list is about browsers, but a
            # configured list is a promise, so only listed origins get through.
            return False
        return any(origin_matches(pattern, origin) for pattern in self.allowed_origins)


def origin_matches(pattern: str, origin: str) -> bool:
    """``https://app.example`` matches itself; ``https://*.example`` any one-or-more-label
    subdomain; a pattern without a scheme is compared with the origin's host (and port)."""
    pattern = pattern.rstrip("/").lower()
    origin = origin.rstrip("/").lower()
    if "://" not in pattern:
        origin = origin.split("://", 1)[-1]
    if "*" not in pattern:
        return pattern == origin
    prefix, _, suffix = pattern.partition("*")
    if not (origin.startswith(prefix) and origin.endswith(suffix)) or len(origin) <= len(prefix) + len(suffix):
        return False
    middle = origin[len(prefix) : len(origin) - len(suffix)]
    return all(c.isalnum() or c in "-." for c in middle) and not middle.startswith(".")
