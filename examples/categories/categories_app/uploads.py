"""Media uploads: the browser sends the file as the request body; the app writes it to disk as
it arrives and reports progress as it goes (``upload_progressed``), so every open page, and any
page opened mid-upload (a cache channel), shows how far it is."""

from __future__ import annotations

import asyncio
import logging
import re
import secrets
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from .context import AppContext
from .models import Upload, User
from .realtime import upload_finished, upload_progressed, upload_started

log = logging.getLogger("categories.uploads")

# A progress broadcast at most every PROGRESS_EVERY seconds (and at the end): a fast upload
# sends a few events, not one per chunk.
PROGRESS_EVERY = 0.25
_SAFE = re.compile(r"[^A-Za-z0-9._ \-()]+")
IMAGE_TYPES = {"image/png", "image/jpeg", "image/gif", "image/webp"}


class UploadError(Exception):
    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


def safe_filename(raw: str) -> str:
    name = _SAFE.sub("_", Path(raw.replace("\\", "/")).name).strip(" .")
    return name[:255] or "upload"


def as_json(upload: Upload) -> dict[str, Any]:
    return {
        "id": upload.id,
        "tenant_id": upload.tenant_id,
        "filename": upload.filename,
        "size": upload.size,
        "received": upload.received,
        "status": upload.status,
        "percent": round(100.0 * upload.received / upload.size, 1) if upload.size else 100.0,
        "url": f"/api/uploads/{upload.id}/file",
    }


def file_path(context: AppContext, upload: Upload) -> Path:
    return context.settings.media_dir / str(upload.tenant_id) / upload.id


async def receive(
    context: AppContext,
    actor: User,
    filename: str,
    content_type: str,
    size: int,
    body: AsyncIterator[bytes],
) -> Upload:
    """Store the body (exactly ``size`` bytes) and broadcast its progress; the upload row is
    committed first so other pages can find it while it is under way."""
    if size > context.settings.max_upload_bytes:
        raise UploadError(413, f"Files may have at most {context.settings.max_upload_bytes} bytes.")
    upload = Upload(
        id=secrets.token_hex(8),
        tenant_id=actor.tenant_id,
        user_id=actor.id,
        filename=safe_filename(filename),
        content_type=content_type if content_type in IMAGE_TYPES else "application/octet-stream",
        size=size,
        received=0,
        status="uploading",
    )
    async with context.sessions() as session, session.begin():
        session.add(upload)
        upload_started.send(context, session=session, upload=as_json(upload), by=actor.name)
    path = file_path(context, upload)
    path.parent.mkdir(parents=True, exist_ok=True)
    last = 0.0
    try:
        with path.open("wb") as out:
            async for chunk in body:
                upload.received += len(chunk)
                if upload.received > size:
                    raise UploadError(400, "The body is longer than its Content-Length.")
                await asyncio.to_thread(out.write, chunk)
                if time.monotonic() - last >= PROGRESS_EVERY:
                    last = time.monotonic()
                    await _save_progress(context, upload)
        if upload.received != size:
            raise UploadError(400, "The upload ended before its last byte.")
    except BaseException as exc:
        await _fail(context, upload, exc)
        path.unlink(missing_ok=True)
        raise
    upload.status = "done"
    async with context.sessions() as session, session.begin():
        await session.merge(upload)
        upload_progressed.send(context, session=session, upload=as_json(upload))
        upload_finished.send(context, session=session, upload=as_json(upload))
    return upload


async def _save_progress(context: AppContext, upload: Upload) -> None:
    async with context.sessions() as session, session.begin():
        await session.merge(upload)
        upload_progressed.send(context, session=session, upload=as_json(upload))


async def _fail(context: AppContext, upload: Upload, exc: BaseException) -> None:
    reason = exc.message if isinstance(exc, UploadError) else "The upload was interrupted."
    log.warning("upload %s failed after %d of %d bytes: %s", upload.id, upload.received, upload.size, reason)
    upload.status = "failed"
    try:
        async with context.sessions() as session, session.begin():
            await session.merge(upload)
            upload_finished.send(context, session=session, upload=as_json(upload), reason=reason)
    except Exception:
        log.exception("could not record the failure of upload %s", upload.id)


async def recent(session: AsyncSession, tenant_id: int, limit: int = 20) -> list[Upload]:
    found = await session.scalars(
        select(Upload).where(Upload.tenant_id == tenant_id).order_by(Upload.created_at.desc()).limit(limit)
    )
    return list(found)
