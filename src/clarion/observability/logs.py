"""Structured logs: logfmt (``key=value``) text for people, one JSON object a line for machines.

Callers pass fields through ``extra={"fields": {...}}``; payloads and secrets are never among them.
Values come from outside (channel names, ``Origin`` headers), so the text form quotes and escapes
them as logfmt does: no value can end a line or start a forged one.

aiohttp's own loggers (and asyncio's) go through the same handler and format. A request that
aiohttp refuses as malformed is the client's fault, not ours: it is logged as one line with the
remote address and the reason, and counted, instead of aiohttp's multi-line traceback.

Volume stays bounded under a storm (a deploy's reconnections, a flood of refused handshakes):
past ``burst`` lines of one event (its message, a constant in the code) within ``window``
seconds, further lines of it are counted in ``clarion_log_lines_suppressed_total{event}`` and
left out, and when the window ends one line says how many: ``1234 more 'connection opened' in
the last 10 s``. Warnings and errors are never left out.
"""

from __future__ import annotations

import json
import logging
import re
import sys
import threading
import time
from dataclasses import dataclass
from typing import Any, TextIO

from aiohttp.http_exceptions import HttpProcessingError

from . import metrics

# Characters that end or fake a line: C0 and C1 controls, DEL, and the Unicode line and paragraph
# separators (``str.splitlines`` and many log viewers break lines there).
_CONTROL = "\x00-\x1f\x7f-\x9f\u2028\u2029"
_NEEDS_QUOTES = re.compile(rf'[\s"={_CONTROL}]')
_TO_ESCAPE = re.compile(rf'["\\{_CONTROL}]')
_CONTROL_ONLY = re.compile(rf"[{_CONTROL}]")
_SHORT = {'"': '\\"', "\\": "\\\\", "\n": "\\n", "\r": "\\r", "\t": "\\t"}
_KEY_CHARS = re.compile(r"[^A-Za-z0-9_.\-]")


def _escape(match: re.Match[str]) -> str:
    char = match.group()
    return _SHORT.get(char) or f"\\u{ord(char):04x}"


def logfmt_value(value: Any) -> str:
    """``value`` as logfmt writes it: bare when safe, else in double quotes with quotes,
    backslashes and control characters escaped."""
    text = str(value)
    if not text:
        return '""'
    if not _NEEDS_QUOTES.search(text):
        return text
    return '"' + _TO_ESCAPE.sub(_escape, text) + '"'


def logfmt_key(key: Any) -> str:
    return _KEY_CHARS.sub("_", str(key)) or "_"


def one_line(text: str) -> str:
    """``text`` with its control characters escaped (quotes left alone): for the message."""
    return _CONTROL_ONLY.sub(_escape, text)


class _TextFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        fields: dict[str, Any] = getattr(record, "fields", {})
        stamp = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
        tail = " ".join(f"{logfmt_key(k)}={logfmt_value(v)}" for k, v in fields.items())
        text = f"{stamp} {record.levelname.lower():7} {one_line(record.getMessage())}" + (f" {tail}" if tail else "")
        if record.exc_info:
            # A traceback stays readable, but every line of it is indented: an exception message
            # from outside cannot start a line that looks like a record of its own.
            lines = self.formatException(record.exc_info).split("\n")
            text += "".join(f"\n    {one_line(line)}" for line in lines)
        return text


class _JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "ts": round(record.created, 3),
            "level": record.levelname.lower(),
            "msg": record.getMessage(),
            **getattr(record, "fields", {}),
        }
        if record.exc_info:
            entry["exc"] = self.formatException(record.exc_info)
        # ensure_ascii also escapes U+2028 and U+2029: one object, one line.
        return json.dumps(entry, default=str)


def _first_line(message: str) -> str:
    """aiohttp's parser errors quote the offending bytes on the lines after the first."""
    for line in message.splitlines():
        if line.strip():
            return line.strip().rstrip(":")[:200]
    return ""


class _ClientFaults(logging.Filter):
    """Turns aiohttp's "Error handling request" traceback for a malformed request (bad request
    line, bad header, bad chunking) into one line with the remote address and the reason, and
    keeps the records of aiohttp's server logger (opened to DEBUG for this) at our level."""

    def __init__(self, level: int) -> None:
        super().__init__()
        self.level = level

    def filter(self, record: logging.LogRecord) -> bool:
        if not record.name.startswith("aiohttp"):
            return True
        exc = record.exc_info[1] if record.exc_info else None
        if isinstance(exc, HttpProcessingError):
            remote = record.args[0] if isinstance(record.args, tuple) and record.args else ""
            kind = type(exc).__name__
            metrics.HTTP_CLIENT_FAULTS.labels(kind=kind).inc()
            record.msg, record.args = "malformed http request refused", ()
            record.exc_info, record.exc_text, record.stack_info = None, None, None
            record.levelno, record.levelname = logging.INFO, "INFO"
            record.fields = {
                "remote": str(remote)[:64],
                "status": exc.code,
                "kind": kind,
                "reason": _first_line(exc.message),
            }
        return record.levelno >= self.level


SUMMARY = "%d more '%s' in the last %g s"
_summaries = logging.getLogger("clarion.logs")


@dataclass(slots=True)
class _Window:
    started: float
    written: int = 0
    left_out: int = 0


class _Storms(logging.Filter):
    """Writes at most ``burst`` info/debug lines of each event per ``window`` seconds; counts the
    rest and says how many in one line when the window ends (at the event's next line, or at
    ``flush``, called once a second)."""

    def __init__(self, burst: int, window: float) -> None:
        super().__init__()
        self.burst = burst
        self.window = window
        self.windows: dict[str, _Window] = {}
        self._lock = threading.Lock()

    def filter(self, record: logging.LogRecord) -> bool:
        if record.levelno >= logging.WARNING or record.msg is SUMMARY or not isinstance(record.msg, str):
            return True
        event = record.msg
        with self._lock:
            window = self.windows.get(event)
            if window is None or record.created - window.started >= self.window:
                ended = window.left_out if window is not None else 0
                window = self.windows[event] = _Window(record.created)
            else:
                ended = 0
            window.written += 1
            keep = window.written <= self.burst
            if not keep:
                window.left_out += 1
        if ended:
            self._summary(event, ended)
        if not keep:
            metrics.LOG_LINES_SUPPRESSED.labels(event=event).inc()
        return keep

    def flush(self, now: float) -> None:
        """Summaries of the windows that ended; forget quiet events (the map stays small)."""
        ended = []
        with self._lock:
            for event, window in list(self.windows.items()):
                if now - window.started >= self.window:
                    del self.windows[event]
                    if window.left_out:
                        ended.append((event, window.left_out))
        for event, count in ended:
            self._summary(event, count)

    def _summary(self, event: str, count: int) -> None:
        _summaries.info(SUMMARY, count, event, self.window, extra=fields(event=event, suppressed=count))


_storms: _Storms | None = None


def flush_suppressed(now: float | None = None) -> None:
    """Write the summary lines of storm windows that have ended (the server calls this each second)."""
    if _storms is not None:
        _storms.flush(time.time() if now is None else now)


def configure(
    log_format: str = "text",
    level: str = "info",
    stream: TextIO | None = None,
    *,
    burst: int = 100,
    window: float = 10.0,
) -> None:
    """Send Clarion's, aiohttp's and asyncio's logs to ``stream`` (stderr) in ``log_format``
    (``auto``: text on a terminal, else JSON), at most ``burst`` lines of an event per ``window`` s."""
    global _storms
    out = stream or sys.stderr
    handler = logging.StreamHandler(out)
    if log_format == "auto":
        log_format = "text" if out.isatty() else "json"
    handler.setFormatter(_JsonFormatter() if log_format == "json" else _TextFormatter())
    threshold = logging.getLevelName(level.upper())
    handler.addFilter(_ClientFaults(threshold))
    _storms = _Storms(burst, window)
    handler.addFilter(_storms)
    for name in ("clarion", "aiohttp", "asyncio"):
        logger = logging.getLogger(name)
        logger.handlers[:] = [handler]
        logger.setLevel(threshold)
        logger.propagate = False
    # aiohttp logs a first request in a foreign protocol (TLS to a plain port, say) at DEBUG:
    # open its server logger so that one is counted and logged as a client fault too.
    logging.getLogger("aiohttp.server").setLevel(logging.DEBUG)
    # aiohttp's access log would print every API call with its signed query string.
    logging.getLogger("aiohttp.access").setLevel(logging.WARNING)


def fields(**values: Any) -> dict[str, Any]:
    return {"fields": values}
