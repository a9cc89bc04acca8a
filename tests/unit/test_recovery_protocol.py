"""Clarion's recovery extension, sans I/O: the Session's answers to clarion:resume, clarion:rewind
and resume/rewind inside pusher:subscribe; history rules; when a gap can be caught up; HTTP
history queries; position and replay marks on frames; and the history settings."""

from __future__ import annotations

import dataclasses
import hashlib
import hmac
import json
import re
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from clarion.protocol import messages
from clarion.protocol.app import DEFAULT_HISTORY, App, HistoryRule
from clarion.protocol.errors import ApiError, ErrorCode
from clarion.protocol.history import MAX_SERIAL, HistoryQuery, gap, parse_history_query
from clarion.protocol.session import CATCH_UP_RATE, CatchUp, Join, Member, Send, Session
from clarion.server.config import ConfigError, load_settings

KEY = "app-key"
SECRET = "app-secret"
SOCKET = "123.456"
T0 = 1000.0
EPOCH = "3f9c0a61b2d4"

APP = App(id="1", key=KEY, secret=SECRET)
PRIVATE = "private-orders"
PRESENCE = "presence-room"
PUBLIC = "news"


def make(**app_fields: Any) -> Session:
    return Session(dataclasses.replace(APP, **app_fields), SOCKET, T0)


def sign(channel: str, channel_data: str | None = None) -> str:
    message = f"{SOCKET}:{channel}" if channel_data is None else f"{SOCKET}:{channel}:{channel_data}"
    return f"{KEY}:{hmac.new(SECRET.encode(), message.encode(), hashlib.sha256).hexdigest()}"


def frame(event: str, data: Any) -> str:
    return json.dumps({"event": event, "data": data})


def subscribe_frame(channel: str, **extra: Any) -> str:
    """A pusher:subscribe, signed when the channel needs it; ``extra`` goes into its data."""
    data: dict[str, Any] = {"channel": channel}
    channel_data = None
    if channel.startswith("presence-"):
        channel_data = json.dumps({"user_id": "u1", "user_info": {"name": "Ada"}})
        data["channel_data"] = channel_data
    if channel.startswith(("private-", "presence-")):
        data["auth"] = sign(channel, channel_data)
    data.update(extra)
    return frame("pusher:subscribe", data)


def subscribed(*channels: str, **app_fields: Any) -> Session:
    session = make(**app_fields)
    for channel in channels:
        [action] = session.receive(subscribe_frame(channel), T0)
        assert isinstance(action, Join), action
    return session


def resume(channel: str, epoch: Any = EPOCH, serial: Any = 7) -> str:
    return frame("clarion:resume", {"channel": channel, "epoch": epoch, "serial": serial})


def rewind(channel: str, **fields: Any) -> str:
    return frame("clarion:rewind", {"channel": channel, **fields})


def only(actions: list[Any]) -> Any:
    assert len(actions) == 1, actions
    return actions[0]


def sent(action: Any) -> dict[str, Any]:
    assert isinstance(action, Send), action
    assert action.error_code is None and action.refused is None
    parsed: dict[str, Any] = json.loads(action.frame)
    return parsed


def answer(action: Any) -> tuple[str, dict[str, Any]]:
    """(event, decoded data) of a clarion:resumed / clarion:rewound frame; data is a JSON string."""
    message = sent(action)
    assert isinstance(message["data"], str), message
    return message["event"], json.loads(message["data"])


def assert_error(actions: list[Any], code: int) -> str:
    action = only(actions)
    assert isinstance(action, Send), action
    assert action.error_code == code
    message = json.loads(action.frame)
    assert message["event"] == "pusher:error"
    assert message["data"]["code"] == code
    text: str = message["data"]["message"]
    return text


# --- clarion:resume ----------------------------------------------------------------------------


def test_resume_on_a_kept_channel_asks_for_the_events_after_the_position_within_the_rule() -> None:
    session = subscribed(PRIVATE)
    action = only(session.receive(resume(PRIVATE, EPOCH, 41), T0))
    assert action == CatchUp(PRIVATE, limit=100, max_age=300.0, epoch=EPOCH, serial=41)
    assert action.is_resume


def test_resume_carries_the_channels_own_rule_as_its_limits() -> None:
    rules = (HistoryRule("private-", 100, 300.0), HistoryRule("private-orders", 7, 12.5))
    session = subscribed(PRIVATE, history=rules)
    assert only(session.receive(resume(PRIVATE), T0)) == CatchUp(PRIVATE, 7, 12.5, epoch=EPOCH, serial=7)


@pytest.mark.parametrize("serial", [0, 1, MAX_SERIAL])
def test_resume_accepts_every_serial_a_javascript_client_can_hold(serial: int) -> None:
    session = subscribed(PRIVATE)
    assert only(session.receive(resume(PRIVATE, serial=serial), T0)).serial == serial


@pytest.mark.parametrize("epoch", ["a", "A-z_09", "x" * 64])
def test_resume_accepts_epochs_of_1_to_64_url_safe_characters(epoch: str) -> None:
    session = subscribed(PRIVATE)
    assert only(session.receive(resume(PRIVATE, epoch=epoch), T0)).epoch == epoch


def test_resume_on_a_presence_channel_is_a_catch_up_too() -> None:
    session = subscribed(PRESENCE)
    assert only(session.receive(resume(PRESENCE), T0)) == CatchUp(PRESENCE, 100, 300.0, epoch=EPOCH, serial=7)


def test_resume_on_a_channel_without_history_answers_history_off_at_once() -> None:
    session = subscribed(PUBLIC)
    event, data = answer(only(session.receive(resume(PUBLIC), T0)))
    assert event == "clarion:resumed"
    assert data == {"channel": PUBLIC, "recovered": False, "epoch": None, "serial": 0, "reason": "history_off"}


def test_resume_on_a_private_channel_of_an_app_with_history_off_answers_history_off() -> None:
    session = subscribed(PRIVATE, history=())
    event, data = answer(only(session.receive(resume(PRIVATE), T0)))
    assert (event, data["recovered"], data["reason"]) == ("clarion:resumed", False, "history_off")
    assert sent(only(session.receive(resume(PRIVATE), T0)))["channel"] == PRIVATE


def test_resume_keeps_the_subscription_as_it_was() -> None:
    session = subscribed(PRESENCE)
    before = dict(session.channels)
    session.receive(resume(PRESENCE), T0)
    assert session.channels == before == {PRESENCE: Member("u1", {"name": "Ada"})}


# --- clarion:rewind ----------------------------------------------------------------------------


def test_rewind_by_count_asks_for_the_last_events() -> None:
    session = subscribed(PRIVATE)
    action = only(session.receive(rewind(PRIVATE, count=20), T0))
    assert action == CatchUp(PRIVATE, limit=100, max_age=300.0, count=20)
    assert not action.is_resume


def test_rewind_count_is_capped_by_the_rules_size() -> None:
    session = subscribed(PRIVATE, history=(HistoryRule("private-", 10, 300.0),))
    assert only(session.receive(rewind(PRIVATE, count=1000), T0)).count == 10
    assert only(session.receive(rewind(PRIVATE, count=10), T0)).count == 10
    assert only(session.receive(rewind(PRIVATE, count=9), T0)).count == 9


def test_rewind_by_seconds_asks_for_that_recent_history_as_a_float() -> None:
    session = subscribed(PRIVATE)
    action = only(session.receive(rewind(PRIVATE, seconds=60), T0))
    assert action == CatchUp(PRIVATE, limit=100, max_age=300.0, seconds=60.0)
    assert isinstance(action.seconds, float)
    assert only(session.receive(rewind(PRIVATE, seconds=0.25), T0)).seconds == 0.25


def test_rewind_seconds_are_capped_by_the_rules_ttl() -> None:
    session = subscribed(PRIVATE, history=(HistoryRule("private-", 10, 30.0),))
    assert only(session.receive(rewind(PRIVATE, seconds=3600), T0)).seconds == 30.0
    assert only(session.receive(rewind(PRIVATE, seconds=29.5), T0)).seconds == 29.5


def test_rewind_on_a_channel_without_history_answers_history_off_at_once() -> None:
    session = subscribed(PUBLIC)
    event, data = answer(only(session.receive(rewind(PUBLIC, count=5), T0)))
    assert event == "clarion:rewound"
    assert data == {"channel": PUBLIC, "count": 0, "epoch": None, "serial": 0, "reason": "history_off"}


# --- not subscribed: 4009 ------------------------------------------------------------------------


@pytest.mark.parametrize(
    "request_frame",
    [resume(PRIVATE), rewind(PRIVATE, count=1), rewind(PRIVATE, seconds=1), resume(PUBLIC), rewind(PUBLIC, count=1)],
    ids=["resume", "rewind-count", "rewind-seconds", "resume-public", "rewind-public"],
)
def test_resume_or_rewind_without_a_subscription_is_refused_with_4009(request_frame: str) -> None:
    session = subscribed("private-other")
    text = assert_error(session.receive(request_frame, T0), ErrorCode.UNAUTHORIZED)
    assert "subscription" in text


def test_resume_after_unsubscribing_is_refused_with_4009() -> None:
    session = subscribed(PRIVATE)
    session.receive(frame("pusher:unsubscribe", {"channel": PRIVATE}), T0)
    assert_error(session.receive(resume(PRIVATE), T0), ErrorCode.UNAUTHORIZED)


def test_a_malformed_request_on_a_channel_not_subscribed_is_refused_for_the_subscription_first() -> None:
    session = make()
    assert_error(session.receive(resume(PRIVATE, epoch=None), T0), ErrorCode.UNAUTHORIZED)


# --- malformed: 4200 ----------------------------------------------------------------------------

BAD_RESUMES = {
    "missing-epoch": {"serial": 1},
    "epoch-null": {"epoch": None, "serial": 1},
    "epoch-number": {"epoch": 123, "serial": 1},
    "epoch-empty": {"epoch": "", "serial": 1},
    "epoch-with-space": {"epoch": "x y", "serial": 1},
    "epoch-with-slash": {"epoch": "a/b", "serial": 1},
    "epoch-with-quote": {"epoch": 'a"b', "serial": 1},
    "epoch-non-ascii": {"epoch": "é", "serial": 1},
    "epoch-65-chars": {"epoch": "x" * 65, "serial": 1},
    "epoch-trailing-newline": {"epoch": "abc\n", "serial": 1},
    "missing-serial": {"epoch": EPOCH},
    "serial-null": {"epoch": EPOCH, "serial": None},
    "serial-negative": {"epoch": EPOCH, "serial": -1},
    "serial-true": {"epoch": EPOCH, "serial": True},
    "serial-false": {"epoch": EPOCH, "serial": False},
    "serial-too-large": {"epoch": EPOCH, "serial": MAX_SERIAL + 1},
    "serial-huge": {"epoch": EPOCH, "serial": 2**63},
    "serial-float": {"epoch": EPOCH, "serial": 1.0},
    "serial-string": {"epoch": EPOCH, "serial": "1"},
}
BAD_REWINDS = {
    "neither": {},
    "both-null": {"count": None, "seconds": None},
    "both": {"count": 3, "seconds": 3},
    "count-zero": {"count": 0},
    "count-negative": {"count": -5},
    "count-true": {"count": True},
    "count-float": {"count": 2.5},
    "count-string": {"count": "3"},
    "seconds-zero": {"seconds": 0},
    "seconds-negative": {"seconds": -1},
    "seconds-string": {"seconds": "10"},
    "seconds-true": {"seconds": True},
    "seconds-too-large": {"seconds": 1e9},
    "seconds-list": {"seconds": [1]},
}


@pytest.mark.parametrize("fields", BAD_RESUMES.values(), ids=BAD_RESUMES.keys())
@pytest.mark.parametrize("channel", [PRIVATE, PUBLIC])
def test_malformed_resume_is_refused_with_4200_and_the_session_stays_usable(
    channel: str, fields: dict[str, Any]
) -> None:
    session = subscribed(channel)
    assert_error(session.receive(frame("clarion:resume", {"channel": channel, **fields}), T0), ErrorCode.RECONNECT)
    assert channel in session.channels
    assert only(session.receive(frame("pusher:ping", {}), T0)) == Send(messages.PONG)


@pytest.mark.parametrize("fields", BAD_REWINDS.values(), ids=BAD_REWINDS.keys())
@pytest.mark.parametrize("channel", [PRIVATE, PUBLIC])
def test_malformed_rewind_is_refused_with_4200_and_the_session_stays_usable(
    channel: str, fields: dict[str, Any]
) -> None:
    session = subscribed(channel)
    assert_error(session.receive(frame("clarion:rewind", {"channel": channel, **fields}), T0), ErrorCode.RECONNECT)
    assert channel in session.channels
    assert only(session.receive(frame("pusher:ping", {}), T0)) == Send(messages.PONG)


@pytest.mark.parametrize("event", ["clarion:resume", "clarion:rewind"])
@pytest.mark.parametrize("data", ["not an object", [PRIVATE], 7, None, {"epoch": EPOCH, "serial": 1}, {"channel": 5}])
def test_resume_or_rewind_whose_data_is_not_an_object_with_a_channel_is_refused_with_4200(
    event: str, data: Any
) -> None:
    session = subscribed(PRIVATE)
    assert_error(session.receive(frame(event, data), T0), ErrorCode.RECONNECT)


# --- inside pusher:subscribe ---------------------------------------------------------------------


def test_resume_inside_subscribe_joins_and_then_catches_up() -> None:
    session = make()
    action = only(session.receive(subscribe_frame(PRIVATE, resume={"epoch": EPOCH, "serial": 3}), T0))
    assert action == Join(PRIVATE, None, CatchUp(PRIVATE, 100, 300.0, epoch=EPOCH, serial=3))
    assert PRIVATE in session.channels


def test_rewind_inside_subscribe_joins_and_then_catches_up_capped_by_the_rule() -> None:
    session = make(history=(HistoryRule("private-", 10, 60.0),))
    by_count = only(session.receive(subscribe_frame(PRIVATE, rewind={"count": 50}), T0))
    assert by_count == Join(PRIVATE, None, CatchUp(PRIVATE, 10, 60.0, count=10))
    by_seconds = only(session.receive(subscribe_frame("private-b", rewind={"seconds": 600}), T0))
    assert by_seconds == Join("private-b", None, CatchUp("private-b", 10, 60.0, seconds=60.0))


def test_resume_inside_a_presence_subscribe_keeps_the_member() -> None:
    session = make()
    action = only(session.receive(subscribe_frame(PRESENCE, resume={"epoch": EPOCH, "serial": 0}), T0))
    assert action == Join(PRESENCE, Member("u1", {"name": "Ada"}), CatchUp(PRESENCE, 100, 300.0, epoch=EPOCH, serial=0))


@pytest.mark.parametrize(
    ("extra", "event", "fields"),
    [
        ({"resume": {"epoch": EPOCH, "serial": 3}}, "clarion:resumed", {"recovered": False}),
        ({"rewind": {"count": 3}}, "clarion:rewound", {"count": 0}),
    ],
    ids=["resume", "rewind"],
)
def test_resume_or_rewind_inside_subscribe_without_history_subscribes_and_answers_history_off(
    extra: dict[str, Any], event: str, fields: dict[str, Any]
) -> None:
    session = make()
    join, told = session.receive(subscribe_frame(PUBLIC, **extra), T0)
    assert join == Join(PUBLIC, None)
    assert answer(told) == (event, {"channel": PUBLIC, **fields, "epoch": None, "serial": 0, "reason": "history_off"})
    assert PUBLIC in session.channels


def test_subscribe_with_null_resume_and_rewind_is_a_plain_subscribe() -> None:
    session = make()
    assert only(session.receive(subscribe_frame(PRIVATE, resume=None, rewind=None), T0)) == Join(PRIVATE, None)


def test_subscribe_with_double_encoded_data_still_reads_the_resume() -> None:
    session = make()
    data = json.dumps({"channel": PRIVATE, "auth": sign(PRIVATE), "resume": {"epoch": EPOCH, "serial": 2}})
    action = only(session.receive(frame("pusher:subscribe", data), T0))
    assert action.catch_up == CatchUp(PRIVATE, 100, 300.0, epoch=EPOCH, serial=2)


BAD_SUBSCRIBE_EXTRAS = {
    "resume-and-rewind": {"resume": {"epoch": EPOCH, "serial": 1}, "rewind": {"count": 1}},
    "resume-string": {"resume": "abc:1"},
    "resume-list": {"resume": [EPOCH, 1]},
    "resume-number": {"resume": 1},
    "rewind-number": {"rewind": 5},
    "rewind-false": {"rewind": False},
    **{f"resume-{name}": {"resume": fields} for name, fields in BAD_RESUMES.items()},
    **{f"rewind-{name}": {"rewind": fields} for name, fields in BAD_REWINDS.items()},
}


@pytest.mark.parametrize("extra", BAD_SUBSCRIBE_EXTRAS.values(), ids=BAD_SUBSCRIBE_EXTRAS.keys())
@pytest.mark.parametrize("channel", [PRIVATE, PUBLIC])
def test_malformed_resume_or_rewind_inside_subscribe_is_refused_with_4200_and_does_not_subscribe(
    channel: str, extra: dict[str, Any]
) -> None:
    session = make()
    assert_error(session.receive(subscribe_frame(channel, **extra), T0), ErrorCode.RECONNECT)
    assert session.channels == {}
    # The channel can be subscribed properly afterwards.
    assert only(session.receive(subscribe_frame(channel), T0)) == Join(channel, None)


def test_subscribe_with_a_bad_signature_is_refused_as_such_whatever_it_asks_to_resume() -> None:
    session = make()
    data = {"channel": PRIVATE, "auth": f"{KEY}:{'0' * 64}", "resume": {"epoch": EPOCH, "serial": 1}}
    action = only(session.receive(frame("pusher:subscribe", data), T0))
    assert isinstance(action, Send) and action.refused == "AuthError"
    assert session.channels == {}


# --- how often -----------------------------------------------------------------------------------


def test_catch_ups_beyond_the_burst_are_answered_rate_limited_until_the_bucket_refills() -> None:
    session = subscribed(PRIVATE, max_channels_per_connection=10)
    for _ in range(10):  # the burst: one per channel a connection may hold (at least 10)
        assert isinstance(only(session.receive(rewind(PRIVATE, count=1), T0)), CatchUp)
    event, data = answer(only(session.receive(resume(PRIVATE), T0)))
    assert (event, data["recovered"], data["reason"]) == ("clarion:resumed", False, "rate_limited")
    event, data = answer(only(session.receive(rewind(PRIVATE, count=1), T0)))
    assert (event, data["count"], data["reason"]) == ("clarion:rewound", 0, "rate_limited")
    assert isinstance(only(session.receive(resume(PRIVATE), T0 + 1 / CATCH_UP_RATE)), CatchUp)


def test_history_off_answers_are_not_rate_limited() -> None:
    session = subscribed(PUBLIC, max_channels_per_connection=10)
    for _ in range(50):
        assert answer(only(session.receive(resume(PUBLIC), T0)))[1]["reason"] == "history_off"


# --- App.history_for -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("channel", "rule"),
    [
        ("private-a", DEFAULT_HISTORY[0]),
        ("private-encrypted-a", DEFAULT_HISTORY[0]),
        ("private-cache-a", DEFAULT_HISTORY[0]),
        ("presence-a", DEFAULT_HISTORY[1]),
        ("presence-cache-a", DEFAULT_HISTORY[1]),
        ("public", None),
        ("cache-public", None),
        ("private", None),
        ("#server-to-user-1", None),
    ],
)
def test_default_history_keeps_private_and_presence_channels_only(channel: str, rule: HistoryRule | None) -> None:
    assert APP.history_for(channel) == rule


def test_apps_keep_100_events_for_300_seconds_by_default() -> None:
    assert APP.history == (HistoryRule("private-", 100, 300.0), HistoryRule("presence-", 100, 300.0))


@pytest.mark.parametrize("reverse", [False, True], ids=["short-first", "long-first"])
def test_the_longest_matching_prefix_wins_whatever_the_order(reverse: bool) -> None:
    short, long = HistoryRule("private-", 10, 60.0), HistoryRule("private-chat-", 50, 600.0)
    rules = (long, short) if reverse else (short, long)
    app = dataclasses.replace(APP, history=rules)
    assert app.history_for("private-chat-7") == long
    assert app.history_for("private-chat") == short
    assert app.history_for("private-x") == short
    assert app.history_for("presence-x") is None


def test_size_0_turns_a_prefix_off_even_under_a_shorter_rule() -> None:
    app = dataclasses.replace(APP, history=(HistoryRule("private-", 100, 300.0), HistoryRule("private-noisy-", 0, 1)))
    assert app.history_for("private-noisy-feed") is None
    assert app.history_for("private-quiet") == HistoryRule("private-", 100, 300.0)


def test_an_empty_prefix_keeps_every_channel_and_longer_prefixes_still_win() -> None:
    everything, off = HistoryRule("", 5, 30.0), HistoryRule("private-", 0, 300.0)
    app = dataclasses.replace(APP, history=(everything, off))
    assert app.history_for("news") == everything
    assert app.history_for("#server-to-user-1") == everything
    assert app.history_for("private-a") is None


def test_no_rules_keep_nothing() -> None:
    app = dataclasses.replace(APP, history=())
    assert app.history_for("private-a") is None
    assert app.history_for("") is None


PREFIXES = st.text(alphabet="ab-", max_size=4)
RULES = st.lists(
    st.builds(HistoryRule, PREFIXES, st.integers(min_value=0, max_value=3), st.just(60.0)),
    max_size=6,
    unique_by=lambda rule: rule.prefix,
)


@given(rules=RULES, channel=st.text(alphabet="ab-", max_size=6))
def test_history_for_is_the_longest_matching_rule_unless_its_size_is_0(rules: list[HistoryRule], channel: str) -> None:
    app = dataclasses.replace(APP, history=tuple(rules))
    matching = [rule for rule in rules if channel.startswith(rule.prefix)]
    longest = max(matching, key=lambda rule: len(rule.prefix), default=None)
    expected = longest if longest is not None and longest.size > 0 else None
    assert app.history_for(channel) == expected


# --- protocol.history.gap --------------------------------------------------------------------------


def test_gap_nothing_missed_is_recoverable() -> None:
    assert gap(EPOCH, 10, EPOCH, 10, None, 0) is None


def test_gap_every_missed_event_still_held_is_recoverable() -> None:
    assert gap(EPOCH, 10, EPOCH, 15, 11, 5) is None


def test_gap_from_serial_0_with_the_whole_history_is_recoverable() -> None:
    assert gap(EPOCH, 0, EPOCH, 3, 1, 3) is None


@pytest.mark.parametrize("current", [None, "other"])
def test_gap_another_or_no_epoch_is_epoch_changed(current: str | None) -> None:
    assert gap(EPOCH, 10, current, 10, None, 0) == "epoch_changed"


def test_gap_epoch_is_checked_before_the_serial() -> None:
    assert gap(EPOCH, 99, "other", 10, None, 0) == "epoch_changed"


def test_gap_a_serial_ahead_of_the_channel_is_unknown_position() -> None:
    assert gap(EPOCH, 11, EPOCH, 10, None, 0) == "unknown_position"


def test_gap_fewer_entries_than_missed_is_too_old() -> None:
    assert gap(EPOCH, 10, EPOCH, 20, 11, 5) == "too_old"  # the read stopped short


def test_gap_entries_not_starting_right_after_the_position_is_too_old() -> None:
    assert gap(EPOCH, 10, EPOCH, 20, 15, 6) == "too_old"  # trimmed by size or age


def test_gap_nothing_left_of_what_was_missed_is_too_old() -> None:
    assert gap(EPOCH, 10, EPOCH, 20, None, 0) == "too_old"


def test_gap_a_paged_read_needs_only_its_start_to_join_up() -> None:
    assert gap(EPOCH, 10, EPOCH, 20, 11, 3, paged=True) is None
    assert gap(EPOCH, 10, EPOCH, 20, 12, 3, paged=True) == "too_old"
    assert gap(EPOCH, 10, EPOCH, 20, None, 0, paged=True) == "too_old"
    assert gap(EPOCH, 10, "other", 20, 11, 3, paged=True) == "epoch_changed"
    assert gap(EPOCH, 21, EPOCH, 20, None, 0, paged=True) == "unknown_position"


@given(
    oldest=st.integers(min_value=1, max_value=50),
    held=st.integers(min_value=0, max_value=50),
    asked=st.integers(min_value=0, max_value=120),
)
def test_gap_is_recoverable_exactly_when_history_reaches_back_to_the_position(
    oldest: int, held: int, asked: int
) -> None:
    """History holds serials oldest..latest (contiguous); a read returns those after ``asked``."""
    latest = oldest + held - 1 if held else oldest - 1
    entries = [s for s in range(oldest, latest + 1) if s > asked]
    reason = gap(EPOCH, asked, EPOCH, latest, entries[0] if entries else None, len(entries))
    if asked > latest:
        assert reason == "unknown_position"
    elif asked >= oldest - 1:
        assert reason is None
    else:
        assert reason == "too_old"


# --- parse_history_query ---------------------------------------------------------------------------


def refused(params: dict[str, str], max_limit: int = 100) -> str:
    with pytest.raises(ApiError) as caught:
        parse_history_query(params, max_limit)
    assert caught.value.status == 400
    return caught.value.message


def test_history_query_without_parameters_reads_the_newest_up_to_the_rules_size() -> None:
    assert parse_history_query({}, 100) == HistoryQuery(None, None, 100)


def test_history_query_empty_parameters_count_as_absent() -> None:
    assert parse_history_query({"epoch": "", "since": "", "limit": ""}, 50) == HistoryQuery(None, None, 50)


def test_history_query_with_epoch_and_since_reads_after_that_position() -> None:
    assert parse_history_query({"epoch": EPOCH, "since": "41"}, 100) == HistoryQuery(EPOCH, 41, 100)
    assert parse_history_query({"epoch": EPOCH, "since": "0"}, 100).since == 0
    assert parse_history_query({"epoch": EPOCH, "since": str(MAX_SERIAL)}, 100).since == MAX_SERIAL


def test_history_query_epoch_alone_is_accepted() -> None:
    assert parse_history_query({"epoch": EPOCH}, 100) == HistoryQuery(EPOCH, None, 100)


def test_history_query_limit_is_capped_by_the_rules_size() -> None:
    assert parse_history_query({"limit": "5"}, 100).limit == 5
    assert parse_history_query({"limit": "100"}, 100).limit == 100
    assert parse_history_query({"limit": "101"}, 100).limit == 100
    assert parse_history_query({"limit": "99999999999999999999"}, 10).limit == 10


def test_history_query_ignores_the_signature_and_browser_auth_parameters() -> None:
    params = {
        "auth_key": KEY,
        "auth_timestamp": "1",
        "auth_version": "1.0",
        "auth_signature": "x",
        "socket_id": SOCKET,
        "auth": "k:s",
        "channel_data": "{}",
        "limit": "3",
    }
    assert parse_history_query(params, 100) == HistoryQuery(None, None, 3)


def test_history_query_since_without_its_epoch_is_refused() -> None:
    assert "epoch" in refused({"since": "5"})


@pytest.mark.parametrize("epoch", ["x y", "a/b", "é", "x" * 65, "a.b"])
def test_history_query_bad_epoch_is_refused(epoch: str) -> None:
    assert "epoch" in refused({"epoch": epoch})


@pytest.mark.parametrize("since", ["-1", "1.5", "abc", " 1", "+1", "0x10", str(MAX_SERIAL + 1), "1e3"])
def test_history_query_since_that_is_not_a_serial_is_refused(since: str) -> None:
    assert "since" in refused({"epoch": EPOCH, "since": since})


@pytest.mark.parametrize("limit", ["0", "-1", "1.5", "abc", "+3", " 3"])
def test_history_query_limit_below_1_or_not_a_whole_number_is_refused(limit: str) -> None:
    assert "limit" in refused({"limit": limit})


@pytest.mark.parametrize(
    "params",
    [{"epoch": EPOCH, "since": "²"}, {"limit": "²"}, {"epoch": EPOCH, "since": "9" * 5000}, {"limit": "9" * 5000}],
    ids=["since-superscript", "limit-superscript", "since-5000-digits", "limit-5000-digits"],
)
def test_history_query_digits_int_cannot_read_are_refused_with_400(params: dict[str, str]) -> None:
    refused(params)


# --- positions and replay marks on frames --------------------------------------------------------


def test_with_position_adds_epoch_and_serial_as_the_last_fields() -> None:
    framed = messages.with_position(messages.channel_event("e", "private-a", '{"n":1}'), EPOCH, 42)
    parsed = json.loads(framed)
    assert parsed == {"event": "e", "channel": "private-a", "data": '{"n":1}', "epoch": EPOCH, "serial": 42}
    assert list(parsed) == ["event", "channel", "data", "epoch", "serial"]


def test_as_replayed_adds_replayed_true_after_the_position() -> None:
    stored = messages.with_position(messages.channel_event("e", "private-a", "d"), EPOCH, 1)
    parsed = json.loads(messages.as_replayed(stored))
    assert list(parsed) == ["event", "channel", "data", "epoch", "serial", "replayed"]
    assert parsed["replayed"] is True


def test_resumed_frame_data_is_a_json_string_and_reason_appears_only_when_given() -> None:
    ok = json.loads(messages.resumed("private-a", True, EPOCH, 9))
    assert ok["event"] == "clarion:resumed" and ok["channel"] == "private-a"
    assert json.loads(ok["data"]) == {"channel": "private-a", "recovered": True, "epoch": EPOCH, "serial": 9}
    lost = json.loads(json.loads(messages.resumed("private-a", False, None, 0, "too_old"))["data"])
    assert lost == {"channel": "private-a", "recovered": False, "epoch": None, "serial": 0, "reason": "too_old"}


def test_rewound_frame_data_is_a_json_string_with_the_count() -> None:
    message = json.loads(messages.rewound("private-a", 3, EPOCH, 20))
    assert (message["event"], message["channel"]) == ("clarion:rewound", "private-a")
    assert json.loads(message["data"]) == {"channel": "private-a", "count": 3, "epoch": EPOCH, "serial": 20}


TEXT = st.text(max_size=30)


@given(
    event=TEXT,
    channel=TEXT,
    data=TEXT,
    user_id=st.none() | TEXT,
    epoch=st.from_regex(r"\A[A-Za-z0-9_-]{1,64}\Z"),
    serial=st.integers(min_value=0, max_value=MAX_SERIAL),
)
def test_positions_and_replay_marks_keep_any_channel_event_valid_json(
    event: str, channel: str, data: str, user_id: str | None, epoch: str, serial: int
) -> None:
    original = messages.channel_event(event, channel, data, user_id)
    framed = messages.with_position(original, epoch, serial)
    parsed = json.loads(framed)
    assert parsed == {**json.loads(original), "epoch": epoch, "serial": serial}
    assert list(parsed)[-2:] == ["epoch", "serial"]
    replayed = json.loads(messages.as_replayed(framed))
    assert replayed == {**parsed, "replayed": True}
    assert list(replayed)[-1] == "replayed"


# --- settings: CLARION_HISTORY and [[apps.history]] -----------------------------------------------


def history_of(environ: dict[str, str], config: Path | None = None) -> tuple[HistoryRule, ...]:
    settings = load_settings(str(config) if config else None, environ)
    return settings.apps[0].history


def refused_setting(environ: dict[str, str], config: Path | None = None) -> str:
    with pytest.raises(ConfigError) as caught:
        load_settings(str(config) if config else None, environ)
    return str(caught.value)


def test_without_a_history_setting_apps_get_the_default_rules() -> None:
    assert history_of({}) == DEFAULT_HISTORY


def test_an_empty_clarion_history_counts_as_unset() -> None:
    assert history_of({"CLARION_HISTORY": ""}) == DEFAULT_HISTORY


@pytest.mark.parametrize("value", ["off", "OFF", " off ", "none"])
def test_clarion_history_off_keeps_nothing(value: str) -> None:
    assert history_of({"CLARION_HISTORY": value}) == ()


def test_clarion_history_rules_with_and_without_ttl() -> None:
    assert history_of({"CLARION_HISTORY": "private-:10:300 presence-:5"}) == (
        HistoryRule("private-", 10, 300.0),
        HistoryRule("presence-", 5, 300.0),
    )


def test_clarion_history_rules_may_be_spread_with_any_whitespace_and_use_fractional_ttls() -> None:
    assert history_of({"CLARION_HISTORY": "  private-:10:0.5 \t public-news.:50:120  "}) == (
        HistoryRule("private-", 10, 0.5),
        HistoryRule("public-news.", 50, 120.0),
    )


def test_clarion_history_empty_prefix_and_size_0_rules() -> None:
    assert history_of({"CLARION_HISTORY": ":5:30 private-:0"}) == (
        HistoryRule("", 5, 30.0),
        HistoryRule("private-", 0, 300.0),
    )


def test_clarion_history_applies_to_every_app_over_the_toml(tmp_path: Path) -> None:
    path = tmp_path / "apps.toml"
    path.write_text(TOML_APPS)
    settings = load_settings(str(path), {"CLARION_HISTORY": "presence-:7"})
    assert [app.history for app in settings.apps] == [(HistoryRule("presence-", 7, 300.0),)] * 2


@pytest.mark.parametrize(
    ("value", "names"),
    [
        ("private-", [r"CLARION_HISTORY", r"prefix:size"]),
        ("private-:abc", [r"history", r"size"]),
        ("private-:-1", [r"history", r"size"]),
        ("private-:1e3", [r"history", r"size"]),
        ("private-:100001", [r"history", r"size"]),
        ("private-:10:0", [r"history", r"ttl"]),
        ("private-:10:x", [r"history", r"ttl"]),
        ("private-:10:300:9", [r"history", r"ttl"]),
        ("bad!prefix:10", [r"history", r"prefix"]),
    ],
)
def test_bad_clarion_history_is_refused_naming_the_setting(value: str, names: list[str]) -> None:
    message = refused_setting({"CLARION_HISTORY": value})
    assert "CLARION_HISTORY" in message, message
    for name in names:
        assert re.search(name, message), (name, message)


def test_a_prefix_given_two_history_rules_is_refused() -> None:
    message = refused_setting({"CLARION_HISTORY": "private-:10 private-:0"})
    assert "private-" in message and "repeat" in message


TOML_APP = """
[[apps]]
id = "1"
key = "k"
secret = "secret-k"
"""
TOML_APPS = TOML_APP + TOML_APP.replace('"1"', '"2"').replace('"k"', '"k2"')


def test_toml_history_tables_replace_the_defaults(tmp_path: Path) -> None:
    path = tmp_path / "history.toml"
    path.write_text(
        TOML_APP
        + """
[[apps.history]]
prefix = "private-"
size = 200
ttl = 600

[[apps.history]]
prefix = "public-news."
size = 50

[[apps.history]]
prefix = "#server-to-user-"
size = 10
ttl = 0.5
"""
    )
    rules = history_of({}, path)
    assert rules == (
        HistoryRule("private-", 200, 600.0),
        HistoryRule("public-news.", 50, 300.0),
        HistoryRule("#server-to-user-", 10, 0.5),
    )
    app = load_settings(str(path), {}).apps[0]
    assert app.history_for("presence-x") is None  # the defaults are gone
    assert app.history_for("public-news.today") == HistoryRule("public-news.", 50, 300.0)


def test_toml_empty_history_keeps_nothing(tmp_path: Path) -> None:
    path = tmp_path / "off.toml"
    path.write_text(TOML_APP + "history = []\n")
    assert history_of({}, path) == ()


def test_toml_history_is_per_app(tmp_path: Path) -> None:
    path = tmp_path / "two.toml"
    path.write_text(
        TOML_APP
        + '[[apps.history]]\nprefix = "private-"\nsize = 3\n'
        + TOML_APP.replace('"1"', '"2"').replace('"k"', '"k2"')
    )
    first, second = load_settings(str(path), {}).apps
    assert first.history == (HistoryRule("private-", 3, 300.0),)
    assert second.history == DEFAULT_HISTORY


def test_clarion_history_overrides_toml_history(tmp_path: Path) -> None:
    path = tmp_path / "over.toml"
    path.write_text(TOML_APP + '[[apps.history]]\nprefix = "private-"\nsize = 3\n')
    assert history_of({"CLARION_HISTORY": "off"}, path) == ()


@pytest.mark.parametrize(
    ("table", "names"),
    [
        ('prefix = "private-"\nsize = 3\ncolour = "blue"\n', [r"history", r"colour"]),
        ('prefix = "private-"\n', [r"history", r"size"]),
        ("size = 3\n", [r"history", r"prefix"]),
        ('prefix = "private-"\nsize = -1\n', [r"history", r"size"]),
        ('prefix = "private-"\nsize = 3\nttl = 0\n', [r"history", r"ttl"]),
        ('prefix = "private-"\nsize = 3\nttl = 700000\n', [r"history", r"ttl"]),
        ('prefix = "private channels"\nsize = 3\n', [r"history", r"prefix"]),
    ],
)
def test_bad_toml_history_table_is_refused_naming_the_field(tmp_path: Path, table: str, names: list[str]) -> None:
    path = tmp_path / "bad.toml"
    path.write_text(TOML_APP + "[[apps.history]]\n" + table)
    message = refused_setting({}, path)
    for name in names:
        assert re.search(name, message), (name, message)
