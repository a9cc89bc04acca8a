"""Shared fixtures: a real ``clarion serve`` process on a free port, and clients for it."""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import resource
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import AsyncIterator, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pusher
import pytest

from redisproc import SHARED_REDIS_URL

ROOT = Path(__file__).resolve().parent.parent
READY = re.compile(r"listening on https?://(?P<host>[^:\s]+):(?P<port>\d+)")

APP_ID = "1234"
APP_KEY = "test-key"
APP_SECRET = "test-secret"


def stop_process(proc: subprocess.Popen[Any], timeout: float = 10.0) -> None:
    """SIGTERM, then SIGKILL if it is still there after ``timeout`` seconds."""
    proc.terminate()
    try:
        proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


@dataclass
class RunningServer:
    host: str
    port: int
    app_id: str
    key: str
    secret: str
    proc: subprocess.Popen[str]
    output: list[str] = field(default_factory=list)

    @property
    def http_url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def ws_url(self, key: str | None = None, query: str = "protocol=7&client=test&version=1.0") -> str:
        return f"ws://{self.host}:{self.port}/app/{key or self.key}?{query}"

    def pusher(self) -> pusher.Pusher:
        """The official Python SDK, pointed at this server."""
        return pusher.Pusher(
            app_id=self.app_id, key=self.key, secret=self.secret, host=self.host, port=self.port, ssl=False
        )

    def log_text(self) -> str:
        return "".join(self.output)

    async def logged(self, text: str, timeout: float = 5.0) -> list[str]:
        """The log lines holding ``text``, once there is one. A line reaches ``output`` through a
        pipe and a reader thread, a moment after the server wrote it: a client may see what the
        server did (a reset, an answer) before the line arrives."""
        deadline = time.monotonic() + timeout
        while True:
            lines = [line for line in self.log_text().splitlines() if text in line]
            if lines or time.monotonic() > deadline:
                break
            await asyncio.sleep(0.02)
        assert lines, f"no log line with {text!r} in {timeout} s:\n{self.log_text()[-2000:]}"
        return lines

    async def trigger(self, channel: str, name: str = "e", data: str = "{}", **extra: Any) -> tuple[int, Any]:
        """One event through the signed HTTP API, as an app's backend sends it: (status, answer)."""
        from pusherclient import api_call

        body = {"name": name, "channel": channel, "data": data, **extra}
        return await api_call(self.http_url, self.key, self.secret, "POST", f"/apps/{self.app_id}/events", body)


def _pump(stream: Iterable[str], sink: list[str]) -> None:
    for line in stream:
        sink.append(line)


@contextlib.contextmanager
def run_server(
    env: dict[str, str] | None = None, config: str | None = None, tmp: Path | None = None, nofile: int | None = None
) -> Iterator[RunningServer]:
    """Start ``clarion serve`` on a free port and wait for its ready line (``nofile``: with that
    hard and soft descriptor limit)."""
    full_env = {
        **os.environ,
        "CLARION_HOST": "127.0.0.1",
        "CLARION_PORT": "0",
        "CLARION_APP_ID": APP_ID,
        "CLARION_APP_KEY": APP_KEY,
        "CLARION_APP_SECRET": APP_SECRET,
        "PYTHONUNBUFFERED": "1",
        # Sockets left open at teardown close at once; the shutdown tests set their own window.
        "CLARION_SHUTDOWN_SPREAD": "0",
        # Each server its own cluster, so tests sharing one Redis never see each other's state.
        "CLARION_SCALING_PREFIX": f"test-{uuid.uuid4().hex[:12]}",
    }
    args = [sys.executable, "-m", "clarion", "serve"]
    if config is not None:
        assert tmp is not None, "a config needs a tmp dir"
        path = tmp / "clarion.toml"
        path.write_text(config)
        args += ["--config", str(path)]
        for name in ("CLARION_APP_ID", "CLARION_APP_KEY", "CLARION_APP_SECRET"):
            full_env.pop(name)
    full_env.update(env or {})
    limit = None if nofile is None else lambda: resource.setrlimit(resource.RLIMIT_NOFILE, (nofile, nofile))
    proc = subprocess.Popen(
        args,
        env=full_env,
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        bufsize=1,
        preexec_fn=limit,  # setrlimit only: safe between fork and exec
    )
    output: list[str] = []
    assert proc.stdout is not None
    deadline = time.monotonic() + 20
    match = None
    while time.monotonic() < deadline:
        line = proc.stdout.readline()
        if not line:
            break
        output.append(line)
        match = READY.search(line)
        if match:
            break
    if match is None:
        proc.kill()
        proc.wait()
        raise RuntimeError("clarion serve did not start:\n" + "".join(output))
    threading.Thread(target=_pump, args=(proc.stdout, output), daemon=True).start()
    server = RunningServer(
        host=match["host"],
        port=int(match["port"]),
        app_id=full_env.get("CLARION_APP_ID", APP_ID),
        key=full_env.get("CLARION_APP_KEY", APP_KEY),
        secret=full_env.get("CLARION_APP_SECRET", APP_SECRET),
        proc=proc,
        output=output,
    )
    try:
        yield server
    finally:
        stop_process(proc)


@pytest.fixture(scope="module")
def server() -> Iterator[RunningServer]:
    """One server per test module, with the default test app (id 1234, key test-key)."""
    with run_server() as running:
        yield running


@pytest.fixture
def server_factory(tmp_path: Path) -> Iterator[object]:
    """Start servers with extra environment or a TOML config; all are stopped after the test."""
    stack = contextlib.ExitStack()

    def start(env: dict[str, str] | None = None, config: str | None = None, nofile: int | None = None) -> RunningServer:
        return stack.enter_context(run_server(env=env, config=config, tmp=tmp_path, nofile=nofile))

    with stack:
        yield start


@pytest.fixture
async def connect() -> AsyncIterator[Any]:
    """Open raw Pusher sockets to a server (``await connect(server, key=None)``); all are closed
    after the test."""
    from pusherclient import PusherSocket

    opened: list[PusherSocket] = []

    async def open_socket(server: RunningServer, key: str | None = None) -> PusherSocket:
        sock = await PusherSocket.open(server.ws_url(key))
        opened.append(sock)
        return sock

    yield open_socket
    for sock in opened:
        await sock.close()


@contextlib.contextmanager
def broadcast_worker(driver: str, prefix: str, log: Path, *extra: str) -> Iterator[subprocess.Popen[bytes]]:
    """``clarion broadcast-worker`` as a process, its output in ``log``."""
    args = [sys.executable, "-m", "clarion", "broadcast-worker", "--driver", driver, "--prefix", prefix]
    args += ["--redis-url", SHARED_REDIS_URL, "--threads", "4", "--sweep-interval", "1", *extra]
    with log.open("wb") as out:
        proc = subprocess.Popen(args, cwd=ROOT, stdout=out, stderr=subprocess.STDOUT)
    try:
        yield proc
    finally:
        stop_process(proc, timeout=15)
