"""Broadcast events, as Laravel's ``ShouldBroadcast`` classes.

An event is a pydantic model: its fields are the payload, validated when it is built, so a bad
payload raises ``pydantic.ValidationError`` at the call site and nothing is sent::

    class CategoryUpdated(BroadcastEvent):
        tenant_id: int
        id: int
        name: str

        def broadcast_on(self) -> list[Channel]:
            return [PrivateChannel(f"tenant.{self.tenant_id}.categories")]

    broadcaster.broadcast(CategoryUpdated(tenant_id=1, id=7, name="Shoes").to_others())

Class settings: ``queued`` (False: sent at once, like ``ShouldBroadcastNow``; True: through the
queue, like ``ShouldBroadcast``), ``after_commit`` (True: held until the surrounding database
transaction commits, dropped on rollback), ``event_name`` (the name on the wire; the class name
by default, as Laravel does without ``broadcastAs``).
"""

from __future__ import annotations

from abc import abstractmethod
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any, ClassVar, Self

from pydantic import BaseModel, ConfigDict, JsonValue, PrivateAttr, TypeAdapter

from .channels import Channel
from .context import current_socket_id

if TYPE_CHECKING:
    from .broadcaster import Broadcaster


class BroadcastEvent(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True)

    queued: ClassVar[bool] = False
    after_commit: ClassVar[bool] = True
    event_name: ClassVar[str | None] = None

    _except_socket: str | None = PrivateAttr(default=None)

    @abstractmethod
    def broadcast_on(self) -> Sequence[Channel]:
        """Where the event goes (Laravel's ``broadcastOn``). Every event class defines it: a class
        without it cannot be instantiated (pydantic's model metaclass is an ``ABCMeta``)."""

    def broadcast_as(self) -> str:
        return self.event_name or type(self).__name__

    def broadcast_with(self) -> Mapping[str, Any]:
        """The data sent; the model's fields by default."""
        return self.model_dump(mode="json")

    def broadcast_when(self) -> bool:
        return True

    def to_others(self) -> Self:
        """Skip the socket that made the current request (its ``X-Socket-ID``)."""
        self._except_socket = current_socket_id()
        return self

    def dont_broadcast_to(self, socket_id: str | None) -> Self:
        self._except_socket = socket_id
        return self

    @property
    def except_socket(self) -> str | None:
        return self._except_socket


_JSON_OBJECT: TypeAdapter[dict[str, JsonValue]] = TypeAdapter(dict[str, JsonValue])


class AnonymousEvent(BroadcastEvent):
    """A one-off message, built by ``broadcaster.on(...).as_(...).with_(...)``."""

    model_config = ConfigDict(extra="forbid", arbitrary_types_allowed=True)

    channels: list[Channel]
    name: str = "AnonymousEvent"
    payload: dict[str, JsonValue] = {}

    def broadcast_on(self) -> Sequence[Channel]:
        return self.channels

    def broadcast_as(self) -> str:
        return self.name

    def broadcast_with(self) -> Mapping[str, Any]:
        return self.payload


class PendingBroadcast:
    """Laravel's ``Broadcast::on(...)->as(...)->with(...)->send()``, in Python."""

    def __init__(self, broadcaster: Broadcaster, channels: Sequence[Channel]) -> None:
        self._broadcaster = broadcaster
        self._channels = list(channels)
        self._name = "AnonymousEvent"
        self._payload: dict[str, JsonValue] = {}
        self._except: str | None = None

    def as_(self, name: str) -> Self:
        self._name = name
        return self

    def with_(self, payload: Mapping[str, Any] | BaseModel) -> Self:
        data = payload.model_dump(mode="json") if isinstance(payload, BaseModel) else dict(payload)
        self._payload = _JSON_OBJECT.validate_python(data)
        return self

    def to_others(self) -> Self:
        self._except = current_socket_id()
        return self

    def event(self) -> AnonymousEvent:
        event = AnonymousEvent(channels=self._channels, name=self._name, payload=self._payload)
        return event.dont_broadcast_to(self._except)

    def send(self) -> None:
        """Through the queue (the broadcaster's queue, or at once in its synchronous mode)."""
        self._broadcaster.broadcast(self.event(), queued=True)

    def send_now(self) -> None:
        self._broadcaster.broadcast(self.event(), queued=False)

    async def asend(self) -> None:
        await self._broadcaster.abroadcast(self.event(), queued=True)

    async def asend_now(self) -> None:
        await self._broadcaster.abroadcast(self.event(), queued=False)
