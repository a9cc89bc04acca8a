"""Subscribing to public, private, encrypted and presence channels, and what each socket gets."""

from __future__ import annotations

import json
import uuid
from typing import Any

import aiohttp

from pusherclient import PusherSocket, api_call, fresh
from redisproc import SHARED_REDIS_URL


async def trigger(server, channel: str, name: str = "evt", data: str = '{"n":1}', **extra) -> None:
    status, answer = await server.trigger(channel, name, data, **extra)
    assert status == 200, answer


async def test_public_subscription_succeeds_and_receives_events(server) -> None:
    async with await PusherSocket.open(server.ws_url()) as sock:
        answer = await sock.subscribe("orders")
        assert answer == {"event": "pusher_internal:subscription_succeeded", "channel": "orders", "data": "{}"}
        await trigger(server, "orders", data='{"id":7}')
        frame = await sock.expect("evt", "orders")
        assert json.loads(frame["data"]) == {"id": 7}


async def test_private_subscription_with_valid_signature_receives_events(server) -> None:
    async with await PusherSocket.open(server.ws_url()) as sock:
        answer = await sock.subscribe("private-orders", key=server.key, secret=server.secret)
        assert answer["event"] == "pusher_internal:subscription_succeeded"
        await trigger(server, "private-orders")
        await sock.expect("evt", "private-orders")


async def test_forged_private_signature_is_refused_and_socket_keeps_working(server) -> None:
    async with await PusherSocket.open(server.ws_url()) as sock:
        refused = await sock.subscribe("private-secrets", key=server.key, secret="not-the-secret")
        assert refused["event"] == "pusher:subscription_error"
        assert refused["channel"] == "private-secrets"
        assert refused["data"]["status"] == 401
        assert refused["data"]["type"] == "AuthError"
        await sock.subscribe("news")
        await trigger(server, "private-secrets")
        await trigger(server, "news")
        # The next frame is the public event: nothing from the refused channel came first.
        await sock.expect("evt", "news")


async def test_signature_for_another_socket_is_refused(server) -> None:
    async with await PusherSocket.open(server.ws_url()) as a, await PusherSocket.open(server.ws_url()) as b:
        from clarion.protocol.signatures import channel_auth

        stolen = channel_auth(server.key, server.secret, a.socket_id, "private-a")
        refused = await b.subscribe("private-a", auth=stolen)
        assert refused["event"] == "pusher:subscription_error"


async def test_missing_auth_on_private_channel_is_refused(server) -> None:
    async with await PusherSocket.open(server.ws_url()) as sock:
        refused = await sock.subscribe("private-orders")
        assert refused["event"] == "pusher:subscription_error"
        assert refused["data"]["status"] == 401


async def test_signature_with_another_apps_key_is_refused(server) -> None:
    async with await PusherSocket.open(server.ws_url()) as sock:
        refused = await sock.subscribe("private-orders", key="other-key", secret=server.secret)
        assert refused["event"] == "pusher:subscription_error"


async def test_encrypted_channel_subscribes_with_a_private_signature(server) -> None:
    async with await PusherSocket.open(server.ws_url()) as sock:
        answer = await sock.subscribe("private-encrypted-box", key=server.key, secret=server.secret)
        assert answer["event"] == "pusher_internal:subscription_succeeded"
        opaque = '{"nonce":"bm9uY2U=","ciphertext":"Y2lwaGVy"}'
        await trigger(server, "private-encrypted-box", data=opaque)
        frame = await sock.expect("evt", "private-encrypted-box")
        assert frame["data"] == opaque


async def test_unsubscribe_stops_delivery(server) -> None:
    async with await PusherSocket.open(server.ws_url()) as sock:
        await sock.subscribe("tick")
        await sock.subscribe("tock")
        await sock.send("pusher:unsubscribe", {"channel": "tick"})
        await trigger(server, "tick")
        await trigger(server, "tock")
        await sock.expect("evt", "tock")


async def test_subscribing_twice_answers_twice_and_delivers_once(server) -> None:
    async with await PusherSocket.open(server.ws_url()) as sock:
        await sock.subscribe("twice")
        again = await sock.subscribe("twice")
        assert again["event"] == "pusher_internal:subscription_succeeded"
        await trigger(server, "twice")
        await sock.expect("evt", "twice")
        await sock.nothing()


async def test_presence_members_are_counted_per_user_not_per_socket(server) -> None:
    channel = "presence-room"
    watcher = await PusherSocket.open(server.ws_url())
    tab1 = await PusherSocket.open(server.ws_url())
    tab2 = await PusherSocket.open(server.ws_url())
    try:
        joined = await watcher.subscribe(channel, key=server.key, secret=server.secret, channel_data={"user_id": "w"})
        presence = json.loads(joined["data"])["presence"]
        assert presence == {"ids": ["w"], "hash": {"w": None}, "count": 1}

        ann = {"user_id": 42, "user_info": {"name": "Ann"}}
        first = await tab1.subscribe(channel, key=server.key, secret=server.secret, channel_data=ann)
        assert json.loads(first["data"])["presence"]["count"] == 2
        added = await watcher.expect("pusher_internal:member_added", channel)
        assert json.loads(added["data"]) == {"user_id": "42", "user_info": {"name": "Ann"}}

        second = await tab2.subscribe(channel, key=server.key, secret=server.secret, channel_data=ann)
        assert sorted(json.loads(second["data"])["presence"]["ids"]) == ["42", "w"]  # in no promised order
        await tab1.close()
        # Ann still has a tab open: the watcher hears nothing.
        await watcher.nothing(0.3)
        await tab2.close()
        removed = await watcher.expect("pusher_internal:member_removed", channel)
        assert json.loads(removed["data"]) == {"user_id": "42"}
    finally:
        for sock in (watcher, tab1, tab2):
            await sock.close()


async def test_presence_without_channel_data_or_with_bad_user_id_is_refused(server) -> None:
    async with await PusherSocket.open(server.ws_url()) as sock:
        from clarion.protocol.signatures import channel_auth

        auth = channel_auth(server.key, server.secret, sock.socket_id, "presence-x")
        refused = await sock.subscribe("presence-x", auth=auth)
        assert refused["event"] == "pusher:subscription_error"
        too_long = await sock.subscribe(
            "presence-x", key=server.key, secret=server.secret, channel_data={"user_id": "u" * 129}
        )
        assert too_long["event"] == "pusher:subscription_error"
        assert too_long["data"]["status"] == 400
        await sock.send("pusher:ping", {})
        await sock.expect("pusher:pong")


async def test_presence_member_limit_refuses_the_extra_user(server_factory, tmp_path) -> None:
    config = """
[[apps]]
id = "77"
key = "limit-key"
secret = "limit-secret"
max_presence_members = 2
"""
    running = server_factory(config=config)
    socks = [await PusherSocket.open(running.ws_url(key="limit-key")) for _ in range(3)]
    try:
        for index, sock in enumerate(socks[:2]):
            ok = await sock.subscribe(
                "presence-small", key="limit-key", secret="limit-secret", channel_data={"user_id": f"u{index}"}
            )
            assert ok["event"] == "pusher_internal:subscription_succeeded"
        full = await socks[2].subscribe(
            "presence-small", key="limit-key", secret="limit-secret", channel_data={"user_id": "u9"}
        )
        assert full["event"] == "pusher:subscription_error"
        assert "full" in full["data"]["error"]
    finally:
        for sock in socks:
            await sock.close()


async def test_presence_resubscribes_past_the_burst_are_refused_429_counted_and_logged(server_factory) -> None:
    # A rate so slow that nothing refills while the test runs, however loaded the machine.
    server = server_factory(
        env={"CLARION_PRESENCE_RESUBSCRIBE_BURST": "2", "CLARION_PRESENCE_RESUBSCRIBE_RATE": "0.001"}
    )
    channel = "presence-lobby"
    signing = {"key": server.key, "secret": server.secret, "channel_data": {"user_id": "ann"}}
    async with await PusherSocket.open(server.ws_url()) as sock:
        for _ in range(1 + 2):  # the subscribe, then the burst of repeats
            answer = await sock.subscribe(channel, **signing)
            assert answer["event"] == "pusher_internal:subscription_succeeded", answer
        refused = await sock.subscribe(channel, **signing)
        assert refused["event"] == "pusher:subscription_error", refused
        assert refused["channel"] == channel
        assert (refused["data"]["type"], refused["data"]["status"]) == ("LimitReached", 429)
        # Only the repeat was refused: the socket is still on the channel.
        await trigger(server, channel)
        await sock.expect("evt", channel)
    async with aiohttp.ClientSession() as session, session.get(server.http_url + "/metrics") as response:
        metrics = await response.text()
    assert 'clarion_rate_limited_total{what="presence_resubscribe"} 1.0' in metrics
    await server.logged("subscription refused")
    await server.logged("Too many presence subscribes")


# --- answered only once the cluster knows -------------------------------------------------------


def one_cluster(server_factory) -> tuple[Any, Any]:
    """Two nodes joined through Redis."""
    env = {
        "CLARION_SCALING": "redis",
        "CLARION_REDIS_URL": SHARED_REDIS_URL,
        "CLARION_SCALING_PREFIX": f"answer-{uuid.uuid4().hex[:12]}",
    }
    return server_factory(env=env), server_factory(env=env)


async def test_once_a_presence_subscribe_is_answered_the_other_node_counts_and_lists_it(server_factory) -> None:
    here, there = one_cluster(server_factory)
    for attempt in range(20):
        channel = fresh("presence-answered-")
        async with await PusherSocket.open(here.ws_url()) as sock:
            answer = await sock.subscribe(
                channel, key=here.key, secret=here.secret, channel_data={"user_id": f"u{attempt}"}
            )
            assert answer["event"] == "pusher_internal:subscription_succeeded", answer
            path = f"/apps/{there.app_id}/channels/{channel}"
            status, info = await api_call(
                there.http_url, there.key, there.secret, "GET", path, info="subscription_count"
            )
            assert (status, info["occupied"], info["subscription_count"]) == (200, True, 1), (attempt, info)
            status, users = await api_call(there.http_url, there.key, there.secret, "GET", f"{path}/users")
            assert (status, users) == (200, {"users": [{"id": f"u{attempt}"}]}), attempt


async def test_once_an_event_is_answered_a_subscriber_on_the_other_node_gets_it_as_the_cached_one(
    server_factory,
) -> None:
    here, there = one_cluster(server_factory)
    for attempt in range(20):
        channel = fresh("cache-answered-")
        status, answer = await here.trigger(channel, "price", json.dumps({"n": attempt}))
        assert status == 200, answer
        async with await PusherSocket.open(there.ws_url()) as sock:
            assert (await sock.subscribe(channel))["event"] == "pusher_internal:subscription_succeeded"
            cached = await sock.recv()
            assert (cached["event"], cached["data"]) == ("price", json.dumps({"n": attempt})), (attempt, cached)
