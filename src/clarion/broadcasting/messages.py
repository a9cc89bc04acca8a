"""A message is one event ready for the wire: channels, name, JSON data (sealed for encrypted
channels), the socket to skip, and an id that makes its Idempotency-Key."""

from __future__ import annotations

import hashlib
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import orjson


def new_id() -> str:
    return uuid.uuid4().hex


@dataclass(frozen=True)
class Message:
    channels: tuple[str, ...]
    name: str
    data: str
    socket_id: str | None = None
    id: str = field(default_factory=new_id)

    def to_record(self) -> bytes:
        return orjson.dumps(
            {
                "id": self.id,
                "channels": list(self.channels),
                "name": self.name,
                "data": self.data,
                "socket_id": self.socket_id,
            }
        )

    @classmethod
    def from_record(cls, raw: bytes | str | dict[str, Any]) -> Message:
        record = raw if isinstance(raw, dict) else orjson.loads(raw)
        return cls(
            channels=tuple(record["channels"]),
            name=record["name"],
            data=record["data"],
            socket_id=record.get("socket_id"),
            id=record["id"],
        )


def idempotency_key(messages: Sequence[Message]) -> str:
    """The same messages always give the same key, so a retry after a lost answer is recognised."""
    digest = hashlib.sha256("\n".join(m.id for m in messages).encode()).hexdigest()
    return f"cb-{digest[:40]}"
