"""``python -m categories_app`` {migrate, seed, reset, serve}."""

from __future__ import annotations

import argparse
import asyncio
import logging
import sys

from .db import make_engine, make_sessions
from .settings import Settings
from .store import migrate, seed, unmigrate


async def _seed(url: str) -> bool:
    engine = make_engine(url)
    try:
        return await seed(make_sessions(engine))
    finally:
        await engine.dispose()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m categories_app", description="The Clarion reference app.")
    commands = parser.add_subparsers(dest="command", required=True)
    commands.add_parser("migrate", help="bring the database schema up to date (Alembic)")
    commands.add_parser("seed", help="add the demo tenants, users and categories to an empty database")
    commands.add_parser("reset", help="drop everything, migrate and seed the demo data again")
    serve = commands.add_parser("serve", help="migrate, seed an empty database, and serve the app")
    serve.add_argument("--host", default="127.0.0.1")
    serve.add_argument("--port", type=int, default=8000)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    logging.getLogger("httpx").setLevel(logging.WARNING)  # one line per broadcast otherwise
    settings = Settings()
    if settings.database_url.startswith("sqlite"):
        path = settings.database_url.split(":///", 1)[-1]
        if path and path != ":memory:":
            from pathlib import Path

            Path(path).parent.mkdir(parents=True, exist_ok=True)
    if args.command == "migrate":
        migrate(settings.database_url)
    elif args.command == "seed":
        print("seeded" if asyncio.run(_seed(settings.database_url)) else "the database has data already: not seeded")
    elif args.command == "reset":
        unmigrate(settings.database_url)
        migrate(settings.database_url)
        asyncio.run(_seed(settings.database_url))
        print("reset: the demo data is back")
    elif args.command == "serve":
        import uvicorn

        from .main import create_app

        migrate(settings.database_url)
        asyncio.run(_seed(settings.database_url))
        uvicorn.run(create_app(settings), host=args.host, port=args.port, log_level="warning")
    return 0


if __name__ == "__main__":
    sys.exit(main())
