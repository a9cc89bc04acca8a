"""The event loop's exception handler: every error counted, each kind logged at most once per
interval with the number of its repeats left out.

asyncio's accept loop, when the process is out of descriptors, reports the same error once per
pending connection and again on every retry (CPython issue 151615): 122,853 tracebacks in 5 s
were seen, which took the CPU the server needed to recover. uvloop reports nothing there.
"""

from __future__ import annotations

import asyncio
import errno
import logging
import re
import time
from collections.abc import Callable
from typing import Any

from ..observability import metrics
from ..observability.logs import fields

log = logging.getLogger("clarion.loop")

ACCEPT_ERRNOS = {errno.EMFILE: "EMFILE", errno.ENFILE: "ENFILE"}
INTERVAL = 10.0  # seconds between two log lines of one kind of error
MAX_KINDS = 256  # kinds remembered; past it the table starts again (a log line too many at worst)
# asyncio's messages may name a callback or task by its repr, which differs every time.
_VARIABLE = re.compile(r"\s*<.*$", re.DOTALL)


class LoopErrors:
    """Call as ``loop.set_exception_handler(LoopErrors())``."""

    def __init__(self, interval: float = INTERVAL, clock: Callable[[], float] = time.monotonic) -> None:
        self.interval = interval
        self.clock = clock
        self._last: dict[tuple[str, str], float] = {}
        self._suppressed: dict[tuple[str, str], int] = {}

    def __call__(self, loop: asyncio.AbstractEventLoop, context: dict[str, Any]) -> None:
        exc = context.get("exception")
        name = type(exc).__name__ if exc is not None else "none"
        metrics.LOOP_ERRORS.labels(exception=name).inc()
        if isinstance(exc, OSError) and "accept" in str(context.get("message", "")):
            metrics.ACCEPT_ERRORS.labels(errno=ACCEPT_ERRNOS.get(exc.errno or 0, "other")).inc()
        message = _VARIABLE.sub("", str(context.get("message", "")))[:120] or "event loop error"
        key = (message, name)
        now = self.clock()
        last = self._last.get(key)
        if last is not None and now - last < self.interval:
            self._suppressed[key] = self._suppressed.get(key, 0) + 1
            return
        if len(self._last) >= MAX_KINDS and key not in self._last:
            self._last.clear()
            self._suppressed.clear()
        self._last[key] = now
        suppressed = self._suppressed.pop(key, 0)
        extra = fields(exception=name, suppressed=suppressed, interval=self.interval)
        if isinstance(exc, OSError):
            # Out of descriptors, buffers or memory: the errno says it all, a traceback adds nothing.
            code = errno.errorcode.get(exc.errno or 0, str(exc.errno))
            extra["fields"]["error"] = f"{code}: {exc.strerror or exc}"
            log.error(message, extra=extra)
        else:
            log.error(message, extra=extra, exc_info=exc)
