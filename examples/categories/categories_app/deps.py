"""FastAPI dependencies: the app's context, a database session, and who is asking (with the CSRF
check on every state-changing request of a signed-in browser)."""

import datetime as dt
from collections.abc import AsyncIterator
from typing import Annotated

from fastapi import Depends, HTTPException, Request
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from .context import AppContext
from .models import Session, User
from .security import CSRF_COOKIE, CSRF_HEADER, SESSION_COOKIE, csrf_ok, token_hash

SAFE_METHODS = {"GET", "HEAD", "OPTIONS"}


def app_context(request: Request) -> AppContext:
    context: AppContext = request.app.state.context
    return context


Context = Annotated[AppContext, Depends(app_context)]


async def db(context: Context) -> AsyncIterator[AsyncSession]:
    async with context.sessions() as session:
        yield session


Db = Annotated[AsyncSession, Depends(db)]


async def current_user(request: Request, context: Context) -> User | None:
    """The signed-in user, or None. A state-changing request must carry the session's CSRF token
    in both the ``csrf_token`` cookie and the ``X-CSRF-Token`` header (403 otherwise)."""
    token = request.cookies.get(SESSION_COOKIE)
    if not token or len(token) > 200:
        return None
    async with context.sessions() as session:
        row = await session.execute(
            select(Session, User).join(User, User.id == Session.user_id).where(Session.token_hash == token_hash(token))
        )
        found = row.first()
    if found is None:
        return None
    stored, user = found
    expires = stored.expires_at if stored.expires_at.tzinfo else stored.expires_at.replace(tzinfo=dt.UTC)
    if expires <= dt.datetime.now(dt.UTC):
        return None
    if request.method not in SAFE_METHODS and not csrf_ok(
        request.cookies.get(CSRF_COOKIE), request.headers.get(CSRF_HEADER), stored.csrf_token
    ):
        raise HTTPException(
            403, "The CSRF token is missing or wrong: send the csrf_token cookie's value as X-CSRF-Token."
        )
    request.state.session_hash = stored.token_hash
    return user


MaybeUser = Annotated[User | None, Depends(current_user)]


def signed_in(user: MaybeUser) -> User:
    if user is None:
        raise HTTPException(401, "Sign in first.")
    return user


CurrentUser = Annotated[User, Depends(signed_in)]


def admin(user: CurrentUser) -> User:
    if not user.is_admin:
        raise HTTPException(403, "Only admins may change categories.")
    return user


Admin = Annotated[User, Depends(admin)]
