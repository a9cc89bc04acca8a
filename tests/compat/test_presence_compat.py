"""Presence channels with the real clients: pusher-js' members and laravel-echo's here/joining/
leaving.

Members are authorized by the test back end (``AuthEndpoint``) with the official SDK's
``authenticate(channel, socket_id, custom_data)``; each client tells it who it is (``user``).
A user with two connections (two browser tabs) is one member: pusher-js must see member_added for
their first connection only and member_removed after their last.
"""

from __future__ import annotations

from typing import Any

import pytest

from compat.nodeclient import eventually, sdk_call, unique

pytestmark = pytest.mark.compat


def person(prefix: str, name: str) -> dict[str, Any]:
    user_id = unique(prefix)
    return {"id": user_id, "info": {"name": name, "id": user_id}}


def member(user: dict[str, Any]) -> dict[str, Any]:
    """A member as pusher-js reports it: {id, info}."""
    return {"id": user["id"], "info": user["info"]}


async def user_count(sdk, channel: str) -> dict[str, Any]:
    return await sdk_call(sdk.channel_info, channel, ["user_count", "subscription_count"])


async def test_subscription_lists_members_count_and_me(server, node_client, auth_endpoint) -> None:
    alice, bob = person("alice-", "Alice"), person("bob-", "Bob")
    a, b = await node_client("alice"), await node_client("bob")
    await a.connect(user=alice)
    b_socket = await b.connect(user=bob)
    channel = unique("presence-room-")

    first = await a.subscribe(channel)
    assert first["members"] == {"count": 1, "my_id": alice["id"], "me": member(alice), "list": [member(alice)]}

    second = await b.subscribe(channel)
    members = second["members"]
    assert members["count"] == 2
    assert members["my_id"] == bob["id"]
    assert members["me"] == member(bob)
    assert sorted(members["list"], key=lambda m: m["id"]) == sorted([member(alice), member(bob)], key=lambda m: m["id"])
    # pusher-js sent the channel_data the back end signed for bob's socket.
    [request] = [r for r in auth_endpoint.requests if r["channel_name"] == channel and r["socket_id"] == b_socket]
    assert request["form"]["user_id"] == bob["id"]

    added = await a.expect(type="member_added", channel=channel)
    assert added["member"] == member(bob)
    assert added["members"]["count"] == 2
    assert await user_count(server.pusher(), channel) == {"occupied": True, "user_count": 2, "subscription_count": 2}


async def test_second_connection_of_a_user_adds_and_removes_no_member(server, node_client) -> None:
    alice, bob = person("alice-", "Alice"), person("bob-", "Bob")
    a, tab1, tab2 = await node_client("alice"), await node_client("bob-tab1"), await node_client("bob-tab2")
    await a.connect(user=alice)
    await tab1.connect(user=bob)
    await tab2.connect(user=bob)
    channel = unique("presence-tabs-")
    sdk = server.pusher()

    await a.subscribe(channel)
    await tab1.subscribe(channel)
    assert (await a.expect(type="member_added", channel=channel))["member"] == member(bob)

    # Bob's second tab: one member still, and nobody is told bob joined again.
    joined = await tab2.subscribe(channel)
    assert joined["members"]["count"] == 2
    assert joined["members"]["me"] == member(bob)
    assert await user_count(sdk, channel) == {"occupied": True, "user_count": 2, "subscription_count": 3}
    await sdk_call(sdk.trigger, channel, "marker-1", {})
    await a.expect(type="event", channel=channel, event="marker-1")
    await tab1.expect(type="event", channel=channel, event="marker-1")
    assert len(a.observed(type="member_added", channel=channel)) == 1
    assert tab1.observed(type="member_added", channel=channel) == []

    # Bob closes one tab: still a member.
    await tab2.command("disconnect")
    await eventually(lambda: user_count(sdk, channel), lambda info: info["subscription_count"] == 2)
    await sdk_call(sdk.trigger, channel, "marker-2", {})
    await a.expect(type="event", channel=channel, event="marker-2")
    assert a.observed(type="member_removed", channel=channel) == []
    assert (await a.command("presence_state", channel=channel))["members"]["count"] == 2

    # And the other: now bob has left.
    await tab1.command("unsubscribe", channel=channel)
    removed = await a.expect(type="member_removed", channel=channel)
    assert removed["member"] == member(bob)
    assert removed["members"] == {"count": 1, "my_id": alice["id"], "me": member(alice), "list": [member(alice)]}
    assert await user_count(sdk, channel) == {"occupied": True, "user_count": 1, "subscription_count": 1}


async def test_member_removed_when_the_socket_closes(server, node_client) -> None:
    alice, bob = person("alice-", "Alice"), person("bob-", "Bob")
    a, b = await node_client("alice"), await node_client("bob")
    await a.connect(user=alice)
    await b.connect(user=bob)
    channel = unique("presence-closing-")
    await a.subscribe(channel)
    await b.subscribe(channel)
    await a.expect(type="member_added", channel=channel)

    await b.close()  # the process dies: no unsubscribe, the socket just goes

    removed = await a.expect(type="member_removed", channel=channel)
    assert removed["member"] == member(bob)
    assert removed["members"]["count"] == 1


async def test_numeric_user_id_is_matched_by_pusher_js(node_client) -> None:
    """Laravel back ends sign integer user ids; Pusher sends them back as strings and pusher-js
    still finds ``me`` among the members."""
    a = await node_client()
    await a.connect(user={"id": "4242", "info": {"name": "Numeric"}}, auth_params={"user_id_type": "int"})
    channel = unique("presence-numeric-")

    ok = await a.subscribe(channel)

    assert ok["members"]["count"] == 1
    assert ok["members"]["my_id"] == 4242  # pusher-js keeps the id from channel_data as it was
    assert ok["members"]["me"] == {"id": 4242, "info": {"name": "Numeric"}}
    assert ok["members"]["list"] == [{"id": "4242", "info": {"name": "Numeric"}}]


async def test_presence_identity_comes_from_signin_without_channel_data(server, node_client) -> None:
    """Pusher: a signed-in user's user_data identifies them in presence channels, so the auth
    response may omit channel_data (pusher-js >= 7.4 then waits for the sign-in and sends the
    subscribe without channel_data; pusher-js PR #625, Pusher's presence channel docs)."""
    alice, bob = person("alice-", "Alice"), person("bob-", "Bob")
    a, b = await node_client("alice"), await node_client("bob")
    await a.connect(user=alice)
    await b.connect(user=bob, auth_params={"channel_data": "none"}, raw=True)
    channel = unique("presence-signed-")
    await a.subscribe(channel)
    await b.signin()

    await b.command("subscribe", channel=channel)

    outcome = await b.expect(lambda o: o["type"] in ("subscription_succeeded", "subscription_error"), channel=channel)
    answer = await b.expect(type="message", channel=channel)
    assert outcome["type"] == "subscription_succeeded", (
        f"a signed-in user's presence subscription without channel_data was refused: {outcome}\n"
        f"server frame: {answer}\n{b.report()}"
    )
    assert outcome["members"]["me"] == member(bob)
    added = await a.expect(type="member_added", channel=channel)
    assert added["member"] == member(bob)


async def test_laravel_echo_here_joining_leaving(node_client) -> None:
    ann = {"id": "7", "info": {"id": 7, "name": "Ann"}}
    ben = {"id": "8", "info": {"id": 8, "name": "Ben"}}
    a, b = await node_client("echo-ann"), await node_client("echo-ben")
    # As a Laravel app signs them: integer ids, the user model as user_info.
    await a.echo_connect(user=ann, auth_params={"user_id_type": "int"})
    await b.echo_connect(user=ben, auth_params={"user_id_type": "int"})
    room = unique("chat.")
    channel = "presence-" + room

    ack = await a.command("echo_join", channel=room)
    assert ack["channel"] == channel
    here = await a.expect(type="echo_here", channel=channel)
    assert here["users"] == [ann["info"]]

    await b.command("echo_join", channel=room)
    here = await b.expect(type="echo_here", channel=channel)
    assert sorted(here["users"], key=lambda u: u["id"]) == [ann["info"], ben["info"]]
    joining = await a.expect(type="echo_joining", channel=channel)
    assert joining["user"] == ben["info"]

    await b.command("echo_leave", channel=room)
    leaving = await a.expect(type="echo_leaving", channel=channel)
    assert leaving["user"] == ben["info"]
    assert a.observed(type="echo_joining", channel=channel) == [joining]
