"""Client events (``client-*``) between raw sockets: who may send them, who receives them, and the limits.

Silence is never waited out: where a socket must NOT get something, a marker event is triggered
through the HTTP API afterwards and must be the socket's next frame (the server handles one
socket's frames in order, so anything sent before the marker would arrive first).
"""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from pusherclient import PusherSocket, api_call, expect_error, fresh, payload, still_open


async def join(
    sock: PusherSocket, server: Any, channel: str, user_id: str | None = None, *, key: str = "", secret: str = ""
) -> None:
    """Subscribe, signing as the app does for private/presence channels; drain a cache channel's miss."""
    key, secret = key or server.key, secret or server.secret
    channel_data = {"user_id": user_id} if channel.startswith("presence-") else None
    answer = await sock.subscribe(channel, key=key, secret=secret, channel_data=channel_data)
    assert answer["event"] == "pusher_internal:subscription_succeeded", answer
    if "cache-" in channel:
        await sock.expect("pusher:cache_miss", channel)


async def trigger(
    server: Any,
    channel: str,
    name: str = "marker",
    data: str = "{}",
    *,
    app_id: str = "",
    key: str = "",
    secret: str = "",
) -> None:
    body = {"name": name, "channel": channel, "data": data}
    status, answer = await api_call(
        server.http_url,
        key or server.key,
        secret or server.secret,
        "POST",
        f"/apps/{app_id or server.app_id}/events",
        body,
    )
    assert status == 200, answer


async def next_is_marker(sock: PusherSocket, channel: str) -> None:
    """The socket's next frame is the marker just triggered on ``channel``: nothing came before it."""
    frame = await sock.recv()
    assert frame == {"event": "marker", "channel": channel, "data": "{}"}, frame


# --- who receives ------------------------------------------------------------------------------


async def test_client_event_on_private_channel_reaches_other_subscribers_and_never_the_sender(server, connect) -> None:
    channel = fresh("private-chat-")
    sender, first, second = [await connect(server) for _ in range(3)]
    for sock in (sender, first, second):
        await join(sock, server, channel)

    await sender.send("client-typing", {"who": "sender"}, channel=channel)
    for sock in (first, second):
        frame = await sock.expect("client-typing", channel)
        assert set(frame) == {"event", "channel", "data"}, frame  # no user_id outside presence
        assert payload(frame) == {"who": "sender"}

    await trigger(server, channel)
    await next_is_marker(sender, channel)


async def test_client_event_data_string_is_relayed_verbatim(server, connect) -> None:
    channel = fresh("private-verbatim-")
    sender, receiver = await connect(server), await connect(server)
    for sock in (sender, receiver):
        await join(sock, server, channel)
    text = '{"b": 2,  "a": [1, 2]}'
    await sender.send("client-raw", text, channel=channel)
    assert await receiver.recv() == {"event": "client-raw", "channel": channel, "data": text}


async def test_client_event_on_presence_carries_the_senders_user_id(server, connect) -> None:
    channel = fresh("presence-room-")
    ann, bob = await connect(server), await connect(server)
    await join(ann, server, channel, "ann")
    await join(bob, server, channel, "bob")
    await ann.expect("pusher_internal:member_added", channel)

    await ann.send("client-wave", {"hi": 1}, channel=channel)
    frame = await bob.expect("client-wave", channel)
    assert frame["user_id"] == "ann", frame
    assert payload(frame) == {"hi": 1}

    await bob.send("client-wave", {"hi": 2}, channel=channel)
    frame = await ann.expect("client-wave", channel)
    assert frame["user_id"] == "bob", frame


async def test_presence_client_event_user_id_is_the_member_id_as_a_string(server, connect) -> None:
    channel = fresh("presence-numeric-")
    sender, receiver = await connect(server), await connect(server)
    answer = await sender.subscribe(channel, key=server.key, secret=server.secret, channel_data={"user_id": 42})
    assert answer["event"] == "pusher_internal:subscription_succeeded", answer
    await join(receiver, server, channel, "r")
    await sender.send("client-x", {}, channel=channel)
    frame = await receiver.expect("client-x", channel)
    assert frame["user_id"] == "42", frame


# --- where and who may send --------------------------------------------------------------------


@pytest.mark.parametrize("prefix", ["public-", "cache-", "private-encrypted-", "private-encrypted-cache-"])
async def test_client_event_is_refused_4301_outside_private_and_presence(server, connect, prefix: str) -> None:
    channel = fresh(prefix)
    sender, receiver = await connect(server), await connect(server)
    for sock in (sender, receiver):
        await join(sock, server, channel)

    await sender.send("client-nope", {"x": 1}, channel=channel)
    await expect_error(sender, 4301)
    await trigger(server, channel)
    await next_is_marker(receiver, channel)
    await next_is_marker(sender, channel)  # the sender is still subscribed and connected


async def test_client_event_from_a_socket_not_subscribed_is_refused_4009(server, connect) -> None:
    channel = fresh("private-members-")
    outsider, member = await connect(server), await connect(server)
    await join(member, server, channel)

    await outsider.send("client-sneak", {"x": 1}, channel=channel)
    await expect_error(outsider, 4009)
    await trigger(server, channel)
    await next_is_marker(member, channel)
    await still_open(outsider)


async def test_client_event_after_unsubscribing_is_refused_4009(server, connect) -> None:
    channel = fresh("private-left-")
    leaver, member = await connect(server), await connect(server)
    for sock in (leaver, member):
        await join(sock, server, channel)
    await leaver.send("pusher:unsubscribe", {"channel": channel})
    await leaver.send("client-late", {}, channel=channel)
    await expect_error(leaver, 4009)
    await trigger(server, channel)
    await next_is_marker(member, channel)


async def test_client_events_all_accepts_a_sender_that_is_not_subscribed(server_factory, connect) -> None:
    running = server_factory(env={"CLARION_CLIENT_EVENTS": "all"})
    channel = fresh("private-open-")
    outsider, member = await connect(running), await connect(running)
    await join(member, running, channel)

    await outsider.send("client-hello", {"from": "outside"}, channel=channel)
    frame = await member.expect("client-hello", channel)
    assert payload(frame) == {"from": "outside"}
    # Still never on public channels, even with "all".
    await outsider.send("client-hello", {}, channel=fresh("public-"))
    await expect_error(outsider, 4301)


async def test_client_events_none_refuses_even_a_subscribed_sender(server_factory, connect) -> None:
    running = server_factory(env={"CLARION_CLIENT_EVENTS": "none"})
    channel = fresh("private-closed-")
    sender, member = await connect(running), await connect(running)
    for sock in (sender, member):
        await join(sock, running, channel)

    await sender.send("client-hello", {}, channel=channel)
    await expect_error(sender, 4301)
    await trigger(running, channel)
    await next_is_marker(member, channel)
    await next_is_marker(sender, channel)


# --- limits ------------------------------------------------------------------------------------


async def test_eleventh_client_event_within_a_second_is_refused_4301_and_the_socket_recovers(server, connect) -> None:
    channel = fresh("private-rate-")
    sender, receiver = await connect(server), await connect(server)
    for sock in (sender, receiver):
        await join(sock, server, channel)

    for n in range(11):  # written back to back: the server reads them within milliseconds
        await sender.send("client-n", {"n": n}, channel=channel)
    await expect_error(sender, 4301)
    got = [payload(await receiver.expect("client-n", channel))["n"] for _ in range(10)]
    assert got == list(range(10))
    await trigger(server, channel)
    await next_is_marker(receiver, channel)  # the 11th never went out
    await next_is_marker(sender, channel)  # one refusal only, and the socket is alive

    await asyncio.sleep(1.1)  # the limit is per second: this wait is the behaviour under test
    for n in range(10):
        await sender.send("client-n", {"n": 100 + n}, channel=channel)
    got = [payload(await receiver.expect("client-n", channel))["n"] for _ in range(10)]
    assert got == list(range(100, 110))
    await trigger(server, channel)
    await next_is_marker(sender, channel)  # no refusal this time


async def test_toml_client_event_rate_is_honoured_per_app(server_factory, connect) -> None:
    config = """
[[apps]]
id = "501"
key = "slow-key"
secret = "slow-secret"
client_event_rate = 3

[[apps]]
id = "502"
key = "fast-key"
secret = "fast-secret"
"""
    running = server_factory(config=config)
    slow = {"key": "slow-key", "secret": "slow-secret"}
    channel = fresh("private-rate-")
    sender, receiver = await connect(running, "slow-key"), await connect(running, "slow-key")
    for sock in (sender, receiver):
        await join(sock, running, channel, **slow)
    for n in range(4):
        await sender.send("client-n", {"n": n}, channel=channel)
    await expect_error(sender, 4301)
    assert [payload(await receiver.expect("client-n", channel))["n"] for _ in range(3)] == [0, 1, 2]
    await trigger(running, channel, app_id="501", **slow)
    await next_is_marker(receiver, channel)

    # The other app keeps the default of 10 a second.
    fast = {"key": "fast-key", "secret": "fast-secret"}
    sender, receiver = await connect(running, "fast-key"), await connect(running, "fast-key")
    for sock in (sender, receiver):
        await join(sock, running, channel, **fast)
    for n in range(10):
        await sender.send("client-n", {"n": n}, channel=channel)
    assert [payload(await receiver.expect("client-n", channel))["n"] for _ in range(10)] == list(range(10))
    await trigger(running, channel, app_id="502", **fast)
    await next_is_marker(sender, channel)


async def test_client_event_data_over_the_size_limit_is_refused_4301(server, connect) -> None:
    channel = fresh("private-big-")
    sender, receiver = await connect(server), await connect(server)
    for sock in (sender, receiver):
        await join(sock, server, channel)

    await sender.send("client-big", "x" * (10 * 1024 + 1), channel=channel)
    await expect_error(sender, 4301)
    await sender.send("client-big", "y" * (10 * 1024), channel=channel)  # exactly the limit passes
    frame = await receiver.expect("client-big", channel)
    assert frame["data"] == "y" * (10 * 1024)
    await trigger(server, channel)
    await next_is_marker(receiver, channel)
    await next_is_marker(sender, channel)  # one refusal, and the socket is alive


async def test_client_event_name_over_200_characters_is_refused_4301(server, connect) -> None:
    channel = fresh("private-names-")
    sender, receiver = await connect(server), await connect(server)
    for sock in (sender, receiver):
        await join(sock, server, channel)

    too_long = "client-" + "e" * 194  # 201 characters
    at_limit = "client-" + "e" * 193  # 200 characters
    await sender.send(too_long, {}, channel=channel)
    await expect_error(sender, 4301)
    await sender.send(at_limit, {}, channel=channel)
    await receiver.expect(at_limit, channel)
    await trigger(server, channel)
    await next_is_marker(receiver, channel)
    await next_is_marker(sender, channel)  # one refusal, and the socket is alive


# --- cache channels ----------------------------------------------------------------------------


async def test_client_events_are_not_cached_on_cache_channels(server, connect) -> None:
    channel = fresh("private-cache-chat-")
    sender, receiver = await connect(server), await connect(server)
    for sock in (sender, receiver):
        await join(sock, server, channel)
    await sender.send("client-note", {"n": 1}, channel=channel)
    await receiver.expect("client-note", channel)

    newcomer = await connect(server)
    answer = await newcomer.subscribe(channel, key=server.key, secret=server.secret)
    assert answer["event"] == "pusher_internal:subscription_succeeded", answer
    await newcomer.expect("pusher:cache_miss", channel)

    status, state = await api_call(
        server.http_url,
        server.key,
        server.secret,
        "GET",
        f"/apps/{server.app_id}/channels/{channel}",
        info="cache",
    )
    assert status == 200, state
    assert "cache" not in state, state
