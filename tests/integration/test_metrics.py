"""Each metric of docs/operations/metrics.md moves when its cause happens, read through /metrics
over HTTP from a real server; under CLARION_WORKERS a scrape on any worker sees them all."""

from __future__ import annotations

import json
import os
import signal
from pathlib import Path
from typing import Any

import aiohttp
from prometheus_client.parser import text_string_to_metric_families

from pusherclient import PusherSocket, api_call, expect_error, fresh, raw_request, signed_query, wait_for
from redisproc import PrivateRedis, free_port


async def scrape(server: Any) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    async with aiohttp.ClientSession() as session, session.get(server.http_url + "/metrics") as response:
        assert response.status == 200
        text = await response.text()
    return {
        (s.name, tuple(sorted(s.labels.items()))): float(s.value)
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


async def value(server: Any, name: str, **labels: str) -> float:
    """One series' value (0 when it does not exist yet)."""
    return (await scrape(server)).get((name, tuple(sorted(labels.items()))), 0.0)


async def settles_at(server: Any, name: str, expected: float, **labels: str) -> None:
    async def there() -> bool:
        return await value(server, name, **labels) == expected

    try:
        await wait_for(there, timeout=10)
    except AssertionError:
        raise AssertionError(f"{name}{labels} = {await value(server, name, **labels)}, not {expected}") from None


async def test_subscription_and_channel_gauges_follow_subscribes_and_closes(server) -> None:
    app = server.app_id
    subs = await value(server, "clarion_subscriptions", app_id=app)
    chans = await value(server, "clarion_channels", app_id=app)
    one, two = fresh("gauge-a"), fresh("gauge-b")
    async with await PusherSocket.open(server.ws_url()) as a, await PusherSocket.open(server.ws_url()) as b:
        await a.subscribe(one)
        await a.subscribe(two)
        await a.subscribe(two)  # a repeated subscribe is one subscription
        await b.subscribe(one)
        assert await value(server, "clarion_subscriptions", app_id=app) == subs + 3
        assert await value(server, "clarion_channels", app_id=app) == chans + 2
        await a.send("pusher:unsubscribe", {"channel": two})
        await settles_at(server, "clarion_channels", chans + 1, app_id=app)
        assert await value(server, "clarion_subscriptions", app_id=app) == subs + 2
    await settles_at(server, "clarion_subscriptions", subs, app_id=app)
    await settles_at(server, "clarion_channels", chans, app_id=app)


async def test_published_deliveries_and_latency_carry_the_app_id(server) -> None:
    app = server.app_id
    labels = {"app_id": app}
    published = await value(server, "clarion_events_published_total", app_id=app, source="api")
    delivered = await value(server, "clarion_deliveries_total", **labels)
    timed = await value(server, "clarion_delivery_latency_seconds_count", **labels)
    channel = fresh("delivered")
    async with await PusherSocket.open(server.ws_url()) as a, await PusherSocket.open(server.ws_url()) as b:
        await a.subscribe(channel)
        await b.subscribe(channel)
        for _ in range(3):
            status, _ = await server.trigger(channel)
            assert status == 200
        for sock in (a, b):
            for _ in range(3):
                await sock.expect("e", channel)
    after = await scrape(server)
    assert after[("clarion_events_published_total", (("app_id", app), ("source", "api")))] == published + 3
    # Deliveries count frames written (3 events x 2 sockets); latency is observed once per event.
    assert after[("clarion_deliveries_total", (("app_id", app),))] == delivered + 6
    assert after[("clarion_delivery_latency_seconds_count", (("app_id", app),))] == timed + 3
    slowest = after[("clarion_delivery_latency_seconds_bucket", (("app_id", app), ("le", "2.5")))]
    assert slowest == timed + 3  # a loopback delivery takes far less than 2.5 s


async def test_an_event_without_subscribers_is_published_but_not_timed(server) -> None:
    app = server.app_id
    timed = await value(server, "clarion_delivery_latency_seconds_count", app_id=app)
    published = await value(server, "clarion_events_published_total", app_id=app, source="api")
    status, _ = await server.trigger(fresh("nobody-here"))
    assert status == 200
    assert await value(server, "clarion_events_published_total", app_id=app, source="api") == published + 1
    assert await value(server, "clarion_delivery_latency_seconds_count", app_id=app) == timed


async def test_client_events_are_counted_by_app(server_factory) -> None:
    running = server_factory(env={"CLARION_CLIENT_EVENTS": "all"})
    app = running.app_id
    channel = fresh("private-talk")
    async with await PusherSocket.open(running.ws_url()) as a, await PusherSocket.open(running.ws_url()) as b:
        for sock in (a, b):
            await sock.subscribe(channel, key=running.key, secret=running.secret)
        before = await value(running, "clarion_client_events_total", app_id=app)
        await a.send("client-typing", {"n": 1}, channel)
        await b.expect("client-typing", channel)
        assert await value(running, "clarion_client_events_total", app_id=app) == before + 1
        sources = await value(running, "clarion_events_published_total", app_id=app, source="client")
        assert sources >= 1


async def test_auth_failures_are_counted_by_kind(server) -> None:
    async def count(kind: str) -> float:
        return await value(server, "clarion_auth_failures_total", kind=kind)

    kinds = ("api_signature", "api_timestamp", "api_key", "channel_auth", "signin")
    before = {kind: await count(kind) for kind in kinds}
    path = f"/apps/{server.app_id}/events"
    body = json.dumps({"name": "e", "channel": "c", "data": "{}"}).encode()
    status, _ = await api_call(server.http_url, server.key, "wrong-secret", "POST", path, {"name": "e"})
    assert status == 401
    stale = signed_query(server.key, server.secret, "POST", path, body, timestamp=1_000_000)
    assert (await raw_request(server.http_url, "POST", path, stale, body))[0] == 401
    status, _ = await api_call(server.http_url, "wrong-key", server.secret, "POST", path, {"name": "e"})
    assert status == 401
    async with await PusherSocket.open(server.ws_url()) as sock:
        answer = await sock.subscribe(fresh("private-locked"), auth=f"{server.key}:{'0' * 64}")
        assert answer["event"] == "pusher:subscription_error"
        await sock.send_signin(json.dumps({"id": "u1"}), key=server.key, secret="wrong-secret")
        await expect_error(sock, 4009)
    assert {kind: await count(kind) - before[kind] for kind in kinds} == dict.fromkeys(kinds, 1)


async def test_webhook_queue_depth_rises_while_the_target_fails_and_falls_when_it_gives_up(server_factory) -> None:
    unreachable = free_port()  # nothing listens: every POST is refused
    running = server_factory(
        env={
            "CLARION_WEBHOOK_URL": f"http://127.0.0.1:{unreachable}/hook",
            "CLARION_WEBHOOK_DELAY": "0",
            "CLARION_WEBHOOK_RETRY_FOR": "2",
        }
    )
    assert await value(running, "clarion_webhook_queue_depth") == 0
    async with await PusherSocket.open(running.ws_url()) as sock:
        await sock.subscribe(fresh("hooked"))  # channel_occupied, waiting for its retry

        async def waiting() -> bool:
            return await value(running, "clarion_webhook_queue_depth") >= 1

        await wait_for(waiting, timeout=10)
    # Retries end after CLARION_WEBHOOK_RETRY_FOR; the events are dropped (and counted), none wait.
    await settles_at(running, "clarion_webhook_queue_depth", 0)
    assert await value(running, "clarion_webhook_failures_total") >= 1


async def test_scaling_reconnects_count_a_return_of_redis(server_factory) -> None:
    redis = PrivateRedis()
    redis.start()
    try:
        running = server_factory(
            env={"CLARION_SCALING": "redis", "CLARION_REDIS_URL": redis.url, "CLARION_REDIS_HEALTH_INTERVAL": "0.2"}
        )
        await settles_at(running, "clarion_scaling_up", 1)
        assert await value(running, "clarion_scaling_reconnects_total") == 0  # the first connect is no reconnect
        redis.kill()
        await settles_at(running, "clarion_scaling_up", 0)
        redis.start()
        await settles_at(running, "clarion_scaling_up", 1)
        assert await value(running, "clarion_scaling_reconnects_total") == 1
    finally:
        redis.kill()


def soft_fd_limit(pid: int) -> int:
    for line in Path(f"/proc/{pid}/limits").read_text().splitlines():
        if line.startswith("Max open files"):
            return int(line.split()[3])
    raise AssertionError("no open files limit")


async def test_process_gauges_report_descriptors_against_the_limit_and_memory(server_factory) -> None:
    running = server_factory()
    pid = running.proc.pid
    first = await scrape(running)
    assert first[("clarion_process_max_fds", ())] == soft_fd_limit(pid)
    assert first[("clarion_process_resident_memory_bytes", ())] > 10 * 1024 * 1024
    assert first[("clarion_draining", ())] == 0
    socks = [await PusherSocket.open(running.ws_url()) for _ in range(20)]
    try:
        held = await value(running, "clarion_process_open_fds")
        # Each socket is a descriptor in the server: the gauge reads them at the scrape.
        assert held >= first[("clarion_process_open_fds", ())] + 20
    finally:
        for sock in socks:
            await sock.close()


async def test_under_two_workers_a_scrape_counts_the_sockets_of_both(server_factory) -> None:
    running = server_factory(env={"CLARION_WORKERS": "2", "CLARION_SCALING": "redis"})
    app = running.app_id
    socks: list[PusherSocket] = []
    nodes: set[str] = set()
    try:
        while len(nodes) < 2 or len(socks) < 6:
            assert len(socks) < 64, "64 connections all went to one worker"
            sock = await PusherSocket.open(running.ws_url())
            socks.append(sock)
            nodes.add(sock.socket_id.split(".")[0])
        channel = fresh("spread")
        for sock in socks:
            await sock.subscribe(channel)
        # Scrapes land on either worker (SO_REUSEPORT): each must see the whole server.
        for _ in range(6):
            figures = await scrape(running)
            assert figures[("clarion_connections", (("app_id", app),))] == len(socks)
            assert figures[("clarion_subscriptions", (("app_id", app),))] == len(socks)
            # One channel, occupied on both workers: channels are counted per worker, summed.
            assert figures[("clarion_channels", (("app_id", app),))] == 2
            assert figures[("clarion_scaling_up", ())] == 1
        status, _ = await running.trigger(channel)
        assert status == 200
        for sock in socks:
            await sock.expect("e", channel)
        await settles_at(running, "clarion_deliveries_total", len(socks), app_id=app)
        figures = await scrape(running)
        assert figures[("clarion_delivery_latency_seconds_count", (("app_id", app),))] == 2  # once per worker
        assert figures[("clarion_events_published_total", (("app_id", app), ("source", "api")))] == 1
    finally:
        for sock in socks:
            await sock.close()
    await settles_at(running, "clarion_connections", 0, app_id=app)


async def test_a_dead_worker_leaves_no_gauge_behind(server_factory) -> None:
    running = server_factory(env={"CLARION_WORKERS": "2", "CLARION_SCALING": "redis"})
    app = running.app_id
    sock = await PusherSocket.open(running.ws_url())
    await settles_at(running, "clarion_connections", 1, app_id=app)
    workers = [
        pid for pid in (int(name) for name in os.listdir("/proc") if name.isdigit()) if _parent(pid) == running.proc.pid
    ]
    assert len(workers) == 2
    for pid in workers:
        os.kill(pid, signal.SIGKILL)
    assert await sock.closed(timeout=10) is not None

    async def restarted_and_empty() -> bool:
        try:
            figures = await scrape(running)
        except (aiohttp.ClientError, AssertionError):
            return False  # no worker listening yet
        # The killed workers' gauge files are gone: their socket no longer counts.
        return figures.get(("clarion_connections", (("app_id", app),))) == 0

    await wait_for(restarted_and_empty, timeout=20)


def _parent(pid: int) -> int:
    try:
        return int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[1])
    except (OSError, IndexError, ValueError):
        return -1


async def test_latency_is_timed_on_another_node_for_plain_and_kept_events(server_factory) -> None:
    """The API's receipt time travels on the Redis bus (for an event kept in history too, which
    Redis's script publishes), so the node that did not take the publish times it as well."""
    env = {
        "CLARION_SCALING": "redis",
        "CLARION_HISTORY": "private-kept-:10:300",
        "CLARION_SCALING_PREFIX": fresh("lat"),
    }
    publisher, other = server_factory(env=env), server_factory(env=env)
    app = other.app_id
    plain, kept = fresh("plain"), fresh("private-kept-")
    async with await PusherSocket.open(other.ws_url()) as sock:
        await sock.subscribe(plain)
        await sock.subscribe(kept, key=other.key, secret=other.secret)
        before = await value(other, "clarion_delivery_latency_seconds_count", app_id=app)
        for channel in (plain, kept):
            status, _ = await publisher.trigger(channel)
            assert status == 200
            await sock.expect("e", channel)
        await settles_at(other, "clarion_delivery_latency_seconds_count", before + 2, app_id=app)
        assert await value(other, "clarion_delivery_latency_seconds_bucket", app_id=app, le="2.5") == before + 2
        assert await value(publisher, "clarion_delivery_latency_seconds_count", app_id=app) == 0  # no socket there
