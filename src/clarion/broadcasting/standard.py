"""Ready-made events for common updates: a notification to a user, a tenant's categories
created/updated/deleted, and media upload progress and completion.

Channel names follow the tenant convention (docs/backend-sdk.md): every tenant-owned channel
starts with ``tenant.{tenant_id}.``, and routes check the user's tenant against that id.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from typing import Any, ClassVar, Self

from pydantic import Field, JsonValue, computed_field

from .channels import Channel, PrivateChannel
from .events import BroadcastEvent

Id = int | str


def tenant_categories(tenant_id: Id) -> PrivateChannel:
    return PrivateChannel(f"tenant.{tenant_id}.categories")


def user_channel(user_id: Id) -> PrivateChannel:
    return PrivateChannel(f"user.{user_id}")


def upload_channel(tenant_id: Id, upload_id: str) -> PrivateChannel:
    # A cache channel: a subscriber that joins mid-upload gets the last progress at once.
    return PrivateChannel(f"tenant.{tenant_id}.uploads.{upload_id}", cache=True)


class UserNotification(BroadcastEvent):
    """A notification for one user, on ``private-user.{user_id}`` (Laravel's notification broadcast)."""

    event_name: ClassVar[str | None] = "notification"

    user_id: Id
    kind: str = Field(min_length=1, max_length=100)
    title: str = Field(min_length=1, max_length=500)
    body: str | None = Field(default=None, max_length=5000)
    data: dict[str, JsonValue] = Field(default_factory=dict)
    id: str = Field(default_factory=lambda: uuid.uuid4().hex)

    def broadcast_on(self) -> Sequence[Channel]:
        return [user_channel(self.user_id)]


class CategoryEvent(BroadcastEvent):
    tenant_id: Id
    id: Id
    name: str = Field(min_length=1, max_length=200)
    parent_id: Id | None = None

    def broadcast_on(self) -> Sequence[Channel]:
        return [tenant_categories(self.tenant_id)]

    @classmethod
    def from_category(cls, category: Any) -> Self:
        """From any object with ``tenant_id``, ``id``, ``name`` (and maybe ``parent_id``)."""
        return cls(
            tenant_id=category.tenant_id,
            id=category.id,
            name=category.name,
            parent_id=getattr(category, "parent_id", None),
        )


class CategoryCreated(CategoryEvent):
    pass


class CategoryUpdated(CategoryEvent):
    pass


class CategoryDeleted(CategoryEvent):
    pass


class MediaUploadProgress(BroadcastEvent):
    tenant_id: Id
    upload_id: str = Field(pattern=r"^[A-Za-z0-9_\-]{1,64}$")
    filename: str = Field(min_length=1, max_length=255)
    bytes_received: int = Field(ge=0)
    bytes_total: int = Field(gt=0)

    @computed_field  # type: ignore[prop-decorator]
    @property
    def percent(self) -> float:
        return round(min(100.0, 100.0 * self.bytes_received / self.bytes_total), 1)

    def broadcast_on(self) -> Sequence[Channel]:
        return [upload_channel(self.tenant_id, self.upload_id)]


class MediaUploadCompleted(BroadcastEvent):
    tenant_id: Id
    upload_id: str = Field(pattern=r"^[A-Za-z0-9_\-]{1,64}$")
    filename: str = Field(min_length=1, max_length=255)
    url: str = Field(min_length=1, max_length=2000)
    size: int = Field(ge=0)

    def broadcast_on(self) -> Sequence[Channel]:
        return [upload_channel(self.tenant_id, self.upload_id)]
