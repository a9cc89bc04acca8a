"""Cache channels (``cache-``, ``private-cache-``, ``private-encrypted-cache-``,
``presence-cache-``) with the real clients.

Pusher keeps the last event triggered on a cache channel and sends it to each new subscriber
right after the subscription succeeds; with nothing cached the subscriber gets
``pusher:cache_miss`` on the channel instead. pusher-js hands both to the app like channel events
(``bind('pusher:cache_miss')``). Client events are never cached.

The server here runs with the defaults, so these tests also check that no subscription counts
are sent unless the app asks for them (see test_subscription_count_compat.py for when it does).
"""

from __future__ import annotations

import pytest

from compat.nodeclient import sdk_call, unique

pytestmark = pytest.mark.compat


async def channel_frames(client, channel: str, until: str) -> list[str]:
    """The events of every frame a raw client received on ``channel``, in order, up to the frame
    of event ``until`` (waited for: pusher-js reports a frame to the app before the raw copy)."""
    await client.expect(type="message", channel=channel, event=until)
    return [obs["event"] for obs in client.observed(type="message", channel=channel)]


async def test_nothing_cached_gives_cache_miss_after_subscription_succeeded(server, node_client) -> None:
    client = await node_client()
    await client.connect(raw=True)
    channel = unique("cache-empty-")

    await client.subscribe(channel)

    miss = await client.expect(type="cache_miss", channel=channel)
    assert miss["data"] in (None, {})
    await sdk_call(server.pusher().trigger, channel, "marker", {})
    await client.expect(type="event", channel=channel, event="marker")
    frames = await channel_frames(client, channel, "marker")
    assert frames == ["pusher_internal:subscription_succeeded", "pusher:cache_miss", "marker"]


async def test_last_event_is_replayed_first_to_a_new_subscriber(server, node_client) -> None:
    channel = unique("cache-prices-")
    first = await node_client("first")
    await first.connect()
    await first.subscribe(channel)
    await first.expect(type="cache_miss", channel=channel)
    sdk = server.pusher()

    await sdk_call(sdk.trigger, channel, "price", {"v": 1})
    await sdk_call(sdk.trigger, channel, "price", {"v": 2})
    await first.expect(type="event", channel=channel, event="price")
    await first.expect(type="event", channel=channel, event="price")

    second = await node_client("second")
    await second.connect(raw=True)
    await second.subscribe(channel)
    replayed = await second.expect(type="event", channel=channel, event="price")
    assert replayed["data"] == {"v": 2}  # the last one only

    await sdk_call(sdk.trigger, channel, "price", {"v": 3})
    assert (await second.expect(type="event", channel=channel, event="price"))["data"] == {"v": 3}
    await second.expect(type="message", channel=channel, event="price")
    frames = await channel_frames(second, channel, "price")
    assert frames == ["pusher_internal:subscription_succeeded", "price", "price"]
    assert second.observed(type="cache_miss") == []


async def test_event_triggered_while_nobody_listens_is_kept(server, node_client) -> None:
    channel = unique("cache-lonely-")
    await sdk_call(server.pusher().trigger, channel, "status", "all good")
    assert (await sdk_call(server.pusher().channel_info, channel))["occupied"] is False

    client = await node_client()
    await client.connect()
    await client.subscribe(channel)

    assert (await client.expect(type="event", channel=channel, event="status"))["data"] == "all good"


async def test_private_cache_channel_is_authorized_and_replays(server, node_client, auth_endpoint) -> None:
    channel = unique("private-cache-account-")
    await sdk_call(server.pusher().trigger, channel, "balance", {"eur": 10})
    client = await node_client()
    socket_id = await client.connect(raw=True)

    await client.subscribe(channel)

    assert (await client.expect(type="event", channel=channel, event="balance"))["data"] == {"eur": 10}
    assert any(r["channel_name"] == channel and r["socket_id"] == socket_id for r in auth_endpoint.requests)
    assert await channel_frames(client, channel, "balance") == ["pusher_internal:subscription_succeeded", "balance"]


async def test_private_cache_channel_miss(node_client) -> None:
    client = await node_client()
    await client.connect()
    channel = unique("private-cache-empty-")

    await client.subscribe(channel)

    await client.expect(type="cache_miss", channel=channel)


async def test_private_encrypted_cache_channel_replays_and_decrypts(node_client, auth_endpoint) -> None:
    channel = unique("private-encrypted-cache-vault-")
    await sdk_call(auth_endpoint.sdk.trigger, channel, "sealed", {"code": 1234})
    client = await node_client()
    await client.connect()

    await client.subscribe(channel)

    assert (await client.expect(type="event", channel=channel, event="sealed"))["data"] == {"code": 1234}


async def test_presence_cache_channel_replays_after_members(server, node_client) -> None:
    channel = unique("presence-cache-lobby-")
    await sdk_call(server.pusher().trigger, channel, "topic", {"t": "hello"})
    client = await node_client()
    await client.connect(user={"id": unique("u-")}, raw=True)

    ok = await client.subscribe(channel)

    assert ok["members"]["count"] == 1
    assert (await client.expect(type="event", channel=channel, event="topic"))["data"] == {"t": "hello"}
    assert await channel_frames(client, channel, "topic") == ["pusher_internal:subscription_succeeded", "topic"]


async def test_client_events_are_not_cached(server, node_client) -> None:
    channel = unique("private-cache-chat-")
    sender = await node_client("sender")
    await sender.connect()
    await sender.subscribe(channel)
    await sender.expect(type="cache_miss", channel=channel)
    await sender.command("trigger", channel=channel, event="client-typing", data={"x": 1})
    # The client event has been handled once a later frame of the same socket is answered.
    await sender.subscribe(unique("sync-"))

    late = await node_client("late")
    await late.connect()
    await late.subscribe(channel)

    await late.expect(type="cache_miss", channel=channel)
    assert late.events(channel=channel) == []
    assert sender.errors() == []


async def test_laravel_echo_listen_gets_the_replayed_event(server, node_client) -> None:
    channel = unique("cache-news-")
    await sdk_call(server.pusher().trigger, channel, "headline", {"title": "Cached"})
    client = await node_client("echo")
    await client.echo_connect()

    await client.command("echo_listen", kind="channel", channel=channel, event=".headline")

    obs = await client.expect(type="event", channel=channel, event=".headline")
    assert obs["data"] == {"title": "Cached"}


async def test_no_subscription_count_unless_the_app_enables_it(server, node_client) -> None:
    channel = unique("uncounted-")
    a, b = await node_client("a"), await node_client("b")
    await a.connect(raw=True)
    await b.connect(raw=True)
    await a.subscribe(channel)
    await b.subscribe(channel)

    await sdk_call(server.pusher().trigger, channel, "marker", {})

    await a.expect(type="event", channel=channel, event="marker")
    await b.expect(type="event", channel=channel, event="marker")
    assert a.observed(type="subscription_count") == [] and b.observed(type="subscription_count") == []
    assert a.observed(type="message", event="pusher_internal:subscription_count") == []
