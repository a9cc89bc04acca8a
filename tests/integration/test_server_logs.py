"""What the server writes to its log under hostile input: malformed HTTP requests are one line
each (one JSON object each in JSON mode), values from outside cannot forge a line, and a loop
that runs out of descriptors logs a bounded number of lines and serves again once they free up."""

from __future__ import annotations

import asyncio
import json
import os
import resource
from typing import Any

import pytest

from pusherclient import PusherSocket, fresh, wait_for
from wsframes import handshake

MALFORMED = [
    b"GARBAGE\r\n\r\n",  # not HTTP at all
    b"GET /health HTTP/1.1\r\nHost: x\r\nbad header\r\n\r\n",  # a header without a colon
    b"GET /health HTTP/1.1\r\nHost: x\r\nX-Thing: a\x01b\r\n\r\n",  # a control character in a value
    b"GET /health HTTP/1.1\r\nHost: x\r\nContent-Length: abc\r\n\r\n",
    b"POST /apps/1234/events HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\nZZZ\r\nabc\r\n0\r\n\r\n",
    # a second, pipelined request with two lengths
    b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n"
    b"GET /health HTTP/1.1\r\nHost: x\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n",
    b"GET /\x00 HTTP/1.1\r\nHost: x\r\n\r\n",
    b"GET /health HTTP/9.9\r\nHost: x\r\n\r\n",
]


async def send_raw(server: Any, data: bytes) -> bytes:
    reader, writer = await asyncio.open_connection(server.host, server.port)
    try:
        writer.write(data)
        async with asyncio.timeout(10):
            return await reader.read()
    finally:
        writer.close()


def log_lines(server: Any) -> list[str]:
    """What the server wrote, less the ready line (stdout, not the log)."""
    return [line for line in server.log_text().splitlines() if not line.startswith("clarion: listening on")]


@pytest.mark.parametrize("log_format", ["json", "text"])
async def test_malformed_requests_are_logged_as_one_line_each_with_the_remote_and_the_reason(
    server_factory, log_format: str
) -> None:
    server = server_factory(env={"CLARION_LOG_FORMAT": log_format})
    for request in MALFORMED:
        answer = await send_raw(server, request)
        assert b" 400 " in answer.split(b"\r\n", 1)[0] or answer.startswith(b"HTTP/1.1 200"), (request, answer)

    def refused() -> list[str]:
        return [line for line in log_lines(server) if "malformed http request refused" in line]

    await wait_for(lambda: len(refused()) >= len(MALFORMED), timeout=10)
    # One line per malformed request, and nothing else: no traceback, no stray line.
    status, _ = await server.trigger("after-the-garbage")
    assert status == 200
    lines = log_lines(server)
    assert len(refused()) == len(MALFORMED), lines
    assert not [line for line in lines if "Traceback" in line or line.startswith(" ")], lines
    if log_format == "json":
        entries = [json.loads(line) for line in lines]  # every line is one JSON object
        faults = [entry for entry in entries if entry["msg"] == "malformed http request refused"]
        assert all(entry["remote"] == "127.0.0.1" and entry["status"] == 400 for entry in faults), faults
        assert all(entry["reason"] for entry in faults), faults
    else:
        assert all(" remote=127.0.0.1 status=400 " in line for line in refused()), refused()


STAMP = "2030-01-01T00:00:00 info    "


async def test_an_origin_and_a_channel_name_with_newlines_forge_no_log_line(server_factory) -> None:
    server = server_factory(env={"CLARION_ALLOWED_ORIGINS": "https://app.example"})
    forged_origin = f"https://evil.example\n{STAMP}forged-origin app_id=1234"
    reader, writer = await asyncio.open_connection(server.host, server.port)
    try:
        writer.write(handshake(server, Origin=forged_origin))
        async with asyncio.timeout(10):
            await reader.readuntil(b"\r\n\r\n")  # the upgrade, then the 4009 refusal
    finally:
        writer.close()

    server_b = server_factory()
    forged_channel = f"x\n{STAMP}forged-channel app_id=1234"
    async with await PusherSocket.open(server_b.ws_url()) as sock:
        refused = await sock.subscribe(forged_channel)
        assert refused["event"] == "pusher:subscription_error"
        forged_in_json = json.dumps({"event": "pusher:subscribe", "data": {"channel": fresh("y\r\n") + "\u2028z"}})
        await sock.send_raw(forged_in_json)
        await sock.expect("pusher:subscription_error")

    await wait_for(lambda: "origin refused" in server.log_text(), timeout=10)
    await wait_for(lambda: server_b.log_text().count("subscription refused") == 2, timeout=10)
    for running in (server, server_b):
        lines = running.log_text().splitlines()
        assert not [line for line in lines if line.startswith(STAMP) or "forged" in line.split(" ")[0]], lines
        assert not [line for line in lines if line.startswith(("z", "\u2028"))], lines
    assert f'origin="https://evil.example\\n{STAMP}forged-origin app_id=1234"' in server.log_text()
    assert f'channel="x\\n{STAMP}forged-channel app_id=1234"' in server_b.log_text()


async def test_out_of_descriptors_the_asyncio_accept_loop_logs_a_few_lines_and_serves_again(server_factory) -> None:
    """CPython's accept loop reports EMFILE once per pending connection and again on every retry
    (issue 151615). With the server's descriptor limit lowered below what it holds, a burst of
    connections must leave a handful of log lines, not thousands of tracebacks."""
    server = server_factory(env={"CLARION_LOOP": "asyncio"})
    pid = server.proc.pid
    status, _ = await server.trigger("warm-up")
    assert status == 200
    soft, hard = resource.prlimit(pid, resource.RLIMIT_NOFILE)
    in_use = len(os.listdir(f"/proc/{pid}/fd"))
    before = len(log_lines(server))
    writers: list[asyncio.StreamWriter] = []
    resource.prlimit(pid, resource.RLIMIT_NOFILE, (in_use + 2, hard))
    try:
        for _ in range(64):  # the kernel completes them; the server cannot accept most
            _, writer = await asyncio.open_connection(server.host, server.port)
            writers.append(writer)

        def accept_errors() -> list[str]:
            return [line for line in log_lines(server)[before:] if "socket.accept() out of system resource" in line]

        await wait_for(accept_errors, timeout=10)
        # An observation window: unbounded, the log grew by thousands of lines a second here.
        await asyncio.sleep(3)
        grown = log_lines(server)[before:]
        assert len(accept_errors()) <= 2, accept_errors()
        assert len(grown) <= 20, f"{len(grown)} lines, e.g. {grown[:5]}"
        assert "EMFILE" in accept_errors()[0]
    finally:
        for writer in writers:
            writer.close()
        resource.prlimit(pid, resource.RLIMIT_NOFILE, (soft, hard))
    # Descriptors free again: the loop retries its accepts and serves as before.
    async with await PusherSocket.open(server.ws_url()) as sock:
        await sock.subscribe("after")
        status, _ = await server.trigger("after", "back")
        assert status == 200
        await sock.expect("back", "after")
    counted = 0.0
    for line in (await _metrics(server)).splitlines():
        if line.startswith('clarion_loop_errors_total{exception="OSError"}'):
            counted = float(line.rsplit(" ", 1)[1])
    assert counted >= len(accept_errors()), counted


async def _metrics(server: Any) -> str:
    import aiohttp

    async with aiohttp.ClientSession() as session, session.get(server.http_url + "/metrics") as response:
        return await response.text()
