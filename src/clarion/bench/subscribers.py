"""The subscribers: Pusher-protocol WebSocket clients (picows), many per process, over several processes.

Each subscriber opens ``GET /app/{key}?protocol=7&client=clarion-bench&version=1``, waits for
``pusher:connection_established``, sends ``pusher:subscribe`` for its public channel and waits for
``pusher_internal:subscription_succeeded``. It answers ``pusher:ping`` with ``pusher:pong`` (and
WebSocket pings with pongs). Every bench event it receives is checked (right run, right channel,
not seen before on this socket) and counted; its latency is the receive wall clock minus the send
time the load generator put in the event's data.

A worker process holds a share of the subscribers on one asyncio loop. The parent drives it over a
pipe (``connect``, then ``stop``) and reads its progress counters from shared memory; the full
results (counts per event, duplicates, latency samples) come back over the pipe once, at the end.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
import multiprocessing as mp
import multiprocessing.connection
import resource
import signal
import threading
import time
import traceback
from array import array
from collections import Counter
from dataclasses import dataclass, field
from multiprocessing.sharedctypes import SynchronizedArray
from typing import Any

import orjson
import uvloop
from picows import WSCloseCode, WSFrame, WSListener, WSMsgType, WSTransport, ws_connect

from . import cpus

# Progress counters per worker, in shared memory: the parent prints them once a second.
SUBSCRIBED, RECEIVED, DISCONNECTS, FAILURES = range(4)
COUNTERS = 4
PROGRESS_EVERY = 0.2  # seconds between two copies of the counters to shared memory

_TEXT = WSMsgType.TEXT
_CLOSE = WSMsgType.CLOSE
_PONG = orjson.dumps({"event": "pusher:pong", "data": {}})


def raise_nofile_limit() -> int:
    """Raise the soft limit on open files to the hard one (each subscriber is a socket)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = hard if hard != resource.RLIM_INFINITY else 1 << 20
    if soft == resource.RLIM_INFINITY or soft >= target:
        return soft
    try:
        resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
    except (ValueError, OSError):
        return soft
    return target


@dataclass
class WorkerConfig:
    index: int
    ws_url: str
    channels: list[str]  # the channel of each of this worker's subscribers
    connect_concurrency: int
    connect_timeout: float
    event: str  # the bench event's name
    run: str  # this run's nonce, in every event's data
    max_events: int  # sequence numbers are below this
    max_samples: int  # latency samples kept; past this, every 2nd, then every 4th, ... delivery


@dataclass
class ConnectReport:
    subscribed: Counter[str]  # channel -> subscribers that got subscription_succeeded
    failures: Counter[str]  # reason -> count
    started: float  # wall clock of the first connect attempt
    finished: float  # wall clock when the last attempt ended
    cpus: list[int] = field(default_factory=list)  # the CPUs this worker may run on


@dataclass
class WorkerResult:
    received: int  # bench frames of this run, duplicates included
    duplicates: int  # an event seen a second time on the same socket
    misrouted: int  # an event of this run on a channel the socket did not subscribe to
    foreign: int  # a sequence number out of range
    seq_counts: bytes  # array('I'): first deliveries per sequence number
    latencies: bytes  # array('f'): milliseconds, one per kept first delivery
    latency_seqs: bytes  # array('I'): the sequence number of each kept sample
    stride: int  # one first delivery in ``stride`` was kept
    first_deliveries: int
    latency_sum_ms: float
    latency_max_ms: float
    disconnects: int  # subscribers that lost their socket after subscribing, before stop
    close_codes: Counter[str]  # close code (or "none") -> count, for those disconnects
    errors: Counter[str]  # pusher:error codes received after subscribing
    setup_ms: bytes = b""  # array('f'): connect-to-subscribed time of each subscriber


class WorkerState:
    """What every subscriber of one worker writes to: counters and sample arrays."""

    def __init__(self, config: WorkerConfig) -> None:
        self.config = config
        self.event = config.event
        self.run = config.run
        self.max_events = config.max_events
        self.cap = max(2, config.max_samples)
        self.received = 0
        self.duplicates = 0
        self.misrouted = 0
        self.foreign = 0
        self.seq_counts = array("I", bytes(4 * config.max_events))
        self.latencies = array("f")
        self.latency_seqs = array("I")
        self.first = 0
        self.stride = 1
        self.skip = 0
        self.latency_sum = 0.0
        self.latency_max = 0.0
        self.subscribed = 0
        self.failures = 0
        self.disconnects = 0
        self.close_codes: Counter[str] = Counter()
        self.errors: Counter[str] = Counter()
        self.stopping = False

    def thin(self) -> None:
        """Keep every other sample, and from now on one delivery in twice as many."""
        self.latencies = self.latencies[::2]
        self.latency_seqs = self.latency_seqs[::2]
        self.stride *= 2


class Subscriber(WSListener):
    """One socket, one channel. The frame callback is the hot path: keep it short."""

    def __init__(self, state: WorkerState, channel: str) -> None:
        super().__init__()
        self.state = state
        self.channel = channel
        # Events seen, in O(1) memory unless some go missing: the highest sequence number so far,
        # and the ones below it not seen yet (lost, or still to come out of order).
        self.high = -1
        self.missing: set[int] | None = None
        self.ready: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self.subscribed = False
        self.transport: WSTransport | None = None
        self.close_code: int | None = None

    def on_ws_connected(self, transport: WSTransport) -> None:
        self.transport = transport

    def on_ws_frame(self, transport: WSTransport, frame: WSFrame) -> None:
        if frame.msg_type != _TEXT:
            if frame.msg_type == _CLOSE:
                raw = frame.get_payload_as_bytes()
                self.close_code = int.from_bytes(raw[:2], "big") if len(raw) >= 2 else None
                transport.send_close(WSCloseCode.OK)
                transport.disconnect()
            return
        message = orjson.loads(frame.get_payload_as_memoryview())
        state = self.state
        if message.get("event") != state.event:
            self._control(transport, message)
            return
        now = time.time_ns()
        data = message.get("data")
        if isinstance(data, str):
            data = orjson.loads(data)
        if data.get("run") != state.run:
            return  # someone else's bench on the same server
        state.received += 1
        seq = data["seq"]
        if message.get("channel") != self.channel:
            state.misrouted += 1
            return
        if not 0 <= seq < state.max_events:
            state.foreign += 1
            return
        if seq > self.high:
            if seq != self.high + 1:
                if self.missing is None:
                    self.missing = set()
                self.missing.update(range(self.high + 1, seq))
            self.high = seq
        elif self.missing and seq in self.missing:
            self.missing.discard(seq)
        else:
            state.duplicates += 1
            return
        state.seq_counts[seq] += 1
        latency = (now - data["t"]) / 1e6
        state.first += 1
        state.latency_sum += latency
        if latency > state.latency_max:
            state.latency_max = latency
        if state.skip:
            state.skip -= 1
            return
        state.skip = state.stride - 1
        state.latencies.append(latency)
        state.latency_seqs.append(seq)
        if len(state.latencies) >= state.cap:
            state.thin()

    def _control(self, transport: WSTransport, message: dict[str, Any]) -> None:
        event = message.get("event")
        if event == "pusher:connection_established":
            subscribe = {"event": "pusher:subscribe", "data": {"channel": self.channel}}
            transport.send(_TEXT, orjson.dumps(subscribe))
        elif event == "pusher_internal:subscription_succeeded":
            if message.get("channel") == self.channel and not self.subscribed:
                self.subscribed = True
                if not self.ready.done():
                    self.ready.set_result(None)
        elif event == "pusher:ping":
            transport.send(_TEXT, _PONG)
        elif event in ("pusher:error", "pusher:subscription_error"):
            data = message.get("data")
            if isinstance(data, str):
                with contextlib.suppress(orjson.JSONDecodeError):
                    data = orjson.loads(data)
            code = data.get("code") if isinstance(data, dict) else None
            if not self.ready.done():
                self.ready.set_exception(ConnectionError(f"{event} {code}"))
            else:
                self.state.errors[str(code)] += 1

    def on_ws_disconnected(self, transport: WSTransport) -> None:
        if not self.ready.done():
            code = f" (close code {self.close_code})" if self.close_code is not None else ""
            self.ready.set_exception(ConnectionError(f"closed before subscribed{code}"))
        elif self.subscribed and not self.state.stopping:
            self.state.disconnects += 1
            self.state.close_codes[str(self.close_code) if self.close_code is not None else "none"] += 1


def _reason(exc: BaseException) -> str:
    if isinstance(exc, TimeoutError):
        return "timeout"
    if isinstance(exc, ConnectionError) and exc.args and isinstance(exc.args[0], str):
        return exc.args[0]
    return type(exc).__name__


async def _open_all(config: WorkerConfig, state: WorkerState) -> tuple[list[Subscriber], ConnectReport, array[float]]:
    gate = asyncio.Semaphore(max(1, config.connect_concurrency))
    opened: list[Subscriber] = []
    subscribed: Counter[str] = Counter()
    failures: Counter[str] = Counter()
    setup_ms = array("f")

    async def open_one(channel: str) -> None:
        async with gate:
            sub = Subscriber(state, channel)
            began = time.perf_counter()
            try:
                async with asyncio.timeout(config.connect_timeout):
                    await ws_connect(
                        lambda: sub,
                        config.ws_url,
                        websocket_handshake_timeout=config.connect_timeout,
                        read_buffer_init_size=4096,
                        max_frame_size=16 * 1024 * 1024,
                    )
                    await sub.ready
            except Exception as exc:
                failures[_reason(exc)] += 1
                state.failures += 1
                if sub.transport is not None:
                    sub.transport.disconnect(graceful=False)
                return
            setup_ms.append((time.perf_counter() - began) * 1000)
            subscribed[channel] += 1
            state.subscribed += 1
            opened.append(sub)

    started = time.time()
    await asyncio.gather(*(open_one(channel) for channel in config.channels))
    pinned = sorted(cpus.of(0)) if cpus.supported() else []
    return opened, ConnectReport(subscribed, failures, started, time.time(), pinned), setup_ms


def _publish(state: WorkerState, progress: SynchronizedArray[Any], base: int) -> None:
    progress[base + SUBSCRIBED] = state.subscribed
    progress[base + RECEIVED] = state.received
    progress[base + DISCONNECTS] = state.disconnects
    progress[base + FAILURES] = state.failures


async def _worker(config: WorkerConfig, conn: mp.connection.Connection, progress: SynchronizedArray[Any]) -> None:
    loop = asyncio.get_running_loop()
    commands: asyncio.Queue[str] = asyncio.Queue()

    def read_commands() -> None:
        while True:
            try:
                command = conn.recv()
            except (EOFError, OSError):
                command = "stop"  # the parent is gone
            loop.call_soon_threadsafe(commands.put_nowait, command)
            if command == "stop":
                return

    threading.Thread(target=read_commands, daemon=True).start()
    state = WorkerState(config)
    base = config.index * COUNTERS

    async def report_progress() -> None:
        while True:
            _publish(state, progress, base)
            await asyncio.sleep(PROGRESS_EVERY)

    reporter = loop.create_task(report_progress())
    conn.send(("ready", None))
    command = await commands.get()
    subscribers: list[Subscriber] = []
    setup_ms = array("f")
    if command == "connect":
        # Thousands of long-lived connection objects: the collector would rescan them again and
        # again while they are opened, and while messages arrive, for no garbage. It sleeps while
        # they open; what survives is then frozen out of every later collection.
        gc.disable()
        try:
            subscribers, report, setup_ms = await _open_all(config, state)
        finally:
            gc.enable()
        gc.collect()
        gc.freeze()
        _publish(state, progress, base)
        conn.send(("connected", report))
        while command != "stop":
            command = await commands.get()
    state.stopping = True
    reporter.cancel()
    _publish(state, progress, base)
    result = WorkerResult(
        received=state.received,
        duplicates=state.duplicates,
        misrouted=state.misrouted,
        foreign=state.foreign,
        seq_counts=state.seq_counts.tobytes(),
        latencies=state.latencies.tobytes(),
        latency_seqs=state.latency_seqs.tobytes(),
        stride=state.stride,
        first_deliveries=state.first,
        latency_sum_ms=state.latency_sum,
        latency_max_ms=state.latency_max,
        disconnects=state.disconnects,
        close_codes=state.close_codes,
        errors=state.errors,
        setup_ms=setup_ms.tobytes(),
    )
    conn.send(("result", result))
    for sub in subscribers:
        if sub.transport is not None and not sub.transport.is_disconnected:
            sub.transport.send_close(WSCloseCode.OK)
            sub.transport.disconnect()
    await asyncio.sleep(0.1)  # let the close frames go out


def worker_main(config: WorkerConfig, conn: mp.connection.Connection, progress: SynchronizedArray[Any]) -> None:
    """A subscriber process: entry point (spawned)."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C reaches the parent, which stops us in order
    raise_nofile_limit()
    logging.getLogger("picows").setLevel(logging.ERROR)
    try:
        # uvloop: the subscribers' receive loop is the load generator's hot path.
        with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
            runner.run(_worker(config, conn, progress))
    except BaseException:
        with contextlib.suppress(Exception):
            conn.send(("error", traceback.format_exc()))
        raise


class WorkerDied(RuntimeError):
    pass


class SubscriberPool:
    """The parent's side: spawn the worker processes, drive them, gather their results."""

    def __init__(self, configs: list[WorkerConfig]) -> None:
        ctx = mp.get_context("spawn")
        self.configs = configs
        self.progress: SynchronizedArray[Any] = ctx.Array("q", COUNTERS * len(configs), lock=False)
        self.pipes: list[mp.connection.Connection] = []
        self.child_ends: list[mp.connection.Connection] = []
        self.procs: list[mp.process.BaseProcess] = []
        for config in configs:
            parent_end, child_end = ctx.Pipe()
            proc = ctx.Process(
                target=worker_main, args=(config, child_end, self.progress), name=f"bench-subscribers-{config.index}"
            )
            self.pipes.append(parent_end)
            self.procs.append(proc)
            self.child_ends.append(child_end)

    async def _recv(self, index: int, expect: str, timeout: float) -> Any:
        conn, proc = self.pipes[index], self.procs[index]
        deadline = time.monotonic() + timeout
        while True:
            if await asyncio.to_thread(conn.poll, 0.25):
                try:
                    kind, payload = conn.recv()
                except EOFError:
                    raise WorkerDied(f"subscriber process {index} exited (code {proc.exitcode})") from None
                if kind == "error":
                    raise WorkerDied(f"subscriber process {index} failed:\n{payload}")
                if kind != expect:
                    raise WorkerDied(f"subscriber process {index} sent {kind!r}, expected {expect!r}")
                return payload
            if not proc.is_alive():
                raise WorkerDied(f"subscriber process {index} exited (code {proc.exitcode})")
            if time.monotonic() > deadline:
                raise WorkerDied(f"subscriber process {index}: no {expect!r} within {timeout:.0f} s")

    async def start(self) -> None:
        for proc in self.procs:
            proc.start()
        for end in self.child_ends:
            end.close()
        await asyncio.gather(*(self._recv(i, "ready", 60) for i in range(len(self.procs))))

    async def connect(self, timeout: float) -> list[ConnectReport]:
        for conn in self.pipes:
            conn.send("connect")
        reports = await asyncio.gather(*(self._recv(i, "connected", timeout) for i in range(len(self.procs))))
        return list(reports)

    async def stop(self) -> list[WorkerResult]:
        for conn in self.pipes:
            with contextlib.suppress(OSError):
                conn.send("stop")
        results = await asyncio.gather(*(self._recv(i, "result", 120) for i in range(len(self.procs))))
        return list(results)

    def totals(self) -> list[int]:
        """Subscribed, received, disconnects, failures: summed over the workers, as last published."""
        sums = [0] * COUNTERS
        values = self.progress[:]
        for i, value in enumerate(values):
            sums[i % COUNTERS] += value
        return sums

    def close(self) -> None:
        for conn in self.pipes:
            with contextlib.suppress(OSError):
                conn.send("stop")
        for proc in self.procs:
            if proc.pid is None:
                continue
            proc.join(5)
            if proc.is_alive():
                proc.terminate()
                proc.join(5)
        for conn in self.pipes:
            conn.close()
