"""Prometheus metrics. Hot-path counters are bumped once per event, never once per socket."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

REGISTRY = CollectorRegistry(auto_describe=True)

CONNECTIONS = Gauge("clarion_connections", "Open WebSocket connections", ["app_id"], registry=REGISTRY)
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
    "Client requests refused by a per-connection rate limit, by limit (presence_resubscribe)",
    ["what"],
    registry=REGISTRY,
)
EVENTS_PUBLISHED = Counter(
    "clarion_events_published_total", "Events published to channels, by source", ["source"], registry=REGISTRY
)
DELIVERIES = Counter("clarion_deliveries_total", "Frames written to subscriber sockets", registry=REGISTRY)
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
SCALING_UP = Gauge("clarion_scaling_up", "1 while the scaling backend (Redis) is reachable", registry=REGISTRY)
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

# Capacity and protection
ACCEPT_ERRORS = Counter(
    "clarion_accept_errors_total",
    "Connections the listening socket failed to accept, by errno: EMFILE, ENFILE, other",
    ["errno"],
    registry=REGISTRY,
)
CAPACITY_SATURATED = Gauge(
    "clarion_capacity_saturated",
    "1 while new WebSocket connections are refused (503) for lack of descriptors or capacity",
    registry=REGISTRY,
)
