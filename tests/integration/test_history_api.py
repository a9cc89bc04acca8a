"""``GET /apps/{id}/channels/{name}/history``: signed like every HTTP API call, or from a browser
with the app key and, for private, presence and encrypted channels, a short-lived history token in
the ``X-Clarion-History-Token`` header, with its CORS preflight."""

from __future__ import annotations

import json
import time
from typing import Any
from urllib.parse import quote

import aiohttp
import pytest
import yarl

from clarion.protocol import signatures
from pusherclient import api_call, fresh, raw_request

SOCKET_ID = "1234.5678"
TOKEN = "X-Clarion-History-Token"


async def publish(server: Any, channel: str, count: int) -> None:
    for n in range(count):
        status, answer = await server.trigger(channel, "update", json.dumps({"n": n}))
        assert status == 200, answer


def path(server: Any, channel: str, app_id: str | None = None) -> str:
    return f"/apps/{app_id or server.app_id}/channels/{quote(channel, safe='')}/history"


async def signed_get(server: Any, channel: str, **params: str) -> tuple[int, Any]:
    return await api_call(server.http_url, server.key, server.secret, "GET", path(server, channel), **params)


def token(server: Any, channel: str, *, ahead: int = 300, key: str | None = None, secret: str | None = None) -> str:
    """A history token as the app's backend issues it (``clarion.broadcasting.history_token``)."""
    expires = int(time.time()) + ahead
    return signatures.history_token(key or server.key, secret or server.secret, channel, expires)


async def browser_get(
    server: Any,
    channel: str,
    *,
    origin: str | None = None,
    history_token: str | None = None,
    method: str = "GET",
    headers: dict[str, str] | None = None,
    app_id: str | None = None,
    **params: str,
) -> tuple[int, Any, dict[str, str]]:
    sent = dict(headers or {})
    if origin:
        sent["Origin"] = origin
    if history_token is not None:
        sent[TOKEN] = history_token
    async with (
        aiohttp.ClientSession() as session,
        session.request(
            method, yarl.URL(server.http_url + path(server, channel, app_id), encoded=True), params=params, headers=sent
        ) as response,
    ):
        text = await response.text()
        try:
            body: Any = json.loads(text)
        except ValueError:
            body = text
        return response.status, body, dict(response.headers)


TWO_APPS = """
[[apps]]
id = "1234"
key = "test-key"
secret = "test-secret"

[[apps]]
id = "602"
key = "key-other"
secret = "secret-other"
"""


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


async def test_a_browser_reads_a_private_channel_with_a_history_token(server) -> None:
    channel = fresh("private-browser-")
    await publish(server, channel, 3)
    status, answer, headers = await browser_get(
        server, channel, origin="https://app.example", history_token=token(server, channel), auth_key=server.key
    )
    assert status == 200, answer
    assert numbers(answer) == [0, 1, 2]
    assert headers["Access-Control-Allow-Origin"] == "https://app.example"


@pytest.mark.parametrize("prefix", ["presence-browser-", "private-encrypted-browser-"])
async def test_presence_and_encrypted_channels_take_the_same_token(server, prefix: str) -> None:
    channel = fresh(prefix)
    await publish(server, channel, 2)
    status, answer, _ = await browser_get(server, channel, history_token=token(server, channel), auth_key=server.key)
    assert status == 200 and numbers(answer) == [0, 1], answer
    status, answer, _ = await browser_get(server, channel, auth_key=server.key)
    assert status == 401 and TOKEN in answer["error"], answer


async def test_a_token_is_accepted_until_it_expires_and_up_to_an_hour_ahead(server) -> None:
    channel = fresh("private-window-")
    await publish(server, channel, 1)
    for ahead, expected in [(5, 200), (3590, 200), (-5, 401), (3610, 401)]:
        status, answer, _ = await browser_get(
            server, channel, history_token=token(server, channel, ahead=ahead), auth_key=server.key
        )
        assert status == expected, (ahead, answer)
        if expected == 401:
            assert "expire" in answer["error"], answer


async def test_forged_and_misdirected_tokens_are_refused(server_factory) -> None:
    server = server_factory(config=TWO_APPS)
    channel = fresh("private-forged-token-")
    await publish(server, channel, 1)
    mine = token(server, channel)
    expires = mine.split(":")[0]
    cases = {
        "another channel's": token(server, fresh("private-other-")),
        "another app's": token(server, channel, key="key-other", secret="secret-other"),
        "signed with a wrong secret": token(server, channel, secret="not-the-secret"),
        "a forged signature": f"{expires}:{'0' * 64}",
        "its expiry changed": f"{int(expires) + 60}:{mine.split(':')[1]}",
        "no signature": expires,
        "not a number": f"soon:{mine.split(':')[1]}",
        "uppercase hex": mine.upper(),
    }
    for what, forged in cases.items():
        status, answer, _ = await browser_get(server, channel, history_token=forged, auth_key=server.key)
        assert status == 401 and answer["error"], (what, answer)
    status, answer, _ = await browser_get(server, channel, history_token=mine, auth_key=server.key)
    assert status == 200, answer
    # The other app's token opens the other app's channel of the same name, not this one.
    other = signatures.history_token("key-other", "secret-other", channel, int(expires))
    status, answer, _ = await browser_get(server, channel, history_token=other, auth_key="key-other", app_id="602")
    assert status == 200, answer


async def test_the_old_socket_id_and_auth_query_parameters_are_refused(server) -> None:
    channel = fresh("private-old-")
    await publish(server, channel, 1)
    auth = signatures.channel_auth(server.key, server.secret, SOCKET_ID, channel)
    status, answer, _ = await browser_get(server, channel, auth_key=server.key, socket_id=SOCKET_ID, auth=auth)
    assert status == 401 and TOKEN in answer["error"], answer
    # Even beside a valid token, and on a public channel: the URL must not carry them.
    status, answer, _ = await browser_get(
        server, channel, history_token=token(server, channel), auth_key=server.key, socket_id=SOCKET_ID, auth=auth
    )
    assert status == 401, answer


async def test_a_browser_needs_no_token_for_a_public_channel_that_keeps_history(server_factory) -> None:
    server = server_factory(env={"CLARION_HISTORY": "private-:100 news-:20:60"})
    await publish(server, "news-1", 2)
    status, answer, _ = await browser_get(server, "news-1", auth_key=server.key)
    assert status == 200 and numbers(answer) == [0, 1]
    status, answer, _ = await browser_get(server, "news-1", auth_key="not-the-key")
    assert status == 401


async def test_a_browser_may_not_read_user_channels_or_from_a_disallowed_origin(server_factory) -> None:
    server = server_factory(
        env={"CLARION_HISTORY": "private-:100 #server-to-user-:10", "CLARION_ALLOWED_ORIGINS": "https://app.example"}
    )
    user_channel = "#server-to-user-7"
    status, answer, _ = await browser_get(
        server,
        user_channel,
        origin="https://app.example",
        history_token=token(server, user_channel),
        auth_key=server.key,
    )
    assert status == 403 and answer["error"]
    channel = fresh("private-origin-")
    status, answer, headers = await browser_get(
        server, channel, origin="https://evil.example", history_token=token(server, channel), auth_key=server.key
    )
    assert status == 403
    assert "Access-Control-Allow-Origin" not in headers
    status, _, _ = await browser_get(
        server, channel, origin="https://app.example", history_token=token(server, channel), auth_key=server.key
    )
    assert status == 200
    # The app's own signed call reads user channels.
    status, answer = await signed_get(server, user_channel)
    assert status == 200 and answer["events"] == [], answer
    status, answer = await raw_request(server.http_url, "GET", "/apps/no-such-app/channels/private-x/history", {})
    assert status == 404


async def test_a_browser_can_read_why_it_was_refused(server) -> None:
    channel = fresh("private-cors-error-")
    status, answer, headers = await browser_get(server, channel, origin="https://app.example", auth_key=server.key)
    assert status == 401 and answer["error"]
    assert headers["Access-Control-Allow-Origin"] == "https://app.example"


PREFLIGHT = {"Access-Control-Request-Method": "GET", "Access-Control-Request-Headers": TOKEN.lower()}


async def test_the_cors_preflight_allows_the_token_header_for_allowed_origins_only(server_factory) -> None:
    server = server_factory(env={"CLARION_ALLOWED_ORIGINS": "https://app.example"})
    channel = fresh("private-preflight-")
    status, _, headers = await browser_get(
        server, channel, method="OPTIONS", origin="https://app.example", headers=PREFLIGHT
    )
    assert status == 204
    assert headers["Access-Control-Allow-Origin"] == "https://app.example"
    assert TOKEN.lower() in headers["Access-Control-Allow-Headers"].lower()
    assert "GET" in headers["Access-Control-Allow-Methods"]
    for origin in ("https://evil.example", None):
        status, answer, headers = await browser_get(server, channel, method="OPTIONS", origin=origin, headers=PREFLIGHT)
        assert status == 403 and answer["error"], origin
        assert not [name for name in headers if name.lower().startswith("access-control-")], headers
    status, _, headers = await browser_get(
        server, channel, method="OPTIONS", origin="https://app.example", headers=PREFLIGHT, app_id="nope"
    )
    assert status == 404
    assert "Access-Control-Allow-Origin" not in headers
