"""Channel kinds (by prefix) and channel-name rules."""

from __future__ import annotations

import re
from dataclasses import dataclass
from enum import Enum
from functools import lru_cache


class Kind(Enum):
    PUBLIC = "public"
    PRIVATE = "private"
    ENCRYPTED = "encrypted"
    PRESENCE = "presence"
    USER = "user"  # "#server-to-user-<id>", joined through pusher:signin


@dataclass(frozen=True, slots=True)
class ChannelKind:
    kind: Kind
    cache: bool

    @property
    def needs_auth(self) -> bool:
        return self.kind in (Kind.PRIVATE, Kind.ENCRYPTED, Kind.PRESENCE)

    @property
    def is_presence(self) -> bool:
        return self.kind is Kind.PRESENCE

    @property
    def allows_client_events(self) -> bool:
        # Pusher: private and presence only; never encrypted (the server can't read them).
        return self.kind in (Kind.PRIVATE, Kind.PRESENCE)


USER_CHANNEL_PREFIX = "#server-to-user-"

# Longest prefix first: "private-encrypted-cache-" must win over "private-".
_PREFIXES: tuple[tuple[str, ChannelKind], ...] = (
    ("private-encrypted-cache-", ChannelKind(Kind.ENCRYPTED, cache=True)),
    ("private-encrypted-", ChannelKind(Kind.ENCRYPTED, cache=False)),
    ("private-cache-", ChannelKind(Kind.PRIVATE, cache=True)),
    ("private-", ChannelKind(Kind.PRIVATE, cache=False)),
    ("presence-cache-", ChannelKind(Kind.PRESENCE, cache=True)),
    ("presence-", ChannelKind(Kind.PRESENCE, cache=False)),
    ("cache-", ChannelKind(Kind.PUBLIC, cache=True)),
    (USER_CHANNEL_PREFIX, ChannelKind(Kind.USER, cache=False)),
)
_PUBLIC = ChannelKind(Kind.PUBLIC, cache=False)

# Pusher's documented alphabet: letters, digits and _ - = @ , . ;
_NAME_CHARS = re.compile(r"[A-Za-z0-9_\-=@,.;]+")
DEFAULT_MAX_CHANNEL_NAME = 164


@lru_cache(maxsize=4096)
def kind_of(name: str) -> ChannelKind:
    for prefix, kind in _PREFIXES:
        if name.startswith(prefix):
            return kind
    return _PUBLIC


def name_problem(name: str, max_length: int = DEFAULT_MAX_CHANNEL_NAME) -> str | None:
    """Why ``name`` is not a valid channel name, or None when it is.

    ``#server-to-user-<id>`` is valid only in that exact form; the rest of its name follows the
    usual alphabet.
    """
    if not name:
        return "Channel name is empty"
    if len(name) > max_length:
        return f"Channel name is longer than {max_length} characters"
    body = name[len(USER_CHANNEL_PREFIX) :] if name.startswith(USER_CHANNEL_PREFIX) else name
    if not body or _NAME_CHARS.fullmatch(body) is None:
        return "Channel name may only contain letters, digits and _ - = @ , . ;"
    return None


def is_valid_name(name: str, max_length: int = DEFAULT_MAX_CHANNEL_NAME) -> bool:
    return name_problem(name, max_length) is None
