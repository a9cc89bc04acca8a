"""User sign-in with pusher-js (``pusher.signin()``), and what the official SDK does with users:
``send_to_user``, ``terminate_user_connections``, and watchlist events.

pusher-js asks the back end's user-auth endpoint (``AuthEndpoint``, answering with the SDK's
``authenticate_user``), sends ``pusher:signin``, and on ``pusher:signin_success`` subscribes
``#server-to-user-<id>`` by itself; events sent to the user reach ``pusher.user.bind``. User ids
are app-wide (and the server is shared by the module), so every test makes its own.
"""

from __future__ import annotations

import json
from typing import Any

import pytest

from compat.nodeclient import eventually, sdk_call, unique

pytestmark = pytest.mark.compat


async def signed_in(node_client, user: dict[str, Any], label: str, *, raw: bool = False, bind: tuple[str, ...] = ()):
    client = await node_client(label)
    await client.connect(user=user, raw=raw)
    for event in bind:
        await client.command("user_bind", event=event)
    await client.signin()
    return client


async def test_signin_succeeds_and_subscribes_the_user_channel(node_client, auth_endpoint) -> None:
    user = {"id": unique("alice-"), "info": {"name": "Alice"}}
    client = await node_client()
    socket_id = await client.connect(user=user, raw=True)

    success = await client.signin()

    assert success["user_data"] == {"id": user["id"], "user_info": {"name": "Alice"}}
    assert success["channel"] == f"#server-to-user-{user['id']}"
    done = await client.expect(type="signin_done")
    assert done["signed_in"] is True
    state = await client.command("user_state")
    assert state["user_data"] == success["user_data"]
    assert state["server_to_user"] == {"name": success["channel"], "subscribed": True}
    # On the wire: signin_success carries the user_data string the back end signed.
    frame = await client.expect(type="message", event="pusher:signin_success")
    signed = [r for r in auth_endpoint.requests if r["path"] == "/user-auth" and r["socket_id"] == socket_id]
    assert len(signed) == 1 and signed[0]["content_type"] == "application/x-www-form-urlencoded"
    assert json.loads(frame["data"]["user_data"]) == success["user_data"]
    assert client.errors() == []


async def test_send_to_user_reaches_that_users_connections_only(server, node_client) -> None:
    alice, bob = {"id": unique("alice-")}, {"id": unique("bob-")}
    alice_tab1 = await signed_in(node_client, alice, "alice-tab1", bind=("notice",))
    alice_tab2 = await signed_in(node_client, alice, "alice-tab2", bind=("notice",))
    bob_client = await signed_in(node_client, bob, "bob", bind=("notice",))
    sdk = server.pusher()

    await sdk_call(sdk.send_to_user, bob["id"], "notice", {"to": "bob"})
    await sdk_call(sdk.send_to_user, alice["id"], "notice", {"to": "alice"})

    for client in (alice_tab1, alice_tab2):
        obs = await client.expect(type="user_event", event="notice", via="bind")
        assert obs["data"] == {"to": "alice"}
        # Bob's event went out first: had it reached alice, it would be here by now.
        assert [o["data"] for o in client.observed(type="user_event", via="bind")] == [{"to": "alice"}]
    obs = await bob_client.expect(type="user_event", event="notice", via="bind")
    assert obs["data"] == {"to": "bob"}
    # User events are not channel events for the app.
    assert alice_tab1.events() == []


async def test_terminate_user_connections_disconnects_that_user_only(server, node_client) -> None:
    alice, bob = {"id": unique("alice-")}, {"id": unique("bob-")}
    alice_tab1 = await signed_in(node_client, alice, "alice-tab1")
    alice_tab2 = await signed_in(node_client, alice, "alice-tab2")
    bob_client = await signed_in(node_client, bob, "bob", bind=("still-here",))
    sdk = server.pusher()

    assert await sdk_call(sdk.terminate_user_connections, alice["id"]) == {}

    for client in (alice_tab1, alice_tab2):
        error = await client.expect(type="connection_error")
        assert error["error"]["data"]["code"] == 4009, error
        # 4009 is in pusher-js' "refused" range: it gives up instead of reconnecting.
        await client.expect(type="state", previous="connected", current="disconnected")
        assert await client.state() == "disconnected"
    await sdk_call(sdk.send_to_user, bob["id"], "still-here", {})
    await bob_client.expect(type="user_event", event="still-here", via="bind")
    assert bob_client.errors() == []
    assert bob_client.observed(type="state", previous="connected") == []
    assert await bob_client.state() == "connected"


async def test_watchlist_online_and_offline(server, node_client) -> None:
    watched, early, watcher = unique("alice-"), unique("carol-"), unique("watcher-")
    # Carol is online before the watcher signs in, alice is not.
    await signed_in(node_client, {"id": early}, "carol")
    client = await node_client("watcher")
    await client.connect(user={"id": watcher, "watchlist": [watched, early]})
    await client.command("watchlist_bind", event="online")
    await client.command("watchlist_bind", event="offline")
    await client.command("user_bind", event="marker")

    await client.signin()

    online = await client.expect(type="watchlist_event", event="online", via="bind")
    offline = await client.expect(type="watchlist_event", event="offline", via="bind")
    assert online["user_ids"] == [early]
    assert offline["user_ids"] == [watched]

    # Alice connects and signs in: she is online.
    alice = await signed_in(node_client, {"id": watched}, "alice-tab1")
    came = await client.expect(type="watchlist_event", event="online", via="bind")
    assert came["user_ids"] == [watched]

    # A second connection of hers changes nothing for the watcher.
    alice_tab2 = await signed_in(node_client, {"id": watched}, "alice-tab2")
    sdk = server.pusher()
    await sdk_call(sdk.send_to_user, watcher, "marker", {"n": 1})
    await client.expect(type="user_event", event="marker", via="bind")
    assert len(client.observed(type="watchlist_event", via="bind")) == 3

    # Her first connection goes: she is still online through the second. (The server has dropped
    # the socket once the channel it was alone on is vacated.)
    proof = unique("alice-tab1-")
    await alice.subscribe(proof)
    await alice.command("disconnect")
    await eventually(lambda: sdk_call(sdk.channel_info, proof), lambda info: info["occupied"] is False)
    await sdk_call(sdk.send_to_user, watcher, "marker", {"n": 2})
    await client.expect(type="user_event", event="marker", via="bind")
    assert len(client.observed(type="watchlist_event", via="bind")) == 3

    # Then the second goes too: offline.
    await alice_tab2.command("disconnect")
    gone = await client.expect(type="watchlist_event", event="offline", via="bind")
    assert gone["user_ids"] == [watched]


async def test_forged_signin_is_refused_with_4009_and_the_connection_stays(server, node_client) -> None:
    user_id = unique("forged-")  # the back end signs this one with a wrong secret
    client = await node_client()
    socket_id = await client.connect(user={"id": user_id}, raw=True)
    await client.command("user_bind", event="secret")

    await client.command("signin")

    error = await client.expect(type="connection_error")
    assert error["error"]["data"]["code"] == 4009, error
    state = await client.command("user_state")
    assert state["user_data"] is None
    assert state["server_to_user"] is None
    # Still connected, same socket, and working.
    channel = unique("after-forged-")
    await client.subscribe(channel)
    sdk = server.pusher()
    await sdk_call(sdk.send_to_user, user_id, "secret", {"leak": True})
    await sdk_call(sdk.trigger, channel, "marker", {})
    await client.expect(type="event", channel=channel, event="marker")
    assert client.observed(type="user_event") == []
    assert client.observed(type="message", event="pusher:signin_success") == []
    assert client.observed(type="signin_success") == []
    assert client.observed(type="state", previous="connected") == []
    assert client.socket_id == socket_id and await client.state() == "connected"


async def test_user_channel_is_refused_to_a_socket_not_signed_in_as_that_user(server, node_client) -> None:
    bob = unique("bob-")
    await signed_in(node_client, {"id": bob}, "bob")
    mallory = await node_client("mallory")
    await mallory.connect(user={"id": unique("mallory-")}, raw=True)
    await mallory.signin()
    user_channel = f"#server-to-user-{bob}"

    # pusher-js refuses '#' channel names in subscribe(): the frame goes raw.
    await mallory.command("send_event", event="pusher:subscribe", data={"channel": user_channel})

    refusal = await mallory.expect(type="message", channel=user_channel)
    assert refusal["event"] == "pusher:subscription_error", refusal
    marker = unique("marker-")
    await mallory.subscribe(marker)
    await sdk_call(server.pusher().send_to_user, bob, "for-bob", {"secret": True})
    await sdk_call(server.pusher().trigger, marker, "marker", {})
    await mallory.expect(type="event", channel=marker, event="marker")
    assert mallory.observed(type="message", event="for-bob") == []
