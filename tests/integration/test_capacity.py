"""A server at its descriptor limit: WebSockets past capacity get 503, the API and the probes keep
answering, /ready reports the saturation, and the server recovers when sockets leave."""

from __future__ import annotations

import asyncio
import contextlib
import json
import socket
from typing import Any

import aiohttp
import pytest
from prometheus_client.parser import text_string_to_metric_families

from pusherclient import PusherSocket, api_call, wait_for

NOFILE = 128
RESERVE = 48


async def fetch(server: Any, path: str) -> tuple[int, str, str]:
    async with aiohttp.ClientSession() as session, session.get(server.http_url + path) as response:
        return response.status, response.headers.get("Content-Type", ""), await response.text()


async def sample(server: Any, name: str, **labels: str) -> float:
    """One sample of /metrics (0 when the series does not exist yet)."""
    status, _, text = await fetch(server, "/metrics")
    assert status == 200
    for family in text_string_to_metric_families(text):
        for item in family.samples:
            if item.name == name and all(item.labels.get(k) == v for k, v in labels.items()):
                return float(item.value)
    return 0.0


async def upgrade_status(server: Any, headers: str = "") -> tuple[int, dict[str, str]]:
    """Send a WebSocket upgrade by hand; the status and headers of the answer (a reset raises)."""
    reader, writer = await asyncio.open_connection(server.host, server.port)
    try:
        writer.write(
            f"GET /app/{server.key}?protocol=7 HTTP/1.1\r\nHost: {server.host}\r\nUpgrade: websocket\r\n"
            "Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n"
            f"{headers}\r\n".encode()
        )
        head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5)
    finally:
        writer.close()
        with contextlib.suppress(OSError):
            await writer.wait_closed()
    lines = head.decode("latin-1").split("\r\n")
    fields = dict(line.split(": ", 1) for line in lines[1:] if ": " in line)
    return int(lines[0].split(" ")[1]), {name.lower(): value for name, value in fields.items()}


async def open_until_refused(server: Any, limit: int) -> list[PusherSocket]:
    """Open sockets one after another until the server answers 503 (at most ``limit``)."""
    opened: list[PusherSocket] = []
    for _ in range(limit):
        status, _ = await upgrade_status(server)
        if status == 503:
            return opened
        assert status == 101, status
        opened.append(await PusherSocket.open(server.ws_url()))
    raise AssertionError(f"{limit} sockets opened and none refused")


@pytest.mark.parametrize("loop", ["uvloop", "asyncio"])
async def test_a_full_server_refuses_sockets_with_503_keeps_its_api_and_recovers(server_factory, loop) -> None:
    server = server_factory({"CLARION_LOOP": loop, "CLARION_FD_RESERVE": str(RESERVE)}, nofile=NOFILE)
    assert f"websocket_capacity={NOFILE - RESERVE}" in server.log_text()
    status, _, body = await fetch(server, "/ready")
    assert status == 200, body
    opened = await open_until_refused(server, NOFILE)
    try:
        assert len(opened) == NOFILE - RESERVE
        channel = "capacity"
        await opened[0].subscribe(channel)
        # Many more refused, each with a clean 503, none reset, in waves under the reserve.
        for _ in range(4):
            answers = await asyncio.gather(*(upgrade_status(server) for _ in range(RESERVE // 4)))
            assert {status for status, _ in answers} == {503}, answers
            assert all(headers.get("retry-after") == "5" for _, headers in answers)
        status, _, body = await fetch(server, "/health")
        assert status == 200
        status, _, body = await fetch(server, "/ready")
        assert status == 503
        ready = json.loads(body)
        assert ready["status"] == "saturated" and ready["capacity"] == NOFILE - RESERVE, ready
        # The API still publishes, and the event reaches a socket of the full server.
        status, answer = await server.trigger(channel, "still-here", '{"n":1}')
        assert status == 200, answer
        event = await opened[0].expect("still-here", channel)
        assert json.loads(event["data"]) == {"n": 1}
        assert await sample(server, "clarion_capacity_saturated") == 1
        assert await sample(server, "clarion_connections_refused_total", code="503") >= 4 * (RESERVE // 4)
        assert await sample(server, "clarion_accept_errors_total", errno="EMFILE") == 0
        # Refusals are logged aggregated, not once per attempt.
        refused_lines = await server.logged("websocket connections refused reason=capacity")
        assert 1 <= len(refused_lines) <= 2, refused_lines
        # Sockets leave: the server takes new ones again by itself.
        for sock in opened[-10:]:
            await sock.close()
        del opened[-10:]

        async def ready_again() -> bool:
            return (await fetch(server, "/ready"))[0] == 200

        await wait_for(ready_again, timeout=10)
        opened.append(await PusherSocket.open(server.ws_url()))
        assert await sample(server, "clarion_capacity_saturated") == 0
    finally:
        for sock in opened:
            await sock.close()


async def test_the_node_ceiling_counts_every_app(server_factory) -> None:
    config = """
[[apps]]
id = "1"
key = "key-one"
secret = "secret-one"
[[apps]]
id = "2"
key = "key-two"
secret = "secret-two"
"""
    server = server_factory({"CLARION_MAX_NODE_CONNECTIONS": "3"}, config=config)
    opened = [
        await PusherSocket.open(server.ws_url("key-one")),
        await PusherSocket.open(server.ws_url("key-two")),
        await PusherSocket.open(server.ws_url("key-two")),
    ]
    try:
        server.key = "key-one"
        status, headers = await upgrade_status(server)
        assert status == 503 and headers["retry-after"] == "5"
        await opened.pop().close()

        async def admitted() -> bool:
            return (await upgrade_status(server))[0] == 101

        await wait_for(admitted, timeout=5)
    finally:
        for sock in opened:
            await sock.close()


def test_a_ceiling_over_the_descriptor_limit_is_warned_about(server_factory) -> None:
    server = server_factory(
        {"CLARION_FD_RESERVE": str(RESERVE), "CLARION_MAX_NODE_CONNECTIONS": "1000", "CLARION_MAX_CONNECTIONS": "500"},
        nofile=NOFILE,
    )
    text = server.log_text()
    assert "max_node_connections does not fit under the descriptor limit" in text
    assert f"max_connections (app {server.app_id}) does not fit" in text


def test_the_soft_descriptor_limit_is_raised_to_the_hard_one(server_factory) -> None:
    import resource

    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    server = server_factory({"CLARION_FD_RESERVE": "16"})
    assert f"fd_limit={hard}" in server.log_text()
    with open(f"/proc/{server.proc.pid}/limits") as limits:
        line = next(line for line in limits if line.startswith("Max open files"))
    assert line.split()[3:5] == [str(hard), str(hard)], (line, soft)


async def test_accept_failures_are_counted_and_logged_once_per_interval(server_factory) -> None:
    # No reserve and the standard loop: idle sockets take every descriptor, accept() fails.
    server = server_factory({"CLARION_LOOP": "asyncio", "CLARION_FD_RESERVE": "0"}, nofile=48)
    idle = []
    try:
        for _ in range(80):
            idle.append(socket.create_connection((server.host, server.port)))

        def logged() -> bool:
            return "out of system resource" in server.log_text()

        await wait_for(logged, timeout=10)
    finally:
        for sock in idle:
            sock.close()

    async def counted() -> bool:
        try:
            return await sample(server, "clarion_accept_errors_total", errno="EMFILE") > 1
        except OSError:
            return False

    await wait_for(counted, timeout=15, interval=0.2)
    lines = [line for line in server.log_text().splitlines() if "out of system resource" in line]
    assert len(lines) <= 2, lines
    status, answer = await api_call(
        server.http_url, server.key, server.secret, "GET", f"/apps/{server.app_id}/channels"
    )
    assert status == 200, answer
