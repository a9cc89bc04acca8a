"""Media uploads (progress on a cache channel, so a page opened mid-upload sees how far it is) and
the app's commands (migrate, seed, reset)."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from compat.nodeclient import NodeClient

from .conftest import APP_DIR, RunningApp

pytestmark = pytest.mark.compat

ALICE, BOB = "alice@acme.test", "bob@acme.test"
CHUNK = 8 * 1024


async def test_a_page_that_joins_mid_upload_gets_the_current_progress_then_the_completion(app: RunningApp, clients):
    cookies = await app.login(ALICE)
    total = 12 * CHUNK
    halfway, proceed = asyncio.Event(), asyncio.Event()

    async def body() -> AsyncIterator[bytes]:
        for index in range(12):
            if index == 4:
                halfway.set()
                await proceed.wait()
            yield bytes([index]) * CHUNK

    async def send() -> httpx.Response:
        async with httpx.AsyncClient(base_url=app.url, cookies=cookies, timeout=60) as client:
            return await client.post(
                "/api/uploads",
                content=body(),
                headers={
                    "X-CSRF-Token": cookies["csrf_token"],
                    "X-Filename": "cat%20photo.png",
                    "Content-Type": "image/png",
                    "Content-Length": str(total),
                },
            )

    sending = asyncio.create_task(send())
    await asyncio.wait_for(halfway.wait(), 30)

    async def under_way() -> dict[str, Any]:
        while True:
            listed = (await app.call(BOB, "GET", "/api/uploads")).json()["uploads"]
            found: list[dict[str, Any]] = [u for u in listed if u["status"] == "uploading" and u["received"] > 0]
            if found:
                return found[0]
            await asyncio.sleep(0.1)

    upload = await asyncio.wait_for(under_way(), 30)
    channel = f"private-cache-tenant.{upload['tenant_id']}.uploads.{upload['id']}"
    bob: NodeClient = await clients(BOB, "bob")
    await bob.subscribe(channel)
    current = await bob.expect(type="event", channel=channel, timeout=15)
    assert current["event"] == "MediaUploadProgress"
    assert 0 < current["data"]["bytes_received"] < total and current["data"]["filename"] == "cat photo.png"
    proceed.set()
    answer = await sending
    assert answer.status_code == 201, answer.text
    assert answer.json()["status"] == "done" and answer.json()["percent"] == 100.0
    done = await bob.expect(type="event", channel=channel, event="MediaUploadCompleted", timeout=15)
    assert done["data"]["size"] == total and done["data"]["url"] == f"/api/uploads/{upload['id']}/file"
    progress = [e["data"]["bytes_received"] for e in bob.events(channel, "MediaUploadProgress")]
    assert progress == sorted(progress) and progress[-1] == total
    file = await app.call(BOB, "GET", done["data"]["url"])
    assert file.status_code == 200 and file.content == b"".join(bytes([i]) * CHUNK for i in range(12))
    assert file.headers["content-type"] == "image/png"
    other = await app.call("carol@globex.test", "GET", done["data"]["url"])
    assert other.status_code == 404


async def test_uploads_are_refused_to_members_and_past_the_size_limit(app: RunningApp):
    headers = {"X-Filename": "a.bin", "Content-Type": "application/octet-stream"}
    member = await app.call(BOB, "POST", "/api/uploads", content=b"x" * 10, headers=headers)
    assert member.status_code == 403
    # A gigabyte announced: refused from the headers, before any of it is read.
    cookies = await app.login(ALICE)
    host, port = app.url.removeprefix("http://").split(":")
    reader, writer = await asyncio.open_connection(host, int(port))
    cookie = "; ".join(f"{k}={v}" for k, v in cookies.items())
    writer.write(
        (
            f"POST /api/uploads HTTP/1.1\r\nHost: {host}\r\nCookie: {cookie}\r\n"
            f"X-CSRF-Token: {cookies['csrf_token']}\r\nX-Filename: big.bin\r\nContent-Length: {10**9}\r\n\r\n"
        ).encode()
    )
    await writer.drain()
    status = await asyncio.wait_for(reader.readline(), 30)
    writer.close()
    assert status.startswith(b"HTTP/1.1 413"), status
    nameless = await app.call(ALICE, "POST", "/api/uploads", content=b"x")
    assert nameless.status_code == 422 and "x-filename" in nameless.json()["errors"]


def command(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "categories_app", *args],
        cwd=APP_DIR,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def test_reset_brings_back_the_demo_data_and_seed_never_touches_a_database_with_data(tmp_path: Path):
    env = {
        **os.environ,
        "PYTHONPATH": str(APP_DIR),
        "CATEGORIES_DATABASE_URL": f"sqlite:///{tmp_path / 'fresh.db'}",
    }
    assert command(env, "migrate").returncode == 0
    assert command(env, "migrate").returncode == 0  # nothing to do the second time
    first = command(env, "seed")
    assert first.returncode == 0 and first.stdout.strip() == "seeded", first.stderr
    again = command(env, "seed")
    assert again.stdout.strip() == "the database has data already: not seeded"
    import sqlite3

    db = sqlite3.connect(tmp_path / "fresh.db")
    db.execute("UPDATE categories SET name = 'Changed' WHERE name = 'Shoes'")
    db.commit()
    reset = command(env, "reset")
    assert reset.returncode == 0, reset.stderr
    names = {row[0] for row in db.execute("SELECT name FROM categories")}
    users = {row[0] for row in db.execute("SELECT email FROM users")}
    db.close()
    assert "Shoes" in names and "Changed" not in names
    assert users == {"alice@acme.test", "bob@acme.test", "carol@globex.test"}
