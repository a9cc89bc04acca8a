"""History tokens (interface 2): the server accepts what the backend SDK issues, for that app
and channel, while now <= expires <= now + 3600, and nothing else."""

from __future__ import annotations

import hashlib
import hmac

import pytest

from clarion.broadcasting import history_token as issued_by_the_sdk
from clarion.protocol.signatures import history_token, history_token_problem

KEY, SECRET, CHANNEL = "app-key", "app-secret", "private-tenant.7"
NOW = 1_800_000_000


def test_the_token_is_the_documented_hmac() -> None:
    expected = hmac.new(SECRET.encode(), f"{KEY}:history:{CHANNEL}:{NOW}".encode(), hashlib.sha256).hexdigest()
    assert history_token(KEY, SECRET, CHANNEL, NOW) == f"{NOW}:{expected}"


def test_the_server_accepts_what_the_backend_sdk_issues() -> None:
    token = issued_by_the_sdk(KEY, SECRET, CHANNEL, NOW + 300)
    assert history_token_problem(KEY, SECRET, CHANNEL, token, NOW) is None


@pytest.mark.parametrize(
    ("expires", "accepted"),
    [(NOW, True), (NOW + 3600, True), (NOW - 1, False), (NOW + 3601, False)],
)
def test_the_window_is_now_to_an_hour_ahead_inclusive(expires: int, accepted: bool) -> None:
    problem = history_token_problem(KEY, SECRET, CHANNEL, history_token(KEY, SECRET, CHANNEL, expires), NOW)
    assert (problem is None) is accepted, problem


@pytest.mark.parametrize(
    "token",
    [
        history_token(KEY, SECRET, "private-other", NOW + 60),
        history_token("other-key", SECRET, CHANNEL, NOW + 60),
        history_token(KEY, "other-secret", CHANNEL, NOW + 60),
        history_token(KEY, SECRET, CHANNEL, NOW + 60).upper(),
        f"{NOW + 60}:",
        f"{NOW + 60}",
        "",
        ":",
        f"+{NOW + 60}:{'0' * 64}",
        f"{NOW + 60}.0:{'0' * 64}",
        f"{'9' * 40}:{'0' * 64}",
        f"{NOW + 60}:{'é' * 64}",
    ],
)
def test_other_channels_apps_secrets_and_malformed_tokens_are_refused(token: str) -> None:
    assert history_token_problem(KEY, SECRET, CHANNEL, token, NOW) is not None
