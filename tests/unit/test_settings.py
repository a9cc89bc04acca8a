"""Settings are declared once (``App`` in protocol/app.py, ``Settings`` in server/config.py), their
environment variables come from those declarations, and docs/configuration.md agrees with both."""

from __future__ import annotations

import os
import re
from pathlib import Path

import pytest

from clarion import cli
from clarion.protocol.app import App, ClientEvents, HistoryRule, WebhookTarget
from clarion.server import fanout, serve
from clarion.server.config import (
    APP_ENV,
    APP_SETTINGS,
    IDENTITY_ENV,
    SERVER_ENV,
    SERVER_SETTINGS,
    ConfigError,
    load_settings,
)

ROOT = Path(__file__).resolve().parents[2]
DOC = ROOT / "docs" / "configuration.md"
EVERY_ENV = {**SERVER_ENV, **APP_ENV, **IDENTITY_ENV}
# Read by load_settings itself rather than set on a field, or by setup.py when the package is built.
OTHER_ENV = {"CLARION_CONFIG"} | set(re.findall(r"\bCLARION_[A-Z_]+\b", (ROOT / "setup.py").read_text()))


def table_rows() -> list[tuple[set[str], set[str]]]:
    """(settings, environment variables) named in each row of the settings tables."""
    rows = []
    for line in DOC.read_text().splitlines():
        if not line.startswith("| `"):
            continue
        cells = line.split("|")
        rows.append((set(re.findall(r"`([a-z_]+)`", cells[1])), set(re.findall(r"`(CLARION_[A-Z_]+)`", cells[2]))))
    return rows


def test_every_setting_is_documented_in_the_settings_tables() -> None:
    documented = set().union(*(names for names, _ in table_rows()))
    assert sorted(SERVER_SETTINGS - documented) == []
    assert sorted(APP_SETTINGS - documented) == []


def test_every_environment_variable_is_documented_beside_its_setting() -> None:
    rows = table_rows()
    for variable, setting in EVERY_ENV.items():
        beside = [names for names, variables in rows if variable in variables]
        assert beside, f"{variable} is not documented"
        assert all(setting in names for names in beside), (variable, setting, beside)


def test_every_documented_environment_variable_is_read() -> None:
    documented = set(re.findall(r"\bCLARION_[A-Z_]+\b", DOC.read_text()))
    assert sorted(documented - set(EVERY_ENV) - OTHER_ENV) == []


def test_a_setting_documented_without_a_variable_has_none() -> None:
    for names, variables in table_rows():
        if not variables:
            assert not names & set(EVERY_ENV.values()), names


def test_the_environment_tables_come_from_the_declarations() -> None:
    # A derived name, and one declared beside its field because it differs.
    assert APP_ENV["CLARION_MAX_CONNECTIONS"] == "max_connections"
    assert APP_ENV["CLARION_SUBSCRIPTION_COUNT"] == "subscription_count_events"
    assert SERVER_ENV["CLARION_WEBHOOK_QUEUE"] == "webhook_queue"
    # Only what is declared: these app settings are set in TOML alone.
    assert "max_batch_events" not in APP_ENV.values()
    assert "CLARION_ENABLED" not in APP_ENV


def test_every_app_setting_reaches_the_app_from_the_toml_file(tmp_path: Path) -> None:
    path = tmp_path / "app.toml"
    path.write_text(
        """
[[apps]]
id = "7"
key = "k7"
secret = "secret-k7"
enabled = false
max_connections = 5
max_message_size = 2048
max_channel_name_length = 100
max_event_name_length = 50
max_channels_per_connection = 20
max_channels_per_event = 3
max_batch_events = 4
max_presence_members = 9
max_presence_user_info = 512
client_events = "all"
client_event_rate = 3
activity_timeout = 12
signin_timeout = 2.5
cache_ttl = 60
subscription_count_events = true
allowed_origins = ["https://a.example"]
webhook_url = "https://hooks.example/all"
history = [{ prefix = "private-", size = 5 }]
presence_resubscribe_burst = 3
presence_resubscribe_rate = 0.5

[[apps.webhooks]]
url = "https://hooks.example/some"
event_types = ["channel_occupied"]
"""
    )
    app = load_settings(str(path), {}).apps[0]
    assert app == App(
        id="7",
        key="k7",
        secret="secret-k7",
        enabled=False,
        max_connections=5,
        max_message_size=2048,
        max_channel_name_length=100,
        max_event_name_length=50,
        max_channels_per_connection=20,
        max_channels_per_event=3,
        max_batch_events=4,
        max_presence_members=9,
        max_presence_user_info=512,
        client_events=ClientEvents.ALL,
        client_event_rate=3,
        activity_timeout=12,
        signin_timeout=2.5,
        cache_ttl=60.0,
        subscription_count_events=True,
        allowed_origins=("https://a.example",),
        webhook_url="https://hooks.example/all",
        history=(HistoryRule("private-", 5, 300.0),),
        presence_resubscribe_burst=3,
        presence_resubscribe_rate=0.5,
        webhooks=(WebhookTarget("https://hooks.example/some", ("channel_occupied",)),),
    )
    assert [target.url for target in app.webhook_targets] == ["https://hooks.example/some", "https://hooks.example/all"]


@pytest.mark.parametrize(
    ("variable", "value", "expected"),
    [
        ("CLARION_MAX_CONNECTIONS", "1", 1),
        ("CLARION_SUBSCRIPTION_COUNT", "true", True),
        ("CLARION_ALLOWED_ORIGINS", "https://a.example, https://b.example", ("https://a.example", "https://b.example")),
        ("CLARION_ALLOWED_ORIGINS", ",", ("*",)),
        ("CLARION_SIGNIN_TIMEOUT", "3600", 3600.0),
    ],
)
def test_an_app_variable_sets_its_setting_on_every_app(variable: str, value: str, expected: object) -> None:
    settings = load_settings(None, {variable: value})
    assert getattr(settings.apps[0], APP_ENV[variable]) == expected


@pytest.mark.parametrize(
    ("variable", "value"),
    [
        ("CLARION_MAX_CONNECTIONS", "0"),
        ("CLARION_SIGNIN_TIMEOUT", "3601"),
        ("CLARION_CACHE_TTL", "0"),
        ("CLARION_WEBHOOK_URL", "ftp://hooks.example"),
        ("CLARION_MAX_MESSAGE_SIZE", "1048577"),
    ],
)
def test_an_app_variable_past_its_bound_is_refused_naming_it(variable: str, value: str) -> None:
    with pytest.raises(ConfigError) as refused:
        load_settings(None, {variable: value})
    assert variable in str(refused.value) and APP_ENV[variable] in str(refused.value)


def test_an_unknown_webhook_event_type_is_refused_naming_it(tmp_path: Path) -> None:
    path = tmp_path / "hooks.toml"
    path.write_text(
        '[[apps]]\nid = "1"\nkey = "k"\nsecret = "secret-k"\n'
        '[[apps.webhooks]]\nurl = "https://h.example"\nevent_types = ["channel_exploded"]\n'
    )
    with pytest.raises(ConfigError, match="channel_exploded"):
        load_settings(str(path), {})


def test_an_app_id_from_the_environment_that_breaks_the_pattern_is_refused_naming_the_variable() -> None:
    env = {"CLARION_APP_ID": "a b", "CLARION_APP_KEY": "k", "CLARION_APP_SECRET": "secret-k"}
    with pytest.raises(ConfigError, match="CLARION_APP_ID"):
        load_settings(None, env)


def test_a_native_fanout_that_was_not_built_stops_the_start_with_exit_2(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    async def started(*args: object, **kwargs: object) -> None:
        raise AssertionError("the server started")

    monkeypatch.setattr(fanout, "fanout_native", None)
    monkeypatch.setattr(serve, "serve", started)
    for name in [name for name in os.environ if name.startswith("CLARION_")]:
        monkeypatch.delenv(name)
    monkeypatch.setenv("CLARION_FANOUT", "native")
    assert cli.main(["serve"]) == 2
    assert "fanout = native, but clarion._fanout was not built" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("variable", "value"),
    [
        ("CLARION_PRESENCE_RESUBSCRIBE_BURST", "0"),
        ("CLARION_PRESENCE_RESUBSCRIBE_BURST", "1001"),
        ("CLARION_PRESENCE_RESUBSCRIBE_RATE", "0"),
        ("CLARION_PRESENCE_RESUBSCRIBE_RATE", "1000.5"),
    ],
)
def test_presence_resubscribe_limits_out_of_bounds_are_refused_naming_them(variable: str, value: str) -> None:
    with pytest.raises(ConfigError, match=variable):
        load_settings(None, {variable: value})


def test_presence_resubscribe_limits_at_their_bounds_are_accepted() -> None:
    for burst, rate in (("1", "0.001"), ("1000", "1000")):
        app = load_settings(
            None, {"CLARION_PRESENCE_RESUBSCRIBE_BURST": burst, "CLARION_PRESENCE_RESUBSCRIBE_RATE": rate}
        ).apps[0]
        assert (app.presence_resubscribe_burst, app.presence_resubscribe_rate) == (int(burst), float(rate))
