"""The SDK's pure parts: channel routes, channel names, events, encryption, driver URLs, keys."""

from __future__ import annotations

import base64
import hashlib
import hmac

import pytest
from pydantic import ValidationError

from clarion.broadcasting import (
    Broadcaster,
    BroadcastError,
    CategoryUpdated,
    Channel,
    ChannelRoutes,
    ConfigError,
    EncryptedPrivateChannel,
    MediaUploadProgress,
    Message,
    PresenceChannel,
    PrivateChannel,
    PusherSettings,
    history_token,
    socket_id,
)
from clarion.broadcasting.encryption import decrypt, shared_secret
from clarion.broadcasting.messages import idempotency_key
from clarion.broadcasting.routes import bare_name

MASTER = base64.b64encode(bytes(range(32))).decode()


def table() -> ChannelRoutes:
    routes = ChannelRoutes()
    routes.add("tenant.{tenant_id:int}.categories", lambda user, tenant_id: tenant_id == 1)
    routes.add("user.{user_id}", lambda user, user_id: True)
    return routes


@pytest.mark.parametrize(
    ("channel", "params"),
    [
        ("private-tenant.1.categories", {"tenant_id": 1}),
        ("presence-tenant.22.categories", {"tenant_id": 22}),
        ("private-encrypted-cache-tenant.3.categories", {"tenant_id": 3}),
        ("private-user.abc-9", {"user_id": "abc-9"}),
    ],
)
def test_a_route_matches_its_channels_under_every_prefix_and_converts_parameters(channel, params):
    found = table().match(channel)
    assert found is not None and found.params == params


@pytest.mark.parametrize(
    "channel",
    [
        "private-tenant.1.categories.x",
        "private-tenant.1*",
        "private-tenant.1%2Ecategories",
        "private-tenant.01.categories",
        "private-tenant.-1.categories",
        "private-tenant.1 .categories",
        "private-user.a.b",
        "private-user.",
        "#server-to-user-1",
        "private-tenant.99999999999999999999.categories",
    ],
)
def test_a_crafted_name_matches_no_route(channel):
    assert table().match(channel) is None


def test_the_first_matching_route_decides():
    routes = ChannelRoutes()
    routes.add("a.{x}", lambda user, x: False)
    routes.add("a.{x}", lambda user, x: True)
    found, result = routes.check_sync(None, "private-a.1")
    assert found is not None and found.route is next(iter(routes)) and result is False


@pytest.mark.parametrize("pattern", ["private-a.{x}", "a.{x:float}", "a.{x}.{x}", "a*{x}"])
def test_a_bad_route_pattern_is_refused_when_registered(pattern):
    with pytest.raises(ValueError):
        ChannelRoutes().add(pattern, lambda user, **p: True)


def test_routes_describe_pattern_parameters_and_guard():
    rows = table().describe()
    assert rows[0]["pattern"] == "tenant.{tenant_id:int}.categories"
    assert rows[0]["params"] == "tenant_id:int"
    assert "lambda" in rows[0]["guard"]


def test_channel_classes_add_their_prefix_and_refuse_bad_names():
    assert str(PrivateChannel("a.b")) == "private-a.b"
    assert str(PresenceChannel("a", cache=True)) == "presence-cache-a"
    assert str(EncryptedPrivateChannel("v")) == "private-encrypted-v"
    assert str(Channel("news")) == "news"
    assert bare_name("private-encrypted-cache-x") == "x"
    for bad in ("a*b", "", "private-x", "x" * 200):
        with pytest.raises(BroadcastError):
            PrivateChannel(bad)


def test_an_invalid_payload_raises_at_the_call_site():
    with pytest.raises(ValidationError):
        CategoryUpdated(tenant_id=1, id=2, name="")
    with pytest.raises(ValidationError):
        CategoryUpdated(tenant_id=1, id=2, name="x", unknown=1)  # type: ignore[call-arg]  # on purpose
    with pytest.raises(ValidationError):
        MediaUploadProgress(tenant_id=1, upload_id="../x", filename="a", bytes_received=1, bytes_total=2)


class TwoChannels(CategoryUpdated):
    event_name = "CategoryUpdated"

    def broadcast_on(self):
        return [PrivateChannel("a"), EncryptedPrivateChannel("b")]


class Never(CategoryUpdated):
    def broadcast_when(self) -> bool:
        return False


def test_an_event_becomes_one_message_per_encrypted_channel_that_decrypts_with_its_key():
    broadcaster = Broadcaster("null://", master_key_base64=MASTER)
    plain, sealed = broadcaster.messages(TwoChannels(tenant_id=1, id=2, name="x"))
    assert plain.channels == ("private-a",) and plain.name == "CategoryUpdated"
    assert sealed.channels == ("private-encrypted-b",) and "ciphertext" in sealed.data
    assert decrypt("private-encrypted-b", sealed.data, base64.b64decode(MASTER)) == plain.data
    assert (
        shared_secret("private-encrypted-b", base64.b64decode(MASTER))
        == hashlib.sha256(b"private-encrypted-b" + base64.b64decode(MASTER)).digest()
    )


def test_an_encrypted_channel_without_a_master_key_is_a_config_error():
    broadcaster = Broadcaster("null://")
    with pytest.raises(ConfigError):
        broadcaster.on(EncryptedPrivateChannel("x")).with_({"a": 1}).send_now()


def test_broadcast_when_false_sends_nothing_and_to_others_reads_the_request_socket():
    broadcaster = Broadcaster("null://")
    assert broadcaster.messages(Never(tenant_id=1, id=2, name="x")) == []
    with socket_id("123.456"):
        others = CategoryUpdated(tenant_id=1, id=2, name="x").to_others()
    assert broadcaster.messages(others)[0].socket_id == "123.456"
    with socket_id("not-a-socket"):
        assert CategoryUpdated(tenant_id=1, id=2, name="x").to_others().except_socket is None


def test_an_anonymous_payload_must_be_json():
    broadcaster = Broadcaster("null://")
    with pytest.raises(ValidationError):
        broadcaster.on(Channel("a")).with_({"when": object()})


@pytest.mark.parametrize(
    ("url", "problem"),
    [
        ("pusher://key@host/1", "KEY:SECRET"),
        ("pusher://k:s@host", "APP_ID"),
        ("pusher://k:s@host:99999/1", "port"),
        ("pusher://k:s@host/1?batch_size=11", "batch_size"),
        ("pusher://k:s@host/1?colour=red", "unknown"),
        ("redis://k:s@host/1", "unknown broadcast driver"),
    ],
)
def test_a_bad_driver_url_says_what_is_wrong(url, problem):
    with pytest.raises(ConfigError, match=problem):
        Broadcaster(url)


def test_a_driver_url_gives_the_pusher_settings():
    settings = PusherSettings.from_url("pushers://my%2Fkey:s3cr%40t@ws.example.com:443/42?timeout=2.5")
    assert settings.key == "my/key" and settings.secret == "s3cr@t" and settings.app_id == "42"
    assert settings.base_url == "https://ws.example.com:443" and settings.timeout == 2.5


def test_the_idempotency_key_is_stable_for_the_same_messages_and_differs_otherwise():
    a, b = Message(("c",), "e", "{}"), Message(("c",), "e", "{}")
    assert idempotency_key([a, b]) == idempotency_key([Message.from_record(a.to_record()), b])
    assert idempotency_key([a]) != idempotency_key([b]) != idempotency_key([a, b])
    assert 1 <= len(idempotency_key([a])) <= 128 and idempotency_key([a]).isascii()


def test_a_history_token_is_the_documented_hmac():
    token = history_token("key", "secret", "private-a", 1700000000)
    expires, signature = token.split(":")
    expected = hmac.new(b"secret", b"key:history:private-a:1700000000", hashlib.sha256).hexdigest()
    assert expires == "1700000000" and signature == expected


def test_the_sdk_never_imports_the_server():
    import subprocess
    import sys

    code = "import sys, clarion.broadcasting, clarion.broadcasting.integrations.queue; "
    code += "print([m for m in sys.modules if m.startswith('clarion.server')])"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


def test_the_routes_command_lists_pattern_parameters_and_guard():
    import subprocess
    import sys
    from pathlib import Path

    tests = Path(__file__).resolve().parents[1]
    out = subprocess.run(
        [sys.executable, "-m", "clarion", "broadcasts", "routes", "sdk.domain:routes"],
        cwd=tests,
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    lines = out.splitlines()
    assert lines[0].split() == ["pattern", "parameters", "guard"]
    assert any(
        "tenant.{tenant_id:int}.categories" in line and "tenant_id:int" in line and "tenant_categories_guard" in line
        for line in lines
    ), out


def test_every_authorization_decision_is_logged_with_user_channel_and_pattern(caplog):
    from clarion.broadcasting import AuthorizationRefused, Authorizer

    routes = ChannelRoutes()
    routes.add(
        "tenant.{tenant_id:int}.lobby", lambda user, tenant_id: {"secret-info": "x"} if tenant_id == 1 else False
    )
    authorizer = Authorizer(Broadcaster("pusher://k:s@127.0.0.1:1/1"), routes)
    caplog.set_level("INFO", logger="clarion.broadcasting.auth")
    answer = authorizer.authorize_sync({"id": 7}, {"socket_id": "1.2", "channel_name": "presence-tenant.1.lobby"})
    assert answer["channel_data"] == '{"user_id":"7","user_info":{"secret-info":"x"}}'
    with pytest.raises(AuthorizationRefused) as refused:
        authorizer.authorize_sync({"id": 7}, {"socket_id": "1.2", "channel_name": "presence-tenant.2.lobby"})
    assert refused.value.status == 403
    allowed_line, refused_line = (r.getMessage() for r in caplog.records)
    assert allowed_line.startswith("channel allowed: user=7 channel=presence-tenant.1.lobby")
    assert "pattern=tenant.{tenant_id:int}.lobby" in allowed_line
    assert refused_line.startswith("channel refused: user=7 channel=presence-tenant.2.lobby")
    assert "secret-info" not in allowed_line + refused_line
