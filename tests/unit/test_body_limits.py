"""The HTTP API's body limits per route, derived from the app's own limits, and the body deadline
setting at its edges."""

from __future__ import annotations

import json

import pytest

from clarion.protocol.app import App
from clarion.server.config import ConfigError, load_settings
from clarion.server.http_api import batch_body_limit, events_body_limit, largest_body, terminate_body_limit


def test_the_default_apps_limits_are_those_documented() -> None:
    app = App(id="1", key="k", secret="s" * 8)
    assert events_body_limit(app) == 80_464
    assert batch_body_limit(app) == 639_344
    assert terminate_body_limit(app) == 1024
    assert largest_body([app]) == 639_344


def _worst_event(app: App, channels: int) -> bytes:
    """An event as large as the app allows, every byte of its data escaped by the encoder."""
    item: dict[str, str | list[str]] = {
        "name": "\x01" * app.max_event_name_length,
        "data": "\x01" * app.max_message_size,
        "socket_id": "123456789.123456789",
        "info": "subscription_count,user_count",
    }
    if channels == 1:
        item["channel"] = "c" * app.max_channel_name_length
    else:
        item["channels"] = [f"{n:0{app.max_channel_name_length}d}" for n in range(channels)]
    return json.dumps(item).encode()


@pytest.mark.parametrize(
    "limits",
    [
        {},
        {"max_message_size": 1},
        {"max_message_size": 1024 * 1024, "max_batch_events": 3},
        {"max_channels_per_event": 7},
    ],
)
def test_the_largest_valid_bodies_an_sdk_can_send_fit_their_limits(limits: dict[str, int]) -> None:
    app = App(id="1", key="k", secret="s" * 8, **limits)  # type: ignore[arg-type]  # int limits only
    assert len(_worst_event(app, app.max_channels_per_event)) <= events_body_limit(app)
    batch = json.dumps({"batch": [json.loads(_worst_event(app, 1))] * app.max_batch_events}).encode()
    assert len(batch) <= batch_body_limit(app)


@pytest.mark.parametrize(
    ("value", "ok"), [("0", False), ("-1", False), ("0.01", True), ("600", True), ("600.5", False)]
)
def test_body_timeout_is_more_than_0_and_at_most_600_seconds(value: str, ok: bool) -> None:
    environ = {"CLARION_BODY_TIMEOUT": value}
    if ok:
        assert load_settings(None, environ).body_timeout == float(value)
    else:
        with pytest.raises(ConfigError, match="CLARION_BODY_TIMEOUT"):
            load_settings(None, environ)


def test_body_timeout_defaults_to_10_seconds() -> None:
    assert load_settings(None, {}).body_timeout == 10.0
