"""The ASGI app: the JSON API, the ``/broadcasting`` routes of clarion.broadcasting, and the SPA."""

import contextlib
import logging
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

from fastapi import FastAPI, HTTPException, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import FileResponse, JSONResponse, PlainTextResponse, Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from clarion.broadcasting import InProcessQueue
from clarion.broadcasting.integrations.starlette import SocketIdMiddleware, fastapi_router

from .api import router
from .context import AppContext
from .deps import current_user
from .settings import Settings

log = logging.getLogger("categories")

MAX_BODY = 64 * 1024  # every request body but an upload's
SECURITY_HEADERS = [
    (b"x-content-type-options", b"nosniff"),
    (b"x-frame-options", b"DENY"),
    (b"referrer-policy", b"same-origin"),
]


class Guard:
    """Security headers on every answer, and a body limit on everything but uploads (which check
    their own): a Content-Length over MAX_BODY is a 413 before anything is read, and a body
    without one (chunked) is a 411, so no request body here is ever larger than announced."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                message["headers"] = [*message.get("headers", []), *SECURITY_HEADERS]
            await send(message)

        if scope["path"] != "/api/uploads":
            headers = dict(scope["headers"])
            length = headers.get(b"content-length")
            refusal = None
            if length is None and b"chunked" in headers.get(b"transfer-encoding", b""):
                refusal = JSONResponse({"message": "Send a Content-Length."}, 411)
            elif length is not None and (not length.isdigit() or int(length) > MAX_BODY):
                refusal = JSONResponse({"message": f"The body may have at most {MAX_BODY} bytes."}, 413)
            if refusal is not None:
                await refusal(scope, receive, send_with_headers)
                return
        await self.app(scope, receive, send_with_headers)


def _field(loc: tuple[Any, ...] | list[Any]) -> str:
    parts = [str(p) for p in loc if p not in ("body", "query", "path", "header")]
    return ".".join(parts) or "body"


def create_app(settings: Settings | None = None, context: AppContext | None = None) -> FastAPI:
    context = context or AppContext.build(settings or Settings())

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        queue = context.broadcaster.queue
        if isinstance(queue, InProcessQueue):
            queue.start()  # its lanes run on this loop; sync code may enqueue from threads
        yield
        await context.broadcaster.aclose()
        await context.engine.dispose()

    app = FastAPI(title="Clarion categories", lifespan=lifespan, docs_url="/api/docs", openapi_url="/api/openapi.json")
    app.state.context = context
    app.add_middleware(SocketIdMiddleware)  # X-Socket-ID, for to_others()
    app.add_middleware(Guard)
    app.include_router(router)
    app.include_router(fastapi_router(context.authorizer, current_user))

    @app.exception_handler(RequestValidationError)
    async def invalid(request: Request, exc: RequestValidationError) -> JSONResponse:
        errors: dict[str, list[str]] = {}
        for error in exc.errors():
            errors.setdefault(_field(error.get("loc", ())), []).append(str(error.get("msg", "is invalid")))
        return JSONResponse({"message": "The request is invalid.", "errors": errors}, status_code=422)

    @app.exception_handler(HTTPException)
    async def http_error(request: Request, exc: HTTPException) -> JSONResponse:
        return JSONResponse({"message": exc.detail}, status_code=exc.status_code, headers=exc.headers)

    @app.get("/health", include_in_schema=False)
    async def health() -> dict[str, str]:
        return {"status": "ok"}

    dist = context.settings.static_dir

    @app.get("/{path:path}", include_in_schema=False)
    async def spa(path: str) -> Response:
        if path.startswith(("api/", "broadcasting/")):
            return JSONResponse({"message": "Not found."}, status_code=404)
        index = dist / "index.html"
        if not index.is_file():
            return PlainTextResponse(
                "The web client is not built: `make run` builds it (npm ci && npm run build in "
                "examples/categories/web).",
                status_code=503,
            )
        wanted = _inside(dist, path)
        if wanted is not None and wanted.is_file():
            cache = "public, max-age=31536000, immutable" if path.startswith("assets/") else "no-cache"
            return FileResponse(wanted, headers={"Cache-Control": cache})
        return FileResponse(index, headers={"Cache-Control": "no-cache"})

    return app


def _inside(root: Path, path: str) -> Path | None:
    """``root/path`` when it stays inside ``root`` (no ``..`` escapes)."""
    if not path:
        return None
    candidate = (root / path).resolve()
    return candidate if candidate.is_relative_to(root.resolve()) else None
