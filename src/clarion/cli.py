"""``clarion``: the command line."""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
from collections.abc import Coroutine
from typing import Any


def _serve(args: argparse.Namespace) -> int:
    from .server import fanout
    from .server.config import ConfigError, load_settings
    from .server.serve import serve

    try:
        settings = load_settings(args.config)
        fanout.choose(settings.fanout)  # the native loop, when named, must have been built
        if args.host:
            settings.host = args.host
        if args.port is not None:
            settings.port = args.port
    except ConfigError as exc:
        print(f"clarion: {exc}", file=sys.stderr)
        return 2
    if settings.workers > 1:
        from .server.workers import Supervisor

        return Supervisor(settings, args.config).run()
    try:
        run(serve(settings, reuse_port="CLARION_WORKER_INDEX" in os.environ), settings.loop)
    except OSError as exc:
        print(f"clarion: cannot listen on {settings.host}:{settings.port}: {exc.strerror or exc}", file=sys.stderr)
        return 1
    return 0


def _bench(args: argparse.Namespace) -> int:
    from .bench import main as bench

    return bench(args)


def run(main: Coroutine[Any, Any, None], loop: str) -> None:
    """Run ``main`` on uvloop (libuv's C transports write each frame with less CPU than asyncio's
    Python ones) or on the standard asyncio loop."""
    if loop == "uvloop":
        import uvloop

        uvloop.run(main)
    else:
        asyncio.run(main)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="clarion", description="Realtime broadcasting over Pusher Channels v7.")
    commands = parser.add_subparsers(dest="command", required=True)
    serve = commands.add_parser("serve", help="run the WebSocket server and HTTP API")
    serve.add_argument("--config", help="TOML settings file (CLARION_CONFIG); environment variables override it")
    serve.add_argument("--host", help="address to listen on (CLARION_HOST, default 127.0.0.1)")
    serve.add_argument("--port", type=int, help="port for WebSocket and HTTP API (CLARION_PORT, default 6001)")
    serve.set_defaults(run=_serve)
    bench = commands.add_parser(
        "bench",
        help="load-test a Pusher-protocol server (a started clarion serve, or any server by --url)",
        description="Open N Pusher-protocol subscribers, trigger signed events through the HTTP API at a set "
        "rate, and report delivery (loss, duplicates), end-to-end latency, connection setup rate, and the "
        "server's CPU per delivery and memory per connection. Without --url it starts a local clarion serve.",
    )
    target = bench.add_argument_group("target")
    target.add_argument("--url", help="HTTP base URL of a running server, e.g. http://127.0.0.1:6001")
    target.add_argument("--start", action="store_true", help="start a local clarion serve (the default without --url)")
    target.add_argument("--app-id", help="app id (needed with --url; generated when starting)")
    target.add_argument("--key", help="app key (needed with --url; generated when starting)")
    target.add_argument("--secret", help="app secret (needed with --url; generated when starting)")
    target.add_argument("--server-pid", type=int, help="pid of the --url server (same host): CPU and RSS are read")
    target.add_argument(
        "--compare", choices=["baseline"], help="alternate runs of clarion and the bare relay clarion.bench.baseline"
    )
    target.add_argument("--rounds", type=int, default=2, help="with --compare: rounds of (clarion, baseline); 2")
    target.add_argument("--baseline-cmd", help="with --compare: command for the baseline, '{port}' is replaced")
    target.add_argument(
        "--server-cpus", metavar="LIST", help="run the servers bench starts on these CPUs, e.g. 0 (Linux; as taskset)"
    )
    load = bench.add_argument_group("load")
    load.add_argument("--subscribers", type=int, default=1000, help="WebSocket subscribers (default 1000)")
    load.add_argument("--channels", type=int, default=1, help="public channels, subscribers spread evenly (1)")
    load.add_argument("--rate", type=float, default=100, help="events per second; 0 = connect and hold (100)")
    load.add_argument("--duration", type=float, default=10, help="seconds of events, or of holding at --rate 0 (10)")
    load.add_argument("--payload-bytes", type=int, default=0, help="padding added to each event's data (0)")
    load.add_argument("--http-concurrency", type=int, default=1, help="API requests in flight at most (1)")
    load.add_argument(
        "--client-processes", type=int, help="subscriber processes (default: one per spare core, at least 1)"
    )
    load.add_argument(
        "--client-cpus",
        metavar="LIST",
        help="run the load generator and the subscribers on these CPUs, e.g. 1 (Linux; as taskset)",
    )
    load.add_argument("--connect-concurrency", type=int, default=500, help="connections opening at once (500)")
    load.add_argument("--connect-timeout", type=float, default=10, help="seconds to connect and subscribe (10)")
    output = bench.add_argument_group("output")
    output.add_argument("--json", action="store_true", help="print one JSON document instead of the table")
    output.add_argument("--plot", metavar="FILE.png", help="latency histogram and percentiles over time (matplotlib)")
    output.add_argument("--quiet", action="store_true", help="no progress lines on stderr")
    output.add_argument(
        "--assert-no-loss", action="store_true", help="exit 1 unless every subscriber got every event exactly once"
    )
    bench.set_defaults(run=_bench)
    from .broadcasting.commands import add_commands

    add_commands(commands)
    args = parser.parse_args(argv)
    result: int = args.run(args)
    return result


if __name__ == "__main__":
    sys.exit(main())
