"""SQLAlchemy: broadcasts held until the session commits (dropped on rollback), and model
broadcasting through mapper events.

::

    broadcaster.broadcast(CategoryUpdated(...), session=session)   # sent after session.commit()
    broadcast_model(broadcaster, Category, ModelBroadcast(channels=..., payload=...))
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from sqlalchemy import event
from sqlalchemy.orm import Session, object_session

from ..broadcaster import Broadcaster
from ..models import Action, ModelBroadcast

_PENDING = "clarion_broadcasts_pending"


def _pending(session: Session) -> list[Callable[[], None]]:
    pending: list[Callable[[], None]] = session.info.setdefault(_PENDING, [])
    return pending


def defer_until_commit(session: Any, callback: Callable[[], None]) -> bool:
    """Run ``callback`` after ``session`` commits; at once when it has no transaction open."""
    sync = getattr(session, "sync_session", session)  # AsyncSession wraps a Session
    if not isinstance(sync, Session):
        raise TypeError(f"session= takes a SQLAlchemy Session, not {type(session).__name__}")
    if not sync.in_transaction():
        return False
    _listen(sync)
    _pending(sync).append(callback)
    return True


def _after_commit(session: Session) -> None:
    # A nested (SAVEPOINT) commit fires this too; only the outermost commit makes data visible.
    if session.in_nested_transaction():
        return
    callbacks = session.info.pop(_PENDING, [])
    for callback in callbacks:
        callback()


def _after_rollback(session: Session) -> None:
    session.info.pop(_PENDING, None)


def _listen(session: Session) -> None:
    if not event.contains(session, "after_commit", _after_commit):
        event.listen(session, "after_commit", _after_commit)
        event.listen(session, "after_rollback", _after_rollback)


def broadcast_model(broadcaster: Broadcaster, model: type[Any], how: ModelBroadcast) -> None:
    """Broadcast ``model``'s inserts, updates and deletes once their session commits."""

    def hook(action: Action) -> Callable[..., None]:
        def on_change(mapper: Any, connection: Any, target: Any) -> None:
            built = how.event(target, action)
            if built is None:
                return
            session = object_session(target)
            # The row is only visible after the commit: always wait for it.
            broadcaster.broadcast(built, queued=how.queued, session=session)

        return on_change

    event.listen(model, "after_insert", hook("created"))
    event.listen(model, "after_update", hook("updated"))
    event.listen(model, "after_delete", hook("deleted"))
