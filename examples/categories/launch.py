"""``make run``: Clarion on 127.0.0.1:6001 and the reference app on http://127.0.0.1:8000, on the
embedded defaults (the memory bus, SQLite, the in-process broadcast queue). This launcher owns
both processes: it prints their output, says where to go once both answer, and stops both on
Ctrl-C (or when either exits)."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent.parent
PYTHON = sys.executable

CLARION_PORT = int(os.environ.get("CLARION_PORT", "6001"))
APP_PORT = int(os.environ.get("CATEGORIES_PORT", "8000"))
# The development app that `clarion serve` uses when given none (refused off loopback).
APP_ID, APP_KEY, APP_SECRET = "1", "clarion-key", "clarion-secret"

BANNER = f"""
  Clarion categories is running.

    Open   http://127.0.0.1:{APP_PORT}
    Logins alice@acme.test  (admin, Acme)
           bob@acme.test    (member, Acme)
           carol@globex.test (admin, Globex)
           password: demo-password

  Clarion: ws://127.0.0.1:{CLARION_PORT} (app {APP_ID}, key {APP_KEY}); the app's data: {HERE / "data"}
  Open it in two browsers (or two windows, one private) to see changes arrive live.
  Reset the demo data: .venv/bin/python -m categories_app reset (in examples/categories)
  Ctrl-C stops both.
"""


def port_free(port: int) -> bool:
    with socket.socket() as sock:
        return sock.connect_ex(("127.0.0.1", port)) != 0


def answers(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=2) as response:  # noqa: S310 - our own loopback URL
            return bool(response.status == 200)
    except OSError:
        return False


def pump(name: str, proc: subprocess.Popen[bytes]) -> None:
    assert proc.stdout is not None
    for raw in proc.stdout:
        sys.stdout.write(f"[{name}] {raw.decode(errors='replace')}")
        sys.stdout.flush()


def start(name: str, args: list[str], env: dict[str, str], cwd: Path) -> subprocess.Popen[bytes]:
    proc = subprocess.Popen(  # noqa: S603 - our own interpreter and modules
        args,
        cwd=cwd,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        start_new_session=True,  # Ctrl-C reaches this launcher only; it stops the children in order
    )
    threading.Thread(target=pump, args=(name, proc), daemon=True).start()
    return proc


def stop(procs: list[subprocess.Popen[bytes]]) -> None:
    for proc in reversed(procs):  # the app first: it sends what its queue holds while Clarion is up
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


def main() -> int:
    busy = [port for port in (CLARION_PORT, APP_PORT) if not port_free(port)]
    if busy:
        print(
            f"make run: port(s) {', '.join(map(str, busy))} already in use on 127.0.0.1. Stop what holds them, "
            "or choose others with CLARION_PORT=... CATEGORIES_PORT=... make run",
            file=sys.stderr,
        )
        return 1
    if not (HERE / "web" / "dist" / "index.html").is_file():
        print("make run: the web client is not built (scripts/setup.sh --app builds it)", file=sys.stderr)
        return 1
    base = {**os.environ, "PYTHONUNBUFFERED": "1"}
    clarion_env = {
        **base,
        "CLARION_HOST": "127.0.0.1",
        "CLARION_PORT": str(CLARION_PORT),
        "CLARION_APP_ID": APP_ID,
        "CLARION_APP_KEY": APP_KEY,
        "CLARION_APP_SECRET": APP_SECRET,
    }
    app_env = {
        **base,
        "PYTHONPATH": os.pathsep.join(filter(None, [str(HERE), base.get("PYTHONPATH")])),
        "CLARION_BROADCAST_DRIVER": f"pusher://{APP_KEY}:{APP_SECRET}@127.0.0.1:{CLARION_PORT}/{APP_ID}",
    }
    procs: list[subprocess.Popen[bytes]] = []
    stopping = threading.Event()

    def on_signal(signum: int, frame: object) -> None:
        stopping.set()

    signal.signal(signal.SIGINT, on_signal)
    signal.signal(signal.SIGTERM, on_signal)
    try:
        procs.append(start("clarion", [PYTHON, "-m", "clarion", "serve"], clarion_env, ROOT))
        procs.append(start("app", [PYTHON, "-m", "categories_app", "serve", "--port", str(APP_PORT)], app_env, HERE))
        ready = False
        deadline = time.monotonic() + 120
        while not stopping.is_set():
            if any(proc.poll() is not None for proc in procs):
                names = [n for n, p in zip(("clarion", "app"), procs, strict=True) if p.poll() is not None]
                print(f"make run: {' and '.join(names)} stopped; stopping the rest", file=sys.stderr)
                return 1
            if not ready:
                if answers(f"http://127.0.0.1:{CLARION_PORT}/health") and answers(
                    f"http://127.0.0.1:{APP_PORT}/health"
                ):
                    ready = True
                    print(BANNER, flush=True)
                elif time.monotonic() > deadline:
                    print("make run: the servers did not answer within 120 s", file=sys.stderr)
                    return 1
            stopping.wait(0.2)
        print("\nmake run: stopping", flush=True)
        return 0
    finally:
        stop(procs)


if __name__ == "__main__":
    sys.exit(main())
