"""The official ``pusher`` Python SDK (pusher-http-python 3.3.4) against Clarion's HTTP API.

Channels are occupied by real pusher-js clients. Where the SDK itself refuses a request before
sending it, the same request is sent raw, signed by the SDK's own ``Request``, to check what the
server answers.
"""

from __future__ import annotations

from typing import Any

import aiohttp
import pusher
import pytest
from pusher.errors import PusherBadAuth, PusherBadRequest, PusherBadStatus
from pusher.http import POST, Request

from compat.nodeclient import eventually, sdk_call, unique

pytestmark = pytest.mark.compat


def wrong_secret_client(server) -> pusher.Pusher:
    return pusher.Pusher(
        app_id=server.app_id,
        key=server.key,
        secret="wrong-" + server.secret,
        host=server.host,
        port=server.port,
        ssl=False,
    )


async def send_signed(server, path: str, body: dict[str, Any]) -> tuple[int, str]:
    """POST ``body`` to ``path``, signed as the SDK signs, without the SDK's own checks."""
    request = Request(server.pusher()._pusher_client, POST, path, body)
    async with (
        aiohttp.ClientSession() as session,
        session.post(request.url, data=request.body, headers=request.headers) as response,
    ):
        return response.status, await response.text()


async def test_trigger_returns_empty_object(server) -> None:
    assert await sdk_call(server.pusher().trigger, unique("nobody-"), "evt", {"a": 1}) == {}


async def test_trigger_to_several_channels_returns_empty_object(server) -> None:
    channels = [unique("many-") for _ in range(3)]
    assert await sdk_call(server.pusher().trigger, channels, "evt", "x") == {}


async def test_trigger_batch_returns_empty_object(server) -> None:
    batch = [{"channel": unique("b-"), "name": f"e{i}", "data": {"i": i}} for i in range(3)]
    assert await sdk_call(server.pusher().trigger_batch, batch) == {}


async def test_channels_info_lists_occupied_channels_by_prefix(server, node_client) -> None:
    prefix = unique("listed-") + "-"
    a, b, other = prefix + "a", prefix + "b", unique("unlisted-")
    sdk = server.pusher()
    assert await sdk_call(sdk.channels_info, prefix_filter=prefix) == {"channels": {}}

    client = await node_client()
    await client.connect()
    for channel in (a, b, other):
        await client.subscribe(channel)

    assert await sdk_call(sdk.channels_info, prefix_filter=prefix) == {"channels": {a: {}, b: {}}}
    everything = await sdk_call(sdk.channels_info)
    assert {a, b, other} <= set(everything["channels"])

    counted = await sdk_call(sdk.channels_info, prefix_filter=prefix, attributes=["subscription_count"])
    assert counted == {"channels": {a: {"subscription_count": 1}, b: {"subscription_count": 1}}}

    await client.command("unsubscribe", channel=a)
    await eventually(lambda: sdk_call(sdk.channels_info, prefix_filter=prefix), lambda r: r == {"channels": {b: {}}})


async def test_channels_info_user_count_needs_presence_prefix(server) -> None:
    with pytest.raises(PusherBadRequest):
        await sdk_call(server.pusher().channels_info, prefix_filter="public-", attributes=["user_count"])


async def test_channel_info_subscription_count(server, node_client) -> None:
    channel = unique("counted-")
    sdk = server.pusher()
    empty = await sdk_call(sdk.channel_info, channel, ["subscription_count"])
    assert empty["occupied"] is False
    assert empty.get("subscription_count", 0) == 0

    clients = [await node_client(f"c{i}") for i in range(3)]
    for client in clients:
        await client.connect()
        await client.subscribe(channel)

    info = await sdk_call(sdk.channel_info, channel, ["subscription_count"])
    assert info == {"occupied": True, "subscription_count": 3}
    assert await sdk_call(sdk.channel_info, channel) == {"occupied": True}

    await clients[0].command("disconnect")
    await eventually(
        lambda: sdk_call(sdk.channel_info, channel, ["subscription_count"]),
        lambda r: r == {"occupied": True, "subscription_count": 2},
    )


async def test_channel_info_counts_private_channel_subscribers(server, node_client) -> None:
    channel = unique("private-counted-")
    client = await node_client()
    await client.connect()
    await client.subscribe(channel)

    info = await sdk_call(server.pusher().channel_info, channel, ["subscription_count"])
    assert info == {"occupied": True, "subscription_count": 1}


async def test_wrong_secret_is_refused_with_401(server) -> None:
    bad = wrong_secret_client(server)
    with pytest.raises(PusherBadAuth):
        await sdk_call(bad.trigger, unique("x-"), "evt", {})
    with pytest.raises(PusherBadAuth):
        await sdk_call(bad.trigger_batch, [{"channel": unique("x-"), "name": "evt", "data": {}}])
    with pytest.raises(PusherBadAuth):
        await sdk_call(bad.channels_info)
    with pytest.raises(PusherBadAuth):
        await sdk_call(bad.channel_info, unique("x-"))


async def test_wrong_secret_trigger_delivers_nothing(server, node_client) -> None:
    client = await node_client()
    await client.connect()
    channel = unique("guarded-")
    await client.subscribe(channel)

    with pytest.raises(PusherBadAuth):
        await sdk_call(wrong_secret_client(server).trigger, channel, "forged", {})
    await sdk_call(server.pusher().trigger, channel, "marker", {})

    await client.expect(type="event", channel=channel, event="marker")
    assert client.events(event="forged") == []


async def test_hundred_channels_accepted(server) -> None:
    channels = [unique(f"c{i}-") for i in range(100)]
    assert await sdk_call(server.pusher().trigger, channels, "evt", {}) == {}


async def test_more_than_hundred_channels_refused(server) -> None:
    channels = [unique(f"c{i}-") for i in range(101)]
    # The SDK refuses before sending...
    with pytest.raises(ValueError, match="Too many channels"):
        await sdk_call(server.pusher().trigger, channels, "evt", {})
    # ...and the server refuses the same request sent raw.
    status, body = await send_signed(
        server, f"/apps/{server.app_id}/events", {"name": "evt", "channels": channels, "data": "{}"}
    )
    assert status == 400, body


async def test_raw_signed_request_is_accepted(server) -> None:
    """The raw path used above works at all (so the 400 is about the channel count)."""
    status, body = await send_signed(
        server, f"/apps/{server.app_id}/events", {"name": "evt", "channels": [unique("raw-")], "data": "{}"}
    )
    assert (status, body) == (200, "{}")


async def test_batch_of_more_than_ten_events_refused(server) -> None:
    batch = [{"channel": unique("b-"), "name": "evt", "data": {}} for _ in range(11)]
    with pytest.raises(PusherBadRequest):
        await sdk_call(server.pusher().trigger_batch, batch)


async def test_data_over_ten_kilobytes_refused_with_413(server) -> None:
    with pytest.raises(PusherBadStatus, match=r"^413"):
        await sdk_call(server.pusher().trigger, unique("big-"), "evt", "x" * (10 * 1024 + 1))


async def test_data_of_ten_kilobytes_delivered(server, node_client) -> None:
    client = await node_client()
    await client.connect()
    channel = unique("big-")
    await client.subscribe(channel)
    data = "y" * (10 * 1024)

    assert await sdk_call(server.pusher().trigger, channel, "evt", data) == {}

    assert (await client.expect(type="event", channel=channel, event="evt"))["data"] == data
