"""Per-IP connection limits (with X-Forwarded-For from trusted proxies only) and the per-app HTTP
API rate limit, each at its edge, each refusal answered, counted and logged."""

from __future__ import annotations

import json
from typing import Any

import aiohttp

from integration.test_capacity import fetch, sample, upgrade_status
from pusherclient import PusherSocket, signed_query, wait_for

# Loopback is exempt by default; these servers limit every address.
LIMIT_LOOPBACK = {"CLARION_RATE_LIMIT_EXEMPT": "none"}


async def held(server: Any, forwarded_for: str | None = None) -> PusherSocket:
    headers = {"X-Forwarded-For": forwarded_for} if forwarded_for else {}
    return await PusherSocket.open(server.ws_url(), headers=headers)


def xff(address: str) -> str:
    return f"X-Forwarded-For: {address}\r\n"


async def test_the_connection_rate_per_address_allows_its_burst_then_429_then_again(server_factory) -> None:
    server = server_factory(
        {
            **LIMIT_LOOPBACK,
            "CLARION_IP_CONNECTION_RATE": "0.2",  # a token every 5 s: no refill inside the test's steps
            "CLARION_IP_CONNECTION_BURST": "3",
            "CLARION_IP_MAX_CONNECTIONS": "0",
        }
    )
    for _ in range(3):
        assert (await upgrade_status(server))[0] == 101
    status, headers = await upgrade_status(server)
    assert status == 429 and headers["retry-after"] == "5"
    for _ in range(20):  # a storm: each refused, one log line for all
        assert (await upgrade_status(server))[0] == 429
    assert await sample(server, "clarion_rate_limited_total", what="ip_connection_rate") == 21
    assert await sample(server, "clarion_connections_refused_total", code="429") == 21
    lines = await server.logged("reason=ip_connection_rate")
    assert len(lines) == 1 and "count=1" in lines[0], lines

    async def admitted() -> bool:
        return (await upgrade_status(server))[0] == 101

    await wait_for(admitted, timeout=10, interval=0.2)  # the bucket refills within 5 s


async def test_loopback_is_exempt_by_default(server_factory) -> None:
    server = server_factory({"CLARION_IP_CONNECTION_RATE": "1", "CLARION_IP_CONNECTION_BURST": "1"})
    for _ in range(5):
        assert (await upgrade_status(server))[0] == 101
    assert await sample(server, "clarion_rate_limited_total", what="ip_connection_rate") == 0


async def test_open_connections_per_address_are_capped_and_free_again_when_one_leaves(server_factory) -> None:
    server = server_factory({**LIMIT_LOOPBACK, "CLARION_IP_MAX_CONNECTIONS": "2", "CLARION_IP_CONNECTION_RATE": "0"})
    first, second = await held(server), await held(server)
    try:
        status, headers = await upgrade_status(server)
        assert status == 429 and headers["retry-after"] == "5"
        assert await sample(server, "clarion_rate_limited_total", what="ip_connections") == 1
        await server.logged("reason=ip_connections")
        await second.close()

        async def admitted() -> bool:
            return (await upgrade_status(server))[0] == 101

        await wait_for(admitted, timeout=5)
    finally:
        await first.close()
        await second.close()


async def test_forwarded_for_from_a_trusted_proxy_counts_each_client(server_factory) -> None:
    server = server_factory(
        {
            **LIMIT_LOOPBACK,
            "CLARION_IP_MAX_CONNECTIONS": "1",
            "CLARION_IP_CONNECTION_RATE": "0",
            "CLARION_TRUSTED_PROXIES": "127.0.0.0/8, 10.0.0.0/8",
        }
    )
    client = await held(server, "203.0.113.5")
    try:
        # Another client behind the same proxy is its own address.
        assert (await upgrade_status(server, xff("203.0.113.6")))[0] == 101
        # The same client again, through a second trusted proxy: refused.
        assert (await upgrade_status(server, xff("203.0.113.5, 10.1.2.3")))[0] == 429
        # A forged left-most hop changes nothing: the right-most untrusted address is the client.
        assert (await upgrade_status(server, xff("198.51.100.1, 203.0.113.5")))[0] == 429
        assert await sample(server, "clarion_rate_limited_total", what="ip_connections") == 2
    finally:
        await client.close()


async def test_forwarded_for_from_an_untrusted_peer_is_ignored(server_factory) -> None:
    server = server_factory({**LIMIT_LOOPBACK, "CLARION_IP_MAX_CONNECTIONS": "1", "CLARION_IP_CONNECTION_RATE": "0"})
    client = await held(server, "203.0.113.5")
    try:
        # The header names another client, but the peer (127.0.0.1) is what counts: refused.
        assert (await upgrade_status(server, xff("203.0.113.6")))[0] == 429
        assert await sample(server, "clarion_rate_limited_total", what="ip_connections") == 1
    finally:
        await client.close()


async def trigger(server: Any) -> tuple[int, dict[str, str], Any]:
    path = f"/apps/{server.app_id}/events"
    body = json.dumps({"name": "e", "channel": "limited", "data": "{}"}).encode()
    params = signed_query(server.key, server.secret, "POST", path, body)
    async with (
        aiohttp.ClientSession() as session,
        session.post(
            server.http_url + path, params=params, data=body, headers={"Content-Type": "application/json"}
        ) as response,
    ):
        return response.status, dict(response.headers), await response.json()


async def test_the_api_rate_limit_per_app_answers_429_with_retry_after(server_factory) -> None:
    server = server_factory({"CLARION_API_RATE_LIMIT": "0.2", "CLARION_API_BURST": "2"})
    for _ in range(2):
        assert (await trigger(server))[0] == 200
    status, headers, answer = await trigger(server)
    assert status == 429, answer
    assert answer == {"error": "API rate limit exceeded"}
    assert 4 <= int(headers["Retry-After"]) <= 5  # one token at 0.2 a second
    for _ in range(10):
        assert (await trigger(server))[0] == 429
    assert await sample(server, "clarion_rate_limited_total", what="api") == 11
    assert await sample(server, "clarion_api_requests_total", endpoint="events", status="429") == 11
    lines = await server.logged("api requests rate limited")
    assert len(lines) == 1 and f"app_id={server.app_id}" in lines[0], lines
    # Health and metrics are not API calls: never limited.
    assert (await fetch(server, "/health"))[0] == 200

    async def allowed() -> bool:
        return (await trigger(server))[0] == 200

    await wait_for(allowed, timeout=10, interval=0.5)


async def test_an_app_without_an_api_rate_limit_is_not_limited(server_factory) -> None:
    server = server_factory()
    for _ in range(15):
        assert (await trigger(server))[0] == 200
    assert await sample(server, "clarion_rate_limited_total", what="api") == 0
