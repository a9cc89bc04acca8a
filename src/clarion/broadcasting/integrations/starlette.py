"""Starlette and FastAPI: the ``/broadcasting/*`` routes and the ``X-Socket-ID`` middleware.

FastAPI::

    app.add_middleware(SocketIdMiddleware)
    app.include_router(fastapi_router(authorizer, current_user))  # current_user: your dependency

``current_user`` is the app's own dependency that gives the signed-in user, or None for a guest
(a guest is refused with 403). Plain Starlette: ``Mount("/broadcasting", routes=starlette_routes(
authorizer, get_user))`` with ``get_user(request)`` returning the user (sync or async).
"""

import inspect
from collections.abc import Awaitable, Callable, Mapping
from typing import TYPE_CHECKING, Annotated, Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route
from starlette.types import ASGIApp, Receive, Scope, Send

from ..auth import Authorizer
from ..context import socket_id
from ..errors import AuthorizationRefused, BroadcastRefused, BroadcastUnavailable

if TYPE_CHECKING:
    from fastapi import APIRouter

MAX_BODY = 16 * 1024


class SocketIdMiddleware:
    """Reads ``X-Socket-ID`` for ``to_others()`` during each HTTP request."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        raw = next((v for k, v in scope["headers"] if k == b"x-socket-id"), None)
        with socket_id(raw.decode("latin-1") if raw is not None else None):
            await self.app(scope, receive, send)


async def request_params(request: Request) -> Mapping[str, Any]:
    """The form or JSON body (pusher-js posts a form), or the query string for GET."""
    if request.method == "GET":
        return dict(request.query_params)
    length = request.headers.get("content-length")
    if length is not None and (not length.isdigit() or int(length) > MAX_BODY):
        raise AuthorizationRefused(f"the request body must be at most {MAX_BODY} bytes", 413)
    content_type = request.headers.get("content-type", "")
    if content_type.startswith("application/json"):
        try:
            body = await request.json()
        except ValueError as exc:
            raise AuthorizationRefused("the JSON body does not parse", 400) from exc
        if not isinstance(body, dict):
            raise AuthorizationRefused("the JSON body must be an object", 400)
        return body
    form = await request.form(max_files=0, max_fields=20)
    return {k: v for k, v in form.items() if isinstance(v, str)}


def _refused(exc: AuthorizationRefused) -> JSONResponse:
    return JSONResponse({"error": exc.reason}, status_code=exc.status)


async def _guarded(call: Callable[[], Awaitable[Any]]) -> Response:
    try:
        return JSONResponse(await call())
    except AuthorizationRefused as exc:
        return _refused(exc)
    except BroadcastRefused as exc:
        return JSONResponse({"error": exc.reason}, status_code=exc.status)
    except BroadcastUnavailable as exc:
        return JSONResponse({"error": exc.reason}, status_code=502)


async def handle_auth(authorizer: Authorizer, request: Request, user: Any) -> Response:
    async def call() -> Any:
        return await authorizer.authorize(user, await request_params(request))

    return await _guarded(call)


async def handle_user_auth(authorizer: Authorizer, request: Request, user: Any) -> Response:
    async def call() -> Any:
        return authorizer.authenticate_user(user, await request_params(request))

    return await _guarded(call)


async def handle_history(authorizer: Authorizer, request: Request, user: Any) -> Response:
    async def call() -> Any:
        return await authorizer.history(user, await request_params(request))

    return await _guarded(call)


def starlette_routes(authorizer: Authorizer, get_user: Callable[[Request], Any]) -> list[Route]:
    """``/auth``, ``/user-auth`` and ``/history`` for ``Mount("/broadcasting", routes=...)``."""

    async def user_of(request: Request) -> Any:
        user = get_user(request)
        return await user if inspect.isawaitable(user) else user

    async def auth(request: Request) -> Response:
        return await handle_auth(authorizer, request, await user_of(request))

    async def user_auth(request: Request) -> Response:
        return await handle_user_auth(authorizer, request, await user_of(request))

    async def history(request: Request) -> Response:
        return await handle_history(authorizer, request, await user_of(request))

    return [
        Route("/auth", auth, methods=["POST"]),
        Route("/user-auth", user_auth, methods=["POST"]),
        Route("/history", history, methods=["GET"]),
    ]


def fastapi_router(
    authorizer: Authorizer, current_user: Callable[..., Any], prefix: str = "/broadcasting"
) -> "APIRouter":
    """An APIRouter with the three routes; ``current_user`` is a FastAPI dependency.

    (This module keeps its annotations evaluated: FastAPI reads the routes' parameter types,
    and ``User`` below is local.)"""
    from fastapi import APIRouter, Depends

    router = APIRouter(prefix=prefix, tags=["broadcasting"])
    User = Annotated[Any, Depends(current_user)]

    @router.post("/auth")
    async def auth(request: Request, user: User) -> Response:
        return await handle_auth(authorizer, request, user)

    @router.post("/user-auth")
    async def user_auth(request: Request, user: User) -> Response:
        return await handle_user_auth(authorizer, request, user)

    @router.get("/history")
    async def history(request: Request, user: User) -> Response:
        return await handle_history(authorizer, request, user)

    return router
