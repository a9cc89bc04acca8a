"""What one running app holds: settings, the database, the broadcaster and the domain services.
It is also the sender of the app's domain events (see ``realtime.wire``)."""

from __future__ import annotations

from dataclasses import dataclass, field

from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

from clarion.broadcasting import Authorizer, Broadcaster

from .catalog import Catalog
from .db import make_engine, make_sessions
from .realtime import make_authorizer, make_broadcaster, wire
from .security import LoginLimiter
from .settings import Settings


@dataclass(eq=False)
class AppContext:
    settings: Settings
    engine: AsyncEngine
    sessions: async_sessionmaker[AsyncSession]
    broadcaster: Broadcaster
    authorizer: Authorizer
    catalog: Catalog = field(init=False)
    limiter: LoginLimiter = field(default_factory=LoginLimiter)

    def __post_init__(self) -> None:
        self.catalog = Catalog(self, self.sessions)

    @classmethod
    def build(cls, settings: Settings, broadcaster: Broadcaster | None = None) -> AppContext:
        engine = make_engine(settings.database_url)
        broadcaster = broadcaster or make_broadcaster(
            settings.driver_url, redis_url=settings.queue_redis_url, prefix=settings.queue_prefix
        )
        context = cls(settings, engine, make_sessions(engine), broadcaster, make_authorizer(broadcaster))
        wire(broadcaster, context)
        return context
