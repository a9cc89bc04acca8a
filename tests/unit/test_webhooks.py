"""Webhook bodies, signatures and the vacated/removed delay (no I/O)."""

from __future__ import annotations

import json
import time

import pusher

from clarion.protocol import webhooks as hooks


def test_body_and_headers_validate_with_the_official_sdk() -> None:
    events = [hooks.channel_occupied("news"), hooks.member_added("presence-x", "7")]
    now_ms = int(time.time() * 1000)
    payload = hooks.body(events, now_ms)
    headers = hooks.headers("key", "secret", payload)
    sdk = pusher.Pusher(app_id="1", key="key", secret="secret")
    parsed = sdk.validate_webhook(headers["X-Pusher-Key"], headers["X-Pusher-Signature"], payload.decode())
    assert parsed == {"time_ms": now_ms, "events": events}


def test_signature_from_another_secret_does_not_validate() -> None:
    payload = hooks.body([hooks.channel_vacated("news")], int(time.time() * 1000))
    headers = hooks.headers("key", "other-secret", payload)
    sdk = pusher.Pusher(app_id="1", key="key", secret="secret")
    assert sdk.validate_webhook(headers["X-Pusher-Key"], headers["X-Pusher-Signature"], payload.decode()) is None


def test_event_shapes_follow_pusher() -> None:
    assert hooks.client_event("private-a", "client-x", '{"a":1}', "1.2", None) == {
        "name": "client_event",
        "channel": "private-a",
        "event": "client-x",
        "data": '{"a":1}',
        "socket_id": "1.2",
    }
    assert hooks.client_event("presence-a", "client-x", "d", "1.2", "9")["user_id"] == "9"
    assert hooks.subscription_count("c", 3) == {"name": "subscription_count", "channel": "c", "subscription_count": 3}
    assert json.loads(hooks.body([], 5)) == {"time_ms": 5, "events": []}


def test_occupied_and_added_go_out_at_once() -> None:
    debouncer = hooks.Debouncer(delay=3)
    assert debouncer.offer(hooks.channel_occupied("a"), 0) == [hooks.channel_occupied("a")]
    assert debouncer.offer(hooks.member_added("p", "1"), 0) == [hooks.member_added("p", "1")]


def test_vacated_waits_for_the_delay() -> None:
    debouncer = hooks.Debouncer(delay=3)
    assert debouncer.offer(hooks.channel_vacated("a"), 10) == []
    assert debouncer.due(12.9) == []
    assert debouncer.due(13.0) == [hooks.channel_vacated("a")]
    assert debouncer.due(20) == []


def test_reoccupied_within_the_delay_sends_neither_event() -> None:
    debouncer = hooks.Debouncer(delay=3)
    debouncer.offer(hooks.channel_vacated("a"), 10)
    assert debouncer.offer(hooks.channel_occupied("a"), 11) == []
    assert debouncer.due(100) == []


def test_member_back_within_the_delay_sends_neither_event_but_others_still_go() -> None:
    debouncer = hooks.Debouncer(delay=3)
    debouncer.offer(hooks.member_removed("p", "1"), 10)
    debouncer.offer(hooks.member_removed("p", "2"), 10)
    assert debouncer.offer(hooks.member_added("p", "1"), 11) == []
    assert debouncer.due(13) == [hooks.member_removed("p", "2")]


def test_flush_returns_held_events_oldest_first() -> None:
    debouncer = hooks.Debouncer(delay=3)
    debouncer.offer(hooks.channel_vacated("b"), 2)
    debouncer.offer(hooks.channel_vacated("a"), 1)
    assert debouncer.flush() == [hooks.channel_vacated("a"), hooks.channel_vacated("b")]
    assert len(debouncer) == 0


def test_other_events_pass_straight_through() -> None:
    debouncer = hooks.Debouncer(delay=3)
    event = hooks.cache_miss("cache-a")
    assert debouncer.offer(event, 0) == [event]


def test_type_counts_name_each_event_type_and_its_count_never_a_payload() -> None:
    events = [
        hooks.client_event("private-a", "client-secret", '{"card":"4111"}', "1.2", None),
        hooks.channel_occupied("news"),
        hooks.client_event("private-a", "client-x", "d", "1.2", None),
    ]
    assert hooks.type_counts(events) == "channel_occupied:1,client_event:2"
    assert hooks.type_counts([]) == ""
