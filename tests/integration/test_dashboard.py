"""The dashboard at /dashboard on a real server: the admin token, the stats JSON, and the debug
console's event stream (Server-Sent Events)."""

from __future__ import annotations

import asyncio
import json
import socket
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from prometheus_client.parser import text_string_to_metric_families

from conftest import RunningServer, run_server
from pusherclient import api_call, fresh, wait_for

TOKEN = "dashboard-admin-token-0123456789"
BEARER = {"Authorization": f"Bearer {TOKEN}"}
CONFIG = """
[[apps]]
id = "501"
key = "quiet-key"
secret = "quiet-secret"

[[apps]]
id = "502"
key = "loud-key"
secret = "loud-secret"
debug_payloads = true
"""


@pytest.fixture(scope="module")
def dash(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningServer]:
    """Two apps: 501 with payloads hidden (the default), 502 with ``debug_payloads``."""
    env = {"CLARION_ADMIN_TOKEN": TOKEN, "CLARION_DASHBOARD_INTERVAL": "0.2"}
    with run_server(env=env, config=CONFIG, tmp=tmp_path_factory.mktemp("dash")) as running:
        yield running


async def get(server: RunningServer, path: str, **kwargs: Any) -> tuple[int, dict[str, str], str]:
    async with (
        aiohttp.ClientSession(cookie_jar=aiohttp.DummyCookieJar()) as session,
        session.get(server.http_url + path, allow_redirects=False, **kwargs) as response,
    ):
        return response.status, dict(response.headers), await response.text()


async def trigger(server: RunningServer, app: str, channel: str, name: str, data: str) -> None:
    key, secret = {"501": ("quiet-key", "quiet-secret"), "502": ("loud-key", "loud-secret")}[app]
    body = {"name": name, "channel": channel, "data": data}
    status, answer = await api_call(server.http_url, key, secret, "POST", f"/apps/{app}/events", body)
    assert status == 200, answer


async def sample(server: RunningServer, name: str) -> float:
    """A sample's value in /metrics (0 before the series exists)."""
    _, _, text = await get(server, "/metrics")
    for family in text_string_to_metric_families(text):
        for found in family.samples:
            if found.name == name:
                return float(found.value)
    return 0.0


class Console:
    """One open debug console: its Server-Sent Events, parsed."""

    def __init__(self, response: aiohttp.ClientResponse) -> None:
        self.response = response

    async def next(self, timeout: float = 5.0) -> tuple[str, dict[str, Any]]:
        kind, data = "message", ""
        async with asyncio.timeout(timeout):
            while True:
                line = (await self.response.content.readline()).decode()
                assert line, "the stream ended"
                line = line.rstrip("\n")
                if line.startswith("event: "):
                    kind = line[len("event: ") :]
                elif line.startswith("data: "):
                    data = line[len("data: ") :]
                elif line == "" and data:
                    return kind, json.loads(data)

    async def until(self, check: Any, timeout: float = 5.0) -> list[dict[str, Any]]:
        """Events up to and including the first that passes ``check``."""
        seen = []
        async with asyncio.timeout(timeout):
            while True:
                kind, event = await self.next(timeout)
                if kind == "event":
                    seen.append(event)
                    if check(event):
                        return seen


@pytest.fixture
async def console(dash: RunningServer) -> AsyncIterator[Any]:
    async with aiohttp.ClientSession() as session:
        responses: list[aiohttp.ClientResponse] = []

        async def open_console(app: str) -> Console:
            response = await session.get(f"{dash.http_url}/dashboard/api/console", params={"app": app}, headers=BEARER)
            responses.append(response)
            assert response.status == 200
            assert response.headers["Content-Type"].startswith("text/event-stream")
            opened = Console(response)
            kind, hello = await opened.next()
            assert kind == "hello"
            assert hello["app"] == app
            assert hello["scope"] == "this node"
            return opened

        yield open_console
        for response in responses:
            response.close()


# --- the token -------------------------------------------------------------------------------


async def test_without_an_admin_token_the_dashboard_is_not_there(server: RunningServer) -> None:
    for path in ("/dashboard", "/dashboard?token=anything", "/dashboard/api/stats", "/dashboard/api/console?app=1"):
        status, _, _ = await get(server, path, headers=BEARER)
        assert status == 404, path


async def test_a_missing_or_wrong_token_is_401_and_reveals_nothing(dash: RunningServer) -> None:
    before = await sample(dash, "clarion_dashboard_refused_total")
    wrong = "wrong-token-that-is-long-enough"
    attempts = [
        ("/dashboard/api/stats", {}),
        ("/dashboard/api/stats", {"headers": {"Authorization": f"Bearer {wrong}"}}),
        ("/dashboard/api/console?app=501", {"headers": {"Cookie": "clarion_dashboard=forged"}}),
        (f"/dashboard?token={wrong}", {}),
    ]
    for path, kwargs in attempts:
        status, headers, text = await get(dash, path, **kwargs)
        assert status == 401, path
        assert "Set-Cookie" not in headers
        assert TOKEN not in text and "501" not in text and "samples" not in text
    # The page without a session is the sign-in form, 401 too.
    status, _, text = await get(dash, "/dashboard")
    assert status == 401 and 'action="/dashboard/login"' in text
    assert await sample(dash, "clarion_dashboard_refused_total") == before + len(attempts)
    await wait_for(lambda: dash.log_text().count("dashboard request refused") >= len(attempts))
    assert TOKEN not in dash.log_text() and wrong not in dash.log_text()


async def test_the_token_once_gives_an_httponly_strict_cookie(dash: RunningServer) -> None:
    status, headers, _ = await get(dash, f"/dashboard?token={TOKEN}")
    assert status == 303 and headers["Location"] == "/dashboard"
    cookie = headers["Set-Cookie"]
    assert "HttpOnly" in cookie and "SameSite=Strict" in cookie and "Path=/dashboard" in cookie
    assert TOKEN not in cookie
    value = cookie.split(";", 1)[0]
    status, headers, text = await get(dash, "/dashboard", headers={"Cookie": value})
    assert status == 200 and "Clarion dashboard" in text and "dashboard.js" in text
    assert "default-src 'none'" in headers["Content-Security-Policy"]
    status, _, _ = await get(dash, "/dashboard/api/stats", headers={"Cookie": value})
    assert status == 200
    # The sign-in form does the same.
    async with (
        aiohttp.ClientSession(cookie_jar=aiohttp.DummyCookieJar()) as session,
        session.post(f"{dash.http_url}/dashboard/login", data={"token": TOKEN}, allow_redirects=False) as answer,
    ):
        assert answer.status == 303
        assert answer.headers["Set-Cookie"].split(";", 1)[0] == value
    status, _, text = await get(dash, "/dashboard/static/dashboard.js")
    assert status == 200 and "EventSource" in text


# --- stats -----------------------------------------------------------------------------------


async def test_stats_have_their_shape_and_move_with_traffic(dash: RunningServer, connect: Any) -> None:
    sock = await connect(dash, key="quiet-key")
    channel = fresh("stats-")
    await sock.subscribe(channel)
    latest: dict[str, Any] = {}

    async def moved() -> bool:
        await trigger(dash, "501", channel, "tick", "{}")
        status, _, text = await get(dash, "/dashboard/api/stats", headers=BEARER)
        assert status == 200
        body = json.loads(text)
        assert body["scope"] == "this node" and body["interval"] == 0.2 and body["window"] == 600
        assert isinstance(body["consoles"], int)
        assert body["apps"] == [{"id": "501", "debug_payloads": False}, {"id": "502", "debug_payloads": True}]
        latest.update(body["samples"][-1] if body["samples"] else {})
        return bool(
            latest
            and latest["connections"] >= 1
            and (latest["published_per_s"] or 0) > 0
            and (latest["delivered_per_s"] or 0) > 0
            and latest["api_p99_ms"] is not None
        )

    await wait_for(moved, timeout=10)
    expected = {"time", "connections", "channels", "subscriptions", "published_per_s", "delivered_per_s"}
    expected |= {"client_events_per_s", "api_p50_ms", "api_p99_ms", "delivery_p50_ms", "delivery_p99_ms"}
    assert set(latest) == expected
    assert 0 < latest["api_p50_ms"] <= latest["api_p99_ms"] <= 1000
    # ?since returns only later samples.
    status, _, text = await get(dash, f"/dashboard/api/stats?since={latest['time']}", headers=BEARER)
    assert all(s["time"] > latest["time"] for s in json.loads(text)["samples"])
    status, _, text = await get(dash, "/dashboard/api/stats?since=yesterday", headers=BEARER)
    assert status == 400 and "since" in text


# --- the console -----------------------------------------------------------------------------


async def test_console_streams_an_apps_events_without_payloads_by_default(
    dash: RunningServer, connect: Any, console: Any
) -> None:
    stream = await console("501")
    sock = await connect(dash, key="quiet-key")
    channel = fresh("console-")
    await sock.subscribe(channel)
    await trigger(dash, "501", channel, "dash-event", '{"secret":"payload-501"}')
    seen = await stream.until(lambda e: e["type"] == "api_message")
    kinds = [e["type"] for e in seen]
    assert kinds[:3] == ["connected", "subscribed", "occupied"]
    assert all(e.get("socket_id") == sock.socket_id for e in seen if e["type"] in ("connected", "subscribed"))
    message = seen[-1]
    assert message["channel"] == channel and message["event"] == "dash-event"
    assert "data" not in message
    await sock.close()
    gone = await stream.until(lambda e: e["type"] == "vacated")
    assert [e["type"] for e in gone] == ["disconnected", "unsubscribed", "vacated"]
    assert gone[0]["socket_id"] == sock.socket_id


async def test_console_shows_payloads_only_for_an_app_that_enables_them(
    dash: RunningServer, connect: Any, console: Any
) -> None:
    quiet, loud = await console("501"), await console("502")
    channel = fresh("payload-")
    await trigger(dash, "502", channel, "loud-event", '{"secret":"payload-502"}')
    await trigger(dash, "501", channel, "quiet-event", '{"secret":"payload-501"}')
    shown = (await loud.until(lambda e: e["type"] == "api_message"))[-1]
    assert shown["event"] == "loud-event" and shown["data"] == '{"secret":"payload-502"}'
    hidden = (await quiet.until(lambda e: e["type"] == "api_message"))[-1]
    assert hidden["event"] == "quiet-event" and "data" not in hidden


async def test_console_shows_client_events_and_presence_users_with_payloads(
    dash: RunningServer, connect: Any, console: Any
) -> None:
    loud, quiet = await console("502"), await console("501")
    apps = (("502", "loud-key", "loud-secret", loud), ("501", "quiet-key", "quiet-secret", quiet))
    for app, key, secret, stream in apps:
        channel = fresh("presence-console-")
        sender, receiver = await connect(dash, key=key), await connect(dash, key=key)
        for sock, user in ((sender, "ada"), (receiver, "bob")):
            answer = await sock.subscribe(channel, key=key, secret=secret, channel_data={"user_id": user})
            assert answer["event"] == "pusher_internal:subscription_succeeded", answer
        await sender.send("client-typing", {"secret": f"typing-{app}"}, channel)
        await receiver.expect("client-typing", channel)
        seen = await stream.until(lambda e: e["type"] == "client_event")
        subscribed = [e for e in seen if e["type"] == "subscribed" and e["channel"] == channel]
        event = seen[-1]
        assert event["channel"] == channel and event["event"] == "client-typing"
        assert event["socket_id"] == sender.socket_id
        if app == "502":
            assert {e["user_id"] for e in subscribed} == {"ada", "bob"}
            # The data as the subscribers got it (a client event's object travels as a JSON string).
            assert json.loads(event["data"]) == {"secret": "typing-502"} and event["user_id"] == "ada"
        else:
            assert all("user_id" not in e for e in subscribed) and len(subscribed) == 2
            assert "data" not in event and "user_id" not in event


async def test_console_for_an_unknown_app_is_404(dash: RunningServer) -> None:
    status, _, text = await get(dash, "/dashboard/api/console?app=nope", headers=BEARER)
    assert status == 404 and "no such app" in text


async def test_a_console_that_stops_reading_never_holds_up_publishing(server_factory: Any) -> None:
    server = server_factory(
        {"CLARION_ADMIN_TOKEN": TOKEN, "CLARION_DASHBOARD_CONSOLE_QUEUE": "10", "CLARION_DEBUG_PAYLOADS": "true"}
    )
    # A console that reads nothing, with a small receive window: the server's writes to it stall.
    slow = socket.socket()
    slow.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    slow.connect((server.host, server.port))
    path = f"/dashboard/api/console?app={server.app_id}"
    slow.sendall(f"GET {path} HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {TOKEN}\r\n\r\n".encode())
    try:
        await wait_for(lambda: "dashboard console opened" in server.log_text())
        data = json.dumps({"blob": "x" * 8000})
        batch = {"batch": [{"name": "bulk", "channel": "slow-console", "data": data} for _ in range(10)]}

        async def publish() -> None:
            status, answer = await api_call(
                server.http_url, server.key, server.secret, "POST", f"/apps/{server.app_id}/batch_events", batch
            )
            assert status == 200, answer

        async with asyncio.timeout(30):
            for _ in range(100):  # 8 MB of events for the console: far past what the socket holds
                await publish()
        assert await sample(server, "clarion_dashboard_console_dropped_total") > 0
    finally:
        slow.close()
    await wait_for(lambda: "dashboard console closed" in server.log_text(), timeout=10)


async def open_consoles(server: RunningServer) -> int:
    _, _, text = await get(server, "/dashboard/api/stats", headers=BEARER)
    return int(json.loads(text)["consoles"])


async def test_at_most_sixteen_consoles_per_node(dash: RunningServer) -> None:
    # Consoles of earlier tests close once the server notices their browser left.
    async def none_open() -> bool:
        return await open_consoles(dash) == 0

    await wait_for(none_open, timeout=10)
    async with aiohttp.ClientSession() as session:
        url = f"{dash.http_url}/dashboard/api/console?app=501"
        opened = [await session.get(url, headers=BEARER) for _ in range(16)]
        try:
            assert all(response.status == 200 for response in opened)
            async with session.get(url, headers=BEARER) as refused:
                assert refused.status == 429 and refused.headers["Retry-After"] == "5"
        finally:
            for response in opened:
                response.close()

    # The server notices the closed consoles and makes room again.
    await wait_for(none_open, timeout=10)


def test_settings_bound_the_admin_token(tmp_path: Path) -> None:
    from clarion.server.config import ConfigError, load_settings

    with pytest.raises(ConfigError, match="admin_token"):
        load_settings(environ={"CLARION_ADMIN_TOKEN": "short"})
    settings = load_settings(environ={"CLARION_ADMIN_TOKEN": TOKEN, "CLARION_DEBUG_PAYLOADS": "1"})
    assert settings.admin_token is not None and TOKEN not in repr(settings)
    assert settings.apps[0].debug_payloads is True
