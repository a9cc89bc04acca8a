"""Fan-out throughput and latency of a running-or-started Clarion, with 1 or more workers.

    .venv/bin/python bench/fanout.py --workers 1 --subscribers 1000 --rate 100 --duration 10
    .venv/bin/python bench/fanout.py --compare-workers 1,2 --subscribers 1000 --rate 200

Starts ``clarion serve`` (Redis scaling when workers > 1, or when --redis), opens the subscribers
in separate processes (aiohttp clients, spread over --client-processes), triggers signed events at
a fixed rate through the HTTP API for --duration seconds, and reports per run: deliveries
expected/received, deliveries per second, end-to-end latency percentiles (send time is in each
event's data; same host, same clock) and the server's CPU microseconds per delivery (from
/proc of the server processes).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import multiprocessing as mp
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import aiohttp

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))

from pusherclient import signed_query  # noqa: E402

KEY, SECRET, APP_ID = "bench-key", "bench-secret-0123", "4242"
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pids: list[int]) -> float:
    total = 0.0
    for pid in pids:
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        except FileNotFoundError:
            continue
        total += (int(fields[11]) + int(fields[12])) / CLOCK_TICKS
    return total


def server_pids(root: int) -> list[int]:
    """The server and its worker processes (children, read from /proc)."""
    children = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except (FileNotFoundError, ProcessLookupError):
            continue
        if int(fields[1]) == root:
            children.append(int(stat.parent.name))
    return [root, *children]


def subscriber_process(
    url: str,
    count: int,
    channel: str,
    ready: mp.Queue[int],
    results: mp.Queue[tuple[int, list[float]]],
    stop_at: float,
) -> None:
    """Hold ``count`` subscribers; report how many connected, then (events received, latencies in s)."""

    async def main() -> None:
        latencies: list[float] = []
        received = 0
        # No connector limit: aiohttp would otherwise queue sockets past 100.
        async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0)) as session:
            sockets = []
            for _ in range(count):
                ws = await session.ws_connect(url, autoping=True, max_msg_size=0)
                await ws.receive()  # connection_established
                await ws.send_str(json.dumps({"event": "pusher:subscribe", "data": {"channel": channel}}))
                await ws.receive()  # subscription_succeeded
                sockets.append(ws)
            ready.put(count)

            async def read(ws: aiohttp.ClientWebSocketResponse) -> None:
                nonlocal received
                while True:
                    msg = await ws.receive()
                    if msg.type is not aiohttp.WSMsgType.TEXT:
                        return
                    frame = json.loads(msg.data)
                    if frame.get("event") == "tick":
                        received += 1
                        latencies.append(time.time() - json.loads(frame["data"])["t"])

            readers = [asyncio.create_task(read(ws)) for ws in sockets]
            await asyncio.sleep(max(0.0, stop_at - time.time()))
            for task in readers:
                task.cancel()
        results.put((received, latencies))

    asyncio.run(main())


async def publish(http_url: str, channel: str, rate: float, duration: float) -> int:
    path = f"/apps/{APP_ID}/events"
    sent = 0
    interval = 1.0 / rate
    start = time.perf_counter()
    async with aiohttp.ClientSession() as session:
        while time.perf_counter() - start < duration:
            body = json.dumps({"name": "tick", "channel": channel, "data": json.dumps({"t": time.time()})}).encode()
            params = signed_query(KEY, SECRET, "POST", path, body)
            async with session.post(http_url + path, params=params, data=body) as response:
                if response.status != 200:
                    raise RuntimeError(await response.text())
            sent += 1
            await asyncio.sleep(max(0.0, start + sent * interval - time.perf_counter()))
    return sent


def run(workers: int, subscribers: int, rate: float, duration: float, processes: int, redis: bool) -> dict[str, Any]:
    env = {
        **os.environ,
        "CLARION_HOST": "127.0.0.1",
        "CLARION_PORT": "0",
        "CLARION_APP_ID": APP_ID,
        "CLARION_APP_KEY": KEY,
        "CLARION_APP_SECRET": SECRET,
        "CLARION_WORKERS": str(workers),
        "CLARION_SCALING": "redis" if (redis or workers > 1) else "memory",
        "CLARION_SCALING_PREFIX": f"bench-{os.getpid()}-{time.time_ns()}",
        "CLARION_LOG_LEVEL": "warning",
        "CLARION_MAX_CONNECTIONS": "1000000",
        "PYTHONUNBUFFERED": "1",
    }
    server = subprocess.Popen(
        [sys.executable, "-m", "clarion", "serve"], env=env, stdout=subprocess.PIPE, text=True, cwd=ROOT
    )
    assert server.stdout is not None
    for line in server.stdout:
        if "listening on" in line:
            port = int(line.split("listening on ", 1)[1].rsplit(":", 1)[1].split()[0])
            break
    else:
        raise RuntimeError("clarion serve did not start")
    try:
        url = f"ws://127.0.0.1:{port}/app/{KEY}?protocol=7"
        ready: mp.Queue[int] = mp.Queue()
        results: mp.Queue[tuple[int, list[float]]] = mp.Queue()
        setup_started = time.time()
        share = [subscribers // processes + (1 if i < subscribers % processes else 0) for i in range(processes)]
        procs = []
        # Subscribers stop at a fixed wall-clock time: setup allowance + run + drain.
        setup_allowance = 5 + subscribers / 500
        stop_at = setup_started + setup_allowance + duration + 3
        for n in share:
            proc = mp.Process(target=subscriber_process, args=(url, n, "bench", ready, results, stop_at))
            proc.start()
            procs.append(proc)
        connected = sum(ready.get(timeout=setup_allowance + 30) for _ in procs)
        setup_seconds = time.time() - setup_started
        pids = server_pids(server.pid)
        cpu_before = cpu_seconds(pids)
        time.sleep(max(0.0, setup_started + setup_allowance - time.time()))
        sent = asyncio.run(publish(f"http://127.0.0.1:{port}", "bench", rate, duration))
        time.sleep(max(0.0, stop_at - time.time() - 1))
        cpu_after = cpu_seconds(pids)
        received = 0
        latencies: list[float] = []
        for _ in procs:
            got, lat = results.get(timeout=60)
            received += got
            latencies += lat
        for proc in procs:
            proc.join(10)
    finally:
        server.terminate()
        server.wait(20)
    latencies.sort()

    def pct(p: float) -> float:
        return latencies[min(len(latencies) - 1, int(p * len(latencies)))] * 1000 if latencies else float("nan")

    expected = sent * connected
    return {
        "workers": workers,
        "scaling": env["CLARION_SCALING"],
        "subscribers": connected,
        "rate": rate,
        "events": sent,
        "expected": expected,
        "received": received,
        "lost": expected - received,
        "deliveries_per_s": round(received / duration),
        "connect_per_s": round(connected / setup_seconds),
        "p50_ms": round(pct(0.50), 2),
        "p95_ms": round(pct(0.95), 2),
        "p99_ms": round(pct(0.99), 2),
        "max_ms": round(latencies[-1] * 1000, 2) if latencies else None,
        "mean_ms": round(statistics.fmean(latencies) * 1000, 2) if latencies else None,
        "server_cpu_us_per_delivery": round((cpu_after - cpu_before) / max(received, 1) * 1e6, 2),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--workers", type=int, default=1)
    parser.add_argument("--compare-workers", help="comma list, e.g. 1,2: one run each, same load")
    parser.add_argument("--subscribers", type=int, default=1000)
    parser.add_argument("--rate", type=float, default=100, help="events per second")
    parser.add_argument("--duration", type=float, default=10)
    parser.add_argument("--client-processes", type=int, default=2)
    parser.add_argument("--redis", action="store_true", help="Redis scaling even with one worker")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    counts = [int(n) for n in args.compare_workers.split(",")] if args.compare_workers else [args.workers]
    rows = [run(n, args.subscribers, args.rate, args.duration, args.client_processes, args.redis) for n in counts]
    if args.json:
        print(json.dumps(rows, indent=2))
        return
    columns = list(rows[0])
    print(" | ".join(columns))
    for row in rows:
        print(" | ".join(str(row[c]) for c in columns))


if __name__ == "__main__":
    main()
