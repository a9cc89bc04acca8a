"""Session: pusher:signin, user channels, watchlists and the sign-in timeout (no I/O)."""

from __future__ import annotations

import dataclasses
import hashlib
import hmac
import json
from typing import Any

import pusher
import pytest

from clarion.protocol.app import App
from clarion.protocol.errors import ErrorCode
from clarion.protocol.session import Action, Close, Join, Send, Session, SignIn

KEY = "app-key"
SECRET = "app-secret"
SOCKET = "123.456"
T0 = 1000.0
APP = App(id="1", key=KEY, secret=SECRET)


def make(**app_fields: Any) -> Session:
    return Session(dataclasses.replace(APP, **app_fields), SOCKET, T0)


def user_sig(user_data: str, secret: str = SECRET, socket_id: str = SOCKET) -> str:
    message = f"{socket_id}::user::{user_data}".encode()
    return f"{KEY}:{hmac.new(secret.encode(), message, hashlib.sha256).hexdigest()}"


def signin_frame(user: dict[str, Any] | str, *, secret: str = SECRET, auth: str | None = None) -> str:
    user_data = user if isinstance(user, str) else json.dumps(user)
    return json.dumps(
        {"event": "pusher:signin", "data": {"auth": auth or user_sig(user_data, secret), "user_data": user_data}}
    )


def sent(action: Action) -> Any:
    """The JSON of a frame the session sends."""
    assert isinstance(action, Send), action
    return json.loads(action.frame)


def error_of(actions: list[Any]) -> dict[str, Any]:
    assert len(actions) == 1, actions
    frame = sent(actions[0])
    assert frame["event"] == "pusher:error", frame
    data: dict[str, Any] = frame["data"]
    return data


def test_valid_signin_names_the_user_and_keeps_user_data_verbatim() -> None:
    session = make()
    user_data = '{"id":"42","user_info":{"name":"Ann"}}'
    actions = session.receive(signin_frame(user_data), T0)
    assert actions == [SignIn("42", user_data, (), None)]
    assert session.user_id == "42"


def test_signature_made_by_the_official_sdk_is_accepted() -> None:
    sdk = pusher.Pusher(app_id="1", key=KEY, secret=SECRET)
    answer = sdk.authenticate_user(SOCKET, {"id": "7", "user_info": {"a": 1}})
    session = make()
    frame = json.dumps({"event": "pusher:signin", "data": answer})
    actions = session.receive(frame, T0)
    assert isinstance(actions[0], SignIn) and actions[0].user_id == "7"


def test_forged_signin_is_4009_and_leaves_the_socket_anonymous() -> None:
    session = make()
    error = error_of(session.receive(signin_frame({"id": "1"}, secret="wrong"), T0))
    assert error["code"] == ErrorCode.UNAUTHORIZED
    assert session.user_id is None


def test_signature_for_another_socket_is_refused() -> None:
    session = make()
    user_data = '{"id":"1"}'
    forged = user_sig(user_data, socket_id="999.999")
    assert error_of(session.receive(signin_frame(user_data, auth=forged), T0))["code"] == ErrorCode.UNAUTHORIZED


@pytest.mark.parametrize(
    ("data", "code"),
    [
        ("nope", ErrorCode.RECONNECT),
        ({"auth": 1, "user_data": "{}"}, ErrorCode.RECONNECT),
        ({"auth": "k:s"}, ErrorCode.RECONNECT),
        ({"user_data": "{}"}, ErrorCode.RECONNECT),
    ],
)
def test_malformed_signin_frames_are_refused(data: Any, code: ErrorCode) -> None:
    session = make()
    assert error_of(session.receive(json.dumps({"event": "pusher:signin", "data": data}), T0))["code"] == code


@pytest.mark.parametrize(
    "user_data",
    [
        "not json",
        "[1]",
        '{"name":"x"}',
        '{"id":""}',
        '{"id":5}',
        json.dumps({"id": "x" * 129}),
        '{"id":"1","watchlist":"2"}',
    ],
)
def test_signed_but_invalid_user_data_is_refused(user_data: str) -> None:
    session = make()
    error = error_of(session.receive(signin_frame(user_data), T0))
    assert error["code"] == ErrorCode.UNAUTHORIZED
    assert session.user_id is None


def test_signing_in_as_another_user_on_the_same_socket_is_refused() -> None:
    session = make()
    session.receive(signin_frame({"id": "1"}), T0)
    error = error_of(session.receive(signin_frame({"id": "2"}), T0))
    assert "another user" in error["message"]
    assert session.user_id == "1"


def test_signing_in_again_as_the_same_user_replaces_the_watchlist() -> None:
    session = make()
    session.receive(signin_frame({"id": "1", "watchlist": ["a"]}), T0)
    actions = session.receive(signin_frame({"id": "1", "watchlist": ["b"]}), T0)
    assert actions[0] == SignIn("1", json.dumps({"id": "1", "watchlist": ["b"]}), ("b",), ("a",))


def test_watchlist_over_100_keeps_the_first_100_and_warns_4302() -> None:
    session = make()
    watchlist = [f"u{n}" for n in range(150)]
    actions = session.receive(signin_frame({"id": "1", "watchlist": watchlist}), T0)
    assert isinstance(actions[0], SignIn)
    assert actions[0].watchlist == tuple(watchlist[:100])
    assert sent(actions[1])["data"]["code"] == ErrorCode.WATCHLIST_LIMIT


def test_user_channel_is_open_only_to_that_signed_in_user() -> None:
    session = make()
    subscribe = json.dumps({"event": "pusher:subscribe", "data": {"channel": "#server-to-user-1", "auth": ""}})
    refused = sent(session.receive(subscribe, T0)[0])
    assert refused["event"] == "pusher:subscription_error" and refused["data"]["status"] == 403
    session.receive(signin_frame({"id": "1"}), T0)
    assert session.receive(subscribe, T0) == [Join("#server-to-user-1", None)]
    other = json.dumps({"event": "pusher:subscribe", "data": {"channel": "#server-to-user-2"}})
    assert sent(session.receive(other, T0)[0])["event"] == "pusher:subscription_error"


def test_unsigned_socket_is_closed_4009_at_the_signin_timeout() -> None:
    session = make(signin_timeout=5.0)
    assert session.tick(T0 + 4.9) == []
    assert session.tick(T0 + 5.0) == [
        Close(ErrorCode.UNAUTHORIZED, "Connection not signed in within the app's timeout")
    ]


def test_signed_in_socket_is_not_closed_by_the_signin_timeout() -> None:
    session = make(signin_timeout=5.0)
    session.receive(signin_frame({"id": "1"}), T0 + 1)
    assert session.tick(T0 + 10) == []


def test_no_signin_timeout_by_default() -> None:
    session = make()
    assert session.tick(T0 + 3600 * 24) != [
        Close(ErrorCode.UNAUTHORIZED, "Connection not signed in within the app's timeout")
    ]


def presence_subscribe(channel: str, channel_data: str | None = None, secret: str = SECRET) -> str:
    message = f"{SOCKET}:{channel}" if channel_data is None else f"{SOCKET}:{channel}:{channel_data}"
    auth = f"{KEY}:{hmac.new(secret.encode(), message.encode(), hashlib.sha256).hexdigest()}"
    data: dict[str, Any] = {"channel": channel, "auth": auth}
    if channel_data is not None:
        data["channel_data"] = channel_data
    return json.dumps({"event": "pusher:subscribe", "data": data})


def test_signed_in_socket_joins_presence_as_its_user_without_channel_data() -> None:
    session = make()
    session.receive(signin_frame({"id": "7", "user_info": {"name": "Ann"}}), T0)
    actions = session.receive(presence_subscribe("presence-room"), T0)
    assert len(actions) == 1 and isinstance(actions[0], Join)
    assert actions[0].member is not None
    assert (actions[0].member.user_id, actions[0].member.user_info) == ("7", {"name": "Ann"})


def test_presence_without_channel_data_before_signin_is_refused() -> None:
    session = make()
    refused = sent(session.receive(presence_subscribe("presence-room"), T0)[0])
    assert refused["event"] == "pusher:subscription_error"
    assert refused["data"]["status"] == 401


def test_presence_from_signin_still_needs_a_valid_channel_signature() -> None:
    session = make()
    session.receive(signin_frame({"id": "7"}), T0)
    refused = sent(session.receive(presence_subscribe("presence-room", secret="wrong"), T0)[0])
    assert refused["event"] == "pusher:subscription_error"


def test_explicit_channel_data_wins_over_the_signin_identity() -> None:
    session = make()
    session.receive(signin_frame({"id": "7"}), T0)
    actions = session.receive(presence_subscribe("presence-room", '{"user_id":"9"}'), T0)
    assert isinstance(actions[0], Join) and actions[0].member is not None
    assert actions[0].member.user_id == "9"
