"""Reliability: connected clients through a server restart and a node kill; who comes back, how fast, what is missed.

Each scenario starts its own ``clarion serve`` node(s) on Redis (``CLARION_REDIS_URL``, default the
local one; a fresh ``CLARION_SCALING_PREFIX`` per run, so history outlives a restart), connects
``--clients`` reconnecting clients (clarion.bench.reconnecting: pusher-js's retry rules, and with
recovery on, a resume inside each resubscribe) spread over ``--channels`` public channels, and
publishes ``--rate`` events/s with sequence numbers through the HTTP API (with an Idempotency-Key,
trying the next node when one fails, as behind a load balancer). After ``--before`` seconds:

- ``restart``: one node gets SIGTERM; once it has exited it starts again on the same port;
- ``kill``: two nodes, clients spread over both, each client's fallback the other node; one node
  gets SIGKILL.

Then it waits until every client is subscribed again (at most ``--after`` seconds), publishes a
little longer and counts, per client, the accepted events of its channel it never saw (missed) or
saw twice (duplicated). With ``--recovery both`` every scenario runs with history on (resume) and
off (``CLARION_HISTORY=off``, no resume) for contrast.

Reported per run: clients that lost their socket, the share of them subscribed again within 30 s of
losing it, the time to reconnect (p50/p95/max, loss to resubscribed), the wave's spread (first to last
resubscription), and events missed/duplicated. The close codes seen say how the server closed.

    .venv/bin/python bench/reliability.py --clients 5000 --scenario both --recovery both
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import secrets
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import orjson

from clarion.bench.reconnecting import ClientPool, ClientResult, ClientSpec, Status, WorkerPlan, split
from clarion.bench.signing import signed_query
from clarion.bench.target import free_port

ROOT = Path(__file__).resolve().parent.parent
WITHIN = 30.0  # the seed's reconnect bound, seconds
EVENT = "reliability"


@dataclass
class Node:
    port: int
    env: dict[str, str]
    process: subprocess.Popen[bytes] | None = None
    log: Path | None = None

    @property
    def http(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def ws(self, key: str) -> str:
        return f"ws://127.0.0.1:{self.port}/app/{key}?protocol=7&client=clarion-reliability&version=1"

    async def start(self) -> None:
        self.process = self._spawn()
        deadline = time.monotonic() + 30
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=2)) as session:
            while time.monotonic() < deadline:
                if self.process.poll() is not None:
                    raise RuntimeError(f"node on {self.port} exited:\n{self.tail()}")
                with contextlib.suppress(OSError, aiohttp.ClientError, TimeoutError):
                    async with session.get(self.http + "/ready") as response:
                        if response.status == 200:
                            return
                await asyncio.sleep(0.05)
        raise RuntimeError(f"node on {self.port} not ready within 30 s:\n{self.tail()}")

    def _spawn(self) -> subprocess.Popen[bytes]:
        handle, name = tempfile.mkstemp(prefix="clarion-reliability-", suffix=".log")
        self.log = Path(name)
        with os.fdopen(handle, "ab") as log:
            return subprocess.Popen(
                [sys.executable, "-m", "clarion", "serve"],
                env=self.env,
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
            )

    def tail(self) -> str:
        return "\n".join(self.log.read_text(errors="replace").splitlines()[-20:]) if self.log else ""

    def signal(self, sig: signal.Signals) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(sig)

    async def wait_exit(self, timeout: float) -> float:
        """Seconds until the process exited (it is killed past ``timeout``)."""
        assert self.process is not None
        began = time.monotonic()
        while self.process.poll() is None:
            if time.monotonic() - began > timeout:
                self.process.kill()
            await asyncio.sleep(0.02)
        return time.monotonic() - began

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(30)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(5)
        if self.log is not None:
            with contextlib.suppress(OSError):
                self.log.unlink()


@dataclass
class Publisher:
    urls: list[str]
    app_id: str
    key: str
    secret: str
    channels: list[str]
    run: str
    rate: float
    max_events: int
    accepted: bytearray = field(init=False)
    errors: Counter[str] = field(default_factory=Counter)
    sent: int = 0

    def __post_init__(self) -> None:
        self.accepted = bytearray(self.max_events)

    async def post(self, session: aiohttp.ClientSession, seq: int) -> None:
        path = f"/apps/{self.app_id}/events"
        data = {"run": self.run, "seq": seq, "t": time.time_ns()}
        body = orjson.dumps(
            {"name": EVENT, "channel": self.channels[seq % len(self.channels)], "data": orjson.dumps(data).decode()}
        )
        headers = {"Content-Type": "application/json", "Idempotency-Key": f"{self.run}-{seq}"}
        for url in self.urls:
            try:
                params = signed_query(self.key, self.secret, "POST", path, body)
                async with session.post(url + path, params=params, data=body, headers=headers) as response:
                    await response.read()
                    if response.status == 200:
                        self.accepted[seq] = 1
                        return
                    self.errors[str(response.status)] += 1
            except (aiohttp.ClientError, OSError, TimeoutError) as exc:
                self.errors[type(exc).__name__] += 1

    async def run_until(self, stop: asyncio.Event) -> None:
        loop = asyncio.get_running_loop()
        pending: set[asyncio.Task[None]] = set()
        gate = asyncio.Semaphore(8)
        timeout = aiohttp.ClientTimeout(total=5)
        async with aiohttp.ClientSession(timeout=timeout, connector=aiohttp.TCPConnector(limit=8)) as session:

            async def one(seq: int) -> None:
                async with gate:
                    await self.post(session, seq)

            start = loop.time()
            while not stop.is_set() and self.sent < self.max_events:
                task = loop.create_task(one(self.sent))
                pending.add(task)
                task.add_done_callback(pending.discard)
                self.sent += 1
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), max(0.0, start + self.sent / self.rate - loop.time()))
            if pending:
                await asyncio.gather(*pending)


def quantile(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def commit() -> str:
    proc = subprocess.run(
        ["git", "rev-parse", "--short", "HEAD"],  # noqa: S607
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=False,
    )
    return proc.stdout.strip() or "unknown"


async def scenario(args: argparse.Namespace, name: str, recovery: bool) -> dict[str, Any]:
    app_id, key, secret = "reliability", secrets.token_hex(8), secrets.token_hex(16)
    run = secrets.token_hex(6)
    env = {k: v for k, v in os.environ.items() if not k.startswith("CLARION_")}
    env.update(
        {
            "CLARION_HOST": "127.0.0.1",
            "CLARION_APP_ID": app_id,
            "CLARION_APP_KEY": key,
            "CLARION_APP_SECRET": secret,
            "CLARION_SCALING": "redis",
            "CLARION_REDIS_URL": args.redis_url,
            "CLARION_SCALING_PREFIX": f"reliability-{uuid.uuid4().hex[:12]}",
            "CLARION_HISTORY": ":100:300" if recovery else "off",
            "CLARION_LOG_FORMAT": "text",
            "CLARION_LOG_LEVEL": "warning",
            "PYTHONUNBUFFERED": "1",
        }
    )
    count = 1 if name == "restart" else 2
    nodes = []
    for _ in range(count):
        port = free_port()
        nodes.append(Node(port, {**env, "CLARION_PORT": str(port)}))
    channels = [f"rel-{run}-{i}" for i in range(args.channels)]
    specs = []
    for i in range(args.clients):
        order = [nodes[(i + j) % count].ws(key) for j in range(count)]
        specs.append(ClientSpec(order, channels[i % len(channels)]))
    max_events = int(args.rate * (args.before + args.after + args.tail + 60))
    publisher = Publisher([n.http for n in nodes], app_id, key, secret, channels, run, args.rate, max_events)
    plans = [
        WorkerPlan(i, part, key, secret, EVENT, run, max_events, resume=recovery)
        for i, part in enumerate(split(specs, args.processes))
    ]
    pool: ClientPool | None = None
    try:
        for node in nodes:
            await node.start()
        pool = ClientPool(plans)
        await pool.ready()
        started = await pool.command("start", 180.0, "started", timeout=240)
        connected = sum(s.subscribed for s in started)
        log(f"{name}, recovery {'on' if recovery else 'off'}: {connected}/{args.clients} subscribed")
        stop = asyncio.Event()
        publishing = asyncio.create_task(publisher.run_until(stop))
        await asyncio.sleep(args.before)
        victim = nodes[0]
        t0 = time.time()
        if name == "restart":
            victim.signal(signal.SIGTERM)
            exit_s = await victim.wait_exit(args.shutdown_timeout)
            await victim.start()
            log(f"SIGTERM: exited after {exit_s:.1f} s, ready again {time.time() - t0:.1f} s after the signal")
        else:
            victim.signal(signal.SIGKILL)
            exit_s = await victim.wait_exit(5)
            log("SIGKILL sent")
        status = Status(0, 0, 0, 0)
        while time.time() - t0 < args.after:
            await asyncio.sleep(0.5)
            status = await pool.status()
            if status.disconnects and status.down == 0:
                break
        log(f"{status.subscribed} subscribed, {status.down} down, {time.time() - t0:.1f} s after the signal")
        await asyncio.sleep(args.tail)
        stop.set()
        await publishing
        await asyncio.sleep(args.drain)
        channel_of = [seq % len(channels) for seq in range(max_events)]
        answers = await pool.command("stop", (bytes(publisher.accepted), channel_of, channels), "result", 120)
    finally:
        if pool is not None:
            pool.close()
        for node in nodes:
            node.stop()
    final = Status(0, 0, 0, 0)
    results: list[ClientResult] = []
    for part_status, part_results in answers:
        final.subscribed += part_status.subscribed
        final.disconnects += part_status.disconnects
        final.failed_attempts += part_status.failed_attempts
        final.close_codes.update(part_status.close_codes)
        final.errors.update(part_status.errors)
        results.extend(part_results)
    return report(args, name, recovery, connected, exit_s, t0, publisher, final, results)


def report(
    args: argparse.Namespace,
    name: str,
    recovery: bool,
    connected: int,
    exit_s: float,
    t0: float,
    publisher: Publisher,
    status: Status,
    results: list[ClientResult],
) -> dict[str, Any]:
    affected = [r for r in results if r.reconnects]
    down_s = []  # loss to resubscribed, per affected client (its first loss)
    up_after_signal = []
    within = 0
    for r in affected:
        first = r.reconnects[0]
        if first.up_at:
            down_s.append(first.up_at - first.down_at)
            up_after_signal.append(first.up_at - t0)
            if first.up_at - first.down_at <= WITHIN:
                within += 1
    recovered: Counter[str] = Counter()
    for r in results:
        recovered.update(r.recovered)
    missed = sum(r.missed for r in results)
    return {
        "scenario": name,
        "recovery": recovery,
        "clients": args.clients,
        "connected": connected,
        "affected": len(affected),
        "reconnected": len(down_s),
        "within_30s_share": within / len(affected) if affected else float("nan"),
        "reconnect_p50_s": quantile(down_s, 0.5),
        "reconnect_p95_s": quantile(down_s, 0.95),
        "reconnect_max_s": max(down_s, default=float("nan")),
        "wave_first_s": min(up_after_signal, default=float("nan")),
        "wave_last_s": max(up_after_signal, default=float("nan")),
        "wave_spread_s": (max(up_after_signal) - min(up_after_signal)) if up_after_signal else float("nan"),
        "old_node_exit_s": exit_s,
        "events_sent": publisher.sent,
        "events_accepted": sum(publisher.accepted),
        "api_errors": dict(publisher.errors),
        "missed": missed,
        "clients_missing": sum(1 for r in results if r.missed),
        "duplicated": sum(r.duplicates for r in results),
        "unexpected": sum(r.unexpected for r in results),
        "resumed": dict(recovered),
        "close_codes": dict(status.close_codes),
        "failed_attempts": status.failed_attempts,
        "client_errors": dict(status.errors),
        "commit": commit(),
    }


def log(text: str) -> None:
    print(f"reliability: {text}", file=sys.stderr, flush=True)


def table_line(r: dict[str, Any]) -> str:
    return (
        f"| {r['scenario']} | {'on' if r['recovery'] else 'off'} | {r['clients']} | {r['affected']} | "
        f"{r['within_30s_share'] * 100:.2f} % | {r['reconnect_p50_s']:.2f} / {r['reconnect_p95_s']:.2f} / "
        f"{r['reconnect_max_s']:.2f} s | {r['wave_first_s']:.2f} → {r['wave_last_s']:.2f} s "
        f"({r['wave_spread_s']:.2f}) | {r['events_accepted']} | {r['missed']} ({r['clients_missing']} clients) | "
        f"{r['duplicated']} | {' '.join(f'{k} x{v}' for k, v in sorted(r['close_codes'].items()))} |"
    )


HEADER = (
    "| scenario | recovery | clients | lost socket | back ≤ 30 s | reconnect p50 / p95 / max | "
    "wave (after signal) first → last (spread) | events accepted | missed | duplicated | close codes |\n"
    "|---|---|---|---|---|---|---|---|---|---|---|"
)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--clients", type=int, default=5000)
    parser.add_argument("--channels", type=int, default=50)
    parser.add_argument("--rate", type=float, default=10.0, help="events/s over all channels")
    parser.add_argument("--scenario", choices=("restart", "kill", "both"), default="both")
    parser.add_argument("--recovery", choices=("on", "off", "both"), default="both")
    parser.add_argument("--before", type=float, default=5.0, help="seconds of publishing before the signal")
    parser.add_argument("--after", type=float, default=60.0, help="longest wait for the reconnect wave")
    parser.add_argument("--tail", type=float, default=3.0, help="seconds of publishing after the wave")
    parser.add_argument("--drain", type=float, default=2.0, help="seconds for the last deliveries")
    parser.add_argument("--shutdown-timeout", type=float, default=60.0, help="SIGKILL a SIGTERMed node after this")
    parser.add_argument("--processes", type=int, default=2, help="client processes")
    parser.add_argument("--redis-url", default=os.environ.get("CLARION_REDIS_URL", "redis://127.0.0.1:6379/0"))
    parser.add_argument("--json", action="store_true", help="print the results as JSON instead of a table")
    args = parser.parse_args(argv)
    if args.clients < 1 or args.channels < 1 or args.rate <= 0 or args.processes < 1:
        parser.error("--clients, --channels, --rate and --processes must be positive")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    names = ["restart", "kill"] if args.scenario == "both" else [args.scenario]
    modes = [True, False] if args.recovery == "both" else [args.recovery == "on"]
    results = []
    for name in names:
        for recovery in modes:
            results.append(asyncio.run(scenario(args, name, recovery)))
            if not args.json:
                print(json.dumps(results[-1]), file=sys.stderr)
    if args.json:
        print(json.dumps(results))
    else:
        print(f"commit {results[0]['commit']}")
        print(HEADER)
        for r in results:
            print(table_line(r))
    ok = all(r["connected"] == r["clients"] and r["reconnected"] == r["affected"] for r in results)
    ok = ok and all(r["missed"] == 0 and r["duplicated"] == 0 for r in results if r["recovery"])
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
