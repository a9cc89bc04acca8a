"""Cache channels (last event replayed, cache_miss, TTL, ``info=cache``) and subscription counts
(``pusher_internal:subscription_count``, off by default, never on presence, throttled when busy).

Where a socket must NOT get something, a marker event is triggered through the HTTP API and must
be the socket's next frame.
"""

from __future__ import annotations

import asyncio
import itertools
import time
from typing import Any

import pytest

from pusherclient import PusherSocket, api_call, fresh, payload, wait_for

CACHE_PREFIXES = ["cache-", "private-cache-", "private-encrypted-cache-", "presence-cache-"]


async def subscribe(sock: PusherSocket, server: Any, channel: str, user_id: str = "") -> None:
    """Subscribe, signed as an auth endpoint would for private/encrypted/presence channels."""
    channel_data = {"user_id": user_id or f"user-{sock.socket_id}"} if channel.startswith("presence-") else None
    needs_auth = channel.startswith(("private-", "presence-"))
    answer = await sock.subscribe(
        channel,
        key=server.key if needs_auth else None,
        secret=server.secret if needs_auth else None,
        channel_data=channel_data,
    )
    assert answer["event"] == "pusher_internal:subscription_succeeded", answer
    assert answer["channel"] == channel, answer


async def trigger(server: Any, channel: str, name: str = "marker", data: str = "{}") -> None:
    assert await server.trigger(channel, name, data) == (200, {})


async def next_is_marker(server: Any, sock: PusherSocket, channel: str, *more: PusherSocket) -> None:
    """Trigger a marker on ``channel``; it must be each socket's next frame (nothing came before it)."""
    await trigger(server, channel)
    for each in (sock, *more):
        frame = await each.recv()
        assert frame == {"event": "marker", "channel": channel, "data": "{}"}, frame


async def channel_state(server: Any, channel: str, **query: str) -> dict[str, Any]:
    status, answer = await api_call(
        server.http_url, server.key, server.secret, "GET", f"/apps/{server.app_id}/channels/{channel}", **query
    )
    assert status == 200, answer
    assert isinstance(answer, dict), answer
    return answer


# --- cache channels ----------------------------------------------------------------------------


@pytest.mark.parametrize("prefix", CACHE_PREFIXES)
async def test_empty_cache_channel_sends_cache_miss_after_subscription_succeeded(server, connect, prefix) -> None:
    channel = fresh(prefix)
    sock = await connect(server)
    await subscribe(sock, server, channel)
    miss = await sock.recv()
    assert miss["event"] == "pusher:cache_miss", miss
    assert miss["channel"] == channel, miss


@pytest.mark.parametrize("prefix", CACHE_PREFIXES)
async def test_cache_channel_replays_only_the_last_event_to_a_new_subscriber(server, connect, prefix) -> None:
    channel = fresh(prefix)
    await trigger(server, channel, "price", '{"v":1}')
    await trigger(server, channel, "price", '{"v":2}')
    sock = await connect(server)
    await subscribe(sock, server, channel)
    assert await sock.recv() == {"event": "price", "channel": channel, "data": '{"v":2}'}
    await next_is_marker(server, sock, channel)  # one replay, and only of the last event

    # A later event replaces it for the next newcomer.
    await trigger(server, channel, "price", '{"v":3}')
    assert await sock.recv() == {"event": "price", "channel": channel, "data": '{"v":3}'}
    late = await connect(server)
    await subscribe(late, server, channel)
    assert await late.recv() == {"event": "price", "channel": channel, "data": '{"v":3}'}


async def test_cache_replays_the_event_of_a_batch_trigger_too(server, connect) -> None:
    channel = fresh("cache-batch-")
    status, answer = await api_call(
        server.http_url,
        server.key,
        server.secret,
        "POST",
        f"/apps/{server.app_id}/batch_events",
        {"batch": [{"name": "b1", "channel": channel, "data": "1"}, {"name": "b2", "channel": channel, "data": "2"}]},
    )
    assert (status, answer) == (200, {})
    sock = await connect(server)
    await subscribe(sock, server, channel)
    assert await sock.recv() == {"event": "b2", "channel": channel, "data": "2"}


async def test_ordinary_channel_sends_no_cache_miss(server, connect) -> None:
    channel = fresh("plain-")
    sock = await connect(server)
    await trigger(server, channel, "before")
    await subscribe(sock, server, channel)
    await next_is_marker(server, sock, channel)


async def test_info_cache_reports_the_cached_data_and_its_ttl(server) -> None:
    channel = fresh("cache-prices-")
    assert await channel_state(server, channel, info="cache") == {"occupied": False}
    data = '{"eur":1.08}'
    await trigger(server, channel, "rate", data)
    state = await channel_state(server, channel, info="cache")
    assert set(state) == {"occupied", "cache"}, state
    assert state["occupied"] is False
    assert state["cache"]["data"] == data
    assert isinstance(state["cache"]["ttl"], int), state
    assert 1790 <= state["cache"]["ttl"] <= 1800, state  # Pusher: up to 30 minutes


async def test_cached_event_expires_after_the_ttl_and_cache_miss_comes_back(server_factory, connect) -> None:
    running = server_factory(env={"CLARION_CACHE_TTL": "1"})
    channel = fresh("cache-short-")
    await trigger(running, channel, "tick", '{"n":1}')
    state = await channel_state(running, channel, info="cache")
    assert state["cache"]["data"] == '{"n":1}'
    assert 0 <= state["cache"]["ttl"] <= 1, state

    first = await connect(running)
    await subscribe(first, running, channel)
    assert await first.recv() == {"event": "tick", "channel": channel, "data": '{"n":1}'}

    async def newcomer_misses() -> bool:
        sock = await connect(running)
        await subscribe(sock, running, channel)
        frame = await sock.recv()
        assert frame["channel"] == channel, frame
        if frame["event"] == "tick":
            return False
        assert frame["event"] == "pusher:cache_miss", frame
        return True

    await wait_for(newcomer_misses, timeout=5, interval=0.2)
    assert "cache" not in await channel_state(running, channel, info="cache")


# --- subscription counts -----------------------------------------------------------------------


async def expect_count(sock: PusherSocket, channel: str, count: int) -> None:
    frame = await sock.expect("pusher_internal:subscription_count", channel)
    assert payload(frame) == {"subscription_count": count}, frame


@pytest.mark.parametrize("prefix", ["counted-", "private-counted-", "cache-counted-"])
async def test_subscribers_get_the_subscription_count_on_join_and_leave(server_factory, connect, prefix) -> None:
    running = server_factory(env={"CLARION_SUBSCRIPTION_COUNT": "true"})
    channel = fresh(prefix)
    first, second, third = [await connect(running) for _ in range(3)]

    async def join(sock: PusherSocket) -> None:
        await subscribe(sock, running, channel)
        if prefix.startswith("cache-"):
            await sock.expect("pusher:cache_miss", channel)

    await join(first)
    await expect_count(first, channel, 1)
    await join(second)
    await expect_count(second, channel, 2)
    await expect_count(first, channel, 2)
    await join(third)
    for sock in (first, second, third):
        await expect_count(sock, channel, 3)

    await second.send("pusher:unsubscribe", {"channel": channel})
    await expect_count(first, channel, 2)
    await expect_count(third, channel, 2)
    await third.close()  # a dropped socket leaves too
    await expect_count(first, channel, 1)
    await next_is_marker(running, first, channel)


async def test_presence_channels_get_no_subscription_count(server_factory, connect) -> None:
    running = server_factory(env={"CLARION_SUBSCRIPTION_COUNT": "true"})
    channel = fresh("presence-counted-")
    first, second = await connect(running), await connect(running)
    await subscribe(first, running, channel, "ann")
    await subscribe(second, running, channel, "bob")
    await first.expect("pusher_internal:member_added", channel)
    await next_is_marker(running, first, channel, second)
    await second.send("pusher:unsubscribe", {"channel": channel})
    await first.expect("pusher_internal:member_removed", channel)
    await next_is_marker(running, first, channel)


async def test_subscription_count_is_not_sent_by_default(server, connect) -> None:
    channel = fresh("uncounted-")
    first, second = await connect(server), await connect(server)
    await subscribe(first, server, channel)
    await subscribe(second, server, channel)
    await second.send("pusher:unsubscribe", {"channel": channel})
    await next_is_marker(server, first, channel)


async def test_busy_channel_counts_are_throttled_to_one_per_5_seconds(server_factory, connect) -> None:
    """Over 100 subscribers, a count goes out at most every 5 s, and says the count at that time."""
    running = server_factory(env={"CLARION_SUBSCRIPTION_COUNT": "true"})
    channel = fresh("busy-")
    watcher = await connect(running)
    await subscribe(watcher, running, channel)
    seen: list[tuple[float, int]] = []

    async def read_counts() -> None:
        while True:
            frame = await watcher.recv(timeout=30)
            if frame["event"] == "pusher_internal:subscription_count":
                seen.append((time.monotonic(), payload(frame)["subscription_count"]))

    reader = asyncio.create_task(read_counts())
    try:
        others = await asyncio.gather(*(connect(running) for _ in range(104)))
        for sock in others:  # one at a time: each join is a separate change
            await subscribe(sock, running, channel)
        await wait_for(lambda: seen and seen[-1][1] == 105, timeout=8)

        for sock in others[:3]:
            await sock.send("pusher:unsubscribe", {"channel": channel})
        await wait_for(lambda: seen[-1][1] != 105, timeout=8)
        left_at = seen[-1][0]
        assert seen[-1][1] == 102, seen[-3:]  # the count when it was sent, not a stale one
    finally:
        reader.cancel()
        await asyncio.gather(reader, return_exceptions=True)

    quiet = [count for _, count in seen if count <= 100]
    # Below the threshold counts go out as they change: never going back to a stale value, up to
    # about 100. (A count is read when it is sent, so joins landing meanwhile may share one count
    # or see it twice; through Redis the read of the 100th may already say 101.)
    assert quiet == sorted(quiet) and quiet[0] <= 2 and 97 <= quiet[-1] <= 100, quiet
    assert len(quiet) >= 50, quiet  # not throttled below the threshold
    assert len(quiet) >= 50, quiet
    busy = [(at, count) for at, count in seen if count > 100]
    assert busy[-2][1] == 105 and busy[-1] == (left_at, 102), busy
    gaps = [later[0] - earlier[0] for earlier, later in itertools.pairwise(busy)]
    assert all(gap >= 4.5 for gap in gaps), (gaps, busy)
