"""``clarion broadcast-worker`` and ``clarion broadcasts {dead,replay,routes}``.

Settings come from flags or the environment: ``CLARION_BROADCAST_DRIVER`` (pusher://KEY:SECRET@
HOST:PORT/APP_ID), ``CLARION_BROADCAST_REDIS_URL`` and ``CLARION_BROADCAST_PREFIX``.
"""

from __future__ import annotations

import argparse
import datetime
import importlib
import json
import logging
import os
import signal
import sys
import threading
from typing import Any

ENV_DRIVER = "CLARION_BROADCAST_DRIVER"
ENV_REDIS = "CLARION_BROADCAST_REDIS_URL"
ENV_PREFIX = "CLARION_BROADCAST_PREFIX"


def add_commands(commands: Any) -> None:
    worker = commands.add_parser(
        "broadcast-worker",
        help="send queued broadcasts (Dramatiq worker on Redis)",
        description="Drain the broadcast queue: send each channel's events in order, retry with backoff, "
        "dead-letter after --max-tries.",
    )
    _queue_args(worker)
    worker.add_argument("--driver", default=os.environ.get(ENV_DRIVER), help=f"driver URL ({ENV_DRIVER})")
    worker.add_argument("--threads", type=int, default=4, help="drainer threads (4)")
    worker.add_argument("--max-tries", type=int, default=8, help="tries before an event is dead-lettered (8)")
    worker.add_argument("--backoff-base", type=float, default=0.5, help="first retry delay's ceiling, s (0.5)")
    worker.add_argument("--backoff-cap", type=float, default=60.0, help="longest retry delay, s (60)")
    worker.add_argument("--sweep-interval", type=float, default=5.0, help="seconds between sweeps for idle lanes (5)")
    worker.add_argument("--metrics-port", type=int, help="serve Prometheus metrics on this port")
    worker.add_argument(
        "--metrics-host", default="127.0.0.1", help="address the metrics listen on (127.0.0.1; 0.0.0.0 for all)"
    )
    worker.set_defaults(run=_worker)

    broadcasts = commands.add_parser("broadcasts", help="inspect the broadcast queue and the channel routes")
    sub = broadcasts.add_subparsers(dest="broadcasts_command", required=True)
    dead = sub.add_parser("dead", help="list dead-lettered broadcasts with their errors")
    _queue_args(dead)
    dead.add_argument("--json", action="store_true", help="one JSON document")
    dead.set_defaults(run=_dead)
    replay = sub.add_parser("replay", help="put dead-lettered broadcasts back on their channels' queues")
    _queue_args(replay)
    replay.add_argument("ids", nargs="*", help="dead-letter ids (from 'clarion broadcasts dead')")
    replay.add_argument("--all", action="store_true", help="replay every dead letter")
    replay.set_defaults(run=_replay)
    routes = sub.add_parser("routes", help="list the channel routes: pattern, parameters and guard")
    routes.add_argument("target", help="module:attribute of a ChannelRoutes table (or an Authorizer)")
    routes.add_argument("--json", action="store_true", help="one JSON document")
    routes.set_defaults(run=_routes)


def _queue_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--redis-url",
        default=os.environ.get(ENV_REDIS, "redis://127.0.0.1:6379/0"),
        help=f"Redis of the queue ({ENV_REDIS}; redis://127.0.0.1:6379/0)",
    )
    parser.add_argument(
        "--prefix",
        default=os.environ.get(ENV_PREFIX, "clarion-broadcasts"),
        help=f"key prefix of the queue ({ENV_PREFIX}; clarion-broadcasts)",
    )


def _queue(args: argparse.Namespace, driver: str | None = None, **options: Any) -> Any:
    from .integrations.queue import RedisQueue

    return RedisQueue(args.redis_url, prefix=args.prefix, driver=driver, **options)


def _worker(args: argparse.Namespace) -> int:
    from prometheus_client import start_http_server

    from . import observe
    from .delivery import RetryPolicy
    from .errors import ConfigError
    from .integrations.queue import BroadcastWorker

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    if not args.driver:
        print(f"clarion: give the driver URL with --driver or {ENV_DRIVER}", file=sys.stderr)
        return 2
    try:
        policy = RetryPolicy(max_tries=args.max_tries, base=args.backoff_base, cap=args.backoff_cap)
        queue = _queue(args, driver=args.driver, policy=policy)
    except ConfigError as exc:
        print(f"clarion: {exc}", file=sys.stderr)
        return 2
    if args.metrics_port is not None:
        observe.DEAD_LETTERS.set_function(queue.dead_letter_count)
        start_http_server(args.metrics_port, addr=args.metrics_host)
    worker = BroadcastWorker(queue, threads=args.threads, sweep_interval=args.sweep_interval)
    stop = threading.Event()
    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, lambda *_: stop.set())
    worker.start()
    queue.sweep()  # lanes left by a worker that stopped
    print(f"clarion broadcast-worker: draining {args.prefix} on {args.redis_url}", flush=True)
    stop.wait()
    worker.stop()
    queue.close()
    return 0


def _dead(args: argparse.Namespace) -> int:
    queue = _queue(args)
    letters = queue.dead_letters()
    if args.json:
        print(json.dumps([letter.as_dict() for letter in letters], indent=2))
        return 0
    if not letters:
        print("no dead letters")
        return 0
    print(f"{'id':<12}  {'failed at (UTC)':<19}  {'tries':>5}  {'channel':<30}  {'event':<24}  error")
    for letter in letters:
        when = datetime.datetime.fromtimestamp(letter.failed_at, datetime.UTC).strftime("%Y-%m-%d %H:%M:%S")
        row = f"{letter.id:<12}  {when:<19}  {letter.attempts:>5}  {letter.channel:<30}  {letter.name:<24}"
        print(f"{row}  {letter.error}")
    return 0


def _replay(args: argparse.Namespace) -> int:
    if not args.ids and not args.all:
        print("clarion: name dead-letter ids, or --all", file=sys.stderr)
        return 2
    queue = _queue(args)
    count = queue.replay(None if args.all else args.ids)
    print(f"replayed {count} dead letter(s)")
    return 0 if args.all or count == len(args.ids) else 1


def _routes(args: argparse.Namespace) -> int:
    from .auth import Authorizer
    from .routes import ChannelRoutes

    module_name, _, attribute = args.target.partition(":")
    sys.path.insert(0, os.getcwd())
    try:
        target = getattr(importlib.import_module(module_name), attribute or "routes")
    except (ImportError, AttributeError) as exc:
        print(f"clarion: cannot load {args.target}: {exc}", file=sys.stderr)
        return 2
    if isinstance(target, Authorizer):
        target = target.routes
    if not isinstance(target, ChannelRoutes):
        print(f"clarion: {args.target} is a {type(target).__name__}, not a ChannelRoutes table", file=sys.stderr)
        return 2
    rows = target.describe()
    if args.json:
        print(json.dumps(rows, indent=2))
        return 0
    width = max([len("pattern"), *(len(r["pattern"]) for r in rows)])
    pwidth = max([len("parameters"), *(len(r["params"]) for r in rows)])
    print(f"{'pattern':<{width}}  {'parameters':<{pwidth}}  guard")
    for row in rows:
        print(f"{row['pattern']:<{width}}  {row['params']:<{pwidth}}  {row['guard']}")
    return 0
