"""App defaults (Pusher's published limits) and the Origin allow-list."""

from __future__ import annotations

import dataclasses

import pytest

from clarion.protocol.app import App, ClientEvents, origin_matches

APP = App(id="1", key="k", secret="s")


def test_defaults_are_pushers_published_limits() -> None:
    assert APP.max_message_size == 10 * 1024
    assert APP.max_channel_name_length == 164
    assert APP.max_channels_per_event == 100
    assert APP.max_batch_events == 10
    assert APP.max_presence_members == 100
    assert APP.max_presence_user_info == 1024
    assert APP.client_event_rate == 10
    assert APP.client_events is ClientEvents.MEMBERS


@pytest.mark.parametrize("origin", [None, "https://anything.example", "null"])
def test_wildcard_allows_every_origin_and_none(origin: str | None) -> None:
    assert APP.origin_allowed(origin)


def test_configured_allow_list_refuses_a_missing_origin() -> None:
    assert not dataclasses.replace(APP, allowed_origins=("https://app.example",)).origin_allowed(None)


def test_configured_allow_list_checks_each_pattern() -> None:
    app = dataclasses.replace(APP, allowed_origins=("https://a.example", "https://*.b.example"))
    assert app.origin_allowed("https://a.example")
    assert app.origin_allowed("https://x.b.example")
    assert not app.origin_allowed("https://c.example")


@pytest.mark.parametrize(
    ("pattern", "origin"),
    [
        ("https://app.example", "https://app.example"),
        ("https://app.example", "HTTPS://APP.EXAMPLE"),
        ("https://app.example/", "https://app.example"),
        ("https://*.example.com", "https://a.example.com"),
        ("https://*.example.com", "https://a.b-c.example.com"),
        ("app.example:8080", "http://app.example:8080"),
        ("*.example.com", "https://a.example.com"),
    ],
)
def test_origin_matches(pattern: str, origin: str) -> None:
    assert origin_matches(pattern, origin)


@pytest.mark.parametrize(
    ("pattern", "origin"),
    [
        ("https://app.example", "http://app.example"),  # scheme differs
        ("https://app.example", "https://app.example:8443"),
        ("https://app.example", "https://app.example.evil.com"),
        ("https://*.example.com", "https://example.com"),  # the wildcard needs a label
        ("https://*.example.com", "https://.example.com"),
        ("https://*.example.com", "https://evilexample.com"),
        ("https://*.example.com", "https://a.example.com.evil.com"),
        ("https://*.example.com", "https://evil.com/.example.com"),
        ("https://*.example.com", "https://user@evil.com?.example.com"),
        ("https://*.example.com", "http://a.example.com"),
        ("app.example", "https://app.example:8080"),
    ],
)
def test_origin_does_not_match(pattern: str, origin: str) -> None:
    assert not origin_matches(pattern, origin)
