"""Health, readiness and Prometheus metrics on a real server."""

from __future__ import annotations

import json
from typing import Any

import aiohttp
from prometheus_client.parser import text_string_to_metric_families

from pusherclient import PusherSocket, api_call, wait_for


async def fetch(server: Any, path: str) -> tuple[int, str, str]:
    async with aiohttp.ClientSession() as session, session.get(server.http_url + path) as response:
        return response.status, response.headers.get("Content-Type", ""), await response.text()


async def metrics_text(server: Any) -> str:
    status, _, text = await fetch(server, "/metrics")
    assert status == 200
    return text


async def sample(server: Any, name: str, **labels: str) -> float:
    """The value of one sample in /metrics (0 when the series does not exist yet)."""
    for family in text_string_to_metric_families(await metrics_text(server)):
        for s in family.samples:
            if s.name == name and all(s.labels.get(k) == v for k, v in labels.items()):
                return float(s.value)
    return 0.0


async def trigger(server: Any, channel: str, secret: str | None = None) -> tuple[int, Any]:
    return await api_call(
        server.http_url,
        server.key,
        secret or server.secret,
        "POST",
        f"/apps/{server.app_id}/events",
        {"name": "e", "channel": channel, "data": "d"},
    )


async def test_health_is_200_status_ok(server) -> None:
    status, content_type, text = await fetch(server, "/health")
    assert status == 200
    assert content_type.startswith("application/json")
    assert json.loads(text) == {"status": "ok"}


async def test_ready_is_200_with_the_memory_bus(server) -> None:
    status, _, text = await fetch(server, "/ready")
    assert status == 200
    assert json.loads(text)["status"] == "ready"


async def test_metrics_is_prometheus_text_with_connection_and_api_series(server) -> None:
    status, content_type, text = await fetch(server, "/metrics")
    assert status == 200
    assert content_type.startswith("text/plain")
    names = {family.name for family in text_string_to_metric_families(text)}
    assert "clarion_connections" in names
    assert "clarion_api_requests" in names  # the counter family of clarion_api_requests_total
    assert "# TYPE clarion_connections gauge" in text
    assert "# TYPE clarion_api_requests_total counter" in text


async def test_metrics_never_show_the_app_secret(server) -> None:
    await trigger(server, "secret-check")
    await trigger(server, "secret-check", secret="wrong-secret")
    assert server.secret not in await metrics_text(server)


async def test_api_request_counter_moves_after_a_trigger(server) -> None:
    before = await sample(server, "clarion_api_requests_total", endpoint="events", status="200")
    status, _ = await trigger(server, "counted")
    assert status == 200
    assert await sample(server, "clarion_api_requests_total", endpoint="events", status="200") == before + 1


async def test_api_request_counter_counts_a_refused_call_under_401(server) -> None:
    ok_before = await sample(server, "clarion_api_requests_total", endpoint="events", status="200")
    refused_before = await sample(server, "clarion_api_requests_total", endpoint="events", status="401")
    status, _ = await trigger(server, "counted", secret="wrong-secret")
    assert status == 401
    assert await sample(server, "clarion_api_requests_total", endpoint="events", status="401") == refused_before + 1
    assert await sample(server, "clarion_api_requests_total", endpoint="events", status="200") == ok_before


async def test_api_latency_histogram_counts_each_request(server) -> None:
    before = await sample(server, "clarion_api_request_seconds_count", endpoint="events")
    await trigger(server, "timed")
    await trigger(server, "timed", secret="wrong-secret")
    assert await sample(server, "clarion_api_request_seconds_count", endpoint="events") == before + 2


async def test_connections_gauge_follows_open_and_closed_sockets(server) -> None:
    before = await sample(server, "clarion_connections", app_id=server.app_id)
    sock = await PusherSocket.open(server.ws_url())
    try:
        assert await sample(server, "clarion_connections", app_id=server.app_id) == before + 1
    finally:
        await sock.close()

    async def back_to_before() -> bool:
        return await sample(server, "clarion_connections", app_id=server.app_id) == before

    await wait_for(back_to_before)


async def test_published_and_delivered_counters_move_after_a_trigger(server) -> None:
    published = await sample(server, "clarion_events_published_total", source="api")
    delivered = await sample(server, "clarion_deliveries_total")
    async with await PusherSocket.open(server.ws_url()) as a, await PusherSocket.open(server.ws_url()) as b:
        for sock in (a, b):
            assert (await sock.subscribe("metered"))["event"] == "pusher_internal:subscription_succeeded"
        status, _ = await trigger(server, "metered")
        assert status == 200
        await a.expect("e", "metered")
        await b.expect("e", "metered")
    assert await sample(server, "clarion_events_published_total", source="api") == published + 1
    assert await sample(server, "clarion_deliveries_total") == delivered + 2
