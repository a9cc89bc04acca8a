"""The server under test: an external one (``--url``), or one bench starts and stops itself.

Start mode runs ``sys.executable -m clarion serve`` on a free loopback port with a generated app and
waits for ``GET /ready``. The baseline (``bench/baseline.py`` of a source checkout, or any command
given with ``--baseline-cmd``) is started the same way and is ready when its port accepts.
The environment's other ``CLARION_*`` settings (``CLARION_WORKERS``, ``CLARION_SCALING``, ...) pass
through to a started Clarion, so a configuration can be measured as it would run.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shlex
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit

import aiohttp

from . import cpus as affinity

# Set by bench for a started Clarion, or removed: they would change what is measured.
_OVERRIDDEN = (
    "CLARION_CONFIG",
    "CLARION_HOST",
    "CLARION_PORT",
    "CLARION_APP_ID",
    "CLARION_APP_KEY",
    "CLARION_APP_SECRET",
    "CLARION_MAX_CONNECTIONS",
    "CLARION_MAX_NODE_CONNECTIONS",
    "CLARION_API_RATE_LIMIT",
    "CLARION_API_BURST",
    "CLARION_RATE_LIMIT_EXEMPT",
    "CLARION_IP_CONNECTION_RATE",
    "CLARION_IP_CONNECTION_BURST",
    "CLARION_IP_MAX_CONNECTIONS",
    "CLARION_ALLOWED_ORIGINS",
    "CLARION_LOG_FORMAT",
    "CLARION_LOG_LEVEL",
)

START_TIMEOUT = 30.0


class TargetError(RuntimeError):
    """The server could not be started or reached; the message says why."""


@dataclass
class Target:
    label: str  # "clarion", "baseline" or "external"
    http_url: str
    app_id: str
    key: str
    secret: str
    pid: int | None = None
    process: subprocess.Popen[bytes] | None = None
    log_path: Path | None = None
    notes: list[str] = field(default_factory=list)

    @property
    def ws_url(self) -> str:
        parts = urlsplit(self.http_url)
        scheme = "wss" if parts.scheme == "https" else "ws"
        base = parts.path.rstrip("/")
        return f"{scheme}://{parts.netloc}{base}/app/{self.key}?protocol=7&client=clarion-bench&version=1"

    def log_tail(self, lines: int = 30) -> str:
        if self.log_path is None or not self.log_path.exists():
            return ""
        return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])

    def stop(self) -> None:
        proc = self.process
        if proc is not None and proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(15)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(5)
        if self.log_path is not None:
            with contextlib.suppress(OSError):
                self.log_path.unlink()


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        port: int = sock.getsockname()[1]
        return port


def _spawn(
    args: list[str], env: dict[str, str], label: str, cpus: frozenset[int] | None = None
) -> tuple[subprocess.Popen[bytes], Path]:
    handle, name = tempfile.mkstemp(prefix=f"clarion-bench-{label}-", suffix=".log")
    with os.fdopen(handle, "wb") as log:
        try:
            # Our own server command, or the --baseline-cmd the user typed: nothing from elsewhere.
            proc = subprocess.Popen(  # noqa: S603
                args, env=env, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL
            )
        except OSError as exc:
            raise TargetError(f"cannot start {label}: {args[0]}: {exc.strerror or exc}") from None
    if cpus:
        # Before it has started a worker or a thread: they inherit the set.
        try:
            affinity.pin(proc.pid, cpus)
        except OSError as exc:
            proc.kill()
            proc.wait()
            raise TargetError(f"cannot pin {label} to CPUs {affinity.listed(cpus)}: {exc.strerror or exc}") from None
    return proc, Path(name)


async def _wait_ready(target: Target, http_check: bool) -> None:
    assert target.process is not None
    parts = urlsplit(target.http_url)
    host, port = parts.hostname or "127.0.0.1", parts.port or 80
    deadline = time.monotonic() + START_TIMEOUT
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=2)) as session:
        while time.monotonic() < deadline:
            if target.process.poll() is not None:
                raise TargetError(
                    f"{target.label} exited with code {target.process.returncode} before it was ready:\n"
                    + target.log_tail()
                )
            try:
                if http_check:
                    async with session.get(target.http_url + "/ready") as response:
                        if response.status == 200:
                            return
                else:
                    _, writer = await asyncio.open_connection(host, port)
                    writer.close()
                    await writer.wait_closed()
                    return
            except (OSError, aiohttp.ClientError, TimeoutError):
                pass
            await asyncio.sleep(0.05)
    raise TargetError(f"{target.label} was not ready within {START_TIMEOUT:.0f} s:\n" + target.log_tail())


async def start_clarion(app_id: str, key: str, secret: str, cpus: frozenset[int] | None = None) -> Target:
    port = free_port()
    env = {k: v for k, v in os.environ.items() if k not in _OVERRIDDEN}
    env.update(
        {
            "CLARION_HOST": "127.0.0.1",
            "CLARION_PORT": str(port),
            "CLARION_APP_ID": app_id,
            "CLARION_APP_KEY": key,
            "CLARION_APP_SECRET": secret,
            "CLARION_LOG_FORMAT": "text",
            "CLARION_LOG_LEVEL": "warning",
            "PYTHONUNBUFFERED": "1",
        }
    )
    proc, log = _spawn([sys.executable, "-m", "clarion", "serve"], env, "clarion", cpus)
    target = Target("clarion", f"http://127.0.0.1:{port}", app_id, key, secret, proc.pid, proc, log)
    try:
        await _wait_ready(target, http_check=True)
    except BaseException:
        target.stop()
        raise
    return target


def baseline_command(custom: str | None, port: int) -> list[str]:
    if custom:
        return [part.replace("{port}", str(port)) for part in shlex.split(custom)]
    return [sys.executable, "-m", "clarion.bench.baseline", "--host", "127.0.0.1", "--port", str(port)]


async def start_baseline(
    custom: str | None, app_id: str, key: str, secret: str, cpus: frozenset[int] | None = None
) -> Target:
    port = free_port()
    args = baseline_command(custom, port)
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    proc, log = _spawn(args, env, "baseline", cpus)
    target = Target("baseline", f"http://127.0.0.1:{port}", app_id, key, secret, proc.pid, proc, log)
    target.notes.append(" ".join(shlex.quote(a) for a in args))
    try:
        await _wait_ready(target, http_check=False)
    except BaseException:
        target.stop()
        raise
    return target


def external(url: str, app_id: str, key: str, secret: str, pid: int | None) -> Target:
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise TargetError(f"--url must be the server's HTTP base URL, like http://127.0.0.1:6001 (got {url!r})")
    return Target("external", url.rstrip("/"), app_id, key, secret, pid)
