"""Categories: the rules (a name of 1 to 80 characters, unique among its siblings whatever the
case; a parent in the same tenant and never the category itself or one of its descendants) and
the changes. Each change is one transaction that first bumps the tenant's revision, so changes of
one tenant take turns and the checks read committed data. A change sends ``category_changed``
with the session: its broadcasts go out after the commit, and a refused change sends nothing."""

from __future__ import annotations

import datetime as dt
import unicodedata
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from .models import Category, Tenant, User, utcnow
from .realtime import category_changed

NAME_MAX = 80


@dataclass
class Invalid(Exception):
    """A 422: ``errors`` maps each field to its messages."""

    errors: dict[str, list[str]] = field(default_factory=dict)
    message: str = "The category is invalid."


class NotFound(Exception):
    pass


def as_json(category: Category) -> dict[str, Any]:
    return {
        "id": category.id,
        "tenant_id": category.tenant_id,
        "name": category.name,
        "parent_id": category.parent_id,
        "version": category.version,
        "updated_at": _iso(category.updated_at),
    }


def _iso(moment: dt.datetime) -> str:
    if moment.tzinfo is None:  # SQLite hands back naive datetimes; they were written in UTC
        moment = moment.replace(tzinfo=dt.UTC)
    return moment.isoformat().replace("+00:00", "Z")


def clean_name(raw: object) -> str:
    """The name as stored: NFC, outer spaces trimmed; raises Invalid with the reason."""
    if not isinstance(raw, str):
        raise Invalid({"name": ["The name must be text."]})
    name = unicodedata.normalize("NFC", raw).strip()
    if not name:
        raise Invalid({"name": ["The name is required."]})
    if len(name) > NAME_MAX:
        raise Invalid({"name": [f"The name may have at most {NAME_MAX} characters."]})
    if any(unicodedata.category(ch).startswith("C") for ch in name):
        raise Invalid({"name": ["The name may not contain control characters."]})
    return name


async def list_categories(session: AsyncSession, tenant_id: int) -> list[Category]:
    found = await session.scalars(
        select(Category).where(Category.tenant_id == tenant_id).order_by(Category.name_key, Category.id)
    )
    return list(found)


class Catalog:
    """The changes an admin makes; ``app`` is the sender of the domain events."""

    def __init__(self, app: object, sessions: async_sessionmaker[AsyncSession]) -> None:
        self.app = app
        self.sessions = sessions

    async def create(self, actor: User, name: object, parent_id: int | None) -> Category:
        async with self.sessions() as session, session.begin():
            await _take_turn(session, actor.tenant_id)
            clean = clean_name(name)
            parent = await self._parent(session, actor.tenant_id, parent_id)
            await _unique(session, actor.tenant_id, parent_id, clean, None)
            category = Category(tenant_id=actor.tenant_id, version=1, updated_at=utcnow())
            category.place(clean, parent_id)
            session.add(category)
            await _flush(session)
            where = f" under {parent.name}" if parent else ""
            await self._changed(session, actor, "created", category, f"{actor.name} added {clean}{where}", False)
        return category

    async def update(self, actor: User, category_id: int, changes: dict[str, Any]) -> Category:
        async with self.sessions() as session, session.begin():
            await _take_turn(session, actor.tenant_id)
            category = await self._get(session, actor.tenant_id, category_id)
            old_name, old_parent = category.name, category.parent_id
            errors: dict[str, list[str]] = {}
            name, parent_id = old_name, old_parent
            parent: Category | None = None
            if "name" in changes:
                try:
                    name = clean_name(changes["name"])
                except Invalid as exc:
                    errors.update(exc.errors)
            if "parent_id" in changes:
                parent_id = changes["parent_id"]
            try:
                parent = await self._parent(session, actor.tenant_id, parent_id, moving=category)
            except Invalid as exc:
                errors.update(exc.errors)
            if errors:
                raise Invalid(errors)
            if name == old_name and parent_id == old_parent:
                return category  # nothing changed: nothing to broadcast
            await _unique(session, actor.tenant_id, parent_id, name, category.id)
            category.place(name, parent_id)
            category.version += 1
            category.updated_at = utcnow()
            await _flush(session)
            texts = []
            if parent_id != old_parent:
                texts.append(f"moved {old_name} " + (f"under {parent.name}" if parent else "to the top level"))
            if name != old_name:
                texts.append(f"renamed {old_name} to {name}")
            action = "moved" if parent_id != old_parent else "renamed"
            await self._changed(session, actor, action, category, f"{actor.name} {' and '.join(texts)}", True)
        return category

    async def delete(self, actor: User, category_id: int) -> list[int]:
        async with self.sessions() as session, session.begin():
            await _take_turn(session, actor.tenant_id)
            category = await self._get(session, actor.tenant_id, category_id)
            everything = await list_categories(session, actor.tenant_id)
            ids = _subtree(category.id, everything)
            snapshot = as_json(category)
            snapshot["version"] = category.version + 1
            for doomed in sorted((c for c in everything if c.id in ids), key=lambda c: -_depth(c, everything)):
                await session.delete(doomed)
                await session.flush()
            await self._changed(
                session, actor, "deleted", snapshot, f"{actor.name} deleted {category.name}", True, ids=ids
            )
        return ids

    # -- helpers ------------------------------------------------------------------------------

    async def _get(self, session: AsyncSession, tenant_id: int, category_id: int) -> Category:
        category = await session.get(Category, category_id)
        if category is None or category.tenant_id != tenant_id:
            raise NotFound  # another tenant's category does not exist, as far as this user knows
        return category

    async def _parent(
        self, session: AsyncSession, tenant_id: int, parent_id: object, moving: Category | None = None
    ) -> Category | None:
        if parent_id is None:
            return None
        if not isinstance(parent_id, int) or isinstance(parent_id, bool):
            raise Invalid({"parent_id": ["The parent must be a category id."]})
        parent = await session.get(Category, parent_id)
        if parent is None or parent.tenant_id != tenant_id:
            raise Invalid({"parent_id": ["The parent category does not exist."]})
        if moving is not None:
            if parent.id == moving.id:
                raise Invalid({"parent_id": ["A category cannot be its own parent."]})
            everything = await list_categories(session, tenant_id)
            if parent.id in _subtree(moving.id, everything):
                raise Invalid({"parent_id": [f"{parent.name} is inside {moving.name}: that would make a cycle."]})
        return parent

    async def _changed(
        self,
        session: AsyncSession,
        actor: User,
        action: str,
        category: Category | dict[str, Any],
        text: str,
        notify: bool,
        ids: list[int] | None = None,
    ) -> None:
        data = as_json(category) if isinstance(category, Category) else category
        others = await session.scalars(
            select(User.id).where(User.tenant_id == actor.tenant_id, User.id != actor.id).order_by(User.id)
        )
        category_changed.send(
            self.app,
            session=session,
            action=action,
            category=data,
            actor=actor,
            text=text,
            others=list(others),
            ids=ids,
            at=_iso(utcnow()),
            notify=notify,
        )


async def _take_turn(session: AsyncSession, tenant_id: int) -> None:
    await session.execute(update(Tenant).where(Tenant.id == tenant_id).values(revision=Tenant.revision + 1))


async def _unique(session: AsyncSession, tenant_id: int, parent_id: int | None, name: str, own: int | None) -> None:
    clash = await session.scalar(
        select(Category.id).where(
            Category.tenant_id == tenant_id,
            Category.parent_key == (parent_id or 0),
            Category.name_key == name.casefold(),
            Category.id != (own or 0),
        )
    )
    if clash is not None:
        where = "at the top level" if parent_id is None else "under this parent"
        raise Invalid({"name": [f"A category named {name} already exists {where}."]})


async def _flush(session: AsyncSession) -> None:
    try:
        await session.flush()
    except IntegrityError as exc:  # the unique index, should two writers race past the check
        raise Invalid({"name": ["A category with this name already exists under this parent."]}) from exc


def _subtree(root: int, everything: list[Category]) -> list[int]:
    children: dict[int | None, list[int]] = {}
    for c in everything:
        children.setdefault(c.parent_id, []).append(c.id)
    found, todo = [], [root]
    while todo:
        current = todo.pop()
        found.append(current)
        todo.extend(children.get(current, []))
    return found


def _depth(category: Category, everything: list[Category]) -> int:
    by_id = {c.id: c for c in everything}
    depth, current = 0, category
    while current.parent_id is not None and depth <= len(everything):
        current = by_id[current.parent_id]
        depth += 1
    return depth
