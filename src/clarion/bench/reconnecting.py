"""Clients that stay connected as pusher-js does: they reconnect, resubscribe and (optionally) resume.

Each client holds one socket and one channel (public, or presence with a locally signed auth). When
its socket goes, it reconnects the way pusher-js's connection manager does: at once after a close
code 4200-4299, after 1 s after 4100-4199 or any other close or a lost connection, and after 1 s
after a failed attempt; it never retries after 4000-4099 or another 4xxx (refused). Each attempt
goes to the client's next URL in turn (its node, then the one a load balancer would pick next).
With ``resume`` on, it puts its last position (``epoch``/``serial``) into the subscribe, so the
server replays what it missed (docs/recovery.md).

Every bench event's ``seq`` is counted per client, so the parent can tell, once it knows which
events the API accepted, how many each client missed or saw twice. Live deliveries' latency (receive
wall clock minus the send time in the event's data) is sampled for the parent to drain.

A worker process runs a share of the clients on one uvloop loop and answers the parent's commands
over a pipe: ``start``, ``status``, ``drain``, ``stop``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import multiprocessing as mp
import multiprocessing.connection
import random
import signal
import threading
import time
import traceback
from array import array
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

import aiohttp
import orjson
import uvloop

from ..protocol.signatures import channel_auth
from .subscribers import raise_nofile_limit

CONNECT_TIMEOUT = 15.0  # pusher-js's first ws timeout
BACKOFF = 1.0  # pusher-js's retryIn(1000)


def retry_delay(code: int | None) -> float | None:
    """pusher-js's action for a close code: seconds to wait, or None for no retry."""
    if code is not None and 4000 <= code < 5000:
        if 4200 <= code < 4300:
            return 0.0
        if 4100 <= code < 4200:
            return BACKOFF
        return None  # 4000-4099 (tls only, not used here) and the other 4xxx: refused
    return BACKOFF


@dataclass
class ClientSpec:
    urls: list[str]  # ws URLs in the order this client tries them
    channel: str
    user_id: str = ""  # presence channels: the member's id


@dataclass
class WorkerPlan:
    index: int
    clients: list[ClientSpec]
    key: str
    secret: str
    event: str
    run: str
    max_events: int
    resume: bool
    connect_concurrency: int = 200
    churn_per_s: float = 0.0  # clients of this worker leaving and new ones joining, per second
    max_samples: int = 20_000  # latency samples kept between two drains


@dataclass
class Reconnect:
    down_at: float  # wall clock the socket was lost
    up_at: float  # wall clock it was subscribed again (0: never)
    close_code: int | None
    attempts: int


@dataclass
class ClientResult:
    missed: int
    duplicates: int
    unexpected: int  # events seen that the API did not report accepted
    reconnects: list[Reconnect]
    recovered: Counter[str]  # clarion:resumed outcome ("true", or the reason) -> count


@dataclass
class Status:
    subscribed: int  # clients subscribed now
    down: int  # clients without a subscribed socket now
    disconnects: int
    failed_attempts: int
    close_codes: Counter[str] = field(default_factory=Counter)
    errors: Counter[str] = field(default_factory=Counter)


class Client:
    def __init__(self, worker: Worker, spec: ClientSpec) -> None:
        self.worker = worker
        self.spec = spec
        self.seen = bytearray(worker.plan.max_events)
        self.unexpected = 0
        self.epoch: str | None = None
        self.serial: int | None = None
        self.reconnects: list[Reconnect] = []
        self.recovered: Counter[str] = Counter()
        self.subscribed = asyncio.Event()
        self.ws: aiohttp.ClientWebSocketResponse | None = None
        self.leaving = False  # a churn close: not a disconnect, join again as a new client
        self.stopped = False
        self.url_index = 0

    async def run(self, gate: asyncio.Semaphore | None) -> None:
        worker = self.worker
        down: Reconnect | None = None
        attempts = 0
        while not self.stopped:
            url = self.spec.urls[self.url_index % len(self.spec.urls)]
            self.url_index += 1
            attempts += 1
            code: int | None = None
            try:
                if gate is not None:
                    async with gate:
                        await self._open(url)
                    gate = None
                else:
                    await self._open(url)
            except (aiohttp.ClientError, OSError, TimeoutError, ConnectionError) as exc:
                worker.failed_attempts += 1
                worker.errors[type(exc).__name__] += 1
                await asyncio.sleep(BACKOFF)
                continue
            # Subscribed: the socket's life from here.
            if down is not None:
                down.up_at = time.time()
                down.attempts = attempts
                self.reconnects.append(down)
                down = None
            self.url_index = 0  # back to its own node for the next loss, as a balancer would try
            attempts = 0
            code = await self._read()
            self.subscribed.clear()
            if self.stopped:
                return
            if self.leaving:
                self.leaving = False  # a new connection with no position; the tally goes on
                self.epoch = self.serial = None
                continue
            worker.disconnects += 1
            worker.close_codes[str(code)] += 1
            down = Reconnect(time.time(), 0.0, code, 0)
            delay = retry_delay(code)
            if delay is None:
                self.reconnects.append(down)
                return
            if delay:
                await asyncio.sleep(delay)

    async def _open(self, url: str) -> None:
        worker = self.worker
        async with asyncio.timeout(CONNECT_TIMEOUT):
            ws = await worker.session.ws_connect(url, autoping=True, heartbeat=None)
        self.ws = ws
        try:
            async with asyncio.timeout(CONNECT_TIMEOUT):
                socket_id = ""
                while not self.subscribed.is_set():
                    msg = await ws.receive()
                    if msg.type != aiohttp.WSMsgType.TEXT:
                        raise ConnectionError(f"closed before subscribed ({ws.close_code})")
                    message = orjson.loads(msg.data)
                    event = message.get("event")
                    if event == "pusher:connection_established":
                        socket_id = orjson.loads(message["data"])["socket_id"]
                        await ws.send_str(self._subscribe(socket_id))
                    elif event == "pusher_internal:subscription_succeeded":
                        self.subscribed.set()
                    elif event in ("pusher:error", "pusher:subscription_error"):
                        raise ConnectionError(f"{event} {message.get('data')}")
                    else:
                        self._handle(message, event)
        except BaseException:
            await ws.close()
            self.ws = None
            raise

    def _subscribe(self, socket_id: str) -> str:
        spec, plan = self.spec, self.worker.plan
        data: dict[str, Any] = {"channel": spec.channel}
        if spec.channel.startswith("presence-"):
            channel_data = orjson.dumps({"user_id": spec.user_id}).decode()
            data["channel_data"] = channel_data
            data["auth"] = channel_auth(plan.key, plan.secret, socket_id, spec.channel, channel_data)
        if plan.resume and self.epoch is not None and self.serial is not None:
            data["resume"] = {"epoch": self.epoch, "serial": self.serial}
        return orjson.dumps({"event": "pusher:subscribe", "data": data}).decode()

    async def _read(self) -> int | None:
        ws = self.ws
        assert ws is not None
        async for msg in ws:
            if msg.type == aiohttp.WSMsgType.TEXT:
                message = orjson.loads(msg.data)
                self._handle(message, message.get("event"))
        self.ws = None
        return ws.close_code

    def _handle(self, message: dict[str, Any], event: Any) -> None:
        worker = self.worker
        if event == worker.plan.event:
            data = orjson.loads(message["data"])
            if data.get("run") != worker.plan.run:
                return
            serial = message.get("serial")
            if isinstance(serial, int):
                self.epoch, self.serial = message.get("epoch"), serial
            seq = data["seq"]
            if 0 <= seq < len(self.seen):
                if self.seen[seq] < 255:
                    self.seen[seq] += 1
            else:
                self.unexpected += 1
            if not message.get("replayed"):
                worker.sample(time.time_ns(), data["t"])
        elif event == "pusher:ping" and self.ws is not None:
            asyncio.get_running_loop().create_task(self.ws.send_str('{"event":"pusher:pong","data":{}}'))
        elif event == "clarion:resumed":
            data = orjson.loads(message["data"])
            self.recovered["true" if data.get("recovered") else str(data.get("reason"))] += 1
            if isinstance(data.get("serial"), int):
                self.epoch, self.serial = data.get("epoch"), data["serial"]
        elif event in ("pusher:error", "pusher:subscription_error"):
            worker.errors[str(event)] += 1

    async def leave(self) -> None:
        """Churn: close as a user closing the tab; run() joins again as a new connection."""
        if self.ws is not None and self.subscribed.is_set():
            self.leaving = True
            await self.ws.close()

    def result(self, accepted: bytes, channel_of: list[int], channel_index: int) -> ClientResult:
        missed = duplicates = 0
        unexpected = self.unexpected
        for seq, count in enumerate(self.seen):
            if accepted[seq] and channel_of[seq] == channel_index:
                if count == 0:
                    missed += 1
                elif count > 1:
                    duplicates += count - 1
            elif count:
                unexpected += count
        return ClientResult(missed, duplicates, unexpected, self.reconnects, self.recovered)


class Worker:
    def __init__(self, plan: WorkerPlan, session: aiohttp.ClientSession) -> None:
        self.plan = plan
        self.session = session
        self.clients = [Client(self, spec) for spec in plan.clients]
        self.disconnects = 0
        self.failed_attempts = 0
        self.close_codes: Counter[str] = Counter()
        self.errors: Counter[str] = Counter()
        self.samples = array("d")  # receive time (s), latency (ms), pairs
        self.churned = 0

    def sample(self, now_ns: int, sent_ns: int) -> None:
        if len(self.samples) < 2 * self.plan.max_samples:
            self.samples.append(now_ns / 1e9)
            self.samples.append((now_ns - sent_ns) / 1e6)

    def status(self) -> Status:
        subscribed = sum(1 for c in self.clients if c.subscribed.is_set())
        return Status(
            subscribed,
            len(self.clients) - subscribed,
            self.disconnects,
            self.failed_attempts,
            Counter(self.close_codes),
            Counter(self.errors),
        )

    async def churn(self) -> None:
        if self.plan.churn_per_s <= 0:
            return
        interval = 1.0 / self.plan.churn_per_s
        while True:
            await asyncio.sleep(interval)
            client = random.choice(self.clients)
            if client.subscribed.is_set():
                self.churned += 1
                await client.leave()


async def _worker(plan: WorkerPlan, conn: mp.connection.Connection) -> None:
    loop = asyncio.get_running_loop()
    commands: asyncio.Queue[tuple[str, Any]] = asyncio.Queue()

    def read_commands() -> None:
        while True:
            try:
                command = conn.recv()
            except (EOFError, OSError):
                command = ("stop", None)
            loop.call_soon_threadsafe(commands.put_nowait, command)
            if command[0] == "stop":
                return

    threading.Thread(target=read_commands, daemon=True).start()
    connector = aiohttp.TCPConnector(limit=0, force_close=True)
    async with aiohttp.ClientSession(connector=connector) as session:
        worker = Worker(plan, session)
        tasks: list[asyncio.Task[None]] = []
        churn: asyncio.Task[None] | None = None
        conn.send(("ready", None))
        while True:
            command, arg = await commands.get()
            if command == "start":
                gate = asyncio.Semaphore(plan.connect_concurrency)
                tasks = [loop.create_task(c.run(gate)) for c in worker.clients]
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(float(arg)):
                        for client in worker.clients:
                            await client.subscribed.wait()
                churn = loop.create_task(worker.churn())
                conn.send(("started", worker.status()))
            elif command == "status":
                conn.send(("status", worker.status()))
            elif command == "drain":
                samples, worker.samples = worker.samples, array("d")
                conn.send(("drain", (samples.tobytes(), worker.churned)))
            elif command == "stop":
                if churn is not None:
                    churn.cancel()
                for client in worker.clients:
                    client.stopped = True
                accepted, channel_of, channels = arg if arg is not None else (b"", [], [])
                results = []
                if accepted:
                    index = {name: i for i, name in enumerate(channels)}
                    results = [c.result(accepted, channel_of, index[c.spec.channel]) for c in worker.clients]
                conn.send(("result", (worker.status(), results)))
                for task in tasks:
                    task.cancel()
                for client in worker.clients:
                    if client.ws is not None:
                        with contextlib.suppress(Exception):
                            await client.ws.close()
                return


def worker_main(plan: WorkerPlan, conn: mp.connection.Connection) -> None:
    """A client process: entry point (spawned)."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    raise_nofile_limit()
    logging.getLogger("aiohttp").setLevel(logging.ERROR)
    try:
        with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
            runner.run(_worker(plan, conn))
    except BaseException:
        with contextlib.suppress(Exception):
            conn.send(("error", traceback.format_exc()))
        raise


class ClientPool:
    """The parent's side: one process per plan, driven by commands, answers gathered."""

    def __init__(self, plans: list[WorkerPlan]) -> None:
        ctx = mp.get_context("spawn")
        self.pipes: list[mp.connection.Connection] = []
        self.procs: list[mp.process.BaseProcess] = []
        for plan in plans:
            parent_end, child_end = ctx.Pipe()
            proc = ctx.Process(target=worker_main, args=(plan, child_end), name=f"bench-clients-{plan.index}")
            proc.start()
            child_end.close()
            self.pipes.append(parent_end)
            self.procs.append(proc)

    async def _ask(self, index: int, expect: str, timeout: float) -> Any:
        conn, proc = self.pipes[index], self.procs[index]
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if await asyncio.to_thread(conn.poll, 0.25):
                kind, payload = conn.recv()
                if kind == "error":
                    raise RuntimeError(f"client process {index} failed:\n{payload}")
                if kind != expect:
                    raise RuntimeError(f"client process {index} sent {kind!r}, expected {expect!r}")
                return payload
            if not proc.is_alive():
                raise RuntimeError(f"client process {index} exited (code {proc.exitcode})")
        raise RuntimeError(f"client process {index}: no {expect!r} within {timeout:.0f} s")

    async def command(self, name: str, arg: Any, expect: str, timeout: float = 60) -> list[Any]:
        for conn in self.pipes:
            conn.send((name, arg))
        return list(await asyncio.gather(*(self._ask(i, expect, timeout) for i in range(len(self.pipes)))))

    async def ready(self) -> None:
        await asyncio.gather(*(self._ask(i, "ready", 60) for i in range(len(self.pipes))))

    async def status(self) -> Status:
        total = Status(0, 0, 0, 0)
        for part in await self.command("status", None, "status"):
            total.subscribed += part.subscribed
            total.down += part.down
            total.disconnects += part.disconnects
            total.failed_attempts += part.failed_attempts
            total.close_codes.update(part.close_codes)
            total.errors.update(part.errors)
        return total

    def close(self) -> None:
        for conn in self.pipes:
            with contextlib.suppress(OSError):
                conn.send(("stop", None))
        for proc in self.procs:
            proc.join(10)
            if proc.is_alive():
                proc.terminate()
                proc.join(5)
        for conn in self.pipes:
            conn.close()


def split(specs: list[ClientSpec], processes: int) -> list[list[ClientSpec]]:
    return [specs[i::processes] for i in range(processes)]
