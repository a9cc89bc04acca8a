"""Latency at rest from an HTTP API trigger to the event reaching a real pusher-js client.

    .venv/bin/python bench/trigger_to_pusherjs.py [--events 300] [--interval 0.02]

Starts ``clarion serve`` on a free port and one pusher-js client (the compat suite's Node driver),
then triggers signed events one at a time over a kept-alive HTTP connection. Each latency is the
wall-clock time from just before the POST to pusher-js handing the event to its callback (the
driver stamps it with ``performance.timeOrigin + performance.now()``; same host, same clock).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import sys
import time
from pathlib import Path

import aiohttp

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))

from compat.nodeclient import NodeClient  # noqa: E402
from conftest import run_server  # noqa: E402
from pusherclient import signed_query  # noqa: E402


async def measure(events: int, interval: float) -> list[float]:
    with run_server() as server:
        client = await NodeClient.start(host=server.host, port=server.port, key=server.key, auth_endpoint="")
        try:
            await client.connect()
            await client.subscribe("latency")
            await client.command("bind", channel="latency", event="tick")
            path = f"/apps/{server.app_id}/events"
            samples: list[float] = []
            async with aiohttp.ClientSession() as session:
                for n in range(events):
                    body = json.dumps({"name": "tick", "channel": "latency", "data": json.dumps({"n": n})}).encode()
                    params = signed_query(server.key, server.secret, "POST", path, body)
                    sent = time.time() * 1000
                    async with session.post(server.http_url + path, params=params, data=body) as response:
                        assert response.status == 200, await response.text()
                    seen = await client.expect(type="event", event="tick", data={"n": n})
                    samples.append(seen["at"] - sent)
                    await asyncio.sleep(interval)
            return samples[10:]  # the first few warm up connections and caches
        finally:
            await client.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--events", type=int, default=300)
    parser.add_argument("--interval", type=float, default=0.02)
    args = parser.parse_args()
    samples = sorted(asyncio.run(measure(args.events, args.interval)))

    def pct(p: float) -> float:
        return samples[min(len(samples) - 1, int(p * len(samples)))]

    print(f"trigger -> pusher-js, {len(samples)} events at rest")
    print(f"  p50 {pct(0.50):.2f} ms   p95 {pct(0.95):.2f} ms   p99 {pct(0.99):.2f} ms   max {samples[-1]:.2f} ms")
    print(f"  mean {statistics.fmean(samples):.2f} ms")


if __name__ == "__main__":
    main()
