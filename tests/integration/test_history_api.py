"""``GET /apps/{id}/channels/{name}/history``: signed like every HTTP API call, or from a browser
with the app key and, for private and presence channels, the socket's channel-auth signature."""

from __future__ import annotations

import json
from typing import Any
from urllib.parse import quote

import aiohttp
import yarl

from clarion.protocol import signatures
from pusherclient import api_call, fresh, raw_request

SOCKET_ID = "1234.5678"


async def publish(server: Any, channel: str, count: int) -> None:
    for n in range(count):
        status, answer = await server.trigger(channel, "update", json.dumps({"n": n}))
        assert status == 200, answer


def path(server: Any, channel: str) -> str:
    return f"/apps/{server.app_id}/channels/{quote(channel, safe='')}/history"


async def signed_get(server: Any, channel: str, **params: str) -> tuple[int, Any]:
    return await api_call(server.http_url, server.key, server.secret, "GET", path(server, channel), **params)


async def browser_get(
    server: Any, channel: str, *, origin: str | None = None, **params: str
) -> tuple[int, Any, dict[str, str]]:
    headers = {"Origin": origin} if origin else {}
    async with (
        aiohttp.ClientSession() as session,
        session.get(
            yarl.URL(server.http_url + path(server, channel), encoded=True), params=params, headers=headers
        ) as response,
    ):
        text = await response.text()
        try:
            body: Any = json.loads(text)
        except ValueError:
            body = text
        return response.status, body, dict(response.headers)


def numbers(answer: dict[str, Any]) -> list[int]:
    return [json.loads(frame["data"])["n"] for frame in answer["events"]]


async def test_a_signed_request_reads_the_newest_events_as_sent_on_the_websocket(server) -> None:
    channel = fresh("private-http-")
    await publish(server, channel, 30)
    status, answer = await signed_get(server, channel, limit="5")
    assert status == 200, answer
    assert answer["channel"] == channel and answer["serial"] == 30 and answer["recovered"] is True
    assert numbers(answer) == [25, 26, 27, 28, 29]
    for serial, frame in zip(range(26, 31), answer["events"], strict=True):
        assert frame == {
            "event": "update",
            "channel": channel,
            "data": frame["data"],
            "epoch": answer["epoch"],
            "serial": serial,
        }


async def test_since_reads_what_came_after_a_position_oldest_first(server) -> None:
    channel = fresh("private-since-")
    await publish(server, channel, 30)
    _, head = await signed_get(server, channel, limit="1")
    status, answer = await signed_get(server, channel, epoch=head["epoch"], since="20")
    assert status == 200 and answer["recovered"] is True
    assert numbers(answer) == list(range(20, 30))
    _, page = await signed_get(server, channel, epoch=head["epoch"], since="20", limit="3")
    assert numbers(page) == [20, 21, 22] and page["serial"] == 30  # more to read
    _, none = await signed_get(server, channel, epoch=head["epoch"], since="30")
    assert none["events"] == [] and none["recovered"] is True


async def test_a_lost_position_answers_recovered_false_with_no_events(server_factory) -> None:
    server = server_factory(env={"CLARION_HISTORY": "private-:10:300"})
    channel = fresh("private-lost-")
    await publish(server, channel, 50)
    _, head = await signed_get(server, channel, limit="1")
    _, old = await signed_get(server, channel, epoch=head["epoch"], since="5")
    assert (old["recovered"], old["reason"], old["events"]) == (False, "too_old", [])
    _, other = await signed_get(server, channel, epoch="0123abcd", since="45")
    assert (other["recovered"], other["reason"], other["events"]) == (False, "epoch_changed", [])
    assert other["epoch"] == head["epoch"] and other["serial"] == 50


async def test_channels_without_history_and_bad_queries_get_clear_errors(server) -> None:
    public = fresh("public-")
    status, answer = await signed_get(server, public)
    assert status == 404 and "history" in answer["error"]
    channel = fresh("private-bad-")
    for params in (
        {"since": "-1", "epoch": "e"},
        {"since": "x", "epoch": "e"},
        {"since": "3"},
        {"limit": "0"},
        {"epoch": "no spaces"},
    ):
        status, answer = await signed_get(server, channel, **params)
        assert status == 400 and answer["error"], params
    status, answer = await signed_get(server, "x" * 300)
    assert status == 400


async def test_a_forged_signature_is_refused(server) -> None:
    channel = fresh("private-forged-")
    await publish(server, channel, 1)
    status, answer = await api_call(server.http_url, server.key, "not-the-secret", "GET", path(server, channel))
    assert status == 401 and answer["error"]


async def test_a_browser_reads_a_private_channel_with_its_sockets_channel_auth(server) -> None:
    channel = fresh("private-browser-")
    await publish(server, channel, 3)
    auth = signatures.channel_auth(server.key, server.secret, SOCKET_ID, channel)
    status, answer, headers = await browser_get(
        server, channel, origin="https://app.example", auth_key=server.key, socket_id=SOCKET_ID, auth=auth
    )
    assert status == 200, answer
    assert numbers(answer) == [0, 1, 2]
    assert headers["Access-Control-Allow-Origin"] == "https://app.example"


async def test_a_browser_without_a_valid_channel_auth_is_refused(server) -> None:
    channel = fresh("private-browser-bad-")
    await publish(server, channel, 1)
    other = signatures.channel_auth(server.key, server.secret, SOCKET_ID, fresh("private-other-"))
    cases = [
        {"auth_key": server.key},  # no signature
        {"auth_key": server.key, "socket_id": SOCKET_ID, "auth": other},  # another channel's
        {"auth_key": server.key, "socket_id": "9.9", "auth": other},
        {"auth_key": server.key, "socket_id": "not-a-socket", "auth": other},
        {"auth_key": "other-key", "socket_id": SOCKET_ID, "auth": other},
    ]
    for params in cases:
        status, answer, _ = await browser_get(server, channel, **params)
        assert status == 401 and answer["error"], params


async def test_a_browser_reads_presence_history_with_channel_data_signed(server) -> None:
    channel = fresh("presence-browser-")
    await publish(server, channel, 2)
    member = json.dumps({"user_id": "7"})
    auth = signatures.channel_auth(server.key, server.secret, SOCKET_ID, channel, member)
    status, answer, _ = await browser_get(
        server, channel, auth_key=server.key, socket_id=SOCKET_ID, auth=auth, channel_data=member
    )
    assert status == 200 and numbers(answer) == [0, 1]
    status, _, _ = await browser_get(server, channel, auth_key=server.key, socket_id=SOCKET_ID, auth=auth)
    assert status == 401


async def test_a_browser_needs_no_signature_for_a_public_channel_that_keeps_history(server_factory) -> None:
    server = server_factory(env={"CLARION_HISTORY": "private-:100 news-:20:60"})
    await publish(server, "news-1", 2)
    status, answer, _ = await browser_get(server, "news-1", auth_key=server.key)
    assert status == 200 and numbers(answer) == [0, 1]


async def test_a_browser_may_not_read_user_channels_or_from_a_disallowed_origin(server_factory) -> None:
    server = server_factory(
        env={"CLARION_HISTORY": "private-:100 #server-to-user-:10", "CLARION_ALLOWED_ORIGINS": "https://app.example"}
    )
    status, answer, _ = await browser_get(
        server, "#server-to-user-7", origin="https://app.example", auth_key=server.key
    )
    assert status == 403 and answer["error"]
    channel = fresh("private-origin-")
    auth = signatures.channel_auth(server.key, server.secret, SOCKET_ID, channel)
    status, answer, _ = await browser_get(
        server, channel, origin="https://evil.example", auth_key=server.key, socket_id=SOCKET_ID, auth=auth
    )
    assert status == 403
    status, _, _ = await browser_get(
        server, channel, origin="https://app.example", auth_key=server.key, socket_id=SOCKET_ID, auth=auth
    )
    assert status == 200
    # The app's own signed call reads user channels.
    status, answer = await signed_get(server, "#server-to-user-7")
    assert status == 200 and answer["events"] == [], answer
    status, answer = await raw_request(server.http_url, "GET", "/apps/no-such-app/channels/private-x/history", {})
    assert status == 404


async def test_a_browser_can_read_why_it_was_refused(server) -> None:
    channel = fresh("private-cors-error-")
    status, answer, headers = await browser_get(server, channel, origin="https://app.example", auth_key=server.key)
    assert status == 401 and answer["error"]
    assert headers["Access-Control-Allow-Origin"] == "https://app.example"
