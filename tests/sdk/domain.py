"""What the two test apps (FastAPI + SQLAlchemy, Django) share: the users and tenants, the
channel routes, the domain event and its listener. Tenants 1 and 2; alice and bob are of
tenant 1, carol of tenant 2."""

from __future__ import annotations

import base64
from dataclasses import dataclass
from typing import Any

from blinker import Namespace

from clarion.broadcasting import (
    Broadcaster,
    CategoryUpdated,
    Channel,
    ChannelRoutes,
    EncryptedPrivateChannel,
    ModelBroadcast,
    listen,
)
from clarion.broadcasting.standard import tenant_categories

MASTER_KEY_B64 = base64.b64encode(bytes(range(100, 132))).decode()


@dataclass(frozen=True)
class User:
    id: int
    name: str
    tenant_id: int
    token: str


USERS = {
    "alice": User(1, "Alice", 1, "token-alice"),
    "bob": User(2, "Bob", 1, "token-bob"),
    "carol": User(3, "Carol", 2, "token-carol"),
}


def tenant_of(user: Any) -> int:
    """The user's tenant, from either app's user object."""
    member = getattr(user, "member", None)
    return int(member.tenant_id if member is not None else user.tenant_id)


def name_of(user: Any) -> str:
    return str(getattr(user, "display_name", None) or user.first_name)


routes = ChannelRoutes()


@routes.channel("tenant.{tenant_id:int}.categories")
def tenant_categories_guard(user: Any, tenant_id: int) -> bool:
    return tenant_of(user) == tenant_id


@routes.channel("tenant.{tenant_id:int}.lobby")
def tenant_lobby(user: Any, tenant_id: int) -> dict[str, Any] | bool:
    if tenant_of(user) != tenant_id:
        return False
    return {"name": name_of(user), "tenant": tenant_id}


@routes.channel("tenant.{tenant_id:int}.uploads.{upload_id}")
def tenant_upload(user: Any, tenant_id: int, upload_id: str) -> bool:
    return tenant_of(user) == tenant_id


@routes.channel("tenant.{tenant_id:int}.vault")
def tenant_vault(user: Any, tenant_id: int) -> bool:
    return tenant_of(user) == tenant_id


events = Namespace()
category_saved = events.signal("category-saved")


def wire(broadcaster: Broadcaster, app: str) -> None:
    """App start-up: the listener that turns the domain event into a broadcast. Both test apps
    live in one process: each listens to its own app's domain events."""

    @listen(category_saved, broadcaster, sender=app)
    def category_updated(sender: Any, *, category: Any, **_: Any) -> CategoryUpdated:
        event: CategoryUpdated = CategoryUpdated.from_category(category)
        return event.to_others()


def category_created_hook() -> ModelBroadcast:
    """Model broadcasting for categories: CategoryCreated and CategoryDeleted by themselves."""
    return ModelBroadcast(
        channels=lambda c: [tenant_categories(c.tenant_id)],
        payload=lambda c: {"id": c.id, "name": c.name, "tenant_id": c.tenant_id},
        name="Category",
        actions=("created", "deleted"),
    )


def vault_channel(tenant_id: int) -> Channel:
    return EncryptedPrivateChannel(f"tenant.{tenant_id}.vault")
