"""``clarion bench``: a load generator for any Pusher Channels (protocol 7) server.

It speaks only the public protocol: subscribers on ``GET /app/{key}`` WebSockets (picows clients,
spread over processes) and events through the signed HTTP API ``POST /apps/{id}/events``. So the
same command measures Clarion, Soketi, Reverb or Pusher itself.

- ``subscribers``: the WebSocket clients and the worker processes that hold them;
- ``load``: the paced, signed HTTP API calls;
- ``target``: the server under test, external or started (Clarion, or the baseline relay);
- ``resources``: the server's CPU time and RSS, read from /proc through psutil;
- ``report``: figures, the JSON document and the table;
- ``plot``: the optional PNG (matplotlib);
- ``baseline``: the bare relay that ``--compare baseline`` measures Clarion against;
- ``runner``: one run, and the Clarion-against-baseline rounds.
"""

from __future__ import annotations

import argparse
import sys


def main(args: argparse.Namespace) -> int:
    try:
        from .runner import main as run
    except ImportError as exc:
        # picows and psutil come with the bench extra, not with the server.
        print(f"clarion bench: {exc.name} is missing: pip install 'clarion[bench]'", file=sys.stderr)
        return 2

    return run(args)
