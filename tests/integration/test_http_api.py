"""The Pusher HTTP API against a real server: triggering, batches, channel queries, and refusals.

Every request is signed as the SDKs sign it (``signed_query``); the refusal tests take a valid
signed query and break exactly one thing in it.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import math
import os
import re
import socket
import time
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import pytest

from clarion.protocol.signatures import sign_api_request
from pusherclient import PusherSocket, api_call, fresh, raw_request, signed_query, wait_for
from wsframes import client_frame, handshake


async def post_event(server: Any, body: Any, **extra: str) -> tuple[int, Any]:
    return await api_call(
        server.http_url, server.key, server.secret, "POST", f"/apps/{server.app_id}/events", body, **extra
    )


async def post_batch(server: Any, batch: list[dict[str, Any]]) -> tuple[int, Any]:
    return await api_call(
        server.http_url, server.key, server.secret, "POST", f"/apps/{server.app_id}/batch_events", {"batch": batch}
    )


async def get(server: Any, path: str, **query: str) -> tuple[int, Any]:
    return await api_call(server.http_url, server.key, server.secret, "GET", f"/apps/{server.app_id}{path}", **query)


def assert_error(answer: Any) -> None:
    """Refusals carry a JSON body with a non-empty ``error`` message."""
    assert isinstance(answer, dict), answer
    assert isinstance(answer.get("error"), str), answer
    assert answer["error"].strip(), answer


async def subscribed(server: Any, channel: str, **subscribe: Any) -> PusherSocket:
    sock = await PusherSocket.open(server.ws_url())
    try:
        answer = await sock.subscribe(channel, **subscribe)
        assert answer["event"] == "pusher_internal:subscription_succeeded", answer
    except BaseException:
        await sock.close()
        raise
    return sock


async def presence(server: Any, channel: str, user_id: str) -> PusherSocket:
    return await subscribed(server, channel, key=server.key, secret=server.secret, channel_data={"user_id": user_id})


def _signed(server: Any, user_id: str) -> dict[str, Any]:
    return {"key": server.key, "secret": server.secret, "channel_data": {"user_id": user_id}}


def _not(predicate: Any) -> Any:
    async def negated() -> bool:
        return not await predicate()

    return negated


def _counted(server: Any, channel: str, expected: int) -> Any:
    """A ``wait_for`` predicate: the channel has ``expected`` subscribers."""

    async def check() -> bool:
        status, answer = await get(server, f"/channels/{channel}", info="subscription_count")
        assert status == 200, answer
        count: int | None = answer.get("subscription_count")
        return count == expected

    return check


class BlockingSubscriber:
    """A plain blocking socket, upgraded and subscribed, whose kernel buffer can be looked at
    without waiting: nothing reads it behind the test's back."""

    def __init__(self, server: Any, channel: str) -> None:
        self.sock = socket.create_connection((server.host, server.port), timeout=5)
        self.buffer = b""
        self.sock.sendall(handshake(server))
        while b"\r\n\r\n" not in self.buffer:
            self.buffer += self.sock.recv(4096)
        head, _, self.buffer = self.buffer.partition(b"\r\n\r\n")
        assert head.startswith(b"HTTP/1.1 101"), head
        assert self.next_event()["event"] == "pusher:connection_established"
        subscribe = {"event": "pusher:subscribe", "data": {"channel": channel}}
        self.sock.sendall(client_frame(0x1, json.dumps(subscribe).encode()))
        assert self.next_event()["event"] == "pusher_internal:subscription_succeeded"

    def next_event(self) -> dict[str, Any]:
        """One small unmasked text frame from the server, read blocking."""
        while len(self.buffer) < 2 or len(self.buffer) < 2 + (self.buffer[1] & 0x7F):
            self.buffer += self.sock.recv(4096)
        assert self.buffer[0] == 0x81 and self.buffer[1] < 126, self.buffer[:2]
        size = self.buffer[1]
        frame, self.buffer = self.buffer[2 : 2 + size], self.buffer[2 + size :]
        result: dict[str, Any] = json.loads(frame)
        return result

    def waiting_now(self) -> bytes:
        """What has arrived already, without waiting for more."""
        self.sock.setblocking(False)
        with contextlib.suppress(BlockingIOError):
            self.buffer += self.sock.recv(65536)
        self.sock.settimeout(5)
        return self.buffer


@contextlib.contextmanager
def blocking_subscribers(server: Any, channel: str, count: int) -> Iterator[list[BlockingSubscriber]]:
    subscribers: list[BlockingSubscriber] = []
    try:
        for _ in range(count):
            subscribers.append(BlockingSubscriber(server, channel))
        yield subscribers
    finally:
        for subscriber in subscribers:
            subscriber.sock.close()


# --- POST /apps/{id}/events ------------------------------------------------------------------


async def test_trigger_delivers_the_exact_frame_with_data_string_unchanged(server) -> None:
    channel = fresh("news-")
    data = '{"msg":"h\\u00e9llo \\"quoted\\"","n":[1, 2.50],"emoji":"\U0001f600"}'
    async with await subscribed(server, channel) as sock:
        status, answer = await post_event(server, {"name": "greet", "channel": channel, "data": data})
        assert (status, answer) == (200, {})
        frame = await sock.recv()
        assert frame == {"event": "greet", "channel": channel, "data": data}


@pytest.mark.parametrize("fanout", ["native", "python"])
async def test_the_api_answers_only_after_every_local_subscriber_was_written_to(server_factory, fanout: str) -> None:
    """An answer written first would wake the publisher to compete with the subscribers for the
    CPU while they read. With 300 subscribers the fan-out takes long enough that an answer sent
    before it would reach this test while the last sockets still had nothing. The embedded bus
    only: through Redis the event comes back from Redis, and the answer does not wait for it."""
    server = server_factory({"CLARION_FANOUT": fanout, "CLARION_SCALING": "memory"})
    channel = fresh("order-")
    with blocking_subscribers(server, channel, 300) as subscribers:
        for round_no in range(3):
            status, _ = await server.trigger(channel, "tick", str(round_no))
            assert status == 200
            # The last written first: they would be the ones still waiting.
            late = [i for i in reversed(range(300)) if b'"event":"tick"' not in subscribers[i].waiting_now()]
            assert late == [], f"round {round_no}: {len(late)} subscribers had nothing when the API answered"
            for sub in subscribers:
                assert sub.next_event() == {"event": "tick", "channel": channel, "data": str(round_no)}


async def test_trigger_relays_data_that_is_not_json_unchanged(server) -> None:
    channel = fresh("plain-")
    async with await subscribed(server, channel) as sock:
        status, _ = await post_event(server, {"name": "note", "channel": channel, "data": "just text, no JSON"})
        assert status == 200
        assert await sock.recv() == {"event": "note", "channel": channel, "data": "just text, no JSON"}


async def test_trigger_to_a_channels_list_delivers_to_each_channel(server) -> None:
    first, second, third = fresh("multi-a-"), fresh("multi-b-"), fresh("multi-c-")
    async with (
        await subscribed(server, first) as a,
        await subscribed(server, second) as b,
        await subscribed(server, third) as c,
    ):
        status, answer = await post_event(server, {"name": "fan", "channels": [first, second, third], "data": "x"})
        assert (status, answer) == (200, {})
        assert await a.recv() == {"event": "fan", "channel": first, "data": "x"}
        assert await b.recv() == {"event": "fan", "channel": second, "data": "x"}
        assert await c.recv() == {"event": "fan", "channel": third, "data": "x"}


async def test_one_socket_on_several_listed_channels_gets_one_frame_per_channel(server) -> None:
    first, second = fresh("both-a-"), fresh("both-b-")
    async with await subscribed(server, first) as sock:
        assert (await sock.subscribe(second))["event"] == "pusher_internal:subscription_succeeded"
        status, _ = await post_event(server, {"name": "fan", "channels": [first, second], "data": "y"})
        assert status == 200
        got = {(await sock.recv())["channel"], (await sock.recv())["channel"]}
        assert got == {first, second}


async def test_trigger_with_socket_id_skips_that_socket_but_not_other_subscribers(server) -> None:
    channel = fresh("excl-")
    async with await subscribed(server, channel) as sender, await subscribed(server, channel) as other:
        status, _ = await post_event(
            server, {"name": "echo", "channel": channel, "data": "1", "socket_id": sender.socket_id}
        )
        assert status == 200
        assert await other.recv() == {"event": "echo", "channel": channel, "data": "1"}
        # A second, unfiltered event: the excluded socket's first frame must be this one.
        status, _ = await post_event(server, {"name": "after", "channel": channel, "data": "2"})
        assert status == 200
        assert await sender.recv() == {"event": "after", "channel": channel, "data": "2"}
        assert await other.recv() == {"event": "after", "channel": channel, "data": "2"}


async def test_trigger_info_subscription_count_answers_per_channel_counts(server) -> None:
    busy, quiet = fresh("counted-"), fresh("empty-")
    async with await subscribed(server, busy) as a, await subscribed(server, busy) as b:
        status, answer = await post_event(
            server, {"name": "e", "channels": [busy, quiet], "data": "d", "info": "subscription_count"}
        )
        assert status == 200
        assert answer == {"channels": {busy: {"subscription_count": 2}, quiet: {"subscription_count": 0}}}
        await a.expect("e", busy)
        await b.expect("e", busy)


async def test_trigger_info_user_count_on_presence_channel_counts_distinct_users(server) -> None:
    channel = fresh("presence-room-")
    async with (
        await presence(server, channel, "u1") as u1,
        await presence(server, channel, "u1") as u1_again,
        await presence(server, channel, "u2") as u2,
    ):
        status, answer = await post_event(
            server, {"name": "e", "channel": channel, "data": "d", "info": "user_count,subscription_count"}
        )
        assert status == 200
        assert answer == {"channels": {channel: {"user_count": 2, "subscription_count": 3}}}
        for sock in (u1, u1_again, u2):
            frame = await sock.recv()
            while frame["event"].startswith("pusher_internal:member_"):
                frame = await sock.recv()
            assert frame == {"event": "e", "channel": channel, "data": "d"}


async def test_trigger_info_user_count_on_a_non_presence_channel_is_400(server) -> None:
    channel = fresh("public-")
    async with await subscribed(server, channel) as sock:
        status, answer = await post_event(server, {"name": "e", "channel": channel, "data": "d", "info": "user_count"})
        assert status == 400
        assert_error(answer)
        # Refused before publishing: the next frame is a later, valid event.
        status, _ = await post_event(server, {"name": "ok", "channel": channel, "data": "d"})
        assert status == 200
        await sock.expect("ok", channel)


# --- POST /apps/{id}/batch_events ------------------------------------------------------------


async def test_batch_delivers_each_event_in_order(server) -> None:
    one, two = fresh("batch-a-"), fresh("batch-b-")
    async with await subscribed(server, one) as a, await subscribed(server, two) as b:
        batch = [
            {"name": "first", "channel": one, "data": "1"},
            {"name": "second", "channel": two, "data": "2"},
            {"name": "third", "channel": one, "data": "3"},
            {"name": "fourth", "channel": one, "data": "4"},
        ]
        status, answer = await post_batch(server, batch)
        assert (status, answer) == (200, {})
        assert [await a.recv() for _ in range(3)] == [
            {"event": "first", "channel": one, "data": "1"},
            {"event": "third", "channel": one, "data": "3"},
            {"event": "fourth", "channel": one, "data": "4"},
        ]
        assert await b.recv() == {"event": "second", "channel": two, "data": "2"}


async def test_batch_of_ten_passes_and_eleven_is_400_with_nothing_delivered(server) -> None:
    channel = fresh("batch-limit-")
    async with await subscribed(server, channel) as sock:
        eleven = [{"name": f"e{i}", "channel": channel, "data": str(i)} for i in range(11)]
        status, answer = await post_batch(server, eleven)
        assert status == 400
        assert_error(answer)
        status, _ = await post_batch(server, eleven[:10])
        assert status == 200
        # The first frame is from the accepted batch of ten: none of the eleven went out.
        assert [(await sock.recv())["event"] for _ in range(10)] == [f"e{i}" for i in range(10)]


async def test_batch_info_answers_one_entry_per_event_in_order(server) -> None:
    room, public = fresh("presence-batch-"), fresh("batch-info-")
    async with await presence(server, room, "u1") as member, await subscribed(server, public) as watcher:
        status, answer = await post_batch(
            server,
            [
                {"name": "a", "channel": room, "data": "1", "info": "user_count,subscription_count"},
                {"name": "b", "channel": public, "data": "2"},
                {"name": "c", "channel": public, "data": "3", "info": "subscription_count"},
            ],
        )
        assert status == 200
        assert answer == {
            "batch": [{"user_count": 1, "subscription_count": 1}, {}, {"subscription_count": 1}],
        }
        await member.expect("a", room)
        await watcher.expect("b", public)
        await watcher.expect("c", public)


# --- 401: authentication ---------------------------------------------------------------------


def _trigger_body(channel: str = "auth-check") -> bytes:
    return json.dumps({"name": "e", "channel": channel, "data": "d"}).encode()


async def _send(server: Any, params: dict[str, str], body: bytes, path: str | None = None) -> tuple[int, Any]:
    return await raw_request(server.http_url, "POST", path or f"/apps/{server.app_id}/events", params, body)


async def test_bad_signature_is_401(server) -> None:
    body = _trigger_body()
    params = signed_query(server.key, server.secret, "POST", f"/apps/{server.app_id}/events", body)
    params["auth_signature"] = ("0" if params["auth_signature"][0] != "0" else "1") + params["auth_signature"][1:]
    status, answer = await _send(server, params, body)
    assert status == 401
    assert_error(answer)


async def test_signature_made_with_the_wrong_secret_is_401(server) -> None:
    body = _trigger_body()
    params = signed_query(server.key, "not-the-secret", "POST", f"/apps/{server.app_id}/events", body)
    status, answer = await _send(server, params, body)
    assert status == 401
    assert_error(answer)


async def test_timestamp_601_seconds_old_is_401(server) -> None:
    body = _trigger_body()
    stale = int(time.time()) - 601
    params = signed_query(server.key, server.secret, "POST", f"/apps/{server.app_id}/events", body, timestamp=stale)
    status, answer = await _send(server, params, body)
    assert status == 401
    assert_error(answer)


async def test_timestamp_601_seconds_in_the_future_is_401(server) -> None:
    body = _trigger_body()
    ahead = math.ceil(time.time()) + 601
    params = signed_query(server.key, server.secret, "POST", f"/apps/{server.app_id}/events", body, timestamp=ahead)
    status, answer = await _send(server, params, body)
    assert status == 401
    assert_error(answer)


async def test_timestamp_599_seconds_old_is_accepted(server) -> None:
    channel = fresh("fresh-")
    async with await subscribed(server, channel) as sock:
        body = _trigger_body(channel)
        # ceil: at most 599 s (plus the request's own latency) old when the server reads it.
        old = math.ceil(time.time()) - 599
        params = signed_query(server.key, server.secret, "POST", f"/apps/{server.app_id}/events", body, timestamp=old)
        status, answer = await _send(server, params, body)
        assert (status, answer) == (200, {})
        await sock.expect("e", channel)


async def test_wrong_body_md5_is_401(server) -> None:
    body = _trigger_body()
    params = signed_query(
        server.key,
        server.secret,
        "POST",
        f"/apps/{server.app_id}/events",
        b"",
        body_md5=hashlib.md5(b"another body").hexdigest(),
    )
    status, answer = await _send(server, params, body)
    assert status == 401
    assert_error(answer)


async def test_body_changed_after_signing_is_401(server) -> None:
    signed_body = _trigger_body("auth-a")
    params = signed_query(server.key, server.secret, "POST", f"/apps/{server.app_id}/events", signed_body)
    status, answer = await _send(server, params, _trigger_body("auth-b"))
    assert status == 401
    assert_error(answer)


async def test_missing_body_md5_with_a_body_is_401(server) -> None:
    body = _trigger_body()
    # Signed over a query without body_md5, so only the missing hash can be the problem.
    params = signed_query(server.key, server.secret, "POST", f"/apps/{server.app_id}/events", b"")
    assert "body_md5" not in params
    status, answer = await _send(server, params, body)
    assert status == 401
    assert_error(answer)


@pytest.mark.parametrize("missing", ["auth_key", "auth_signature", "auth_timestamp"])
async def test_missing_auth_parameter_is_401(server, missing: str) -> None:
    body = _trigger_body()
    params = signed_query(server.key, server.secret, "POST", f"/apps/{server.app_id}/events", body)
    del params[missing]
    status, answer = await _send(server, params, body)
    assert status == 401
    assert_error(answer)


@pytest.mark.parametrize(
    ("param", "value"), [("auth_version", "2.0"), ("auth_timestamp", "yesterday"), ("auth_timestamp", "")]
)
async def test_bad_auth_parameter_value_is_401(server, param: str, value: str) -> None:
    body = _trigger_body()
    # Signed over the bad value, so only the value itself can be the problem.
    params = signed_query(server.key, server.secret, "POST", f"/apps/{server.app_id}/events", body)
    del params["auth_signature"]
    params[param] = value
    params["auth_signature"] = sign_api_request(server.secret, "POST", f"/apps/{server.app_id}/events", params)
    status, answer = await _send(server, params, body)
    assert status == 401
    assert_error(answer)


async def test_unsigned_get_is_401(server) -> None:
    status, answer = await raw_request(server.http_url, "GET", f"/apps/{server.app_id}/channels", {})
    assert status == 401
    assert_error(answer)


TWO_APPS = """
[[apps]]
id = "501"
key = "key-alpha"
secret = "secret-alpha"

[[apps]]
id = "502"
key = "key-beta"
secret = "secret-beta"
"""


async def test_key_and_secret_of_another_app_are_401(server_factory) -> None:
    srv = server_factory(config=TWO_APPS)
    body = json.dumps({"name": "e", "channel": "news", "data": "d"}).encode()
    path = "/apps/501/events"
    # Correctly signed by app 502, sent to app 501's endpoint.
    params = signed_query("key-beta", "secret-beta", "POST", path, body)
    status, answer = await raw_request(srv.http_url, "POST", path, params, body)
    assert status == 401
    assert_error(answer)
    # App 501's own credentials work on the same server.
    status, answer = await api_call(srv.http_url, "key-alpha", "secret-alpha", "POST", path, json.loads(body))
    assert (status, answer) == (200, {})


# --- 400: bad requests -----------------------------------------------------------------------


async def test_body_that_is_not_json_is_400(server) -> None:
    status, answer = await post_event(server, b"{not json")
    assert status == 400
    assert_error(answer)


@pytest.mark.parametrize(
    "body",
    [
        pytest.param({"channel": "c", "data": "d"}, id="missing-name"),
        pytest.param({"name": "", "channel": "c", "data": "d"}, id="empty-name"),
        pytest.param({"name": "e" * 201, "channel": "c", "data": "d"}, id="name-201-chars"),
        pytest.param({"name": 7, "channel": "c", "data": "d"}, id="name-not-a-string"),
        pytest.param({"name": "e", "channel": "c", "data": {"an": "object"}}, id="data-object"),
        pytest.param({"name": "e", "channel": "c", "data": 5}, id="data-number"),
        pytest.param({"name": "e", "channel": "c"}, id="data-missing"),
        pytest.param({"name": "e", "data": "d"}, id="no-channel-nor-channels"),
        pytest.param({"name": "e", "channels": [], "data": "d"}, id="channels-empty"),
        pytest.param({"name": "e", "channels": [f"c{i}" for i in range(101)], "data": "d"}, id="channels-101"),
        pytest.param({"name": "e", "channels": "c", "data": "d"}, id="channels-not-a-list"),
        pytest.param({"name": "e", "channel": "c" * 165, "data": "d"}, id="channel-165-chars"),
        pytest.param({"name": "e", "channel": "bad channel", "data": "d"}, id="channel-with-space"),
        pytest.param({"name": "e", "channel": "bad!chan", "data": "d"}, id="channel-with-bang"),
        pytest.param({"name": "e", "channels": ["ok", "bad/chan"], "data": "d"}, id="one-bad-in-channels"),
        pytest.param({"name": "e", "channel": "c", "data": "d", "socket_id": "abc"}, id="socket-id-letters"),
        pytest.param({"name": "e", "channel": "c", "data": "d", "socket_id": "123"}, id="socket-id-no-dot"),
        pytest.param({"name": "e", "channel": "c", "data": "d", "socket_id": 1.5}, id="socket-id-number"),
        pytest.param({"name": "e", "channel": "c", "data": "d", "info": "colour"}, id="unknown-info"),
        pytest.param(["not", "an", "object"], id="body-is-a-list"),
    ],
)
async def test_invalid_trigger_body_is_400(server, body: Any) -> None:
    status, answer = await post_event(server, body)
    assert status == 400, answer
    assert_error(answer)


async def test_limits_themselves_are_accepted(server) -> None:
    """164-character channel name, 100 channels, 200-character event name: all allowed."""
    status, answer = await post_event(server, {"name": "e" * 200, "channel": "c", "data": "d"})
    assert (status, answer) == (200, {})
    status, answer = await post_event(server, {"name": "e", "channel": "c" * 164, "data": "d"})
    assert (status, answer) == (200, {})
    status, answer = await post_event(server, {"name": "e", "channels": [f"c{i}" for i in range(100)], "data": "d"})
    assert (status, answer) == (200, {})


@pytest.mark.parametrize(
    "batch",
    [
        pytest.param({"events": []}, id="no-batch-key"),
        pytest.param({"batch": "x"}, id="batch-not-a-list"),
        pytest.param({"batch": [{"name": "e", "data": "d"}]}, id="item-without-channel"),
        pytest.param({"batch": [{"name": "e", "channel": "c", "data": {"x": 1}}]}, id="item-data-not-string"),
    ],
)
async def test_invalid_batch_body_is_400(server, batch: Any) -> None:
    status, answer = await api_call(
        server.http_url, server.key, server.secret, "POST", f"/apps/{server.app_id}/batch_events", batch
    )
    assert status == 400, answer
    assert_error(answer)


# --- 413: data size --------------------------------------------------------------------------


async def test_data_of_10240_bytes_passes_and_10241_is_413(server) -> None:
    channel = fresh("size-")
    async with await subscribed(server, channel) as sock:
        status, answer = await post_event(server, {"name": "big", "channel": channel, "data": "x" * 10241})
        assert status == 413
        assert_error(answer)
        status, _ = await post_event(server, {"name": "big", "channel": channel, "data": "x" * 10240})
        assert status == 200
        frame = await sock.expect("big", channel)
        assert frame["data"] == "x" * 10240


async def test_batch_event_over_the_data_limit_is_413(server) -> None:
    status, answer = await post_batch(
        server,
        [{"name": "ok", "channel": "c", "data": "x"}, {"name": "big", "channel": "c", "data": "x" * 10241}],
    )
    assert status == 413
    assert_error(answer)


async def test_max_message_size_from_env_counts_utf8_bytes(server_factory) -> None:
    srv = server_factory(env={"CLARION_MAX_MESSAGE_SIZE": "100"})
    channel = "sized"
    async with await subscribed(srv, channel) as sock:
        for data, expected in [
            ("a" * 101, 413),
            ("é" * 50 + "a", 413),  # 51 characters, 101 bytes
            ("€" * 34, 413),  # 34 characters, 102 bytes
            ("a" * 100, 200),
            ("é" * 50, 200),  # 50 characters, 100 bytes
        ]:
            status, answer = await post_event(srv, {"name": "e", "channel": channel, "data": data})
            assert status == expected, (len(data.encode()), answer)
            if expected == 413:
                assert_error(answer)
        assert (await sock.expect("e", channel))["data"] == "a" * 100
        assert (await sock.expect("e", channel))["data"] == "é" * 50


# --- 404 -------------------------------------------------------------------------------------


async def test_unknown_app_id_is_404(server) -> None:
    for method, path, body in [
        ("POST", "/apps/999999/events", {"name": "e", "channel": "c", "data": "d"}),
        ("POST", "/apps/999999/batch_events", {"batch": []}),
        ("GET", "/apps/999999/channels", None),
        ("GET", "/apps/999999/channels/c", None),
    ]:
        status, answer = await api_call(server.http_url, server.key, server.secret, method, path, body)
        assert status == 404, (method, path, answer)
        assert_error(answer)


# --- GET /apps/{id}/channels -----------------------------------------------------------------


async def test_channel_list_holds_only_occupied_channels(server_factory) -> None:
    srv = server_factory()
    async with await subscribed(srv, "alpha") as a, await subscribed(srv, "presence-lobby", **_signed(srv, "u1")):
        assert (await a.subscribe("beta"))["event"] == "pusher_internal:subscription_succeeded"
        # An event to a channel nobody is on does not make it occupied.
        status, _ = await post_event(srv, {"name": "e", "channel": "nobody-here", "data": "d"})
        assert status == 200
        status, answer = await get(srv, "/channels")
        assert status == 200
        assert answer == {"channels": {"alpha": {}, "beta": {}, "presence-lobby": {}}}


async def test_channel_list_filter_by_prefix(server) -> None:
    tag = fresh("pfx")
    async with (
        await subscribed(server, f"{tag}-one") as a,
        await subscribed(server, f"{tag}-two"),
        await subscribed(server, f"other{tag}-x"),
    ):
        assert (await a.subscribe(f"private-{tag}", key=server.key, secret=server.secret))["event"] == (
            "pusher_internal:subscription_succeeded"
        )
        status, answer = await get(server, "/channels", filter_by_prefix=f"{tag}-")
        assert status == 200
        assert answer == {"channels": {f"{tag}-one": {}, f"{tag}-two": {}}}
        status, answer = await get(server, "/channels", filter_by_prefix=f"private-{tag}")
        assert (status, answer) == (200, {"channels": {f"private-{tag}": {}}})


async def test_channel_list_user_count_needs_presence_prefix(server) -> None:
    status, answer = await get(server, "/channels", info="user_count")
    assert status == 400
    assert_error(answer)
    status, answer = await get(server, "/channels", info="user_count", filter_by_prefix="private-")
    assert status == 400
    assert_error(answer)


async def test_channel_list_user_count_counts_distinct_users_per_presence_channel(server) -> None:
    tag = fresh("uc")
    room_a, room_b = f"presence-{tag}-a", f"presence-{tag}-b"
    async with (
        await presence(server, room_a, "u1"),
        await presence(server, room_a, "u1"),
        await presence(server, room_a, "u2"),
        await presence(server, room_b, "u3"),
    ):
        status, answer = await get(server, "/channels", filter_by_prefix=f"presence-{tag}-", info="user_count")
        assert status == 200
        assert answer == {"channels": {room_a: {"user_count": 2}, room_b: {"user_count": 1}}}


async def test_channel_list_unknown_info_is_400(server) -> None:
    status, answer = await get(server, "/channels", info="colour")
    assert status == 400
    assert_error(answer)


async def test_channel_leaves_the_list_after_its_last_subscriber_unsubscribes(server) -> None:
    channel = fresh("leaving-")

    async def listed() -> bool:
        status, answer = await get(server, "/channels", filter_by_prefix=channel)
        assert status == 200
        return channel in answer["channels"]

    async with await subscribed(server, channel) as a, await subscribed(server, channel) as b:
        assert await listed()
        await a.send("pusher:unsubscribe", {"channel": channel})
        await wait_for(_counted(server, channel, 1))
        assert await listed()
        await b.send("pusher:unsubscribe", {"channel": channel})
        await wait_for(_not(listed))
        status, answer = await get(server, f"/channels/{channel}")
        assert (status, answer) == (200, {"occupied": False})


async def test_channel_leaves_the_list_when_its_last_subscriber_disconnects(server) -> None:
    channel = fresh("gone-")

    async def listed() -> bool:
        status, answer = await get(server, "/channels", filter_by_prefix=channel)
        assert status == 200, answer
        return channel in answer["channels"]

    sock = await subscribed(server, channel)
    try:
        assert await listed()
    finally:
        await sock.close()
    await wait_for(_not(listed))


# --- GET /apps/{id}/channels/{name} ----------------------------------------------------------


async def test_channel_state_of_unoccupied_channel_is_occupied_false(server) -> None:
    status, answer = await get(server, f"/channels/{fresh('vacant-')}")
    assert (status, answer) == (200, {"occupied": False})
    status, answer = await get(server, f"/channels/{fresh('vacant-')}", info="subscription_count")
    assert (status, answer) == (200, {"occupied": False, "subscription_count": 0})


async def test_channel_state_of_occupied_channel_with_subscription_count(server) -> None:
    channel = fresh("occupied-")
    async with await subscribed(server, channel), await subscribed(server, channel):
        status, answer = await get(server, f"/channels/{channel}")
        assert (status, answer) == (200, {"occupied": True})
        status, answer = await get(server, f"/channels/{channel}", info="subscription_count")
        assert (status, answer) == (200, {"occupied": True, "subscription_count": 2})


async def test_channel_state_of_presence_channel_gives_user_count(server) -> None:
    channel = fresh("presence-state-")
    async with (
        await presence(server, channel, "u1"),
        await presence(server, channel, "u1"),
        await presence(server, channel, "u2"),
    ):
        status, answer = await get(server, f"/channels/{channel}", info="user_count,subscription_count")
        assert status == 200
        assert answer == {"occupied": True, "user_count": 2, "subscription_count": 3}


async def test_channel_state_user_count_on_non_presence_channel_is_400(server) -> None:
    channel = fresh("private-nouser-")
    async with await subscribed(server, channel, key=server.key, secret=server.secret):
        status, answer = await get(server, f"/channels/{channel}", info="user_count")
        assert status == 400
        assert_error(answer)


@pytest.mark.parametrize(
    "name",
    [pytest.param("c" * 165, id="165-chars"), pytest.param("bad!name", id="bang"), pytest.param("a*b", id="star")],
)
async def test_channel_state_of_invalid_name_is_400(server, name: str) -> None:
    status, answer = await get(server, f"/channels/{name}")
    assert status == 400, answer
    assert_error(answer)


async def test_channel_state_unknown_info_is_400(server) -> None:
    status, answer = await get(server, "/channels/anything", info="colour")
    assert status == 400
    assert_error(answer)


# --- GET /apps/{id}/channels/{name}/users ----------------------------------------------------


async def test_presence_users_lists_each_user_once(server) -> None:
    channel = fresh("presence-users-")
    async with (
        await presence(server, channel, "u1"),
        await presence(server, channel, "u2"),
        await presence(server, channel, "u1"),
    ):
        status, answer = await get(server, f"/channels/{channel}/users")
        assert status == 200
        assert set(answer) == {"users"}
        assert sorted(answer["users"], key=lambda u: u["id"]) == [{"id": "u1"}, {"id": "u2"}]


async def test_presence_users_of_empty_presence_channel_is_an_empty_list(server) -> None:
    status, answer = await get(server, f"/channels/{fresh('presence-nobody-')}/users")
    assert (status, answer) == (200, {"users": []})


async def test_presence_users_drops_a_user_after_their_last_socket_leaves(server) -> None:
    channel = fresh("presence-leave-")
    async with await presence(server, channel, "stay") as stay:
        first = await presence(server, channel, "go")
        second = await presence(server, channel, "go")
        try:
            await stay.expect("pusher_internal:member_added", channel)

            async def ids() -> list[str]:
                status, answer = await get(server, f"/channels/{channel}/users")
                assert status == 200
                return sorted(u["id"] for u in answer["users"])

            await first.close()
            await wait_for(_counted(server, channel, 2))
            assert await ids() == ["go", "stay"]
            await second.close()
            await stay.expect("pusher_internal:member_removed", channel)
            assert await ids() == ["stay"]
        finally:
            await first.close()
            await second.close()


@pytest.mark.parametrize("prefix", ["public-users-", "private-users-"])
async def test_users_of_a_non_presence_channel_is_400(server, prefix: str) -> None:
    status, answer = await get(server, f"/channels/{fresh(prefix)}/users")
    assert status == 400
    assert_error(answer)


# --- robustness ------------------------------------------------------------------------------


async def test_server_keeps_answering_valid_triggers_between_refused_requests(server) -> None:
    channel = fresh("steady-")
    path = f"/apps/{server.app_id}/events"
    good = {"name": "ok", "channel": channel, "data": "d"}
    body = json.dumps(good).encode()
    bad_signature = signed_query(server.key, "wrong-secret", "POST", path, body)
    stale = signed_query(server.key, server.secret, "POST", path, body, timestamp=int(time.time()) - 601)
    bad_requests: list[Callable[[], Awaitable[tuple[int, Any]]]] = [
        lambda: _send(server, bad_signature, body),
        lambda: _send(server, stale, body),
        lambda: _send(server, {}, body),
        lambda: post_event(server, b"\xff\xfe not json"),
        lambda: post_event(server, b"[" * 10000),
        lambda: post_event(server, b'{"name": "e", "channel": "c", "data": "' + b"x" * 20000 + b'"}'),
        lambda: post_event(server, {"name": "e", "channel": "c" * 500, "data": "d"}),
        lambda: post_event(server, {"name": "e", "channels": list(range(5)), "data": "d"}),
        lambda: post_event(server, {"name": None, "channel": None, "data": None, "socket_id": {}, "info": []}),
        lambda: post_batch(server, [None, 1, "x"]),  # type: ignore[list-item]  # not events, on purpose
        lambda: api_call(server.http_url, server.key, server.secret, "POST", "/apps/nope/events", good),
        lambda: get(server, "/channels/bad!name/users"),
    ]
    async with await subscribed(server, channel) as sock:
        for n, bad in enumerate(bad_requests):
            status, answer = await bad()
            assert 400 <= status < 500, (n, status, answer)
            assert_error(answer)
            status, answer = await post_event(server, {**good, "data": str(n)})
            assert (status, answer) == (200, {}), n
            assert await sock.recv() == {"event": "ok", "channel": channel, "data": str(n)}


async def test_channel_with_every_allowed_punctuation_works_in_paths_and_bodies(server) -> None:
    channel = fresh("a=b@c,d;e.f-g_h")
    async with await subscribed(server, channel) as sock:
        status, answer = await get(server, f"/channels/{channel}", info="subscription_count")
        assert (status, answer) == (200, {"occupied": True, "subscription_count": 1})
        status, answer = await get(server, "/channels", filter_by_prefix=channel)
        assert (status, answer) == (200, {"channels": {channel: {}}})
        status, _ = await post_event(server, {"name": "p", "channel": channel, "data": "d"})
        assert status == 200
        assert await sock.recv() == {"event": "p", "channel": channel, "data": "d"}


async def test_presence_users_gives_numeric_user_ids_as_strings(server) -> None:
    channel = fresh("presence-numeric-")
    async with await subscribed(server, channel, key=server.key, secret=server.secret, channel_data={"user_id": 10}):
        status, answer = await get(server, f"/channels/{channel}/users")
        assert (status, answer) == (200, {"users": [{"id": "10"}]})


async def test_disabled_app_is_403_once_authenticated(server_factory) -> None:
    srv = server_factory(config=TWO_APPS.replace('secret = "secret-beta"', 'secret = "secret-beta"\nenabled = false'))
    body = {"name": "e", "channel": "news", "data": "d"}
    status, answer = await api_call(srv.http_url, "key-beta", "secret-beta", "POST", "/apps/502/events", body)
    assert status == 403
    assert_error(answer)
    # A bad signature is still a 401: nothing about the app is told to an unauthenticated caller.
    status, answer = await api_call(srv.http_url, "key-beta", "wrong-secret", "POST", "/apps/502/events", body)
    assert status == 401
    status, _ = await api_call(srv.http_url, "key-alpha", "secret-alpha", "POST", "/apps/501/events", body)
    assert status == 200


# --- reading the body: judged first, then read within its route's limit and a deadline --------
# These speak HTTP over a raw socket: to send a head that announces a body and hold the body back,
# and to see exactly when the server answers and whether it closes the connection.

MiB = 1024 * 1024
# The default app's limits (docs/configuration.md): 6 bytes on the wire per byte of data, plus
# the envelope (channel names, event name, 1 KiB).
EVENTS_LIMIT = 6 * 10240 + 100 * (164 + 4) + 6 * 200 + 1024
BATCH_LIMIT = 10 * (6 * 10240 + (164 + 4) + 6 * 200 + 1024) + 1024
TERMINATE_LIMIT = 1024


@dataclass
class Answer:
    status: int
    headers: dict[str, str]
    body: Any
    closed: bool  # the server closed the connection after answering
    interim: list[int]  # 1xx answers before the final one
    elapsed: float


def request_head(
    server: Any, method: str, path: str, params: dict[str, str] | None = None, **headers: str | int
) -> bytes:
    target = path + (f"?{urlencode(params)}" if params else "")
    lines = [f"{method} {target} HTTP/1.1", f"Host: {server.host}:{server.port}"]
    lines += [f"{name.replace('_', '-')}: {value}" for name, value in headers.items()]
    return ("\r\n".join(lines) + "\r\n\r\n").encode()


async def _read_answer(reader: asyncio.StreamReader) -> tuple[int, dict[str, str], bytes, list[int]]:
    interim: list[int] = []
    while True:
        head = await reader.readuntil(b"\r\n\r\n")
        status_line, *header_lines = head.decode("latin-1").split("\r\n")
        status = int(status_line.split(" ")[1])
        headers = {}
        for line in header_lines:
            if line:
                name, _, value = line.partition(":")
                headers[name.strip().lower()] = value.strip()
        if status >= 200:
            body = await reader.readexactly(int(headers.get("content-length", "0")))
            return status, headers, body, interim
        interim.append(status)


async def exchange(
    server: Any, head: bytes, body: bytes = b"", *, pause: float = 0.0, rest: bytes = b"", within: float = 15.0
) -> Answer:
    """Send ``head`` and ``body`` (then, after ``pause``, ``rest``), read the answer, and see
    whether the server closes the connection after it."""
    started = time.monotonic()
    reader, writer = await asyncio.open_connection(server.host, server.port)
    try:
        writer.write(head + body)
        if pause:
            await asyncio.sleep(pause)
            writer.write(rest)
        try:
            async with asyncio.timeout(within):
                status, headers, raw, interim = await _read_answer(reader)
        except TimeoutError:
            raise AssertionError(f"no answer within {within} s: the server is waiting for the body") from None
        elapsed = time.monotonic() - started
        try:
            async with asyncio.timeout(5):
                closed = await reader.read(1) == b""
        except TimeoutError:
            closed = False
        except ConnectionResetError:
            closed = True
        try:
            parsed: Any = json.loads(raw)
        except ValueError:
            parsed = raw
        return Answer(status, headers, parsed, closed, interim, elapsed)
    finally:
        writer.close()
        with contextlib.suppress(OSError):
            await writer.wait_closed()


def padded_event(channel: str, size: int, name: str = "edge") -> bytes:
    """A valid event body of exactly ``size`` bytes (JSON allows the trailing spaces)."""
    body = json.dumps({"name": name, "channel": channel, "data": "x" * 10240}).encode()
    assert len(body) <= size
    return body + b" " * (size - len(body))


def padded_batch(channel: str, size: int) -> bytes:
    batch = [{"name": f"b{i}", "channel": channel, "data": "x" * 10240} for i in range(10)]
    body = json.dumps({"batch": batch}).encode()
    assert len(body) <= size
    return body + b" " * (size - len(body))


def chunked(body: bytes, *, end: bool = True) -> bytes:
    """``body`` in 8 KiB chunks; without ``end`` the last (empty) chunk never comes."""
    out = b"".join(
        f"{len(body[i : i + 8192]):x}\r\n".encode() + body[i : i + 8192] + b"\r\n" for i in range(0, len(body), 8192)
    )
    return out + (b"0\r\n\r\n" if end else b"")


def _unsigned(server: Any, path: str, **extra: str) -> dict[str, str]:
    return dict(extra)


def _forged(server: Any, path: str, **extra: str) -> dict[str, str]:
    return signed_query(server.key, "not-the-secret", "POST", path, b"x", timestamp=None, **extra)


def _stale(server: Any, path: str, **extra: str) -> dict[str, str]:
    return signed_query(server.key, server.secret, "POST", path, b"x", timestamp=int(time.time()) - 601, **extra)


def _key_only(server: Any, path: str, **extra: str) -> dict[str, str]:
    return {"auth_key": server.key, **extra}


REFUSED_BEFORE_THE_BODY = [
    pytest.param("/apps/{id}/events", _unsigned, 401, id="events-unsigned"),
    pytest.param("/apps/{id}/events", _forged, 401, id="events-forged"),
    pytest.param("/apps/{id}/events", _stale, 401, id="events-stale"),
    pytest.param("/apps/{id}/batch_events", _forged, 401, id="batch-forged"),
    pytest.param("/apps/{id}/users/u1/terminate_connections", _key_only, 401, id="terminate-key-only"),
    pytest.param("/users/u1/terminate_connections", _key_only, 401, id="unprefixed-terminate-key-only"),
    pytest.param("/users/u1/terminate_connections", _forged, 401, id="unprefixed-terminate-forged"),
    pytest.param("/users/u1/terminate_connections", _unsigned, 404, id="unprefixed-terminate-no-key"),
    pytest.param("/apps/999999/events", _unsigned, 404, id="unknown-app"),
]


@pytest.mark.parametrize(("route", "credentials", "status"), REFUSED_BEFORE_THE_BODY)
async def test_requests_without_a_valid_signature_are_refused_before_their_body_is_sent(
    server, route: str, credentials: Any, status: int
) -> None:
    path = route.replace("{id}", server.app_id)
    head = request_head(server, "POST", path, credentials(server, path), Content_Length=MiB)
    answer = await exchange(server, head)  # the body never comes
    assert answer.status == status, answer
    assert_error(answer.body)
    assert answer.headers.get("connection", "").lower() == "close", answer.headers
    assert answer.closed, "the server kept the connection open to read the body"


@pytest.mark.parametrize(
    ("route", "limit"),
    [
        pytest.param("/apps/{id}/events", EVENTS_LIMIT, id="events"),
        pytest.param("/apps/{id}/batch_events", BATCH_LIMIT, id="batch"),
        pytest.param("/apps/{id}/users/u1/terminate_connections", TERMINATE_LIMIT, id="terminate"),
        pytest.param("/users/u1/terminate_connections", TERMINATE_LIMIT, id="unprefixed-terminate"),
        pytest.param("/apps/{id}/channels", 0, id="get-channels"),
    ],
)
async def test_a_signed_request_announcing_more_than_its_routes_limit_is_413_before_the_body_is_sent(
    server, route: str, limit: int
) -> None:
    path = route.replace("{id}", server.app_id)
    method = "GET" if limit == 0 else "POST"
    params = signed_query(server.key, server.secret, method, path, b"x" * (limit + 1))
    answer = await exchange(server, request_head(server, method, path, params, Content_Length=limit + 1))
    assert answer.status == 413, answer
    assert str(limit) in answer.body["error"]
    assert answer.closed


async def test_an_event_body_at_its_limit_is_delivered_and_one_byte_more_is_413(server) -> None:
    channel = fresh("edge-")
    path = f"/apps/{server.app_id}/events"
    async with await subscribed(server, channel) as sock:
        for framing in ("length", "chunked"):
            body = padded_event(channel, EVENTS_LIMIT, name=f"edge-{framing}")
            params = signed_query(server.key, server.secret, "POST", path, body)
            if framing == "length":
                head = request_head(server, "POST", path, params, Content_Length=len(body))
                answer = await exchange(server, head, body)
            else:
                head = request_head(server, "POST", path, params, Transfer_Encoding="chunked")
                answer = await exchange(server, head, chunked(body))
            assert (answer.status, answer.body) == (200, {}), (framing, answer)
            assert (await sock.expect(f"edge-{framing}", channel))["data"] == "x" * 10240
        # One byte more, chunked: the server reads up to its limit, then refuses and closes.
        over = padded_event(channel, EVENTS_LIMIT + 1)
        params = signed_query(server.key, server.secret, "POST", path, over)
        head = request_head(server, "POST", path, params, Transfer_Encoding="chunked")
        answer = await exchange(server, head, chunked(over, end=False))
        assert answer.status == 413, answer
        assert answer.closed
        await sock.nothing()


async def test_a_batch_body_at_its_limit_is_delivered_and_one_byte_more_is_413(server) -> None:
    channel = fresh("batch-edge-")
    path = f"/apps/{server.app_id}/batch_events"
    async with await subscribed(server, channel) as sock:
        body = padded_batch(channel, BATCH_LIMIT)
        params = signed_query(server.key, server.secret, "POST", path, body)
        answer = await exchange(server, request_head(server, "POST", path, params, Content_Length=len(body)), body)
        assert (answer.status, answer.body) == (200, {}), answer
        assert [(await sock.recv())["event"] for _ in range(10)] == [f"b{i}" for i in range(10)]
        over = padded_batch(channel, BATCH_LIMIT + 1)
        params = signed_query(server.key, server.secret, "POST", path, over)
        head = request_head(server, "POST", path, params, Transfer_Encoding="chunked")
        answer = await exchange(server, head, chunked(over, end=False))
        assert answer.status == 413, answer
        await sock.nothing()


@pytest.mark.parametrize(
    "route", ["/apps/{id}/users/{user}/terminate_connections", "/users/{user}/terminate_connections"]
)
async def test_a_terminate_body_at_its_limit_is_carried_out_and_one_byte_more_is_413(server, route: str) -> None:
    user = fresh("edge-user-")
    path = route.replace("{id}", server.app_id).replace("{user}", user)
    async with await PusherSocket.open(server.ws_url()) as sock:
        user_data = json.dumps({"id": user})
        await sock.send_signin(user_data, key=server.key, secret=server.secret)
        await sock.expect("pusher:signin_success")
        over = b"{}" + b" " * (TERMINATE_LIMIT - 1)
        params = signed_query(server.key, server.secret, "POST", path, over)
        head = request_head(server, "POST", path, params, Transfer_Encoding="chunked")
        answer = await exchange(server, head, chunked(over, end=False))
        assert answer.status == 413, answer
        await sock.send("pusher:ping", {})
        await sock.expect("pusher:pong")  # not terminated
        body = b"{}" + b" " * (TERMINATE_LIMIT - 2)
        params = signed_query(server.key, server.secret, "POST", path, body)
        answer = await exchange(server, request_head(server, "POST", path, params, Content_Length=len(body)), body)
        assert (answer.status, answer.body) == (200, {}), answer
        assert await sock.closed() == 4009


async def test_get_routes_take_no_body(server) -> None:
    path = f"/apps/{server.app_id}/channels"
    params = signed_query(server.key, server.secret, "GET", path)
    answer = await exchange(server, request_head(server, "GET", path, params, Content_Length=0))
    assert answer.status == 200, answer
    params = signed_query(server.key, server.secret, "GET", path, b"x")
    answer = await exchange(
        server, request_head(server, "GET", path, params, Transfer_Encoding="chunked"), chunked(b"x", end=False)
    )
    assert answer.status == 413, answer


@pytest.mark.parametrize(
    "route", ["/apps/{id}/events", "/apps/{id}/users/u1/terminate_connections", "/users/u1/terminate_connections"]
)
async def test_a_body_that_stops_arriving_is_cut_at_the_deadline_with_408(server_factory, route: str) -> None:
    srv = server_factory(env={"CLARION_BODY_TIMEOUT": "2"})
    path = route.replace("{id}", srv.app_id)
    body = _trigger_body() if "events" in route else b"{}"
    params = signed_query(srv.key, srv.secret, "POST", path, body)
    head = request_head(srv, "POST", path, params, Content_Length=len(body))
    answer = await exchange(srv, head, body[:-1])  # the last byte is withheld
    assert answer.status == 408, answer
    assert_error(answer.body)
    assert answer.elapsed >= 1.9, answer.elapsed
    assert answer.closed
    # A body that arrives in pieces, within the deadline, is read whole.
    answer = await exchange(srv, head, body[:-1], pause=0.2, rest=body[-1:])
    assert answer.status == 200, answer


async def test_expect_100_continue_is_answered_only_once_the_request_line_is_judged(server) -> None:
    channel = fresh("expect-")
    path = f"/apps/{server.app_id}/events"
    body = _trigger_body(channel)
    async with await subscribed(server, channel) as sock:
        params = signed_query(server.key, server.secret, "POST", path, body)
        head = request_head(server, "POST", path, params, Content_Length=len(body), Expect="100-continue")
        answer = await exchange(server, head, pause=0.3, rest=body)
        assert (answer.interim, answer.status) == ([100], 200), answer
        await sock.expect("e", channel)
    forged = signed_query(server.key, "not-the-secret", "POST", path, body)
    head = request_head(server, "POST", path, forged, Content_Length=len(body), Expect="100-continue")
    answer = await exchange(server, head)
    assert (answer.interim, answer.status) == ([], 401), answer
    assert answer.closed
    head = request_head(server, "POST", path, forged, Content_Length=len(body), Expect="something-else")
    answer = await exchange(server, head)
    assert (answer.interim, answer.status) == ([], 417), answer


def _rss(pid: int) -> int:
    status = Path(f"/proc/{pid}/status").read_text()
    found = re.search(r"^VmRSS:\s+(\d+) kB", status, re.MULTILINE)
    assert found, status
    return int(found[1]) * 1024


def _descriptors(pid: int) -> int:
    return len(os.listdir(f"/proc/{pid}/fd"))


async def test_150_clients_that_withhold_the_last_byte_of_a_1_mib_body_cost_little_memory_and_are_all_closed(
    server_factory,
) -> None:
    """The reported attack: each announces 1 MiB, sends all but the last byte and waits. Half use
    the unprefixed terminate route, which needs only the public key."""
    srv = server_factory()
    pid = srv.proc.pid
    status, _ = await srv.trigger("warm-up")
    assert status == 200
    rss_before, fds_before = _rss(pid), _descriptors(pid)
    body = b"x" * (MiB - 1)
    heads = [
        request_head(srv, "POST", f"/apps/{srv.app_id}/events", Content_Length=MiB),
        request_head(srv, "POST", "/users/u1/terminate_connections", {"auth_key": srv.key}, Content_Length=MiB),
    ]

    async def attacker(n: int) -> asyncio.StreamReader:
        reader, writer = await asyncio.open_connection(srv.host, srv.port)
        writers.append(writer)
        with contextlib.suppress(OSError):  # the server may close before the body is all sent
            writer.write(heads[n % 2] + body)
            async with asyncio.timeout(10):
                await writer.drain()
        return reader

    writers: list[asyncio.StreamWriter] = []
    peak = rss_before
    attacking = True

    async def sample() -> None:
        nonlocal peak
        while attacking:
            peak = max(peak, _rss(pid))
            await asyncio.sleep(0.05)

    async def closed_by_the_server(reader: Any) -> bool:
        if isinstance(reader, BaseException):
            return True  # refused while sending: closed
        try:
            async with asyncio.timeout(20):
                while await reader.read(65536):
                    pass
        except ConnectionResetError:
            pass
        except TimeoutError:
            return False
        return True

    sampler = asyncio.create_task(sample())
    try:
        readers = await asyncio.gather(*(attacker(n) for n in range(150)), return_exceptions=True)
        closed = await asyncio.gather(*(closed_by_the_server(reader) for reader in readers))
        attacking = False
        await sampler
        # Each connection may hold one socket read (256 KiB on uvloop) until it is refused and
        # closed; reading the bodies took 280 MiB.
        assert peak - rss_before < 96 * MiB, f"the server grew by {(peak - rss_before) / MiB:.0f} MiB"
        assert all(closed), f"{closed.count(False)} of 150 sockets still open after 20 s"
        await wait_for(lambda: _descriptors(pid) <= fds_before + 2, timeout=10)
        grown = _rss(pid) - rss_before
        assert grown < 48 * MiB, f"the server still holds {grown / MiB:.0f} MiB more"
    finally:
        attacking = False
        await sampler
        for writer in writers:
            writer.close()
    status, _ = await srv.trigger("still-serving")
    assert status == 200
