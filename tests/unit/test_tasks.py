"""cancel_and_wait: tasks that carry on after a cancel are cancelled again; none is waited on for
ever; failures met on the way out are logged."""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import pytest

from clarion import tasks
from clarion.tasks import cancel_and_wait


def fields_of(record: logging.LogRecord) -> dict[str, Any]:
    """The fields a clarion log call passed (``extra={"fields": ...}`` sets them on the record)."""
    fields: dict[str, Any] = record.__dict__["fields"]
    return fields


async def test_a_task_that_lets_one_cancel_pass_is_cancelled_again() -> None:
    passed: list[int] = []

    async def shrugs_once() -> None:
        try:
            await asyncio.sleep(60)
        except asyncio.CancelledError:
            passed.append(1)  # as a lost cancel looks from outside: the task runs on
        await asyncio.sleep(60)

    task = asyncio.create_task(shrugs_once())
    await asyncio.sleep(0)
    assert await cancel_and_wait([task], timeout=5) == set()
    assert passed == [1]
    assert task.cancelled()


async def test_a_task_that_never_stops_is_given_up_on_and_named(caplog: pytest.LogCaptureFixture) -> None:
    released = asyncio.Event()  # set after the check, so the test leaves no task behind

    async def never_stops() -> None:
        while not released.is_set():
            try:
                await asyncio.sleep(60)
            except asyncio.CancelledError:
                continue

    task = asyncio.create_task(never_stops(), name="stubborn")
    await asyncio.sleep(0)
    with caplog.at_level(logging.ERROR, logger="clarion"):
        left = await cancel_and_wait([task], timeout=tasks.RETRY * 3)
    assert left == {task}
    assert [(record.message, fields_of(record)) for record in caplog.records] == [
        ("task did not stop", {"task": "stubborn"})
    ]
    released.set()
    task.cancel()
    await asyncio.wait([task])


async def test_a_task_failing_on_its_way_out_is_logged_not_raised(caplog: pytest.LogCaptureFixture) -> None:
    async def fails_in_cleanup() -> None:
        try:
            await asyncio.sleep(60)
        finally:
            raise RuntimeError("boom")

    failing = asyncio.create_task(fails_in_cleanup(), name="failing")
    done = asyncio.create_task(asyncio.sleep(0))
    await asyncio.sleep(0.01)
    with caplog.at_level(logging.ERROR, logger="clarion"):
        assert await cancel_and_wait([failing, done]) == set()
    assert [(record.message, fields_of(record)) for record in caplog.records] == [
        ("task failed while stopping", {"task": "failing"})
    ]
    exc_info = caplog.records[0].exc_info
    assert exc_info is not None
    assert str(exc_info[1]) == "boom"
