"""Fixtures for the SDK tests: one ``clarion serve`` and the two real test apps (FastAPI on
uvicorn, Django over ASGI on uvicorn), each in a thread of the test process, for the session."""

from __future__ import annotations

import threading
import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from typing import Any

import httpx
import pytest
import uvicorn

from compat.nodeclient import NodeClient
from conftest import RunningServer, run_server

from .domain import USERS


class ThreadedServer:
    """A uvicorn server on a free port in a daemon thread."""

    def __init__(self, app: Any) -> None:
        config = uvicorn.Config(app, host="127.0.0.1", port=0, log_level="warning", lifespan="off")
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(target=self.server.run, daemon=True)

    def start(self) -> int:
        self.thread.start()
        deadline = time.monotonic() + 20
        while not self.server.started:
            if time.monotonic() > deadline or not self.thread.is_alive():
                raise RuntimeError("the test app did not start")
            time.sleep(0.02)
        port: int = self.server.servers[0].sockets[0].getsockname()[1]
        return port

    def stop(self) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=10)


@dataclass
class AppUnderTest:
    kind: str
    url: str
    broadcaster: Any
    logins: dict[str, dict[str, Any]] = field(default_factory=dict)

    async def login(self, name: str) -> dict[str, Any]:
        """{"headers", "cookies"} that make requests to the app come from this user."""
        if name in self.logins:
            return self.logins[name]
        if self.kind == "fastapi":
            creds: dict[str, Any] = {"headers": {"Authorization": f"Bearer {USERS[name].token}"}, "cookies": {}}
        else:
            async with httpx.AsyncClient(base_url=self.url) as client:
                answer = await client.post("/login", json={"username": name, "password": name})
                answer.raise_for_status()
                creds = {"headers": {"X-CSRFToken": answer.json()["csrf"]}, "cookies": dict(answer.cookies)}
        self.logins[name] = creds
        return creds

    async def client_auth(self, name: str) -> dict[str, Any]:
        """What pusher-js sends to the app's auth endpoints for this user."""
        creds = await self.login(name)
        auth: dict[str, Any] = {"auth_headers": creds["headers"]}
        if creds["cookies"]:
            auth["auth_cookie"] = "; ".join(f"{k}={v}" for k, v in creds["cookies"].items())
        return auth

    async def call(
        self, name: str | None, method: str, path: str, *, socket_id: str | None = None, **kwargs: Any
    ) -> httpx.Response:
        creds = await self.login(name) if name else {"headers": {}, "cookies": {}}
        headers = dict(creds["headers"])
        if socket_id:
            headers["X-Socket-ID"] = socket_id
        async with httpx.AsyncClient(base_url=self.url, cookies=creds["cookies"], timeout=15) as client:
            return await client.request(method, path, headers=headers, **kwargs)


@pytest.fixture(scope="session")
def sdk_clarion() -> Iterator[RunningServer]:
    with run_server() as server:
        yield server


def driver_url(server: RunningServer) -> str:
    return f"pusher://{server.key}:{server.secret}@{server.host}:{server.port}/{server.app_id}"


@pytest.fixture(scope="session")
def fastapi_app(sdk_clarion: RunningServer, tmp_path_factory: pytest.TempPathFactory) -> Iterator[AppUnderTest]:
    from .fastapi_app import create_app

    app = create_app(driver_url(sdk_clarion), str(tmp_path_factory.mktemp("fastapi") / "app.db"))
    server = ThreadedServer(app)
    port = server.start()
    yield AppUnderTest("fastapi", f"http://127.0.0.1:{port}", app.state.broadcaster)
    server.stop()


@pytest.fixture(scope="session")
def django_app(sdk_clarion: RunningServer, tmp_path_factory: pytest.TempPathFactory) -> Iterator[AppUnderTest]:
    from .djangoapp import site

    app = site.setup(driver_url(sdk_clarion), str(tmp_path_factory.mktemp("django") / "app.db"))
    server = ThreadedServer(app)
    port = server.start()
    yield AppUnderTest("django", f"http://127.0.0.1:{port}", site.BROADCASTER)
    server.stop()


@pytest.fixture(params=["fastapi", "django"])
def app(request: pytest.FixtureRequest) -> AppUnderTest:
    """Each endpoint test runs against both apps."""
    found: AppUnderTest = request.getfixturevalue(f"{request.param}_app")
    return found


@pytest.fixture
async def pusher_js(sdk_clarion: RunningServer, app: AppUnderTest) -> AsyncIterator[Any]:
    """Start real pusher-js clients that authorize through ``app``'s /broadcasting endpoints:
    ``await pusher_js("alice")`` gives a connected client signed in to the app as alice."""
    started: list[NodeClient] = []

    async def start(name: str) -> NodeClient:
        client = await NodeClient.start(
            host=sdk_clarion.host,
            port=sdk_clarion.port,
            key=sdk_clarion.key,
            auth_endpoint=f"{app.url}/broadcasting/auth",
            user_auth_endpoint=f"{app.url}/broadcasting/user-auth",
            label=f"{app.kind}-{name}",
        )
        started.append(client)
        await client.connect(**await app.client_auth(name))
        return client

    try:
        yield start
    finally:
        for client in started:
            await client.close()
