"""User sign-in over a raw socket: ``pusher:signin``, user channels, terminate_connections, watchlists
and the sign-in timeout.

Where a socket must NOT get something, a marker event is triggered through the HTTP API on a
channel the socket is on, and must be its next frame.
"""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import Awaitable, Callable
from typing import Any

import pytest

from clarion.protocol.signatures import user_auth
from pusherclient import PusherSocket, api_call, expect_error, fresh, payload, still_open, wait_for
from redisproc import SHARED_REDIS_URL


async def send_signin(sock: PusherSocket, server: Any, user_data: str, *, secret: str | None = None) -> None:
    await sock.send_signin(user_data, key=server.key, secret=secret or server.secret)


async def sign_in(sock: PusherSocket, server: Any, user_id: str, **fields: Any) -> dict[str, Any]:
    """Sign in as ``user_id``; return the signin_success frame (a watchlist frame may follow)."""
    await send_signin(sock, server, json.dumps({"id": user_id, **fields}))
    return await sock.expect("pusher:signin_success")


async def user_channel_refused(sock: PusherSocket, user_id: str) -> None:
    channel = f"#server-to-user-{user_id}"
    refused = await sock.subscribe(channel)
    assert refused["event"] == "pusher:subscription_error", refused
    assert refused["channel"] == channel, refused
    assert payload(refused)["status"] == 403, refused


async def user_channel_joined(sock: PusherSocket, user_id: str) -> None:
    channel = f"#server-to-user-{user_id}"
    answer = await sock.subscribe(channel)
    assert answer == {"event": "pusher_internal:subscription_succeeded", "channel": channel, "data": "{}"}, answer


async def trigger(server: Any, channel: str, name: str = "marker", data: str = "{}") -> None:
    status, answer = await server.trigger(channel, name, data)
    assert status == 200, answer


async def listening(sock: PusherSocket) -> str:
    """Put ``sock`` on a fresh public channel, for markers."""
    channel = fresh("markers-")
    answer = await sock.subscribe(channel)
    assert answer["event"] == "pusher_internal:subscription_succeeded", answer
    return channel


async def next_is_marker(server: Any, sock: PusherSocket, channel: str) -> None:
    """Trigger a marker on ``channel``; it must be the socket's next frame (nothing came before it)."""
    await trigger(server, channel)
    frame = await sock.recv()
    assert frame == {"event": "marker", "channel": channel, "data": "{}"}, frame


async def occupied(server: Any, channel: str) -> bool:
    status, answer = await api_call(
        server.http_url, server.key, server.secret, "GET", f"/apps/{server.app_id}/channels/{channel}"
    )
    assert status == 200, answer
    return bool(answer["occupied"])


async def close_and_wait(server: Any, sock: PusherSocket) -> None:
    """Close ``sock`` and wait until the server has let it go (its probe channel is empty)."""
    probe = fresh("probe-")
    answer = await sock.subscribe(probe)
    assert answer["event"] == "pusher_internal:subscription_succeeded", answer
    await sock.close()

    async def gone() -> bool:
        return not await occupied(server, probe)

    await wait_for(gone)


def watch_events(frame: dict[str, Any]) -> dict[str, list[str]]:
    assert frame["event"] == "pusher_internal:watchlist_events", frame
    events = payload(frame)["events"]
    return {event["name"]: event["user_ids"] for event in events}


# --- signing in --------------------------------------------------------------------------------


async def test_signin_success_frame_carries_user_data_verbatim_double_encoded(server, connect) -> None:
    sock = await connect(server)
    user_data = '{"id":"ann","user_info":{"name":"Ann","langs":["en","fr"]}}'
    await send_signin(sock, server, user_data)
    frame = await sock.recv()
    assert set(frame) == {"event", "data"}, frame
    assert frame["event"] == "pusher:signin_success", frame
    assert isinstance(frame["data"], str), frame
    assert json.loads(frame["data"]) == {"user_data": user_data}
    await user_channel_joined(sock, "ann")


async def test_signin_with_a_bad_signature_is_4009_and_the_socket_stays_open_and_anonymous(server, connect) -> None:
    sock = await connect(server)
    await send_signin(sock, server, '{"id":"mallory"}', secret="not-the-secret")
    await expect_error(sock, 4009)
    await still_open(sock)
    await user_channel_refused(sock, "mallory")
    # The socket is usable: a proper sign-in afterwards works.
    await sign_in(sock, server, "mallory")
    await user_channel_joined(sock, "mallory")


async def test_signin_signed_for_another_socket_is_refused(server, connect) -> None:
    mine, theirs = await connect(server), await connect(server)
    user_data = '{"id":"thief"}'
    auth = user_auth(server.key, server.secret, theirs.socket_id, user_data)
    await mine.send("pusher:signin", {"auth": auth, "user_data": user_data})
    await expect_error(mine, 4009)
    await user_channel_refused(mine, "thief")


MALFORMED_FRAMES = [
    pytest.param("not an object", 4200, id="data-is-a-string"),
    pytest.param(["auth", "user_data"], 4200, id="data-is-a-list"),
    pytest.param({"user_data": '{"id":"u"}'}, 4200, id="auth-missing"),
    pytest.param({"auth": "test-key:00"}, 4200, id="user_data-missing"),
    pytest.param({"auth": "test-key:00", "user_data": {"id": "u"}}, 4200, id="user_data-not-a-string"),
]


@pytest.mark.parametrize(("data", "code"), MALFORMED_FRAMES)
async def test_malformed_signin_frame_is_refused_and_the_socket_survives(server, connect, data: Any, code: int) -> None:
    sock = await connect(server)
    await sock.send("pusher:signin", data)
    await expect_error(sock, code)
    await still_open(sock)
    await user_channel_refused(sock, "u")


BAD_USER_DATA = [
    pytest.param("not json", id="not-json"),
    pytest.param('["u"]', id="not-an-object"),
    pytest.param('{"user_info":{"name":"x"}}', id="id-missing"),
    pytest.param('{"id":""}', id="id-empty"),
    pytest.param('{"id":42}', id="id-a-number"),
    pytest.param('{"id":null}', id="id-null"),
    pytest.param(json.dumps({"id": "u" * 129}), id="id-129-characters"),
    pytest.param('{"id":"u","watchlist":"v"}', id="watchlist-not-a-list"),
]


@pytest.mark.parametrize("user_data", BAD_USER_DATA)
async def test_signed_but_invalid_user_data_is_refused_4009_and_the_socket_survives(
    server, connect, user_data: str
) -> None:
    sock = await connect(server)
    await send_signin(sock, server, user_data)
    await expect_error(sock, 4009)
    await still_open(sock)
    await user_channel_refused(sock, "u")


async def test_user_id_of_128_characters_is_accepted(server, connect) -> None:
    sock = await connect(server)
    long_id = "u" * 128
    await sign_in(sock, server, long_id)
    await user_channel_joined(sock, long_id)


async def test_signing_in_again_as_another_user_is_refused_and_the_first_user_stays(server, connect) -> None:
    sock = await connect(server)
    first, second = fresh("first-"), fresh("second-")
    await sign_in(sock, server, first)
    await send_signin(sock, server, json.dumps({"id": second}))
    await expect_error(sock, 4009)
    await user_channel_joined(sock, first)
    await user_channel_refused(sock, second)


async def test_signing_in_again_as_the_same_user_succeeds(server, connect) -> None:
    sock = await connect(server)
    user = fresh("same-")
    await sign_in(sock, server, user)
    await sign_in(sock, server, user)
    await user_channel_joined(sock, user)


# --- user channels -----------------------------------------------------------------------------


async def test_user_channel_is_refused_403_before_signin_and_for_another_user(server, connect) -> None:
    sock = await connect(server)
    me, other = fresh("me-"), fresh("other-")
    await user_channel_refused(sock, me)
    await sign_in(sock, server, me)
    await user_channel_refused(sock, other)
    await user_channel_joined(sock, me)


async def test_event_to_a_user_channel_reaches_every_tab_of_that_user_only(server, connect) -> None:
    u1, u2 = fresh("u1-"), fresh("u2-")
    tab1, tab2, other = await connect(server), await connect(server), await connect(server)
    for sock, user in ((tab1, u1), (tab2, u1), (other, u2)):
        await sign_in(sock, server, user)
        await user_channel_joined(sock, user)

    await trigger(server, f"#server-to-user-{u1}", "notice", '{"n":1}')
    for tab in (tab1, tab2):
        frame = await tab.recv()
        assert frame == {"event": "notice", "channel": f"#server-to-user-{u1}", "data": '{"n":1}'}, frame
    await next_is_marker(server, other, f"#server-to-user-{u2}")


# --- terminate_connections ---------------------------------------------------------------------


async def terminate_prefixed(server: Any, user_id: str) -> None:
    status, answer = await api_call(
        server.http_url,
        server.key,
        server.secret,
        "POST",
        f"/apps/{server.app_id}/users/{user_id}/terminate_connections",
        {},
    )
    assert (status, answer) == (200, {})


async def terminate_unprefixed(server: Any, user_id: str) -> None:
    path = f"/users/{user_id}/terminate_connections"
    status, answer = await api_call(server.http_url, server.key, server.secret, "POST", path, {})
    assert (status, answer) == (200, {})


async def terminate_with_sdk(server: Any, user_id: str) -> None:
    # The official SDK uses the unprefixed path; it is synchronous, so it runs off the loop.
    await asyncio.to_thread(server.pusher().terminate_user_connections, user_id)


@pytest.mark.parametrize(
    "terminate",
    [
        pytest.param(terminate_prefixed, id="apps-prefixed-path"),
        pytest.param(terminate_unprefixed, id="unprefixed-path"),
        pytest.param(terminate_with_sdk, id="official-sdk"),
    ],
)
async def test_terminate_connections_closes_that_users_sockets_with_4009_and_leaves_others(
    server, connect, terminate: Callable[[Any, str], Awaitable[None]]
) -> None:
    u1, u2 = fresh("doomed-"), fresh("spared-")
    tab1, tab2, other, anonymous = [await connect(server) for _ in range(4)]
    for sock, user in ((tab1, u1), (tab2, u1), (other, u2)):
        await sign_in(sock, server, user)

    await terminate(server, u1)
    assert await tab1.closed() == 4009
    assert await tab2.closed() == 4009
    await still_open(other)
    await still_open(anonymous)
    await user_channel_joined(other, u2)


async def test_terminate_connections_with_a_wrong_signature_is_401_and_closes_nothing(server, connect) -> None:
    user = fresh("safe-")
    sock = await connect(server)
    await sign_in(sock, server, user)
    status, _ = await api_call(
        server.http_url, server.key, "wrong-secret", "POST", f"/users/{user}/terminate_connections", {}
    )
    assert status == 401
    status, _ = await api_call(
        server.http_url,
        server.key,
        "wrong-secret",
        "POST",
        f"/apps/{server.app_id}/users/{user}/terminate_connections",
        {},
    )
    assert status == 401
    await still_open(sock)


# --- watchlists --------------------------------------------------------------------------------


async def test_signin_with_a_watchlist_reports_who_is_online_and_offline(server, connect) -> None:
    online, offline = fresh("here-"), fresh("away-")
    present, watcher = await connect(server), await connect(server)
    await sign_in(present, server, online)

    await sign_in(watcher, server, fresh("watcher-"), watchlist=[online, offline])
    assert watch_events(await watcher.recv()) == {"online": [online], "offline": [offline]}


async def test_the_watchlist_snapshot_comes_before_any_change_heard_while_it_is_read(server_factory, connect) -> None:
    # Through Redis a user's "online" travels the bus while the watcher signs in: it must not
    # overtake the watcher's snapshot, and must not be lost either (it follows the snapshot).
    server = server_factory(
        env={
            "CLARION_SCALING": "redis",
            "CLARION_REDIS_URL": SHARED_REDIS_URL,
            "CLARION_SCALING_PREFIX": f"watch-{uuid.uuid4().hex[:12]}",
        }
    )
    for _ in range(100):  # a race: each round is one more chance for it to show
        online, offline = fresh("here-"), fresh("away-")
        present, watcher = await connect(server), await connect(server)
        await send_signin(present, server, json.dumps({"id": online}))
        await send_signin(watcher, server, json.dumps({"id": fresh("watcher-"), "watchlist": [online, offline]}))
        await watcher.expect("pusher:signin_success")
        first = watch_events(await watcher.recv())
        if first != {"online": [online], "offline": [offline]}:
            # The snapshot may say "offline" for a user whose "online" was still on its way; then
            # that change must come right after it.
            assert first == {"offline": [online, offline]}, first
            assert watch_events(await watcher.recv()) == {"online": [online]}
        await present.close()
        await watcher.close()


async def test_through_redis_a_watcher_signing_in_after_the_users_answer_never_sees_them_offline(
    server_factory, connect
) -> None:
    # Two nodes of one cluster. signin_success means the user is online cluster-wide, so a watcher
    # that signs in on the other node once the user is answered must read them online, every time.
    env = {
        "CLARION_SCALING": "redis",
        "CLARION_REDIS_URL": SHARED_REDIS_URL,
        "CLARION_SCALING_PREFIX": f"race-{uuid.uuid4().hex[:12]}",
    }
    here, there = server_factory(env=env), server_factory(env=env)
    for attempt in range(100):  # a race: each round is one more chance for it to show
        user = fresh("here-")
        present, watcher = await connect(here), await connect(there)
        await sign_in(present, here, user)
        await send_signin(watcher, there, json.dumps({"id": fresh("watcher-"), "watchlist": [user]}))
        await watcher.expect("pusher:signin_success")
        assert watch_events(await watcher.recv()) == {"online": [user]}, f"round {attempt}"
        await present.close()
        await watcher.close()


async def test_watched_user_coming_online_and_going_offline_after_the_last_tab(server, connect) -> None:
    watched = fresh("watched-")
    watcher = await connect(server)
    await sign_in(watcher, server, fresh("watcher-"), watchlist=[watched])
    assert watch_events(await watcher.recv()) == {"offline": [watched]}
    markers = await listening(watcher)

    tab1 = await connect(server)
    await sign_in(tab1, server, watched)
    assert watch_events(await watcher.recv()) == {"online": [watched]}

    tab2 = await connect(server)
    await sign_in(tab2, server, watched)
    await next_is_marker(server, watcher, markers)  # a second tab is not news

    await close_and_wait(server, tab1)
    await next_is_marker(server, watcher, markers)  # one tab is still open: not offline yet

    await tab2.close()
    frame = await watcher.recv()
    assert watch_events(frame) == {"offline": [watched]}


async def test_watchlist_over_100_signs_in_watches_the_first_100_and_warns_4302(server, connect) -> None:
    prefix = fresh("crowd-")
    ids = [f"{prefix}-{n}" for n in range(101)]
    watcher = await connect(server)
    await sign_in(watcher, server, fresh("watcher-"), watchlist=ids)
    frames = [await watcher.recv() for _ in range(2)]
    watchlist_frames = [f for f in frames if f["event"] == "pusher_internal:watchlist_events"]
    error_frames = [f for f in frames if f["event"] == "pusher:error"]
    assert len(watchlist_frames) == 1 and len(error_frames) == 1, frames
    assert watch_events(watchlist_frames[0]) == {"offline": ids[:100]}
    assert payload(error_frames[0])["code"] == 4302
    markers = await listening(watcher)

    # The 101st id is not watched; the 100th is.
    extra = await connect(server)
    await sign_in(extra, server, ids[100])
    await next_is_marker(server, watcher, markers)
    hundredth = await connect(server)
    await sign_in(hundredth, server, ids[99])
    assert watch_events(await watcher.recv()) == {"online": [ids[99]]}


# --- sign-in timeout ---------------------------------------------------------------------------


async def test_signin_timeout_closes_an_anonymous_socket_4009_and_keeps_a_signed_in_one(server_factory) -> None:
    running = server_factory(env={"CLARION_SIGNIN_TIMEOUT": "1"})
    async with (
        await PusherSocket.open(running.ws_url()) as signed,
        await PusherSocket.open(running.ws_url()) as anonymous,
    ):
        await sign_in(signed, running, "patient")
        assert await anonymous.closed(timeout=5) == 4009
        await still_open(signed)
        # Still open a further timeout later (the close is not just late).
        late = await PusherSocket.open(running.ws_url())
        try:
            assert await late.closed(timeout=5) == 4009
        finally:
            await late.close()
        await still_open(signed)
