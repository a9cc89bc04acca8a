"""The load: signed events through the HTTP API (``POST /apps/{id}/events``), paced at a set rate.

Event ``seq`` goes to channel ``seq % C`` (round robin) with the data
``{"run": <nonce>, "seq": <n>, "t": <time.time_ns() just before the request>}`` (plus ``"pad"``
when a payload size was asked for), as a JSON string, like every Pusher SDK sends it.

Pacing never sends faster than asked: request ``n`` is not started before ``start + n / rate``, and
when the server holds the sender back by more than one interval, the schedule restarts from now
instead of bursting to catch up. What was achieved is reported next to what was asked. At most
``concurrency`` requests are in flight on one kept-alive aiohttp session.
"""

from __future__ import annotations

import asyncio
import time
from array import array
from collections import Counter
from dataclasses import dataclass, field

import aiohttp
import orjson

from .signing import signed_query


@dataclass
class LoadResult:
    sent: int = 0  # requests started
    accepted: bytearray = field(default_factory=bytearray)  # 1 at seq when the API answered 200
    sent_at: array[float] = field(default_factory=lambda: array("d"))  # wall clock of each seq, seconds
    api_ms: array[float] = field(default_factory=lambda: array("f"))  # response time of each accepted request
    errors: Counter[str] = field(default_factory=Counter)  # HTTP status or exception name -> count
    first_error: str = ""
    started: float = 0.0  # wall clock
    seconds: float = 0.0  # from the first request to the last answer

    @property
    def accepted_count(self) -> int:
        return sum(self.accepted)


@dataclass
class LoadPlan:
    http_url: str
    app_id: str
    key: str
    secret: str
    channels: list[str]
    event: str
    run: str
    rate: float
    duration: float
    concurrency: int = 1
    payload_bytes: int = 0

    @property
    def max_events(self) -> int:
        """Sequence numbers stay below this (the schedule's length, plus one for rounding)."""
        return int(self.rate * self.duration) + 1 if self.rate > 0 else 0


async def trigger(plan: LoadPlan, on_sent: list[int] | None = None) -> LoadResult:
    """Send the events; ``on_sent[0]`` is kept up to date for progress lines."""
    result = LoadResult(accepted=bytearray(plan.max_events), sent_at=array("d", bytes(8 * plan.max_events)))
    if plan.rate <= 0 or plan.max_events == 0:
        return result
    path = f"/apps/{plan.app_id}/events"
    url = plan.http_url.rstrip("/") + path
    interval = 1.0 / plan.rate
    pad = "x" * plan.payload_bytes
    gate = asyncio.Semaphore(max(1, plan.concurrency))
    pending: set[asyncio.Task[None]] = set()
    connector = aiohttp.TCPConnector(limit=max(1, plan.concurrency), keepalive_timeout=60)
    headers = {"Content-Type": "application/json"}

    async with aiohttp.ClientSession(connector=connector, timeout=aiohttp.ClientTimeout(total=30)) as session:

        async def send(seq: int) -> None:
            try:
                stamp = time.time_ns()
                fields: dict[str, object] = {"run": plan.run, "seq": seq, "t": stamp}
                if pad:
                    fields["pad"] = pad
                body = orjson.dumps(
                    {
                        "name": plan.event,
                        "channel": plan.channels[seq % len(plan.channels)],
                        "data": orjson.dumps(fields).decode(),
                    }
                )
                result.sent_at[seq] = stamp / 1e9
                params = signed_query(plan.key, plan.secret, "POST", path, body)
                began = time.perf_counter()
                async with session.post(url, params=params, data=body, headers=headers) as response:
                    text = await response.read()
                    if response.status == 200:
                        result.accepted[seq] = 1
                        result.api_ms.append((time.perf_counter() - began) * 1000)
                    else:
                        result.errors[str(response.status)] += 1
                        if not result.first_error:
                            result.first_error = f"HTTP {response.status}: {text[:200].decode(errors='replace')}"
            except (aiohttp.ClientError, TimeoutError, OSError) as exc:
                result.errors[type(exc).__name__] += 1
                if not result.first_error:
                    result.first_error = f"{type(exc).__name__}: {exc}"
            finally:
                gate.release()

        loop = asyncio.get_running_loop()
        start = loop.time()
        result.started = time.time()
        end = start + plan.duration
        next_at = start
        seq = 0
        while seq < plan.max_events and next_at < end:
            delay = next_at - loop.time()
            if delay > 0:
                await asyncio.sleep(delay)
            await gate.acquire()
            now = loop.time()
            if now >= end:
                gate.release()
                break
            if now - next_at > interval:
                next_at = now  # held back by the server: restart the schedule, do not burst
            task = loop.create_task(send(seq))
            pending.add(task)
            task.add_done_callback(pending.discard)
            seq += 1
            result.sent = seq
            if on_sent is not None:
                on_sent[0] = seq
            next_at += interval
        if pending:
            await asyncio.gather(*pending)
        result.seconds = loop.time() - start
    return result
