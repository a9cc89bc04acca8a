"""Listeners: app code emits domain events (blinker signals) and listeners turn them into
broadcasts, so models and services hold no transport code::

    category_saved = signal("category-saved")          # in the domain layer

    @listen(category_saved, broadcaster)               # in the broadcasting layer
    def category_updated(sender, *, category, **_):
        return CategoryUpdated.from_category(category)

    category_saved.send(category_service, category=c)  # app code; nothing else to do

A listener returns an event (or a list of them, or None); each is broadcast with the
broadcaster's sync face, after the surrounding transaction commits when the event asks for it.
Pass ``session=`` through the signal's keyword arguments to tie the broadcast to a SQLAlchemy
session.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

from blinker import ANY, NamedSignal, Signal, signal

from .broadcaster import Broadcaster
from .events import BroadcastEvent

ListenerResult = BroadcastEvent | Iterable[BroadcastEvent] | None
Listener = Callable[..., ListenerResult]

__all__ = ["listen", "signal"]


def listen(
    domain_event: Signal | NamedSignal, broadcaster: Broadcaster, sender: Any = ANY
) -> Callable[[Listener], Listener]:
    """Broadcast what ``listener`` returns each time ``domain_event`` is sent (by ``sender`` only,
    when given)."""

    def register(listener: Listener) -> Listener:
        def receiver(sender: Any, **kwargs: Any) -> None:
            result = listener(sender, **kwargs)
            events = [result] if isinstance(result, BroadcastEvent) else list(result or [])
            for event in events:
                broadcaster.broadcast(event, session=kwargs.get("session"))

        # Strong reference: the receiver lives as long as the signal.
        domain_event.connect(receiver, sender=sender, weak=False)
        listener.receiver = receiver  # type: ignore[attr-defined]  # so signal.disconnect(fn.receiver) works
        return listener

    return register
