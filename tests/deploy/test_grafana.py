"""The Grafana dashboard, deploy/grafana/clarion.json: its structure, its metric names against the
catalog in docs/operations/metrics.md, and every panel's query run through a real Prometheus that
scrapes a real ``clarion serve`` (Redis scaling) and a real ``clarion broadcast-worker``."""

from __future__ import annotations

import asyncio
import contextlib
import http.server
import json
import math
import re
import subprocess
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import httpx
import pytest
import redis

from clarion.broadcasting import Message
from clarion.broadcasting.integrations.queue import RedisQueue
from conftest import APP_ID, ROOT, RunningServer, broadcast_worker, run_server, stop_process
from pusherclient import PusherSocket, api_call, signed_query
from redisproc import SHARED_REDIS_URL, free_port

DASHBOARD = ROOT / "deploy" / "grafana" / "clarion.json"
CATALOG = ROOT / "docs" / "operations" / "metrics.md"
PROMETHEUS = Path("/usr/bin/prometheus")

ROWS = ["Overview", "Connections", "Delivery", "Capacity", "Scaling", "Webhooks", "Broadcast queue"]
GRID_WIDTH = 24
SERVER_JOB = "clarion"
BROADCAST_JOB = "clarion-broadcasts"
# Labels Prometheus adds to every series, and the histogram bucket bound.
TARGET_LABELS = {"job", "instance", "le"}

# Grafana's $__rate_interval is max(4 x scrape interval, $__interval + scrape interval). The test
# scrapes every second; 10 s keeps several samples in each window even when a loaded host delays
# a scrape or two.
RATE_WINDOW = "10s"
QUERY_DEADLINE = 25.0

# Every query must return finite values from the test's traffic, except these, which count what
# the test does not stage; for them the test asks only that Prometheus accepts the query.
NO_DATA_EXPECTED = {
    ("Accept errors (5 min) by errno", "A"): "accept() failing with EMFILE (tests/integration/test_capacity.py)",
    ("Event-loop errors /s by exception", "A"): "an error reaching the event loop's exception handler",
    ("Webhook events dropped (10 min)", "A"): "a webhook queue overflowing or retries running out",
    ("Channel authorizations /s", "A"): "an app process answering /broadcasting/auth, not scraped here",
}


# -- the dashboard and the catalog ------------------------------------------------------------


def load_dashboard() -> dict[str, Any]:
    dashboard: dict[str, Any] = json.loads(DASHBOARD.read_text())
    return dashboard


def rows(dashboard: dict[str, Any]) -> list[dict[str, Any]]:
    return [panel for panel in dashboard["panels"] if panel["type"] == "row"]


def charts(dashboard: dict[str, Any]) -> list[dict[str, Any]]:
    """Every panel that queries (all but the row headers)."""
    return [panel for panel in dashboard["panels"] if panel["type"] != "row"]


def variables(dashboard: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {variable["name"]: variable for variable in dashboard["templating"]["list"]}


def exprs(dashboard: dict[str, Any]) -> Iterator[tuple[str, str, str]]:
    """(panel title, refId, expression) for every query."""
    for panel in charts(dashboard):
        for target in panel["targets"]:
            yield panel["title"], target["refId"], target["expr"]


@dataclass(frozen=True)
class Metric:
    name: str
    type: str
    labels: tuple[str, ...]
    feeds: str


def catalog() -> dict[str, Metric]:
    """The metric tables of docs/operations/metrics.md: metric | type | labels | meaning | feeds."""
    metrics: dict[str, Metric] = {}
    for line in CATALOG.read_text().splitlines():
        if not line.startswith("| `clarion_"):
            continue
        cells = [cell.strip() for cell in line.strip().strip("|").split("|")]
        assert len(cells) == 5, f"a catalog row with {len(cells)} cells: {line}"
        name = cells[0].strip("`")
        metrics[name] = Metric(name, cells[1], tuple(re.findall(r"`(\w+)`", cells[2])), cells[4])
    return metrics


# -- reading PromQL ------------------------------------------------------------------------------

_STRING = re.compile(r'"(?:[^"\\]|\\.)*"|\'(?:[^\'\\]|\\.)*\'')
_GROUPING = re.compile(r"\b(?:by|without|on|ignoring|group_left|group_right)\s*\(([^)]*)\)")
_IDENTIFIER = re.compile(r"[A-Za-z_:][\w:]*")
_KEYWORDS = {"and", "or", "unless", "bool", "offset", "inf", "nan", "atan2"}
_HISTOGRAM_SERIES = ("_bucket", "_sum", "_count")


def metric_names(expr: str) -> set[str]:
    """The metric names an expression reads: identifiers left once strings, label matchers,
    ranges and grouping clauses are taken out, except functions and operators."""
    text = _STRING.sub('""', expr)
    text = re.sub(r"\{[^}]*\}", " ", text)
    text = re.sub(r"\[[^\]]*\]", " ", text)
    text = _GROUPING.sub(" ", text)
    text = re.sub(r"\$\{?\w+\}?", " ", text)
    names = set()
    for match in _IDENTIFIER.finditer(text):
        rest = text[match.end() :].lstrip()
        if rest.startswith("(") or match.group().lower() in _KEYWORDS:
            continue
        if match.start() > 0 and (text[match.start() - 1].isdigit() or text[match.start() - 1] == "."):
            continue  # the exponent or unit of a number
        names.add(match.group())
    return names


def catalog_name(series: str, metrics: dict[str, Metric]) -> str | None:
    """The catalog entry a series belongs to (a histogram's _bucket, _sum and _count are its own)."""
    if series in metrics:
        return series
    for suffix in _HISTOGRAM_SERIES:
        base = series.removesuffix(suffix)
        if base != series and base in metrics and metrics[base].type.startswith("histogram"):
            return base
    return None


def unknown_metrics(expr: str, metrics: dict[str, Metric]) -> set[str]:
    return {name for name in metric_names(expr) if name != "up" and catalog_name(name, metrics) is None}


def label_names(expr: str) -> set[str]:
    """Labels an expression matches on, groups by, or joins on."""
    text = _STRING.sub('""', expr)
    found: set[str] = set()
    for matchers in re.findall(r"\{([^}]*)\}", text):
        found.update(re.findall(r"(\w+)\s*(?:=~|!~|!=|=)", matchers))
    for grouping in _GROUPING.findall(text):
        found.update(label.strip() for label in grouping.split(",") if label.strip())
    return found


def selector(query: str) -> str:
    """The series selector of a Grafana ``label_values(selector, label)`` variable query."""
    match = re.fullmatch(r"label_values\((.+), (\w+)\)", query)
    assert match is not None, query
    return match.group(1)


def substitute(expr: str, values: dict[str, str]) -> str:
    """Grafana's template variables, as an operator with one job, every node and the test app
    selected would send them. A variable the test does not know fails it."""

    def value(match: re.Match[str]) -> str:
        name = match.group(1) or match.group(2)
        assert name in values, f"the test does not know the variable ${name}"
        return values[name]

    return re.sub(r"\$\{(\w+)\}|\$(\w+)", value, expr)


# -- structure -----------------------------------------------------------------------------------


def test_dashboard_is_importable_json_with_a_prometheus_datasource_variable_and_the_filters() -> None:
    dashboard = load_dashboard()
    assert dashboard["uid"] and dashboard["title"] == "Clarion"
    assert dashboard["id"] is None, "an exported dashboard carries no database id"
    assert dashboard["schemaVersion"] >= 41, "the classic dashboard schema of Grafana 12 or later"
    found = variables(dashboard)
    assert found["datasource"]["type"] == "datasource" and found["datasource"]["query"] == "prometheus"
    for name in ("job", "instance", "app_id", "broadcast_job"):
        assert found[name]["type"] == "query", name
        assert found[name]["datasource"] == {"type": "prometheus", "uid": "${datasource}"}, name
        assert re.fullmatch(r"label_values\(.+, (\w+)\)", found[name]["query"]), name
    assert found["job"]["current"]["value"] == [SERVER_JOB]
    assert found["broadcast_job"]["current"]["value"] == [BROADCAST_JOB]
    assert found["instance"]["allValue"] == found["app_id"]["allValue"] == ".*"


def test_rows_come_in_the_agreed_order() -> None:
    assert [row["title"] for row in rows(load_dashboard())] == ROWS


def test_every_panel_has_a_unique_id_the_datasource_variable_and_queries() -> None:
    dashboard = load_dashboard()
    ids = [panel["id"] for panel in dashboard["panels"]]
    assert len(ids) == len(set(ids)), "panel ids repeat"
    titles = [panel["title"] for panel in charts(dashboard)]
    assert len(titles) == len(set(titles)), "panel titles repeat"
    for panel in charts(dashboard):
        where = panel["title"]
        assert panel["datasource"] == {"type": "prometheus", "uid": "${datasource}"}, where
        assert panel["description"], where
        assert panel["targets"], where
        ref_ids = [target["refId"] for target in panel["targets"]]
        assert len(ref_ids) == len(set(ref_ids)), where
        for target in panel["targets"]:
            assert target["datasource"] == panel["datasource"], where
            assert target["expr"].strip(), where
    refs = {(panel["title"], target["refId"]) for panel in charts(dashboard) for target in panel["targets"]}
    assert set(NO_DATA_EXPECTED) <= refs, set(NO_DATA_EXPECTED) - refs


def test_panels_do_not_overlap_and_each_sits_under_its_row() -> None:
    dashboard = load_dashboard()
    boxes = []
    for panel in dashboard["panels"]:
        grid = panel["gridPos"]
        assert grid["w"] > 0 and grid["h"] > 0 and grid["x"] >= 0 and grid["y"] >= 0, panel["title"]
        assert grid["x"] + grid["w"] <= GRID_WIDTH, panel["title"]
        boxes.append((panel["title"], grid["x"], grid["y"], grid["x"] + grid["w"], grid["y"] + grid["h"]))
    for i, (name, x0, y0, x1, y1) in enumerate(boxes):
        for other, u0, v0, u1, v1 in boxes[i + 1 :]:
            assert x1 <= u0 or u1 <= x0 or y1 <= v0 or v1 <= y0, f"{name!r} overlaps {other!r}"
    # Grafana files a panel under the row header above it: each panel's top must lie between
    # its own row's header and the next one.
    headers = rows(dashboard)
    current = None
    for panel in dashboard["panels"]:
        if panel["type"] == "row":
            current = headers.index(panel)
            continue
        assert current is not None, f"{panel['title']!r} comes before the first row"
        top = panel["gridPos"]["y"]
        below = headers[current + 1]["gridPos"]["y"] if current + 1 < len(headers) else math.inf
        assert headers[current]["gridPos"]["y"] < top < below, panel["title"]
        assert top + panel["gridPos"]["h"] <= below, f"{panel['title']!r} reaches into the next row"


def test_every_metric_the_dashboard_reads_is_in_the_catalog() -> None:
    metrics = catalog()
    assert len(metrics) > 40, "the catalog tables were not read"
    dashboard = load_dashboard()
    unknown = {
        f"{title} {ref}: {sorted(names)}"
        for title, ref, expr in exprs(dashboard)
        if (names := unknown_metrics(expr, metrics))
    }
    for name, variable in variables(dashboard).items():
        if variable["type"] == "query" and (names := unknown_metrics(selector(variable["query"]), metrics)):
            unknown.add(f"variable {name}: {sorted(names)}")
    assert not unknown, "metrics missing from docs/operations/metrics.md:\n" + "\n".join(sorted(unknown))


def test_the_name_check_catches_a_renamed_metric() -> None:
    metrics = catalog()
    renamed = 'sum(rate(clarion_deliverys_total{job=~"$job"}[$__rate_interval])) / on (job) up'
    assert unknown_metrics(renamed, metrics) == {"clarion_deliverys_total"}
    assert unknown_metrics("histogram_quantile(0.99, sum by (le) (rate(clarion_slow_consumers_bucket[5m])))", metrics)
    assert not unknown_metrics(
        'histogram_quantile(0.99, sum by (le) (rate(clarion_delivery_latency_seconds_bucket{le!="1e3"}[5m])))', metrics
    )


def test_every_metric_the_catalog_gives_the_dashboard_is_on_it() -> None:
    metrics = catalog()
    used = {catalog_name(name, metrics) for _, _, expr in exprs(load_dashboard()) for name in metric_names(expr)}
    wanted = {name for name, metric in metrics.items() if "dashboard" in metric.feeds}
    assert wanted, "no catalog row names the dashboard"
    assert wanted <= used, f"the catalog says these feed the dashboard: {sorted(wanted - used)}"


def test_queries_use_only_bounded_labels() -> None:
    metrics = catalog()
    allowed = TARGET_LABELS | {label for metric in metrics.values() for label in metric.labels}
    dashboard = load_dashboard()
    for title, ref, expr in exprs(dashboard):
        assert label_names(expr) <= allowed, f"{title} {ref}: {sorted(label_names(expr) - allowed)}"
    for panel in charts(dashboard):
        for target in panel["targets"]:
            legend = set(re.findall(r"\{\{\s*(\w+)\s*\}\}", target.get("legendFormat", "")))
            assert legend <= allowed, f"{panel['title']}: legend {sorted(legend - allowed)}"
    for name, variable in variables(dashboard).items():
        if variable["type"] == "query":
            label = re.fullmatch(r"label_values\(.+, (\w+)\)", variable["query"])
            assert label is not None and label.group(1) in allowed, name


# -- every query against a live server -----------------------------------------------------------


@contextlib.contextmanager
def queue_worker(server: RunningServer, prefix: str, metrics_port: int, log: Path) -> Iterator[None]:
    """``clarion broadcast-worker`` for ``server``, its metrics on ``metrics_port``; its queue's keys
    are removed afterwards."""
    driver = f"pusher://{server.key}:{server.secret}@{server.host}:{server.port}/{server.app_id}"
    try:
        with broadcast_worker(driver, prefix, log, "--metrics-port", str(metrics_port)):
            yield
    finally:
        client = redis.Redis.from_url(SHARED_REDIS_URL)
        for pattern in (f"{prefix}:*", f"{prefix}-dramatiq*"):
            keys = list(client.scan_iter(match=pattern, count=1000))
            if keys:
                client.delete(*keys)
        client.close()


@contextlib.contextmanager
def prometheus(tmp: Path, targets: dict[str, str]) -> Iterator[str]:
    """A Prometheus scraping each job's target every second; yields its base URL."""
    assert PROMETHEUS.exists(), "Debian's prometheus package is needed (make setup installs it)"
    jobs = "".join(
        f"  - job_name: {job}\n    static_configs:\n      - targets: ['{target}']\n" for job, target in targets.items()
    )
    config = tmp / "prometheus.yml"
    config.write_text(
        f"global:\n  scrape_interval: 1s\n  scrape_timeout: 1s\n  evaluation_interval: 1s\nscrape_configs:\n{jobs}"
    )
    port = free_port()
    log = tmp / "prometheus.log"
    args = [
        str(PROMETHEUS),
        f"--config.file={config}",
        f"--storage.tsdb.path={tmp / 'tsdb'}",
        f"--web.listen-address=127.0.0.1:{port}",
    ]
    with log.open("wb") as out:
        proc = subprocess.Popen(args, stdout=out, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 15
        while True:
            assert proc.poll() is None, "prometheus exited:\n" + log.read_text()[-3000:]
            with contextlib.suppress(httpx.HTTPError):
                if httpx.get(f"{url}/-/ready", timeout=2).status_code == 200:
                    break
            assert time.monotonic() < deadline, "prometheus not ready:\n" + log.read_text()[-3000:]
            time.sleep(0.1)  # polling a subprocess's readiness
        yield url
    finally:
        stop_process(proc)


async def traffic(server: RunningServer, queue: RedisQueue, channel: str, stop: asyncio.Event) -> None:
    """Until ``stop``: a publish through the HTTP API every tenth of a second or so, each read by
    a subscriber, and every fifth publish a queued broadcast for the worker to send."""
    async with await PusherSocket.open(server.ws_url()) as subscriber:
        answer = await subscriber.subscribe(channel)
        assert answer["event"] == "pusher_internal:subscription_succeeded", answer
        tick = 0
        while not stop.is_set():
            status, body = await server.trigger(channel, "tick", json.dumps({"n": tick}))
            assert status == 200, body
            while (frame := await subscriber.recv())["event"] != "tick":
                assert frame["event"] == "queued" and frame["channel"] == channel, frame  # the worker's sends
            if tick % 5 == 0:
                await asyncio.to_thread(queue.enqueue, [Message((channel,), "queued", json.dumps({"n": tick}))])
            tick += 1
            await asyncio.sleep(0.1)


async def staged_events(server: RunningServer) -> None:
    """Once each, what the refusal and recovery panels count: a socket past the per-address cap
    (429), a private subscription without auth, a malformed frame, a resume, sockets that come and
    go, one for an unknown key (4001), a bad API signature, a publish repeated with its
    Idempotency-Key, a malformed HTTP request line."""
    first = await PusherSocket.open(server.ws_url())
    second = await PusherSocket.open(server.ws_url())
    with pytest.raises(aiohttp.WSServerHandshakeError) as refused:
        await PusherSocket.open(server.ws_url())
    assert refused.value.status == 429
    await first.send_subscribe("private-grafana")
    assert (await first.recv())["event"] == "pusher:subscription_error"
    await first.send_raw("{not json")
    assert (await first.recv())["event"] == "pusher:error"
    # A resume from a position this channel never had: answered, not recovered.
    answer = await first.subscribe("private-grafana", key=server.key, secret=server.secret)
    assert answer["event"] == "pusher_internal:subscription_succeeded", answer
    await first.send("clarion:resume", {"channel": "private-grafana", "epoch": "0123456789ab", "serial": 7})
    assert (await first.expect("clarion:resumed", "private-grafana"))["event"] == "clarion:resumed"
    await first.close()
    await second.close()
    unknown = await PusherSocket.open(server.ws_url(key="no-such-key"), handshake=False)
    try:
        error = await unknown.recv()
        data = error["data"] if isinstance(error["data"], dict) else json.loads(error["data"])
        assert error["event"] == "pusher:error" and data["code"] == 4001, error
    finally:
        await unknown.close()
    status, _ = await api_call(
        server.http_url, server.key, "wrong-secret", "POST", f"/apps/{server.app_id}/events", {"name": "e"}
    )
    assert status == 401
    # A publish retried with its Idempotency-Key: applied once, skipped the second time.
    path = f"/apps/{server.app_id}/events"
    body = json.dumps({"name": "once", "channel": "grafana-once", "data": "{}"}).encode()
    headers = {"Content-Type": "application/json", "Idempotency-Key": uuid.uuid4().hex}
    async with aiohttp.ClientSession() as session:
        for _ in range(2):
            params = signed_query(server.key, server.secret, "POST", path, body)
            async with session.post(server.http_url + path, params=params, data=body, headers=headers) as response:
                assert response.status == 200, await response.text()
    # A request line the HTTP parser refuses.
    reader, writer = await asyncio.open_connection(server.host, server.port)
    writer.write(b"NOT AN HTTP REQUEST\r\n\r\n")
    await writer.drain()
    assert (await reader.read(100)).startswith(b"HTTP/1.")
    writer.close()
    await writer.wait_closed()


class _Hook(http.server.BaseHTTPRequestHandler):
    def do_POST(self) -> None:
        self.rfile.read(int(self.headers.get("Content-Length", 0)))
        self.send_response(200)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, format: str, *args: Any) -> None:  # quiet
        pass


@contextlib.contextmanager
def webhook_receiver() -> Iterator[str]:
    """An app's webhook endpoint that takes every POST, on a thread of its own: the server's
    last webhooks go out while the test waits for it to stop."""
    receiver = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Hook)
    thread = threading.Thread(target=receiver.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{receiver.server_address[1]}/hook"
    finally:
        receiver.shutdown()
        receiver.server_close()
        thread.join()


def values_of(result: dict[str, Any]) -> list[float]:
    data = result["data"]
    if data["resultType"] == "vector":
        return [float(sample["value"][1]) for sample in data["result"]]
    assert data["resultType"] == "scalar", data
    return [float(data["result"][1])]


async def label_values(client: httpx.AsyncClient, url: str, query: str, values: dict[str, str]) -> list[str]:
    """What Grafana's label_values(selector, label) lists, through the same Prometheus API."""
    match = re.fullmatch(r"label_values\((.+), (\w+)\)", substitute(query, values))
    assert match is not None, query
    answer = (
        await client.get(f"{url}/api/v1/label/{match.group(2)}/values", params={"match[]": match.group(1)})
    ).json()
    assert answer["status"] == "success", answer
    return list(answer["data"])


async def test_every_panel_query_runs_in_prometheus_against_a_live_server(tmp_path: Path) -> None:
    dashboard = load_dashboard()
    prefix = f"test-grafana-{uuid.uuid4().hex[:10]}"
    server_port, worker_port = free_port(), free_port()
    targets = {SERVER_JOB: f"127.0.0.1:{server_port}", BROADCAST_JOB: f"127.0.0.1:{worker_port}"}
    # Prometheus first: it hands new targets to its scrapers at most every 5 s, time that the
    # server and the worker spend starting.
    env = {
        "CLARION_PORT": str(server_port),
        "CLARION_SCALING": "redis",
        # The per-address cap, tight and applied to loopback, so one socket past it is refused.
        "CLARION_RATE_LIMIT_EXEMPT": "none",
        "CLARION_IP_MAX_CONNECTIONS": "2",
        # One info line per event and window: the rest are counted as suppressed.
        "CLARION_LOG_BURST": "1",
    }
    async with contextlib.AsyncExitStack() as stack:
        env["CLARION_WEBHOOK_URL"] = stack.enter_context(webhook_receiver())
        url = stack.enter_context(prometheus(tmp_path, targets))
        server = stack.enter_context(run_server(env=env))
        stack.enter_context(queue_worker(server, prefix, worker_port, tmp_path / "worker.log"))
        queue = RedisQueue(SHARED_REDIS_URL, prefix=prefix)
        stack.callback(queue.close)
        listed = await query_every_panel(dashboard, server, queue, url)
    assert SERVER_JOB in listed["job"], listed
    assert targets[SERVER_JOB] in listed["instance"], listed
    assert APP_ID in listed["app_id"], listed
    assert BROADCAST_JOB in listed["broadcast_job"], listed


async def query_every_panel(
    dashboard: dict[str, Any], server: RunningServer, queue: RedisQueue, url: str
) -> dict[str, list[str]]:
    """Makes traffic and runs every query, each pass at one instant, until all return data (but
    those in NO_DATA_EXPECTED); returns what each template variable lists."""
    values = {
        "job": SERVER_JOB,
        "instance": ".*",
        "app_id": APP_ID,
        "broadcast_job": BROADCAST_JOB,
        "__rate_interval": RATE_WINDOW,
    }
    queries = [(title, ref, substitute(expr, values)) for title, ref, expr in exprs(dashboard)]
    await staged_events(server)
    # A broadcast the server refuses (no such channel name): failed, then dead-lettered at once.
    await asyncio.to_thread(queue.enqueue, [Message(("not a channel",), "refused", "{}")])
    stop = asyncio.Event()
    load = asyncio.create_task(traffic(server, queue, f"grafana-{uuid.uuid4().hex[:8]}", stop))
    deadline = time.monotonic() + QUERY_DEADLINE
    try:
        async with httpx.AsyncClient(timeout=10) as client:
            while True:
                assert not load.done(), load.exception() if load.done() else ""
                at = f"{time.time():.3f}"
                missing = []
                for title, ref, expr in queries:
                    answer = (await client.get(f"{url}/api/v1/query", params={"query": expr, "time": at})).json()
                    assert answer["status"] == "success", f"{title} {ref}: {expr}\n{answer}"
                    found = values_of(answer)
                    if (title, ref) not in NO_DATA_EXPECTED and not (found and all(map(math.isfinite, found))):
                        missing.append(f"{title} {ref}: {found}")
                if not missing:
                    break
                assert time.monotonic() < deadline, "panels without data:\n" + "\n".join(missing)
                await asyncio.sleep(0.5)  # a scrape a second: wait for the next ones
            return {
                name: await label_values(client, url, variable["query"], values)
                for name, variable in variables(dashboard).items()
                if variable["type"] == "query"
            }
    finally:
        stop.set()
        await load


@pytest.mark.parametrize(
    ("expr", "names"),
    [
        (
            'sum by (app_id) (rate(clarion_deliveries_total{job=~"$job"}[$__rate_interval]))',
            {"clarion_deliveries_total"},
        ),
        ("1 - min by (instance) (up)", {"up"}),
        (
            "max by (instance) (clarion_process_open_fds / on (job, instance) clarion_process_max_fds)",
            {"clarion_process_open_fds", "clarion_process_max_fds"},
        ),
        ('(sum(rate(a_total{status=~"5.."}[5m])) or vector(0)) / sum(rate(b_total[5m]))', {"a_total", "b_total"}),
        ("histogram_quantile(0.99, sum by (le) (rate(x_bucket[1m])))", {"x_bucket"}),
    ],
)
def test_metric_names_are_read_from_promql(expr: str, names: set[str]) -> None:
    assert metric_names(expr) == names


def test_the_dashboard_matches_grafanas_published_dashboard_types() -> None:
    # deploy/grafana/schema-check type-checks clarion.json against @grafana/schema (its packages
    # come from scripts/setup.sh --with-node).
    check = ROOT / "deploy" / "grafana" / "schema-check"
    assert (check / "node_modules" / "@grafana" / "schema").is_dir(), "run scripts/setup.sh --with-node first"
    done = subprocess.run(["node", "check.mjs"], cwd=check, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "matches @grafana/schema" in done.stdout, done.stdout
