"""The event loop's exception handler: each kind of error logged at most once per interval, with
the number left out, and every one counted."""

from __future__ import annotations

import asyncio
import errno
import logging
from typing import Any

import pytest

from clarion.observability import metrics
from clarion.server.loop_errors import LoopErrors

ACCEPT = "socket.accept() out of system resource"


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def counted(exception: str) -> float:
    value = metrics.REGISTRY.get_sample_value("clarion_loop_errors_total", {"exception": exception})
    return value or 0.0


def emfile() -> OSError:
    return OSError(errno.EMFILE, "Too many open files")


def fields_of(record: logging.LogRecord) -> dict[str, Any]:
    """The fields a clarion log call passed (``extra={"fields": ...}`` sets them on the record)."""
    fields: dict[str, Any] = record.__dict__["fields"]
    return fields


def test_a_burst_of_one_error_is_logged_once_then_once_per_interval_with_the_count_left_out(
    caplog: pytest.LogCaptureFixture,
) -> None:
    clock = Clock()
    handler = LoopErrors(interval=10.0, clock=clock)
    loop = asyncio.new_event_loop()
    before = counted("OSError")
    try:
        with caplog.at_level(logging.INFO, logger="clarion.loop"):
            for _ in range(5000):
                handler(loop, {"message": ACCEPT, "exception": emfile()})
            clock.now += 9.9
            handler(loop, {"message": ACCEPT, "exception": emfile()})
            clock.now += 0.1
            handler(loop, {"message": ACCEPT, "exception": emfile()})
    finally:
        loop.close()
    records = [r for r in caplog.records if r.name == "clarion.loop"]
    assert [r.getMessage() for r in records] == [ACCEPT, ACCEPT]
    assert [fields_of(r)["suppressed"] for r in records] == [0, 5000]
    assert fields_of(records[0])["error"] == "EMFILE: Too many open files"
    assert all(r.exc_info is None for r in records)  # no traceback for a resource error
    assert counted("OSError") - before == 5002


def test_different_errors_are_logged_each_in_their_own_right(caplog) -> None:
    clock = Clock()
    handler = LoopErrors(interval=10.0, clock=clock)
    loop = asyncio.new_event_loop()
    try:
        with caplog.at_level(logging.INFO, logger="clarion.loop"):
            handler(loop, {"message": ACCEPT, "exception": emfile()})
            # asyncio names the callback by its repr, different each time: one kind all the same.
            for n in range(3):
                handler(loop, {"message": f"Exception in callback <Handle f{n}()>", "exception": ValueError(n)})
            handler(loop, {"message": "Task was destroyed but it is pending!"})
    finally:
        loop.close()
    records = [r for r in caplog.records if r.name == "clarion.loop"]
    assert [r.getMessage() for r in records] == [
        ACCEPT,
        "Exception in callback",
        "Task was destroyed but it is pending!",
    ]
    assert records[1].exc_info is not None  # a bug keeps its traceback


@pytest.mark.parametrize("interval", [0.0, 1.0])
def test_with_no_time_between_errors_only_the_interval_decides(interval: float, caplog) -> None:
    clock = Clock()
    handler = LoopErrors(interval=interval, clock=clock)
    loop = asyncio.new_event_loop()
    try:
        with caplog.at_level(logging.INFO, logger="clarion.loop"):
            for _ in range(3):
                handler(loop, {"message": ACCEPT, "exception": emfile()})
    finally:
        loop.close()
    assert len([r for r in caplog.records if r.name == "clarion.loop"]) == (3 if interval == 0 else 1)


def test_accept_failures_are_counted_by_errno_and_other_errors_are_not() -> None:
    def accept_errors(name: str) -> float:
        return metrics.REGISTRY.get_sample_value("clarion_accept_errors_total", {"errno": name}) or 0.0

    handler = LoopErrors(interval=10.0, clock=Clock())
    loop = asyncio.new_event_loop()
    before = {name: accept_errors(name) for name in ("EMFILE", "ENFILE", "other")}
    try:
        for _ in range(3):
            handler(loop, {"message": ACCEPT, "exception": emfile()})
        handler(loop, {"message": ACCEPT, "exception": OSError(errno.ENFILE, "File table overflow")})
        handler(loop, {"message": ACCEPT, "exception": OSError(errno.ENOBUFS, "No buffer space")})
        handler(loop, {"message": "Fatal read error on socket transport", "exception": emfile()})
    finally:
        loop.close()
    assert accept_errors("EMFILE") - before["EMFILE"] == 3
    assert accept_errors("ENFILE") - before["ENFILE"] == 1
    assert accept_errors("other") - before["other"] == 1
