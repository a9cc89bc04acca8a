"""Model broadcasting, as Laravel's ``BroadcastsEvents``: a model's created, updated and deleted
events go out by themselves, named ``{Model}Created``, ``{Model}Updated``, ``{Model}Deleted``.
The SQLAlchemy and Django integrations hook this into their model events."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

from .channels import Channel
from .events import AnonymousEvent

Action = Literal["created", "updated", "deleted"]


@dataclass(frozen=True)
class ModelBroadcast:
    """How one model class broadcasts: its channels and payload for an instance."""

    channels: Callable[[Any], Sequence[Channel]]
    payload: Callable[[Any], Mapping[str, Any]]
    name: str | None = None
    actions: tuple[Action, ...] = ("created", "updated", "deleted")
    queued: bool = False

    def event(self, instance: Any, action: Action) -> AnonymousEvent | None:
        if action not in self.actions:
            return None
        base = self.name or type(instance).__name__
        channels = list(self.channels(instance))
        if not channels:
            return None
        return AnonymousEvent(
            channels=channels, name=f"{base}{action.capitalize()}", payload=dict(self.payload(instance))
        )
