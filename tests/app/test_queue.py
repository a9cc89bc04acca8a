"""The reference app on the Redis broadcast queue (CLARION_BROADCAST_REDIS_URL, as deploy/compose.yml
runs it): a change waits in Redis until a real ``clarion broadcast-worker`` sends it to Clarion."""

from __future__ import annotations

import asyncio
import uuid
from pathlib import Path

import pytest

from compat.nodeclient import unique
from conftest import broadcast_worker, run_server
from contracts.conftest import delete_prefix
from redisproc import SHARED_REDIS_URL

from .conftest import run_app
from .test_api import ALICE, BOB, channel_of

pytestmark = pytest.mark.compat


async def test_with_a_redis_queue_a_change_waits_in_redis_until_the_broadcast_worker_sends_it(tmp_path: Path) -> None:
    prefix = f"test-app-queue-{uuid.uuid4().hex[:8]}"
    queue = {"CLARION_BROADCAST_REDIS_URL": SHARED_REDIS_URL, "CLARION_BROADCAST_PREFIX": prefix}
    try:
        with (
            run_server() as clarion,
            run_app(clarion, f"sqlite:///{tmp_path / 'categories.db'}", tmp_path, "sqlite", queue) as app,
        ):
            bob = await app.pusher_js(BOB, "bob")
            try:
                channel = await channel_of(app, BOB)
                await bob.subscribe(channel)
                name = unique("Queued")
                created = await app.call(ALICE, "POST", "/api/categories", json={"name": name})
                assert created.status_code == 201, created.text
                # Committed and answered, and not sent: the app's process does not send it.
                await asyncio.sleep(1.0)
                assert bob.events(channel) == []
                driver = app.env["CLARION_BROADCAST_DRIVER"]
                with broadcast_worker(driver, prefix, tmp_path / "worker.log"):
                    got = await bob.expect(type="event", channel=channel, event="category.created", timeout=20)
                assert got["data"]["name"] == name and got["data"]["id"] == created.json()["id"]
            finally:
                await bob.close()
    finally:
        await delete_prefix(SHARED_REDIS_URL, prefix)
        await delete_prefix(SHARED_REDIS_URL, f"{prefix}-dramatiq")
