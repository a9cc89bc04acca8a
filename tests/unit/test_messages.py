"""Client frame parsing and server frame shapes (Pusher v7 double encoding)."""

from __future__ import annotations

import contextlib
import json
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from clarion.protocol import messages
from clarion.protocol.errors import ErrorCode, ProtocolError
from clarion.protocol.messages import ClientFrame, parse_frame

JSON_VALUES = st.recursive(
    # 64-bit integers and finite floats: what strict JSON parsing can hand the encoder.
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**63), max_value=2**64 - 1)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=20),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=10), children, max_size=4),
    max_leaves=20,
)
EVENTS = st.one_of(
    st.sampled_from(["pusher:subscribe", "pusher:unsubscribe", "pusher:ping", "pusher:pong", "client-x", "", "x"]),
    st.text(max_size=20),
    st.integers(),
    st.none(),
)


def refused(text: str) -> ProtocolError:
    with pytest.raises(ProtocolError) as caught:
        parse_frame(text)
    return caught.value


# --- parse_frame: valid frames ---------------------------------------------------------------


def test_frame_with_event_channel_and_object_data_is_parsed() -> None:
    frame = parse_frame('{"event":"client-typing","channel":"private-a","data":{"who":"ada"}}')
    assert frame == ClientFrame(event="client-typing", data={"who": "ada"}, channel="private-a")


def test_double_encoded_object_data_of_pusher_events_is_decoded() -> None:
    frame = parse_frame(json.dumps({"event": "pusher:subscribe", "data": json.dumps({"channel": "a", "auth": "k:s"})}))
    assert frame.data == {"channel": "a", "auth": "k:s"}


def test_double_encoded_array_data_of_pusher_events_is_decoded() -> None:
    assert parse_frame('{"event":"pusher:x","data":"[1,2]"}').data == [1, 2]


def test_pusher_event_data_string_that_is_not_an_object_or_array_is_kept_as_a_string() -> None:
    assert parse_frame('{"event":"pusher:ping","data":"hello"}').data == "hello"
    assert parse_frame('{"event":"pusher:ping","data":"1"}').data == "1"
    assert parse_frame('{"event":"pusher:ping","data":""}').data == ""


def test_client_event_string_data_is_kept_verbatim_even_when_it_holds_json() -> None:
    frame = parse_frame('{"event":"client-x","channel":"private-a","data":"{\\"a\\":1}"}')
    assert frame.data == '{"a":1}'


def test_missing_data_and_channel_are_none() -> None:
    assert parse_frame('{"event":"pusher:ping"}') == ClientFrame(event="pusher:ping", data=None, channel=None)


def test_unknown_top_level_fields_are_ignored() -> None:
    assert parse_frame('{"event":"pusher:ping","data":{},"extra":[1]}').event == "pusher:ping"


def test_non_ascii_frame_is_parsed() -> None:
    frame = parse_frame('{"event":"client-msg","channel":"private-a","data":"h\u00e9llo \U0001f600"}')
    assert frame.data == "h\u00e9llo \U0001f600"


def test_escaped_surrogate_pair_is_a_valid_character() -> None:
    frame = parse_frame('{"event":"client-msg","channel":"private-a","data":"\\ud83d\\ude00"}')
    assert frame.data == "\U0001f600"


# --- parse_frame: refusals -------------------------------------------------------------------


@pytest.mark.parametrize("text", ["", "not json", "{", '{"event":"pusher:ping"', "{'event':'x'}", "\x00"])
def test_text_that_is_not_json_is_refused_with_4200(text: str) -> None:
    error = refused(text)
    assert error.code == ErrorCode.RECONNECT
    assert "JSON" in error.message


@pytest.mark.parametrize("text", ["[]", '["pusher:ping"]', '"pusher:ping"', "1", "1.5", "null", "true", "false"])
def test_json_that_is_not_an_object_is_refused(text: str) -> None:
    error = refused(text)
    assert error.code == ErrorCode.RECONNECT
    assert "object" in error.message


@pytest.mark.parametrize(
    "text", ["{}", '{"data":{}}', '{"event":""}', '{"event":1}', '{"event":null}', '{"event":["pusher:ping"]}']
)
def test_frame_without_a_non_empty_string_event_is_refused(text: str) -> None:
    assert "'event'" in refused(text).message


@pytest.mark.parametrize("channel", ["1", "[]", "{}", "true"])
def test_frame_with_non_string_channel_is_refused(channel: str) -> None:
    assert "'channel'" in refused(f'{{"event":"client-x","channel":{channel}}}').message


@pytest.mark.parametrize("data", ['"{"', '"[1,"', '"{\\"a\\":}"'])
def test_pusher_event_with_broken_double_encoded_data_is_refused(data: str) -> None:
    assert "'data'" in refused(f'{{"event":"pusher:subscribe","data":{data}}}').message


def test_deeply_nested_frame_is_refused_not_crashing() -> None:
    assert refused("[" * 100_000).code == ErrorCode.RECONNECT
    assert refused('{"event":"x","data":' + "[" * 100_000 + "]" * 100_000 + "}").code == ErrorCode.RECONNECT


def test_deeply_nested_double_encoded_data_is_refused_not_crashing() -> None:
    text = json.dumps({"event": "pusher:subscribe", "data": "[" * 100_000 + "]" * 100_000})
    assert refused(text).code == ErrorCode.RECONNECT


def test_integer_with_too_many_digits_is_refused() -> None:
    assert refused('{"event":"pusher:ping","data":' + "9" * 10_000 + "}").code == ErrorCode.RECONNECT


@pytest.mark.parametrize("number", ["1e999", "-1e999", "NaN", "Infinity"])
def test_numbers_json_cannot_carry_are_refused(number: str) -> None:
    # Infinity would come back out as invalid JSON and break every client it reached.
    assert refused('{"event":"pusher:ping","data":' + number + "}").code == ErrorCode.RECONNECT


@pytest.mark.parametrize(
    "text",
    [
        '{"event":"pusher:subscribe","data":{"channel":"private-a","auth":"\\ud800"}}',
        '{"event":"client-x","channel":"private-a","data":"\\udfff"}',
        '{"event":"pusher:\\uDBFF","data":{}}',
        '{"event":"pusher:ping","data":{"\\ud800":1}}',
        '{"event":"pusher:subscribe","data":"{\\"channel\\":\\"\\\\ud800\\"}"}',  # inside double-encoded data
        '{"event":"client-x","channel":"private-a","data":"\ud800"}',  # a raw lone surrogate in the str
    ],
)
def test_lone_surrogates_are_refused_because_they_cannot_be_encoded_as_utf8(text: str) -> None:
    error = refused(text)
    assert error.code == ErrorCode.RECONNECT
    assert "JSON" in error.message


def test_escaped_backslash_before_u_is_not_mistaken_for_a_surrogate() -> None:
    frame = parse_frame('{"event":"client-x","channel":"private-a","data":"\\\\ud800"}')
    assert frame.data == "\\ud800"


@given(st.text())
def test_parse_frame_raises_only_protocol_error_for_arbitrary_text(text: str) -> None:
    try:
        frame = parse_frame(text)
    except ProtocolError as exc:
        assert exc.code == ErrorCode.RECONNECT
    else:
        assert isinstance(frame.event, str) and frame.event


@given(event=EVENTS, channel=st.one_of(st.none(), st.text(max_size=10), st.integers()), data=JSON_VALUES)
def test_parse_frame_raises_only_protocol_error_for_arbitrary_json_objects(event: Any, channel: Any, data: Any) -> None:
    for data_field in (data, json.dumps(data)):
        message = {"event": event, "channel": channel, "data": data_field}
        try:
            frame = parse_frame(json.dumps(message))
        except ProtocolError:
            continue
        assert frame.event == event
        assert frame.channel == channel
        if isinstance(event, str) and event.startswith("pusher:") and isinstance(data, dict | list):
            assert frame.data == data  # double-encoded objects and arrays come back decoded


@settings(max_examples=200)
@given(
    st.lists(
        st.sampled_from(
            ['{"event":', '"pusher:subscribe"', '"data":', '"{', "[", "]", "{", "}", ",", ":", '"', "\\", "\\u",
             "d800", "1e999", "9" * 5000, "NaN", "-", "null", '"\\"', '"x"', " "]
        ),
        max_size=40,
    )
)  # fmt: skip
def test_parse_frame_raises_only_protocol_error_for_json_like_fragments(parts: list[str]) -> None:
    with contextlib.suppress(ProtocolError):  # anything else fails the test
        parse_frame("".join(parts))


@given(depth=st.integers(1, 5000), opener=st.sampled_from(["[", '{"a":']))
def test_parse_frame_survives_any_nesting_depth(depth: int, opener: str) -> None:
    closer = "]" if opener == "[" else "}"
    nested = opener * depth + "1" + closer * depth
    for text in (
        '{"event":"pusher:ping","data":' + nested + "}",
        json.dumps({"event": "pusher:ping", "data": nested}),
    ):
        with contextlib.suppress(ProtocolError):  # anything else (RecursionError) fails the test
            parse_frame(text)


# --- server frames ---------------------------------------------------------------------------


def test_encode_double_encodes_object_data_as_a_json_string() -> None:
    frame = json.loads(messages.encode("my-event", {"a": [1, 2]}, "my-channel"))
    assert frame == {"event": "my-event", "channel": "my-channel", "data": '{"a":[1,2]}'}


def test_encode_passes_string_data_through_unchanged() -> None:
    frame = json.loads(messages.encode("my-event", '{"already":"encoded"}'))
    assert frame["data"] == '{"already":"encoded"}'
    assert "channel" not in frame


def test_encode_adds_extra_fields() -> None:
    assert json.loads(messages.encode("e", "d", "c", user_id="7"))["user_id"] == "7"


def test_server_frames_are_compact_and_keep_non_ascii() -> None:
    text = messages.encode("e", {"k": "h\u00e9"}, "c")
    assert text == '{"event":"e","channel":"c","data":"{\\"k\\":\\"h\u00e9\\"}"}'


def test_dumps_is_compact() -> None:
    assert messages.dumps({"a": [1, {"b": None}]}) == '{"a":[1,{"b":null}]}'


def test_connection_established_data_is_a_json_string_with_socket_id_and_activity_timeout() -> None:
    frame = json.loads(messages.connection_established("123.456", 30))
    assert frame["event"] == "pusher:connection_established"
    assert isinstance(frame["data"], str)
    assert json.loads(frame["data"]) == {"socket_id": "123.456", "activity_timeout": 30}
    assert "channel" not in frame


def test_error_data_is_an_object_with_code_and_message() -> None:
    frame = json.loads(messages.error(4301, "Too fast"))
    assert frame == {"event": "pusher:error", "data": {"code": 4301, "message": "Too fast"}}


def test_error_without_code_has_null_code() -> None:
    assert json.loads(messages.error(None, "x"))["data"] == {"code": None, "message": "x"}


def test_ping_and_pong_frames() -> None:
    assert json.loads(messages.PING) == {"event": "pusher:ping", "data": "{}"}
    assert json.loads(messages.PONG) == {"event": "pusher:pong", "data": "{}"}


def test_subscription_succeeded_for_a_non_presence_channel_has_empty_object_string_data() -> None:
    frame = json.loads(messages.subscription_succeeded("private-a"))
    assert frame == {"event": "pusher_internal:subscription_succeeded", "channel": "private-a", "data": "{}"}


def test_subscription_succeeded_for_presence_wraps_the_member_list_in_a_string() -> None:
    presence = {"ids": ["1", "2"], "hash": {"1": {"name": "a"}, "2": None}, "count": 2}
    frame = json.loads(messages.subscription_succeeded("presence-a", presence))
    assert frame["channel"] == "presence-a"
    assert isinstance(frame["data"], str)
    assert json.loads(frame["data"]) == {"presence": presence}


def test_subscription_error_data_is_an_object_with_type_error_and_status() -> None:
    frame = json.loads(messages.subscription_error("private-a", "AuthError", "Invalid signature", 401))
    assert frame == {
        "event": "pusher:subscription_error",
        "channel": "private-a",
        "data": {"type": "AuthError", "error": "Invalid signature", "status": 401},
    }


def test_channel_event_keeps_data_exactly_as_published() -> None:
    frame = json.loads(messages.channel_event("my-event", "c", '{"x": 1}'))
    assert frame == {"event": "my-event", "channel": "c", "data": '{"x": 1}'}


def test_channel_event_adds_user_id_only_when_given() -> None:
    assert json.loads(messages.channel_event("client-e", "presence-c", "d", "42"))["user_id"] == "42"
    assert "user_id" not in json.loads(messages.channel_event("client-e", "presence-c", "d"))


@given(data=JSON_VALUES, channel=st.text(max_size=20), event=st.text(min_size=1, max_size=20))
def test_encoded_frames_round_trip_through_json(data: Any, channel: str, event: str) -> None:
    frame = json.loads(messages.encode(event, data, channel))
    assert frame["event"] == event
    assert frame["channel"] == channel
    assert isinstance(frame["data"], str)
    if isinstance(data, str):
        assert frame["data"] == data  # strings are already encoded: passed through
    else:
        assert json.loads(frame["data"]) == data
