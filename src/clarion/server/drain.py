"""Graceful shutdown: stop taking sockets, send the open ones away (4200) spread over a window."""

from __future__ import annotations

import asyncio
import logging

from ..observability import logs, metrics
from .node import Node

log = logging.getLogger("clarion.server")

TICK = 0.05  # seconds between two batches of closes
RECONNECT = 4200  # Pusher: "reconnect immediately" (4200-4299)


def _open_count(node: Node) -> int:
    return sum(len(hub.connections) for hub in node.hubs.values())


async def drain(node: Node, spread: float, deadline: float) -> int:
    """Close every socket with 4200, in batches evenly over ``spread`` seconds, so clients do not
    all reconnect to the other nodes in the same instant. Returns the sockets still open at
    ``deadline`` (loop time)."""
    loop = asyncio.get_running_loop()
    node.admission.draining = True
    metrics.DRAINING.set(1)
    conns = [conn for hub in node.hubs.values() for conn in list(hub.connections.values())]
    log.info("draining", extra=logs.fields(connections=len(conns), spread=spread))
    start = loop.time()
    # As many batches as ticks fit in the window (fewer if fewer sockets), evenly over it.
    batches = max(1, min(len(conns), int(spread / TICK))) if spread > 0 else 1
    for index in range(batches):
        due = start + index * spread / batches
        if due > loop.time():
            await asyncio.sleep(due - loop.time())
        lo, hi = len(conns) * index // batches, len(conns) * (index + 1) // batches
        for conn in conns[lo:hi]:
            conn.close(RECONNECT, "Server shutting down, reconnect")
    while _open_count(node) and loop.time() < deadline:  # noqa: ASYNC110 - closes have no joint event
        await asyncio.sleep(TICK)
    return _open_count(node)
