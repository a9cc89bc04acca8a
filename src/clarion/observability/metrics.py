"""Prometheus metrics. Hot-path counters are bumped once per event, never once per socket.

Under ``CLARION_WORKERS`` the supervisor gives its workers a private ``PROMETHEUS_MULTIPROC_DIR``:
each worker then keeps its values in memory-mapped files there, and a scrape, whichever worker it
lands on, reads every worker's files (``exposition``). Gauges say how workers' values combine
(``multiprocess_mode``): ``livesum`` adds up the live workers, ``livemin``/``livemax`` take the
least/most; a dead worker's gauges are removed by the supervisor, its counters stay in the totals.
Labels stay bounded: an app id, a code, a reason from a fixed set; never a channel, socket or user.
"""

from __future__ import annotations

import os
import resource
from typing import Final

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.multiprocess import MultiProcessCollector

# Read once, as prometheus_client itself does at import: the mode cannot change in a process.
MULTIPROCESS: Final = bool(os.environ.get("PROMETHEUS_MULTIPROC_DIR"))

REGISTRY = CollectorRegistry(auto_describe=True)

CONNECTIONS = Gauge(
    "clarion_connections", "Open WebSocket connections", ["app_id"], registry=REGISTRY, multiprocess_mode="livesum"
)
CONNECTIONS_OPENED = Counter(
    "clarion_connections_opened_total", "WebSocket connections accepted", ["app_id"], registry=REGISTRY
)
CONNECTIONS_REFUSED = Counter(
    "clarion_connections_refused_total",
    "WebSocket connections refused, by close code (or HTTP status for a broken handshake)",
    ["code"],
    registry=REGISTRY,
)
CONNECTIONS_CLOSED = Counter(
    "clarion_connections_closed_total", "WebSocket connections closed, by reason", ["reason"], registry=REGISTRY
)
CLOSE_TIMEOUTS = Counter(
    "clarion_close_timeouts_total",
    "Sockets aborted because their close handshake did not finish in time behind unsent bytes",
    registry=REGISTRY,
)
FRAMES_RECEIVED = Counter("clarion_frames_received_total", "Client frames received", registry=REGISTRY)
PROTOCOL_ERRORS = Counter(
    "clarion_protocol_errors_total", "pusher:error frames sent, by code", ["code"], registry=REGISTRY
)
SUBSCRIPTIONS_REFUSED = Counter(
    "clarion_subscriptions_refused_total", "Subscriptions refused, by type", ["type"], registry=REGISTRY
)
RATE_LIMITED = Counter(
    "clarion_rate_limited_total",
    "Requests refused by a rate limit, by limit (presence_resubscribe, ip_connection_rate, ip_connections, api)",
    ["what"],
    registry=REGISTRY,
)
EVENTS_PUBLISHED = Counter(
    "clarion_events_published_total",
    "Events published to channels, by app and source (api, client)",
    ["app_id", "source"],
    registry=REGISTRY,
)
DELIVERIES = Counter(
    "clarion_deliveries_total", "Frames written to subscriber sockets, by app", ["app_id"], registry=REGISTRY
)
SLOW_CONSUMERS = Counter(
    "clarion_slow_consumers_total", "Sockets closed because their output buffer overflowed", registry=REGISTRY
)
API_REQUESTS = Counter(
    "clarion_api_requests_total", "HTTP API requests, by endpoint and status", ["endpoint", "status"], registry=REGISTRY
)
API_LATENCY = Histogram(
    "clarion_api_request_seconds",
    "HTTP API request handling time",
    ["endpoint"],
    buckets=(0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0),
    registry=REGISTRY,
)
WEBHOOKS = Counter(
    "clarion_webhook_events_total",
    "Webhook events by outcome: sent, dropped_queue_full, dropped_retries_exhausted",
    ["outcome"],
    registry=REGISTRY,
)
WEBHOOK_FAILURES = Counter("clarion_webhook_failures_total", "Failed webhook POST attempts", registry=REGISTRY)
SCALING_UP = Gauge(
    "clarion_scaling_up",
    "1 while the scaling backend (Redis) is reachable (from every worker)",
    registry=REGISTRY,
    multiprocess_mode="livemin",
)
SCALING_ERRORS = Counter(
    "clarion_scaling_errors_total", "Scaling backend failures (lost connections, bad bus messages)", registry=REGISTRY
)
BUS_LOCAL_ONLY = Counter(
    "clarion_bus_local_only_total",
    "Messages delivered to this node only because the scaling backend was unreachable",
    registry=REGISTRY,
)
SCALING_HEALTH_FAILURES = Counter(
    "clarion_scaling_health_failures_total",
    "Active health checks of the scaling backend (Redis, and the bus connection) that went unanswered",
    registry=REGISTRY,
)
PUBLISHES_SKIPPED = Counter(
    "clarion_publishes_skipped_total",
    "Publishes not applied again: idempotency_key (an Idempotency-Key already used), retry (a retried "
    "Redis command whose first attempt had been applied)",
    ["reason"],
    registry=REGISTRY,
)
IDEMPOTENCY_KEYS_EVICTED = Counter(
    "clarion_idempotency_keys_evicted_total",
    "Idempotency keys forgotten before their time to live because the in-memory store was full",
    registry=REGISTRY,
)
NODES_REAPED = Counter("clarion_nodes_reaped_total", "Dead nodes whose share this node took over", registry=REGISTRY)
RESUMES = Counter(
    "clarion_resumes_total",
    "clarion:resume requests by outcome: recovered, epoch_changed, too_old, unknown_position, overflow, unavailable",
    ["outcome"],
    registry=REGISTRY,
)
REPLAYED = Counter("clarion_replayed_total", "History events sent by resume and rewind", registry=REGISTRY)
HTTP_CLIENT_FAULTS = Counter(
    "clarion_http_client_faults_total",
    "Malformed HTTP requests refused by the HTTP parser (bad request line, header or chunking), by kind",
    ["kind"],
    registry=REGISTRY,
)
LOOP_ERRORS = Counter(
    "clarion_loop_errors_total",
    "Errors reported to the event loop's exception handler (logged at most once per interval), by exception",
    ["exception"],
    registry=REGISTRY,
)
WEBHOOK_DROPPED = Counter(
    "clarion_webhook_dropped_total",
    "Webhook events dropped, by event type and reason: queue_full, retry_full, retries_exhausted, shutdown",
    ["event_type", "reason"],
    registry=REGISTRY,
)
# The dashboard (server/dashboard.py).
DASHBOARD_REFUSED = Counter(
    "clarion_dashboard_refused_total", "Dashboard requests refused: no valid admin token", registry=REGISTRY
)
DASHBOARD_CONSOLE_DROPPED = Counter(
    "clarion_dashboard_console_dropped_total",
    "Events not shown in a debug console because its queue was full (the browser read too slowly)",
    registry=REGISTRY,
)

SUBSCRIPTIONS = Gauge(
    "clarion_subscriptions",
    "Channel subscriptions held by sockets on this node",
    ["app_id"],
    registry=REGISTRY,
    multiprocess_mode="livesum",
)
CHANNELS = Gauge(
    "clarion_channels",
    "Channels with at least one subscriber on this node",
    ["app_id"],
    registry=REGISTRY,
    multiprocess_mode="livesum",
)
CLIENT_EVENTS = Counter("clarion_client_events_total", "Client events received", ["app_id"], registry=REGISTRY)
DELIVERY_LATENCY = Histogram(
    "clarion_delivery_latency_seconds",
    "From the HTTP API's receipt of a publish to the frame's write to this node's subscriber sockets",
    ["app_id"],
    buckets=(0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5),
    registry=REGISTRY,
)
AUTH_FAILURES = Counter(
    "clarion_auth_failures_total",
    "Refused credentials, by kind: api_signature, api_timestamp, api_key, channel_auth, signin",
    ["kind"],
    registry=REGISTRY,
)
WEBHOOK_QUEUE_DEPTH = Gauge(
    "clarion_webhook_queue_depth",
    "Webhook events waiting to be sent (queued or waiting for a retry), all targets",
    registry=REGISTRY,
    multiprocess_mode="livesum",
)
SCALING_RECONNECTS = Counter(
    "clarion_scaling_reconnects_total",
    "Reconnections of the scaling backend link (Redis) after a loss",
    registry=REGISTRY,
)
PROCESS_OPEN_FDS = Gauge(
    "clarion_process_open_fds",
    "Open file descriptors (summed over workers)",
    registry=REGISTRY,
    multiprocess_mode="livesum",
)
PROCESS_MAX_FDS = Gauge(
    "clarion_process_max_fds",
    "The soft limit on open file descriptors (the least over workers)",
    registry=REGISTRY,
    multiprocess_mode="livemin",
)
PROCESS_FD_USAGE = Gauge(
    "clarion_process_fd_usage_ratio",
    "Open file descriptors over the soft limit, of the worker nearest its limit",
    registry=REGISTRY,
    multiprocess_mode="livemax",
)
PROCESS_RESIDENT_MEMORY = Gauge(
    "clarion_process_resident_memory_bytes",
    "Resident memory (summed over workers)",
    registry=REGISTRY,
    multiprocess_mode="livesum",
)
LOG_LINES_SUPPRESSED = Counter(
    "clarion_log_lines_suppressed_total",
    "Log lines left out past the per-event rate (a summary line says how many), by event",
    ["event"],
    registry=REGISTRY,
)
DRAINING = Gauge(
    "clarion_draining",
    "1 while the server is shutting down",
    registry=REGISTRY,
    multiprocess_mode="livemax",
)


class AppMetrics:
    """One app's label children, bound once: the hot path looks nothing up."""

    __slots__ = (
        "app_id",
        "channels",
        "client_events",
        "connections",
        "deliveries",
        "latency",
        "published",
        "subscriptions",
    )

    def __init__(self, app_id: str) -> None:
        self.app_id = app_id
        # Bound at start, so every app's series exist (at 0) before its first socket.
        self.connections = CONNECTIONS.labels(app_id=app_id)
        self.subscriptions = SUBSCRIPTIONS.labels(app_id=app_id)
        self.channels = CHANNELS.labels(app_id=app_id)
        self.client_events = CLIENT_EVENTS.labels(app_id=app_id)
        self.deliveries = DELIVERIES.labels(app_id=app_id)
        self.latency = DELIVERY_LATENCY.labels(app_id=app_id)
        self.published = {source: EVENTS_PUBLISHED.labels(app_id=app_id, source=source) for source in ("api", "client")}

    def publish(self, source: str) -> None:
        counter = self.published.get(source)
        if counter is None:
            counter = self.published[source] = EVENTS_PUBLISHED.labels(app_id=self.app_id, source=source)
        counter.inc()


_PAGE = os.sysconf("SC_PAGE_SIZE")


def _open_fds() -> int:
    try:
        return len(os.listdir("/proc/self/fd"))
    except OSError:
        return 0


def _resident_bytes() -> int:
    try:
        with open("/proc/self/statm", "rb") as statm:
            return int(statm.read().split()[1]) * _PAGE
    except (OSError, IndexError, ValueError):
        return 0


def refresh_process() -> None:
    """This process's descriptors and memory. Called at a scrape and, under workers, every few
    seconds from each worker (a scrape reads the others' last values from their files)."""
    open_fds, limit = _open_fds(), resource.getrlimit(resource.RLIMIT_NOFILE)[0]
    PROCESS_OPEN_FDS.set(open_fds)
    PROCESS_MAX_FDS.set(limit)
    # Per process: under workers the sum of open descriptors over the least limit overstates it.
    PROCESS_FD_USAGE.set(open_fds / limit if limit > 0 else 0.0)
    PROCESS_RESIDENT_MEMORY.set(_resident_bytes())


def exposition() -> bytes:
    """The text a scrape gets: this process's registry or, under workers, every worker's figures."""
    refresh_process()
    if MULTIPROCESS:
        registry = CollectorRegistry()
        MultiProcessCollector(registry)  # type: ignore[no-untyped-call]
        return generate_latest(registry)
    return generate_latest(REGISTRY)


# Capacity and protection
ACCEPT_ERRORS = Counter(
    "clarion_accept_errors_total",
    "Connections the listening socket failed to accept, by errno: EMFILE, ENFILE, other",
    ["errno"],
    registry=REGISTRY,
)
CAPACITY_SATURATED = Gauge(
    "clarion_capacity_saturated",
    "1 while new WebSocket connections are refused (503) for lack of descriptors or capacity (the most over workers)",
    registry=REGISTRY,
    multiprocess_mode="livemax",
)
