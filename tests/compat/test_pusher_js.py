"""pusher-js 8.6.0 (its Node build, WebSocket transport only) against Clarion.

Events are triggered with the official ``pusher`` Python SDK; private channels are authorized
through a real HTTP auth endpoint that signs with that SDK. Where a test asserts that something
did NOT arrive, it first waits for a later marker event on the same socket: frames on one socket
are delivered in order, so the marker proves the earlier event had its chance.
"""

from __future__ import annotations

import json
import re

import pytest

from compat.nodeclient import eventually, sdk_call, unique

pytestmark = pytest.mark.compat

PAYLOAD = {
    "order": 1234,
    "price": 12.5,
    "tags": ["a", "b"],
    "nested": {"ok": True, "nothing": None},
    "text": 'héllo \u2713 "quoted" \\ back',
}


async def test_connects_and_gets_a_socket_id(node_client) -> None:
    client = await node_client()
    socket_id = await client.connect()
    assert re.fullmatch(r"\d+\.\d+", socket_id), socket_id
    state = await client.expect(type="state", current="connected")
    assert state["previous"] == "connecting"
    assert await client.state() == "connected"


async def test_two_clients_get_distinct_socket_ids(node_client) -> None:
    a, b = await node_client("a"), await node_client("b")
    assert await a.connect() != await b.connect()


async def test_public_channel_receives_sdk_trigger_with_parsed_data(server, node_client) -> None:
    client = await node_client()
    await client.connect()
    channel = unique("orders-")
    await client.subscribe(channel)

    result = await sdk_call(server.pusher().trigger, channel, "order.placed", PAYLOAD)

    assert result == {}
    obs = await client.expect(type="event", channel=channel, event="order.placed")
    assert obs["data"] == PAYLOAD


async def test_plain_string_data_arrives_as_the_same_string(server, node_client) -> None:
    client = await node_client()
    await client.connect()
    channel = unique("strings-")
    await client.subscribe(channel)

    await sdk_call(server.pusher().trigger, channel, "note", "just text, not JSON")

    obs = await client.expect(type="event", channel=channel, event="note")
    assert obs["data"] == "just text, not JSON"


async def test_explicit_bind_receives_the_event(server, node_client) -> None:
    client = await node_client()
    await client.connect()
    channel = unique("bound-")
    await client.subscribe(channel)
    await client.command("bind", channel=channel, event="bound-event")

    await sdk_call(server.pusher().trigger, channel, "bound-event", {"n": 1})

    obs = await client.expect(type="event", channel=channel, event="bound-event", via="bind")
    assert obs["data"] == {"n": 1}


async def test_one_trigger_to_several_channels_reaches_each(server, node_client) -> None:
    client = await node_client()
    await client.connect()
    channels = [unique("multi-a-"), unique("multi-b-"), unique("multi-c-")]
    for channel in channels:
        await client.subscribe(channel)

    await sdk_call(server.pusher().trigger, channels, "fanout", {"to": "all"})

    for channel in channels:
        obs = await client.expect(type="event", channel=channel, event="fanout")
        assert obs["data"] == {"to": "all"}
    assert len(client.events(event="fanout")) == 3


async def test_events_from_one_sdk_client_arrive_in_order(server, node_client) -> None:
    client = await node_client()
    await client.connect()
    channel = unique("ordered-")
    await client.subscribe(channel)
    sdk = server.pusher()

    for n in range(10):
        await sdk_call(sdk.trigger, channel, "tick", {"n": n})

    for n in range(10):
        obs = await client.expect(type="event", channel=channel, event="tick")
        assert obs["data"] == {"n": n}


async def test_unsubscribed_channel_receives_nothing_more(server, node_client) -> None:
    client = await node_client()
    await client.connect()
    gone, kept = unique("gone-"), unique("kept-")
    await client.subscribe(gone)
    await client.subscribe(kept)
    await client.command("unsubscribe", channel=gone)
    sdk = server.pusher()

    # The unsubscribe has no acknowledgement: wait until the server no longer counts it.
    await eventually(lambda: sdk_call(sdk.channel_info, gone), lambda info: info["occupied"] is False)
    await sdk_call(sdk.trigger, gone, "after-unsubscribe", {})
    await sdk_call(sdk.trigger, kept, "marker", {})

    await client.expect(type="event", channel=kept, event="marker")
    assert client.events(channel=gone) == []


async def test_private_channel_is_authorized_through_the_endpoint(server, node_client, auth_endpoint) -> None:
    client = await node_client()
    socket_id = await client.connect()
    channel = unique("private-orders-")
    await client.subscribe(channel)

    # pusher-js asked the endpoint exactly as a browser would.
    [request] = [r for r in auth_endpoint.requests if r["channel_name"] == channel]
    assert request["content_type"] == "application/x-www-form-urlencoded"
    assert request["socket_id"] == socket_id

    await sdk_call(server.pusher().trigger, channel, "secret-thing", PAYLOAD)
    obs = await client.expect(type="event", channel=channel, event="secret-thing")
    assert obs["data"] == PAYLOAD


async def test_trigger_batch_events_arrive(server, node_client) -> None:
    client = await node_client()
    await client.connect()
    public, private = unique("batch-"), unique("private-batch-")
    await client.subscribe(public)
    await client.subscribe(private)

    result = await sdk_call(
        server.pusher().trigger_batch,
        [
            {"channel": public, "name": "first", "data": {"n": 1}},
            {"channel": private, "name": "second", "data": {"n": 2}},
            {"channel": public, "name": "third", "data": "plain"},
        ],
    )

    assert result == {}
    assert (await client.expect(type="event", channel=public, event="first"))["data"] == {"n": 1}
    assert (await client.expect(type="event", channel=private, event="second"))["data"] == {"n": 2}
    assert (await client.expect(type="event", channel=public, event="third"))["data"] == "plain"


async def test_forged_signature_is_refused_and_the_socket_stays_usable(server, node_client) -> None:
    client = await node_client()
    socket_id = await client.connect(raw=True)
    forged, fine = unique("private-forged-"), unique("fine-")

    await client.command("subscribe", channel=forged)
    error = await client.expect(type="subscription_error", channel=forged)
    assert error["data"]["type"] == "AuthError", error
    assert error["data"]["status"] == 401, error
    assert isinstance(error["data"]["error"], str) and error["data"]["error"], error
    assert client.observed(type="subscription_succeeded", channel=forged) == []

    # Still connected, same socket, and other channels still work.
    await client.subscribe(fine)
    assert await client.state() == "connected"
    sdk = server.pusher()
    await sdk_call(sdk.trigger, forged, "should-not-arrive", {"leak": True})
    await sdk_call(sdk.trigger, fine, "marker", {"ok": True})

    assert (await client.expect(type="event", channel=fine, event="marker"))["data"] == {"ok": True}
    assert client.events(channel=forged) == []
    assert client.observed(type="message", channel=forged, event="should-not-arrive") == []
    assert client.observed(type="state", previous="connected") == []
    assert client.socket_id == socket_id
    assert (await sdk_call(sdk.channel_info, forged))["occupied"] is False


async def test_socket_id_excludes_that_client_only(server, node_client) -> None:
    sender, other = await node_client("sender"), await node_client("other")
    sender_id = await sender.connect()
    await other.connect()
    channel = unique("exclusion-")
    await sender.subscribe(channel)
    await other.subscribe(channel)
    sdk = server.pusher()

    await sdk_call(sdk.trigger, channel, "echo-suppressed", {"from": sender_id}, socket_id=sender_id)
    await sdk_call(sdk.trigger, channel, "marker", {})

    obs = await other.expect(type="event", channel=channel, event="echo-suppressed")
    assert obs["data"] == {"from": sender_id}
    await other.expect(type="event", channel=channel, event="marker")
    await sender.expect(type="event", channel=channel, event="marker")
    assert sender.events(event="echo-suppressed") == []


async def test_socket_id_exclusion_in_trigger_batch(server, node_client) -> None:
    sender, other = await node_client("sender"), await node_client("other")
    sender_id = await sender.connect()
    await other.connect()
    channel = unique("batch-exclusion-")
    await sender.subscribe(channel)
    await other.subscribe(channel)

    await sdk_call(
        server.pusher().trigger_batch,
        [
            {"channel": channel, "name": "excluded", "data": {}, "socket_id": sender_id},
            {"channel": channel, "name": "marker", "data": {}},
        ],
    )

    await other.expect(type="event", channel=channel, event="excluded")
    await other.expect(type="event", channel=channel, event="marker")
    await sender.expect(type="event", channel=channel, event="marker")
    assert sender.events(event="excluded") == []


async def test_private_encrypted_channel_subscribes_and_decrypts(node_client, auth_endpoint) -> None:
    client = await node_client()
    await client.connect(raw=True)
    channel = unique("private-encrypted-vault-")
    await client.subscribe(channel)

    # The SDK holding the master key encrypts; the server only relays the ciphertext.
    await sdk_call(auth_endpoint.sdk.trigger, channel, "sealed", PAYLOAD)

    obs = await client.expect(type="event", channel=channel, event="sealed")
    assert obs["data"] == PAYLOAD
    frame = await client.expect(type="message", channel=channel, event="sealed")
    wire = frame["data"] if isinstance(frame["data"], dict) else json.loads(frame["data"])
    assert set(wire) == {"nonce", "ciphertext"}, frame


async def test_private_encrypted_channel_with_forged_auth_is_refused(server, node_client) -> None:
    client = await node_client()
    await client.connect()
    channel = unique("private-encrypted-forged-")

    await client.command("subscribe", channel=channel)

    error = await client.expect(type="subscription_error", channel=channel)
    assert error["data"]["status"] == 401, error
    assert await client.state() == "connected"


async def test_disconnect_reaches_disconnected_state(server, node_client) -> None:
    client = await node_client()
    await client.connect()
    channel = unique("leaving-")
    await client.subscribe(channel)
    sdk = server.pusher()
    assert (await sdk_call(sdk.channel_info, channel))["occupied"] is True

    await client.command("disconnect")

    await client.expect(type="state", previous="connected", current="disconnected")
    await eventually(lambda: sdk_call(sdk.channel_info, channel), lambda info: info["occupied"] is False)
