"""Queued broadcasting end to end: the Redis queue, a real ``clarion broadcast-worker`` process,
real ``clarion serve`` nodes joined through Redis, and pusher-js subscribers."""

from __future__ import annotations

import asyncio
import contextlib
import json
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pytest

from clarion.broadcasting import Broadcaster, BroadcastUnavailable, Channel, Message, SyncQueue
from clarion.broadcasting.integrations.queue import RedisQueue
from compat.nodeclient import NodeClient
from conftest import ROOT, RunningServer, broadcast_worker, run_server
from contracts.conftest import delete_prefix
from redisproc import SHARED_REDIS_URL, free_port

from .conftest import driver_url

pytestmark = pytest.mark.compat


def broadcasts_command(prefix: str, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "clarion", "broadcasts", *args, "--prefix", prefix, "--redis-url", SHARED_REDIS_URL],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


async def subscriber(server: RunningServer, channels: list[str], label: str) -> NodeClient:
    client = await NodeClient.start(
        host=server.host,
        port=server.port,
        key=server.key,
        auth_endpoint="http://127.0.0.1:9/unused",  # public channels only
        label=label,
    )
    await client.connect()
    for channel in channels:
        await client.subscribe(channel)
    return client


async def wait_until(
    check: Callable[[], bool], timeout: float, what: str, report: Callable[[], str] = lambda: ""
) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError(f"{what}: not within {timeout}s\n{report()}")
        await asyncio.sleep(0.1)


@pytest.fixture
def prefix() -> Iterator[str]:
    name = f"test-broadcasts-{uuid.uuid4().hex[:10]}"
    yield name
    asyncio.run(delete_prefix(SHARED_REDIS_URL, name))
    asyncio.run(delete_prefix(SHARED_REDIS_URL, f"{name}-dramatiq"))


def event(channel: str, n: int) -> Message:
    return Message((channel,), "tick", json.dumps({"n": n}))


async def test_500_queued_events_survive_the_socket_server_being_killed_mid_send_in_order_and_once(
    prefix: str, tmp_path: Path
):
    cluster = {"CLARION_SCALING": "redis", "CLARION_SCALING_PREFIX": f"test-{uuid.uuid4().hex[:12]}"}
    port = free_port()
    channels = [f"queue-{uuid.uuid4().hex[:8]}-{i}" for i in range(5)]
    per_channel = 100
    with run_server(env=cluster) as stays_up, contextlib.ExitStack() as stack:
        target = stack.enter_context(run_server(env={**cluster, "CLARION_PORT": str(port)}))
        client = await subscriber(stays_up, channels, "subscriber")
        try:
            queue = RedisQueue(SHARED_REDIS_URL, prefix=prefix)
            log = tmp_path / "worker.log"
            worker = stack.enter_context(
                broadcast_worker(
                    driver_url(target), prefix, log, "--max-tries", "100", "--backoff-base", "0.2", "--backoff-cap", "1"
                )
            )

            def received() -> int:
                return len(client.events())

            def report() -> str:
                return client.report(5) + "\n--- worker ---\n" + log.read_text()[-4000:]

            async def produce() -> None:
                # 500 events over about 5 s, spread over the channels, so the kill lands mid-send.
                for n in range(per_channel):
                    await queue.aenqueue([event(channel, n) for channel in channels])
                    await asyncio.sleep(0.05)

            producing = asyncio.create_task(produce())
            await wait_until(lambda: received() >= 100, 30, "the first 100 events", report)
            target.proc.send_signal(signal.SIGKILL)
            target.proc.wait()
            at_kill = received()
            await wait_until(lambda: "next try in" in log.read_text(), 30, "the worker retrying", report)
            await producing
            assert received() < len(channels) * per_channel, "everything arrived before the kill: no test"
            stack.enter_context(run_server(env={**cluster, "CLARION_PORT": str(port)}))
            await wait_until(lambda: received() >= len(channels) * per_channel, 90, "all 500 events", report)
            await asyncio.sleep(0.5)  # a duplicate, were there one, would be right behind
            for channel in channels:
                got = [e["data"]["n"] for e in client.events(channel, "tick")]
                assert got == list(range(per_channel)), f"{channel}: {got}\n{report()}"
            assert at_kill < received()
            assert worker.poll() is None
            assert queue.dead_letters() == []
        finally:
            await client.close()
            with contextlib.suppress(Exception):
                queue.close()


async def test_dead_letters_keep_their_error_show_in_metrics_and_the_cli_and_replay(prefix: str, tmp_path: Path):
    port, metrics_port = free_port(), free_port()
    channel = f"dead-{uuid.uuid4().hex[:8]}"
    driver = f"pusher://test-key:test-secret@127.0.0.1:{port}/1234"
    queue = RedisQueue(SHARED_REDIS_URL, prefix=prefix)
    log = tmp_path / "worker.log"
    extra = ["--max-tries", "3", "--backoff-base", "0.05", "--backoff-cap", "0.2", "--metrics-port", str(metrics_port)]
    extra += ["--metrics-host", "127.0.0.5"]  # another loopback address: the metrics listen where told
    with broadcast_worker(driver, prefix, log, *extra):
        # Nothing listens on the driver's port: every try fails, then the events are dead letters.
        queue.enqueue([event(channel, n) for n in range(3)])
        await wait_until(lambda: len(queue.dead_letters()) == 3, 60, "3 dead letters", lambda: log.read_text())
        listed = broadcasts_command(prefix, "dead", "--json")
        assert listed.returncode == 0, listed.stderr
        letters = json.loads(listed.stdout)
        assert [(d["channel"], d["name"], d["attempts"]) for d in letters] == [(channel, "tick", 3)] * 3
        assert all("ConnectError" in d["error"] for d in letters), letters
        table = broadcasts_command(prefix, "dead")
        assert channel in table.stdout and "ConnectError" in table.stdout

        await wait_until(lambda: _port_listening(metrics_port, "127.0.0.5"), 10, "the metrics port")
        assert not _port_listening(metrics_port)
        async with httpx.AsyncClient(timeout=5) as http:
            metrics = (await http.get(f"http://127.0.0.5:{metrics_port}/metrics")).text
        assert "clarion_broadcasts_dead_letters 3.0" in metrics
        assert "clarion_broadcasts_dead_lettered_total 3.0" in metrics
        assert "clarion_broadcasts_retried_total" in metrics

        with run_server(env={"CLARION_PORT": str(port)}) as server:
            client = await subscriber(server, [channel], "replayed")
            try:
                replayed = broadcasts_command(prefix, "replay", "--all")
                assert replayed.returncode == 0 and "replayed 3" in replayed.stdout, replayed
                await wait_until(lambda: len(client.events(channel)) == 3, 30, "the replayed events", client.report)
                assert [e["data"]["n"] for e in client.events(channel)] == [0, 1, 2]
                assert queue.dead_letters() == []

                # A refused event (413: too large) is dead-lettered at once; its neighbours go on.
                huge = Message((channel,), "tick", json.dumps({"n": 99, "pad": "x" * 20_000}))
                queue.enqueue([event(channel, 3), huge, event(channel, 4)])
                await wait_until(lambda: len(client.events(channel)) == 5, 30, "the neighbours", client.report)
                assert [e["data"]["n"] for e in client.events(channel)] == [0, 1, 2, 3, 4]
                await wait_until(lambda: len(queue.dead_letters()) == 1, 10, "the refused event's dead letter")
                dead = queue.dead_letters()[0]
                assert dead.status == 413 and dead.attempts == 1 and dead.message_id == huge.id
            finally:
                await client.close()
    queue.close()


def _port_listening(port: int, host: str = "127.0.0.1") -> bool:
    import socket

    with socket.socket() as sock:
        return sock.connect_ex((host, port)) == 0


async def test_the_synchronous_mode_delivers_in_the_caller_and_raises_once_its_tries_are_spent(
    sdk_clarion: RunningServer,
):
    channel = f"sync-{uuid.uuid4().hex[:8]}"
    client = await subscriber(sdk_clarion, [channel], "sync")
    try:
        broadcaster = Broadcaster(driver_url(sdk_clarion))
        assert isinstance(broadcaster.queue, SyncQueue)
        broadcaster.on(Channel(channel)).as_("queued").with_({"ok": True}).send()
        got = await client.expect(type="event", channel=channel, event="queued", timeout=10)
        assert got["data"] == {"ok": True}
    finally:
        await client.close()
    down = Broadcaster(f"pusher://k:s@127.0.0.1:{free_port()}/1")
    started = time.monotonic()
    with pytest.raises(BroadcastUnavailable):
        down.on(Channel(channel)).as_("queued").with_({}).send()
    assert time.monotonic() - started < 30


def test_a_dead_batch_replayed_whole_goes_out_alone_with_its_idempotency_key(prefix: str):
    from clarion.broadcasting import RetryPolicy
    from clarion.broadcasting.messages import idempotency_key
    from scripted_driver import ScriptedDriver

    driver = ScriptedDriver()
    driver.down.add("replayed")
    queue = RedisQueue(SHARED_REDIS_URL, prefix=prefix, driver=driver, policy=RetryPolicy(max_tries=1))
    try:
        batch = [event("replayed", n) for n in range(3)]
        queue.enqueue(batch)
        queue._drain("replayed")  # as the worker's drain does
        assert [letter.message_id for letter in queue.dead_letters()] == [m.id for m in batch]
        driver.down.clear()
        fresh_event = event("replayed", 9)
        queue.enqueue([fresh_event])
        assert queue.replay() == 3
        driver.calls.clear()
        queue._drain("replayed")
        assert driver.calls == [
            ([fresh_event.id], idempotency_key([fresh_event]), True),
            ([m.id for m in batch], idempotency_key(batch), True),
        ]
        assert queue.dead_letters() == []
    finally:
        queue.close()
