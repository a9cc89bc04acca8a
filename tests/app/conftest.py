"""Fixtures for the reference app (examples/categories): a real ``clarion serve``, the app as its
own process (``python -m categories_app serve``) on SQLite, and on the machine's PostgreSQL when
one answers on 127.0.0.1:5432, and real pusher-js clients that sign in to the app."""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest

from compat.nodeclient import NodeClient
from conftest import ROOT, RunningServer, run_server, stop_process
from redisproc import free_port

APP_DIR = ROOT / "examples" / "categories"
PASSWORD = "demo-password"
POSTGRES_ADMIN_URL = os.environ.get("CATEGORIES_TEST_POSTGRES", "postgresql://postgres@127.0.0.1:5432/test")


def postgres_answers() -> bool:
    with socket.socket() as sock:
        sock.settimeout(1)
        return sock.connect_ex(("127.0.0.1", 5432)) == 0


# PostgreSQL runs where the machine has it (the test machines do); SQLite always.
DATABASES = ["sqlite", *(["postgresql"] if postgres_answers() else [])]


def pytest_report_header() -> str:
    return f"reference app databases: {', '.join(DATABASES)}"


@contextlib.contextmanager
def postgres_database() -> Iterator[str]:
    """A fresh database on the local PostgreSQL, dropped afterwards: its URL."""
    import asyncpg

    name = f"categories_test_{uuid.uuid4().hex[:12]}"
    admin = POSTGRES_ADMIN_URL

    async def run(sql: str) -> None:
        connection = await asyncpg.connect(admin)
        try:
            await connection.execute(sql)
        finally:
            await connection.close()

    asyncio.run(run(f'CREATE DATABASE "{name}"'))
    try:
        yield admin.rsplit("/", 1)[0] + f"/{name}"
    finally:
        asyncio.run(run(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))


def app_env(
    clarion: RunningServer, database_url: str, data: Path, extra: dict[str, str] | None = None
) -> dict[str, str]:
    return {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(APP_DIR), os.environ.get("PYTHONPATH", "")]),
        "PYTHONUNBUFFERED": "1",
        "CATEGORIES_DATABASE_URL": database_url,
        "CLARION_BROADCAST_DRIVER": f"pusher://{clarion.key}:{clarion.secret}@127.0.0.1:{clarion.port}/{clarion.app_id}",
        "CATEGORIES_MEDIA_DIR": str(data / "media"),
        "CATEGORIES_STATIC_DIR": str(data / "no-spa"),
        **(extra or {}),
    }


@dataclass
class RunningApp:
    url: str
    clarion: RunningServer
    database: str
    proc: subprocess.Popen[bytes]
    log: Path
    env: dict[str, str]
    logins: dict[str, httpx.Cookies] = field(default_factory=dict)

    def log_text(self) -> str:
        return self.log.read_text(errors="replace")

    async def login(self, email: str, password: str = PASSWORD) -> httpx.Cookies:
        if email not in self.logins:
            async with httpx.AsyncClient(base_url=self.url, timeout=30) as client:
                answer = await client.post("/api/login", json={"email": email, "password": password})
                assert answer.status_code == 200, answer.text
                self.logins[email] = answer.cookies
        return self.logins[email]

    async def call(
        self, email: str | None, method: str, path: str, *, socket_id: str | None = None, csrf: bool = True, **kw: Any
    ) -> httpx.Response:
        """A request as this user: its cookies, and for state changes the CSRF header."""
        cookies = await self.login(email) if email else httpx.Cookies()
        headers = dict(kw.pop("headers", {}))
        if csrf and email and method not in ("GET", "HEAD"):
            headers["X-CSRF-Token"] = cookies["csrf_token"]
        if socket_id:
            headers["X-Socket-ID"] = socket_id
        async with httpx.AsyncClient(base_url=self.url, cookies=cookies, timeout=30) as client:
            return await client.request(method, path, headers=headers, **kw)

    async def ids(self, email: str) -> dict[str, int]:
        """Category name -> id, as this user sees them."""
        answer = await self.call(email, "GET", "/api/categories")
        assert answer.status_code == 200, answer.text
        return {c["name"]: c["id"] for c in answer.json()["categories"]}

    async def pusher_js(self, email: str, label: str) -> NodeClient:
        """A real pusher-js client that authorizes through the app as this user."""
        cookies = await self.login(email)
        client = await NodeClient.start(
            host=self.clarion.host,
            port=self.clarion.port,
            key=self.clarion.key,
            auth_endpoint=f"{self.url}/broadcasting/auth",
            user_auth_endpoint=f"{self.url}/broadcasting/user-auth",
            label=label,
        )
        await client.connect(
            auth_headers={"X-CSRF-Token": cookies["csrf_token"]},
            auth_cookie="; ".join(f"{k}={v}" for k, v in cookies.items()),
        )
        return client


@contextlib.contextmanager
def run_app(
    clarion: RunningServer, database_url: str, data: Path, database: str, extra_env: dict[str, str] | None = None
) -> Iterator[RunningApp]:
    """``python -m categories_app serve`` (migrates and seeds a new database) on a free port."""
    port = free_port()
    env = app_env(clarion, database_url, data, extra_env)
    log = data / "app.log"
    with log.open("wb") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "categories_app", "serve", "--port", str(port)],
            cwd=APP_DIR,
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    app = RunningApp(f"http://127.0.0.1:{port}", clarion, database, proc, log, env)
    deadline = time.monotonic() + 60
    while True:
        try:
            if httpx.get(f"{app.url}/health", timeout=2).status_code == 200:
                break
        except httpx.HTTPError:
            pass
        if proc.poll() is not None or time.monotonic() > deadline:
            proc.kill()
            raise RuntimeError(f"the app did not start:\n{app.log_text()}")
        time.sleep(0.1)
    try:
        yield app
    finally:
        stop_process(proc, timeout=15)


@contextlib.contextmanager
def database_url(kind: str, data: Path) -> Iterator[str]:
    if kind == "postgresql":
        with postgres_database() as url:
            yield url
    else:
        yield f"sqlite:///{data / 'categories.db'}"


@pytest.fixture(scope="module", params=DATABASES)
def app(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningApp]:
    """Clarion and the app on a fresh, seeded database, per module and database."""
    data = tmp_path_factory.mktemp(f"categories-{request.param}")
    with (
        run_server() as clarion,
        database_url(request.param, data) as url,
        run_app(clarion, url, data, request.param) as running,
    ):
        yield running


@pytest.fixture
async def clients(app: RunningApp) -> AsyncIterator[Any]:
    """``await clients("alice@acme.test")``: a connected pusher-js client signed in as that user."""
    started: list[NodeClient] = []

    async def start(email: str, label: str | None = None) -> NodeClient:
        client = await app.pusher_js(email, label or email.split("@")[0])
        started.append(client)
        return client

    try:
        yield start
    finally:
        for client in started:
            await client.close()
