"""The aiohttp application: WebSocket, HTTP API, health and metrics on one port."""

from __future__ import annotations

import asyncio
import logging
import os
import secrets
import signal
import socket
import ssl
from collections.abc import AsyncIterator

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST

from ..observability import logs, metrics
from ..scaling.contracts import Backend
from ..scaling.memory import MemoryBackend
from ..tasks import cancel_and_wait
from . import dashboard, http_api, limits
from .config import Settings
from .drain import drain
from .front_door import FrontDoor, adopt
from .http_api import NODE
from .loop_errors import LoopErrors
from .node import Node
from .webhooks import AppWebhooks, Policy, Target, Webhooks

log = logging.getLogger("clarion.server")

SWEEP_INTERVAL = 1.0  # seconds between keep-alive checks of every connection
FD_CHECK_INTERVAL = 2.0  # seconds between two counts of the descriptors in use


async def health(request: web.Request) -> web.Response:
    return web.json_response({"status": "ok"})


async def ready(request: web.Request) -> web.Response:
    node = request.app[NODE]
    if node.admission.draining:
        return web.json_response({"status": "draining"}, status=503)
    if not node.ready:
        return web.json_response({"status": "unavailable", "reason": "scaling backend unreachable"}, status=503)
    admission = node.admission
    if admission.saturated:
        # Take this node out of the balancer for new sockets; its API and open sockets still work.
        return web.json_response(
            {
                "status": "saturated",
                "reason": "descriptors short" if admission.fds_short else "connection capacity reached",
                "connections": admission.open,
                "capacity": admission.capacity,
            },
            status=503,
        )
    return web.json_response({"status": "ready"})


async def upgrade_late(request: web.Request) -> web.Response:
    """``/app/{key}`` on a connection aiohttp serves: a WebSocket upgrade after earlier requests on
    the same connection (a proxy's pooled connection) is adopted; anything else is a 400."""
    refused = adopt(request, request.app[NODE])
    # Once adopted the socket is no longer aiohttp's, and this response goes nowhere.
    return refused if refused is not None else web.Response(status=101)


async def prometheus(request: web.Request) -> web.Response:
    # Under workers a scrape lands on any one of them and reads every worker's figures.
    return web.Response(body=metrics.exposition(), headers={"Content-Type": CONTENT_TYPE_LATEST})


async def _sweep(node: Node) -> None:
    """Timers for every socket from one task (cheaper than a timer per connection), then the
    node's own housekeeping."""
    loop = asyncio.get_running_loop()
    while True:
        await asyncio.sleep(SWEEP_INTERVAL)
        logs.flush_suppressed()
        now = loop.time()
        for hub in node.hubs.values():
            for conn in list(hub.connections.values()):
                if conn.closing:
                    continue
                actions = conn.session.tick(now)
                if actions:
                    await node.carry_out(conn, actions)
        try:
            await node.tick()
        except Exception:
            log.exception("housekeeping failed")


async def _watch_descriptors(node: Node) -> None:
    """Descriptors in use against the limit, every few seconds: sockets in their handshake, HTTP
    clients and files use them too, and uvloop reports no failed accept."""
    while True:
        await asyncio.sleep(FD_CHECK_INTERVAL)
        node.admission.check_descriptors(limits.open_fds())


async def _beat(node: Node, interval: float) -> None:
    """Liveness in the cluster: beat, and take over the share of nodes that stopped beating."""
    while True:
        try:
            await node.heartbeat()
        except Exception:
            log.exception("heartbeat failed")
        await asyncio.sleep(interval)


def build_backend(settings: Settings) -> Backend:
    if settings.scaling == "redis":
        from ..scaling.redis import RedisBackend

        node_id = f"{socket.gethostname()}-{os.getpid()}-{secrets.token_hex(3)}"
        return RedisBackend(
            settings.redis_url,
            settings.scaling_prefix,
            node_id,
            node_ttl=settings.node_ttl,
            timeout=settings.redis_timeout,
            health_interval=settings.redis_health_interval,
        )
    return MemoryBackend()


def build_webhooks(settings: Settings) -> Webhooks:
    policy = Policy(
        delay=settings.webhook_delay,
        retry_for=settings.webhook_retry_for,
        timeout=settings.webhook_timeout,
        queue_size=settings.webhook_queue,
    )
    per_app = {}
    for app in settings.apps:
        targets = [Target(hook.url, frozenset(hook.event_types)) for hook in app.webhook_targets]
        if targets:
            per_app[app.id] = AppWebhooks(app, targets, policy)
    return Webhooks(per_app)


def build_app(settings: Settings) -> web.Application:
    # Each route reads at most its own limit (http_api.read_body); aiohttp's cap is a second fence.
    application = web.Application(client_max_size=http_api.largest_body(settings.apps))
    node = Node(settings, build_backend(settings), build_webhooks(settings))
    application[NODE] = node

    async def lifecycle(app: web.Application) -> AsyncIterator[None]:
        await node.start()
        tasks = [
            asyncio.create_task(_sweep(node)),
            asyncio.create_task(_beat(node, settings.node_ttl / 3)),
            asyncio.create_task(_watch_descriptors(node)),
        ]
        yield
        await cancel_and_wait(tasks)
        await node.close()

    async def goodbye(app: web.Application) -> None:
        # Tell clients to reconnect now (4200), to another node behind the balancer, rather
        # than leaving them to notice a dead socket.
        for hub in node.hubs.values():
            for conn in list(hub.connections.values()):
                conn.close(4200, "Server shutting down")
        loop = asyncio.get_running_loop()
        deadline = loop.time() + 3.0
        while any(hub.connections for hub in node.hubs.values()) and loop.time() < deadline:  # noqa: ASYNC110
            await asyncio.sleep(0.05)

    application.cleanup_ctx.append(lifecycle)
    application.on_shutdown.append(goodbye)
    application.router.add_get("/app/{key}", upgrade_late)
    http_api.add_routes(application.router)
    application.router.add_get("/health", health)
    application.router.add_get("/ready", ready)
    application.router.add_get("/metrics", prometheus)
    dashboard.add_routes(application, settings, node.hubs)  # only with CLARION_ADMIN_TOKEN
    return application


def _ssl_context(settings: Settings) -> ssl.SSLContext | None:
    if not settings.tls_cert or not settings.tls_key:
        return None
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(settings.tls_cert, settings.tls_key)
    return context


def _supervisor_pid() -> int:
    """The supervisor that started this worker, as it said itself: asked of the kernel only once
    this task first ran, the parent could already be the process that adopted an orphan."""
    given = os.environ.get("CLARION_SUPERVISOR_PID", "")
    return int(given) if given.isdigit() else os.getppid()


async def _stop_when_orphaned(stop: asyncio.Event, parent: int) -> None:
    """A worker whose supervisor is gone (even by SIGKILL) shuts down rather than linger."""
    while os.getppid() == parent:  # noqa: ASYNC110 - no event tells us; a 1 s poll is cheap
        await asyncio.sleep(1.0)
    log.warning("supervisor gone; worker shutting down", extra=logs.fields(parent=parent))
    stop.set()


def dev_banner(settings: Settings, port: int) -> str:
    app = settings.apps[0]
    tls = bool(settings.tls_cert)
    return (
        "clarion: WARNING no app configured; serving the development app (its secret is public, loopback only):\n"
        f"  app id {app.id}   key {app.key}   secret {app.secret}\n"
        f"  WebSocket {'wss' if tls else 'ws'}://{settings.host}:{port}/app/{app.key}\n"
        "  pusher-js:\n"
        f"    new Pusher('{app.key}', {{ wsHost: '{settings.host}', wsPort: {port}, "
        f"forceTLS: {'true' if tls else 'false'}, enabledTransports: ['ws', 'wss'], cluster: '' }})"
    )


async def serve(settings: Settings, announce: bool = True, reuse_port: bool = False) -> None:
    """Run until SIGINT/SIGTERM."""
    logs.configure(settings.log_format, settings.log_level, burst=settings.log_burst, window=settings.log_window)
    metrics.DRAINING.set(0)
    loop = asyncio.get_running_loop()
    loop.set_exception_handler(LoopErrors())
    _, hard = limits.raise_nofile()  # before the node sizes its capacity on it
    application = build_app(settings)
    limits.announce(settings, application[NODE].admission, hard)
    runner = web.AppRunner(
        application,
        access_log=None,
        handle_signals=False,
        # Sockets that never finish an HTTP request (or idle between API calls) are closed.
        keepalive_timeout=settings.handshake_timeout,
        # A request refused before its body was read is closed at once: aiohttp would otherwise
        # read and discard the rest of the body for up to 10 s ("lingering close").
        lingering_time=0,
        shutdown_timeout=5.0,
    )
    await runner.setup()
    context = _ssl_context(settings)
    node = application[NODE]
    http = runner.server
    assert http is not None
    # One listening socket: the front door takes WebSocket upgrades and hands the rest to aiohttp.
    server = await loop.create_server(
        lambda: FrontDoor(node, http),
        settings.host,
        settings.port,
        ssl=context,
        backlog=4096,
        reuse_port=reuse_port or None,
    )
    port = server.sockets[0].getsockname()[1] if server.sockets else settings.port
    if announce:
        scheme = "https" if context else "http"
        print(f"clarion: listening on {scheme}://{settings.host}:{port}", flush=True)
        if settings.dev_app and not reuse_port:
            print(dev_banner(settings, port), flush=True)
    stop = asyncio.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    orphan_watch = asyncio.create_task(_stop_when_orphaned(stop, _supervisor_pid())) if reuse_port else None
    try:
        await stop.wait()
    finally:
        if orphan_watch is not None:
            orphan_watch.cancel()
        log.info("shutting down")
        deadline = loop.time() + settings.shutdown_timeout
        # The listening socket stays open through the drain: the HTTP API keeps answering and
        # new WebSockets are refused (503) there, so balancers and clients move elsewhere.
        left = await drain(node, min(settings.shutdown_spread, settings.shutdown_timeout / 2), deadline)
        if left:
            log.warning("sockets still open past the shutdown timeout", extra=logs.fields(connections=left))
        server.close()
        # Webhooks held or queued get what is left of the timeout; the rest is dropped and counted
        # (clarion_webhook_dropped_total{reason="shutdown"}).
        node.webhooks.drain_for = max(0.5, deadline - loop.time())
        await runner.cleanup()
        log.info("stopped")
