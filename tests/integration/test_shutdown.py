"""SIGTERM: /ready says draining, new sockets are refused, open ones get 4200 spread over the
window while the HTTP API answers, held webhooks are sent, and the process exits 0 in time."""

from __future__ import annotations

import asyncio
import json
import signal
import time
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import pytest
from aiohttp import web

from integration.test_cluster import cluster_env, expect_member
from integration.test_cluster import subscribe as cluster_subscribe
from pusherclient import PusherSocket, wait_for

SPREAD = 2.0
TIMEOUT = 8.0
SOCKETS = 20


class Hooks:
    """A webhook receiver: the events of every POST it answered 200."""

    def __init__(self) -> None:
        self.events: list[dict[str, Any]] = []
        self.runner: web.AppRunner | None = None
        self.port = 0

    async def handle(self, request: web.Request) -> web.Response:
        self.events += json.loads(await request.read())["events"]
        return web.Response(status=200)

    async def start(self) -> None:
        app = web.Application()
        app.router.add_post("/hook", self.handle)
        self.runner = web.AppRunner(app)
        await self.runner.setup()
        await web.TCPSite(self.runner, "127.0.0.1", 0).start()
        self.port = self.runner.addresses[0][1]


@pytest.fixture
async def hooks() -> AsyncIterator[Hooks]:
    receiver = Hooks()
    await receiver.start()
    yield receiver
    assert receiver.runner is not None
    await receiver.runner.cleanup()


async def _get(url: str) -> tuple[int, Any]:
    async with aiohttp.ClientSession() as session, session.get(url) as response:
        return response.status, await response.json()


async def _closed_at(sock: PusherSocket) -> tuple[int | None, float]:
    code = await sock.closed(timeout=SPREAD + TIMEOUT)
    return code, time.monotonic()


def _env(hooks: Hooks, **extra: str) -> dict[str, str]:
    return {
        "CLARION_SHUTDOWN_SPREAD": str(SPREAD),
        "CLARION_SHUTDOWN_TIMEOUT": str(TIMEOUT),
        "CLARION_WEBHOOK_URL": f"http://127.0.0.1:{hooks.port}/hook",
        # Far longer than the test: channel_vacated is still held when SIGTERM comes.
        "CLARION_WEBHOOK_DELAY": "60",
        **extra,
    }


async def _drain_and_check(running: Any, hooks: Hooks) -> None:
    socks = [await PusherSocket.open(running.ws_url()) for _ in range(SOCKETS)]
    try:
        await socks[0].subscribe("drain-me")
        closes = [asyncio.create_task(_closed_at(sock)) for sock in socks]
        sent = time.monotonic()
        running.proc.send_signal(signal.SIGTERM)

        async def draining() -> bool:
            status, body = await _get(running.http_url + "/ready")
            return status == 503 and body == {"status": "draining"}

        await wait_for(draining, timeout=SPREAD)
        assert (await _get(running.http_url + "/health"))[0] == 200
        assert (await running.trigger("still-up"))[0] == 200
        with pytest.raises(aiohttp.WSServerHandshakeError) as refused:
            await PusherSocket.open(running.ws_url())
        assert refused.value.status == 503

        results = await asyncio.gather(*closes)
        assert [code for code, _ in results] == [4200] * SOCKETS
        times = sorted(at for _, at in results)
        assert times[-1] - times[0] >= SPREAD / 2, times  # spread, not all at once
        assert times[-1] - sent <= SPREAD + 2.0, times  # and within the window (plus a margin)
    finally:
        for sock in socks:
            await sock.close()
    assert await asyncio.to_thread(running.proc.wait, TIMEOUT + 5) == 0
    # The held channel_vacated went out before the process ended.
    assert any(e["name"] == "channel_vacated" and e["channel"] == "drain-me" for e in hooks.events), hooks.events


async def test_sigterm_drains_one_process(server_factory: Any, hooks: Hooks) -> None:
    running = server_factory(env=_env(hooks))
    await _drain_and_check(running, hooks)
    await running.logged("draining")


async def test_sigterm_drains_every_worker(server_factory: Any, hooks: Hooks) -> None:
    running = server_factory(env=_env(hooks, CLARION_WORKERS="2", CLARION_SCALING="redis"))
    await _drain_and_check(running, hooks)
    assert "restarting" not in running.log_text()  # draining workers are not restarted


async def test_presence_members_of_a_draining_node_leave_at_once(server_factory: Any) -> None:
    # A node TTL far past the test: member_removed comes from the clean leave, not from reaping.
    env = cluster_env(CLARION_SHUTDOWN_SPREAD="0.5", CLARION_NODE_TTL="120", CLARION_WEBHOOK_DELAY="0")
    leaving, staying = server_factory(env=env), server_factory(env=env)
    async with (
        await PusherSocket.open(leaving.ws_url()) as member,
        await PusherSocket.open(staying.ws_url()) as observer,
    ):
        await cluster_subscribe(observer, staying, "presence-drain", user="observer")
        await cluster_subscribe(member, leaving, "presence-drain", user="member")
        await expect_member(observer, "member_added", "presence-drain", "member")
        leaving.proc.send_signal(signal.SIGTERM)
        assert await member.closed(timeout=5) == 4200
        await expect_member(observer, "member_removed", "presence-drain", "member", timeout=5)
    assert await asyncio.to_thread(leaving.proc.wait, TIMEOUT + 5) == 0
