"""An app's identity and limits, as the protocol core sees them (plain data, no I/O).

``App`` is also where each app setting is declared, once: its type, default and bounds, and
(``settings.Env``) the environment variable that sets it. ``server/config.py`` derives the TOML and
environment validation and its tables from these fields; docs/configuration.md documents each.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum
from typing import Annotated, Any

from annotated_types import Ge, Gt, Le, MaxLen, MinLen

from .channels import DEFAULT_MAX_CHANNEL_NAME
from .settings import Check, Env, matches
from .webhooks import EVENT_TYPES

URL = r"https?://[^\s/]+(/\S*)?"
DAY = 24 * 3600.0


class ClientEvents(Enum):
    """Who may send ``client-`` events on private and presence channels: only sockets
    subscribed to the channel (``members``, Pusher's rule), any socket of the app (``all``, as
    Reverb's ``accept_client_events_from``), or nobody (``none``)."""

    MEMBERS = "members"
    ALL = "all"
    NONE = "none"


def _known_event_types(value: tuple[str, ...]) -> tuple[str, ...]:
    unknown = sorted(set(value) - EVENT_TYPES)
    if unknown:
        raise ValueError(f"unknown webhook event type(s) {unknown}; known: {sorted(EVENT_TYPES)}")
    return value


@dataclass(frozen=True, slots=True)
class WebhookTarget:
    """Where an app's webhooks go (``[[apps.webhooks]]``), and which event types."""

    url: Annotated[str, MaxLen(2048), matches(URL)]
    event_types: Annotated[tuple[str, ...], Check(_known_event_types)] = tuple(sorted(EVENT_TYPES))


@dataclass(frozen=True, slots=True)
class HistoryRule:
    """Channels whose name starts with ``prefix`` keep their last ``size`` server events for
    ``ttl`` seconds, so a client can resume or rewind. ``size`` 0 keeps nothing."""

    prefix: Annotated[str, MaxLen(200), matches(r"[A-Za-z0-9_\-=@,.;#]*")]
    size: Annotated[int, Ge(0), Le(100_000)]
    ttl: Annotated[float, Gt(0), Le(7 * DAY)] = 300.0


# Off for public channels: anyone may read them, and they carry the widest, busiest streams, where
# a write per event costs most and a client can refetch public state cheaply. On for the private
# and presence channels that carry a user's or tenant's own updates.
DEFAULT_HISTORY = (HistoryRule("private-", 100, 300.0), HistoryRule("presence-", 100, 300.0))


def _history_text(value: Any) -> Any:
    """``CLARION_HISTORY``: ``off``, or rules ``prefix:size:ttl`` separated by spaces (a comma may
    be part of a channel name, a space never is), e.g. ``private-:100:300 presence-:50:60``."""
    if not isinstance(value, str):
        return value
    if value.strip().lower() in ("off", "none"):
        return []
    rules = []
    for part in value.split():
        prefix, sep, rest = part.partition(":")
        size, sep2, ttl = rest.partition(":")
        if not sep:
            raise ValueError(f"history rule {part!r} must read prefix:size or prefix:size:ttl")
        rules.append({"prefix": prefix, "size": size, **({"ttl": ttl} if sep2 else {})})
    return rules


def _distinct_prefixes(value: tuple[HistoryRule, ...]) -> tuple[HistoryRule, ...]:
    prefixes = [rule.prefix for rule in value]
    repeated = sorted({prefix for prefix in prefixes if prefixes.count(prefix) > 1})
    if repeated:
        raise ValueError(f"history rules repeat the prefix(es) {repeated}: give each prefix one rule")
    return value


def _origins_text(value: Any) -> Any:
    """``CLARION_ALLOWED_ORIGINS``: comma-separated."""
    if isinstance(value, str):
        return [part.strip() for part in value.split(",") if part.strip()]
    return value


def _some_origins(value: tuple[str, ...]) -> tuple[str, ...]:
    return value or ("*",)  # an empty list allows every origin, as no list does


@dataclass(frozen=True, slots=True)
class App:
    """One app. Read on every frame, so a plain slotted dataclass: validation happens once, when
    the settings are loaded (server/config.py), from the bounds declared here."""

    # Identity: from [[apps]] tables, or CLARION_APP_ID, CLARION_APP_KEY and CLARION_APP_SECRET
    # together (server/config.py), not one variable per field.
    id: Annotated[str, matches(r"[A-Za-z0-9_-]{1,64}")]
    key: Annotated[str, matches(r"[A-Za-z0-9_.-]{1,128}")]
    secret: Annotated[str, MinLen(8), MaxLen(256)]
    enabled: bool = True
    max_connections: Annotated[int | None, Ge(1), Env()] = None
    max_message_size: Annotated[int, Ge(1), Le(1024 * 1024), Env()] = 10 * 1024  # bytes of event data (Pusher's 10 KB)
    max_channel_name_length: Annotated[int, Ge(16), Le(1024)] = DEFAULT_MAX_CHANNEL_NAME
    max_event_name_length: Annotated[int, Ge(16), Le(1024)] = 200
    max_channels_per_connection: Annotated[int, Ge(1), Le(100_000), Env()] = 100
    max_channels_per_event: Annotated[int, Ge(1), Le(10_000)] = 100
    max_batch_events: Annotated[int, Ge(1), Le(1000)] = 10
    max_presence_members: Annotated[int, Ge(1), Le(100_000)] = 100
    max_presence_user_info: Annotated[int, Ge(16), Le(64 * 1024)] = 1024
    client_events: Annotated[ClientEvents, Env()] = ClientEvents.MEMBERS
    client_event_rate: Annotated[int, Ge(1), Le(10_000)] = 10  # per second per connection
    # Presence subscribes that repeat (again, or after leaving one), per connection: a burst, then a rate.
    presence_resubscribe_burst: Annotated[int, Ge(1), Le(1000), Env()] = 5
    presence_resubscribe_rate: Annotated[float, Gt(0), Le(1000), Env()] = 1.0
    activity_timeout: Annotated[int, Ge(1), Le(3600), Env()] = 30  # seconds, sent in connection_established
    signin_timeout: Annotated[float, Ge(0), Le(3600), Env()] = 0.0  # seconds to pusher:signin; 0 = no limit
    cache_ttl: Annotated[float, Gt(0), Le(DAY), Env()] = 30 * 60.0  # seconds a cache channel keeps its event
    # pusher_internal:subscription_count to subscribers
    subscription_count_events: Annotated[bool, Env("CLARION_SUBSCRIPTION_COUNT")] = False
    allowed_origins: Annotated[tuple[str, ...], Check(_origins_text, before=True), Check(_some_origins), Env()] = ("*",)
    history: Annotated[tuple[HistoryRule, ...], Check(_history_text, before=True), Check(_distinct_prefixes), Env()] = (
        DEFAULT_HISTORY
    )
    # HTTP API requests a second for this app (a token bucket per worker), bursts up to api_burst
    # (default: the rate); past it, 429 with Retry-After. None: no limit.
    api_rate_limit: Annotated[float | None, Gt(0), Le(1_000_000), Env()] = None
    api_burst: Annotated[int | None, Ge(1), Le(10_000_000), Env()] = None
    webhook_url: Annotated[str | None, MaxLen(2048), matches(URL), Env()] = None  # a target for every event type
    webhooks: tuple[WebhookTarget, ...] = ()
    # The dashboard's debug console shows event data and user ids only when this is on.
    debug_payloads: Annotated[bool, Env()] = False

    @property
    def webhook_targets(self) -> tuple[WebhookTarget, ...]:
        """``webhooks`` plus ``webhook_url`` (every event type) when that is set."""
        return (*self.webhooks, WebhookTarget(self.webhook_url)) if self.webhook_url else self.webhooks

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
