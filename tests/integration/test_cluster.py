"""Several real ``clarion serve`` processes joined through Redis (one cluster = one
``CLARION_SCALING_PREFIX``): events, client events and presence cross nodes, the HTTP API answers
for the whole cluster, a killed node is taken over, and a Redis restart is lived through."""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
import uuid
from typing import Any

import aiohttp
from redis import asyncio as aioredis

from conftest import RunningServer, run_server
from pusherclient import PusherSocket, api_call, wait_for
from redisproc import SHARED_REDIS_URL, free_port, port_open, private_redis

# For tests of what happens while a command waits on a paused Redis: a timeout longer than the pause.
WAITS_ON_REDIS = {"CLARION_REDIS_TIMEOUT": "30"}


def cluster_env(prefix: str | None = None, **extra: str) -> dict[str, str]:
    return {
        "CLARION_SCALING": "redis",
        "CLARION_REDIS_URL": SHARED_REDIS_URL,
        "CLARION_SCALING_PREFIX": prefix or f"cluster-{uuid.uuid4().hex[:12]}",
        **extra,
    }


def start_cluster(server_factory: Any, count: int, **extra: str) -> list[RunningServer]:
    env = cluster_env(**extra)
    return [server_factory(env=env) for _ in range(count)]


async def trigger(server: RunningServer, channel: str, name: str, data: Any = None) -> None:
    status, answer = await server.trigger(channel, name, json.dumps(data if data is not None else {}))
    assert status == 200, answer


async def api_get(server: RunningServer, path: str, **params: str) -> Any:
    status, answer = await api_call(
        server.http_url, server.key, server.secret, "GET", f"/apps/{server.app_id}{path}", **params
    )
    assert status == 200, answer
    return answer


async def user_ids(server: RunningServer, channel: str) -> list[str]:
    """The channel's members by the HTTP API, sorted; each entry is checked to hold its id only."""
    users = (await api_get(server, f"/channels/{channel}/users"))["users"]
    assert all(set(user) == {"id"} for user in users), users
    return sorted(user["id"] for user in users)


async def ready_status(server: RunningServer) -> int:
    async with aiohttp.ClientSession() as session, session.get(server.http_url + "/ready") as response:
        return response.status


async def wait_ready(nodes: list[RunningServer], status: int, timeout: float) -> None:
    async def answered() -> bool:
        return all([await ready_status(node) == status for node in nodes])

    await wait_for(answered, timeout=timeout, interval=0.1)


async def subscribe(sock: PusherSocket, server: RunningServer, channel: str, user: str | None = None) -> Any:
    """Subscribe (signed for private and presence channels); the presence data, if any."""
    if channel.startswith(("private-", "presence-")):
        member = {"user_id": user, "user_info": {"name": user}} if user is not None else None
        answer = await sock.subscribe(channel, key=server.key, secret=server.secret, channel_data=member)
    else:
        answer = await sock.subscribe(channel)
    assert answer["event"] == "pusher_internal:subscription_succeeded", answer
    return json.loads(answer["data"]).get("presence")


def data_of(frame: dict[str, Any]) -> Any:
    data = frame["data"]
    return json.loads(data) if isinstance(data, str) else data


async def expect_member(sock: PusherSocket, event: str, channel: str, user: str, timeout: float = 5.0) -> None:
    frame = await sock.expect(f"pusher_internal:{event}", channel, timeout=timeout)
    assert data_of(frame)["user_id"] == user, frame


async def next_is_marker(socks: list[PusherSocket], server: RunningServer, channel: str) -> None:
    """Trigger a marker event and check it is the next frame on every socket: nothing (no
    duplicate, no stray member event) was queued before it."""
    marker = f"marker-{uuid.uuid4().hex[:6]}"
    await trigger(server, channel, marker)
    for sock in socks:
        await sock.expect(marker, channel)


async def open_socket(server: RunningServer, opened: list[PusherSocket]) -> PusherSocket:
    sock = await PusherSocket.open(server.ws_url())
    opened.append(sock)
    return sock


async def close_all(socks: list[PusherSocket]) -> None:
    for sock in socks:
        with contextlib.suppress(Exception):
            await sock.close()


# --- events ------------------------------------------------------------------------------------


async def test_an_event_triggered_on_one_node_reaches_subscribers_on_every_node_once_in_order(
    server_factory,
) -> None:
    nodes = start_cluster(server_factory, 3)
    socks: list[PusherSocket] = []
    try:
        for node in nodes:
            await subscribe(await open_socket(node, socks), node, "fanout")
        for n in range(50):
            await trigger(nodes[0], "fanout", "seq", {"n": n})
        await trigger(nodes[0], "fanout", "end")
        for sock in socks:
            got = []
            while (frame := await sock.recv(timeout=5))["event"] != "end":
                got.append((frame["event"], frame.get("channel"), data_of(frame)))
            assert got == [("seq", "fanout", {"n": n}) for n in range(50)]
    finally:
        await close_all(socks)


async def test_client_events_cross_nodes_and_are_not_echoed_to_the_sender(server_factory) -> None:
    a, b = start_cluster(server_factory, 2)
    socks: list[PusherSocket] = []
    try:
        sender, neighbour, receiver = (
            await open_socket(a, socks),
            await open_socket(a, socks),
            await open_socket(b, socks),
        )
        for sock, node in ((sender, a), (neighbour, a), (receiver, b)):
            await subscribe(sock, node, "private-chat")
        await sender.send("client-typing", {"text": "hi"}, "private-chat")
        for sock in (receiver, neighbour):
            frame = await sock.expect("client-typing", "private-chat")
            assert data_of(frame) == {"text": "hi"}
            assert "user_id" not in frame  # private channel: no sender identity
        await next_is_marker([sender, neighbour, receiver], b, "private-chat")
    finally:
        await close_all(socks)


# --- presence ----------------------------------------------------------------------------------


async def test_presence_is_cluster_wide_one_member_per_user_until_their_last_socket_leaves(server_factory) -> None:
    a, b, c = start_cluster(server_factory, 3)
    room = "presence-room"
    socks: list[PusherSocket] = []
    try:
        watcher = await open_socket(c, socks)
        assert (await subscribe(watcher, c, room, "watcher"))["count"] == 1

        alice_a = await open_socket(a, socks)
        await subscribe(alice_a, a, room, "alice")
        await expect_member(watcher, "member_added", room, "alice")
        bob = await open_socket(b, socks)
        presence = await subscribe(bob, b, room, "bob")
        assert set(presence["ids"]) == {"watcher", "alice", "bob"}
        await expect_member(watcher, "member_added", room, "bob")

        carol = await open_socket(c, socks)
        presence = await subscribe(carol, c, room, "carol")
        assert presence["count"] == 4
        assert presence["hash"] == {
            "watcher": {"name": "watcher"},
            "alice": {"name": "alice"},
            "bob": {"name": "bob"},
            "carol": {"name": "carol"},
        }
        for sock in (watcher, bob):
            await expect_member(sock, "member_added", room, "carol")

        # alice on a second node is still one member: nobody hears of her again.
        alice_b = await open_socket(b, socks)
        presence = await subscribe(alice_b, b, room, "alice")
        assert presence["count"] == 4
        await next_is_marker([watcher, bob], a, room)

        async def four_sockets_in_room() -> bool:
            answer = await api_get(c, f"/channels/{room}", info="subscription_count")
            count: int = answer["subscription_count"]
            return count == 4

        await alice_a.close()
        await wait_for(four_sockets_in_room)
        await next_is_marker([watcher, bob], b, room)  # alice still has a socket on b
        assert {u["id"] for u in (await api_get(a, f"/channels/{room}/users"))["users"]} == {
            "watcher",
            "alice",
            "bob",
            "carol",
        }

        await alice_b.close()
        await expect_member(watcher, "member_removed", room, "alice")
        await expect_member(bob, "member_removed", room, "alice")
        await next_is_marker([watcher, bob], c, room)
        assert {u["id"] for u in (await api_get(a, f"/channels/{room}/users"))["users"]} == {"watcher", "bob", "carol"}
    finally:
        await close_all(socks)


# --- HTTP API ----------------------------------------------------------------------------------


async def test_the_http_api_of_any_node_answers_for_the_whole_cluster(server_factory) -> None:
    a, b, c = start_cluster(server_factory, 3)
    socks: list[PusherSocket] = []
    try:
        for node in (a, a, b):
            await subscribe(await open_socket(node, socks), node, "news")
        await subscribe(await open_socket(c, socks), c, "private-x")
        for node, user in ((a, "alice"), (b, "bob"), (c, "alice")):
            await subscribe(await open_socket(node, socks), node, "presence-lobby", user)

        for node in (a, b, c):
            listed = await api_get(node, "/channels", info="subscription_count")
            assert listed == {
                "channels": {
                    "news": {"subscription_count": 3},
                    "private-x": {"subscription_count": 1},
                    "presence-lobby": {"subscription_count": 3},
                }
            }
            assert await api_get(node, "/channels", filter_by_prefix="presence-", info="user_count") == {
                "channels": {"presence-lobby": {"user_count": 2}}
            }
            assert await api_get(node, "/channels/news", info="subscription_count") == {
                "occupied": True,
                "subscription_count": 3,
            }
            assert await api_get(node, "/channels/presence-lobby", info="user_count,subscription_count") == {
                "occupied": True,
                "subscription_count": 3,
                "user_count": 2,
            }
            users = (await api_get(node, "/channels/presence-lobby/users"))["users"]
            assert sorted(user["id"] for user in users) == ["alice", "bob"]
            assert await api_get(node, "/channels/nobody-here") == {"occupied": False}
    finally:
        await close_all(socks)


async def test_scaling_prefixes_keep_two_clusters_on_one_redis_apart(server_factory) -> None:
    x1, x2 = start_cluster(server_factory, 2)
    (y1,) = start_cluster(server_factory, 1)
    socks: list[PusherSocket] = []
    try:
        x1_sock, x2_sock, y1_sock = [await open_socket(node, socks) for node in (x1, x2, y1)]
        for sock, node in ((x1_sock, x1), (x2_sock, x2), (y1_sock, y1)):
            await subscribe(sock, node, "shared")
        await subscribe(await open_socket(x2, socks), x2, "only-x")
        await subscribe(await open_socket(y1, socks), y1, "only-y")

        await trigger(x1, "shared", "from-x")
        for sock in (x1_sock, x2_sock):
            await sock.expect("from-x", "shared")
        await next_is_marker([y1_sock], y1, "shared")  # y never saw x's event

        for node in (x1, x2):
            listed = await api_get(node, "/channels", info="subscription_count")
            assert listed == {"channels": {"shared": {"subscription_count": 2}, "only-x": {"subscription_count": 1}}}
        listed = await api_get(y1, "/channels", info="subscription_count")
        assert listed == {"channels": {"shared": {"subscription_count": 1}, "only-y": {"subscription_count": 1}}}
    finally:
        await close_all(socks)


# --- failures ----------------------------------------------------------------------------------


async def test_a_killed_node_is_taken_over_its_members_removed_and_counts_corrected(server_factory) -> None:
    a, b, c = start_cluster(server_factory, 3, CLARION_NODE_TTL="3")
    team = "presence-team"
    socks: list[PusherSocket] = []
    try:
        watch_b, watch_c = await open_socket(b, socks), await open_socket(c, socks)
        await subscribe(watch_b, b, team, "wb")
        await subscribe(watch_c, c, team, "wc")
        await expect_member(watch_b, "member_added", team, "wc")
        await subscribe(await open_socket(a, socks), a, team, "dave")  # dave is only on a
        await subscribe(await open_socket(b, socks), b, team, "erin")
        for watcher in (watch_b, watch_c):
            await expect_member(watcher, "member_added", team, "dave")
            await expect_member(watcher, "member_added", team, "erin")
        for node in (a, a, b):
            await subscribe(await open_socket(node, socks), node, "ticker")
        before = await api_get(c, "/channels", info="subscription_count")
        assert before["channels"]["ticker"] == {"subscription_count": 3}

        a.proc.kill()
        a.proc.wait(10)
        killed = time.monotonic()
        for watcher in (watch_b, watch_c):
            await expect_member(watcher, "member_removed", team, "dave", timeout=30 - (time.monotonic() - killed))
        await next_is_marker([watch_b, watch_c], b, team)  # removed once, by one node

        for node in (b, c):
            listed = await api_get(node, "/channels", info="subscription_count")
            assert listed == {"channels": {"ticker": {"subscription_count": 1}, team: {"subscription_count": 3}}}
            users = (await api_get(node, f"/channels/{team}/users"))["users"]
            assert sorted(user["id"] for user in users) == ["erin", "wb", "wc"]
            assert await api_get(node, f"/channels/{team}", info="user_count") == {"occupied": True, "user_count": 3}
    finally:
        await close_all(socks)


async def test_a_redis_restart_mid_traffic_is_lived_through_and_the_cluster_state_rebuilt() -> None:
    env_extra = {"CLARION_NODE_TTL": "3"}
    servers: list[RunningServer] = []
    socks: list[PusherSocket] = []
    with private_redis() as redis, contextlib.ExitStack() as stack:
        env = {**cluster_env(**env_extra), "CLARION_REDIS_URL": redis.url}
        a, b = (stack.enter_context(run_server(env=env)) for _ in range(2))
        servers += [a, b]
        stream_a, stream_b = await open_socket(a, socks), await open_socket(b, socks)
        await subscribe(stream_a, a, "stream")
        await subscribe(stream_b, b, "stream")
        ann, ben = await open_socket(a, socks), await open_socket(b, socks)
        await subscribe(ann, a, "presence-ops", "ann")
        await subscribe(ben, b, "presence-ops", "ben")
        await expect_member(ann, "member_added", "presence-ops", "ben")
        before_channels = await api_get(b, "/channels", info="subscription_count")
        before_users = await user_ids(b, "presence-ops")
        assert len(before_channels["channels"]) == 2 and before_users == ["ann", "ben"]

        # Traffic: a steady stream of triggers on a, numbered; every socket's frames recorded.
        sent: list[int] = []
        statuses: list[int] = []
        stop = asyncio.Event()

        async def traffic() -> None:
            n = 0
            while not stop.is_set():
                body = {"name": "tick", "channel": "stream", "data": json.dumps({"n": n})}
                status, _ = await api_call(a.http_url, a.key, a.secret, "POST", f"/apps/{a.app_id}/events", body)
                statuses.append(status)
                sent.append(n)
                n += 1
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), 0.05)  # pacing the load, not synchronising

        received: dict[str, list[Any]] = {"a": [], "b": [], "ann": [], "ben": []}

        async def record(sock: PusherSocket, into: list[Any]) -> None:
            while True:
                frame = await sock.recv(timeout=120)
                into.append(data_of(frame)["n"] if frame["event"] == "tick" else frame)

        tasks = [asyncio.create_task(traffic())] + [
            asyncio.create_task(record(sock, received[name]))
            for sock, name in ((stream_a, "a"), (stream_b, "b"), (ann, "ann"), (ben, "ben"))
        ]

        def got_after(name: str, n: int) -> bool:
            return any(isinstance(x, int) and x > n for x in received[name])

        try:
            await wait_for(lambda: got_after("a", 3) and got_after("b", 3), timeout=10)

            redis.kill()
            await wait_ready([a, b], 503, timeout=10)
            outage_from = sent[-1]
            # Alone, a still serves its own subscribers.
            await wait_for(lambda: got_after("a", outage_from + 3), timeout=10)
            assert a.proc.poll() is None and b.proc.poll() is None
            assert received["b"] == sorted(set(received["b"]))

            redis.start()
            await wait_ready([a, b], 200, timeout=20)
            back_from = sent[-1]
            await wait_for(lambda: got_after("b", back_from) and got_after("a", back_from), timeout=10)

            # The state is Redis's again, rebuilt from both nodes' shares.
            for node in (a, b):
                assert await api_get(node, "/channels", info="subscription_count") == before_channels
                # In any order: Pusher promises none, and the hash rebuilt in Redis keeps none.
                assert await user_ids(node, "presence-ops") == before_users
        finally:
            stop.set()
            await tasks[0]
            for task in tasks[1:]:
                task.cancel()
            await asyncio.gather(*tasks[1:], return_exceptions=True)
            await close_all(socks)

        assert set(statuses) == {200}
        for name in ("a", "b"):
            ticks = received[name]
            assert all(isinstance(x, int) for x in ticks), ticks
            assert ticks == sorted(set(ticks)), f"{name}: duplicated or out of order"
        # a's subscriber missed nothing: local delivery went on through the outage.
        assert received["a"] == sent[: len(received["a"])]
        assert received["a"][-1] >= back_from
        # Presence never churned: the restart was invisible to the members.
        assert received["ann"] == [] and received["ben"] == []
        for server in servers:
            assert "Traceback" not in server.log_text(), server.log_text()
    # Every process this test started has exited, and nothing listens on the private Redis port.
    for server in servers:
        assert server.proc.poll() is not None
        assert server.proc.returncode == 0, server.log_text()
    assert redis.all_exited()
    assert not port_open(redis.port)


async def test_presence_changes_made_during_a_redis_outage_reach_the_other_nodes_afterwards() -> None:
    """Cut off from Redis, a node still serves its own sockets; once back, it announces the members
    who came and went on it meanwhile, so the other nodes' member lists catch up."""
    socks: list[PusherSocket] = []
    with private_redis() as redis, contextlib.ExitStack() as stack:
        env = {**cluster_env(CLARION_NODE_TTL="3"), "CLARION_REDIS_URL": redis.url}
        a, b = (stack.enter_context(run_server(env=env)) for _ in range(2))
        try:
            watcher = await open_socket(b, socks)
            await subscribe(watcher, b, "presence-desk", "watcher")
            leaver = await open_socket(a, socks)
            await subscribe(leaver, a, "presence-desk", "leaver")
            await expect_member(watcher, "member_added", "presence-desk", "leaver")

            redis.kill()
            await wait_ready([a, b], 503, timeout=10)
            # While cut off: one member arrives on a, another leaves a.
            arriving = await open_socket(a, socks)
            await subscribe(arriving, a, "presence-desk", "newcomer")
            await leaver.close()

            redis.start()
            await wait_ready([a, b], 200, timeout=20)
            await expect_member(watcher, "member_added", "presence-desk", "newcomer", timeout=10)
            await expect_member(watcher, "member_removed", "presence-desk", "leaver", timeout=10)
            users = await api_get(b, "/channels/presence-desk/users")
            assert sorted(u["id"] for u in users["users"]) == ["newcomer", "watcher"]
        finally:
            await close_all(socks)


async def test_a_presence_subscribe_whose_socket_leaves_while_redis_answers_leaves_no_member_behind() -> None:
    """The socket closes while its join waits on Redis: once Redis answers, the node takes back the
    member and the count it added. Cancelling the join there instead left a member for good."""
    socks: list[PusherSocket] = []
    with private_redis() as redis, contextlib.ExitStack() as stack:
        node = stack.enter_context(run_server(env={**cluster_env(), "CLARION_REDIS_URL": redis.url, **WAITS_ON_REDIS}))
        try:
            leaver = await open_socket(node, socks)
            channel, member = "presence-lobby", {"user_id": "ghost", "user_info": {}}
            with redis.paused():
                await leaver.send_subscribe(channel, key=node.key, secret=node.secret, channel_data=member)
                await wait_for(lambda: redis.unread() > 0, timeout=5)  # the join went out: it awaits the answer
                await leaver.close()
                await wait_for(lambda: "connection closed" in node.log_text(), timeout=5)
            await wait_for(lambda: "subscription withdrawn" in node.log_text(), timeout=10)
            assert (await api_get(node, f"/channels/{channel}/users"))["users"] == []
            assert await api_get(node, f"/channels/{channel}", info="subscription_count") == {
                "occupied": False,
                "subscription_count": 0,
            }
            watcher = await open_socket(node, socks)
            presence = await subscribe(watcher, node, channel, "watcher")
            assert presence["ids"] == ["watcher"]
        finally:
            await close_all(socks)


async def test_a_sign_in_whose_socket_leaves_while_redis_answers_leaves_the_user_offline() -> None:
    """The socket closes while Redis marks its user online: the user, signed out by the socket's
    departure, is not left online by the sign-in's write."""
    socks: list[PusherSocket] = []
    with private_redis() as redis, contextlib.ExitStack() as stack:
        node = stack.enter_context(run_server(env={**cluster_env(), "CLARION_REDIS_URL": redis.url, **WAITS_ON_REDIS}))
        try:
            leaver = await open_socket(node, socks)
            with redis.paused():
                user_data = json.dumps({"id": "leaver", "watchlist": ["friend"]})
                await leaver.send_signin(user_data, key=node.key, secret=node.secret)
                await wait_for(lambda: redis.unread() > 0, timeout=5)  # the user is being marked online
                # The server answers the close: its departure (which starts without Redis) is under
                # way before Redis can answer. Its sign-out waits behind the write on the same
                # connection, so no byte of it shows yet.
                await leaver.close()
            await wait_for(lambda: "sign-in withdrawn" in node.log_text(), timeout=10)
            watcher = await open_socket(node, socks)
            user_data = json.dumps({"id": "watcher", "watchlist": ["leaver"]})
            await watcher.send_signin(user_data, key=node.key, secret=node.secret)
            await watcher.expect("pusher:signin_success")
            frame = await watcher.expect("pusher_internal:watchlist_events")
            assert data_of(frame) == {"events": [{"name": "offline", "user_ids": ["leaver"]}]}
        finally:
            await close_all(socks)


# --- a stalled Redis ---------------------------------------------------------------------------


async def frames_until(sock: PusherSocket, marker: str, timeout: float = 20.0) -> list[dict[str, Any]]:
    """Every frame (with its position fields) up to the ``marker`` event, which is left out."""
    frames: list[dict[str, Any]] = []
    deadline = time.monotonic() + timeout
    while True:
        frame = await sock.recv_raw(timeout=max(0.1, deadline - time.monotonic()))
        if frame["event"] == marker:
            return frames
        frames.append(frame)


async def test_a_publish_caught_in_a_redis_stall_reaches_every_subscriber_once_and_is_stored_once() -> None:
    """Redis stops (SIGSTOP) while a publish to a channel with history is on its way. The publish
    times out and is delivered on its own node at once; when Redis resumes it runs the command
    once, so the other node gets it once with one serial, its own node drops the copy it already
    delivered, and it is stored once. (redis-py used to send the timed-out script again: every
    subscriber got the event twice, with two serials, and it was stored twice.)"""
    socks: list[PusherSocket] = []
    prefix = f"cluster-{uuid.uuid4().hex[:12]}"
    channel = "private-ledger"
    env_extra = {"CLARION_HISTORY": "private-:100:300", "CLARION_REDIS_TIMEOUT": "1"}
    with private_redis() as redis, contextlib.ExitStack() as stack:
        env = {**cluster_env(prefix, **env_extra), "CLARION_REDIS_URL": redis.url}
        a, b = (stack.enter_context(run_server(env=env)) for _ in range(2))
        try:
            sub_a, sub_b = await open_socket(a, socks), await open_socket(b, socks)
            for sock, node in ((sub_a, a), (sub_b, b)):
                await subscribe(sock, node, channel)
                await subscribe(sock, node, "marks")
            # Traffic has flowed: the bus carries events both ways.
            await trigger(a, channel, "before")
            for sock in (sub_a, sub_b):
                await sock.expect("before", channel)

            with redis.paused():
                publishing = asyncio.create_task(trigger(a, channel, "stalled", {"n": 1}))
                await wait_for(publishing.done, timeout=60)  # answered while Redis is still paused
                publishing.result()
            await wait_ready([a, b], 200, timeout=30)
            marker = f"marker-{uuid.uuid4().hex[:6]}"
            await trigger(b, "marks", marker)
            got = {name: await frames_until(sock, marker) for name, sock in (("a", sub_a), ("b", sub_b))}
        finally:
            await close_all(socks)
        client = aioredis.Redis.from_url(redis.url)
        try:
            stored = await client.xrange(f"{prefix}:{a.app_id}:hist:{channel}")
        finally:
            await client.aclose()
    for name, frames in got.items():
        copies = [frame for frame in frames if frame["event"] == "stalled"]
        assert len(copies) == 1, (name, frames)
    # a delivered it while Redis was away (no position); b got it through the bus, with one.
    assert "serial" not in got["a"][0]
    assert [frame["serial"] for frame in got["b"] if frame["event"] == "stalled"] == [2]
    assert stored is not None
    assert sum(fields is not None and b'"stalled"' in fields[b"f"] for _, fields in stored) == 1


async def health_failures(node: RunningServer) -> float:
    async with aiohttp.ClientSession() as session, session.get(node.http_url + "/metrics") as response:
        text = await response.text()
    lines = [line for line in text.splitlines() if line.startswith("clarion_scaling_health_failures_total ")]
    return float(lines[0].split()[1]) if lines else 0.0


async def test_ready_turns_503_while_redis_is_paused_and_200_once_it_answers_again() -> None:
    """The bus reader never notices a silent Redis; the active health check does, within its
    interval and timeout, and counts and logs it."""
    env_extra = {"CLARION_REDIS_TIMEOUT": "0.5", "CLARION_REDIS_HEALTH_INTERVAL": "0.2"}
    with private_redis() as redis, run_server(env={**cluster_env(**env_extra), "CLARION_REDIS_URL": redis.url}) as node:
        await wait_ready([node], 200, timeout=10)
        failures = await health_failures(node)
        with redis.paused():
            # Within the health check's interval and two timeouts (1.2 s); before, a command had to time
            # out twice (2 x 5 s) and the bus reader never noticed.
            await wait_ready([node], 503, timeout=8)

            async def counted() -> bool:
                return await health_failures(node) > failures

            await wait_for(counted, timeout=20)
        await wait_ready([node], 200, timeout=20)
        await node.logged("redis unreachable")
        await wait_for(lambda: "redis connected" in node.log_text().split("redis unreachable", 1)[1])


async def test_with_redis_known_unhealthy_api_calls_and_subscribes_are_answered_without_waiting_on_it() -> None:
    """Redis stalls: the first command to go out waits for its timeout, and the health check it
    calls marks Redis unhealthy.
    From then on, while Redis is still paused, a trigger answers and reaches the local subscriber,
    subscribes (presence too) and API reads are answered, and none of it sends anything to Redis:
    it all goes to the local mirror, written back later. (The health check is set to run rarely
    here, so that only these calls could send anything.)"""
    socks: list[PusherSocket] = []
    env_extra = {"CLARION_REDIS_TIMEOUT": "1", "CLARION_REDIS_HEALTH_INTERVAL": "60"}
    with private_redis() as redis, run_server(env={**cluster_env(**env_extra), "CLARION_REDIS_URL": redis.url}) as node:
        try:
            listener = await open_socket(node, socks)
            await subscribe(listener, node, "news")
            with redis.paused():
                await asyncio.wait_for(trigger(node, "news", "first"), timeout=60)
                await wait_ready([node], 503, timeout=10)
                await listener.expect("first", "news", timeout=10)
                sent = redis.unread()
                assert sent > 0  # the first command did go out, and waits in Redis's socket

                await asyncio.wait_for(trigger(node, "news", "second"), timeout=20)
                await listener.expect("second", "news", timeout=10)
                newcomer = await open_socket(node, socks)
                await asyncio.wait_for(subscribe(newcomer, node, "news"), timeout=20)
                presence = await asyncio.wait_for(subscribe(newcomer, node, "presence-desk", "newcomer"), timeout=20)
                assert presence["ids"] == ["newcomer"]
                channels = await asyncio.wait_for(api_get(node, "/channels", info="subscription_count"), timeout=20)
                assert channels["channels"]["news"] == {"subscription_count": 2}
                assert redis.unread() == sent
        finally:
            await close_all(socks)


async def test_a_redis_unreachable_at_start_is_logged_and_ready_answers_503() -> None:
    port = free_port()  # nothing listens there
    env = {**cluster_env(), "CLARION_REDIS_URL": f"redis://127.0.0.1:{port}/0"}
    with run_server(env=env) as node:
        await wait_for(lambda: "redis unreachable" in node.log_text(), timeout=15)
        assert await ready_status(node) == 503
