"""``CLARION_WORKERS=N``: N server processes sharing one port (SO_REUSEPORT), joined through the
Redis backend, under a small supervisor that restarts any worker that dies.

The kernel spreads new connections over the workers; each worker is a full node of the cluster,
so a socket on one worker receives events published on another like any cross-host node would.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time

from prometheus_client import multiprocess

from .config import Settings

RESTART_BACKOFF_MAX = 10.0
READY_TIMEOUT = 30.0
SHUTDOWN_GRACE = 10.0  # seconds past CLARION_SHUTDOWN_TIMEOUT before a worker is killed


def _reserve_port(host: str, port: int) -> socket.socket:
    """Bind (not listen) with SO_REUSEPORT: fixes the port when 0 was asked for, and holds it."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    sock.bind((host, port))
    return sock


class Supervisor:
    def __init__(self, settings: Settings, config_path: str | None) -> None:
        self.settings = settings
        self.config_path = config_path
        self.port = settings.port
        self.procs: dict[int, subprocess.Popen[str]] = {}
        self.ready: set[int] = set()
        self.stopping = False
        self._ready_changed = threading.Condition()
        # The workers' metric files: a scrape on any worker reads them all (observability.metrics).
        self.metrics_dir = tempfile.mkdtemp(prefix="clarion-metrics-")

    def _spawn(self, index: int) -> None:
        env = {
            **os.environ,
            "CLARION_PORT": str(self.port),
            "CLARION_HOST": self.settings.host,
            "CLARION_WORKERS": "1",
            "CLARION_WORKER_INDEX": str(index),
            "CLARION_SUPERVISOR_PID": str(os.getpid()),
            "PROMETHEUS_MULTIPROC_DIR": self.metrics_dir,
            "PYTHONUNBUFFERED": "1",
        }
        args = [sys.executable, "-m", "clarion", "serve"]
        if self.config_path:
            args += ["--config", self.config_path]
        # Our own interpreter and module, with arguments we built: nothing from outside.
        proc = subprocess.Popen(args, env=env, stdout=subprocess.PIPE, text=True, bufsize=1)  # noqa: S603
        self.procs[index] = proc
        threading.Thread(target=self._relay, args=(index, proc), daemon=True).start()

    def _relay(self, index: int, proc: subprocess.Popen[str]) -> None:
        """Pass a worker's stdout through; note when it is listening."""
        assert proc.stdout is not None
        for line in proc.stdout:
            if line.startswith("clarion: listening on"):
                with self._ready_changed:
                    self.ready.add(index)
                    self._ready_changed.notify_all()
                print(f"clarion: worker {index} ready (pid {proc.pid})", flush=True)
                continue
            sys.stdout.write(f"[worker {index}] {line}")
            sys.stdout.flush()

    def run(self) -> int:
        reserved = _reserve_port(self.settings.host, self.settings.port)
        self.port = reserved.getsockname()[1]
        for sig in (signal.SIGINT, signal.SIGTERM):
            signal.signal(sig, self._stop)
        count = self.settings.workers
        for index in range(count):
            self._spawn(index)
        with self._ready_changed:
            self._ready_changed.wait_for(lambda: len(self.ready) == count or self.stopping, READY_TIMEOUT)
        if len(self.ready) < count:
            print(f"clarion: only {len(self.ready)} of {count} workers started", file=sys.stderr, flush=True)
            self._shutdown()
            return 1
        scheme = "https" if self.settings.tls_cert else "http"
        print(f"clarion: listening on {scheme}://{self.settings.host}:{self.port} ({count} workers)", flush=True)
        if self.settings.dev_app:
            from .serve import dev_banner

            print(dev_banner(self.settings, self.port), flush=True)
        backoff = {index: 1.0 for index in range(count)}
        started = {index: time.monotonic() for index in range(count)}
        while not self.stopping:
            time.sleep(0.2)
            for index, proc in list(self.procs.items()):
                code = proc.poll()
                if code is None or self.stopping:
                    continue
                # A worker that ran a while gets restarted at once; one that keeps dying, slower.
                if time.monotonic() - started[index] > 30:
                    backoff[index] = 1.0
                delay = backoff[index]
                print(
                    f"clarion: worker {index} (pid {proc.pid}) exited with {code}; restarting in {delay:.0f} s",
                    file=sys.stderr,
                    flush=True,
                )
                self.ready.discard(index)
                # Its gauges leave the sums (its counters stay in the totals).
                multiprocess.mark_process_dead(proc.pid, self.metrics_dir)  # type: ignore[no-untyped-call]
                time.sleep(delay)
                backoff[index] = min(backoff[index] * 2, RESTART_BACKOFF_MAX)
                if not self.stopping:
                    started[index] = time.monotonic()
                    self._spawn(index)
        self._shutdown()
        reserved.close()
        return 0

    def _stop(self, signum: int, frame: object) -> None:
        self.stopping = True
        with self._ready_changed:
            self._ready_changed.notify_all()

    def _shutdown(self) -> None:
        self.stopping = True  # from here no worker is restarted: they are draining
        for proc in self.procs.values():
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        # Each worker drains on its own within the shutdown timeout; past it (and aiohttp's own
        # close grace) one that still runs is killed, and said so.
        deadline = time.monotonic() + self.settings.shutdown_timeout + SHUTDOWN_GRACE
        for index, proc in self.procs.items():
            try:
                proc.wait(timeout=max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                print(
                    f"clarion: worker {index} (pid {proc.pid}) still running past the shutdown timeout; killed",
                    file=sys.stderr,
                    flush=True,
                )
                proc.kill()
                proc.wait()
        shutil.rmtree(self.metrics_dir, ignore_errors=True)
