"""Settings from the environment, with defaults for ``make run`` (SQLite in ``data/``, the local
Clarion's development app)."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit

HERE = Path(__file__).resolve().parent.parent  # examples/categories
DEV_DRIVER = "pusher://clarion-key:clarion-secret@127.0.0.1:6001/1"


def database_url(raw: str) -> str:
    """An async SQLAlchemy URL: ``postgresql://`` and ``sqlite://`` get their async drivers."""
    if raw.startswith(("postgres://", "postgresql://")):
        return "postgresql+asyncpg://" + raw.split("://", 1)[1]
    if raw.startswith("sqlite://"):
        return "sqlite+aiosqlite://" + raw.split("://", 1)[1]
    return raw


@dataclass(frozen=True)
class Settings:
    database_url: str = field(
        default_factory=lambda: database_url(
            os.environ.get("CATEGORIES_DATABASE_URL", f"sqlite:///{HERE / 'data' / 'categories.db'}")
        )
    )
    # Where broadcasts go: Clarion's HTTP API, with the app's key and secret.
    driver_url: str = field(default_factory=lambda: os.environ.get("CLARION_BROADCAST_DRIVER", DEV_DRIVER))
    # Where queued broadcasts wait: unset, in this process (sent after the commit by its own
    # lanes); a Redis URL, on the broadcast queue that `clarion broadcast-worker` drains (the
    # worker's own settings: CLARION_BROADCAST_REDIS_URL and CLARION_BROADCAST_PREFIX).
    queue_redis_url: str | None = field(default_factory=lambda: os.environ.get("CLARION_BROADCAST_REDIS_URL") or None)
    queue_prefix: str = field(default_factory=lambda: os.environ.get("CLARION_BROADCAST_PREFIX", "clarion-broadcasts"))
    # What the browser connects to (Clarion's WebSocket), when it differs from the driver's host.
    ws_host: str | None = field(default_factory=lambda: os.environ.get("CATEGORIES_WS_HOST"))
    ws_port: int | None = field(
        default_factory=lambda: int(os.environ["CATEGORIES_WS_PORT"]) if os.environ.get("CATEGORIES_WS_PORT") else None
    )
    media_dir: Path = field(
        default_factory=lambda: Path(os.environ.get("CATEGORIES_MEDIA_DIR", str(HERE / "data" / "media")))
    )
    static_dir: Path = field(
        default_factory=lambda: Path(os.environ.get("CATEGORIES_STATIC_DIR", str(HERE / "web" / "dist")))
    )
    secure_cookies: bool = field(default_factory=lambda: os.environ.get("CATEGORIES_SECURE_COOKIES", "") == "1")
    session_days: int = 7
    max_upload_bytes: int = field(
        default_factory=lambda: int(os.environ.get("CATEGORIES_MAX_UPLOAD_BYTES", str(20 * 1024 * 1024)))
    )

    def socket_endpoint(self) -> tuple[str, int, bool]:
        """(host, port, tls) of Clarion's WebSocket for the browser."""
        parts = urlsplit(self.driver_url)
        tls = parts.scheme == "pushers"
        host = self.ws_host or parts.hostname or "127.0.0.1"
        port = self.ws_port or parts.port or (443 if tls else 80)
        return host, port, tls
