"""``clarion``: the command line."""

from __future__ import annotations

import argparse
import asyncio
import os
import sys


def _serve(args: argparse.Namespace) -> int:
    from .server.app import serve
    from .server.config import ConfigError, load_settings

    try:
        settings = load_settings(args.config)
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
        asyncio.run(serve(settings, reuse_port="CLARION_WORKER_INDEX" in os.environ))
    except OSError as exc:
        print(f"clarion: cannot listen on {settings.host}:{settings.port}: {exc.strerror or exc}", file=sys.stderr)
        return 1
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="clarion", description="Realtime broadcasting over Pusher Channels v7.")
    commands = parser.add_subparsers(dest="command", required=True)
    serve = commands.add_parser("serve", help="run the WebSocket server and HTTP API")
    serve.add_argument("--config", help="TOML settings file (CLARION_CONFIG); environment variables override it")
    serve.add_argument("--host", help="address to listen on (CLARION_HOST, default 127.0.0.1)")
    serve.add_argument("--port", type=int, help="port for WebSocket and HTTP API (CLARION_PORT, default 6001)")
    serve.set_defaults(run=_serve)
    args = parser.parse_args(argv)
    result: int = args.run(args)
    return result


if __name__ == "__main__":
    sys.exit(main())
