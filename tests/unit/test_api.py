"""HTTP API bodies and queries: what is accepted, and the 400/413 refusals."""

from __future__ import annotations

import dataclasses
import json
from typing import Any

import pusher
import pytest
from hypothesis import given
from hypothesis import strategies as st

from clarion.protocol.api import (
    ChannelsQuery,
    Trigger,
    channel_info,
    parse_batch_body,
    parse_channel_query,
    parse_channels_query,
    parse_trigger_body,
)
from clarion.protocol.app import App
from clarion.protocol.errors import ApiError

APP = App(id="3", key="key", secret="secret")


def body(value: Any) -> bytes:
    return json.dumps(value).encode()


def event(**fields: Any) -> dict[str, Any]:
    return {"name": "my-event", "data": "{}", "channels": ["my-channel"], **fields}


def refused(parse: Any, *args: Any, status: int = 400) -> str:
    with pytest.raises(ApiError) as caught:
        parse(*args)
    assert caught.value.status == status
    message: str = caught.value.message
    return message


# --- trigger: accepted -----------------------------------------------------------------------


def test_published_rest_api_body_is_parsed() -> None:
    raw = b'{"name":"foo","channels":["project-3"],"data":"{\\"some\\":\\"data\\"}"}'
    assert parse_trigger_body(raw, APP) == Trigger("foo", '{"some":"data"}', ("project-3",), None, frozenset())


def test_trigger_with_a_single_channel_field_is_parsed() -> None:
    trigger = parse_trigger_body(body({"name": "e", "data": "d", "channel": "private-a"}), APP)
    assert trigger.channels == ("private-a",)


def test_trigger_keeps_data_verbatim() -> None:
    data = '{"b": 2,  "a": "\\u00e9"}'
    assert parse_trigger_body(body(event(data=data)), APP).data == data


def test_trigger_with_socket_id_and_info_is_parsed() -> None:
    trigger = parse_trigger_body(
        body(event(channels=["presence-a"], socket_id="123.456", info="user_count,subscription_count")), APP
    )
    assert trigger.socket_id == "123.456"
    assert trigger.info == frozenset({"user_count", "subscription_count"})


def test_info_attributes_are_trimmed_and_empty_parts_ignored() -> None:
    trigger = parse_trigger_body(body(event(info=" subscription_count , ,")), APP)
    assert trigger.info == frozenset({"subscription_count"})


def test_empty_info_means_no_attributes() -> None:
    assert parse_trigger_body(body(event(info="")), APP).info == frozenset()


def test_duplicate_channels_are_delivered_once_in_first_seen_order() -> None:
    trigger = parse_trigger_body(body(event(channels=["b", "a", "b", "c", "a"])), APP)
    assert trigger.channels == ("b", "a", "c")


def test_channels_list_takes_precedence_over_channel() -> None:
    trigger = parse_trigger_body(body(event(channels=["a", "b"], channel="c")), APP)
    assert trigger.channels == ("a", "b")


def test_exactly_100_channels_are_accepted() -> None:
    channels = [f"c{i}" for i in range(100)]
    assert parse_trigger_body(body(event(channels=channels)), APP).channels == tuple(channels)


def test_trigger_body_from_the_official_sdk_is_parsed() -> None:
    client = pusher.Pusher(app_id="3", key="key", secret="secret")._pusher_client
    request = client.trigger.make_request(["a", "presence-b"], "my-event", {"msg": "h\u00e9llo"}, "1.2")
    trigger = parse_trigger_body(request.body, APP)
    assert trigger.name == "my-event"
    assert trigger.channels == ("a", "presence-b")
    assert json.loads(trigger.data) == {"msg": "h\u00e9llo"}
    assert trigger.socket_id == "1.2"


def test_batch_body_from_the_official_sdk_is_parsed() -> None:
    client = pusher.Pusher(app_id="3", key="key", secret="secret")._pusher_client
    request = client.trigger_batch.make_request(
        [{"channel": "a", "name": "e1", "data": {"x": 1}}, {"channel": "b", "name": "e2", "data": "s"}]
    )
    batch = parse_batch_body(request.body, APP)
    assert [(t.name, t.channels, t.data) for t in batch] == [("e1", ("a",), '{"x": 1}'), ("e2", ("b",), "s")]


# --- trigger: 400 ----------------------------------------------------------------------------


@pytest.mark.parametrize("raw", [b"", b"not json", b"{", b'{"name":', b"\xff\xfe\x00", b"[" * 100_000])
def test_body_that_is_not_json_is_400(raw: bytes) -> None:
    assert "JSON" in refused(parse_trigger_body, raw, APP)


@pytest.mark.parametrize("value", [[], ["my-event"], "x", 1, None])
def test_body_that_is_not_an_object_is_400(value: Any) -> None:
    refused(parse_trigger_body, body(value), APP)


@pytest.mark.parametrize(
    "raw",
    [
        b'{"name":"e","channel":"a","data":"\\ud800"}',
        b'{"name":"\\udc00","channel":"a","data":"d"}',
        b'{"name":"e","channel":"a","data":"\xed\xa0\x80"}',
    ],
)
def test_body_with_a_lone_surrogate_is_400(raw: bytes) -> None:
    assert "not valid JSON" in refused(parse_trigger_body, raw, APP)


def test_body_with_an_escaped_surrogate_pair_is_accepted() -> None:
    trigger = parse_trigger_body(b'{"name":"e","channel":"a","data":"\\ud83d\\ude00"}', APP)
    assert trigger.data == "\U0001f600"


@pytest.mark.parametrize("name", [None, "", 1, ["e"], {"e": 1}])
def test_missing_or_non_string_name_is_400(name: Any) -> None:
    fields = event(name=name)
    if name is None:
        del fields["name"]
    assert "'name'" in refused(parse_trigger_body, body(fields), APP)


def test_name_of_200_characters_is_accepted_and_201_is_400() -> None:
    assert parse_trigger_body(body(event(name="e" * 200)), APP).name == "e" * 200
    assert "200" in refused(parse_trigger_body, body(event(name="e" * 201)), APP)


@pytest.mark.parametrize("data", [None, {"a": 1}, [1], 1, True])
def test_missing_or_non_string_data_is_400(data: Any) -> None:
    fields = event(data=data)
    if data is None:
        del fields["data"]
    assert "'data'" in refused(parse_trigger_body, body(fields), APP)


@pytest.mark.parametrize(
    "fields",
    [
        {"name": "e", "data": "d"},
        {"name": "e", "data": "d", "channel": 1},
        {"name": "e", "data": "d", "channel": None},
        {"name": "e", "data": "d", "channel": ["a"]},
    ],
)
def test_missing_channel_is_400(fields: dict[str, Any]) -> None:
    assert "channel" in refused(parse_trigger_body, body(fields), APP)


@pytest.mark.parametrize("channels", [[], "a", ["a", 1], [None], {"a": 1}, None])
def test_channels_that_is_not_a_non_empty_list_of_strings_is_400(channels: Any) -> None:
    assert "'channels'" in refused(parse_trigger_body, body(event(channels=channels)), APP)


def test_more_than_100_channels_is_400() -> None:
    message = refused(parse_trigger_body, body(event(channels=[f"c{i}" for i in range(101)])), APP)
    assert "100" in message


def test_channel_count_limit_follows_the_app() -> None:
    app = dataclasses.replace(APP, max_channels_per_event=2)
    assert parse_trigger_body(body(event(channels=["a", "b"])), app).channels == ("a", "b")
    refused(parse_trigger_body, body(event(channels=["a", "b", "c"])), app)


@pytest.mark.parametrize("channel", ["", "bad channel", "caf\u00e9", "a/b", "a" * 165, "#server-to-user-"])
def test_bad_channel_name_is_400(channel: str) -> None:
    refused(parse_trigger_body, body(event(channels=["ok", channel])), APP)
    refused(parse_trigger_body, body({"name": "e", "data": "d", "channel": channel}), APP)


def test_channel_name_of_164_characters_is_accepted() -> None:
    assert parse_trigger_body(body(event(channels=["a" * 164])), APP).channels == ("a" * 164,)


def test_server_to_user_channel_is_a_valid_target() -> None:
    assert parse_trigger_body(body(event(channels=["#server-to-user-42"])), APP).channels == ("#server-to-user-42",)


@pytest.mark.parametrize(
    "socket_id", ["", "abc", "1", "1.", ".1", "1.2.3", "1.2\n", " 1.2", "1.2 ", "a.b", 12, 1.2, []]
)
def test_bad_socket_id_is_400(socket_id: Any) -> None:
    assert "socket_id" in refused(parse_trigger_body, body(event(socket_id=socket_id)), APP)


def test_null_socket_id_means_no_exclusion() -> None:
    assert parse_trigger_body(body(event(socket_id=None)), APP).socket_id is None


@pytest.mark.parametrize("info", ["cache", "occupied", "user_count,bogus", "USER_COUNT"])
def test_unknown_info_attribute_is_400(info: str) -> None:
    assert "info" in refused(parse_trigger_body, body(event(channels=["presence-a"], info=info)), APP)


@pytest.mark.parametrize("info", [1, ["user_count"], {"user_count": True}])
def test_non_string_info_is_400(info: Any) -> None:
    refused(parse_trigger_body, body(event(info=info)), APP)


@pytest.mark.parametrize("channels", [["private-a"], ["presence-a", "news"], ["cache-a"]])
def test_user_count_on_a_non_presence_channel_is_400(channels: list[str]) -> None:
    assert "user_count" in refused(parse_trigger_body, body(event(channels=channels, info="user_count")), APP)


def test_user_count_on_presence_channels_is_accepted() -> None:
    trigger = parse_trigger_body(body(event(channels=["presence-a", "presence-cache-b"], info="user_count")), APP)
    assert trigger.info == frozenset({"user_count"})


# --- trigger: 413 ----------------------------------------------------------------------------


@pytest.mark.parametrize("char", ["a", "\u00e9", "\u20ac", "\U0001f600"])  # 1 to 4 bytes in UTF-8
def test_data_of_exactly_the_limit_in_utf8_bytes_is_accepted(char: str) -> None:
    width = len(char.encode())
    data = char * (APP.max_message_size // width) + "a" * (APP.max_message_size % width)
    assert len(data.encode()) == APP.max_message_size == 10240
    assert parse_trigger_body(body(event(data=data)), APP).data == data


@pytest.mark.parametrize("char", ["a", "\u00e9", "\u20ac", "\U0001f600"])
def test_data_one_byte_over_the_limit_is_413(char: str) -> None:
    width = len(char.encode())
    data = char * (APP.max_message_size // width) + "a" * (APP.max_message_size % width) + "a"
    assert len(data.encode()) == APP.max_message_size + 1
    message = refused(parse_trigger_body, body(event(data=data)), APP, status=413)
    assert "10240" in message


def test_data_limit_counts_bytes_not_characters() -> None:
    data = "\u00e9" * 5121  # 5121 characters, 10242 bytes
    refused(parse_trigger_body, body(event(data=data)), APP, status=413)


def test_data_limit_follows_the_app() -> None:
    app = dataclasses.replace(APP, max_message_size=100)
    assert parse_trigger_body(body(event(data="x" * 100)), app).data == "x" * 100
    refused(parse_trigger_body, body(event(data="x" * 101)), app, status=413)


# --- batch -----------------------------------------------------------------------------------


def batch_item(i: int = 0, **fields: Any) -> dict[str, Any]:
    return {"name": f"e{i}", "data": f"d{i}", "channel": f"c{i}", **fields}


def test_batch_is_parsed_in_order() -> None:
    batch = parse_batch_body(
        body({"batch": [batch_item(0), batch_item(1, socket_id="1.2", info="subscription_count")]}), APP
    )
    assert batch == [
        Trigger("e0", "d0", ("c0",), None, frozenset()),
        Trigger("e1", "d1", ("c1",), "1.2", frozenset({"subscription_count"})),
    ]


def test_empty_batch_is_accepted() -> None:
    assert parse_batch_body(body({"batch": []}), APP) == []


def test_batch_of_exactly_10_is_accepted_and_11_is_400() -> None:
    assert len(parse_batch_body(body({"batch": [batch_item(i) for i in range(10)]}), APP)) == 10
    assert "10" in refused(parse_batch_body, body({"batch": [batch_item(i) for i in range(11)]}), APP)


def test_batch_size_limit_follows_the_app() -> None:
    app = dataclasses.replace(APP, max_batch_events=1)
    refused(parse_batch_body, body({"batch": [batch_item(0), batch_item(1)]}), app)


@pytest.mark.parametrize(
    "value", [[], {"batch": {}}, {"batch": "x"}, {"events": []}, {"batch": None}, [batch_item()], "batch"]
)
def test_batch_body_without_a_batch_list_is_400(value: Any) -> None:
    refused(parse_batch_body, body(value), APP)


def test_batch_body_that_is_not_json_is_400() -> None:
    refused(parse_batch_body, b"{batch", APP)


@pytest.mark.parametrize("item", [1, "e", None, [batch_item()]])
def test_batch_item_that_is_not_an_object_is_400(item: Any) -> None:
    refused(parse_batch_body, body({"batch": [batch_item(), item]}), APP)


def test_batch_item_needs_a_single_channel_not_channels() -> None:
    item = {"name": "e", "data": "d", "channels": ["a", "b"]}
    assert "channel" in refused(parse_batch_body, body({"batch": [item]}), APP)


@pytest.mark.parametrize(
    "fields",
    [
        {"name": ""},
        {"data": {"a": 1}},
        {"channel": "bad name"},
        {"socket_id": "x"},
        {"info": "cache"},
        {"info": "user_count"},  # on c0, not a presence channel
    ],
)
def test_invalid_batch_item_is_400(fields: dict[str, Any]) -> None:
    refused(parse_batch_body, body({"batch": [batch_item(), batch_item(1, **fields)]}), APP)


def test_batch_item_data_over_the_limit_is_413() -> None:
    items = [batch_item(), batch_item(1, data="x" * 10241)]
    refused(parse_batch_body, body({"batch": items}), APP, status=413)


def test_batch_item_data_at_the_limit_is_accepted() -> None:
    assert parse_batch_body(body({"batch": [batch_item(data="x" * 10240)]}), APP)[0].data == "x" * 10240


# --- GET /channels ---------------------------------------------------------------------------


def test_channels_query_without_parameters() -> None:
    assert parse_channels_query({}) == ChannelsQuery("", frozenset())


def test_channels_query_with_prefix_and_subscription_count() -> None:
    query = parse_channels_query({"filter_by_prefix": "private-", "info": "subscription_count"})
    assert query == ChannelsQuery("private-", frozenset({"subscription_count"}))


@pytest.mark.parametrize("prefix", ["presence-", "presence-room-", "presence-cache-"])
def test_channels_query_user_count_with_a_presence_prefix_is_accepted(prefix: str) -> None:
    query = parse_channels_query({"filter_by_prefix": prefix, "info": "user_count"})
    assert query.info == frozenset({"user_count"})


@pytest.mark.parametrize("params", [{}, {"filter_by_prefix": "private-"}, {"filter_by_prefix": "presence"}])
def test_channels_query_user_count_without_a_presence_prefix_is_400(params: dict[str, str]) -> None:
    assert "user_count" in refused(parse_channels_query, {**params, "info": "user_count"})


@pytest.mark.parametrize("info", ["cache", "occupied", "bogus", "user_count,bogus"])
def test_channels_query_unknown_info_attribute_is_400(info: str) -> None:
    refused(parse_channels_query, {"filter_by_prefix": "presence-", "info": info})


# --- GET /channels/{name} --------------------------------------------------------------------


def test_channel_query_without_info() -> None:
    assert parse_channel_query("news", {}, APP) == frozenset()


@pytest.mark.parametrize("info", ["subscription_count", "cache", "subscription_count,cache"])
def test_channel_query_accepts_subscription_count_and_cache(info: str) -> None:
    assert parse_channel_query("cache-news", {"info": info}, APP) == frozenset(info.split(","))


def test_channel_query_user_count_on_a_presence_channel_is_accepted() -> None:
    assert parse_channel_query("presence-a", {"info": "user_count"}, APP) == frozenset({"user_count"})


@pytest.mark.parametrize("channel", ["news", "private-a", "private-encrypted-a", "cache-a"])
def test_channel_query_user_count_on_a_non_presence_channel_is_400(channel: str) -> None:
    assert "user_count" in refused(parse_channel_query, channel, {"info": "user_count"}, APP)


@pytest.mark.parametrize("info", ["occupied", "members", "bogus"])
def test_channel_query_unknown_info_attribute_is_400(info: str) -> None:
    refused(parse_channel_query, "news", {"info": info}, APP)


@pytest.mark.parametrize("channel", ["", "bad name", "a" * 165, "a#b"])
def test_channel_query_for_an_invalid_channel_name_is_400(channel: str) -> None:
    refused(parse_channel_query, channel, {}, APP)


def test_channel_query_name_limit_follows_the_app() -> None:
    app = dataclasses.replace(APP, max_channel_name_length=200)
    assert parse_channel_query("a" * 200, {}, app) == frozenset()


# --- channel_info ----------------------------------------------------------------------------


def test_single_channel_answer_always_says_whether_it_is_occupied() -> None:
    assert channel_info(frozenset(), 3, None, always_occupied=True) == {"occupied": True}
    assert channel_info(frozenset(), 0, None, always_occupied=True) == {"occupied": False}


def test_listing_answer_has_no_occupied_field() -> None:
    assert channel_info(frozenset(), 3, None, always_occupied=False) == {}


def test_channel_info_adds_requested_counts() -> None:
    info = frozenset({"subscription_count", "user_count"})
    assert channel_info(info, 5, 2, always_occupied=True) == {
        "occupied": True,
        "subscription_count": 5,
        "user_count": 2,
    }


def test_channel_info_leaves_out_counts_not_requested() -> None:
    assert channel_info(frozenset({"user_count"}), 5, 2, always_occupied=False) == {"user_count": 2}
    assert channel_info(frozenset({"subscription_count"}), 5, 2, always_occupied=False) == {"subscription_count": 5}


def test_channel_info_leaves_out_user_count_when_there_is_none() -> None:
    assert channel_info(frozenset({"user_count"}), 5, None, always_occupied=False) == {}


# --- properties ------------------------------------------------------------------------------

JSON_VALUES = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=10), inner, max_size=4),
    max_leaves=15,
)


@given(st.one_of(st.binary(max_size=200), JSON_VALUES.map(lambda v: json.dumps(v).encode())))
def test_body_parsers_raise_only_api_error(raw: bytes) -> None:
    for parse in (parse_trigger_body, parse_batch_body):
        try:
            parse(raw, APP)
        except ApiError as exc:
            assert exc.status in (400, 413)


@given(
    name=st.one_of(st.text(max_size=30), JSON_VALUES),
    data=st.one_of(st.text(max_size=30), JSON_VALUES),
    channels=st.one_of(st.lists(st.text(max_size=10), max_size=5), JSON_VALUES),
    socket_id=st.one_of(st.none(), st.text(max_size=10), JSON_VALUES),
    info=st.one_of(st.none(), st.sampled_from(["user_count", "subscription_count", "cache", ""]), JSON_VALUES),
)
def test_trigger_parser_raises_only_api_error_and_returns_valid_triggers(
    name: Any, data: Any, channels: Any, socket_id: Any, info: Any
) -> None:
    raw = body({"name": name, "data": data, "channels": channels, "socket_id": socket_id, "info": info})
    try:
        trigger = parse_trigger_body(raw, APP)
    except ApiError as exc:
        assert exc.status in (400, 413)
        return
    assert trigger.name == name and trigger.data == data
    assert len(set(trigger.channels)) == len(trigger.channels) > 0
