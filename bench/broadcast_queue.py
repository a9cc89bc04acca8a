"""The queued broadcast path: throughput, and the latency it adds (enqueue → pusher-js).

    .venv/bin/python bench/broadcast_queue.py [--events 2000] [--channels 10] [--rate 0] [--threads 4]

Starts ``clarion serve`` and ``clarion broadcast-worker`` on free ports / a fresh Redis prefix,
and one pusher-js client (the compat suite's Node driver) subscribed to every channel. The app
side enqueues events with the SDK's ``RedisQueue`` (what ``Broadcaster.broadcast`` does for a
queued event); each event carries the wall-clock time it was enqueued, and its latency is the
time from just before the enqueue to pusher-js handing it to its callback (same host, same clock).

``--rate 0`` enqueues everything at once: the figure that matters is throughput (events delivered
per second from the first enqueue to the last arrival). ``--rate N`` paces N events per second,
below saturation: the figure that matters is the added latency. The first 5% are warm-up.
Needs the Redis on 127.0.0.1:6379 (scripts/redis.sh).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))

from clarion.broadcasting import Message  # noqa: E402
from clarion.broadcasting.integrations.queue import RedisQueue  # noqa: E402
from compat.nodeclient import NodeClient  # noqa: E402
from conftest import RunningServer, run_server  # noqa: E402

REDIS = "redis://127.0.0.1:6379/0"


async def measure(server: RunningServer, prefix: str, events: int, channels: int, rate: float) -> dict[str, float]:
    names = [f"bench-{i}" for i in range(channels)]
    queue = RedisQueue(REDIS, prefix=prefix)
    client = await NodeClient.start(host=server.host, port=server.port, key=server.key, auth_endpoint="")
    try:
        await client.connect()
        for name in names:
            await client.subscribe(name)
        started = time.time()
        for n in range(events):
            stamp = time.time() * 1000
            message = Message((names[n % channels],), "tick", json.dumps({"n": n, "t": stamp}))
            await asyncio.to_thread(queue.enqueue, [message])
            if rate > 0:
                await asyncio.sleep(max(0.0, started + (n + 1) / rate - time.time()))
        for _ in range(events):
            await client.expect(type="event", event="tick", timeout=120)
        seen = client.events()
        finished = max(e["at"] for e in seen) / 1000
        latencies = sorted(e["at"] - e["data"]["t"] for e in seen[events // 20 :])
        q = statistics.quantiles(latencies, n=100)
        return {
            "events": events,
            "throughput_per_s": events / (finished - started),
            "p50_ms": q[49],
            "p95_ms": q[94],
            "p99_ms": q[98],
            "max_ms": latencies[-1],
        }
    finally:
        await client.close()
        keys = queue.redis.keys(f"{prefix}*")
        if keys:
            queue.redis.delete(*keys)
        queue.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--events", type=int, default=2000)
    parser.add_argument("--channels", type=int, default=10)
    parser.add_argument("--rate", type=float, default=0, help="events per second to enqueue; 0 = all at once")
    parser.add_argument("--threads", type=int, default=4, help="the worker's drainer threads")
    args = parser.parse_args()
    prefix = f"bench-broadcasts-{uuid.uuid4().hex[:8]}"
    with run_server() as server, tempfile.TemporaryFile() as log:
        driver = f"pusher://{server.key}:{server.secret}@{server.host}:{server.port}/{server.app_id}"
        command = [sys.executable, "-m", "clarion", "broadcast-worker", "--driver", driver, "--redis-url", REDIS]
        # Our own interpreter and arguments, nothing from outside.
        worker = subprocess.Popen(  # noqa: S603
            [*command, "--prefix", prefix, "--threads", str(args.threads)],
            cwd=ROOT,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        try:
            result = asyncio.run(measure(server, prefix, args.events, args.channels, args.rate))
        finally:
            worker.send_signal(signal.SIGTERM)
            worker.wait(timeout=15)
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
