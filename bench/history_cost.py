"""Per-event CPU of publishing with history (``keep``) against without, for both scaling twins.

    .venv/bin/python bench/history_cost.py --events 20000

Publishes through a real backend (the memory twin, and the Redis twin on CLARION_REDIS_URL) with
a no-op listener, one event at a time as the HTTP API does, and reports this process's CPU time per
event (Redis's own work is not included: it is reported separately from INFO's used_cpu).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import time
import uuid

from redis import asyncio as aioredis

from clarion.protocol.messages import channel_event
from clarion.scaling.contracts import Backend, Envelope, Keep
from clarion.scaling.memory import MemoryBackend
from clarion.scaling.redis import RedisBackend

REDIS_URL = os.environ.get("CLARION_REDIS_URL", "redis://127.0.0.1:6379/0")


async def redis_cpu() -> float:
    client = aioredis.Redis.from_url(REDIS_URL)
    try:
        info = await client.info("cpu")
        return float(info["used_cpu_sys"]) + float(info["used_cpu_user"])
    finally:
        await client.aclose()


async def measure(backend: Backend, keep: Keep | None, events: int) -> tuple[float, float]:
    received = 0
    everything = asyncio.Event()

    def on_event(envelope: Envelope) -> None:
        nonlocal received
        received += 1
        if received == events + 200:
            everything.set()

    await backend.start(on_event, lambda message: None)
    frame = channel_event("category.updated", "private-tenant.1", '{"id":12,"name":"Shoes","parent":3}')
    envelope = Envelope("1", "private-tenant.1", frame)
    for _ in range(200):  # warm up (script load, connections)
        await backend.publish(envelope, keep)
    redis_before = await redis_cpu()
    started = time.process_time()
    for _ in range(events):
        await backend.publish(envelope, keep)
    await everything.wait()
    used = time.process_time() - started
    redis_used = await redis_cpu() - redis_before
    await backend.close()
    return used / events * 1e6, redis_used / events * 1e6


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--events", type=int, default=20000)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    print("twin    history  node µs/event  redis µs/event")
    for twin in ("memory", "redis"):
        for round_ in range(args.rounds):
            for keep in (None, Keep(100, 300)):
                backend: Backend
                if twin == "memory":
                    backend = MemoryBackend()
                else:
                    backend = RedisBackend(REDIS_URL, f"hcost-{uuid.uuid4().hex[:8]}", f"n{round_}")
                node_us, redis_us = await measure(backend, keep, args.events)
                label = "on " if keep else "off"
                redis_text = f"{redis_us:14.1f}" if twin == "redis" else "             -"
                print(f"{twin:7} {label:8} {node_us:14.1f} {redis_text}")


if __name__ == "__main__":
    asyncio.run(main())
