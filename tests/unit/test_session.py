"""Session: one connection's protocol state, driven with frames and a fake clock."""

from __future__ import annotations

import dataclasses
import hashlib
import hmac
import json
from typing import Any

import pusher
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from clarion.protocol import messages
from clarion.protocol.app import App, ClientEvents
from clarion.protocol.errors import ErrorCode
from clarion.protocol.session import Close, Join, Leave, Member, Publish, Send, Session

KEY = "app-key"
SECRET = "app-secret"
SOCKET = "123.456"
OTHER_SOCKET = "123.457"
T0 = 1000.0

APP = App(id="1", key=KEY, secret=SECRET)


def make(now: float = T0, pong_timeout: float = 30.0, **app_fields: Any) -> Session:
    return Session(dataclasses.replace(APP, **app_fields), SOCKET, now, pong_timeout=pong_timeout)


def sign(channel: str, channel_data: str | None = None, socket_id: str = SOCKET, secret: str = SECRET) -> str:
    """The auth token an app's auth endpoint would return, computed here independently."""
    message = f"{socket_id}:{channel}" if channel_data is None else f"{socket_id}:{channel}:{channel_data}"
    return f"{KEY}:{hmac.new(secret.encode(), message.encode(), hashlib.sha256).hexdigest()}"


def frame(event: str, data: Any = None, channel: str | None = None) -> str:
    message: dict[str, Any] = {"event": event}
    if data is not None:
        message["data"] = data
    if channel is not None:
        message["channel"] = channel
    return json.dumps(message)


def subscribe_frame(channel: str, auth: Any = None, channel_data: Any = None, *, signed: bool = False) -> str:
    data: dict[str, Any] = {"channel": channel}
    if signed:
        auth = sign(channel, channel_data)
    if auth is not None:
        data["auth"] = auth
    if channel_data is not None:
        data["channel_data"] = channel_data
    return frame("pusher:subscribe", data)


def presence_data(user_id: Any = "1", user_info: Any = None, **extra: Any) -> str:
    payload: dict[str, Any] = {"user_id": user_id, **extra}
    if user_info is not None:
        payload["user_info"] = user_info
    return json.dumps(payload)


def only(actions: list[Any]) -> Any:
    assert len(actions) == 1, actions
    return actions[0]


def sent(actions: list[Any]) -> dict[str, Any]:
    action = only(actions)
    assert isinstance(action, Send), action
    parsed: dict[str, Any] = json.loads(action.frame)
    return parsed


def assert_refused(actions: list[Any], channel: str, kind: str, status: int) -> dict[str, Any]:
    action = only(actions)
    assert isinstance(action, Send)
    assert action.refused == kind
    assert action.error_code is None
    message: dict[str, Any] = json.loads(action.frame)
    assert message["event"] == "pusher:subscription_error"
    assert message["channel"] == channel
    assert message["data"]["type"] == kind
    assert message["data"]["status"] == status
    assert isinstance(message["data"]["error"], str) and message["data"]["error"]
    return message


def assert_error(actions: list[Any], code: int) -> str:
    action = only(actions)
    assert isinstance(action, Send)
    assert action.error_code == code
    assert action.refused is None
    message = json.loads(action.frame)
    assert message["event"] == "pusher:error"
    assert message["data"]["code"] == code
    text: str = message["data"]["message"]
    return text


def assert_usable(session: Session, now: float = T0) -> None:
    assert sent(session.receive(frame("pusher:ping"), now))["event"] == "pusher:pong"
    assert session.receive(subscribe_frame("still-usable"), now) == [Join("still-usable", None)]


def subscribed(channel: str, now: float = T0, channel_data: str | None = None, **app_fields: Any) -> Session:
    session = make(now, **app_fields)
    needs_auth = channel.startswith(("private-", "presence-"))
    actions = session.receive(subscribe_frame(channel, channel_data=channel_data, signed=needs_auth), now)
    assert isinstance(only(actions), Join)
    return session


# --- hello -----------------------------------------------------------------------------------


def test_hello_is_connection_established_with_socket_id_and_activity_timeout() -> None:
    message = json.loads(make(activity_timeout=45).hello())
    assert message["event"] == "pusher:connection_established"
    assert json.loads(message["data"]) == {"socket_id": SOCKET, "activity_timeout": 45}


# --- subscribe: public -----------------------------------------------------------------------


@pytest.mark.parametrize("channel", ["my-channel", "cache-news", "a", "x" * 164])
def test_public_subscription_joins_without_auth(channel: str) -> None:
    session = make()
    assert session.receive(subscribe_frame(channel), T0) == [Join(channel, None)]
    assert session.channels == {channel: None}


def test_double_encoded_subscribe_data_is_accepted() -> None:
    session = make()
    text = frame("pusher:subscribe", json.dumps({"channel": "news"}))
    assert session.receive(text, T0) == [Join("news", None)]


def test_auth_sent_for_a_public_channel_is_ignored() -> None:
    assert make().receive(subscribe_frame("news", auth="garbage"), T0) == [Join("news", None)]


# --- subscribe: private and encrypted --------------------------------------------------------


@pytest.mark.parametrize(
    "channel", ["private-a", "private-cache-a", "private-encrypted-a", "private-encrypted-cache-a"]
)
def test_private_subscription_with_valid_auth_joins(channel: str) -> None:
    session = make()
    assert session.receive(subscribe_frame(channel, signed=True), T0) == [Join(channel, None)]
    assert channel in session.channels


@pytest.mark.parametrize("channel", ["private-a", "private-encrypted-a", "presence-a"])
@pytest.mark.parametrize("auth", [None, "", 12, {"auth": "x"}])
def test_missing_auth_is_refused_with_subscription_error(channel: str, auth: Any) -> None:
    session = make()
    channel_data = presence_data() if channel.startswith("presence-") else None
    actions = session.receive(subscribe_frame(channel, auth=auth, channel_data=channel_data), T0)
    assert_refused(actions, channel, "AuthError", 401)
    assert session.channels == {}
    assert_usable(session)


@pytest.mark.parametrize(
    "auth",
    [
        sign("private-a", secret="wrong-secret"),
        sign("private-b"),
        sign("private-a", socket_id=OTHER_SOCKET),
        sign("private-a").replace(KEY, "other-key"),
        sign("private-a")[:-1] + ("0" if sign("private-a")[-1] != "0" else "1"),
        KEY + ":",
        "not-even-the-shape",
    ],
)
def test_forged_signature_is_refused_with_subscription_error(auth: str) -> None:
    session = make()
    message = assert_refused(
        session.receive(subscribe_frame("private-a", auth=auth), T0), "private-a", "AuthError", 401
    )
    assert "signature" in message["data"]["error"].lower()
    assert session.channels == {}
    assert_usable(session)


def test_encrypted_channel_with_forged_auth_is_refused() -> None:
    session = make()
    actions = session.receive(subscribe_frame("private-encrypted-a", auth=sign("private-a")), T0)
    assert_refused(actions, "private-encrypted-a", "AuthError", 401)


# --- subscribe: the official SDK's auth responses --------------------------------------------


def sdk() -> pusher.Pusher:
    return pusher.Pusher(
        app_id="1", key=KEY, secret=SECRET, encryption_master_key_base64="MDEyMzQ1Njc4OTAxMjM0NTY3ODkwMTIzNDU2Nzg5MDE="
    )


@pytest.mark.parametrize("channel", ["private-orders.1", "private-encrypted-dm"])
def test_sdk_auth_for_private_and_encrypted_channels_is_accepted(channel: str) -> None:
    response = sdk().authenticate(channel=channel, socket_id=SOCKET)
    session = make()
    assert session.receive(subscribe_frame(channel, auth=response["auth"]), T0) == [Join(channel, None)]


def test_sdk_auth_for_a_presence_channel_is_accepted_with_an_integer_user_id() -> None:
    response = sdk().authenticate(
        channel="presence-room", socket_id=SOCKET, custom_data={"user_id": 42, "user_info": {"name": "Ada"}}
    )
    session = make()
    actions = session.receive(subscribe_frame("presence-room", response["auth"], response["channel_data"]), T0)
    assert actions == [Join("presence-room", Member("42", {"name": "Ada"}))]


def test_sdk_auth_issued_for_another_socket_is_refused() -> None:
    response = sdk().authenticate(channel="private-a", socket_id=OTHER_SOCKET)
    actions = make().receive(subscribe_frame("private-a", auth=response["auth"]), T0)
    assert_refused(actions, "private-a", "AuthError", 401)


# --- subscribe: presence ---------------------------------------------------------------------


def test_presence_subscription_joins_with_the_member() -> None:
    session = make()
    data = presence_data("7", {"name": "Ada"})
    assert session.receive(subscribe_frame("presence-a", channel_data=data, signed=True), T0) == [
        Join("presence-a", Member("7", {"name": "Ada"}))
    ]
    assert session.channels["presence-a"] == Member("7", {"name": "Ada"})


def test_presence_integer_user_id_becomes_a_string() -> None:
    actions = make().receive(subscribe_frame("presence-a", channel_data=presence_data(10), signed=True), T0)
    assert only(actions).member == Member("10", None)


def test_presence_member_without_user_info_has_none() -> None:
    actions = make().receive(subscribe_frame("presence-cache-a", channel_data=presence_data("u"), signed=True), T0)
    assert only(actions) == Join("presence-cache-a", Member("u", None))


def test_presence_without_channel_data_is_refused() -> None:
    session = make()
    actions = session.receive(subscribe_frame("presence-a", auth=sign("presence-a")), T0)
    assert_refused(actions, "presence-a", "AuthError", 401)
    assert_usable(session)


def test_presence_channel_data_as_an_object_instead_of_a_string_is_refused() -> None:
    data = {"user_id": "1"}
    actions = make().receive(
        subscribe_frame("presence-a", auth=sign("presence-a", json.dumps(data)), channel_data=data), T0
    )
    assert_refused(actions, "presence-a", "AuthError", 401)


def test_presence_channel_data_changed_after_signing_is_refused() -> None:
    auth = sign("presence-a", presence_data("1"))
    actions = make().receive(subscribe_frame("presence-a", auth=auth, channel_data=presence_data("2")), T0)
    assert_refused(actions, "presence-a", "AuthError", 401)


def test_presence_auth_signed_without_channel_data_is_refused() -> None:
    actions = make().receive(subscribe_frame("presence-a", auth=sign("presence-a"), channel_data=presence_data()), T0)
    assert_refused(actions, "presence-a", "AuthError", 401)


@pytest.mark.parametrize(
    "channel_data",
    [
        presence_data(""),  # empty user id
        presence_data(None),
        json.dumps({"user_info": {}}),  # no user id
        presence_data(True),  # bools are not ids
        presence_data(1.5),
        presence_data(["1"]),
        presence_data({"id": "1"}),
        presence_data("u" * 129),
        "not json",
        "{",
        "[]",
        '"1"',
        "1",
        "",
    ],
)
def test_invalid_presence_channel_data_is_refused_even_when_signed(channel_data: str) -> None:
    session = make()
    actions = session.receive(subscribe_frame("presence-a", channel_data=channel_data, signed=True), T0)
    assert_refused(actions, "presence-a", "InvalidChannelData", 400)
    assert session.channels == {}
    assert_usable(session)


def test_presence_user_id_of_128_characters_is_accepted() -> None:
    actions = make().receive(subscribe_frame("presence-a", channel_data=presence_data("u" * 128), signed=True), T0)
    assert only(actions).member.user_id == "u" * 128


def user_info_of(size: int, char: str = "a") -> dict[str, str]:
    """A user_info whose compact JSON encoding is exactly ``size`` bytes of UTF-8."""
    overhead = len(b'{"n":""}')
    width = len(char.encode())
    assert (size - overhead) % width == 0
    info = {"n": char * ((size - overhead) // width)}
    assert len(json.dumps(info, separators=(",", ":"), ensure_ascii=False).encode()) == size
    return info


@pytest.mark.parametrize("char", ["a", "\u00e9"])  # 1 and 2 bytes in UTF-8
def test_presence_user_info_of_exactly_1024_bytes_is_accepted(char: str) -> None:
    info = user_info_of(1024, char)
    actions = make().receive(subscribe_frame("presence-a", channel_data=presence_data("1", info), signed=True), T0)
    assert only(actions) == Join("presence-a", Member("1", info))


@pytest.mark.parametrize(("char", "size"), [("a", 1025), ("\u00e9", 1026)])
def test_presence_user_info_over_1024_bytes_is_refused(char: str, size: int) -> None:
    info = user_info_of(size, char)
    assert len(info["n"]) < 1024  # over in bytes, not in characters, for the two-byte case
    actions = make().receive(subscribe_frame("presence-a", channel_data=presence_data("1", info), signed=True), T0)
    message = assert_refused(actions, "presence-a", "InvalidChannelData", 400)
    assert "1024" in message["data"]["error"]


def test_presence_user_info_limit_follows_the_app() -> None:
    info = user_info_of(20)
    ok = make(max_presence_user_info=20).receive(
        subscribe_frame("presence-a", channel_data=presence_data("1", info), signed=True), T0
    )
    assert isinstance(only(ok), Join)
    too_big = make(max_presence_user_info=19).receive(
        subscribe_frame("presence-a", channel_data=presence_data("1", info), signed=True), T0
    )
    assert_refused(too_big, "presence-a", "InvalidChannelData", 400)


# --- subscribe: names, limits, user channels, malformed --------------------------------------


@pytest.mark.parametrize("channel", ["", "bad channel", "private-a#b", "caf\u00e9", "a" * 165])
def test_invalid_channel_name_is_refused_with_subscription_error(channel: str) -> None:
    session = make()
    message = assert_refused(session.receive(subscribe_frame(channel), T0), channel[:164], "InvalidChannel", 400)
    assert len(message["channel"]) <= 164
    assert session.channels == {}
    assert_usable(session)


def test_channel_name_limit_follows_the_app() -> None:
    assert make(max_channel_name_length=10).receive(subscribe_frame("a" * 10), T0) == [Join("a" * 10, None)]
    assert_refused(
        make(max_channel_name_length=10).receive(subscribe_frame("a" * 11), T0), "a" * 10, "InvalidChannel", 400
    )


@pytest.mark.parametrize("channel", ["#server-to-user-1", "#server-to-user-alice"])
def test_user_channel_subscription_is_refused(channel: str) -> None:
    session = make()
    actions = session.receive(subscribe_frame(channel, auth=sign(channel)), T0)
    assert_refused(actions, channel, "AuthError", 403)
    assert session.channels == {}


@pytest.mark.parametrize(
    "data", [None, "a-string", 1, [], {"auth": "x"}, {"channel": 1}, {"channel": None}, {"channel": ["a"]}]
)
def test_subscribe_without_a_string_channel_is_a_protocol_error(data: Any) -> None:
    session = make()
    text = json.dumps({"event": "pusher:subscribe", "data": data})
    assert_error(session.receive(text, T0), ErrorCode.RECONNECT)
    assert_usable(session)


def test_resubscribing_is_idempotent() -> None:
    session = make()
    data = presence_data("1", {"a": 1})
    first = session.receive(subscribe_frame("presence-a", channel_data=data, signed=True), T0)
    second = session.receive(subscribe_frame("presence-a", channel_data=data, signed=True), T0)
    assert first == second == [Join("presence-a", Member("1", {"a": 1}))]
    assert list(session.channels) == ["presence-a"]


def test_resubscribing_keeps_the_first_member() -> None:
    session = make()
    session.receive(subscribe_frame("presence-a", channel_data=presence_data("1"), signed=True), T0)
    again = session.receive(subscribe_frame("presence-a", channel_data=presence_data("2"), signed=True), T0)
    assert again == [Join("presence-a", Member("1", None))]
    assert session.channels["presence-a"] == Member("1", None)


def test_resubscribing_when_at_the_channel_limit_still_succeeds() -> None:
    session = make(max_channels_per_connection=2)
    session.receive(subscribe_frame("a"), T0)
    session.receive(subscribe_frame("b"), T0)
    assert session.receive(subscribe_frame("b"), T0) == [Join("b", None)]


def test_channel_limit_per_connection_is_enforced_at_the_edge() -> None:
    session = make()
    assert APP.max_channels_per_connection == 100
    for i in range(100):
        assert session.receive(subscribe_frame(f"c{i}"), T0) == [Join(f"c{i}", None)]
    assert_refused(session.receive(subscribe_frame("c100"), T0), "c100", "LimitReached", 429)
    assert len(session.channels) == 100
    # Leaving one makes room for one.
    assert session.receive(frame("pusher:unsubscribe", {"channel": "c0"}), T0) == [Leave("c0", None)]
    assert session.receive(subscribe_frame("c100"), T0) == [Join("c100", None)]
    assert_refused(session.receive(subscribe_frame("c101"), T0), "c101", "LimitReached", 429)


def test_channel_limit_follows_the_app() -> None:
    session = make(max_channels_per_connection=1)
    assert session.receive(subscribe_frame("a"), T0) == [Join("a", None)]
    assert_refused(session.receive(subscribe_frame("private-b", signed=True), T0), "private-b", "LimitReached", 429)


# --- unsubscribe -----------------------------------------------------------------------------


def test_unsubscribe_leaves_with_the_member() -> None:
    session = subscribed("presence-a", channel_data=presence_data("9", {"x": 1}))
    actions = session.receive(frame("pusher:unsubscribe", {"channel": "presence-a"}), T0)
    assert actions == [Leave("presence-a", Member("9", {"x": 1}))]
    assert session.channels == {}


def test_unsubscribe_from_a_channel_not_subscribed_does_nothing() -> None:
    session = subscribed("news")
    assert session.receive(frame("pusher:unsubscribe", {"channel": "other"}), T0) == []
    assert session.channels == {"news": None}


def test_unsubscribe_twice_leaves_once() -> None:
    session = subscribed("news")
    assert session.receive(frame("pusher:unsubscribe", {"channel": "news"}), T0) == [Leave("news", None)]
    assert session.receive(frame("pusher:unsubscribe", {"channel": "news"}), T0) == []


def test_unsubscribe_without_channel_is_a_protocol_error() -> None:
    assert_error(make().receive(frame("pusher:unsubscribe", {}), T0), ErrorCode.RECONNECT)


def test_resubscribe_after_unsubscribe_needs_auth_again() -> None:
    session = subscribed("private-a")
    session.receive(frame("pusher:unsubscribe", {"channel": "private-a"}), T0)
    assert_refused(
        session.receive(subscribe_frame("private-a", auth="app-key:forged"), T0), "private-a", "AuthError", 401
    )


# --- ping, pong, unknown and malformed frames ------------------------------------------------


def test_ping_is_answered_with_pong() -> None:
    actions = make().receive(frame("pusher:ping", {}), T0)
    assert actions == [Send(messages.PONG)]
    assert json.loads(only(actions).frame)["event"] == "pusher:pong"


def test_pong_needs_no_answer() -> None:
    assert make().receive(frame("pusher:pong", {}), T0) == []


@pytest.mark.parametrize(
    "event", ["pusher:unknown", "pusher:signin_success", "my-event", "pusher_internal:x", "Client-x"]
)
def test_unknown_event_is_a_4200_protocol_error_and_the_session_stays_usable(event: str) -> None:
    session = make()
    message = assert_error(session.receive(frame(event, {}), T0), ErrorCode.RECONNECT)
    assert "Unsupported" in message
    assert_usable(session)


def test_unknown_event_name_is_cut_in_the_error_message() -> None:
    message = assert_error(make().receive(frame("x" * 10_000), T0), ErrorCode.RECONNECT)
    assert len(message) < 200


@pytest.mark.parametrize("text", ["", "nope", "[]", '{"event":""}', '{"event":"pusher:subscribe","data":"{"}'])
def test_malformed_frame_is_a_4200_protocol_error_and_the_session_stays_usable(text: str) -> None:
    session = make()
    assert_error(session.receive(text, T0), ErrorCode.RECONNECT)
    assert_usable(session)


def test_frame_with_a_lone_surrogate_in_the_auth_is_a_protocol_error() -> None:
    session = make()
    text = '{"event":"pusher:subscribe","data":{"channel":"private-a","auth":"\\ud800"}}'
    assert_error(session.receive(text, T0), ErrorCode.RECONNECT)
    assert_usable(session)


# --- client events ---------------------------------------------------------------------------


def client_event(channel: str | None = "private-a", event: str = "client-typing", data: Any = "{}") -> str:
    message: dict[str, Any] = {"event": event, "data": data}
    if channel is not None:
        message["channel"] = channel
    return json.dumps(message)


def test_client_event_on_a_subscribed_private_channel_is_published() -> None:
    session = subscribed("private-a")
    assert session.receive(client_event(data='{"x":1}'), T0) == [Publish("private-a", "client-typing", '{"x":1}', None)]


def test_client_event_on_a_presence_channel_carries_the_senders_user_id() -> None:
    session = subscribed("presence-a", channel_data=presence_data(5))
    assert session.receive(client_event("presence-a"), T0) == [Publish("presence-a", "client-typing", "{}", "5")]


def test_client_event_object_data_is_published_as_compact_json() -> None:
    session = subscribed("private-a")
    publish = only(session.receive(client_event(data={"a": [1, "\u00e9"]}), T0))
    assert publish.data == '{"a":[1,"\u00e9"]}'


def test_client_event_without_data_is_published_as_null() -> None:
    session = subscribed("private-a")
    publish = only(session.receive(json.dumps({"event": "client-x", "channel": "private-a"}), T0))
    assert publish.data == "null"


def test_client_events_disabled_are_refused_with_4301() -> None:
    session = subscribed("private-a", client_events=ClientEvents.NONE)
    message = assert_error(session.receive(client_event(), T0), ErrorCode.CLIENT_EVENT_REJECTED)
    assert "disabled" in message


def test_client_event_from_a_socket_not_subscribed_is_refused_under_members() -> None:
    session = make()
    assert session.app.client_events is ClientEvents.MEMBERS
    assert_error(session.receive(client_event("private-a"), T0), ErrorCode.UNAUTHORIZED)
    assert_usable(session)


def test_client_event_from_a_socket_not_subscribed_is_allowed_under_all() -> None:
    session = make(client_events=ClientEvents.ALL)
    assert session.receive(client_event("presence-a"), T0) == [Publish("presence-a", "client-typing", "{}", None)]


@pytest.mark.parametrize("mode", [ClientEvents.MEMBERS, ClientEvents.ALL])
@pytest.mark.parametrize("channel", ["private-encrypted-a", "private-encrypted-cache-a"])
def test_client_event_on_an_encrypted_channel_is_refused(mode: ClientEvents, channel: str) -> None:
    session = subscribed(channel, client_events=mode)
    message = assert_error(session.receive(client_event(channel), T0), ErrorCode.CLIENT_EVENT_REJECTED)
    assert "encrypted" in message


@pytest.mark.parametrize("mode", [ClientEvents.MEMBERS, ClientEvents.ALL])
@pytest.mark.parametrize("channel", ["news", "cache-news"])
def test_client_event_on_a_public_channel_is_refused(mode: ClientEvents, channel: str) -> None:
    session = subscribed(channel, client_events=mode)
    message = assert_error(session.receive(client_event(channel), T0), ErrorCode.CLIENT_EVENT_REJECTED)
    assert "private and presence" in message


def test_client_event_on_a_user_channel_is_refused() -> None:
    session = make(client_events=ClientEvents.ALL)
    assert_error(session.receive(client_event("#server-to-user-1"), T0), ErrorCode.CLIENT_EVENT_REJECTED)


def test_client_event_without_channel_is_a_4200_protocol_error() -> None:
    assert_error(subscribed("private-a").receive(client_event(None), T0), ErrorCode.RECONNECT)


def test_client_event_name_of_200_characters_is_accepted_and_201_refused() -> None:
    session = subscribed("private-a")
    name = "client-" + "x" * 193
    assert len(name) == 200
    assert isinstance(only(session.receive(client_event(event=name), T0)), Publish)
    message = assert_error(session.receive(client_event(event=name + "x"), T0), ErrorCode.CLIENT_EVENT_REJECTED)
    assert "200" in message


@pytest.mark.parametrize("char", ["a", "\u00e9", "\U0001f600"])  # 1, 2 and 4 bytes in UTF-8
def test_client_event_data_at_the_byte_limit_passes_and_one_byte_more_is_refused(char: str) -> None:
    limit = APP.max_message_size
    assert limit == 10 * 1024
    width = len(char.encode())
    session = subscribed("private-a")
    at_limit = char * (limit // width) + "a" * (limit % width)
    assert len(at_limit.encode()) == limit
    assert only(session.receive(client_event(data=at_limit), T0)).data == at_limit
    over = at_limit + "a"
    message = assert_error(session.receive(client_event(data=over), T0 + 1), ErrorCode.CLIENT_EVENT_REJECTED)
    assert str(limit) in message


def test_client_event_object_data_is_measured_as_its_compact_json() -> None:
    session = subscribed("private-a", max_message_size=20)
    fits = {"k": "x" * 12}  # {"k":"xxxxxxxxxxxx"} is 20 bytes compact, more with json.dumps' spaces
    assert len(json.dumps(fits)) > 20
    assert isinstance(only(session.receive(client_event(data=fits), T0)), Publish)
    assert_error(session.receive(client_event(data={"k": "x" * 13}), T0 + 1), ErrorCode.CLIENT_EVENT_REJECTED)


def test_client_event_rate_limit_allows_10_then_refuses_the_11th_with_4301() -> None:
    session = subscribed("private-a")
    assert APP.client_event_rate == 10
    for _ in range(10):
        assert isinstance(only(session.receive(client_event(), T0)), Publish)
    message = assert_error(session.receive(client_event(), T0), ErrorCode.CLIENT_EVENT_REJECTED)
    assert "rate limit" in message
    assert_usable(session, T0)


def test_client_event_rate_limit_refills_as_time_passes() -> None:
    session = subscribed("private-a")
    for _ in range(10):
        session.receive(client_event(), T0)
    assert_error(session.receive(client_event(), T0 + 0.05), ErrorCode.CLIENT_EVENT_REJECTED)
    # A tenth of a second buys one more event, and only one.
    assert isinstance(only(session.receive(client_event(), T0 + 0.15)), Publish)
    assert_error(session.receive(client_event(), T0 + 0.15), ErrorCode.CLIENT_EVENT_REJECTED)
    # A full second (or more) refills to the burst of 10, not beyond.
    later = T0 + 60
    for _ in range(10):
        assert isinstance(only(session.receive(client_event(), later)), Publish)
    assert_error(session.receive(client_event(), later), ErrorCode.CLIENT_EVENT_REJECTED)


def test_client_events_at_10_per_second_are_never_refused() -> None:
    session = subscribed("private-a")
    for i in range(100):
        assert isinstance(only(session.receive(client_event(), T0 + i * 0.1)), Publish), i


def test_client_event_rate_follows_the_app() -> None:
    session = subscribed("private-a", client_event_rate=2)
    assert isinstance(only(session.receive(client_event(), T0)), Publish)
    assert isinstance(only(session.receive(client_event(), T0)), Publish)
    assert_error(session.receive(client_event(), T0), ErrorCode.CLIENT_EVENT_REJECTED)


def test_rate_limit_is_per_session() -> None:
    first = subscribed("private-a")
    for _ in range(10):
        first.receive(client_event(), T0)
    assert_error(first.receive(client_event(), T0), ErrorCode.CLIENT_EVENT_REJECTED)
    assert isinstance(only(subscribed("private-a").receive(client_event(), T0)), Publish)


# --- keep-alive ------------------------------------------------------------------------------


def test_no_ping_before_activity_timeout() -> None:
    session = make(activity_timeout=30)
    assert session.tick(T0) == []
    assert session.tick(T0 + 29.999) == []


def test_ping_at_activity_timeout() -> None:
    session = make(activity_timeout=30)
    assert session.tick(T0 + 30) == [Send(messages.PING)]
    assert json.loads(messages.PING)["event"] == "pusher:ping"


def test_ping_is_sent_once_while_waiting_for_the_answer() -> None:
    session = make(activity_timeout=30, pong_timeout=10)
    assert session.tick(T0 + 30) == [Send(messages.PING)]
    assert session.tick(T0 + 31) == []
    assert session.tick(T0 + 39.999) == []


def test_close_4201_after_pong_timeout_without_activity() -> None:
    session = make(activity_timeout=30, pong_timeout=10)
    session.tick(T0 + 30)
    assert session.tick(T0 + 40) == [Close(ErrorCode.PONG_NOT_RECEIVED, "Pong reply not received")]
    assert only(session.tick(T0 + 40)).code == 4201


def test_pong_timeout_is_counted_from_when_the_ping_was_sent() -> None:
    session = make(activity_timeout=30, pong_timeout=10)
    assert session.tick(T0 + 50) == [Send(messages.PING)]  # ticked late
    assert session.tick(T0 + 59) == []
    assert isinstance(only(session.tick(T0 + 60)), Close)


@pytest.mark.parametrize(
    "text", [frame("pusher:pong"), frame("pusher:ping"), subscribe_frame("news"), "not json", frame("pusher:what")]
)
def test_any_received_frame_cancels_the_pending_close(text: str) -> None:
    session = make(activity_timeout=30, pong_timeout=10)
    session.tick(T0 + 30)
    session.receive(text, T0 + 35)
    assert session.tick(T0 + 40) == []
    assert session.tick(T0 + 64.9) == []  # the next ping is due 30 s after the last frame
    assert session.tick(T0 + 65) == [Send(messages.PING)]


def test_any_received_frame_delays_the_next_ping() -> None:
    session = make(activity_timeout=30)
    session.receive(frame("pusher:pong"), T0 + 20)
    assert session.tick(T0 + 45) == []
    assert session.tick(T0 + 50) == [Send(messages.PING)]


def test_activity_timeout_follows_the_app() -> None:
    session = make(activity_timeout=5)
    assert session.tick(T0 + 4) == []
    assert session.tick(T0 + 5) == [Send(messages.PING)]


# --- properties ------------------------------------------------------------------------------

CHANNELS = st.sampled_from(
    ["news", "private-a", "private-encrypted-a", "presence-a", "#server-to-user-1", "", "bad name", "x" * 200]
)
DATA = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(max_size=10),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner, max_size=3),
    max_leaves=10,
)


@st.composite
def frames(draw: st.DrawFn) -> str:
    kind = draw(st.integers(0, 5))
    if kind == 0:
        return draw(st.text(max_size=200))
    channel = draw(CHANNELS)
    if kind == 1:
        data: dict[str, Any] = {"channel": channel}
        if draw(st.booleans()):
            valid = st.sampled_from([sign(channel), sign(channel, presence_data("1"))])
            data["auth"] = draw(st.one_of(valid, st.text(max_size=20), DATA))
        if draw(st.booleans()):
            data["channel_data"] = draw(st.one_of(st.just(presence_data("1")), st.text(max_size=20), DATA))
        payload: Any = data if draw(st.booleans()) else json.dumps(data)
        return json.dumps({"event": "pusher:subscribe", "data": payload})
    if kind == 2:
        return json.dumps({"event": "pusher:unsubscribe", "data": draw(st.one_of(st.just({"channel": channel}), DATA))})
    if kind == 3:
        event = draw(st.one_of(st.just("client-x"), st.text(max_size=20).map(lambda s: "client-" + s)))
        return json.dumps({"event": event, "channel": draw(st.one_of(st.just(channel), DATA)), "data": draw(DATA)})
    if kind == 4:
        return json.dumps(
            {"event": draw(st.sampled_from(["pusher:ping", "pusher:pong", "pusher:x"])), "data": draw(DATA)}
        )
    return json.dumps(draw(DATA))


ACTION_TYPES = (Send, Join, Leave, Publish, Close)


@given(st.text())
def test_receive_never_raises_for_arbitrary_text_and_returns_actions(text: str) -> None:
    actions = make().receive(text, T0)
    assert isinstance(actions, list)
    assert all(isinstance(action, ACTION_TYPES) for action in actions)


@settings(max_examples=300)
@given(
    texts=st.lists(frames(), max_size=25),
    mode=st.sampled_from(list(ClientEvents)),
    steps=st.lists(st.floats(0, 1), min_size=25, max_size=25),
)
def test_receive_never_raises_for_sequences_of_frames_and_keeps_its_invariants(
    texts: list[str], mode: ClientEvents, steps: list[float]
) -> None:
    session = make(client_events=mode, max_channels_per_connection=3)
    now = T0
    for text, step in zip(texts, steps, strict=False):
        now += step
        actions = session.receive(text, now)
        assert isinstance(actions, list)
        assert all(isinstance(action, ACTION_TYPES) for action in actions)
        assert len(session.channels) <= 3
        for action in actions:
            if isinstance(action, Send):
                message = json.loads(action.frame)  # every frame is valid JSON ...
                action.frame.encode()  # ... and can be sent as UTF-8
                assert message["event"] in ("pusher:pong", "pusher:error", "pusher:subscription_error")
            elif isinstance(action, Join):
                assert action.channel in session.channels
            elif isinstance(action, Leave):
                assert action.channel not in session.channels
            elif isinstance(action, Publish):
                assert action.channel.startswith(("private-", "presence-"))
                assert not action.channel.startswith("private-encrypted-")
                assert mode is not ClientEvents.NONE
        assert session.last_seen == now
        assert session.ping_sent_at is None


# --- presence resubscribes: rate-limited per connection -------------------------------------------


def presence_subscribe(session: Session, channel: str, now: float) -> list[Any]:
    data = presence_data("ann")
    return session.receive(subscribe_frame(channel, channel_data=data, signed=True), now)


def unsubscribe(session: Session, channel: str, now: float) -> list[Any]:
    return session.receive(frame("pusher:unsubscribe", {"channel": channel}), now)


def resubscribe_refused(actions: list[Any], channel: str) -> None:
    refusal = assert_refused(actions, channel, "LimitReached", 429)
    assert "presence subscribes" in refusal["data"]["error"]
    assert only(actions).rate_limited == "presence_resubscribe"


def test_repeated_presence_subscribes_get_the_burst_then_are_refused_429() -> None:
    session = make(presence_resubscribe_burst=3, presence_resubscribe_rate=1.0)
    assert isinstance(only(presence_subscribe(session, "presence-room", T0)), Join)  # the first is free
    for _ in range(3):
        assert isinstance(only(presence_subscribe(session, "presence-room", T0)), Join)
    resubscribe_refused(presence_subscribe(session, "presence-room", T0), "presence-room")
    assert "presence-room" in session.channels  # still subscribed: only the repeat was refused


def test_the_resubscribe_burst_refills_at_the_rate() -> None:
    session = make(presence_resubscribe_burst=2, presence_resubscribe_rate=0.5)
    presence_subscribe(session, "presence-room", T0)
    for _ in range(2):
        presence_subscribe(session, "presence-room", T0)
    resubscribe_refused(presence_subscribe(session, "presence-room", T0 + 1.9), "presence-room")
    assert isinstance(only(presence_subscribe(session, "presence-room", T0 + 2.0)), Join)  # 0.5/s: one in 2 s
    resubscribe_refused(presence_subscribe(session, "presence-room", T0 + 2.0), "presence-room")
    # Never more than the burst, however long the socket was quiet.
    for _ in range(2):
        assert isinstance(only(presence_subscribe(session, "presence-room", T0 + 1000)), Join)
    resubscribe_refused(presence_subscribe(session, "presence-room", T0 + 1000), "presence-room")


def test_leaving_and_joining_again_counts_as_a_resubscribe() -> None:
    session = make(presence_resubscribe_burst=2, presence_resubscribe_rate=0.01)
    presence_subscribe(session, "presence-room", T0)
    for _ in range(2):
        assert isinstance(only(unsubscribe(session, "presence-room", T0)), Leave)
        assert isinstance(only(presence_subscribe(session, "presence-room", T0)), Join)
    unsubscribe(session, "presence-room", T0)
    resubscribe_refused(presence_subscribe(session, "presence-room", T0), "presence-room")
    assert "presence-room" not in session.channels


def test_first_subscribes_to_many_presence_channels_and_repeated_public_ones_are_not_limited() -> None:
    session = make(presence_resubscribe_burst=1, presence_resubscribe_rate=0.01)
    for n in range(20):
        assert isinstance(only(presence_subscribe(session, f"presence-{n}", T0)), Join)
    for _ in range(20):
        assert isinstance(only(session.receive(subscribe_frame("news"), T0)), Join)


def test_a_forged_resubscribe_is_an_auth_error_and_costs_no_token() -> None:
    # A forged repeat is an AuthError, as always, and costs no token.
    session = make(presence_resubscribe_burst=1, presence_resubscribe_rate=0.01)
    presence_subscribe(session, "presence-room", T0)
    forged = subscribe_frame("presence-room", auth=f"{KEY}:{'0' * 64}", channel_data=presence_data("ann"))
    assert_refused(session.receive(forged, T0), "presence-room", "AuthError", 401)
    assert isinstance(only(presence_subscribe(session, "presence-room", T0)), Join)


# --- what the server tells the session ------------------------------------------------------------


def test_a_subscription_refused_by_the_server_is_forgotten_and_may_be_asked_again() -> None:
    session = make()
    data = presence_data("ann")
    assert isinstance(only(session.receive(subscribe_frame("presence-full", channel_data=data, signed=True), T0)), Join)
    session.refused("presence-full")
    assert "presence-full" not in session.channels
    # Not on it: an unsubscribe is nothing, and a subscribe is a first one again.
    assert session.receive(frame("pusher:unsubscribe", {"channel": "presence-full"}), T0) == []
    again = only(session.receive(subscribe_frame("presence-full", channel_data=data, signed=True), T0))
    assert isinstance(again, Join) and again.member == Member("ann", None)


def test_a_socket_gone_gives_back_its_channels_once() -> None:
    session = make()
    session.receive(subscribe_frame("news"), T0)
    session.receive(subscribe_frame("presence-room", channel_data=presence_data("ann"), signed=True), T0)
    assert session.gone() == [("news", None), ("presence-room", Member("ann", None))]
    assert session.gone() == []
    assert session.channels == {}
