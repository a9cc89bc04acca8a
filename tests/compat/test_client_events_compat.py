"""Client events (``client-*``) with the real clients: pusher-js ``channel.trigger`` and
laravel-echo ``whisper`` / ``listenForWhisper``.

Pusher relays them only on private and presence channels, only from subscribed sockets, never back
to the sender, with ``user_id`` added on presence channels, and at most 10 a second per
connection: beyond that the server answers ``pusher:error`` 4301 and keeps the connection.

What pusher-js itself refuses: event names without ``client-`` and any client event on a
``private-encrypted-`` channel (both throw before sending). A client event on a public channel it
sends, so there the server has to refuse it.
"""

from __future__ import annotations

import pytest

from compat.nodeclient import NodeClient, sdk_call, unique

pytestmark = pytest.mark.compat

RATE_LIMIT = 10  # Pusher: "no more than 10 messages per second per client (connection)"


async def pair(node_client, channel: str, **connect) -> tuple[NodeClient, NodeClient]:
    sender, receiver = await node_client("sender"), await node_client("receiver")
    await sender.connect(**connect.get("sender", {}))
    await receiver.connect(**connect.get("receiver", {}))
    await sender.subscribe(channel)
    await receiver.subscribe(channel)
    return sender, receiver


async def test_private_client_event_reaches_others_not_the_sender(server, node_client) -> None:
    channel = unique("private-chat-")
    sender, receiver = await pair(node_client, channel)
    await receiver.command("bind", channel=channel, event="client-typing")

    ack = await sender.command("trigger", channel=channel, event="client-typing", data={"text": "hé", "n": [1, 2]})
    assert ack["sent"] is True

    obs = await receiver.expect(type="event", channel=channel, event="client-typing", via="bind")
    assert obs["data"] == {"text": "hé", "n": [1, 2]}
    assert obs["metadata"] == {}  # no user_id outside presence channels
    await sdk_call(server.pusher().trigger, channel, "marker", {})
    await sender.expect(type="event", channel=channel, event="marker")
    assert sender.events(event="client-typing") == []
    assert sender.errors() == []


async def test_presence_client_event_carries_the_senders_user_id(server, node_client) -> None:
    channel = unique("presence-chat-")
    alice, bob = unique("alice-"), unique("bob-")
    sender, receiver = await pair(
        node_client, channel, sender={"user": {"id": alice}}, receiver={"user": {"id": bob}, "raw": True}
    )
    await receiver.command("bind", channel=channel, event="client-said")

    await sender.command("trigger", channel=channel, event="client-said", data={"text": "hi"})

    # pusher-js hands bind() callbacks the user_id as a second argument: {user_id}.
    obs = await receiver.expect(type="event", channel=channel, event="client-said", via="bind")
    assert obs["data"] == {"text": "hi"}
    assert obs["metadata"] == {"user_id": alice}
    frame = await receiver.expect(type="message", channel=channel, event="client-said")
    assert frame["user_id"] == alice
    await sdk_call(server.pusher().trigger, channel, "marker", {})
    await sender.expect(type="event", channel=channel, event="marker")
    assert sender.events(event="client-said") == []


async def test_laravel_echo_whisper_on_a_private_channel(server, node_client) -> None:
    name = unique("chat.")
    channel = "private-" + name
    talker, listener = await node_client("echo-talker"), await node_client("echo-listener")
    await talker.echo_connect()
    await listener.echo_connect()
    await talker.command("echo_listen_whisper", kind="private", channel=name, event="typing")
    await talker.command("echo_listen", kind="private", channel=name, event=".marker")
    ack = await listener.command("echo_listen_whisper", kind="private", channel=name, event="typing")
    assert ack["channel"] == channel
    await talker.subscribed(channel)
    await listener.subscribed(channel)

    await talker.command("echo_whisper", kind="private", channel=name, event="typing", data={"name": "Ann"})

    obs = await listener.expect(type="whisper", channel=channel, event="typing")
    assert obs["data"] == {"name": "Ann"}
    await sdk_call(server.pusher().trigger, channel, "marker", {})
    await talker.expect(type="event", channel=channel, event=".marker")
    assert talker.observed(type="whisper") == []


async def test_laravel_echo_whisper_on_a_presence_channel_has_the_user_id(server, node_client) -> None:
    room = unique("room.")
    channel = "presence-" + room
    talker, listener = await node_client("echo-talker"), await node_client("echo-listener")
    await talker.echo_connect(user={"id": "11", "info": {"id": 11}}, auth_params={"user_id_type": "int"})
    await listener.echo_connect(user={"id": "12", "info": {"id": 12}}, auth_params={"user_id_type": "int"})
    await talker.command("echo_join", channel=room)
    await listener.command("echo_join", channel=room)
    await listener.command("echo_listen_whisper", kind="join", channel=room, event="typing")
    await talker.expect(type="echo_here", channel=channel)
    await listener.expect(type="echo_here", channel=channel)

    await talker.command("echo_whisper", kind="join", channel=room, event="typing", data={"typing": True})

    obs = await listener.expect(type="whisper", channel=channel, event="typing")
    assert obs["data"] == {"typing": True}
    assert obs["metadata"] == {"user_id": "11"}  # Pusher sends user ids as strings


async def test_client_event_on_a_public_channel_is_refused_with_4301(server, node_client) -> None:
    channel = unique("public-")
    sender, other = await pair(node_client, channel)

    # pusher-js does not check the channel type: it sends the frame.
    ack = await sender.command("trigger", channel=channel, event="client-nope", data={"x": 1})
    assert ack["sent"] is True

    error = await sender.expect(type="connection_error")
    assert error["error"]["data"]["code"] == 4301, error
    await sdk_call(server.pusher().trigger, channel, "marker", {})
    await other.expect(type="event", channel=channel, event="marker")
    await sender.expect(type="event", channel=channel, event="marker")
    assert other.events(event="client-nope") == []
    assert await sender.state() == "connected"
    assert sender.observed(type="state", previous="connected") == []


async def test_client_event_on_an_encrypted_channel_pusher_js_refuses_and_so_does_the_server(
    server, node_client
) -> None:
    channel = unique("private-encrypted-chat-")
    # The other subscriber is raw: pusher-js would drop an undecryptable event without a word.
    sender, other = await pair(node_client, channel, receiver={"raw": True})

    ack = await sender.send("trigger", channel=channel, event="client-secret", data={})
    refused = await sender.expect(type="ack", id=ack)
    assert refused["ok"] is False
    assert "not currently supported for encrypted channels" in refused["error"], refused

    # Sent raw anyway (as a modified client could): the server refuses it too.
    await sender.command("send_event", event="client-secret", data={"x": 1}, channel=channel)
    error = await sender.expect(type="connection_error")
    assert error["error"]["data"]["code"] == 4301, error
    marker = unique("marker-")
    await other.subscribe(marker)
    await sdk_call(server.pusher().trigger, marker, "marker", {})
    await other.expect(type="event", channel=marker, event="marker")
    assert other.observed(type="message", event="client-secret") == []
    assert other.events(event="client-secret") == []
    assert await sender.state() == "connected"


async def test_client_event_from_a_socket_not_subscribed_is_not_relayed(server, node_client) -> None:
    channel = unique("private-members-only-")
    outsider, member = await node_client("outsider"), await node_client("member")
    await outsider.connect()
    await member.connect()
    await member.subscribe(channel)

    # pusher-js has no Channel object to trigger on: the frame goes raw.
    await outsider.command("send_event", event="client-intrude", data={"x": 1}, channel=channel)

    error = await outsider.expect(type="connection_error")
    # Pusher documents no code for this; Clarion (like Reverb) answers 4009.
    assert error["error"]["data"]["code"] in (4009, 4301), error
    await sdk_call(server.pusher().trigger, channel, "marker", {})
    await member.expect(type="event", channel=channel, event="marker")
    assert member.events(event="client-intrude") == []
    assert await outsider.state() == "connected"


async def test_more_than_ten_a_second_are_refused_with_4301_and_the_client_stays(server, node_client) -> None:
    channel = unique("private-burst-")
    sender, receiver = await pair(node_client, channel)
    burst = 20

    ack = await sender.command("trigger_burst", channel=channel, event="client-tick", count=burst)
    assert ack["sent"] == [True] * burst
    # The server handles one socket's frames in order: once this later subscribe is answered, it
    # has dealt with the whole burst (and any refusal is already on the way back before it).
    sync = unique("sync-")
    await sender.subscribe(sync)
    refused = sender.errors()
    # Relayed events were written before the reply to the subscribe; a server event after them
    # arrives after them.
    await sdk_call(server.pusher().trigger, channel, "marker", {})
    await receiver.expect(type="event", channel=channel, event="marker")
    relayed = [obs["data"]["n"] for obs in receiver.events(channel=channel, event="client-tick")]

    assert refused and set(refused) == {4301}, sender.report()
    # Exactly the limit, give or take the one token that refills every 100 ms during the burst.
    assert RATE_LIMIT <= len(relayed) <= RATE_LIMIT + 1, relayed
    assert relayed == list(range(len(relayed))), "the first events of the burst are the ones relayed"
    assert len(relayed) + len(refused) == burst
    # Still connected, same socket, and still receiving.
    await sender.expect(type="event", channel=channel, event="marker")
    await sdk_call(server.pusher().trigger, sync, "after", {"ok": True})
    assert (await sender.expect(type="event", channel=sync, event="after"))["data"] == {"ok": True}
    assert await sender.state() == "connected"
    assert sender.observed(type="state", previous="connected") == []
