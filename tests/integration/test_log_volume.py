"""What the server logs about connections: bounded under a storm (a summary line says how many
were left out, and the metric counts them), and never a payload or a secret."""

from __future__ import annotations

import asyncio
import json
import math
import time
from typing import Any

from prometheus_client.parser import text_string_to_metric_families

from pusherclient import PusherSocket, api_call, fresh, raw_request, signed_query, wait_for

OPENED = "connection opened"


def entries(server: Any) -> list[dict[str, Any]]:
    """The server's JSON log lines (the ready line on stdout is not one)."""
    return [json.loads(line) for line in server.log_text().splitlines() if line.startswith("{")]


async def suppressed_metric(server: Any, event: str) -> float:
    _, text = await api_get(server, "/metrics")
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == "clarion_log_lines_suppressed_total" and sample.labels.get("event") == event:
                return float(sample.value)
    return 0.0


async def api_get(server: Any, path: str) -> tuple[int, str]:
    import aiohttp

    async with aiohttp.ClientSession() as session, session.get(server.http_url + path) as response:
        return response.status, await response.text()


async def test_a_connection_storm_logs_at_most_the_burst_per_window_and_a_summary_of_the_rest(server_factory) -> None:
    burst, window, storm = 10, 3.0, 80
    server = server_factory(
        env={"CLARION_LOG_FORMAT": "json", "CLARION_LOG_BURST": str(burst), "CLARION_LOG_WINDOW": str(window)}
    )
    started = time.monotonic()
    socks = await asyncio.gather(*(PusherSocket.open(server.ws_url()) for _ in range(storm)))
    try:

        def accounted() -> bool:
            written = [e for e in entries(server) if e["msg"] == OPENED]
            summaries = [e for e in entries(server) if e.get("event") == OPENED and "suppressed" in e]
            suppressed: int = sum(e["suppressed"] for e in summaries)
            return len(written) + suppressed == storm

        # Every connection is either a line or counted in a summary, once its window has ended.
        await wait_for(accounted, timeout=30)
        elapsed = time.monotonic() - started
    finally:
        for sock in socks:
            await sock.close()
    written = [e for e in entries(server) if e["msg"] == OPENED]
    summaries = [e for e in entries(server) if e.get("event") == OPENED and "suppressed" in e]
    windows = math.ceil(elapsed / window) + 1
    assert len(written) <= burst * windows, (len(written), windows)
    assert summaries, "a storm past the burst has a summary line"
    left_out = sum(e["suppressed"] for e in summaries)
    assert left_out >= storm - burst * windows
    assert summaries[0]["msg"] == f"{summaries[0]['suppressed']} more '{OPENED}' in the last 3 s"
    assert await suppressed_metric(server, OPENED) == left_out


async def test_below_the_burst_every_line_is_written_and_nothing_is_suppressed(server_factory) -> None:
    server = server_factory(env={"CLARION_LOG_FORMAT": "json", "CLARION_LOG_BURST": "50"})
    socks = [await PusherSocket.open(server.ws_url()) for _ in range(5)]
    for sock in socks:
        await sock.close()
    await wait_for(lambda: len([e for e in entries(server) if e["msg"] == "connection closed"]) == 5)
    lines = entries(server)
    assert len([e for e in lines if e["msg"] == OPENED]) == 5
    assert all(e["app_id"] == server.app_id and e["socket_id"] for e in lines if e["msg"] == OPENED)
    closed = [e for e in lines if e["msg"] == "connection closed"]
    assert all("code" in e and "reason" in e and e["socket_id"] for e in closed), closed
    assert not [e for e in lines if "suppressed" in e]
    assert await suppressed_metric(server, OPENED) == 0


MARKER = "PAYLOAD-MARKER-7f3a"


async def frames_until(sock: PusherSocket, done: Any) -> list[dict[str, Any]]:
    frames: list[dict[str, Any]] = []
    while not frames or not done(frames):
        frames.append(await sock.recv(timeout=5))
    return frames


async def test_no_payload_and_no_secret_reaches_the_log_even_at_debug(server_factory) -> None:
    server = server_factory(
        env={"CLARION_LOG_FORMAT": "json", "CLARION_LOG_LEVEL": "debug", "CLARION_CLIENT_EVENTS": "all"}
    )
    secrets_seen: list[str] = [server.secret]
    channel = fresh("private-audit")
    presence = fresh("presence-audit")
    path = f"/apps/{server.app_id}/events"
    async with await PusherSocket.open(server.ws_url()) as a, await PusherSocket.open(server.ws_url()) as b:
        for sock in (a, b):
            await sock.subscribe(channel, key=server.key, secret=server.secret)
        member = {"user_id": "u-audit", "user_info": {"note": MARKER}}
        await a.subscribe(presence, key=server.key, secret=server.secret, channel_data=member)
        for index in range(20):
            status, _ = await server.trigger(channel, data=json.dumps({"secret_note": f"{MARKER}-{index}"}))
            assert status == 200
            await a.send("client-note", {"text": f"{MARKER}-client-{index}"}, channel)
        batch = {"batch": [{"name": "e", "channel": channel, "data": f"{MARKER}-batch"}]}
        status, _ = await api_call(
            server.http_url, server.key, server.secret, "POST", f"/apps/{server.app_id}/batch_events", batch
        )
        assert status == 200
        seen = await frames_until(b, lambda frames: sum(f["event"] == "e" for f in frames) == 21)
        assert any(f["event"] == "client-note" for f in seen)
        # Refusals: a forged API signature, a forged channel signature, a forged sign-in.
        body = json.dumps({"name": "e", "channel": channel, "data": MARKER}).encode()
        forged = signed_query(server.key, "not-the-secret", "POST", path, body)
        secrets_seen.append(forged["auth_signature"])
        assert (await raw_request(server.http_url, "POST", path, forged, body))[0] == 401
        bad_auth = f"{server.key}:{'ab' * 32}"
        secrets_seen.append("ab" * 32)
        async with await PusherSocket.open(server.ws_url()) as c:
            assert (await c.subscribe(fresh("private-x"), auth=bad_auth))["event"] == "pusher:subscription_error"
            user_data = json.dumps({"id": "u-audit", "user_info": {"note": MARKER}})
            await c.send_signin(user_data, key=server.key, secret="not-the-secret")
            assert (await c.recv())["event"] == "pusher:error"
        good = signed_query(server.key, server.secret, "POST", path, body)
        secrets_seen.append(good["auth_signature"])
    await wait_for(lambda: len([e for e in entries(server) if e["msg"] == "connection closed"]) == 3)
    text = server.log_text()
    assert "auth failed" in text and "subscription refused" in text and "api request refused" in text
    assert MARKER not in text
    for secret in secrets_seen:
        assert secret not in text
