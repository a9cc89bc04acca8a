"""The WebSocket handshake, keep-alive and connection-level refusals, against a real server."""

from __future__ import annotations

import asyncio
import re

import aiohttp
import pytest

from pusherclient import PusherSocket, wait_for


async def test_connection_established_carries_a_unique_socket_id_and_activity_timeout(server) -> None:
    async with await PusherSocket.open(server.ws_url()) as a, await PusherSocket.open(server.ws_url()) as b:
        assert re.fullmatch(r"\d+\.\d+", a.socket_id)
        assert a.socket_id != b.socket_id
        assert a.activity_timeout == 30


async def test_pusher_ping_is_answered_with_pusher_pong(server) -> None:
    async with await PusherSocket.open(server.ws_url()) as sock:
        await sock.send("pusher:ping", {})
        frame = await sock.expect("pusher:pong")
        assert frame["data"] == "{}"


async def test_websocket_ping_frame_is_answered_with_pong_frame(server) -> None:
    async with await PusherSocket.open(server.ws_url()) as sock:
        await sock.ws.ping(b"hi")
        msg = await sock.ws.receive(timeout=3)
        assert msg.type is aiohttp.WSMsgType.PONG
        assert msg.data == b"hi"


async def test_unknown_app_key_gets_error_4001_then_close_4001(server) -> None:
    sock = await PusherSocket.open(server.ws_url(key="no-such-key"), handshake=False)
    try:
        frame = await sock.expect("pusher:error")
        assert frame["data"]["code"] == 4001
        assert await sock.closed() == 4001
    finally:
        await sock.close()


@pytest.mark.parametrize(
    ("query", "code"),
    [("protocol=abc", 4006), ("protocol=3", 4007), ("protocol=99", 4007)],
)
async def test_bad_protocol_versions_are_refused_with_their_codes(server, query: str, code: int) -> None:
    sock = await PusherSocket.open(server.ws_url(query=query), handshake=False)
    try:
        frame = await sock.expect("pusher:error")
        assert frame["data"]["code"] == code
        assert await sock.closed() == code
    finally:
        await sock.close()


async def test_missing_protocol_version_is_accepted(server) -> None:
    async with await PusherSocket.open(server.ws_url(query="client=js")) as sock:
        assert sock.socket_id


async def test_plain_http_get_on_the_websocket_path_is_a_400(server) -> None:
    async with aiohttp.ClientSession() as session, session.get(f"{server.http_url}/app/{server.key}") as response:
        assert response.status == 400


async def test_origin_allow_list_admits_listed_origins_and_refuses_others_with_4009(server_factory) -> None:
    running = server_factory(env={"CLARION_ALLOWED_ORIGINS": "https://good.example, https://*.trusted.example"})
    async with await PusherSocket.open(running.ws_url(), origin="https://good.example") as ok:
        assert ok.socket_id
    async with await PusherSocket.open(running.ws_url(), origin="https://app.trusted.example") as sub:
        assert sub.socket_id
    for origin in ("https://evil.example", "https://good.example.evil.example", None):
        headers = {"Origin": origin} if origin else {}
        sock = await PusherSocket.open(running.ws_url(), handshake=False, headers=headers)
        try:
            frame = await sock.expect("pusher:error")
            assert frame["data"]["code"] == 4009
            assert await sock.closed() == 4009
        finally:
            await sock.close()


async def test_connection_quota_refuses_with_4004_and_frees_a_place_on_close(server_factory) -> None:
    running = server_factory(env={"CLARION_MAX_CONNECTIONS": "2"})
    first = await PusherSocket.open(running.ws_url())
    second = await PusherSocket.open(running.ws_url())
    third = await PusherSocket.open(running.ws_url(), handshake=False)
    try:
        frame = await third.expect("pusher:error")
        assert frame["data"]["code"] == 4004
        assert await third.closed() == 4004
        await first.close()

        async def admitted() -> bool:
            sock = await PusherSocket.open(running.ws_url(), handshake=False)
            try:
                event: str = (await sock.recv())["event"]
                return event == "pusher:connection_established"
            finally:
                await sock.close()

        await wait_for(admitted)
    finally:
        await second.close()
        await third.close()


async def test_silent_client_is_pinged_then_closed_with_4201(server_factory) -> None:
    running = server_factory(env={"CLARION_ACTIVITY_TIMEOUT": "1", "CLARION_PONG_TIMEOUT": "1"})
    async with await PusherSocket.open(running.ws_url()) as sock:
        await sock.expect("pusher:ping", timeout=4)
        assert await sock.closed(timeout=4) == 4201


async def test_client_that_answers_pings_stays_connected(server_factory) -> None:
    running = server_factory(env={"CLARION_ACTIVITY_TIMEOUT": "1", "CLARION_PONG_TIMEOUT": "1"})
    async with await PusherSocket.open(running.ws_url()) as sock:
        for _ in range(3):
            await sock.expect("pusher:ping", timeout=4)
            await sock.send("pusher:pong", {})
        await sock.send("pusher:ping", {})
        await sock.expect("pusher:pong")


async def test_server_shutdown_closes_clients_with_4200(server_factory) -> None:
    running = server_factory()
    async with await PusherSocket.open(running.ws_url()) as sock:
        running.proc.terminate()
        assert await sock.closed(timeout=8) == 4200
        await asyncio.to_thread(running.proc.wait, 10)


async def test_disabled_app_refuses_sockets_with_4003(server_factory) -> None:
    config = """
[[apps]]
id = "55"
key = "off-key"
secret = "off-secret"
enabled = false
"""
    running = server_factory(config=config)
    sock = await PusherSocket.open(running.ws_url(key="off-key"), handshake=False)
    try:
        frame = await sock.expect("pusher:error")
        assert frame["data"]["code"] == 4003
        assert await sock.closed() == 4003
    finally:
        await sock.close()
