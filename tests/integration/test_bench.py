"""``clarion bench``: the real command, run as a user runs it, at CI size (no timing assertions).

Start mode against a fresh Clarion, ``--compare baseline``, ``--plot``, an external server with
``--server-pid`` at ``--rate 0``, and a faulty server that drops events and a socket, to prove that
loss and disconnects are reported and fail ``--assert-no-loss``.
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import time
import uuid
from pathlib import Path
from typing import Any

import orjson
from aiohttp import WSMsgType, web

from conftest import ROOT, RunningServer

RUN_KEYS = (
    "label",
    "subscribers",
    "connect_failures",
    "connect_rate_per_s",
    "events_requested",
    "events_sent",
    "events_accepted",
    "events_failed",
    "rate_achieved",
    "expected",
    "delivered",
    "lost",
    "duplicates",
    "unexpected",
    "disconnects",
    "latency_p50_ms",
    "latency_p95_ms",
    "latency_p99_ms",
    "latency_max_ms",
    "server_rss_before_bytes",
    "server_rss_connected_bytes",
    "server_rss_per_connection_bytes",
    "server_cpu_seconds",
    "server_cpu_us_per_delivery",
    "timeline",
    "ok",
)
RATIO_KEYS = (
    "server_cpu_us_per_delivery",
    "latency_p50_ms",
    "latency_p99_ms",
    "server_rss_per_connection_bytes",
    "connect_rate_per_s",
)


def _env() -> dict[str, str]:
    # A started Clarion may join Redis (the CI pass with CLARION_SCALING=redis): its own cluster.
    return {**os.environ, "CLARION_SCALING_PREFIX": f"bench-test-{uuid.uuid4().hex[:12]}"}


def bench(*args: str, expect_rc: int = 0, timeout: float = 100) -> tuple[dict[str, Any], str]:
    """Run ``clarion bench ARGS --json``; its JSON document and stderr."""
    proc = subprocess.run(
        [sys.executable, "-m", "clarion", "bench", *args, "--json"],
        cwd=ROOT,
        env=_env(),
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    assert proc.returncode == expect_rc, f"exit {proc.returncode}\nstdout:\n{proc.stdout}\nstderr:\n{proc.stderr}"
    return json.loads(proc.stdout), proc.stderr


def is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def assert_clean(run: dict[str, Any], subscribers: int) -> None:
    assert run["subscribers"] == subscribers, run
    assert run["connect_failures"] == 0, run["connect_errors"]
    assert run["events_accepted"] > 0, run
    assert run["events_failed"] == 0, run["api_errors"]
    assert run["expected"] == run["events_accepted"] * subscribers, run
    assert run["delivered"] == run["expected"], run
    assert run["lost"] == 0, run
    assert run["duplicates"] == 0, run
    assert run["unexpected"] == 0, run
    assert run["disconnects"] == 0, run
    assert run["ok"] is True


def test_start_mode_smoke() -> None:
    doc, stderr = bench("--subscribers", "50", "--rate", "20", "--duration", "2", "--assert-no-loss")
    assert doc["schema"] == 1
    assert doc["ok"] is True and doc["lost"] == 0 and doc["ratios"] is None
    assert doc["params"]["subscribers"] == 50 and doc["params"]["target"] == "start"
    [run] = doc["runs"]
    for key in RUN_KEYS:
        assert key in run, key
    assert run["label"] == "clarion"
    assert_clean(run, 50)
    assert run["events_accepted"] <= run["events_requested"] == 40  # paced: never more than asked
    latencies = [run[k] for k in ("latency_p50_ms", "latency_p95_ms", "latency_p99_ms", "latency_max_ms")]
    assert all(is_number(v) and v > 0 for v in latencies), latencies
    assert latencies == sorted(latencies)
    assert run["latency_samples"] == run["delivered"]
    assert is_number(run["connect_rate_per_s"]) and run["connect_rate_per_s"] > 0
    # The server's own figures, read from /proc of the started server.
    assert isinstance(run["server_pid"], int) and run["server_processes"] >= 1
    assert is_number(run["server_cpu_us_per_delivery"]) and run["server_cpu_us_per_delivery"] >= 0
    assert is_number(run["server_cpu_seconds"])
    assert is_number(run["server_rss_per_connection_bytes"])
    assert run["server_rss_before_bytes"] > 0 and run["server_rss_connected_bytes"] > 0
    assert run["timeline"] and all(w["samples"] > 0 for w in run["timeline"])
    assert doc["summary"]["clarion"]["delivered"] == run["delivered"]
    assert "subscribed 50/50" in stderr  # the progress lines


def test_compare_baseline() -> None:
    doc, _ = bench("--subscribers", "20", "--rate", "20", "--duration", "1", "--compare", "baseline", "--rounds", "2")
    labels = [(run["label"], run["round"]) for run in doc["runs"]]
    assert labels == [("clarion", 1), ("baseline", 1), ("baseline", 2), ("clarion", 2)]  # each goes first once
    for run in doc["runs"]:
        assert_clean(run, 20)
        assert is_number(run["server_cpu_us_per_delivery"]), run["label"]
        assert is_number(run["server_rss_per_connection_bytes"]), run["label"]
    assert set(doc["summary"]) == {"clarion", "baseline"}
    assert all(entry["lost"] == 0 and entry["ok"] for entry in doc["summary"].values())
    assert set(doc["ratios"]) == set(RATIO_KEYS)
    for key in ("latency_p50_ms", "latency_p99_ms", "connect_rate_per_s"):
        assert is_number(doc["ratios"][key]) and doc["ratios"][key] > 0, key
    assert doc["ok"] is True


def test_compare_with_servers_and_clients_pinned_to_their_own_cpus() -> None:
    """``--server-cpus`` and ``--client-cpus``: both started servers, the load generator and the
    subscribers run where they were put; the run reports the sets it read back from each process."""
    available = sorted(os.sched_getaffinity(0))
    server_cpu, client_cpu = available[0], available[-1]
    doc, _ = bench(
        *("--subscribers", "20", "--rate", "20", "--duration", "1", "--compare", "baseline", "--rounds", "1"),
        *("--server-cpus", str(server_cpu), "--client-cpus", str(client_cpu), "--quiet"),
    )
    assert doc["params"]["server_cpus"] == [server_cpu] and doc["params"]["client_cpus"] == [client_cpu]
    assert doc["params"]["client_processes"] == 1  # one per client CPU
    for run in doc["runs"]:
        assert_clean(run, 20)
        assert run["server_cpus"] == [server_cpu], run["label"]
        assert run["client_cpus"] == [client_cpu], run["label"]


def test_plot_writes_png(tmp_path: Path) -> None:
    png = tmp_path / "latency.png"
    doc, stderr = bench("--subscribers", "10", "--rate", "20", "--duration", "1", "--plot", str(png))
    assert doc["runs"][0]["delivered"] == doc["runs"][0]["expected"] > 0
    data = png.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    assert len(data) > 10_000  # two charts, not an empty canvas
    assert "plot written" in stderr


def test_external_server_idle_rss(server: RunningServer) -> None:
    """``--url`` with ``--server-pid`` at ``--rate 0``: connect, hold, measure memory; no events.
    The subscribers leave with a valid close frame, so the server counts no protocol error."""
    logged = len(server.output)
    doc, _ = bench(
        *("--url", server.http_url, "--app-id", server.app_id, "--key", server.key, "--secret", server.secret),
        *("--server-pid", str(server.proc.pid), "--subscribers", "40", "--rate", "0", "--duration", "1"),
        "--assert-no-loss",
    )
    [run] = doc["runs"]
    assert run["label"] == "external" and doc["params"]["target"] == server.http_url
    assert run["subscribers"] == 40 and run["connect_failures"] == 0 and run["disconnects"] == 0
    assert run["events_sent"] == 0 and run["expected"] == 0 and run["delivered"] == 0
    assert run["latency_p50_ms"] is None and run["server_cpu_us_per_delivery"] is None
    assert run["server_pid"] == server.proc.pid
    assert is_number(run["server_rss_per_connection_bytes"])
    assert run["server_rss_connected_bytes"] > 0
    deadline = time.monotonic() + 5
    while True:  # the server logs each close a moment after the bench has exited
        closes = [line for line in server.output[logged:] if "connection closed" in line]
        if len(closes) >= 40 or time.monotonic() > deadline:
            break
        time.sleep(0.05)
    assert len(closes) == 40, closes[:3]
    assert all("reason=client code=1000" in line for line in closes), [c for c in closes if "code=1000" not in c][:3]


def test_external_server_bad_secret_is_reported(server: RunningServer) -> None:
    """Refused API calls are counted, never taken as deliveries."""
    doc, _ = bench(
        *("--url", server.http_url, "--app-id", server.app_id, "--key", server.key, "--secret", "wrong-secret"),
        *("--subscribers", "5", "--rate", "20", "--duration", "0.5"),
    )
    [run] = doc["runs"]
    assert run["events_accepted"] == 0 and run["events_failed"] == run["events_sent"] > 0
    assert set(run["api_errors"]) == {"401"}
    assert run["expected"] == run["delivered"] == 0


def test_usage_errors() -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "clarion", "bench", "--url", "http://127.0.0.1:1", "--key", "k"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert proc.returncode == 2
    assert "--secret" in proc.stderr


def test_without_the_bench_extra_it_says_what_to_install() -> None:
    # As on an install without the extra: importing picows fails.
    script = "import sys; sys.modules['picows'] = None; from clarion.cli import main; sys.exit(main(['bench']))"
    proc = subprocess.run([sys.executable, "-c", script], cwd=ROOT, capture_output=True, text=True, timeout=30)
    assert proc.returncode == 2
    assert "picows is missing: pip install 'clarion[bench]'" in proc.stderr


def test_the_baseline_relay_ships_inside_the_package() -> None:
    from clarion.bench import baseline, target

    assert Path(baseline.__file__).parent == Path(target.__file__).parent
    assert target.baseline_command(None, 6002)[1:3] == ["-m", "clarion.bench.baseline"]


def test_cpu_lists_are_checked() -> None:
    available = os.sched_getaffinity(0)
    absent = str(max(available) + 1)
    cases = [
        (["--client-cpus", "x"], "--client-cpus: 'x' is not a CPU list"),
        (["--server-cpus", "1-0"], "--server-cpus: '1-0' runs backwards"),
        (["--client-cpus", absent], f"--client-cpus: CPU {absent} is not available here"),
        (
            ["--url", "http://127.0.0.1:1", "--app-id", "a", "--key", "k", "--secret", "s", "--server-cpus", "0"],
            "--server-cpus pins the servers bench starts",
        ),
    ]
    for args, message in cases:
        proc = subprocess.run(
            [sys.executable, "-m", "clarion", "bench", *args], cwd=ROOT, capture_output=True, text=True, timeout=30
        )
        assert proc.returncode == 2, (args, proc.stderr)
        assert message in proc.stderr, (args, proc.stderr)


# --- a faulty server: loss and a dropped socket must show -----------------------------------


class Faulty:
    """Speaks the protocol, accepts every API call, but delivers only even-numbered calls, drops
    the first subscriber's socket at the third call and sends the fourth twice to the last one."""

    def __init__(self) -> None:
        self.sockets: list[web.WebSocketResponse] = []
        self.calls = 0

    async def websocket(self, request: web.Request) -> web.WebSocketResponse:
        ws = web.WebSocketResponse()
        await ws.prepare(request)
        data = json.dumps({"socket_id": f"1.{len(self.sockets)}", "activity_timeout": 120})
        await ws.send_str(json.dumps({"event": "pusher:connection_established", "data": data}))
        async for msg in ws:
            if msg.type is not WSMsgType.TEXT:
                continue
            frame = json.loads(msg.data)
            if frame["event"] == "pusher:subscribe":
                self.sockets.append(ws)
                channel = frame["data"]["channel"]
                await ws.send_str(
                    json.dumps({"event": "pusher_internal:subscription_succeeded", "channel": channel, "data": "{}"})
                )
        return ws

    async def events(self, request: web.Request) -> web.Response:
        body = orjson.loads(await request.read())
        self.calls += 1
        if self.calls == 3 and self.sockets:
            await self.sockets[0].close(code=4100, message=b"dropped by the faulty test server")
        if self.calls % 2 == 0:
            text = json.dumps({"event": body["name"], "channel": body["channel"], "data": body["data"]})
            for ws in self.sockets:
                if not ws.closed:
                    await ws.send_str(text)
            if self.calls == 4:
                await self.sockets[-1].send_str(text)
        return web.json_response({})


async def test_loss_and_disconnects_fail_assert_no_loss() -> None:
    faulty = Faulty()
    app = web.Application()
    app.router.add_get("/app/{key}", faulty.websocket)
    app.router.add_post("/apps/{app_id}/events", faulty.events)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    try:
        proc = await asyncio.create_subprocess_exec(
            *(sys.executable, "-m", "clarion", "bench", "--url", f"http://127.0.0.1:{port}"),
            *("--app-id", "1", "--key", "k", "--secret", "s", "--subscribers", "6", "--rate", "20"),
            *("--duration", "1", "--json", "--assert-no-loss"),
            cwd=ROOT,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )
        stdout, stderr = await asyncio.wait_for(proc.communicate(), 90)
    finally:
        await runner.cleanup()
    assert proc.returncode == 1, stderr.decode()
    assert b"--assert-no-loss" in stderr
    doc = json.loads(stdout)
    [run] = doc["runs"]
    assert doc["ok"] is False and run["ok"] is False
    accepted = run["events_accepted"]
    assert accepted == faulty.calls >= 4
    assert run["expected"] == accepted * 6
    # Odd calls reach nobody; after the drop, 5 of 6 sockets get the even ones.
    assert run["lost"] > accepted // 2 * 6 - 6
    assert run["delivered"] + run["lost"] == run["expected"]
    assert run["disconnects"] == 1 and run["disconnect_codes"] == {"4100": 1}
    assert doc["lost"] == run["lost"]
    assert run["duplicates"] == 1 and doc["duplicates"] == 1


def run_script(script: str, *args: str, expect_rc: int = 0, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    proc = subprocess.run(
        [sys.executable, str(ROOT / "bench" / script), *args],
        cwd=ROOT,
        env=_env(),
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    assert proc.returncode == expect_rc, f"exit {proc.returncode}\nstdout:\n{proc.stdout}\nstderr:\n{proc.stderr}"
    return proc


def test_reliability_restart_and_kill_with_recovery_miss_nothing() -> None:
    proc = run_script(
        "reliability.py",
        *("--clients", "20", "--channels", "4", "--rate", "10", "--scenario", "both", "--recovery", "on"),
        *("--before", "2", "--tail", "1", "--drain", "1", "--json"),
    )
    restart, kill = json.loads(proc.stdout)
    assert (restart["scenario"], kill["scenario"]) == ("restart", "kill")
    for run in (restart, kill):
        assert run["connected"] == 20, run
        assert run["reconnected"] == run["affected"], run
        assert run["within_30s_share"] == 1.0, run
        assert run["events_accepted"] > 0, run
        assert run["missed"] == 0 and run["duplicated"] == 0 and run["unexpected"] == 0, run
        assert run["resumed"] == {"true": run["affected"]}, run
        assert 0 < run["reconnect_p50_s"] <= run["reconnect_max_s"] < 30, run
    assert restart["affected"] == 20, restart  # one node: everyone
    assert kill["affected"] == 10, kill  # two nodes: the killed one's half
    assert set(kill["close_codes"]) == {"1006"}, kill  # no close frame from a killed process


def test_reliability_without_recovery_reports_the_missed_events() -> None:
    proc = run_script(
        "reliability.py",
        *("--clients", "20", "--channels", "4", "--rate", "10", "--scenario", "kill", "--recovery", "off"),
        *("--before", "2", "--tail", "1", "--drain", "1", "--json"),
        expect_rc=0,
    )
    (run,) = json.loads(proc.stdout)
    assert run["affected"] == 10 and run["reconnected"] == 10, run
    # The survivor kept accepting events while the killed node's clients were away: they lost them.
    assert run["missed"] > 0 and run["clients_missing"] > 0, run
    assert run["resumed"] == {}, run


def test_soak_writes_a_row_a_minute_and_a_summary(tmp_path: Path) -> None:
    out = tmp_path / "soak.csv"
    proc = run_script(
        "soak.py",
        *("--clients", "20", "--channels", "3", "--presence-channels", "2", "--presence-share", "0.5"),
        *("--rate", "10", "--churn", "2", "--duration", "6", "--sample", "1", "--minute", "2", "--window", "1"),
        *("--csv", str(out)),
    )
    rows = out.read_text().splitlines()
    assert rows[0].startswith("minute,elapsed_s,rss_mb,fds,"), rows
    assert len(rows) - 1 >= 2, rows
    for line in rows[1:]:
        fields = dict(zip(rows[0].split(","), line.split(","), strict=True))
        assert float(fields["rss_mb"]) > 10 and int(fields["fds"]) >= 20, fields
        assert int(fields["deliveries"]) > 0, fields
    for series in ("rss_mb", "fds", "latency_p50_ms", "latency_p99_ms"):
        assert f"| {series} |" in proc.stdout, proc.stdout
    assert "0 failed" in proc.stdout, proc.stdout
