"""The reference app under load, through its own path: an HTTP request to the app, its in-process
queue, Clarion, the subscribers. And the seed's "reduce polling by 80%", measured.

    .venv/bin/python bench/app_load.py fanout [--subscribers 100,1000,5000] [--rate 10] [--duration 20]
    .venv/bin/python bench/app_load.py polling [--duration 120] [--edit-every 3] [--poll-every 5]

Both start their own ``clarion serve`` and app (``python -m categories_app serve``, a fresh SQLite
database with the demo data) on free ports, as ``make run`` does.

``fanout``: for each size, that many subscribers (aiohttp WebSocket clients in several processes)
join ``private-tenant.1.categories`` (channel auth signed with the app's secret: subscribing is
not what is measured). An admin then creates categories through ``POST /api/categories`` at
``--rate`` per second for ``--duration`` seconds. Latency is the wall-clock time from just before
the request to a subscriber reading the ``category.created`` frame (same host, same clock); every
delivery counts. The first 10% of events are warm-up. The seed wants p95 < 100 ms at 100.

``polling``: one scripted session of edits (an admin changes a category every ``--edit-every``
seconds) watched by two pages through a counting proxy in front of the app: one kept fresh by
polling ``GET /api/categories`` every ``--poll-every`` seconds, one on sockets (the requests the
SPA makes: its start-up calls, then one channel auth per channel; real pusher-js from the compat
suite). Reported: each page's requests to the app per minute, and how stale each page was (from
an edit's request to the page showing it).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import multiprocessing as mp
import os
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import aiohttp
import httpx
from aiohttp import web

ROOT = Path(__file__).resolve().parent.parent
APP_DIR = ROOT / "examples" / "categories"
sys.path.insert(0, str(ROOT / "tests"))

from clarion.protocol.signatures import channel_auth  # noqa: E402
from conftest import RunningServer, run_server  # noqa: E402
from redisproc import free_port  # noqa: E402

PASSWORD = "demo-password"  # noqa: S105 - the demo logins
ADMIN = "alice@acme.test"
PER_PROCESS = 1000  # subscribers per client process


@contextlib.contextmanager
def running_app(clarion: RunningServer, data: Path) -> Iterator[str]:
    port = free_port()
    env = {
        **os.environ,
        "PYTHONPATH": str(APP_DIR),
        "CATEGORIES_DATABASE_URL": f"sqlite:///{data / 'app.db'}",
        "CATEGORIES_MEDIA_DIR": str(data / "media"),
        "CLARION_BROADCAST_DRIVER": f"pusher://{clarion.key}:{clarion.secret}@127.0.0.1:{clarion.port}/{clarion.app_id}",
    }
    with (data / "app.log").open("wb") as log:
        proc = subprocess.Popen(  # noqa: S603 - our own interpreter and module
            [sys.executable, "-m", "categories_app", "serve", "--port", str(port)],
            cwd=APP_DIR,
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            with contextlib.suppress(httpx.HTTPError):
                if httpx.get(f"{url}/health", timeout=2).status_code == 200:
                    break
            if proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"the app did not start: see {data / 'app.log'}")
            time.sleep(0.1)
        yield url
    finally:
        proc.terminate()
        proc.wait(timeout=15)


async def admin_session(url: str) -> httpx.AsyncClient:
    client = httpx.AsyncClient(base_url=url, timeout=30)
    answer = await client.post("/api/login", json={"email": ADMIN, "password": PASSWORD})
    answer.raise_for_status()
    client.headers["X-CSRF-Token"] = answer.json()["csrf_token"]
    return client


def percentile(ordered: list[float], p: float) -> float:
    return ordered[min(len(ordered) - 1, max(0, round(p / 100 * len(ordered)) - 1))]


# -- fanout: the subscriber processes ----------------------------------------------------------


def subscriber_process(
    ws_url: str, key: str, secret: str, channel: str, count: int, run: str, ready: Any, control: Any, results: Any
) -> None:
    """``count`` subscribers on one loop; sends back {seq: [receive times]} when told to stop."""
    received: dict[int, list[float]] = {}

    async def one(session: aiohttp.ClientSession, subscribed: asyncio.Event, stop: asyncio.Event) -> None:
        async with session.ws_connect(ws_url, heartbeat=None, max_msg_size=0) as ws:
            async for message in ws:
                frame = json.loads(message.data)
                event = frame.get("event")
                if event == "pusher:connection_established":
                    socket_id = json.loads(frame["data"])["socket_id"]
                    auth = channel_auth(key, secret, socket_id, channel)
                    await ws.send_str(
                        json.dumps({"event": "pusher:subscribe", "data": {"channel": channel, "auth": auth}})
                    )
                elif event == "pusher_internal:subscription_succeeded":
                    subscribed.set()
                elif event == "pusher:ping":
                    await ws.send_str('{"event":"pusher:pong","data":{}}')
                elif event == "category.created":
                    now = time.time()
                    name = json.loads(frame["data"])["name"]
                    if name.startswith(f"bench {run} "):
                        received.setdefault(int(name.rsplit(" ", 1)[1]), []).append(now)
                if stop.is_set():
                    break

    async def main() -> None:
        stop = asyncio.Event()
        connector = aiohttp.TCPConnector(limit=0)
        async with aiohttp.ClientSession(connector=connector) as session:
            flags = [asyncio.Event() for _ in range(count)]
            tasks = []
            for flag in flags:
                tasks.append(asyncio.create_task(one(session, flag, stop)))
                if len(tasks) % 100 == 0:
                    await asyncio.sleep(0.05)  # a gentle connect ramp
            await asyncio.wait_for(asyncio.gather(*(f.wait() for f in flags)), 300)
            ready.put(count)
            await asyncio.to_thread(control.get)  # the parent says "stop" when the load is over
            stop.set()
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
        results.put(received)

    asyncio.run(main())


async def fanout_round(
    clarion: RunningServer, url: str, subscribers: int, rate: float, duration: float
) -> dict[str, Any]:
    run = uuid.uuid4().hex[:8]
    ctx = mp.get_context("spawn")
    channel = "private-tenant.1.categories"
    procs, controls, boxes = [], [], []
    ready = ctx.Queue()
    for start in range(0, subscribers, PER_PROCESS):
        control, box = ctx.Queue(), ctx.Queue()
        count = min(PER_PROCESS, subscribers - start)
        proc = ctx.Process(
            target=subscriber_process,
            args=(clarion.ws_url(), clarion.key, clarion.secret, channel, count, run, ready, control, box),
        )
        proc.start()
        procs.append(proc)
        controls.append(control)
        boxes.append(box)
    joined = 0
    while joined < subscribers:
        joined += await asyncio.to_thread(ready.get, True, 600)
    admin = await admin_session(url)
    sent: dict[int, float] = {}
    failures = Counter[int]()
    total = int(rate * duration)
    started = time.monotonic()
    for seq in range(total):
        await asyncio.sleep(max(0.0, started + seq / rate - time.monotonic()))
        sent[seq] = time.time()
        answer = await admin.post("/api/categories", json={"name": f"bench {run} {seq}"})
        if answer.status_code != 201:
            failures[answer.status_code] += 1
    await asyncio.sleep(3)  # the last deliveries
    await admin.aclose()
    received: dict[int, list[float]] = {}
    for control in controls:
        control.put("stop")
    for box, proc in zip(boxes, procs, strict=True):
        part = await asyncio.to_thread(box.get, True, 120)
        for seq, times in part.items():
            received.setdefault(seq, []).extend(times)
        proc.join(timeout=30)
    warm = int(total * 0.1)
    latencies = sorted((t - sent[seq]) * 1000 for seq, times in received.items() if seq >= warm for t in times)
    expected = (total - warm) * subscribers
    return {
        "subscribers": subscribers,
        "events": total,
        "rate": rate,
        "deliveries": len(latencies),
        "lost": expected - len(latencies),
        "request_failures": dict(failures),
        "p50_ms": round(percentile(latencies, 50), 1) if latencies else None,
        "p95_ms": round(percentile(latencies, 95), 1) if latencies else None,
        "p99_ms": round(percentile(latencies, 99), 1) if latencies else None,
        "max_ms": round(latencies[-1], 1) if latencies else None,
    }


async def fanout(args: argparse.Namespace) -> list[dict[str, Any]]:
    rows = []
    for size in [int(s) for s in args.subscribers.split(",")]:
        with tempfile.TemporaryDirectory() as tmp, run_server() as clarion, running_app(clarion, Path(tmp)) as url:
            row = await fanout_round(clarion, url, size, args.rate, args.duration)
        print(json.dumps(row), flush=True)
        rows.append(row)
    print("\n| subscribers | events | rate | deliveries | lost | p50 | p95 | p99 | max |")
    print("|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        print(
            f"| {r['subscribers']} | {r['events']} | {r['rate']}/s | {r['deliveries']} | {r['lost']} | "
            f"{r['p50_ms']} ms | {r['p95_ms']} ms | {r['p99_ms']} ms | {r['max_ms']} ms |"
        )
    return rows


# -- polling against sockets -------------------------------------------------------------------


class CountingProxy:
    """Forwards to the app and counts requests per client (the X-Bench-Client header)."""

    def __init__(self, target: str) -> None:
        self.target = target
        self.counts = Counter[str]()
        self.client: aiohttp.ClientSession | None = None

    async def handle(self, request: web.Request) -> web.StreamResponse:
        self.counts[request.headers.get("X-Bench-Client", "other")] += 1
        assert self.client is not None
        headers = {k: v for k, v in request.headers.items() if k.lower() not in ("host", "content-length")}
        async with self.client.request(
            request.method, self.target + request.path_qs, headers=headers, data=await request.read()
        ) as answer:
            body = await answer.read()
            out = web.Response(status=answer.status, body=body)
            for name, value in answer.headers.items():
                if name.lower() in ("content-type", "set-cookie"):
                    out.headers.add(name, value)
            return out

    async def start(self) -> tuple[web.AppRunner, int]:
        self.client = aiohttp.ClientSession()
        app = web.Application()
        app.router.add_route("*", "/{tail:.*}", self.handle)
        runner = web.AppRunner(app)
        await runner.setup()
        port = free_port()
        await web.TCPSite(runner, "127.0.0.1", port).start()
        return runner, port


async def polling(args: argparse.Namespace) -> dict[str, Any]:
    from compat.nodeclient import NodeClient

    with tempfile.TemporaryDirectory() as tmp, run_server() as clarion, running_app(clarion, Path(tmp)) as url:
        proxy = CountingProxy(url)
        runner, port = await proxy.start()
        base = f"http://127.0.0.1:{port}"
        # Each page signs in (bob, a member) and loads what the SPA loads at start.
        pages: dict[str, httpx.AsyncClient] = {}
        for name in ("polling", "sockets"):
            page = httpx.AsyncClient(base_url=base, timeout=30, headers={"X-Bench-Client": name})
            login = await page.post("/api/login", json={"email": "bob@acme.test", "password": PASSWORD})
            page.headers["X-CSRF-Token"] = login.json()["csrf_token"]
            for path in ("/api/me", "/api/config", "/api/categories", "/api/uploads"):
                (await page.get(path)).raise_for_status()
            pages[name] = page
        cookie = "; ".join(f"{k}={v}" for k, v in pages["sockets"].cookies.items())
        socket_page = await NodeClient.start(
            host=clarion.host,
            port=clarion.port,
            key=clarion.key,
            auth_endpoint=f"{base}/broadcasting/auth",
            user_auth_endpoint=f"{base}/broadcasting/user-auth",
            label="sockets-page",
        )
        headers = {"X-CSRF-Token": pages["sockets"].headers["X-CSRF-Token"], "X-Bench-Client": "sockets"}
        await socket_page.connect(auth_headers=headers, auth_cookie=cookie)
        # The channels the SPA joins as a member: categories, presence, the user's, uploads.
        for channel in (
            "private-tenant.1.categories",
            "presence-tenant.1.categories",
            "private-user.2",
            "private-tenant.1.uploads",
        ):
            await socket_page.subscribe(channel)
        baseline = Counter(proxy.counts)
        admin = await admin_session(url)
        seen_polling: dict[str, float] = {}
        edits: dict[str, float] = {}
        stop = asyncio.Event()

        async def poll() -> None:
            while not stop.is_set():
                answer = await pages["polling"].get("/api/categories")
                now = time.time()
                for category in answer.json()["categories"]:
                    seen_polling.setdefault(category["name"], now)
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), args.poll_every)

        poller = asyncio.create_task(poll())
        started = time.monotonic()
        n = 0
        while time.monotonic() - started < args.duration:
            name = f"edit {n}"
            edits[name] = time.time()
            (await admin.post("/api/categories", json={"name": name})).raise_for_status()
            n += 1
            await asyncio.sleep(args.edit_every)
        await asyncio.sleep(args.poll_every + 1)
        elapsed_min = (time.monotonic() - started) / 60
        stop.set()
        await poller
        counts = proxy.counts - baseline
        socket_seen = {
            e["data"]["name"]: e["at"] / 1000
            for e in socket_page.events("private-tenant.1.categories", "category.created")
        }
        await socket_page.close()
        await admin.aclose()
        for page in pages.values():
            await page.aclose()
        if proxy.client is not None:
            await proxy.client.close()
        await runner.cleanup()

    def staleness(seen: dict[str, float]) -> dict[str, Any]:
        delays = sorted((seen[name] - at) * 1000 for name, at in edits.items() if name in seen)
        return {
            "shown": f"{len(delays)}/{len(edits)}",
            "mean_ms": round(statistics.fmean(delays), 1) if delays else None,
            "p95_ms": round(percentile(delays, 95), 1) if delays else None,
        }

    result: dict[str, Any] = {
        "edits": len(edits),
        "minutes": round(elapsed_min, 2),
        "polling_requests_per_minute": round(counts["polling"] / elapsed_min, 1),
        "sockets_requests_per_minute": round(counts["sockets"] / elapsed_min, 1),
        "start_up_requests": {"polling": baseline["polling"], "sockets": baseline["sockets"]},
        "polling_staleness": staleness(seen_polling),
        "sockets_staleness": staleness(socket_seen),
    }
    polled = result["polling_requests_per_minute"]
    if polled:
        result["reduction_percent"] = round(100 * (1 - result["sockets_requests_per_minute"] / polled), 1)
    print(json.dumps(result, indent=2))
    return result


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    commands = parser.add_subparsers(dest="command", required=True)
    fan = commands.add_parser("fanout", help="latency from the API request to the subscribers' sockets")
    fan.add_argument("--subscribers", default="100,1000,5000", help="sizes, comma-separated")
    fan.add_argument("--rate", type=float, default=10.0, help="categories created per second")
    fan.add_argument("--duration", type=float, default=20.0, help="seconds of load per size")
    poll = commands.add_parser("polling", help="requests per minute: a polled page against a page on sockets")
    poll.add_argument("--duration", type=float, default=120.0, help="seconds of scripted edits")
    poll.add_argument("--edit-every", type=float, default=3.0, help="seconds between two edits")
    poll.add_argument("--poll-every", type=float, default=5.0, help="the polled page's interval, s")
    args = parser.parse_args()
    if args.command == "fanout":
        asyncio.run(fanout(args))
    else:
        asyncio.run(polling(args))
    return 0


if __name__ == "__main__":
    sys.exit(main())
