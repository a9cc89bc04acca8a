"""Schema and demo data: ``migrate`` (Alembic to head), ``seed`` (the demo tenants, users and
categories, only into an empty database) and ``reset`` (everything dropped and seeded again)."""

from __future__ import annotations

import logging
from pathlib import Path

from alembic import command
from alembic.config import Config
from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from .models import Category, Role, Tenant, User
from .security import hash_password

log = logging.getLogger("categories.store")
MIGRATIONS = Path(__file__).resolve().parent / "migrations"
DEMO_PASSWORD = "demo-password"  # noqa: S105 - the documented demo logins

TENANTS = [("acme", "Acme"), ("globex", "Globex")]
USERS = [
    ("acme", "alice@acme.test", "Alice", Role.ADMIN),
    ("acme", "bob@acme.test", "Bob", Role.MEMBER),
    ("globex", "carol@globex.test", "Carol", Role.ADMIN),
]
# (tenant, name, parent name)
CATEGORIES = [
    ("acme", "Apparel", None),
    ("acme", "Shirts", "Apparel"),
    ("acme", "Shoes", None),
    ("acme", "Electronics", None),
    ("acme", "Phones", "Electronics"),
    ("acme", "Garden", None),
    ("globex", "Hardware", None),
    ("globex", "Tools", "Hardware"),
    ("globex", "Software", None),
]


def alembic_config(url: str) -> Config:
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    config.set_main_option("sqlalchemy.url", url.replace("%", "%%"))
    return config


def migrate(url: str) -> None:
    """Bring the schema to the newest revision (no-op when it is there). Blocking: not on a loop."""
    command.upgrade(alembic_config(url), "head")


def unmigrate(url: str) -> None:
    command.downgrade(alembic_config(url), "base")


async def seed(sessions: async_sessionmaker[AsyncSession]) -> bool:
    """The demo data, into an empty database only; True when it seeded."""
    async with sessions() as session, session.begin():
        if await session.scalar(select(func.count()).select_from(Tenant)):
            return False
        tenants = {slug: Tenant(slug=slug, name=name, revision=0) for slug, name in TENANTS}
        session.add_all(tenants.values())
        await session.flush()
        password = hash_password(DEMO_PASSWORD)
        for slug, email, name, role in USERS:
            session.add(User(tenant_id=tenants[slug].id, email=email, name=name, role=role, password_hash=password))
        made: dict[tuple[str, str], Category] = {}
        for slug, name, parent in CATEGORIES:
            category = Category(tenant_id=tenants[slug].id, version=1)
            category.place(name, made[(slug, parent)].id if parent else None)
            session.add(category)
            await session.flush()
            made[(slug, name)] = category
    log.info("seeded the demo tenants, users and categories")
    return True
