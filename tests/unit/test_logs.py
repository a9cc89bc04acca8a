"""The log formats: logfmt quoting in text (no value can end a line or fake one), one JSON object a
line, and aiohttp's malformed-request tracebacks turned into one line."""

from __future__ import annotations

import io
import json
import logging
import time
from collections.abc import Callable, Iterator

import pytest
from aiohttp.http_exceptions import BadHttpMessage, BadHttpMethod, BadStatusLine

from clarion.observability import logs
from clarion.observability.logs import fields, logfmt_value

STAMP = r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d"


@pytest.mark.parametrize(
    ("value", "written"),
    [
        ("plain", "plain"),
        ("private-tenant.7", "private-tenant.7"),
        (42, "42"),
        ("", '""'),
        ("two words", '"two words"'),
        ('say "hi"', '"say \\"hi\\""'),
        ("a=b", '"a=b"'),
        ("back\\slash", "back\\slash"),  # nothing to quote: left as it is
        ('both \\ and "', '"both \\\\ and \\""'),
        ("line\nbreak", '"line\\nbreak"'),
        ("cr\rlf", '"cr\\rlf"'),
        ("tab\there", '"tab\\there"'),
        ("nul\x00bell\x07", '"nul\\u0000bell\\u0007"'),
        ("del\x7f", '"del\\u007f"'),
        ("nel\x85", '"nel\\u0085"'),
        ("sep\u2028para\u2029", '"sep\\u2028para\\u2029"'),
        ("héllo", "héllo"),
    ],
)
def test_logfmt_quotes_and_escapes_what_would_break_a_line_or_a_pair(value: object, written: str) -> None:
    assert logfmt_value(value) == written


@pytest.fixture
def captured() -> Iterator[Callable[[str], io.StringIO]]:
    """``logs.configure`` writing to a StringIO; the loggers it touches are restored after."""
    names = ("clarion", "aiohttp", "asyncio", "aiohttp.server", "aiohttp.access")
    saved = {name: logging.getLogger(name) for name in names}
    before = {name: (logger.handlers[:], logger.level, logger.propagate) for name, logger in saved.items()}

    def configure(log_format: str) -> io.StringIO:
        stream = io.StringIO()
        logs.configure(log_format, "info", stream)
        return stream

    yield configure
    for name, logger in saved.items():
        logger.handlers[:], level, logger.propagate = before[name]
        logger.setLevel(level)


FORGED = "x\n2030-01-01T00:00:00 error   forged line app_id=1"


def test_a_text_line_with_newlines_in_its_fields_stays_one_line(captured) -> None:
    stream = captured("text")
    logging.getLogger("clarion.test").info(
        "subscription refused", extra=fields(channel=FORGED, origin="https://a.example\r\nX: y", ok="fine")
    )
    lines = stream.getvalue().splitlines()
    assert len(lines) == 1, lines
    assert lines[0].endswith(
        ' subscription refused channel="x\\n2030-01-01T00:00:00 error   forged line app_id=1"'
        ' origin="https://a.example\\r\\nX: y" ok=fine'
    ), lines[0]


def test_a_message_with_a_newline_stays_one_line(captured) -> None:
    stream = captured("text")
    logging.getLogger("clarion.test").warning("from %s", FORGED)
    assert len(stream.getvalue().splitlines()) == 1


def test_a_traceback_in_text_is_indented_so_no_line_of_it_looks_like_a_record(captured) -> None:
    stream = captured("text")
    try:
        raise ValueError(FORGED)
    except ValueError:
        logging.getLogger("clarion.test").exception("housekeeping failed")
    first, *rest = stream.getvalue().splitlines()
    assert first.endswith("housekeeping failed")
    assert rest and all(line.startswith("    ") for line in rest), rest


def test_json_lines_are_one_object_each_whatever_the_fields_hold(captured) -> None:
    stream = captured("json")
    log = logging.getLogger("clarion.test")
    log.info("subscription refused", extra=fields(channel=FORGED + "\u2028more"))
    try:
        raise ValueError(FORGED)
    except ValueError:
        log.exception("housekeeping failed")
    lines = stream.getvalue().splitlines()
    assert len(lines) == 2, lines
    first, second = (json.loads(line) for line in lines)
    assert first["channel"] == FORGED + "\u2028more"
    assert "ValueError" in second["exc"]


@pytest.mark.parametrize("log_format", ["text", "json"])
@pytest.mark.parametrize(
    "exc",
    [
        BadHttpMessage("Invalid header token:\n\n    b'bad header'\n         ^"),
        BadStatusLine("GARBAGE"),
        BadHttpMethod("GARBAGE"),
    ],
)
def test_aiohttps_malformed_request_traceback_becomes_one_line_with_the_remote_and_reason(
    captured, log_format: str, exc: Exception
) -> None:
    stream = captured(log_format)
    server_log = logging.getLogger("aiohttp.server")
    level = logging.DEBUG if isinstance(exc, BadHttpMethod) else logging.ERROR  # as aiohttp logs them
    server_log.log(level, "Error handling request from %s", "203.0.113.9", exc_info=exc)
    lines = stream.getvalue().splitlines()
    assert len(lines) == 1, lines
    if log_format == "json":
        entry = json.loads(lines[0])
        assert entry["msg"] == "malformed http request refused"
        assert entry["remote"] == "203.0.113.9" and entry["status"] == 400
        assert entry["kind"] == type(exc).__name__ and "exc" not in entry
        assert "bad header" not in lines[0]  # the offending bytes are not repeated
    else:
        assert " info    malformed http request refused remote=203.0.113.9 status=400" in lines[0]
        assert "Traceback" not in lines[0]


def test_other_aiohttp_records_come_out_in_our_format_at_our_level(captured) -> None:
    stream = captured("json")
    logging.getLogger("aiohttp.web").error("Error handling request")
    logging.getLogger("aiohttp.server").debug("a debug detail")
    logging.getLogger("asyncio").warning("something in the loop")
    lines = [json.loads(line) for line in stream.getvalue().splitlines()]
    assert [(line["level"], line["msg"]) for line in lines] == [
        ("error", "Error handling request"),
        ("warning", "something in the loop"),
    ]


def test_past_the_burst_lines_are_counted_and_summed_up_once_the_window_ends(captured) -> None:
    from clarion.observability import metrics

    stream = io.StringIO()
    captured("json")  # saves and restores the loggers; reconfigured here with a small burst
    logs.configure("json", "info", stream, burst=3, window=10.0)
    log = logging.getLogger("clarion.server")
    event = "storm test opened"
    before = metrics.REGISTRY.get_sample_value("clarion_log_lines_suppressed_total", {"event": event}) or 0.0
    for index in range(10):
        log.info(event, extra=fields(socket_id=f"1.{index}"))
    for _ in range(5):
        log.warning("storm test warning")  # warnings are never left out
    lines = [json.loads(line) for line in stream.getvalue().splitlines()]
    assert [line["socket_id"] for line in lines if line["msg"] == event] == ["1.0", "1.1", "1.2"]
    assert len([line for line in lines if line["msg"] == "storm test warning"]) == 5
    assert metrics.REGISTRY.get_sample_value("clarion_log_lines_suppressed_total", {"event": event}) == before + 7
    logs.flush_suppressed(time.time() + 5)  # the window has not ended: no summary yet
    assert "more" not in stream.getvalue()
    logs.flush_suppressed(time.time() + 11)
    summary = json.loads(stream.getvalue().splitlines()[-1])
    assert summary["msg"] == f"7 more '{event}' in the last 10 s"
    assert (summary["event"], summary["suppressed"]) == (event, 7)
    logs.flush_suppressed(time.time() + 30)  # said once
    assert stream.getvalue().count(" more ") == 1
    log.info(event, extra=fields(socket_id="2.0"))  # a new window: written again
    assert json.loads(stream.getvalue().splitlines()[-1])["socket_id"] == "2.0"
