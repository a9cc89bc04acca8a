"""``Idempotency-Key`` on the HTTP API's event routes (a Clarion extension): a request retried
with the same key publishes nothing again and answers as the first did; per app, per event and
channel, for ``CLARION_IDEMPOTENCY_TTL``; cluster-wide through Redis."""

from __future__ import annotations

import asyncio
import json
import uuid
from typing import Any
from urllib.parse import urlencode

import aiohttp
import pytest

from conftest import RunningServer
from pusherclient import PusherSocket, signed_query, wait_for
from redisproc import SHARED_REDIS_URL


async def post(server: RunningServer, path: str, body: Any, headers: list[tuple[str, str]]) -> tuple[int, Any]:
    """A signed POST to the app's ``path`` with these headers (repeats allowed)."""
    raw = json.dumps(body).encode()
    full = f"/apps/{server.app_id}{path}"
    params = signed_query(server.key, server.secret, "POST", full, raw)
    async with (
        aiohttp.ClientSession() as session,
        session.post(
            server.http_url + full,
            params=params,
            data=raw,
            headers=[("Content-Type", "application/json"), *headers],
        ) as response,
    ):
        return response.status, await response.json(content_type=None)


def event(channel: str, n: int, **extra: Any) -> dict[str, Any]:
    return {"name": "e", "channel": channel, "data": json.dumps({"n": n}), **extra}


async def listening(server: RunningServer, *channels: str) -> PusherSocket:
    sock = await PusherSocket.open(server.ws_url())
    for channel in channels:
        answer = await sock.subscribe(channel)
        assert answer["event"] == "pusher_internal:subscription_succeeded", answer
    return sock


async def marker(server: RunningServer, channel: str) -> str:
    """Trigger a marker event on ``channel``: whatever a socket receives before it was sent before."""
    name = f"marker-{uuid.uuid4().hex[:6]}"
    status, _ = await post(server, "/events", {"name": name, "channel": channel, "data": "{}"}, [])
    assert status == 200
    return name


async def received_until(sock: PusherSocket, marker: str) -> list[tuple[str, Any]]:
    """(channel, n) of every event before ``marker``."""
    got: list[tuple[str, Any]] = []
    while True:
        frame = await sock.recv(timeout=10)
        if frame["event"] == marker:
            return got
        got.append((frame["channel"], json.loads(frame["data"])["n"]))


async def received_until_marker(sock: PusherSocket, server: RunningServer, channel: str) -> list[tuple[str, Any]]:
    return await received_until(sock, await marker(server, channel))


async def test_a_repeated_trigger_with_the_same_key_publishes_once_and_answers_alike(server_factory) -> None:
    server = server_factory()
    sock = await listening(server, "news", "sport")
    try:
        body = event("news", 1, channels=["news", "sport"], info="subscription_count")
        body.pop("channel")
        first = await post(server, "/events", body, [("Idempotency-Key", "order-42")])
        again = await post(server, "/events", body, [("Idempotency-Key", "order-42")])
        assert (
            first
            == again
            == (200, {"channels": {"news": {"subscription_count": 1}, "sport": {"subscription_count": 1}}})
        )
        assert await post(server, "/events", event("news", 2), [("Idempotency-Key", "order-43")]) == (200, {})
        assert await post(server, "/events", event("news", 3), []) == (200, {})
        assert await post(server, "/events", event("news", 3), []) == (200, {})  # no key: published again
        assert await received_until_marker(sock, server, "news") == [
            ("news", 1),
            ("sport", 1),
            ("news", 2),
            ("news", 3),
            ("news", 3),
        ]
        await server.logged("publish skipped: already applied")
        async with aiohttp.ClientSession() as session, session.get(server.http_url + "/metrics") as response:
            text = await response.text()
        assert 'clarion_publishes_skipped_total{reason="idempotency_key"} 2.0' in text  # news and sport
    finally:
        await sock.close()


async def test_a_repeated_batch_publishes_once_and_a_half_applied_one_only_what_is_missing(server_factory) -> None:
    server = server_factory()
    sock = await listening(server, "news", "sport")
    try:
        key = [("Idempotency-Key", "batch-7")]
        batch = {"batch": [event("news", 1), event("sport", 2)]}
        assert await post(server, "/batch_events", batch, key) == (200, {})
        assert await post(server, "/batch_events", batch, key) == (200, {})
        # A batch whose first event went out before the answer was lost: the retry (the whole
        # batch again) publishes only the rest.
        half = [("Idempotency-Key", "batch-8")]
        assert await post(server, "/batch_events", {"batch": [event("news", 3)]}, half) == (200, {})
        retry = {"batch": [event("news", 3), event("sport", 4), event("news", 5)]}
        assert await post(server, "/batch_events", retry, half) == (200, {})
        assert await received_until_marker(sock, server, "news") == [
            ("news", 1),
            ("sport", 2),
            ("news", 3),
            ("sport", 4),
            ("news", 5),
        ]
    finally:
        await sock.close()


async def raw_post(server: RunningServer, path: str, body: Any, header_lines: list[bytes]) -> tuple[int, bytes]:
    """A signed POST written byte for byte, for header values no HTTP client would send."""
    raw = json.dumps(body).encode()
    full = f"/apps/{server.app_id}{path}"
    query = urlencode(signed_query(server.key, server.secret, "POST", full, raw))
    reader, writer = await asyncio.open_connection(server.host, server.port)
    try:
        head = [f"POST {full}?{query} HTTP/1.1".encode(), f"Host: {server.host}".encode()]
        head += [b"Content-Type: application/json", f"Content-Length: {len(raw)}".encode(), b"Connection: close"]
        writer.write(b"\r\n".join([*head, *header_lines]) + b"\r\n\r\n" + raw)
        answer = await asyncio.wait_for(reader.read(), timeout=10)
    finally:
        writer.close()
    status_line, _, rest = answer.partition(b"\r\n")
    return int(status_line.split()[1]), rest.partition(b"\r\n\r\n")[2]


async def test_a_bad_idempotency_key_is_refused_with_400_and_publishes_nothing(server_factory) -> None:
    server = server_factory()
    sock = await listening(server, "news")
    try:
        bad = [
            [("Idempotency-Key", "")],
            [("Idempotency-Key", "x" * 129)],
            [("Idempotency-Key", "one"), ("Idempotency-Key", "two")],
        ]
        for headers in bad:
            for path, body in (("/events", event("news", 0)), ("/batch_events", {"batch": [event("news", 0)]})):
                status, answer = await post(server, path, body, headers)
                assert status == 400, (headers, answer)
                assert "Idempotency-Key" in answer["error"]
        for value in (b"tab\there", "caf\u00e9".encode()):
            status, text = await raw_post(server, "/events", event("news", 0), [b"Idempotency-Key: " + value])
            assert status == 400 and b"Idempotency-Key" in text, (value, text)
        # DEL never gets this far: aiohttp's parser refuses it as a header character.
        assert (await raw_post(server, "/events", event("news", 0), [b"Idempotency-Key: del\x7f"]))[0] == 400
        printable = " ~!\"#$%&'()*+,-./:;<=>?@[\\]^_`{|}~x"
        assert await post(server, "/events", event("news", 1), [("Idempotency-Key", "x" * 128)]) == (200, {})
        assert await post(server, "/events", event("news", 2), [("Idempotency-Key", printable)]) == (200, {})
        assert await received_until_marker(sock, server, "news") == [("news", 1), ("news", 2)]
        await server.logged("bad Idempotency-Key")
    finally:
        await sock.close()


async def test_a_key_is_forgotten_after_the_idempotency_ttl(server_factory) -> None:
    server = server_factory(env={"CLARION_IDEMPOTENCY_TTL": "1"})
    sock = await listening(server, "news")
    try:
        key = [("Idempotency-Key", "short-lived")]
        assert await post(server, "/events", event("news", 1), key) == (200, {})
        seen: list[tuple[str, Any]] = []

        async def published_again() -> bool:
            assert await post(server, "/events", event("news", 1), key) == (200, {})
            seen.extend(await received_until_marker(sock, server, "news"))
            return len(seen) == 2

        await wait_for(published_again, timeout=15, interval=0.2)
        assert seen == [("news", 1), ("news", 1)]
    finally:
        await sock.close()


async def test_a_key_holds_across_the_nodes_of_a_cluster_and_per_app(server_factory) -> None:
    env = {
        "CLARION_SCALING": "redis",
        "CLARION_REDIS_URL": SHARED_REDIS_URL,
        "CLARION_SCALING_PREFIX": f"idem-{uuid.uuid4().hex[:12]}",
    }
    a, b = server_factory(env=env), server_factory(env=env)
    other_app = server_factory(env={**env, "CLARION_APP_ID": "other", "CLARION_APP_KEY": "other-key"})
    on_a, on_b = await listening(a, "news"), await listening(b, "news")
    on_other = await listening(other_app, "news")
    try:
        key = [("Idempotency-Key", "cluster-1")]
        assert await post(a, "/events", event("news", 1), key) == (200, {})
        assert await post(b, "/events", event("news", 1), key) == (200, {})  # the client retried elsewhere
        assert await post(other_app, "/events", event("news", 2), key) == (200, {})  # another app's key
        end = await marker(a, "news")
        assert await received_until(on_a, end) == [("news", 1)]
        assert await received_until(on_b, end) == [("news", 1)]
        assert await received_until_marker(on_other, other_app, "news") == [("news", 2)]
    finally:
        for sock in (on_a, on_b, on_other):
            await sock.close()


@pytest.mark.parametrize("scaling", ["memory", "redis"])
async def test_a_retried_publish_to_a_cache_channel_leaves_the_cache_alone(server_factory, scaling: str) -> None:
    """The retry of an event that was since followed by another must not bring the older one back
    as the channel's cached event."""
    env = {"CLARION_SCALING": scaling}
    if scaling == "redis":
        env |= {"CLARION_REDIS_URL": SHARED_REDIS_URL, "CLARION_SCALING_PREFIX": f"idem-{uuid.uuid4().hex[:12]}"}
    server = server_factory(env=env)
    key = [("Idempotency-Key", "price-1")]
    assert await post(server, "/events", event("cache-price", 1), key) == (200, {})
    assert await post(server, "/events", event("cache-price", 2), []) == (200, {})
    assert await post(server, "/events", event("cache-price", 1), key) == (200, {})  # the retry
    sock = await PusherSocket.open(server.ws_url())
    try:
        answer = await sock.subscribe("cache-price")
        assert answer["event"] == "pusher_internal:subscription_succeeded", answer
        cached = await sock.recv(timeout=10)
        assert (cached["event"], json.loads(cached["data"])) == ("e", {"n": 2})
    finally:
        await sock.close()
