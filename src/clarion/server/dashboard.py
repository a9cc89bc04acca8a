"""The live dashboard at ``/dashboard``: charts of this node's metrics over time and a debug
console that streams one app's events (Server-Sent Events), behind ``CLARION_ADMIN_TOKEN``.

Without a token nothing here is routed (404) and no sampler runs. The token is given once (the
login form, or ``?token=``); the browser then holds a cookie derived from it (HttpOnly,
SameSite=Strict), never the token itself. Scripts may send ``Authorization: Bearer <token>``.

Charts read a ring buffer of samples taken from the metrics registry every
``dashboard_interval`` seconds. Metrics are looked up by name and a missing one reads as null, so
the page works whatever this build registers. Everything is what this process sees: other nodes
(and other workers) keep their own.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import hmac
import json
import logging
import math
import time
from collections import deque
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from importlib import resources
from typing import Any

from aiohttp import web

from ..observability import metrics
from ..observability.logs import fields
from .config import Settings
from .hub import AppHub
from .taps import Event

log = logging.getLogger("clarion.dashboard")

COOKIE = "clarion_dashboard"
MAX_CONSOLES = 16  # open consoles per node; each holds a queue and a streaming response
KEEPALIVE = 15.0  # seconds between comment lines on a quiet console, so proxies keep it open
GONE_CHECK = 1.0  # seconds between checks that a quiet console's browser is still there
ASSETS = {"dashboard.js": "application/javascript", "dashboard.css": "text/css"}
SECURITY_HEADERS = {
    "Cache-Control": "no-store",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "X-Frame-Options": "DENY",
    "Content-Security-Policy": (
        "default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self'; img-src 'self'; "
        "form-action 'self'; frame-ancestors 'none'; base-uri 'none'"
    ),
}


# --- samples ----------------------------------------------------------------------------------


def _families() -> dict[str, list[tuple[str, dict[str, str], float]]]:
    """Every sample of the registry, by family name (counters without ``_total``)."""
    found: dict[str, list[tuple[str, dict[str, str], float]]] = {}
    for family in metrics.REGISTRY.collect():
        found[family.name] = [(s.name, s.labels, s.value) for s in family.samples]
    return found


def _sum(families: dict[str, list[tuple[str, dict[str, str], float]]], name: str, suffix: str = "") -> float | None:
    samples = families.get(name)
    if samples is None:
        return None
    return sum(value for sample, _, value in samples if sample == name + suffix)


def _buckets(families: dict[str, list[tuple[str, dict[str, str], float]]], name: str) -> dict[float, float] | None:
    """A histogram's cumulative bucket counts, summed over its labels: upper bound → count."""
    samples = families.get(name)
    if samples is None:
        return None
    buckets: dict[float, float] = {}
    for sample, labels, value in samples:
        if sample == name + "_bucket":
            bound = float(labels["le"])
            buckets[bound] = buckets.get(bound, 0.0) + value
    return buckets


def quantile(q: float, now: dict[float, float] | None, before: dict[float, float] | None) -> float | None:
    """The ``q`` quantile (seconds) of what a histogram observed between two readings, as
    Prometheus' ``histogram_quantile`` does: linear within the bucket. None when nothing was."""
    if now is None or before is None:
        return None
    bounds = sorted(now)
    counts = [now[b] - before.get(b, 0.0) for b in bounds]
    if not counts or counts[-1] <= 0:
        return None
    rank = q * counts[-1]
    lower, below = 0.0, 0.0
    for bound, count in zip(bounds, counts, strict=True):
        if count >= rank:
            if math.isinf(bound):
                return lower  # beyond the last finite bound: report that bound
            inside = count - below
            return lower + (bound - lower) * ((rank - below) / inside if inside > 0 else 1.0)
        lower, below = bound, count
    return lower


@dataclass(frozen=True, slots=True)
class Reading:
    time: float
    counters: dict[str, float | None]
    histograms: dict[str, dict[float, float] | None]


class Sampler:
    """One sample per interval into a bounded ring: gauges as read, counters as rates, latency
    histograms as p50/p99 over the interval."""

    def __init__(self, interval: float, size: int, hubs: dict[str, AppHub]) -> None:
        self.interval = interval
        self.hubs = hubs
        self.samples: deque[dict[str, Any]] = deque(maxlen=size)
        self._last: Reading | None = None
        self.missing: list[str] = []

    def take(self, now: float) -> dict[str, Any]:
        families = _families()
        gauges = {name: _sum(families, f"clarion_{name}") for name in ("connections", "channels", "subscriptions")}
        if gauges["channels"] is None:  # a build without the gauge: the hubs know (one len per app)
            gauges["channels"] = float(sum(len(hub.channels) for hub in self.hubs.values()))
        counters = {
            "published": _sum(families, "clarion_events_published", "_total"),
            "delivered": _sum(families, "clarion_deliveries", "_total"),
            "client_events": _sum(families, "clarion_client_events", "_total"),
        }
        histograms = {
            "api": _buckets(families, "clarion_api_request_seconds"),
            "delivery": _buckets(families, "clarion_delivery_latency_seconds"),
        }
        readings: dict[str, object] = {**gauges, **counters, **histograms}
        self.missing = sorted(name for name, value in readings.items() if value is None)
        last, self._last = self._last, Reading(now, counters, histograms)
        sample: dict[str, Any] = {"time": round(now, 3), **gauges}
        elapsed = now - last.time if last is not None else 0.0
        for name, value in counters.items():
            before = last.counters[name] if last is not None else None
            rate = None
            if value is not None and before is not None and elapsed > 0:
                rate = round((value - before) / elapsed, 3)
            sample[f"{name}_per_s"] = rate
        for name, buckets in histograms.items():
            earlier = last.histograms[name] if last is not None else None
            for q in (0.5, 0.99):
                seconds = quantile(q, buckets, earlier)
                sample[f"{name}_p{round(q * 100)}_ms"] = round(seconds * 1000, 3) if seconds is not None else None
        self.samples.append(sample)
        return sample

    async def run(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            try:
                self.take(time.time())
            except Exception:
                log.exception("dashboard sample failed")
            # On the loop's clock, so a slow sample does not shift the next one.
            await asyncio.sleep(self.interval - (loop.time() % self.interval))


# --- the debug console ------------------------------------------------------------------------


class Console:
    """One open console: a tap on an app's hub and the queue its stream reads. ``offer`` never
    blocks: past ``size`` waiting events it drops and counts, and the stream says how many."""

    def __init__(self, hub: AppHub, size: int) -> None:
        self.hub = hub
        self.queue: asyncio.Queue[Event | None] = asyncio.Queue(size)
        self.dropped = 0

    def offer(self, event: Event) -> None:
        try:
            self.queue.put_nowait(event)
        except asyncio.QueueFull:
            self.dropped += 1
            metrics.DASHBOARD_CONSOLE_DROPPED.inc()

    def open(self) -> None:
        self.hub.taps.append(self.offer)

    def close(self) -> None:
        with contextlib.suppress(ValueError):
            self.hub.taps.remove(self.offer)

    def end(self) -> None:
        """Stop the stream (shutdown): room for the end marker, even if that drops an event."""
        self.close()
        if self.queue.full():
            self.queue.get_nowait()
        self.queue.put_nowait(None)


# --- the web side -----------------------------------------------------------------------------


def _digest(text: str) -> bytes:
    return hashlib.sha256(text.encode()).digest()


class Dashboard:
    def __init__(self, settings: Settings, hubs: dict[str, AppHub], token: str) -> None:
        self.settings = settings
        self.hubs = hubs
        self._token = _digest(token)  # compared as digests: equal lengths, in constant time
        self._session = hmac.new(token.encode(), b"clarion dashboard session", hashlib.sha256).hexdigest()
        self.sampler = Sampler(settings.dashboard_interval, settings.dashboard_samples, hubs)
        self.consoles: set[Console] = set()
        folder = resources.files("clarion.server") / "dashboard_static"
        self.page = (folder / "index.html").read_bytes()
        self.login_page = (folder / "login.html").read_text()
        self.assets = {name: (folder / name).read_bytes() for name in ASSETS}

    # auth

    def token_ok(self, given: str) -> bool:
        return hmac.compare_digest(_digest(given), self._token)

    def authorized(self, request: web.Request) -> bool:
        cookie = request.cookies.get(COOKIE, "")
        if cookie and hmac.compare_digest(cookie.encode(), self._session.encode()):
            return True
        scheme, _, given = request.headers.get("Authorization", "").partition(" ")
        return scheme.lower() == "bearer" and self.token_ok(given.strip())

    def _refused(self, request: web.Request, why: str) -> None:
        metrics.DASHBOARD_REFUSED.inc()
        log.warning("dashboard request refused", extra=fields(path=request.path, remote=request.remote, reason=why))

    def _login(self, message: str = "") -> web.Response:
        text = self.login_page.replace("{message}", message)
        return web.Response(text=text, status=401, content_type="text/html", headers=SECURITY_HEADERS)

    def _signed_in(self) -> web.Response:
        # 303 to the bare path: the token leaves the address bar and the history at once.
        response = web.HTTPSeeOther("/dashboard", headers=SECURITY_HEADERS)
        response.set_cookie(
            COOKIE,
            self._session,
            path="/dashboard",
            httponly=True,
            samesite="Strict",
            secure=bool(self.settings.tls_cert),
        )
        return response

    def guarded(self, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]) -> Any:
        async def wrapped(request: web.Request) -> web.StreamResponse:
            if not self.authorized(request):
                self._refused(request, "no valid session or token")
                return web.json_response({"error": "unauthorized"}, status=401, headers=SECURITY_HEADERS)
            return await handler(request)

        return wrapped

    # pages

    async def page_view(self, request: web.Request) -> web.StreamResponse:
        given = request.query.get("token")
        if given is not None:
            if self.token_ok(given):
                return self._signed_in()
            self._refused(request, "wrong token")
            return self._login("That token was not accepted.")
        if not self.authorized(request):
            return self._login()
        return web.Response(body=self.page, content_type="text/html", headers=SECURITY_HEADERS)

    async def login(self, request: web.Request) -> web.StreamResponse:
        form = await request.post()
        given = form.get("token")
        if isinstance(given, str) and self.token_ok(given):
            return self._signed_in()
        self._refused(request, "wrong token")
        return self._login("That token was not accepted.")

    async def logout(self, request: web.Request) -> web.StreamResponse:
        response = web.HTTPSeeOther("/dashboard", headers=SECURITY_HEADERS)
        response.del_cookie(COOKIE, path="/dashboard")
        return response

    async def asset(self, request: web.Request) -> web.StreamResponse:
        name = request.match_info["name"]
        if name not in ASSETS:
            raise web.HTTPNotFound()
        return web.Response(body=self.assets[name], content_type=ASSETS[name], headers=SECURITY_HEADERS)

    # data

    async def stats(self, request: web.Request) -> web.StreamResponse:
        try:
            since = float(request.query.get("since", "0"))
        except ValueError:
            return web.json_response({"error": "since must be a number (seconds since the epoch)"}, status=400)
        samples = [sample for sample in self.sampler.samples if sample["time"] > since]
        body = {
            "interval": self.sampler.interval,
            "window": self.sampler.samples.maxlen,
            "scope": "this node",
            "apps": [{"id": hub.app.id, "debug_payloads": hub.app.debug_payloads} for hub in self.hubs.values()],
            "missing": self.sampler.missing,
            "consoles": len(self.consoles),
            "samples": samples,
        }
        return web.json_response(body, headers=SECURITY_HEADERS)

    async def console(self, request: web.Request) -> web.StreamResponse:
        hub = self.hubs.get(request.query.get("app", ""))
        if hub is None:
            return web.json_response({"error": "no such app"}, status=404, headers=SECURITY_HEADERS)
        if len(self.consoles) >= MAX_CONSOLES:
            log.warning("dashboard console refused: too many open", extra=fields(open=len(self.consoles)))
            return web.json_response(
                {"error": f"at most {MAX_CONSOLES} consoles may be open on a node"},
                status=429,
                headers={**SECURITY_HEADERS, "Retry-After": "5"},
            )
        console = Console(hub, self.settings.dashboard_console_queue)
        loop = asyncio.get_running_loop()
        response = web.StreamResponse(
            headers={**SECURITY_HEADERS, "Content-Type": "text/event-stream", "X-Accel-Buffering": "no"}
        )
        await response.prepare(request)
        self.consoles.add(console)
        console.open()
        log.info("dashboard console opened", extra=fields(app_id=hub.app.id))
        try:
            hello = {"app": hub.app.id, "payloads": hub.app.debug_payloads, "scope": "this node"}
            await response.write(_sse("hello", hello))
            reported = 0
            quiet_since = loop.time()
            while True:
                try:
                    event = await asyncio.wait_for(console.queue.get(), GONE_CHECK)
                except TimeoutError:
                    # aiohttp does not cancel a handler whose client left: look, and stop.
                    if request.transport is None or request.transport.is_closing():
                        break
                    if loop.time() - quiet_since >= KEEPALIVE:
                        quiet_since = loop.time()
                        await response.write(b": keepalive\n\n")
                    continue
                if event is None:
                    break
                if console.dropped > reported:
                    reported = console.dropped
                    await response.write(_sse("dropped", {"dropped": reported}))
                await response.write(_sse("event", event))
        except (ConnectionResetError, ConnectionError):
            pass  # the browser went away
        finally:
            console.close()
            self.consoles.discard(console)
            log.info("dashboard console closed", extra=fields(app_id=hub.app.id, dropped=console.dropped))
        return response

    async def shutdown(self, app: web.Application) -> None:
        for console in list(self.consoles):
            console.end()


def _sse(kind: str, data: Any) -> bytes:
    return f"event: {kind}\ndata: {json.dumps(data, separators=(',', ':'))}\n\n".encode()


def add_routes(application: web.Application, settings: Settings, hubs: dict[str, AppHub]) -> None:
    """Route the dashboard and run its sampler, only when an admin token is set."""
    if settings.admin_token is None:
        return
    dashboard = Dashboard(settings, hubs, settings.admin_token.get_secret_value())

    async def sampling(app: web.Application) -> AsyncIterator[None]:
        task = asyncio.create_task(dashboard.sampler.run())
        yield
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task

    application.cleanup_ctx.append(sampling)
    application.on_shutdown.append(dashboard.shutdown)
    router = application.router
    router.add_get("/dashboard", dashboard.page_view)
    router.add_post("/dashboard/login", dashboard.login)
    router.add_post("/dashboard/logout", dashboard.logout)
    router.add_get("/dashboard/static/{name}", dashboard.asset)
    router.add_get("/dashboard/api/stats", dashboard.guarded(dashboard.stats))
    router.add_get("/dashboard/api/console", dashboard.guarded(dashboard.console))
