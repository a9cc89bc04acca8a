"""One bench run, and the sequence of runs ``--compare baseline`` makes; progress lines on stderr.

A run: measure the idle server's RSS; spawn the subscriber processes and open every subscriber
(bounded concurrency); wait ``SETTLE`` seconds (or, with ``--rate 0``, the whole ``--duration``) and
measure the RSS again; send the events at the rate for the duration while reading the server's CPU
time before and after; wait for the deliveries to drain; collect every worker's results.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import os
import secrets
import signal
import sys
import time
from dataclasses import dataclass
from typing import Any

from . import cpus, plot
from .load import LoadPlan, trigger
from .report import RunData, ServerFigures, analyse, document, table
from .resources import ServerProbe
from .subscribers import SubscriberPool, WorkerConfig, WorkerDied, raise_nofile_limit
from .target import Target, TargetError, external, start_baseline, start_clarion

EVENT = "clarion-bench"
SETTLE = 1.0  # seconds between the last subscription and the RSS reading, when events follow
DRAIN_IDLE = 2.0  # stop waiting for deliveries after this long without a new one
DRAIN_MAX = 30.0
MAX_SAMPLES = 4_000_000  # latency samples kept, over all subscriber processes


class UsageError(Exception):
    pass


def default_client_processes(client_cpus: frozenset[int] | None = None) -> int:
    """One per spare core: the server under test gets one. With ``--client-cpus``, one per CPU given."""
    if client_cpus:
        return len(client_cpus)
    return max(1, (os.cpu_count() or 2) - 1)


def _cpus(flag: str, text: str | None) -> frozenset[int] | None:
    if not text:
        return None
    try:
        return cpus.parse(text)
    except ValueError as exc:
        raise UsageError(f"{flag}: {exc}") from None


@dataclass
class Options:
    url: str | None
    app_id: str
    key: str
    secret: str
    server_pid: int | None
    compare: str | None
    rounds: int
    baseline_cmd: str | None
    server_cpus: frozenset[int] | None  # for started servers: as asked, or all of ours when only clients are pinned
    client_cpus: frozenset[int] | None
    subscribers: int
    channels: int
    rate: float
    duration: float
    payload_bytes: int
    http_concurrency: int
    client_processes: int
    connect_concurrency: int
    connect_timeout: float
    json: bool
    plot: str | None
    quiet: bool
    assert_no_loss: bool

    @classmethod
    def from_args(cls, args: argparse.Namespace) -> Options:
        if args.url and args.start:
            raise UsageError("--start and --url exclude each other: --url targets a running server")
        if args.url and not (args.app_id and args.key and args.secret):
            raise UsageError("--url needs the app's --app-id, --key and --secret (to sign the API calls)")
        if args.compare and args.url:
            raise UsageError("--compare baseline starts both servers itself: leave out --url")
        if args.server_pid is not None and not args.url:
            raise UsageError("--server-pid is for a server given with --url; a started server is measured anyway")
        if args.baseline_cmd and not args.compare:
            raise UsageError("--baseline-cmd goes with --compare baseline")
        checks = [
            (args.subscribers >= 1, "--subscribers must be at least 1"),
            (args.channels >= 1, "--channels must be at least 1"),
            (args.rate >= 0 and math.isfinite(args.rate), "--rate must be 0 (idle) or more"),
            (args.duration > 0 and math.isfinite(args.duration), "--duration must be more than 0"),
            (args.rounds >= 1, "--rounds must be at least 1"),
            (args.payload_bytes >= 0, "--payload-bytes must be 0 or more"),
            (args.http_concurrency >= 1, "--http-concurrency must be at least 1"),
            (args.connect_concurrency >= 1, "--connect-concurrency must be at least 1"),
            (args.connect_timeout > 0, "--connect-timeout must be more than 0"),
            (args.client_processes is None or args.client_processes >= 1, "--client-processes must be at least 1"),
        ]
        for ok, message in checks:
            if not ok:
                raise UsageError(message)
        server_cpus = client_cpus = None
        if args.server_cpus or args.client_cpus:
            if not cpus.supported():
                raise UsageError("--server-cpus and --client-cpus need Linux (sched_setaffinity)")
            if args.server_cpus and args.url:
                raise UsageError("--server-cpus pins the servers bench starts; pin a --url server where it runs")
            server_cpus = _cpus("--server-cpus", args.server_cpus)
            client_cpus = _cpus("--client-cpus", args.client_cpus)
            if client_cpus and server_cpus is None and not args.url:
                server_cpus = cpus.of(0)  # a started server must not inherit the clients' pinning
        processes = args.client_processes or default_client_processes(client_cpus)
        return cls(
            url=args.url,
            app_id=args.app_id or "bench",
            key=args.key or "bench-key",
            secret=args.secret or secrets.token_hex(16),
            server_pid=args.server_pid,
            compare=args.compare,
            rounds=args.rounds if args.compare else 1,
            baseline_cmd=args.baseline_cmd,
            server_cpus=server_cpus,
            client_cpus=client_cpus,
            subscribers=args.subscribers,
            channels=args.channels,
            rate=args.rate,
            duration=args.duration,
            payload_bytes=args.payload_bytes,
            http_concurrency=args.http_concurrency,
            client_processes=min(processes, args.subscribers),
            connect_concurrency=args.connect_concurrency,
            connect_timeout=args.connect_timeout,
            json=args.json,
            plot=args.plot,
            quiet=args.quiet,
            assert_no_loss=args.assert_no_loss,
        )

    def params(self) -> dict[str, Any]:
        return {
            "subscribers": self.subscribers,
            "channels": self.channels,
            "rate": self.rate,
            "duration": self.duration,
            "payload_bytes": self.payload_bytes,
            "http_concurrency": self.http_concurrency,
            "client_processes": self.client_processes,
            "connect_concurrency": self.connect_concurrency,
            "connect_timeout": self.connect_timeout,
            "target": self.url or "start",
            "compare": self.compare,
            "rounds": self.rounds,
            "server_cpus": sorted(self.server_cpus) if self.server_cpus and not self.url else None,
            "client_cpus": sorted(self.client_cpus) if self.client_cpus else None,
        }


class Progress:
    """A line a second on stderr: phase, subscribers, events sent, deliveries received."""

    def __init__(self, name: str, subscribers: int, quiet: bool) -> None:
        self.name = name
        self.subscribers = subscribers
        self.quiet = quiet
        self.phase = "starting"
        self.sent = [0]
        self.pool: SubscriberPool | None = None
        self.began = time.monotonic()

    def line(self) -> str:
        subscribed, received, disconnects, failures = self.pool.totals() if self.pool else (0, 0, 0, 0)
        extra = ""
        if disconnects:
            extra += f"  DISCONNECTED {disconnects:,}"
        if failures:
            extra += f"  failed {failures:,}"
        return (
            f"bench {self.name} {time.monotonic() - self.began:6.1f}s {self.phase:<10} "
            f"subscribed {subscribed:,}/{self.subscribers:,}  sent {self.sent[0]:,}  received {received:,}{extra}"
        )

    async def run(self) -> None:
        while True:
            await asyncio.sleep(1.0)
            if not self.quiet:
                print(self.line(), file=sys.stderr, flush=True)


def _worker_configs(
    options: Options, target: Target, channels: list[str], run: str, max_events: int
) -> list[WorkerConfig]:
    processes = options.client_processes
    share = math.ceil(options.connect_concurrency / processes)
    configs = []
    for index in range(processes):
        mine = [channels[i % len(channels)] for i in range(index, options.subscribers, processes)]
        configs.append(
            WorkerConfig(
                index=index,
                ws_url=target.ws_url,
                channels=mine,
                connect_concurrency=share,
                connect_timeout=options.connect_timeout,
                event=EVENT,
                run=run,
                max_events=max_events,
                max_samples=MAX_SAMPLES // processes,
            )
        )
    return configs


async def _drain(pool: SubscriberPool, expected: int) -> float:
    """Wait until the expected deliveries arrived, or none arrived for DRAIN_IDLE seconds."""
    began = time.monotonic()
    last, last_change = -1, began
    while time.monotonic() - began < DRAIN_MAX:
        received = pool.totals()[1]
        if received >= expected:
            break
        now = time.monotonic()
        if received != last:
            last, last_change = received, now
        elif now - last_change > DRAIN_IDLE:
            break
        await asyncio.sleep(0.05)
    return time.monotonic() - began


async def run_once(options: Options, target: Target, round_no: int, name: str) -> RunData:
    run = secrets.token_hex(6)
    channels = [f"bench-{run}-{i}" for i in range(options.channels)]
    plan = LoadPlan(
        http_url=target.http_url,
        app_id=target.app_id,
        key=target.key,
        secret=target.secret,
        channels=channels,
        event=EVENT,
        run=run,
        rate=options.rate,
        duration=options.duration,
        concurrency=options.http_concurrency,
        payload_bytes=options.payload_bytes,
    )
    probe = ServerProbe(target.pid) if target.pid is not None else None
    server = ServerFigures(pid=target.pid) if probe is not None and target.pid is not None else None
    if probe is not None and server is not None:
        server.rss_before = probe.rss()
        server.cpus = probe.cpus()
    progress = Progress(name, options.subscribers, options.quiet)
    pool = SubscriberPool(_worker_configs(options, target, channels, run, plan.max_events))
    progress.pool = pool
    ticker = asyncio.create_task(progress.run())
    try:
        await pool.start()
        progress.phase = "connecting"
        per_worker = math.ceil(options.subscribers / options.client_processes)
        batches = math.ceil(per_worker / pool.configs[0].connect_concurrency)
        connects = await pool.connect(timeout=batches * options.connect_timeout + 60)
        progress.phase = "holding" if options.rate <= 0 else "settling"
        await asyncio.sleep(options.duration if options.rate <= 0 else SETTLE)
        cpu_before = probe.cpu() if probe is not None else {}
        if probe is not None and server is not None:
            server.rss_connected = probe.rss()
            server.processes = probe.count()
        progress.phase = "load"
        load = await trigger(plan, progress.sent)
        subscribed: dict[str, int] = {}
        for report in connects:
            for channel, count in report.subscribed.items():
                subscribed[channel] = subscribed.get(channel, 0) + count
        expected = sum(subscribed.get(channels[seq % len(channels)], 0) for seq, ok in enumerate(load.accepted) if ok)
        progress.phase = "draining"
        drained = await _drain(pool, expected) if options.rate > 0 else 0.0
        if probe is not None and server is not None:
            server.cpu_seconds = ServerProbe.cpu_used(cpu_before, probe.cpu())
        progress.phase = "collecting"
        workers = await pool.stop()
    finally:
        ticker.cancel()
        pool.close()
    if not options.quiet:
        progress.phase = "done"
        print(progress.line(), file=sys.stderr, flush=True)
    return RunData(
        label=target.label,
        round=round_no,
        url=target.http_url,
        subscribers_requested=options.subscribers,
        channels=channels,
        rate=options.rate,
        duration=options.duration,
        connects=connects,
        load=load,
        workers=workers,
        server=server,
        drain_seconds=drained,
    )


async def run_all(options: Options) -> list[RunData]:
    # SIGTERM stops like Ctrl-C: the main task is cancelled, so started servers and workers are stopped.
    task = asyncio.current_task()
    if task is not None:
        asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, task.cancel)
    runs: list[RunData] = []
    if options.url:
        target = external(options.url, options.app_id, options.key, options.secret, options.server_pid)
        runs.append(await run_once(options, target, 1, "external"))
        return runs
    labels = ["clarion", "baseline"] if options.compare else ["clarion"]
    for round_no in range(1, options.rounds + 1):
        # Every other round the other way round (clarion, baseline, baseline, clarion, ...): whatever
        # the position in a round costs, both servers pay it equally often.
        for label in labels if round_no % 2 else labels[::-1]:
            if label == "clarion":
                target = await start_clarion(options.app_id, options.key, options.secret, options.server_cpus)
            else:
                target = await start_baseline(
                    options.baseline_cmd, options.app_id, options.key, options.secret, options.server_cpus
                )
            name = f"{label} #{round_no}" if options.compare else label
            try:
                if not options.quiet:
                    print(f"bench {name}: server pid {target.pid} at {target.http_url}", file=sys.stderr, flush=True)
                runs.append(await run_once(options, target, round_no, name))
            finally:
                target.stop()
    return runs


def main(args: argparse.Namespace) -> int:
    try:
        options = Options.from_args(args)
    except UsageError as exc:
        print(f"clarion bench: {exc}", file=sys.stderr)
        return 2
    if options.plot and not plot.available():
        print(f"clarion bench: {plot.MISSING}", file=sys.stderr)
        return 2
    raise_nofile_limit()  # before starting a server: it inherits the limit
    if options.client_cpus:
        cpus.pin(0, options.client_cpus)  # the subscriber processes inherit it
    try:
        runs = asyncio.run(run_all(options))
    except (TargetError, WorkerDied) as exc:
        print(f"clarion bench: {exc}", file=sys.stderr)
        return 2
    except (KeyboardInterrupt, asyncio.CancelledError):
        print("clarion bench: interrupted; servers and subscribers stopped", file=sys.stderr)
        return 130
    rows = [analyse(run) for run in runs]
    doc = document(options.params(), rows, options.compare)
    if options.json:
        print(json.dumps(doc, indent=2))
    else:
        print(table(doc))
    if options.plot:
        title = (
            f"clarion bench: {options.subscribers:,} subscribers, {options.rate:g} events/s, "
            f"{options.duration:g} s ({', '.join(sorted({r.label for r in runs}))})"
        )
        plot.write(options.plot, runs, title)
        print(f"clarion bench: plot written to {options.plot}", file=sys.stderr)
    if any(row["subscribers"] == 0 for row in rows):
        print("clarion bench: no subscriber could connect (see connect_errors)", file=sys.stderr)
        return 2
    if options.assert_no_loss and not doc["ok"]:
        failures = sum(row["connect_failures"] for row in rows)
        unexpected = sum(row["unexpected"] for row in rows)
        print(
            f"clarion bench: --assert-no-loss: lost {doc['lost']:,}, duplicates {doc['duplicates']:,}, "
            f"unexpected {unexpected:,}, disconnects {doc['disconnects']:,}, connect failures {failures:,}",
            file=sys.stderr,
        )
        return 1
    return 0
