"""Alembic's environment: migrations run on the app's async engine (SQLite or PostgreSQL)."""

from __future__ import annotations

import asyncio

from alembic import context
from sqlalchemy.engine import Connection

from categories_app.db import make_engine
from categories_app.models import Base
from categories_app.settings import Settings

target_metadata = Base.metadata


def _run(connection: Connection) -> None:
    # render_as_batch: SQLite alters tables by copying them, which batch mode does for us.
    context.configure(connection=connection, target_metadata=target_metadata, render_as_batch=True)
    with context.begin_transaction():
        context.run_migrations()


async def _online() -> None:
    # Set by categories_app.store; from the environment when run by the alembic command.
    url = context.config.get_main_option("sqlalchemy.url") or Settings().database_url
    engine = make_engine(url)
    async with engine.connect() as connection:
        await connection.run_sync(_run)
        await connection.commit()
    await engine.dispose()


if context.is_offline_mode():
    context.configure(url=context.config.get_main_option("sqlalchemy.url"), target_metadata=target_metadata)
    with context.begin_transaction():
        context.run_migrations()
else:
    connection = context.config.attributes.get("connection")
    if connection is not None:  # called from run_sync with a connection already open
        _run(connection)
    else:
        asyncio.run(_online())
