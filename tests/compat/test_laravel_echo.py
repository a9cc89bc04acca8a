"""laravel-echo 2.5.0 (broadcaster 'pusher', on pusher-js 8.6.0) against Clarion.

Configured as a Laravel app would point Echo at a self-hosted Pusher-compatible server: wsHost and
wsPort, forceTLS false, enabledTransports ['ws'], any cluster, and an authEndpoint.
"""

from __future__ import annotations

import pytest

from compat.nodeclient import eventually, sdk_call, unique

pytestmark = pytest.mark.compat


async def test_public_channel_listen_receives_sdk_event(server, node_client) -> None:
    client = await node_client("echo")
    await client.echo_connect()

    ack = await client.command("echo_listen", kind="channel", channel="orders", event=".order.shipped")
    assert ack["channel"] == "orders"
    await client.subscribed("orders")
    await sdk_call(server.pusher().trigger, "orders", "order.shipped", {"order_id": 7, "carrier": "DHL"})

    obs = await client.expect(type="event", channel="orders", event=".order.shipped")
    assert obs["data"] == {"order_id": 7, "carrier": "DHL"}


async def test_namespaced_event_name_with_backslashes(server, node_client) -> None:
    """Without the leading dot Echo listens for 'App\\Events\\OrderShipped', as Laravel names it."""
    client = await node_client("echo")
    await client.echo_connect()
    channel = unique("orders-ns-")

    await client.command("echo_listen", kind="channel", channel=channel, event="OrderShipped")
    await client.subscribed(channel)
    await sdk_call(server.pusher().trigger, channel, "App\\Events\\OrderShipped", {"id": 1})

    obs = await client.expect(type="event", channel=channel, event="OrderShipped")
    assert obs["data"] == {"id": 1}


async def test_private_channel_is_prefixed_authorized_and_receives(server, node_client, auth_endpoint) -> None:
    client = await node_client("echo")
    socket_id = await client.echo_connect()

    ack = await client.command("echo_listen", kind="private", channel="user.1", event=".balance.updated")
    assert ack["channel"] == "private-user.1"
    await client.subscribed("private-user.1")
    assert any(r["channel_name"] == "private-user.1" and r["socket_id"] == socket_id for r in auth_endpoint.requests), (
        auth_endpoint.requests
    )
    await sdk_call(server.pusher().trigger, "private-user.1", "balance.updated", {"balance": 42})

    obs = await client.expect(type="event", channel="private-user.1", event=".balance.updated")
    assert obs["data"] == {"balance": 42}
    assert client.observed(type="subscription_error") == []


async def test_forged_private_channel_calls_the_error_callback(server, node_client) -> None:
    client = await node_client("echo")
    await client.echo_connect()
    name = unique("forged.")
    channel = "private-" + name
    good = unique("still-fine-")

    await client.command("echo_listen", kind="private", channel=name, event=".anything")

    error = await client.expect(type="subscription_error", channel=channel, client="echo")
    assert error["data"]["type"] == "AuthError", error
    assert error["data"]["status"] == 401, error
    # The connection survives the refusal and keeps delivering on other channels.
    await client.command("echo_listen", kind="channel", channel=good, event=".ping")
    await client.subscribed(good)
    sdk = server.pusher()
    await sdk_call(sdk.trigger, channel, "anything", {"leak": True})
    await sdk_call(sdk.trigger, good, "ping", {})
    await client.expect(type="event", channel=good, event=".ping")
    assert client.events(channel=channel) == []
    assert await client.state() == "connected"


async def test_encrypted_private_channel_decrypts(node_client, auth_endpoint) -> None:
    client = await node_client("echo")
    await client.echo_connect()
    name = unique("vault.")
    channel = "private-encrypted-" + name

    await client.command("echo_listen", kind="encryptedPrivate", channel=name, event=".sealed")
    await client.subscribed(channel)
    await sdk_call(auth_endpoint.sdk.trigger, channel, "sealed", {"secret": "s3cr3t"})

    obs = await client.expect(type="event", channel=channel, event=".sealed")
    assert obs["data"] == {"secret": "s3cr3t"}


async def test_leave_stops_delivery(server, node_client) -> None:
    client = await node_client("echo")
    await client.echo_connect()
    left, kept = unique("left-"), unique("kept-")
    await client.command("echo_listen", kind="channel", channel=left, event=".news")
    await client.command("echo_listen", kind="channel", channel=kept, event=".news")
    await client.subscribed(left)
    await client.subscribed(kept)
    sdk = server.pusher()

    await client.command("echo_leave", channel=left)
    await eventually(lambda: sdk_call(sdk.channel_info, left), lambda info: info["occupied"] is False)
    await sdk_call(sdk.trigger, left, "news", {"n": 1})
    await sdk_call(sdk.trigger, kept, "news", {"n": 2})

    assert (await client.expect(type="event", channel=kept, event=".news"))["data"] == {"n": 2}
    assert client.events(channel=left) == []
