"""CLARION_WORKERS: several processes on one port, joined through Redis, restarted when they die."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

from conftest import ROOT
from pusherclient import PusherSocket, api_call, wait_for

WORKERS = {"CLARION_WORKERS": "2", "CLARION_SCALING": "redis"}


def children(pid: int) -> set[int]:
    found = set()
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except (FileNotFoundError, ProcessLookupError):
            continue
        if int(fields[1]) == pid:
            found.add(int(stat.parent.name))
    return found


async def sockets_on_both_workers(running) -> list[PusherSocket]:
    """Open sockets until two land on different workers (socket ids carry the worker's node part)."""
    socks: list[PusherSocket] = []
    nodes: set[str] = set()
    for _ in range(64):
        sock = await PusherSocket.open(running.ws_url())
        socks.append(sock)
        nodes.add(sock.socket_id.split(".")[0])
        if len(nodes) == 2:
            return socks
    raise AssertionError("64 connections all went to one worker")


async def test_two_workers_share_the_port_and_deliver_across_each_other(server_factory) -> None:
    running = server_factory(env=WORKERS)
    assert "(2 workers)" in running.log_text()
    assert len(children(running.proc.pid)) == 2
    socks = await sockets_on_both_workers(running)
    try:
        for sock in socks:
            await sock.subscribe("everywhere")
        body = {"name": "hello", "channel": "everywhere", "data": "{}"}
        status, _ = await api_call(
            running.http_url, running.key, running.secret, "POST", f"/apps/{running.app_id}/events", body
        )
        assert status == 200
        for sock in socks:
            await sock.expect("hello", "everywhere")

        async def counted() -> bool:
            status, answer = await api_call(
                running.http_url,
                running.key,
                running.secret,
                "GET",
                f"/apps/{running.app_id}/channels/everywhere",
                info="subscription_count",
            )
            return status == 200 and answer.get("subscription_count") == len(socks)

        # Whichever worker answers, the count is the cluster's.
        for _ in range(6):
            await wait_for(counted)
    finally:
        for sock in socks:
            await sock.close()


async def test_a_killed_worker_is_restarted_and_the_port_keeps_serving(server_factory) -> None:
    running = server_factory(env=WORKERS)
    before = children(running.proc.pid)
    victim = min(before)
    os.kill(victim, signal.SIGKILL)

    def replaced() -> bool:
        now = children(running.proc.pid)
        return (
            victim not in now
            and len(now) == 2
            and any(f"ready (pid {pid})" in running.log_text() for pid in now - before)
        )

    await wait_for(replaced, timeout=15)
    socks = await sockets_on_both_workers(running)
    for sock in socks:
        await sock.close()
    await running.logged("restarting")


async def test_stopping_the_supervisor_stops_every_worker(server_factory) -> None:
    running = server_factory(env=WORKERS)
    workers = children(running.proc.pid)
    running.proc.terminate()
    running.proc.wait(20)

    def gone() -> bool:
        return not any(Path(f"/proc/{pid}").exists() for pid in workers)

    await wait_for(gone, timeout=15)


def test_several_workers_with_the_memory_bus_are_refused_with_what_to_set() -> None:
    env = {**os.environ, "CLARION_WORKERS": "2", "CLARION_SCALING": "memory", "CLARION_PORT": "0"}
    result = subprocess.run(
        [sys.executable, "-m", "clarion", "serve"], env=env, cwd=ROOT, capture_output=True, text=True, timeout=20
    )
    assert result.returncode == 2
    assert "CLARION_SCALING=redis" in result.stderr


async def test_workers_exit_when_the_supervisor_is_killed(server_factory) -> None:
    running = server_factory(env=WORKERS)
    workers = children(running.proc.pid)
    assert len(workers) == 2
    running.proc.kill()
    running.proc.wait(10)

    def left() -> dict[int, str]:
        return {pid: _state(pid) for pid in workers if Path(f"/proc/{pid}").exists() and "zombie" not in _state(pid)}

    try:
        await wait_for(lambda: not left(), timeout=15)
    except AssertionError:
        raise AssertionError(f"workers still running: {left()}\n{running.log_text()[-3000:]}") from None


def test_a_worker_whose_supervisor_was_gone_before_its_watch_began_still_leaves() -> None:
    """The supervisor can die between a worker's start and its first look at its parent: the worker
    then checks against the pid the supervisor gave it, not against whoever adopted it."""
    env = {
        **os.environ,
        "CLARION_PORT": "0",
        "CLARION_SCALING": "memory",
        "CLARION_WORKERS": "1",
        "CLARION_WORKER_INDEX": "0",
        "CLARION_SUPERVISOR_PID": "1",  # not this worker's parent: as if it had been adopted already
    }
    result = subprocess.run(
        [sys.executable, "-m", "clarion", "serve"], env=env, cwd=ROOT, capture_output=True, text=True, timeout=30
    )
    assert result.returncode == 0, result.stderr
    assert "listening on" in result.stdout
    assert "supervisor gone; worker shutting down" in result.stderr


def _state(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/status").read_text().split("State:", 1)[1].split("\n", 1)[0].lower()
    except (FileNotFoundError, ProcessLookupError):
        return "gone"
