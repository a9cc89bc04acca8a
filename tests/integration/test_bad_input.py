"""Malformed and hostile input: each gets the protocol's answer or a clean close, and the server
and every other client go on working."""

from __future__ import annotations

import asyncio
import base64
import json
import os
import socket

import aiohttp
import pytest

from pusherclient import PusherSocket, api_call


async def still_serving(server, sock: PusherSocket | None = None) -> None:
    """The server still delivers to a fresh client, and ``sock`` (if given) still answers pings."""
    async with await PusherSocket.open(server.ws_url()) as fresh:
        await fresh.subscribe("health-check")
        status, _ = await server.trigger("health-check", "alive")
        assert status == 200
        await fresh.expect("alive", "health-check")
    if sock is not None:
        await sock.send("pusher:ping", {})
        await sock.expect("pusher:pong")


@pytest.mark.parametrize(
    ("frame", "needle"),
    [
        ("not json at all", "not JSON"),
        ("[1, 2, 3]", "JSON object"),
        ('"just a string"', "JSON object"),
        ("{}", "'event'"),
        ('{"event": 42}', "'event'"),
        ('{"event": ""}', "'event'"),
        ('{"event": "pusher:subscribe", "data": "not an object"}', "'data'"),
        ('{"event": "pusher:subscribe", "data": {"channel": 5}}', "data.channel"),
        ('{"event": "pusher:subscribe", "data": {}}', "data.channel"),
        ('{"event": "pusher:unsubscribe", "data": null}', "'data'"),
        ('{"event": "pusher:subscribe", "data": "{broken"}', "not valid JSON"),
        ('{"event": "client-x", "channel": ["a"], "data": {}}', "'channel'"),
        ('{"event": "nope:unknown", "data": {}}', "Unsupported event"),
        ("[" * 5000 + "]" * 5000, "JSON"),
    ],
)
async def test_malformed_frame_gets_pusher_error_4200_and_socket_survives(server, frame: str, needle: str) -> None:
    async with await PusherSocket.open(server.ws_url()) as sock:
        await sock.send_raw(frame)
        error = await sock.expect("pusher:error")
        assert error["data"]["code"] == 4200
        assert needle in error["data"]["message"]
        await still_serving(server, sock)


@pytest.mark.parametrize(
    "channel",
    ["a" * 165, "bad channel", "bad/channel", "émoji", "private-", "#server-to-user-"],
)
async def test_bad_channel_names_are_refused_with_subscription_error(server, channel: str) -> None:
    async with await PusherSocket.open(server.ws_url()) as sock:
        refused = await sock.subscribe(channel)
        assert refused["event"] == "pusher:subscription_error"
        assert refused["data"]["status"] in (400, 401, 403)
        await still_serving(server, sock)


async def test_channel_name_at_164_characters_is_accepted(server) -> None:
    async with await PusherSocket.open(server.ws_url()) as sock:
        answer = await sock.subscribe("c" * 164)
        assert answer["event"] == "pusher_internal:subscription_succeeded"


async def test_binary_frame_gets_pusher_error_and_socket_survives(server) -> None:
    async with await PusherSocket.open(server.ws_url()) as sock:
        await sock.ws.send_bytes(b"\x00\x01binary")
        error = await sock.expect("pusher:error")
        assert "Binary" in error["data"]["message"]
        await still_serving(server, sock)


async def test_oversized_frame_closes_only_that_socket_with_1009(server) -> None:
    async with await PusherSocket.open(server.ws_url()) as bystander, await PusherSocket.open(server.ws_url()) as sock:
        await sock.send("client-big", {"blob": "x" * 64 * 1024}, channel="private-x")
        assert await sock.closed() == 1009
        await still_serving(server, bystander)


async def test_thousands_of_subscriptions_on_one_socket_stop_at_the_limit(server) -> None:
    async with await PusherSocket.open(server.ws_url()) as sock:
        for index in range(2000):
            await sock.send("pusher:subscribe", {"channel": f"many-{index}"})
        answers = [await sock.recv() for _ in range(2000)]
        succeeded = [a for a in answers if a["event"] == "pusher_internal:subscription_succeeded"]
        refused = [a for a in answers if a["event"] == "pusher:subscription_error"]
        assert len(succeeded) == 100
        assert len(refused) == 1900
        assert refused[0]["data"]["type"] == "LimitReached"
        await still_serving(server, sock)


async def test_flood_of_garbage_from_one_socket_does_not_stop_others(server) -> None:
    async with await PusherSocket.open(server.ws_url()) as bystander:
        await bystander.subscribe("steady")
        async with await PusherSocket.open(server.ws_url()) as noisy:
            for _ in range(500):
                await noisy.send_raw("garbage")
            await still_serving(server, bystander)
            errors = [await noisy.recv() for _ in range(500)]
            assert all(e["event"] == "pusher:error" for e in errors)


async def test_sockets_that_never_finish_the_http_handshake_are_closed(server_factory) -> None:
    running = server_factory(env={"CLARION_HANDSHAKE_TIMEOUT": "1"})
    half_open = []
    for index in range(50):
        reader, writer = await asyncio.open_connection(running.host, running.port)
        if index % 2:
            # Slowloris: a request line and a header, never finished.
            writer.write(f"GET /app/{running.key} HTTP/1.1\r\nHost: x\r\n".encode())
            await writer.drain()
        half_open.append((reader, writer))
    # Meanwhile everyone else is served.
    await still_serving(running)
    for reader, writer in half_open:
        assert await asyncio.wait_for(reader.read(), timeout=5) == b""
        writer.close()


def masked_text_frame(text: str) -> bytes:
    payload = text.encode()
    assert len(payload) < 126
    mask = os.urandom(4)
    return bytes((0x81, 0x80 | len(payload))) + mask + bytes(b ^ mask[i % 4] for i, b in enumerate(payload))


async def raw_subscriber(
    host: str, port: int, key: str, channel: str
) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    """A WebSocket client by hand, so that it can stop reading entirely (a real stalled reader)."""
    sock = socket.create_connection((host, port))
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    reader, writer = await asyncio.open_connection(sock=sock)
    handshake = (
        f"GET /app/{key}?protocol=7 HTTP/1.1\r\nHost: {host}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
        f"Sec-WebSocket-Key: {base64.b64encode(os.urandom(16)).decode()}\r\nSec-WebSocket-Version: 13\r\n\r\n"
    )
    writer.write(handshake.encode())
    await reader.readuntil(b"\r\n\r\n")
    writer.write(masked_text_frame(json.dumps({"event": "pusher:subscribe", "data": {"channel": channel}})))
    await writer.drain()
    seen = b""
    while b"subscription_succeeded" not in seen:
        seen += await asyncio.wait_for(reader.read(4096), 5)
    return reader, writer


async def test_slow_consumer_is_dropped_without_holding_up_others(server_factory) -> None:
    running = server_factory(env={"CLARION_MAX_BUFFER": "65536"})
    # A subscriber that stops reading: its kernel buffers fill, then Clarion's, then it is dropped.
    _, slow_writer = await raw_subscriber(running.host, running.port, running.key, "firehose")
    fast = await PusherSocket.open(running.ws_url())
    try:
        await fast.subscribe("firehose")
        payload = json.dumps({"blob": "y" * 9000})
        batch = {"batch": [{"name": "chunk", "channel": "firehose", "data": payload}] * 10}
        received = 0
        for _ in range(150):  # 1,500 events of 9 KB: far past every buffer on the way
            status, _ = await api_call(
                running.http_url, running.key, running.secret, "POST", f"/apps/{running.app_id}/batch_events", batch
            )
            assert status == 200
            for _ in range(10):
                await fast.expect("chunk", "firehose")
                received += 1
        assert received == 1500
        async with aiohttp.ClientSession() as session, session.get(f"{running.http_url}/metrics") as response:
            text = await response.text()
        assert "clarion_slow_consumers_total 1.0" in text
    finally:
        slow_writer.close()
        await fast.close()
