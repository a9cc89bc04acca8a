"""Broadcasting: the app's events, its channel routes, and the listeners that turn domain events
into broadcasts. The domain (``catalog.py``, ``uploads.py``) only sends blinker signals; nothing
there knows about channels.

Channels (every tenant-owned name starts with ``tenant.{id}.``, docs/backend-sdk.md):

- ``private-tenant.{t}.categories``: ``category.created``, ``category.updated``, ``category.deleted``
  (members and admins of tenant t);
- ``presence-tenant.{t}.categories``: who is viewing them (name and role as member info);
- ``private-tenant.{t}.activity``: who changed what, for the tenant's admins only;
- ``private-tenant.{t}.uploads``: ``upload.started``, so open pages learn of new uploads;
- ``private-cache-tenant.{t}.uploads.{upload}``: an upload's progress and completion; a cache
  channel, so a page opened mid-upload gets the current progress at once;
- ``private-user.{u}``: notifications for one user (``notification``).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, ClassVar

from blinker import Namespace
from pydantic import Field

from clarion.broadcasting import (
    Authorizer,
    Broadcaster,
    BroadcastEvent,
    Channel,
    ChannelRoutes,
    InProcessQueue,
    MediaUploadCompleted,
    MediaUploadProgress,
    PrivateChannel,
    UserNotification,
    listen,
)
from clarion.broadcasting import CategoryCreated as SdkCategoryCreated
from clarion.broadcasting import CategoryDeleted as SdkCategoryDeleted
from clarion.broadcasting import CategoryUpdated as SdkCategoryUpdated

from .models import User

# -- domain events (sent by the domain code, with session= so broadcasts wait for the commit) ----

domain = Namespace()
category_changed = domain.signal("category-changed")
upload_started = domain.signal("upload-started")
upload_progressed = domain.signal("upload-progressed")
upload_finished = domain.signal("upload-finished")

# -- broadcast events ---------------------------------------------------------------------------


class CategoryCreated(SdkCategoryCreated):
    event_name: ClassVar[str | None] = "category.created"
    queued: ClassVar[bool] = True
    version: int = Field(ge=1)
    updated_at: str


class CategoryUpdated(SdkCategoryUpdated):
    event_name: ClassVar[str | None] = "category.updated"
    queued: ClassVar[bool] = True
    version: int = Field(ge=1)
    updated_at: str


class CategoryDeleted(SdkCategoryDeleted):
    """``ids``: the category and every descendant, deleted with it."""

    event_name: ClassVar[str | None] = "category.deleted"
    queued: ClassVar[bool] = True
    version: int = Field(ge=1)
    ids: list[int] = Field(min_length=1)


class Activity(BroadcastEvent):
    """One line of the admins' activity feed."""

    event_name: ClassVar[str | None] = "activity"
    queued: ClassVar[bool] = True
    tenant_id: int
    actor: str = Field(min_length=1, max_length=100)
    text: str = Field(min_length=1, max_length=500)
    at: str

    def broadcast_on(self) -> Sequence[Channel]:
        return [PrivateChannel(f"tenant.{self.tenant_id}.activity")]


class Notice(UserNotification):
    queued: ClassVar[bool] = True


class UploadStarted(BroadcastEvent):
    event_name: ClassVar[str | None] = "upload.started"
    queued: ClassVar[bool] = True
    tenant_id: int
    upload_id: str = Field(pattern=r"^[A-Za-z0-9_\-]{1,64}$")
    filename: str = Field(min_length=1, max_length=255)
    size: int = Field(ge=0)
    by: str

    def broadcast_on(self) -> Sequence[Channel]:
        return [PrivateChannel(f"tenant.{self.tenant_id}.uploads")]


class UploadProgress(MediaUploadProgress):
    event_name: ClassVar[str | None] = "MediaUploadProgress"
    queued: ClassVar[bool] = True


class UploadCompleted(MediaUploadCompleted):
    event_name: ClassVar[str | None] = "MediaUploadCompleted"
    queued: ClassVar[bool] = True


class UploadFailed(MediaUploadCompleted):
    """The same channel and shape as completion, so a late page learns the end either way."""

    event_name: ClassVar[str | None] = "MediaUploadFailed"
    queued: ClassVar[bool] = True
    url: str = "-"
    reason: str = Field(min_length=1, max_length=200)


# -- channel routes -------------------------------------------------------------------------------

routes = ChannelRoutes()


@routes.channel("tenant.{tenant_id:int}.categories")
def tenant_categories(user: User, tenant_id: int) -> dict[str, Any] | bool:
    """Members and admins of the tenant; on the presence channel, their id, name and role."""
    if user.tenant_id != tenant_id:
        return False
    return {"id": user.id, "name": user.name, "role": user.role}


@routes.channel("tenant.{tenant_id:int}.activity")
def tenant_activity(user: User, tenant_id: int) -> bool:
    return user.tenant_id == tenant_id and user.is_admin


@routes.channel("tenant.{tenant_id:int}.uploads")
def tenant_uploads(user: User, tenant_id: int) -> bool:
    return user.tenant_id == tenant_id


@routes.channel("tenant.{tenant_id:int}.uploads.{upload_id}")
def tenant_upload(user: User, tenant_id: int, upload_id: str) -> bool:
    return user.tenant_id == tenant_id


@routes.channel("user.{user_id:int}")
def own_notifications(user: User, user_id: int) -> bool:
    return user.id == user_id


# -- wiring ---------------------------------------------------------------------------------------


def make_broadcaster(
    driver_url: str, queue: InProcessQueue | None = None, redis_url: str | None = None, prefix: str = ""
) -> Broadcaster:
    """Queued events go to ``queue`` (in this process), or with ``redis_url`` to the broadcast
    queue in Redis that ``clarion broadcast-worker`` drains."""
    if redis_url is not None:
        from clarion.broadcasting.integrations.queue import RedisQueue  # needs the queue extra (Dramatiq)

        return Broadcaster(driver_url, queue=RedisQueue(redis_url, prefix=prefix))
    return Broadcaster(driver_url, queue=queue or InProcessQueue())


def make_authorizer(broadcaster: Broadcaster) -> Authorizer:
    return Authorizer(broadcaster, routes, user_info=lambda user: {"name": user.name, "role": user.role})


def wire(broadcaster: Broadcaster, app: object) -> None:
    """Connect the listeners for the domain events that ``app`` sends (its context object: several
    apps in one process, as in the tests, each hear only their own)."""

    @listen(category_changed, broadcaster, sender=app)
    def on_category_changed(
        sender: Any,
        *,
        action: str,
        category: dict[str, Any],
        actor: User,
        text: str,
        others: list[int],
        ids: list[int] | None = None,
        at: str,
        notify: bool,
        **_: Any,
    ) -> list[BroadcastEvent]:
        common = {k: category[k] for k in ("tenant_id", "id", "name", "parent_id", "version")}
        events: list[BroadcastEvent] = []
        if action == "created":
            events.append(CategoryCreated(**common, updated_at=category["updated_at"]).to_others())
        elif action == "deleted":
            events.append(CategoryDeleted(**common, ids=ids or [category["id"]]).to_others())
        else:
            events.append(CategoryUpdated(**common, updated_at=category["updated_at"]).to_others())
        events.append(Activity(tenant_id=category["tenant_id"], actor=actor.name, text=text, at=at))
        if notify:
            data = {"category_id": category["id"], "action": action}
            events += [Notice(user_id=uid, kind=f"category.{action}", title=text, data=data) for uid in others]
        return events

    @listen(upload_started, broadcaster, sender=app)
    def on_upload_started(sender: Any, *, upload: dict[str, Any], by: str, **_: Any) -> BroadcastEvent:
        return UploadStarted(
            tenant_id=upload["tenant_id"],
            upload_id=upload["id"],
            filename=upload["filename"],
            size=upload["size"],
            by=by,
        )

    @listen(upload_progressed, broadcaster, sender=app)
    def on_upload_progressed(sender: Any, *, upload: dict[str, Any], **_: Any) -> BroadcastEvent:
        return UploadProgress(
            tenant_id=upload["tenant_id"],
            upload_id=upload["id"],
            filename=upload["filename"],
            bytes_received=upload["received"],
            bytes_total=max(1, upload["size"]),
        )

    @listen(upload_finished, broadcaster, sender=app)
    def on_upload_finished(
        sender: Any, *, upload: dict[str, Any], reason: str | None = None, **_: Any
    ) -> BroadcastEvent:
        fields = {
            "tenant_id": upload["tenant_id"],
            "upload_id": upload["id"],
            "filename": upload["filename"],
            "size": upload["size"],
        }
        if reason is not None:
            return UploadFailed(**fields, reason=reason)
        return UploadCompleted(**fields, url=upload["url"])
