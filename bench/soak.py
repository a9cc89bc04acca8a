"""Soak: a steady, moderate load for a long time; do the server's memory, descriptors and latency stay flat?

Starts its own ``clarion serve`` (the environment's other ``CLARION_*`` settings pass through),
connects ``--clients`` reconnecting clients (clarion.bench.reconnecting) spread over public channels
and a few presence channels (``--presence-share`` of the clients, each with its own user id), then
for ``--duration`` seconds:

- publishes ``--rate`` events/s round robin over all channels through the HTTP API;
- churns ``--churn`` clients/s: a client closes as a user closing the tab and joins again as a new
  connection (on presence channels: a member_removed, then a member_added);
- every ``--sample`` seconds reads the server's RSS and open descriptors from /proc and drains the
  clients' latency samples (API send → socket receive, live deliveries only).

One CSV row a minute (``--csv``): RSS, descriptors, subscribed clients, deliveries, latency p50/p99/max,
churned and dropped connections. At the end, each series' first five minutes against its last five
and its least-squares slope, and whether it is flat (within ``--flat`` of its start).

    .venv/bin/python bench/soak.py --clients 2000 --rate 20 --churn 2 --duration 1800 --csv /tmp/soak.csv
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import csv
import json
import os
import secrets
import statistics
import sys
import time
from array import array
from pathlib import Path
from typing import Any

from clarion.bench import target as targets
from clarion.bench.load import LoadPlan, trigger
from clarion.bench.reconnecting import ClientPool, ClientSpec, WorkerPlan, split

FIELDS = [
    "minute",
    "elapsed_s",
    "rss_mb",
    "fds",
    "subscribed",
    "deliveries",
    "latency_p50_ms",
    "latency_p99_ms",
    "latency_max_ms",
    "churned",
    "disconnects",
]
SERIES = ("rss_mb", "fds", "latency_p50_ms", "latency_p99_ms")


def proc_figures(pid: int) -> tuple[float, int]:
    """RSS in MB and open descriptors of a process, from /proc."""
    rss_kb = 0
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            rss_kb = int(line.split()[1])
    return rss_kb / 1024, len(os.listdir(f"/proc/{pid}/fd"))


def quantile(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def slope_per_hour(xs: list[float], ys: list[float]) -> float:
    """Least-squares slope, per hour for xs in minutes."""
    if len(xs) < 2:
        return 0.0
    return statistics.linear_regression(xs, ys).slope * 60


def summarise(rows: list[dict[str, Any]], window: int, flat: float) -> dict[str, dict[str, Any]]:
    summary: dict[str, dict[str, Any]] = {}
    for name in SERIES:
        points = [(float(r["minute"]), float(r[name])) for r in rows if r[name] == r[name]]  # drop NaN
        if not points:
            continue
        first = statistics.fmean(y for _, y in points[:window])
        last = statistics.fmean(y for _, y in points[-window:])
        slope = slope_per_hour([x for x, _ in points], [y for _, y in points])
        change = (last - first) / first if first else 0.0
        summary[name] = {
            "first": round(first, 2),
            "last": round(last, 2),
            "change": round(change, 4),
            "slope_per_hour": round(slope, 3),
            "flat": abs(change) <= flat,
        }
    return summary


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--clients", type=int, default=2000)
    parser.add_argument("--channels", type=int, default=20, help="public channels")
    parser.add_argument("--presence-channels", type=int, default=4)
    parser.add_argument("--presence-share", type=float, default=0.1, help="share of clients on presence channels")
    parser.add_argument("--rate", type=float, default=20.0, help="events/s over all channels")
    parser.add_argument("--churn", type=float, default=2.0, help="clients leaving and joining again, per second")
    parser.add_argument("--duration", type=float, default=1800.0, help="seconds")
    parser.add_argument("--sample", type=float, default=10.0, help="seconds between two samples")
    parser.add_argument("--minute", type=float, default=60.0, help="seconds per CSV row (smaller in tests)")
    parser.add_argument("--window", type=int, default=5, help="rows compared at the start and at the end")
    parser.add_argument("--flat", type=float, default=0.10, help="largest relative change still called flat")
    parser.add_argument("--processes", type=int, default=2, help="client processes")
    parser.add_argument("--csv", type=Path, required=True)
    args = parser.parse_args(argv)
    if args.clients < 1 or args.channels < 1 or args.rate <= 0 or args.duration <= 0 or args.sample <= 0:
        parser.error("--clients, --channels, --rate, --duration and --sample must be positive")
    if not 0 <= args.presence_share < 1:
        parser.error("--presence-share must be in [0, 1)")
    return args


async def soak(args: argparse.Namespace) -> dict[str, Any]:
    app_id, key, secret = "soak", secrets.token_hex(8), secrets.token_hex(16)
    run = secrets.token_hex(6)
    server = await targets.start_clarion(app_id, key, secret)
    assert server.pid is not None
    public = [f"soak-{run}-{i}" for i in range(args.channels)]
    presence = [f"presence-soak-{run}-{i}" for i in range(args.presence_channels)]
    on_presence = int(args.clients * args.presence_share) if presence else 0
    specs = [ClientSpec([server.ws_url], presence[i % len(presence)], f"u{i}") for i in range(on_presence)]
    specs += [ClientSpec([server.ws_url], public[i % len(public)]) for i in range(args.clients - on_presence)]
    channels = public + presence
    plan = LoadPlan(server.http_url, app_id, key, secret, channels, "soak", run, args.rate, args.duration)
    plans = [
        WorkerPlan(
            i, part, key, secret, "soak", run, plan.max_events, resume=False, churn_per_s=args.churn / args.processes
        )
        for i, part in enumerate(split(specs, args.processes))
    ]
    pool = ClientPool(plans)
    rows: list[dict[str, Any]] = []
    try:
        await pool.ready()
        started = await pool.command("start", 120.0, "started", timeout=180)
        connected = sum(s.subscribed for s in started)
        print(f"soak: {connected}/{args.clients} clients subscribed; server pid {server.pid}", file=sys.stderr)
        publisher = asyncio.create_task(trigger(plan))
        began = time.monotonic()
        args.csv.parent.mkdir(parents=True, exist_ok=True)
        with args.csv.open("w", newline="") as out:
            writer = csv.DictWriter(out, FIELDS)
            writer.writeheader()
            minute_latency: list[float] = []
            churned_before = 0
            disconnects_before = 0
            rss, fds = proc_figures(server.pid)
            next_row = began + args.minute
            while not publisher.done():
                await asyncio.sleep(args.sample)
                if server.process is not None and server.process.poll() is not None:
                    raise RuntimeError(f"the server exited (code {server.process.returncode}):\n{server.log_tail()}")
                rss, fds = proc_figures(server.pid)
                churned = 0
                for samples, worker_churned in await pool.command("drain", None, "drain"):
                    values = array("d")
                    values.frombytes(samples)
                    minute_latency.extend(values[1::2])
                    churned += worker_churned
                if time.monotonic() >= next_row - args.sample / 2:
                    status = await pool.status()
                    row = {
                        "minute": len(rows) + 1,
                        "elapsed_s": round(time.monotonic() - began),
                        "rss_mb": round(rss, 1),
                        "fds": fds,
                        "subscribed": status.subscribed,
                        "deliveries": len(minute_latency),
                        "latency_p50_ms": round(quantile(minute_latency, 0.5), 2),
                        "latency_p99_ms": round(quantile(minute_latency, 0.99), 2),
                        "latency_max_ms": round(max(minute_latency, default=float("nan")), 2),
                        "churned": churned - churned_before,
                        "disconnects": status.disconnects - disconnects_before,
                    }
                    churned_before, disconnects_before = churned, status.disconnects
                    rows.append(row)
                    writer.writerow(row)
                    out.flush()
                    print(" ".join(f"{k}={v}" for k, v in row.items()), file=sys.stderr)
                    minute_latency = []
                    next_row += args.minute
        load = await publisher
    finally:
        with contextlib.suppress(Exception):
            pool.close()
        server.stop()
    return {
        "clients": args.clients,
        "connected": connected,
        "rate": args.rate,
        "churn_per_s": args.churn,
        "minutes": len(rows),
        "events_accepted": load.accepted_count,
        "events_failed": sum(load.errors.values()),
        "summary": summarise(rows, args.window, args.flat),
    }


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    result = asyncio.run(soak(args))
    summary = result["summary"]
    print(
        f"soak: {result['clients']} clients, {result['rate']:g} events/s, churn {result['churn_per_s']:g}/s, "
        f"{result['minutes']} min, {result['events_accepted']} events accepted, {result['events_failed']} failed"
    )
    print("| series | first 5 min | last 5 min | change | slope /h | flat |")
    print("|---|---|---|---|---|---|")
    for name, s in summary.items():
        print(
            f"| {name} | {s['first']} | {s['last']} | {s['change'] * 100:+.1f} % | "
            f"{s['slope_per_hour']:+.2f} | {'yes' if s['flat'] else 'no'} |"
        )
    print(json.dumps(result), file=sys.stderr)
    return 0 if result["events_failed"] == 0 and result["connected"] == result["clients"] else 1


if __name__ == "__main__":
    sys.exit(main())
