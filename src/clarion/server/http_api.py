"""The Pusher HTTP API: signed requests in, events out to the bus, channel state back."""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any

from aiohttp import web

from ..observability import metrics
from ..observability.logs import fields
from ..protocol import api, history, messages
from ..protocol.app import App
from ..protocol.channels import Kind, kind_of
from ..protocol.errors import ApiError
from ..protocol.signatures import verify_api_request, verify_channel_auth
from .node import Node

log = logging.getLogger("clarion.api")

# The node, as the aiohttp application carries it.
NODE: web.AppKey[Node] = web.AppKey("clarion_node")

Handler = Callable[[web.Request, Node, App, bytes], Awaitable[Any]]


def signed(
    endpoint: str, handler: Handler, *, browser: bool = False
) -> Callable[[web.Request], Awaitable[web.Response]]:
    """Wrap ``handler``: find the app, check the signature, map ApiError to its status, count it.

    The app comes from ``{app_id}`` in the path or, on the official Python SDK's unprefixed
    ``/users/...`` path, from the signed ``auth_key``. With ``browser``, a request without an API
    signature may instead prove itself the way a subscription does (``authorize_browser``).
    """

    async def wrapped(request: web.Request) -> web.Response:
        started = time.perf_counter()
        node = request.app[NODE]
        status = 200
        app: App | None = None
        try:
            if "app_id" in request.match_info:
                app = node.apps_by_id.get(request.match_info["app_id"])
            else:
                app = node.apps_by_key.get(request.query.get("auth_key", ""))
            if app is None:
                raise ApiError(404, "Unknown app")
            body = await request.read()
            headers: dict[str, str] = {}
            if browser and "auth_signature" not in request.query:
                headers = authorize_browser(request, app)
            else:
                raw_path = request.raw_path.split("?", 1)[0]
                paths = (raw_path,) if raw_path == request.path else (raw_path, request.path)
                verify_api_request(
                    key=app.key,
                    secret=app.secret,
                    method=request.method,
                    paths=paths,
                    params={k: request.query[k] for k in request.query},
                    body=body,
                    now=time.time(),
                )
            if not app.enabled:
                raise ApiError(403, "Application disabled")
            answer = await handler(request, node, app, body)
            if isinstance(answer, web.Response):
                answer.headers.update(headers)
                return answer
            return web.json_response(answer, dumps=messages.dumps, headers=headers)
        except ApiError as exc:
            status = exc.status
            headers = cors_headers(request, app) if browser and app is not None else {}
            if status == 401:
                log.info(
                    "api request refused",
                    extra=fields(
                        app_id=request.match_info.get("app_id", "")[:64], endpoint=endpoint, error=exc.message
                    ),
                )
            return web.json_response({"error": exc.message}, status=status, headers=headers)
        except web.HTTPException as exc:
            status = exc.status
            raise
        finally:
            metrics.API_REQUESTS.labels(endpoint=endpoint, status=str(status)).inc()
            metrics.API_LATENCY.labels(endpoint=endpoint).observe(time.perf_counter() - started)

    return wrapped


async def _counts(
    node: Node, app: App, channel: str, info: frozenset[str], *, occupied: bool = False, known: int | None = None
) -> dict[str, Any]:
    """Cluster-wide answers, from the scaling backend rather than from asking every node."""
    backend = node.backend
    count = known if known is not None else await backend.subscription_count(app.id, channel)
    users = (
        len(await backend.members(app.id, channel)) if "user_count" in info and kind_of(channel).is_presence else None
    )
    return api.channel_info(info, count, users, always_occupied=occupied)


async def _publish(node: Node, app: App, trigger: api.Trigger) -> None:
    for channel in trigger.channels:
        frame = messages.channel_event(trigger.name, channel, trigger.data)
        await node.publish(app, channel, frame, trigger.socket_id, "api", data=trigger.data)


async def trigger_event(request: web.Request, node: Node, app: App, body: bytes) -> Any:
    trigger = api.parse_trigger_body(body, app)
    await _publish(node, app, trigger)
    await node.settle()
    if not trigger.info:
        return {}
    return {"channels": {channel: await _counts(node, app, channel, trigger.info) for channel in trigger.channels}}


async def trigger_batch(request: web.Request, node: Node, app: App, body: bytes) -> Any:
    batch = api.parse_batch_body(body, app)
    for trigger in batch:
        await _publish(node, app, trigger)
    await node.settle()
    if not any(trigger.info for trigger in batch):
        return {}
    return {"batch": [await _counts(node, app, t.channels[0], t.info) if t.info else {} for t in batch]}


async def list_channels(request: web.Request, node: Node, app: App, body: bytes) -> Any:
    query = api.parse_channels_query(dict(request.query))
    occupied = await node.backend.channels(app.id, query.prefix)
    return {"channels": {name: await _counts(node, app, name, query.info, known=n) for name, n in occupied.items()}}


async def channel_state(request: web.Request, node: Node, app: App, body: bytes) -> Any:
    channel = request.match_info["channel"]
    info = api.parse_channel_query(channel, dict(request.query), app)
    answer = await _counts(node, app, channel, info, occupied=True)
    if "cache" in info and kind_of(channel).cache:
        cached = await node.backend.cached(app.id, channel)
        if cached is not None:
            answer["cache"] = {"data": cached[0], "ttl": int(cached[2])}
    return answer


async def channel_users(request: web.Request, node: Node, app: App, body: bytes) -> Any:
    channel = request.match_info["channel"]
    api.parse_channel_query(channel, {}, app)
    if not kind_of(channel).is_presence:
        raise ApiError(400, "Users are only available for presence channels")
    return {"users": [{"id": user_id} for user_id in await node.backend.members(app.id, channel)]}


def authorize_browser(request: web.Request, app: App) -> dict[str, str]:
    """A browser (the Vue client's polling fallback) has no app secret. It names the app by its
    key and, for a private or presence channel, brings the channel-auth signature that the app's
    auth endpoint gave its socket id, as for a subscription. The answer's CORS headers."""
    query = request.query
    if query.get("auth_key") != app.key:
        raise ApiError(401, "auth_key must be the app key (or sign the request as an HTTP API call)")
    origin = request.headers.get("Origin")
    if not app.origin_allowed(origin):
        raise ApiError(403, "Origin not allowed")
    channel = request.match_info["channel"]
    kind = kind_of(channel)
    if kind.kind is Kind.USER:
        raise ApiError(403, "A user channel's history is only open to signed HTTP API calls")
    if kind.needs_auth:
        socket_id, auth = query.get("socket_id", ""), query.get("auth", "")
        if not api.SOCKET_ID.match(socket_id) or not auth:
            raise ApiError(401, "This channel needs socket_id and auth (a channel-auth signature)")
        channel_data = query.get("channel_data") if kind.is_presence else None
        if not verify_channel_auth(app.key, app.secret, auth, socket_id, channel, channel_data):
            raise ApiError(401, "Invalid channel-auth signature")
    return cors_headers(request, app)


def cors_headers(request: web.Request, app: App) -> dict[str, str]:
    """Let a browser read the answer (errors included) when its Origin is one the app allows."""
    origin = request.headers.get("Origin")
    if origin is None or not app.origin_allowed(origin):
        return {}
    return {"Access-Control-Allow-Origin": origin, "Vary": "Origin"}


async def channel_history(request: web.Request, node: Node, app: App, body: bytes) -> Any:
    channel = request.match_info["channel"]
    api.parse_channel_query(channel, {}, app)
    rule = app.history_for(channel)
    if rule is None:
        raise ApiError(404, f"No history is kept for {channel!r} (see the app's history rules)")
    query = history.parse_history_query(dict(request.query), rule.size)
    read = await node.backend.history(app.id, channel, after=query.since, limit=query.limit, max_age=rule.ttl)
    if not read.available:
        raise ApiError(503, "History is unavailable while the scaling backend is unreachable")
    reason = None
    if query.epoch is not None:
        if query.since is not None:
            first = read.entries[0][0] if read.entries else None
            reason = history.gap(
                query.epoch, query.since, read.epoch, read.serial, first, len(read.entries), paged=True
            )
        elif query.epoch != read.epoch:
            reason = "epoch_changed"
    head: dict[str, Any] = {
        "channel": channel,
        "epoch": read.epoch,
        "serial": read.serial,
        "recovered": reason is None,
    }
    if reason is not None:
        head["reason"] = reason
    frames = [] if reason is not None else [frame for _, frame in read.entries]
    # The stored frames are JSON already: joined, not parsed and encoded again.
    text = f'{messages.dumps(head)[:-1]},"events":[{",".join(frames)}]}}'
    return web.Response(text=text, content_type="application/json")


async def terminate_connections(request: web.Request, node: Node, app: App, body: bytes) -> Any:
    user_id = request.match_info["user_id"]
    if not user_id or len(user_id) > 128:
        raise ApiError(400, "user_id must have 1 to 128 characters")
    await node.terminate_user(app, user_id)
    return {}


def add_routes(router: web.UrlDispatcher) -> None:
    router.add_post("/apps/{app_id}/events", signed("events", trigger_event))
    router.add_post("/apps/{app_id}/batch_events", signed("batch_events", trigger_batch))
    router.add_get("/apps/{app_id}/channels", signed("channels", list_channels))
    router.add_get("/apps/{app_id}/channels/{channel}", signed("channel", channel_state))
    router.add_get("/apps/{app_id}/channels/{channel}/users", signed("users", channel_users))
    router.add_get("/apps/{app_id}/channels/{channel}/history", signed("history", channel_history, browser=True))
    terminate = signed("terminate_connections", terminate_connections)
    router.add_post("/apps/{app_id}/users/{user_id}/terminate_connections", terminate)
    # pusher-http-python signs and sends this path without /apps/{id}; the app is its auth_key.
    router.add_post("/users/{user_id}/terminate_connections", terminate)
