"""The Pusher HTTP API: signed requests in, events out to the bus, channel state back.

A request is judged on its request line before its body is read: the app, the key, the
timestamp window and the signature (which covers ``body_md5``) come from the query. Only then is
the body read, within the route's size limit and the body deadline, and compared with
``body_md5``. A refused request is answered and its connection closed without reading the rest,
so a caller without the app secret cannot make the server hold a body.
"""

from __future__ import annotations

import asyncio
import logging
import re
import time
from collections.abc import Awaitable, Callable
from typing import Any

from aiohttp import web
from aiohttp.http_exceptions import HttpProcessingError

from ..observability import metrics
from ..observability.logs import fields
from ..protocol import api, history, messages
from ..protocol.app import App
from ..protocol.channels import Kind, kind_of
from ..protocol.errors import ApiError
from ..protocol.signatures import history_token_problem, verify_api_query, verify_body_md5
from ..scaling.contracts import Once
from .node import Node

log = logging.getLogger("clarion.api")

# The node, as the aiohttp application carries it.
NODE: web.AppKey[Node] = web.AppKey("clarion_node")
RECEIVED = "clarion_received"  # a request's key: the wall time it reached the HTTP API

HISTORY_TOKEN_HEADER = "X-Clarion-History-Token"  # noqa: S105 - a header name, not a secret
# Refusals after which the connection is closed rather than kept alive: the rest of the body
# (if any) is never read.
CLOSING = frozenset({401, 408, 413})

Handler = Callable[[web.Request, Node, App, bytes], Awaitable[Any]]
BodyLimit = Callable[[App], int]

# --- body limits, per route ------------------------------------------------------------------
# JSON may write every byte of an event's data as a \u00XX escape: 6 bytes on the wire for each
# byte the app's max_message_size counts. Channel names need no escaping; event names may.


def _envelope(app: App, channels: int) -> int:
    """Room around one event's data: its channel names (each quoted, then ``", "``), its name and
    1 KiB for the rest."""
    return channels * (app.max_channel_name_length + 4) + 6 * app.max_event_name_length + 1024


def events_body_limit(app: App) -> int:
    """``POST /events``: one event to up to ``max_channels_per_event`` channels."""
    return 6 * app.max_message_size + _envelope(app, app.max_channels_per_event)


def batch_body_limit(app: App) -> int:
    """``POST /batch_events``: up to ``max_batch_events`` events, one channel each."""
    return app.max_batch_events * (6 * app.max_message_size + _envelope(app, 1)) + 1024


def terminate_body_limit(app: App) -> int:
    """``POST .../terminate_connections``: the SDKs send an empty body or ``{}``."""
    return 1024


def no_body(app: App) -> int:
    return 0


def largest_body(apps: list[App]) -> int:
    """The most any route of any app reads: aiohttp's own cap, as a second fence."""
    return max(max(events_body_limit(app), batch_body_limit(app)) for app in apps)


def no_early_continue(endpoint: str) -> Callable[[web.Request], Awaitable[None]]:
    """A route's Expect handler. aiohttp's default answers ``100 Continue`` before the handler
    runs, inviting the body before the request is judged; ``read_body`` sends it once it has been."""

    async def expect(request: web.Request) -> None:
        value = request.headers.get("Expect", "").lower()
        if value and value != "100-continue":
            metrics.API_REQUESTS.labels(endpoint=endpoint, status="417").inc()
            log.info(
                "api request refused",
                extra=fields(endpoint=endpoint, status=417, error="Unknown Expect", remote=_remote(request)),
            )
            raise web.HTTPExpectationFailed(text="Unknown Expect")

    return expect


async def read_body(request: web.Request, limit: int, deadline: float) -> bytes:
    """The body, at most ``limit`` bytes, all within ``deadline`` seconds; else 413 or 408."""
    too_large = f"The body is larger than this endpoint's limit of {limit} bytes"
    length = request.content_length
    if length is not None and length > limit:
        raise ApiError(413, too_large)
    if not request.body_exists:
        return b""
    if request.headers.get("Expect", "").lower() == "100-continue" and request.version >= (1, 1):
        await request.writer.write(b"HTTP/1.1 100 Continue\r\n\r\n")
        request.writer.output_size = 0  # the interim answer is not the response
    body = bytearray()
    try:
        async with asyncio.timeout(deadline):
            while chunk := await request.content.readany():
                body += chunk
                if len(body) > limit:
                    raise ApiError(413, too_large)
    except TimeoutError:
        raise ApiError(408, f"The body did not arrive within {deadline:g} s") from None
    except HttpProcessingError as exc:  # bad chunking, or a body cut short
        raise ApiError(400, f"Malformed body: {type(exc).__name__}") from None
    return bytes(body)


def _app_of(request: web.Request, node: Node) -> App:
    """From ``{app_id}`` in the path or, on the official Python SDK's unprefixed ``/users/...``
    path, from ``auth_key`` (checked against the signature like any other parameter)."""
    if "app_id" in request.match_info:
        app = node.apps_by_id.get(request.match_info["app_id"])
    else:
        app = node.apps_by_key.get(request.query.get("auth_key", ""))
    if app is None:
        raise ApiError(404, "Unknown app")
    return app


def _remote(request: web.Request) -> str:
    return (request.remote or "")[:64]


def signed(
    endpoint: str, handler: Handler, *, body_limit: BodyLimit = no_body, browser: bool = False
) -> Callable[[web.Request], Awaitable[web.StreamResponse]]:
    """Wrap ``handler``: find the app, check the signature, read the body within its limits, map
    ApiError to its status, count and log it.

    With ``browser``, a request without an API signature may instead prove itself with a
    history token (``authorize_browser``).
    """

    async def wrapped(request: web.Request) -> web.StreamResponse:
        started = time.perf_counter()
        request[RECEIVED] = time.time()
        node = request.app[NODE]
        status = 200
        app: App | None = None
        try:
            app = _app_of(request, node)
            headers: dict[str, str] = {}
            if browser and "auth_signature" not in request.query:
                headers = authorize_browser(request, app)
                body = await read_body(request, 0, node.settings.body_timeout)
            else:
                raw_path = request.raw_path.split("?", 1)[0]
                paths = (raw_path,) if raw_path == request.path else (raw_path, request.path)
                params = {k: request.query[k] for k in request.query}
                verify_api_query(
                    key=app.key,
                    secret=app.secret,
                    method=request.method,
                    paths=paths,
                    params=params,
                    now=time.time(),
                )
                if request.body_exists and not any(k.lower() == "body_md5" for k in params):
                    raise ApiError(401, "Missing body_md5", auth="api_signature")
                body = await read_body(request, body_limit(app), node.settings.body_timeout)
                verify_body_md5(params, body)
            if not app.enabled:
                raise ApiError(403, "Application disabled")
            wait = node.api_limits.retry_after(app.id, app.api_rate_limit, app.api_burst)
            if wait is not None:  # counted here, logged aggregated by ApiLimits
                metrics.RATE_LIMITED.labels(what="api").inc()
                status = 429
                return web.json_response(
                    {"error": "API rate limit exceeded"}, status=429, headers={**headers, "Retry-After": str(wait)}
                )
            answer = await handler(request, node, app, body)
            if isinstance(answer, web.Response):
                answer.headers.update(headers)
                return answer
            return web.json_response(answer, dumps=messages.dumps, headers=headers)
        except ApiError as exc:
            status = exc.status
            if exc.auth is not None:
                metrics.AUTH_FAILURES.labels(kind=exc.auth).inc()
            log.info(
                "api request refused",
                extra=fields(
                    app_id=app.id if app is not None else request.match_info.get("app_id", "")[:64],
                    endpoint=endpoint,
                    status=status,
                    error=exc.message[:300],
                    auth=exc.auth,
                    remote=_remote(request),
                ),
            )
            cors = cors_headers(request, app) if browser and app is not None else {}
            response = web.json_response({"error": exc.message}, status=status, headers=cors)
            if status in CLOSING or not request.content.at_eof():
                response.force_close()
            return response
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


# Idempotency-Key (a Clarion extension; docs/protocol-coverage.md): 1 to 128 printable ASCII characters.
IDEMPOTENCY_KEY = re.compile(r"[\x20-\x7e]{1,128}")


def idempotency_key(request: web.Request, app: App) -> str | None:
    """The request's ``Idempotency-Key``, if any; one header of 1-128 printable ASCII characters."""
    values = request.headers.getall("Idempotency-Key", [])
    if not values:
        return None
    if len(values) == 1 and IDEMPOTENCY_KEY.fullmatch(values[0]):
        return values[0]
    log.info("api request refused", extra=fields(app_id=app.id, error="bad Idempotency-Key", headers=len(values)))
    raise ApiError(400, "Idempotency-Key must be one header of 1 to 128 printable ASCII characters")


async def _publish(
    node: Node, app: App, trigger: api.Trigger, key: str | None, index: int, request: web.Request
) -> None:
    """Publish one event of a request (``index`` in its batch); with an idempotency key, each
    event and channel at most once within ``CLARION_IDEMPOTENCY_TTL``."""
    received: float = request.get(RECEIVED, 0.0)
    for channel in trigger.channels:
        frame = messages.channel_event(trigger.name, channel, trigger.data)
        once = Once.for_event(key, index, channel, node.settings.idempotency_ttl) if key is not None else None
        await node.publish(
            app, channel, frame, trigger.socket_id, "api", data=trigger.data, once=once, received=received
        )


async def trigger_event(request: web.Request, node: Node, app: App, body: bytes) -> Any:
    key = idempotency_key(request, app)
    trigger = api.parse_trigger_body(body, app)
    await _publish(node, app, trigger, key, 0, request)
    await node.settle()
    if not trigger.info:
        return {}
    return {"channels": {channel: await _counts(node, app, channel, trigger.info) for channel in trigger.channels}}


async def trigger_batch(request: web.Request, node: Node, app: App, body: bytes) -> Any:
    key = idempotency_key(request, app)
    batch = api.parse_batch_body(body, app)
    for index, trigger in enumerate(batch):
        await _publish(node, app, trigger, key, index, request)
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
    key and, for a private, presence or encrypted channel, brings a short-lived history token
    that the app's backend issued for that channel, in a header (never in the URL, where proxies
    and browser history would keep it). The answer's CORS headers."""
    query = request.query
    if query.get("auth_key") != app.key:
        raise ApiError(401, "auth_key must be the app key (or sign the request as an HTTP API call)", auth="api_key")
    if "socket_id" in query or "auth" in query:
        raise ApiError(401, f"socket_id and auth are no longer accepted here: send the {HISTORY_TOKEN_HEADER} header")
    origin = request.headers.get("Origin")
    if not app.origin_allowed(origin):
        raise ApiError(403, "Origin not allowed")
    channel = request.match_info["channel"]
    kind = kind_of(channel)
    if kind.kind is Kind.USER:
        raise ApiError(403, "A user channel's history is only open to signed HTTP API calls")
    if kind.needs_auth:
        token = request.headers.get(HISTORY_TOKEN_HEADER)
        if token is None:
            raise ApiError(401, f"This channel needs the {HISTORY_TOKEN_HEADER} header", auth="channel_auth")
        problem = history_token_problem(app.key, app.secret, channel, token, time.time())
        if problem is not None:
            raise ApiError(401, problem, auth="channel_auth")
    return cors_headers(request, app)


async def history_preflight(request: web.Request) -> web.Response:
    """CORS preflight for the history route: the browser asks whether it may send the token
    header. Only an allowed origin of a known app gets the CORS headers."""
    node = request.app[NODE]
    app = node.apps_by_id.get(request.match_info["app_id"])
    origin = request.headers.get("Origin")
    status = 204
    try:
        if app is None:
            raise ApiError(404, "Unknown app")
        if origin is None or not app.origin_allowed(origin):
            raise ApiError(403, "Origin not allowed")
        return web.Response(
            status=204,
            headers={
                **cors_headers(request, app),
                "Access-Control-Allow-Methods": "GET",
                "Access-Control-Allow-Headers": HISTORY_TOKEN_HEADER,
                "Access-Control-Max-Age": "600",
            },
        )
    except ApiError as exc:
        status = exc.status
        log.info(
            "api request refused",
            extra=fields(
                app_id=request.match_info["app_id"][:64],
                endpoint="history_preflight",
                status=status,
                error=exc.message,
                origin=(origin or "")[:200],
                remote=_remote(request),
            ),
        )
        return web.json_response({"error": exc.message}, status=status)
    finally:
        metrics.API_REQUESTS.labels(endpoint="history_preflight", status=str(status)).inc()


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
    def post(path: str, endpoint: str, handler: Handler, limit: BodyLimit) -> None:
        wrapped = signed(endpoint, handler, body_limit=limit)
        router.add_post(path, wrapped, expect_handler=no_early_continue(endpoint))

    def get(path: str, endpoint: str, handler: Handler, *, browser: bool = False) -> None:
        wrapped = signed(endpoint, handler, browser=browser)
        router.add_get(path, wrapped, expect_handler=no_early_continue(endpoint))

    post("/apps/{app_id}/events", "events", trigger_event, events_body_limit)
    post("/apps/{app_id}/batch_events", "batch_events", trigger_batch, batch_body_limit)
    get("/apps/{app_id}/channels", "channels", list_channels)
    get("/apps/{app_id}/channels/{channel}", "channel", channel_state)
    get("/apps/{app_id}/channels/{channel}/users", "users", channel_users)
    get("/apps/{app_id}/channels/{channel}/history", "history", channel_history, browser=True)
    router.add_route("OPTIONS", "/apps/{app_id}/channels/{channel}/history", history_preflight)
    post(
        "/apps/{app_id}/users/{user_id}/terminate_connections",
        "terminate_connections",
        terminate_connections,
        terminate_body_limit,
    )
    # pusher-http-python signs and sends this path without /apps/{id}; the app is its auth_key.
    post("/users/{user_id}/terminate_connections", "terminate_connections", terminate_connections, terminate_body_limit)
