"""The in-process broadcast queue, on a scripted driver: order per channel through retries, the
same Idempotency-Key on every retry, dead letters with their signals and metric, replay, the
bound, and the abstract ``broadcast_on``. (End to end against a real server: tests/sdk.)"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Callable

import pytest
from prometheus_client import REGISTRY

from clarion.broadcasting import (
    Broadcaster,
    BroadcastEvent,
    InProcessQueue,
    Message,
    PrivateChannel,
    QueueFull,
    RetryPolicy,
    signals,
)
from clarion.broadcasting.messages import idempotency_key
from scripted_driver import ScriptedDriver

FAST = RetryPolicy(max_tries=4, base=0.01, cap=0.05)


def message(channel: str, name: str = "e", index: int = 0) -> Message:
    return Message((channel,), name, f'{{"i":{index}}}')


async def eventually(check: Callable[[], bool], timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, "condition not met in time"
        await asyncio.sleep(0.01)


async def test_enqueue_returns_while_the_socket_server_holds_the_send():
    driver = ScriptedDriver()
    driver.gate = asyncio.Event()  # the server does not answer yet
    queue = InProcessQueue(driver, policy=FAST)
    await queue.aenqueue([message("a", index=i) for i in range(5)])
    assert queue.pending() == 5 and driver.delivered == []
    driver.gate.set()
    assert await queue.join(timeout=20)
    assert [m.data for m in driver.delivered] == [f'{{"i":{i}}}' for i in range(5)]
    assert queue.pending() == 0


async def test_a_channel_keeps_its_order_through_retries_while_other_channels_go_on():
    driver = ScriptedDriver()
    driver.down.add("slow")
    queue = InProcessQueue(driver, policy=RetryPolicy(max_tries=1000, base=0.01, cap=0.02), batch_size=3)
    for i in range(20):
        queue.enqueue([message("slow", index=i), message("fast", index=i)])
    await eventually(lambda: len([m for m in driver.delivered if m.channels == ("fast",)]) == 20)
    assert not [m for m in driver.delivered if m.channels == ("slow",)]
    driver.down.clear()
    assert await queue.join(timeout=20)
    slow = [m.data for m in driver.delivered if m.channels == ("slow",)]
    assert slow == [f'{{"i":{i}}}' for i in range(20)]


async def test_every_retry_of_a_batch_sends_the_same_events_with_the_same_idempotency_key():
    driver = ScriptedDriver()
    driver.down.add("a")
    retried: list[dict[str, object]] = []

    def on_retry(sender: object, **info: object) -> None:
        retried.append(info)

    signals.broadcast_retried.connect(on_retry)
    try:
        queue = InProcessQueue(driver, policy=RetryPolicy(max_tries=100, base=0.01, cap=0.02))
        batch = [message("a", index=i) for i in range(3)]
        queue.enqueue(batch)
        await eventually(lambda: len(driver.calls) >= 3)
        driver.down.clear()
        assert await queue.join(timeout=20)
    finally:
        signals.broadcast_retried.disconnect(on_retry)
    expected = idempotency_key(batch)
    assert {tuple(ids) for ids, _, _ in driver.calls} == {tuple(m.id for m in batch)}
    assert {key for _, key, _ in driver.calls} == {expected}
    assert driver.calls[-1][2] is True and [m.id for m in driver.delivered] == [m.id for m in batch]
    assert retried and all(info["channel"] == "a" for info in retried)


async def test_a_batch_that_stays_unavailable_is_dead_lettered_logged_counted_and_the_lane_moves_on(caplog):
    driver = ScriptedDriver()
    driver.down.add("a")
    dead: list[dict[str, object]] = []

    def on_dead(sender: object, **info: object) -> None:
        dead.append(info)

    before = REGISTRY.get_sample_value("clarion_broadcasts_dead_lettered_total") or 0.0
    signals.broadcast_dead_lettered.connect(on_dead)
    try:
        queue = InProcessQueue(driver, policy=FAST)
        lost = [message("a", index=i) for i in range(2)]
        queue.enqueue(lost)
        await eventually(lambda: len(queue.dead_letters()) == 2)
        driver.down.clear()
        queue.enqueue([message("a", index=9)])
        assert await queue.join(timeout=20)
    finally:
        signals.broadcast_dead_lettered.disconnect(on_dead)
    assert [m.data for m in driver.delivered] == ['{"i":9}']
    letters = queue.dead_letters()
    assert [letter.message.id for letter in letters] == [m.id for m in lost]
    assert all(letter.attempts == FAST.max_tries and letter.error == "connection refused" for letter in letters)
    assert letters[0].as_dict().keys() >= {"id", "channel", "name", "message_id", "error", "attempts", "failed_at"}
    assert dead == [{"channel": "a", "ids": [m.id for m in lost], "attempts": 4, "error": "connection refused"}]
    assert REGISTRY.get_sample_value("clarion_broadcasts_dead_lettered_total") == before + 2
    assert (REGISTRY.get_sample_value("clarion_broadcasts_dead_letters") or 0) >= 2
    assert "dead-lettered after 4 tries" in caplog.text
    assert '"i"' not in caplog.text  # never the payload


async def test_a_refused_event_is_dead_lettered_alone_while_its_batch_neighbours_are_sent():
    driver = ScriptedDriver()
    driver.refuse.add("bad")
    queue = InProcessQueue(driver, policy=FAST)
    good1, bad, good2 = message("a", index=1), message("a", "bad", 2), message("a", index=3)
    queue.enqueue([good1, bad, good2])
    assert await queue.join(timeout=20)
    assert [m.id for m in driver.delivered] == [good1.id, good2.id]
    [letter] = queue.dead_letters()
    assert letter.message.id == bad.id and letter.status == 413 and letter.error == "event too large"


async def test_a_whole_dead_batch_replayed_keeps_its_ids_and_its_idempotency_key():
    driver = ScriptedDriver()
    driver.down.add("a")
    queue = InProcessQueue(driver, policy=FAST)
    batch = [message("a", index=i) for i in range(3)]
    queue.enqueue(batch)
    await eventually(lambda: len(queue.dead_letters()) == 3)
    driver.down.clear()
    queue.enqueue([message("a", index=7)])  # fresh events are not mixed into the replayed batch
    assert await queue.join(timeout=20)
    driver.calls.clear()
    assert queue.replay() == 3
    assert await queue.join(timeout=20)
    assert driver.calls == [([m.id for m in batch], idempotency_key(batch), True)]
    assert queue.dead_letters() == []


async def test_part_of_a_dead_batch_replayed_goes_out_under_a_key_of_its_own():
    driver = ScriptedDriver()
    driver.down.add("a")
    queue = InProcessQueue(driver, policy=FAST)
    batch = [message("a", index=i) for i in range(3)]
    queue.enqueue(batch)
    await eventually(lambda: len(queue.dead_letters()) == 3)
    driver.down.clear()
    second = queue.dead_letters()[1]
    assert queue.replay([second.id]) == 1
    assert await queue.join(timeout=20)
    assert driver.calls[-1] == ([batch[1].id], idempotency_key([batch[1]]), True)
    assert len(queue.dead_letters()) == 2


async def test_a_full_queue_refuses_with_queue_full_and_counts_it():
    driver = ScriptedDriver()
    driver.gate = asyncio.Event()
    queue = InProcessQueue(driver, policy=FAST, max_pending=3)
    before = REGISTRY.get_sample_value("clarion_broadcasts_failed_total", {"reason": "unavailable"}) or 0.0
    queue.enqueue([message("a", index=i) for i in range(3)])
    with pytest.raises(QueueFull):
        queue.enqueue([message("b")])
    assert REGISTRY.get_sample_value("clarion_broadcasts_failed_total", {"reason": "unavailable"}) == before + 1
    driver.gate.set()
    assert await queue.join(timeout=20)
    queue.enqueue([message("b")])  # room again
    assert await queue.join(timeout=20)
    assert len(driver.delivered) == 4


async def test_events_queued_from_a_worker_thread_are_sent_by_the_loop():
    driver = ScriptedDriver()
    queue = InProcessQueue(driver, policy=FAST)
    queue.start()

    def from_thread() -> None:
        for i in range(10):
            queue.enqueue([message("t", index=i)])

    thread = threading.Thread(target=from_thread)
    thread.start()
    await asyncio.to_thread(thread.join)
    assert await queue.join(timeout=20)
    assert [m.data for m in driver.delivered] == [f'{{"i":{i}}}' for i in range(10)]


async def test_closing_logs_and_counts_what_could_not_be_sent(caplog):
    driver = ScriptedDriver()
    driver.down.add("a")
    queue = InProcessQueue(driver, policy=RetryPolicy(max_tries=1000, base=0.01, cap=0.02))
    lost = [message("a", index=i) for i in range(2)]
    queue.enqueue(lost)
    await queue.aclose(timeout=0.2)
    assert f"2 events unsent (ids {lost[0].id},{lost[1].id})" in caplog.text
    assert queue.pending() == 0
    with pytest.raises(QueueFull):
        queue.enqueue([message("a")])


async def test_a_broadcaster_gives_its_driver_to_an_in_process_queue_and_queued_events_use_it():
    class Created(BroadcastEvent):
        queued = True
        id: int

        def broadcast_on(self) -> list[PrivateChannel]:
            return [PrivateChannel("tenant.1.categories")]

    driver = ScriptedDriver()
    broadcaster = Broadcaster(driver, queue=InProcessQueue(policy=FAST))
    await broadcaster.abroadcast(Created(id=1))
    await broadcaster.aclose()
    assert [(m.channels, m.name, m.data) for m in driver.delivered] == [
        (("private-tenant.1.categories",), "Created", '{"id":1}')
    ]


def test_an_event_class_without_broadcast_on_cannot_be_built():
    class Nowhere(BroadcastEvent):
        id: int

    with pytest.raises(TypeError, match="broadcast_on"):
        Nowhere(id=1)  # type: ignore[abstract]  # what the test proves
