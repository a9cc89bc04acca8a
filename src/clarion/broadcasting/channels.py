"""Channels an event is broadcast on, named as in Laravel: the prefix comes from the class."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from ..protocol.channels import USER_CHANNEL_PREFIX, name_problem
from .errors import BroadcastError


@dataclass(frozen=True)
class Channel:
    """A public channel (``cache=True``: a ``cache-`` channel, whose last event a late subscriber gets)."""

    name: str
    cache: bool = False
    prefix: ClassVar[str] = ""

    def __post_init__(self) -> None:
        problem = name_problem(self.full_name) if self.name else "Channel name is empty"
        if problem is not None:
            raise BroadcastError(f"invalid channel {self.full_name!r}: {problem}")
        if self.name.startswith(("private-", "presence-", "cache-", USER_CHANNEL_PREFIX)):
            raise BroadcastError(
                f"channel {self.name!r} already has a prefix: give the bare name to {type(self).__name__}"
            )

    @property
    def full_name(self) -> str:
        return f"{self.prefix}{'cache-' if self.cache else ''}{self.name}"

    @property
    def encrypted(self) -> bool:
        return False

    def __str__(self) -> str:
        return self.full_name


@dataclass(frozen=True)
class PrivateChannel(Channel):
    prefix: ClassVar[str] = "private-"


@dataclass(frozen=True)
class PresenceChannel(Channel):
    prefix: ClassVar[str] = "presence-"


@dataclass(frozen=True)
class EncryptedPrivateChannel(Channel):
    """``private-encrypted-``: the payload is sealed with the channel's key before it leaves."""

    prefix: ClassVar[str] = "private-encrypted-"

    @property
    def encrypted(self) -> bool:
        return True


@dataclass(frozen=True)
class UserChannel(Channel):
    """``#server-to-user-{id}``: every socket a signed-in user has open."""

    prefix: ClassVar[str] = USER_CHANNEL_PREFIX


def is_encrypted(full_name: str) -> bool:
    return full_name.startswith("private-encrypted-")
