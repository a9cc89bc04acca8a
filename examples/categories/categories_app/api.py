"""The JSON API: sign-in, the current user, categories, uploads and the client's settings."""

import datetime as dt
from typing import Any

from fastapi import APIRouter, Header, HTTPException, Request, Response
from fastapi.responses import FileResponse, JSONResponse
from pydantic import BaseModel, ConfigDict, Field
from sqlalchemy import delete, select

from . import uploads
from .catalog import Invalid, NotFound, as_json, list_categories
from .deps import Admin, Context, CurrentUser, Db
from .models import Session, Tenant, Upload, User
from .security import (
    CSRF_COOKIE,
    SESSION_COOKIE,
    new_token,
    token_hash,
    verify_password,
)

router = APIRouter(prefix="/api")


class LoginIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    email: str = Field(min_length=3, max_length=254)
    password: str = Field(min_length=1, max_length=200)


class CategoryIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    name: str = Field(max_length=1000)  # the 80-character rule is the catalog's, with its message
    parent_id: int | None = None


class CategoryPatch(BaseModel):
    model_config = ConfigDict(extra="forbid")
    name: str | None = Field(default=None, max_length=1000)
    parent_id: int | None = None


def me_json(user: User, tenant: Tenant) -> dict[str, Any]:
    return {
        "id": user.id,
        "email": user.email,
        "name": user.name,
        "role": user.role,
        "tenant_id": user.tenant_id,
        "tenant": {"id": tenant.id, "slug": tenant.slug, "name": tenant.name},
    }


@router.post("/login")
async def login(body: LoginIn, request: Request, context: Context, session: Db) -> Response:
    # JSON only (FastAPI refuses other bodies): a cross-site form cannot send it without a CORS
    # preflight, which this app never grants, so sign-in needs no CSRF token of its own.
    email = body.email.strip().lower()
    client = request.client.host if request.client else "-"
    if context.limiter.blocked(email, client):
        raise HTTPException(429, "Too many failed sign-ins: wait a few minutes.")
    user = await session.scalar(select(User).where(User.email == email))
    if not verify_password(user.password_hash if user else None, body.password) or user is None:
        context.limiter.failed(email, client)
        raise HTTPException(401, "Wrong email or password.")
    context.limiter.succeeded(email)
    token, csrf = new_token(), new_token()
    expires = dt.datetime.now(dt.UTC) + dt.timedelta(days=context.settings.session_days)
    session.add(Session(token_hash=token_hash(token), user_id=user.id, csrf_token=csrf, expires_at=expires))
    await session.commit()
    tenant = await session.get(Tenant, user.tenant_id)
    assert tenant is not None
    response = JSONResponse({"user": me_json(user, tenant), "csrf_token": csrf})
    secure = context.settings.secure_cookies
    max_age = context.settings.session_days * 86400
    response.set_cookie(SESSION_COOKIE, token, max_age=max_age, httponly=True, samesite="lax", secure=secure)
    # Readable by the page (not httponly): it echoes it in X-CSRF-Token.
    response.set_cookie(CSRF_COOKIE, csrf, max_age=max_age, httponly=False, samesite="lax", secure=secure)
    return response


@router.post("/logout")
async def logout(request: Request, user: CurrentUser, session: Db) -> Response:
    await session.execute(delete(Session).where(Session.token_hash == request.state.session_hash))
    await session.commit()
    response = JSONResponse({"ok": True})
    response.delete_cookie(SESSION_COOKIE)
    response.delete_cookie(CSRF_COOKIE)
    return response


@router.get("/me")
async def me(user: CurrentUser, session: Db) -> dict[str, Any]:
    tenant = await session.get(Tenant, user.tenant_id)
    assert tenant is not None
    return me_json(user, tenant)


@router.get("/config")
async def client_config(context: Context) -> dict[str, Any]:
    """What the SPA needs to reach Clarion: the app key (public) and the WebSocket address."""
    host, port, tls = context.settings.socket_endpoint()
    return {
        "key": context.authorizer.broadcaster.app_key,
        "wsHost": host,
        "wsPort": port,
        "forceTLS": tls,
        "authEndpoint": "/broadcasting/auth",
        "userAuthEndpoint": "/broadcasting/user-auth",
        "historyEndpoint": "/broadcasting/history",
    }


@router.get("/categories")
async def categories(user: CurrentUser, session: Db) -> dict[str, Any]:
    found = await list_categories(session, user.tenant_id)
    return {"categories": [as_json(c) for c in found]}


def _problem(exc: Invalid) -> JSONResponse:
    return JSONResponse({"message": exc.message, "errors": exc.errors}, status_code=422)


@router.post("/categories", status_code=201)
async def create_category(body: CategoryIn, user: Admin, context: Context) -> Any:
    try:
        category = await context.catalog.create(user, body.name, body.parent_id)
    except Invalid as exc:
        return _problem(exc)
    return as_json(category)


@router.patch("/categories/{category_id}")
async def update_category(category_id: int, body: CategoryPatch, user: Admin, context: Context) -> Any:
    changes = body.model_dump(exclude_unset=True)
    if "name" in changes and changes["name"] is None:
        return _problem(Invalid({"name": ["The name is required."]}))
    try:
        category = await context.catalog.update(user, category_id, changes)
    except Invalid as exc:
        return _problem(exc)
    except NotFound:
        raise HTTPException(404, "No such category.") from None
    return as_json(category)


@router.delete("/categories/{category_id}")
async def delete_category(category_id: int, user: Admin, context: Context) -> Any:
    try:
        ids = await context.catalog.delete(user, category_id)
    except NotFound:
        raise HTTPException(404, "No such category.") from None
    return {"deleted": ids}


@router.get("/uploads")
async def list_uploads(user: CurrentUser, session: Db) -> dict[str, Any]:
    return {"uploads": [uploads.as_json(u) for u in await uploads.recent(session, user.tenant_id)]}


@router.post("/uploads", status_code=201)
async def upload(
    request: Request,
    user: Admin,
    context: Context,
    x_filename: str = Header(max_length=1000),
    content_length: int | None = Header(default=None),
    content_type: str = Header(default="application/octet-stream", max_length=200),
) -> Any:
    """The file is the raw body; ``X-Filename`` names it (URI-encoded)."""
    from urllib.parse import unquote

    if content_length is None:
        raise HTTPException(411, "Send the file with a Content-Length.")
    if content_length < 0:
        raise HTTPException(400, "A Content-Length cannot be negative.")
    try:
        stored = await uploads.receive(
            context, user, unquote(x_filename), content_type, content_length, request.stream()
        )
    except uploads.UploadError as exc:
        raise HTTPException(exc.status, exc.message) from None
    return uploads.as_json(stored)


@router.get("/uploads/{upload_id}/file")
async def upload_file(upload_id: str, user: CurrentUser, context: Context, session: Db) -> Response:
    found = await session.get(Upload, upload_id[:32])
    if found is None or found.tenant_id != user.tenant_id or found.status != "done":
        raise HTTPException(404, "No such file.")
    # Served as a download with its checked type: an uploaded HTML page never runs as ours.
    return FileResponse(
        uploads.file_path(context, found),
        media_type=found.content_type,
        filename=found.filename,
        content_disposition_type="inline" if found.content_type in uploads.IMAGE_TYPES else "attachment",
    )
