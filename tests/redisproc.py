"""A private ``redis-server`` on a free port, owned by one test: started, killed and restarted on
the same port at will, so outages can be staged without touching the shared Redis."""

from __future__ import annotations

import contextlib
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Iterator

SHARED_REDIS_URL = "redis://127.0.0.1:6379/0"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def port_open(port: int) -> bool:
    with socket.socket() as sock:
        sock.settimeout(0.5)
        return sock.connect_ex(("127.0.0.1", port)) == 0


def answers(port: int) -> bool:
    """PING over a plain socket: True when a Redis on ``port`` says PONG."""
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.5) as sock:
            sock.sendall(b"PING\r\n")
            return sock.recv(16).startswith(b"+PONG")
    except OSError:
        return False


class PrivateRedis:
    def __init__(self, port: int | None = None) -> None:
        self.port = port or free_port()
        self.proc: subprocess.Popen[bytes] | None = None
        self.started: list[subprocess.Popen[bytes]] = []  # every process ever started, for the final check

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self, timeout: float = 10.0) -> None:
        binary = shutil.which("redis-server")
        assert binary is not None, "redis-server is needed for the outage tests"
        args = [binary, "--port", str(self.port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"]
        self.proc = subprocess.Popen([*args, "--daemonize", "no"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        self.started.append(self.proc)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if answers(self.port):
                return
            assert self.proc.poll() is None, f"redis-server exited with {self.proc.returncode}"
            time.sleep(0.02)  # polling a subprocess's readiness, not synchronising tests
        raise AssertionError(f"redis-server did not answer on port {self.port}")

    def kill(self) -> None:
        """SIGKILL: the Redis vanishes with everything it held (it never saves)."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)
        self.proc = None

    @contextlib.contextmanager
    def paused(self) -> Iterator[None]:
        """SIGSTOP for the block: commands sent meanwhile wait in the socket and run after it."""
        assert self.proc is not None
        self.proc.send_signal(signal.SIGSTOP)
        try:
            yield
        finally:
            self.proc.send_signal(signal.SIGCONT)

    def unread(self) -> int:
        """Bytes that clients sent and this Redis has not read yet (its sockets' receive queues,
        including those of connections the client has closed meanwhile): while it is paused, proof
        that a command has gone out to it."""
        total = 0
        for table in ("/proc/net/tcp", "/proc/net/tcp6"):
            with contextlib.suppress(FileNotFoundError), open(table) as rows:
                for row in list(rows)[1:]:
                    cells = row.split()
                    # ESTABLISHED, or CLOSE_WAIT (the client gave up, Redis has not read it yet)
                    if int(cells[1].rsplit(":", 1)[1], 16) == self.port and cells[3] in ("01", "08"):
                        total += int(cells[4].split(":")[1], 16)
        return total

    def all_exited(self) -> bool:
        return all(proc.poll() is not None for proc in self.started)


@contextlib.contextmanager
def private_redis() -> Iterator[PrivateRedis]:
    redis = PrivateRedis()
    redis.start()
    try:
        yield redis
    finally:
        redis.kill()
