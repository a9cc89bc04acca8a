"""Runbook drills: reproduce one failure mode with real processes and record what Prometheus would see.

    .venv/bin/python deploy/drills/drill.py <name> [--out FILE]

Each drill starts its own processes (`clarion serve` on free ports, a private `redis-server`, a
webhook target, clients over real sockets ...), scrapes their /metrics every 15 s of real time (the
scrape interval of deploy/prometheus/prometheus.yml), and writes deploy/drills/recordings/<name>.yml:
the samples in promtool's `input_series` form, at the interval they were taken, and the alerts the
failure must fire (and must not fire in the healthy lead-in). tests/deploy/test_alerts.py replays each
recording through `promtool test rules` against deploy/prometheus/clarion-rules.yml.

Every process a drill starts is stopped when it ends, also on Ctrl-C. See README.md for each drill.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import datetime
import json
import os
import re
import resource
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable, Coroutine
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
from prometheus_client.parser import text_string_to_metric_families

from clarion.bench.signing import signed_query

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]
RULES = ROOT / "deploy" / "prometheus" / "clarion-rules.yml"
CLARION = Path(sys.executable).parent / "clarion"
INTERVAL = 15.0  # seconds between scrapes, as in prometheus.yml; the replay uses the same
APP_ID, APP_KEY, APP_SECRET = "1", "drill-key", "drill-secret-1"
WRONG_SECRET = "wrong-secret-9"  # noqa: S105 - what an abusive client signs with


def exe(name: str) -> str:
    path = shutil.which(name)
    if path is None:
        raise RuntimeError(f"{name} is needed")
    return path


def git(*args: str) -> str:
    result = subprocess.run([exe("git"), "-C", str(ROOT), *args], capture_output=True, text=True, check=False)  # noqa: S603
    return result.stdout.strip()


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def rule_metrics() -> set[str]:
    """The metric names the rules read: only those are recorded, so a recording stays small."""
    text = RULES.read_text()
    return set(re.findall(r"\b(clarion_[a-z_]+|probe_ssl_earliest_cert_expiry)\b", text))


@dataclass
class Target:
    job: str
    instance: str
    url: str
    # Turns a sample's value into the replay's; see certificate-expiry (time() starts at 0 there).
    rebase: Callable[[str, float, float, float], float] | None = None


@dataclass
class Expect:
    alert: str
    at: float  # seconds from the first scrape
    labels: dict[str, str]


@dataclass
class Recorder:
    targets: list[Target] = field(default_factory=list)
    names: set[str] = field(default_factory=rule_metrics)
    series: dict[str, dict[int, float | str]] = field(default_factory=dict)
    ticks: int = 0

    def put(self, key: str, tick: int, value: float | str) -> None:
        self.series.setdefault(key, {})[tick] = value

    async def scrape(self, session: aiohttp.ClientSession, target: Target, tick: int, t_test: float) -> None:
        labels = {"job": target.job, "instance": target.instance}
        try:
            timeout = aiohttp.ClientTimeout(total=INTERVAL * 0.6)
            async with session.get(target.url, timeout=timeout) as resp:
                resp.raise_for_status()
                text = await resp.text()
        except (aiohttp.ClientError, TimeoutError, OSError):
            self.put(series_name("up", labels), tick, 0)
            return
        wall = time.time()
        self.put(series_name("up", labels), tick, 1)
        for family in text_string_to_metric_families(text):
            for sample in family.samples:
                if sample.name not in self.names:
                    continue
                value = sample.value
                if target.rebase is not None:
                    value = target.rebase(sample.name, value, wall, t_test)
                self.put(series_name(sample.name, {**sample.labels, **labels}), tick, value)

    def input_series(self) -> list[dict[str, str]]:
        out = []
        for key in sorted(self.series):
            points = self.series[key]
            values: list[str] = []
            seen = False
            for tick in range(self.ticks):
                if tick in points:
                    values.append(fmt(points[tick]))
                    seen = True
                elif seen and values[-1] not in ("stale", "_"):
                    values.append("stale")  # what Prometheus writes when a target stops answering
                else:
                    values.append("_")
            out.append({"series": key, "values": " ".join(values)})
        return out


def fmt(value: float | str) -> str:
    if isinstance(value, str):
        return value
    if value == int(value) and abs(value) < 1e15:
        return str(int(value))
    return repr(float(value))


def series_name(name: str, labels: dict[str, str]) -> str:
    inner = ", ".join(f'{k}="{v}"' for k, v in sorted(labels.items()))
    return f"{name}{{{inner}}}"


class Drill:
    """Processes, the scrape loop and the recording of one drill run."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.tmp = Path(tempfile.mkdtemp(prefix=f"clarion-drill-{name}-"))
        self.procs: list[subprocess.Popen[bytes]] = []
        self.recorder = Recorder()
        self.expect: list[Expect] = []
        self.quiet: list[Expect] = []
        self.phases: list[tuple[float, str]] = []
        self.t0 = 0.0
        self.notes: list[str] = []
        self.started = datetime.datetime.now(datetime.UTC)
        self.commit = git("rev-parse", "HEAD")  # the code that runs: taken at the start
        self.dirty = bool(git("status", "--porcelain", "--untracked-files=no"))

    # -- processes -----------------------------------------------------------------------------

    def spawn(
        self, args: list[str], env: dict[str, str] | None = None, nofile: int | None = None, log: str = "proc"
    ) -> subprocess.Popen[bytes]:
        def limits() -> None:
            if nofile is not None:
                resource.setrlimit(resource.RLIMIT_NOFILE, (nofile, nofile))

        out = (self.tmp / f"{log}.log").open("ab")
        proc = subprocess.Popen(  # noqa: S603 - the drill's own binaries
            args,
            env={**os.environ, **(env or {})},
            stdout=out,
            stderr=subprocess.STDOUT,
            preexec_fn=limits if nofile is not None else None,
        )
        self.procs.append(proc)
        return proc

    def stop_all(self) -> None:
        for proc in self.procs:
            if proc.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    proc.send_signal(signal.SIGCONT)
                    proc.terminate()
        deadline = time.monotonic() + 15
        for proc in self.procs:
            try:
                proc.wait(max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()

    async def clarion(
        self,
        env: dict[str, str] | None = None,
        nofile: int | None = None,
        log: str = "clarion",
        port: int | None = None,
    ) -> tuple[subprocess.Popen[bytes], int]:
        port = port or free_port()
        base = {
            "CLARION_HOST": "127.0.0.1",
            "CLARION_PORT": str(port),
            "CLARION_APP_ID": APP_ID,
            "CLARION_APP_KEY": APP_KEY,
            "CLARION_APP_SECRET": APP_SECRET,
            "CLARION_LOG_LEVEL": "warning",
        }
        proc = self.spawn([str(CLARION), "serve"], {**base, **(env or {})}, nofile=nofile, log=log)
        await wait_http(f"http://127.0.0.1:{port}/health", proc)
        return proc, port

    def redis(self, port: int | None = None) -> tuple[subprocess.Popen[bytes], int]:
        port = port or free_port()
        binary = shutil.which("redis-server")
        assert binary, "redis-server is needed"
        proc = self.spawn(
            [binary, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"],
            log=f"redis-{port}",
        )
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), timeout=0.5) as sock:
                sock.sendall(b"PING\r\n")
                if sock.recv(16).startswith(b"+PONG"):
                    return proc, port
            time.sleep(0.05)
        raise RuntimeError(f"redis-server on {port} did not start")

    def watch(self, job: str, port: int, path: str = "/metrics") -> Target:
        target = Target(job, f"127.0.0.1:{port}", f"http://127.0.0.1:{port}{path}")
        self.recorder.targets.append(target)
        return target

    # -- time ----------------------------------------------------------------------------------

    def now(self) -> float:
        return time.monotonic() - self.t0

    async def until(self, seconds: float) -> None:
        await asyncio.sleep(max(0.0, seconds - self.now()))

    def phase(self, text: str) -> None:
        self.phases.append((self.now(), text))
        print(f"[{self.name}] {self.now():7.1f}s {text}", flush=True)

    async def scrape_loop(self, total: float) -> None:
        """Scrape every target at t0 + k * INTERVAL, k = 0 .. total / INTERVAL."""
        async with aiohttp.ClientSession() as session:
            tick = 0
            while tick * INTERVAL <= total:
                await self.until(tick * INTERVAL)
                await asyncio.gather(
                    *(self.recorder.scrape(session, t, tick, tick * INTERVAL) for t in self.recorder.targets)
                )
                tick += 1
                self.recorder.ticks = tick

    def expect_at(self, alert: str, at: float, target: Target) -> None:
        self.expect.append(Expect(alert, at, {"job": target.job, "instance": target.instance}))

    def quiet_at(self, alert: str, at: float, target: Target) -> None:
        self.quiet.append(Expect(alert, at, {"job": target.job, "instance": target.instance}))

    # -- the recording -------------------------------------------------------------------------

    def write(self, out: Path, command: str) -> None:
        ended = datetime.datetime.now(datetime.UTC)
        ticks = self.recorder.ticks

        def snap(at: float) -> int:  # an evaluation on a scrape's time, never past the last one
            return min(ticks - 1, int(at // INTERVAL))

        body = {
            "drill": self.name,
            "interval": f"{int(INTERVAL)}s",
            "phases": [{"at": f"{snap(at) * int(INTERVAL)}s", "what": what} for at, what in self.phases],
            "expect": [
                {"alert": e.alert, "eval_time": f"{snap(e.at) * int(INTERVAL)}s", "labels": e.labels}
                for e in self.expect
            ],
            "quiet": [
                {"alert": q.alert, "eval_time": f"{snap(q.at) * int(INTERVAL)}s", "labels": q.labels}
                for q in self.quiet
            ],
            "input_series": self.recorder.input_series(),
        }
        header = [
            f"# Recording of the drill {self.name!r}: the samples scraped every {int(INTERVAL)} s of real time,",
            "# in promtool's input_series form, replayed at the same interval by tests/deploy/test_alerts.py.",
            f"# command:  {command}",
            f"# date:     {self.started:%Y-%m-%d %H:%M:%S} UTC to {ended:%H:%M:%S} UTC"
            f" ({(ended - self.started).total_seconds():.0f} s)",
            f"# commit:   {self.commit}{' (with local changes)' if self.dirty else ''}",
            f"# host:     {socket.gethostname()}, {os.cpu_count()} CPUs",
            *(f"# note:     {note}" for note in self.notes),
        ]
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text("\n".join(header) + "\n" + json.dumps(body, indent=1) + "\n")
        print(f"[{self.name}] wrote {out}", flush=True)


async def wait_http(url: str, proc: subprocess.Popen[bytes] | None = None, timeout: float = 20) -> None:
    deadline = time.monotonic() + timeout
    async with aiohttp.ClientSession() as session:
        while time.monotonic() < deadline:
            if proc is not None and proc.poll() is not None:
                raise RuntimeError(f"{proc.args!r} exited with {proc.returncode}")
            with contextlib.suppress(aiohttp.ClientError, OSError):
                async with session.get(url, timeout=aiohttp.ClientTimeout(total=1)) as resp:
                    if resp.status < 500:
                        return
            await asyncio.sleep(0.1)
    raise RuntimeError(f"{url} did not answer")


# -- clients ---------------------------------------------------------------------------------------


def ws_url(port: int) -> str:
    return f"ws://127.0.0.1:{port}/app/{APP_KEY}?protocol=7&client=drill&version=1"


async def open_socket(
    session: aiohttp.ClientSession, port: int, channels: list[str] | None = None, timeout: float = 10
) -> aiohttp.ClientWebSocketResponse:
    """A Pusher client: connect, wait for connection_established, subscribe."""
    ws = await session.ws_connect(ws_url(port), timeout=aiohttp.ClientWSTimeout(ws_close=2), autoping=True)
    msg = await asyncio.wait_for(ws.receive(), timeout)
    assert "connection_established" in str(msg.data), msg
    for channel in channels or []:
        await ws.send_str(json.dumps({"event": "pusher:subscribe", "data": {"channel": channel}}))
    return ws


async def reader(ws: aiohttp.ClientWebSocketResponse) -> None:
    """Reads until the socket closes, answering the server's pings."""
    with contextlib.suppress(Exception):
        async for msg in ws:
            if msg.type == aiohttp.WSMsgType.TEXT and '"pusher:ping"' in msg.data:
                await ws.send_str('{"event":"pusher:pong","data":{}}')


async def publish(
    session: aiohttp.ClientSession,
    port: int,
    channel: str,
    data: str = "{}",
    secret: str = APP_SECRET,
    name: str = "drill",
) -> int:
    path = f"/apps/{APP_ID}/events"
    body = json.dumps({"name": name, "channels": [channel], "data": data}).encode()
    params = signed_query(APP_KEY, secret, "POST", path, body)
    try:
        async with session.post(
            f"http://127.0.0.1:{port}{path}",
            params=params,
            data=body,
            headers={"Content-Type": "application/json"},
            timeout=aiohttp.ClientTimeout(total=5),
        ) as resp:
            await resp.read()
            return resp.status
    except (aiohttp.ClientError, TimeoutError, OSError):
        return 0


async def every(period: float, action: Callable[[], Awaitable[Any]], stop: asyncio.Event) -> None:
    """Runs action every period seconds (on a fixed schedule) until stop is set."""
    start = time.monotonic()
    k = 0
    while not stop.is_set():
        with contextlib.suppress(Exception):
            await action()
        k += 1
        await asyncio.sleep(max(0.0, start + k * period - time.monotonic()))


async def churn(port: int, rate: float, stop: asyncio.Event, session: aiohttp.ClientSession) -> None:
    """Opens and closes `rate` connections a second (each waits for connection_established)."""

    async def one() -> None:
        ws = await open_socket(session, port)
        await ws.close()

    tasks: set[asyncio.Task[None]] = set()

    async def spawn() -> None:
        task = asyncio.create_task(one())
        tasks.add(task)
        task.add_done_callback(tasks.discard)

    await every(1 / rate, spawn, stop)
    await asyncio.gather(*tasks, return_exceptions=True)


_tasks: set[asyncio.Task[None]] = set()


def keep(coro: Awaitable[None]) -> None:
    """Runs a background task, held until it ends."""
    task = asyncio.ensure_future(coro)
    _tasks.add(task)
    task.add_done_callback(_tasks.discard)


def raise_nofile() -> None:
    _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))


# -- the drills ------------------------------------------------------------------------------------

Run = Callable[["Drill"], Coroutine[Any, Any, None]]
DRILLS: dict[str, Run] = {}


def drill(name: str) -> Callable[[Run], Run]:
    def register(fn: Run) -> Run:
        DRILLS[name] = fn
        return fn

    return register


async def run_with_scrapes(d: Drill, total: float, script: Callable[[], Awaitable[None]]) -> None:
    d.t0 = time.monotonic()
    scraping = asyncio.create_task(d.scrape_loop(total))
    await script()
    await scraping


def prefix() -> str:
    return f"drill-{os.getpid()}-{int(time.time())}"


@drill("node-crash")
async def node_crash(d: Drill) -> None:
    """A node with 20 subscribers and a publish a second is killed (SIGKILL) and stays down."""
    lead, hold = 90, 120
    proc, port = await d.clarion()
    target = d.watch("clarion", port)
    stop = asyncio.Event()
    async with aiohttp.ClientSession() as s:
        sockets = [await open_socket(s, port, ["news"]) for _ in range(20)]
        readers = [asyncio.create_task(reader(ws)) for ws in sockets]
        pub = asyncio.create_task(every(1, lambda: publish(s, port, "news"), stop))

        async def script() -> None:
            d.phase("healthy: 20 subscribers, 1 publish/s")
            await d.until(lead)
            d.phase("the server is killed (SIGKILL)")
            proc.kill()
            await d.until(lead + hold)
            stop.set()

        await run_with_scrapes(d, lead + hold, script)
        await pub
        await asyncio.gather(*readers)
    d.quiet_at("ClarionDown", lead - 1, target)
    d.expect_at("ClarionDown", lead + hold, target)


@drill("redis-lost")
async def redis_lost(d: Drill) -> None:
    """The node's private Redis is killed for 150 s, then restarted, then dropped 5 times more."""
    lead, down, flaps = 90, 150, 5
    redis_proc, rport = d.redis()
    env = {
        "CLARION_SCALING": "redis",
        "CLARION_REDIS_URL": f"redis://127.0.0.1:{rport}/0",
        "CLARION_SCALING_PREFIX": prefix(),
    }
    _, port = await d.clarion(env)
    target = d.watch("clarion", port)
    stop = asyncio.Event()
    back = lead + down + 30
    total = back + flaps * 45 + 30
    async with aiohttp.ClientSession() as s:
        sockets = [await open_socket(s, port, ["news"]) for _ in range(10)]
        readers = [asyncio.create_task(reader(ws)) for ws in sockets]
        pub = asyncio.create_task(every(1, lambda: publish(s, port, "news"), stop))

        async def script() -> None:
            d.phase("healthy: Redis up, 10 subscribers, 1 publish/s")
            await d.until(lead)
            d.phase("Redis killed (SIGKILL)")
            redis_proc.kill()
            await d.until(lead + down)
            d.phase("Redis restarted")
            d.redis(rport)
            await d.until(back)
            for i in range(flaps):
                d.phase(f"Redis dropped again ({i + 1} of {flaps}) for 15 s")
                procs = [p for p in d.procs if isinstance(p.args, list) and str(p.args[0]).endswith("redis-server")]
                procs = [p for p in procs if p.poll() is None]
                for p in procs:
                    p.kill()
                await d.until(back + i * 45 + 15)
                d.redis(rport)
                await d.until(back + (i + 1) * 45)
            await d.until(total)
            stop.set()

        await run_with_scrapes(d, total, script)
        await pub
        for ws in sockets:
            await ws.close()
        await asyncio.gather(*readers)
    d.quiet_at("ClarionRedisDown", lead - 1, target)
    d.expect_at("ClarionRedisDown", lead + down, target)
    d.quiet_at("ClarionRedisFlapping", back, target)
    d.expect_at("ClarionRedisFlapping", total, target)


@drill("connection-storm")
async def connection_storm(d: Drill) -> None:
    """5 minutes of 1 connection a second, then every client reconnecting: 100 a second for 4 minutes."""
    lead, storm = 300, 240
    _, port = await d.clarion()
    target = d.watch("clarion", port)
    async with aiohttp.ClientSession() as s:

        async def script() -> None:
            d.phase("healthy churn: 1 connection opened and closed a second")
            calm = asyncio.Event()
            task = asyncio.create_task(churn(port, 1, calm, s))
            await d.until(lead)
            calm.set()
            await task
            d.phase("storm: 100 connections opened and closed a second")
            wild = asyncio.Event()
            task = asyncio.create_task(churn(port, 100, wild, s))
            await d.until(lead + storm)
            wild.set()
            await task

        await run_with_scrapes(d, lead + storm, script)
    d.quiet_at("ClarionConnectionStorm", lead - 1, target)
    d.expect_at("ClarionConnectionStorm", lead + storm, target)


async def attempt(
    s: aiohttp.ClientSession, port: int, held: list[aiohttp.ClientWebSocketResponse], timeout: float = 5
) -> bool:
    try:
        ws = await asyncio.wait_for(open_socket(s, port, timeout=timeout), timeout)
    except (aiohttp.ClientError, TimeoutError, OSError, AssertionError):
        return False
    held.append(ws)
    keep(reader(ws))  # a live client answers the server's pings, or it is closed after pong_timeout
    return True


@drill("descriptors")
async def descriptors(d: Drill) -> None:
    """Node A (RLIMIT_NOFILE 256, reserve 32, so 224 WebSockets) is filled and asked for more; node B
    (asyncio loop, RLIMIT_NOFILE 64, reserve 0) holds 40 sockets and gets bursts of 40 more, past its
    descriptors: its accepts fail."""
    lead, hold = 90, 420
    _, port_a = await d.clarion({"CLARION_FD_RESERVE": "32"}, nofile=256, log="clarion-a")
    _, port_b = await d.clarion({"CLARION_FD_RESERVE": "0", "CLARION_LOOP": "asyncio"}, nofile=64, log="clarion-b")
    a = d.watch("clarion", port_a)
    b = d.watch("clarion", port_b)
    held: list[aiohttp.ClientWebSocketResponse] = []
    stop = asyncio.Event()
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0)) as s:
        for _ in range(20):
            await attempt(s, port_a, held)
        for _ in range(10):
            await attempt(s, port_b, held)

        async def burst_b() -> None:
            """After each scrape, 40 sockets at once for 5 s: past B's 64 descriptors, so its accepts fail
            (EMFILE) until they leave. B has no reserve, so it can be scraped only between bursts."""
            tick = int(d.now() // INTERVAL) + 1
            while not stop.is_set():
                await d.until(tick * INTERVAL + 1)
                if stop.is_set():
                    break
                burst: list[aiohttp.ClientWebSocketResponse] = []
                await asyncio.gather(*(attempt(s, port_b, burst, timeout=5) for _ in range(40)))
                for ws in burst:
                    with contextlib.suppress(Exception):
                        await asyncio.wait_for(ws.close(), 2)
                tick += 1

        async def script() -> None:
            d.phase("healthy: 20 sockets on A, 10 on B")
            await d.until(lead)
            d.phase("A filled to its capacity, then asked for 2 more a second; B gets bursts past its descriptors")
            opened = 0
            for _ in range(230):
                opened += await attempt(s, port_a, held)
            d.notes.append(f"node A accepted {opened + 20} WebSockets")
            for _ in range(30):
                await attempt(s, port_b, held)
            more = asyncio.create_task(every(0.5, lambda: attempt(s, port_a, held), stop))
            bursts = asyncio.create_task(burst_b())
            await d.until(lead + hold)
            stop.set()
            await asyncio.gather(more, bursts)

        await run_with_scrapes(d, lead + hold, script)
        for ws in held:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(ws.close(), 2)
    for alert in ("ClarionDescriptorsNearLimit", "ClarionSaturated", "ClarionNotReady", "ClarionConnectionFailures"):
        d.quiet_at(alert, lead - 1, a)
        d.expect_at(alert, lead + hold, a)
    d.quiet_at("ClarionAcceptErrors", lead - 1, b)
    d.expect_at("ClarionAcceptErrors", lead + hold, b)


@drill("memory-growth")
async def memory_growth(d: Drill) -> None:
    """A client that opens a socket every half second, subscribes it to 100 channels and never closes
    it: the node's resident memory grows steadily for 21 minutes."""
    lead, grow = 120, 1260
    _, port = await d.clarion({"CLARION_IP_MAX_CONNECTIONS": "0"})
    target = d.watch("clarion", port)
    held: list[aiohttp.ClientWebSocketResponse] = []
    stop = asyncio.Event()
    counter = iter(range(10**9))
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0)) as s:
        for _ in range(10):
            held.append(await open_socket(s, port, ["news"]))
            keep(reader(held[-1]))

        async def leak() -> None:
            i = next(counter)
            ws = await open_socket(s, port, [f"room-{i}-{j}" for j in range(100)])
            held.append(ws)
            keep(reader(ws))  # the leaking client answers pings: its sockets stay open

        async def script() -> None:
            d.phase("healthy: 10 idle sockets")
            await d.until(lead)
            d.phase("leak: 2 sockets a second, 100 channels each, never closed")
            task = asyncio.create_task(every(0.5, leak, stop))
            await d.until(lead + grow)
            stop.set()
            await task
            d.notes.append(f"{len(held)} sockets were open at the end")

        await run_with_scrapes(d, lead + grow, script)
    d.quiet_at("ClarionMemoryGrowth", lead - 1, target)
    d.expect_at("ClarionMemoryGrowth", lead + grow, target)


@drill("webhook-down")
async def webhook_down(d: Drill) -> None:
    """The app's webhook endpoint answers 500 for 14 minutes while channels are occupied and vacated
    (8 webhook events a second)."""
    from aiohttp import web

    lead, down = 90, 840
    state = {"status": 200}

    async def hook(request: web.Request) -> web.Response:
        await request.read()
        return web.Response(status=state["status"])

    app = web.Application()
    app.router.add_post("/hooks", hook)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    wport = free_port()
    site = web.TCPSite(runner, "127.0.0.1", wport)
    await site.start()
    try:
        _, port = await d.clarion({"CLARION_WEBHOOK_URL": f"http://127.0.0.1:{wport}/hooks"})
        target = d.watch("clarion", port)
        stop = asyncio.Event()
        counter = iter(range(10**9))
        async with aiohttp.ClientSession() as s:
            ws = await open_socket(s, port)
            read = asyncio.create_task(reader(ws))

            async def flip() -> None:  # occupy a channel and vacate the one before: 2 events
                i = next(counter)
                await ws.send_str(json.dumps({"event": "pusher:subscribe", "data": {"channel": f"c-{i}"}}))
                if i:
                    await ws.send_str(json.dumps({"event": "pusher:unsubscribe", "data": {"channel": f"c-{i - 1}"}}))

            async def script() -> None:
                d.phase("healthy: the webhook endpoint answers 200; 4 channels occupied and vacated a second")
                task = asyncio.create_task(every(0.25, flip, stop))
                await d.until(lead)
                d.phase("the webhook endpoint answers 500")
                state["status"] = 500
                await d.until(lead + down)
                stop.set()
                await task

            await run_with_scrapes(d, lead + down, script)
            await ws.close()
            await read
    finally:
        await runner.cleanup()
    for alert in ("ClarionWebhookFailures", "ClarionWebhookBacklog", "ClarionWebhooksDropped"):
        d.quiet_at(alert, lead - 1, target)
        d.expect_at(alert, lead + down, target)


def ws_frame(text: str) -> bytes:
    """A masked client text frame (short payloads)."""
    payload = text.encode()
    mask = os.urandom(4)
    assert len(payload) < 126
    return bytes([0x81, 0x80 | len(payload)]) + mask + bytes(b ^ mask[i % 4] for i, b in enumerate(payload))


def stalled_client(port: int, channel: str) -> socket.socket:
    """Subscribes, then never reads again (a small receive buffer, so the server's output backs up)."""
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    sock.settimeout(5)
    sock.connect(("127.0.0.1", port))
    key = "dGhlIHNhbXBsZSBub25jZQ=="
    path = f"/app/{APP_KEY}?protocol=7&client=drill&version=1"
    sock.sendall(
        f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
        f"Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n".encode()
    )
    seen = b""
    while b"connection_established" not in seen:
        chunk = sock.recv(4096)
        if not chunk:
            raise ConnectionError("closed before connection_established")
        seen += chunk
    sock.sendall(ws_frame(json.dumps({"event": "pusher:subscribe", "data": {"channel": channel}})))
    return sock


@drill("slow-consumers")
async def slow_consumers(d: Drill) -> None:
    """8 KB events at 20 a second to a channel; every 5 s a client subscribes and stops reading, and
    the server drops it when its output buffer (CLARION_MAX_BUFFER=65536) overflows."""
    lead, slow = 120, 780
    _, port = await d.clarion({"CLARION_MAX_BUFFER": "65536"})
    target = d.watch("clarion", port)
    stop = asyncio.Event()
    stalled: list[socket.socket] = []
    data = json.dumps({"pad": "x" * 8000})
    async with aiohttp.ClientSession() as s:
        sockets = [await open_socket(s, port, ["feed"]) for _ in range(5)]
        readers = [asyncio.create_task(reader(ws)) for ws in sockets]
        pub = asyncio.create_task(every(0.05, lambda: publish(s, port, "feed", data), stop))

        async def stall() -> None:
            stalled.append(await asyncio.to_thread(stalled_client, port, "feed"))
            while len(stalled) > 10:  # the server has dropped the old ones; let their descriptors go
                stalled.pop(0).close()

        async def script() -> None:
            d.phase("healthy: 5 reading subscribers, 20 events of 8 KB a second")
            await d.until(lead)
            d.phase("a client that stops reading every 5 s")
            task = asyncio.create_task(every(5, stall, stop))
            await d.until(lead + slow)
            stop.set()
            await task

        await run_with_scrapes(d, lead + slow, script)
        await pub
        for ws in sockets:
            await ws.close()
        await asyncio.gather(*readers)
        for sock in stalled:
            sock.close()
    d.quiet_at("ClarionSlowConsumers", lead - 1, target)
    d.expect_at("ClarionSlowConsumers", lead + slow, target)


@drill("broadcast-failures")
async def broadcast_failures(d: Drill) -> None:
    """The broadcast worker delivers a queued event a second; then the socket server is redeployed with
    a new app secret the worker does not have, and every delivery is refused (401)."""
    from clarion.broadcasting.integrations.queue import RedisQueue
    from clarion.broadcasting.messages import Message

    lead, broken = 90, 690
    _, rport = d.redis()
    redis_url = f"redis://127.0.0.1:{rport}/0"
    proc, port = await d.clarion()
    mport = free_port()
    driver = f"pusher://{APP_KEY}:{APP_SECRET}@127.0.0.1:{port}/{APP_ID}"
    queue_prefix = prefix()
    d.spawn(
        [
            str(CLARION),
            "broadcast-worker",
            "--driver",
            driver,
            "--redis-url",
            redis_url,
            "--prefix",
            queue_prefix,
            "--metrics-port",
            str(mport),
        ],
        log="worker",
    )
    await wait_http(f"http://127.0.0.1:{mport}/metrics")
    d.watch("clarion", port)
    worker = d.watch("clarion-broadcasts", mport)
    queue = RedisQueue(redis_url, prefix=queue_prefix)
    stop = asyncio.Event()
    counter = iter(range(10**9))

    async def enqueue() -> None:
        i = next(counter)
        await asyncio.to_thread(queue.enqueue, [Message((f"orders-{i % 5}",), "order.updated", json.dumps({"n": i}))])

    async def script() -> None:
        d.phase("healthy: one queued broadcast a second, delivered")
        task = asyncio.create_task(every(1, enqueue, stop))
        await d.until(lead)
        d.phase("the socket server is redeployed with a new app secret; the worker keeps the old one")
        proc.terminate()
        proc.wait(15)
        await d.clarion({"CLARION_APP_SECRET": "rotated-secret-2"}, port=port, log="clarion-rotated")
        await d.until(lead + broken)
        stop.set()
        await task

    await run_with_scrapes(d, lead + broken, script)
    queue.close()
    for alert in ("ClarionBroadcastFailures", "ClarionBroadcastDeadLetters"):
        d.quiet_at(alert, lead - 1, worker)
        d.expect_at(alert, lead + broken, worker)


@drill("abuse")
async def abuse(d: Drill) -> None:
    """Normal traffic, then an address that publishes with a wrong secret 3 times a second and opens
    30 WebSockets a second (over its 20/s rate), for 13.5 minutes. Loopback is not exempt here."""
    lead, bad = 90, 810
    _, port = await d.clarion({"CLARION_RATE_LIMIT_EXEMPT": "none"})
    target = d.watch("clarion", port)
    calm = asyncio.Event()
    stop = asyncio.Event()
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0)) as s:
        sockets = [await open_socket(s, port, ["news"]) for _ in range(5)]
        readers = [asyncio.create_task(reader(ws)) for ws in sockets]
        pub = asyncio.create_task(every(1, lambda: publish(s, port, "news"), calm))

        flooding: set[asyncio.Task[None]] = set()

        async def flood_one() -> None:
            held: list[aiohttp.ClientWebSocketResponse] = []
            if await attempt(s, port, held, timeout=3):
                await held[0].close()

        async def flood() -> None:  # one attempt, not waited for: 30 a second whatever their answers take
            task = asyncio.create_task(flood_one())
            flooding.add(task)
            task.add_done_callback(flooding.discard)

        async def script() -> None:
            d.phase("healthy: 5 subscribers, 1 signed publish/s")
            await d.until(lead)
            d.phase("abuse: 3 publishes/s with a wrong secret, 30 WebSocket opens/s")
            tasks = [
                asyncio.create_task(every(1 / 3, lambda: publish(s, port, "news", secret=WRONG_SECRET), stop)),
                asyncio.create_task(every(1 / 30, flood, stop)),
            ]
            await d.until(lead + bad)
            stop.set()
            calm.set()
            await asyncio.gather(*tasks, *flooding, return_exceptions=True)

        await run_with_scrapes(d, lead + bad, script)
        await pub
        for ws in sockets:
            await ws.close()
        await asyncio.gather(*readers)
    for alert in ("ClarionAuthFailures", "ClarionRateLimited"):
        d.quiet_at(alert, lead - 1, target)
        d.expect_at(alert, lead + bad, target)


@drill("latency")
async def latency(d: Drill) -> None:
    """Two nodes on a private Redis; 50 subscribers on node B, 20 publishes a second to node A. Then B
    is starved of CPU the way a cgroup's CPUQuota throttles it: stopped 400 ms of every 600 ms."""
    lead, starved = 120, 780
    _, rport = d.redis()
    env = {
        "CLARION_SCALING": "redis",
        "CLARION_REDIS_URL": f"redis://127.0.0.1:{rport}/0",
        "CLARION_SCALING_PREFIX": prefix(),
    }
    _, port_a = await d.clarion(env, log="clarion-a")
    proc_b, port_b = await d.clarion(env, log="clarion-b")
    d.watch("clarion", port_a)
    b = d.watch("clarion", port_b)
    stop = asyncio.Event()
    throttle = asyncio.Event()
    async with aiohttp.ClientSession() as s:
        sockets = [await open_socket(s, port_b, ["prices"]) for _ in range(50)]
        readers = [asyncio.create_task(reader(ws)) for ws in sockets]
        pub = asyncio.create_task(every(0.05, lambda: publish(s, port_a, "prices", '{"p":1}'), stop))

        async def starve() -> None:
            while not throttle.is_set():
                proc_b.send_signal(signal.SIGSTOP)
                await asyncio.sleep(0.4)
                proc_b.send_signal(signal.SIGCONT)
                await asyncio.sleep(0.2)

        async def script() -> None:
            d.phase("healthy: 20 publishes/s to A, 50 subscribers on B")
            await d.until(lead)
            d.phase("B throttled: stopped 400 ms of every 600 ms")
            task = asyncio.create_task(starve())
            await d.until(lead + starved)
            throttle.set()
            await task
            stop.set()

        await run_with_scrapes(d, lead + starved, script)
        await pub
        for ws in sockets:
            await ws.close()
        await asyncio.gather(*readers)
    for alert in ("ClarionDeliveryLatencyHigh", "ClarionDeliveryLatencyDegraded"):
        d.quiet_at(alert, lead - 1, b)
        d.expect_at(alert, lead + starved, b)


def self_signed(directory: Path, name: str, days: int) -> tuple[Path, Path]:
    cert, key = directory / f"{name}.crt", directory / f"{name}.key"
    subprocess.run(  # noqa: S603
        [
            exe("openssl"),
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-keyout",
            str(key),
            "-out",
            str(cert),
            "-days",
            str(days),
            "-subj",
            "/CN=realtime.drill.test",
        ],
        check=True,
        capture_output=True,
    )
    return cert, key


@drill("certificate-expiry")
async def certificate_expiry(d: Drill) -> None:
    """nginx terminates TLS in front of clarion serve; the blackbox exporter probes it. A certificate
    valid 90 days is replaced by one valid 7 days (a renewal that failed, an old certificate deployed)."""
    lead, hold = 120, 720
    exporter = shutil.which("prometheus-blackbox-exporter")
    if exporter is None:
        # Installed by the drill, not by CI: the drill is the only user of the exporter.
        await asyncio.to_thread(
            subprocess.run, [exe("apt-get"), "install", "-y", "prometheus-blackbox-exporter"], check=True
        )
        exporter = shutil.which("prometheus-blackbox-exporter")
    assert exporter is not None
    version = await asyncio.to_thread(subprocess.run, [exporter, "--version"], capture_output=True, text=True)
    d.notes.append(f"blackbox exporter: {(version.stdout or version.stderr).splitlines()[0]}")
    _, port = await d.clarion()
    good = self_signed(d.tmp, "good", 90)
    short = self_signed(d.tmp, "short", 7)
    live_cert, live_key = d.tmp / "live.crt", d.tmp / "live.key"
    shutil.copy(good[0], live_cert)
    shutil.copy(good[1], live_key)
    nport, bport = free_port(), free_port()
    (d.tmp / "nginx.conf").write_text(f"""
pid {d.tmp}/nginx.pid;
error_log {d.tmp}/nginx-error.log;
events {{ worker_connections 256; }}
http {{
  access_log off;
  client_body_temp_path {d.tmp}/body; proxy_temp_path {d.tmp}/proxy; fastcgi_temp_path {d.tmp}/fcgi;
  uwsgi_temp_path {d.tmp}/uwsgi; scgi_temp_path {d.tmp}/scgi;
  server {{
    listen 127.0.0.1:{nport} ssl;
    ssl_certificate {live_cert};
    ssl_certificate_key {live_key};
    location / {{ proxy_pass http://127.0.0.1:{port}; }}
  }}
}}
""")
    nginx = d.spawn(["/usr/sbin/nginx", "-c", str(d.tmp / "nginx.conf"), "-g", "daemon off; user root;"], log="nginx")
    (d.tmp / "blackbox.yml").write_text(
        "modules:\n  https:\n    prober: http\n    timeout: 5s\n    http:\n      tls_config:\n"
        "        insecure_skip_verify: true\n"
    )
    d.spawn(
        [exporter, f"--config.file={d.tmp / 'blackbox.yml'}", f"--web.listen-address=127.0.0.1:{bport}"], log="blackbox"
    )
    await wait_http(f"http://127.0.0.1:{bport}/metrics")
    probe = f"https://127.0.0.1:{nport}/health"
    target = Target(
        "clarion-tls",
        probe,
        f"http://127.0.0.1:{bport}/probe?module=https&target={probe}",
        rebase=lambda name, value, wall, t_test: value - wall + t_test,
    )
    d.recorder.targets.append(target)
    d.watch("clarion", port)
    d.notes.append(
        "probe_ssl_earliest_cert_expiry is a Unix time and promtool's clock starts at 0: each sample is "
        "recorded as (expiry - wall clock at the scrape) + the sample's time in the replay, which keeps "
        "the seconds left to expiry exactly as measured"
    )

    async def script() -> None:
        d.phase("healthy: nginx serves a certificate valid 90 days")
        await d.until(lead)
        d.phase("nginx reloaded with a certificate valid 7 days")
        shutil.copy(short[0], live_cert)
        shutil.copy(short[1], live_key)
        nginx.send_signal(signal.SIGHUP)
        await d.until(lead + hold)

    await run_with_scrapes(d, lead + hold, script)
    d.quiet_at("ClarionCertificateExpiry", lead - 1, target)
    d.expect_at("ClarionCertificateExpiry", lead + hold, target)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("name", choices=sorted(DRILLS))
    parser.add_argument("--out", type=Path, help="recording to write (deploy/drills/recordings/<name>.yml)")
    args = parser.parse_args()
    out = args.out or HERE / "recordings" / f"{args.name}.yml"
    raise_nofile()
    d = Drill(args.name)
    signal.signal(signal.SIGTERM, lambda *_: (_ for _ in ()).throw(KeyboardInterrupt()))
    try:
        asyncio.run(DRILLS[args.name](d))
    except BaseException:
        print(f"[{args.name}] stopped; the processes' logs are in {d.tmp}", file=sys.stderr, flush=True)
        raise
    finally:
        d.stop_all()
    command = ".venv/bin/python deploy/drills/drill.py " + args.name + (f" --out {args.out}" if args.out else "")
    d.write(out, command)
    shutil.rmtree(d.tmp, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
