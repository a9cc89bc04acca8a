"""Webhooks against a real receiver: an aiohttp server in the test records every POST (headers and
raw body), and can be told to answer 500 (a number of times, or to every body holding some kind of
event, as the PHP SDK's ``webhook()`` does for ``private-encrypted-`` channels), to hold a POST, or
to hang.

Fresh events go out in order, one POST at a time, so "nothing else was sent" is checked with a
barrier: a later event whose delivery proves every earlier one was delivered (or never queued). A
failed batch is retried beside them.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import os
import re
import socket
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import pusher
import pytest
from aiohttp import web

from conftest import APP_ID, APP_KEY, APP_SECRET, ROOT
from pusherclient import Connect, PusherSocket, api_call, fresh, wait_for

DELAY = 0.5  # CLARION_WEBHOOK_DELAY for these tests


# --- the receiver ------------------------------------------------------------------------------


@dataclass
class Post:
    path: str
    headers: dict[str, str]
    body: bytes
    status: int  # what the receiver answered; 0 while hanging
    at: float

    @property
    def events(self) -> list[dict[str, Any]]:
        events: list[dict[str, Any]] = json.loads(self.body)["events"]
        return events


Events = list[dict[str, Any]]


def on_encrypted_channel(events: Events) -> bool:
    """What the PHP SDK's ``webhook()`` fails on: any event on a ``private-encrypted-`` channel."""
    return any(str(event.get("channel", "")).startswith("private-encrypted-") for event in events)


class Receiver:
    """Records POSTs. ``fail_next`` answers that many (of those ``fail_when`` picks) with 500;
    ``refuse`` answers 500 to every body it picks; ``hold_next`` holds that many POSTs until
    ``held`` is set; ``hang`` holds every request unanswered."""

    def __init__(self) -> None:
        self.posts: list[Post] = []
        self.fail_next = 0
        self.fail_when: Callable[[Events], bool] = lambda events: True
        self.refuse: Callable[[Events], bool] = lambda events: False
        self.hold_next = 0
        self.held = asyncio.Event()
        self.hang = False
        self._release = asyncio.Event()
        self._runner: web.AppRunner | None = None
        self.port = 0

    async def start(self) -> None:
        app = web.Application()
        app.router.add_post("/{tail:.*}", self._handle)
        self._runner = web.AppRunner(app, shutdown_timeout=1.0)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        self.port = self._runner.addresses[0][1]

    async def stop(self) -> None:
        self._release.set()
        if self._runner is not None:
            await self._runner.cleanup()

    def url(self, path: str = "/hook") -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    async def _handle(self, request: web.Request) -> web.Response:
        body = await request.read()
        post = Post(request.path, dict(request.headers), body, 0, time.monotonic())
        self.posts.append(post)
        if self.hang:
            await self._release.wait()
            return web.Response(status=503)
        if self.hold_next > 0:
            self.hold_next -= 1
            await self.held.wait()
        if self.refuse(post.events):
            post.status = 500
            return web.Response(status=500, text="cannot decrypt")
        if self.fail_next > 0 and self.fail_when(post.events):
            self.fail_next -= 1
            post.status = 500
            return web.Response(status=500, text="try again")
        post.status = 200
        return web.Response(status=200)

    def delivered(self, path: str | None = None) -> list[Post]:
        return [p for p in self.posts if p.status == 200 and (path is None or p.path == path)]

    def events(self, name: str | None = None, channel: str | None = None, path: str | None = None) -> Events:
        """Events of successfully delivered POSTs, in order, optionally filtered."""
        return [
            event
            for post in self.delivered(path)
            for event in post.events
            if (name is None or event["name"] == name) and (channel is None or event.get("channel") == channel)
        ]

    async def wait_event(
        self, name: str, channel: str, path: str | None = None, timeout: float = 5.0
    ) -> dict[str, Any]:
        await wait_for(lambda: self.events(name, channel, path), timeout=timeout)
        return self.events(name, channel, path)[0]


@pytest.fixture
async def receiver() -> AsyncIterator[Receiver]:
    hooks = Receiver()
    await hooks.start()
    yield hooks
    await hooks.stop()


@pytest.fixture
async def start(receiver: Receiver, server_factory: Any) -> AsyncIterator[Callable[..., Any]]:
    """``server_factory``, whose servers are stopped while the receiver still answers.

    The factory's own teardown waits for the process synchronously, which would freeze this loop
    and the receiver in it, so a server's last webhooks would wait out its shutdown drain.
    """
    started: list[Any] = []

    def start_server(**kwargs: Any) -> Any:
        running = server_factory(**kwargs)
        started.append(running)
        return running

    yield start_server
    receiver.hang = False  # let held requests (and the server's retries) through
    receiver._release.set()
    receiver.held.set()
    for running in started:
        running.proc.terminate()
    for running in started:
        with contextlib.suppress(subprocess.TimeoutExpired):  # the factory kills it then
            await asyncio.to_thread(running.proc.wait, 10)


def hooked(server_factory: Any, receiver: Receiver, **env: str) -> Any:
    """A server whose only app sends every event type to the receiver."""
    return server_factory(
        env={"CLARION_WEBHOOK_URL": receiver.url(), "CLARION_WEBHOOK_DELAY": str(DELAY), **env},
    )


def occupancy_hooked(server_factory: Any, receiver: Receiver, **env: str) -> Any:
    """A server whose only app (the default test app) sends only channel_occupied to the
    receiver: one event per subscribe, so every batch is known in advance."""
    config = f"""
[[apps]]
id = "{APP_ID}"
key = "{APP_KEY}"
secret = "{APP_SECRET}"

[[apps.webhooks]]
url = "{receiver.url()}"
event_types = ["channel_occupied"]
"""
    return server_factory(config=config, env=env)


async def subscribe(
    sock: PusherSocket, channel: str, *, key: str, secret: str, user_id: str | None = None
) -> dict[str, Any]:
    needs_auth = channel.startswith(("private-", "presence-"))
    answer = await sock.subscribe(
        channel,
        key=key if needs_auth else None,
        secret=secret if needs_auth else None,
        channel_data={"user_id": user_id} if user_id is not None else None,
    )
    assert answer["event"] == "pusher_internal:subscription_succeeded", answer
    return answer


async def join(sock: PusherSocket, server: Any, channel: str, user_id: str | None = None) -> None:
    await subscribe(sock, channel, key=server.key, secret=server.secret, user_id=user_id)


async def barrier(server: Any, sock: PusherSocket, receiver: Receiver, path: str | None = None) -> None:
    """Subscribe ``sock`` to a fresh channel and wait for its channel_occupied: every webhook
    emitted before it (to a target that wants channel_occupied) has been delivered by then."""
    channel = fresh("barrier-")
    await join(sock, server, channel)
    await receiver.wait_event("channel_occupied", channel, path)


async def trigger(server: Any, channel: str, name: str = "evt", data: str = "{}") -> None:
    assert await server.trigger(channel, name, data) == (200, {})


async def failures(server: Any) -> float:
    async with aiohttp.ClientSession() as session, session.get(server.http_url + "/metrics") as response:
        text = await response.text()
    found = re.search(r"^clarion_webhook_failures_total (\S+)$", text, re.MULTILINE)
    assert found, text
    return float(found[1])


async def metric(server: Any, name: str, **labels: str) -> float:
    """One sample of ``/metrics``; 0 when the labelled series does not exist yet."""
    async with aiohttp.ClientSession() as session, session.get(server.http_url + "/metrics") as response:
        text = await response.text()
    wanted = ",".join(f'{key}="{value}"' for key, value in sorted(labels.items()))
    for line in text.splitlines():
        series, _, value = line.rpartition(" ")
        if series == (f"{name}{{{wanted}}}" if labels else name):
            return float(value)
    return 0.0


def closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


# --- body, headers, signature ------------------------------------------------------------------


async def test_webhook_body_and_headers_validate_with_the_official_sdk(start, receiver, connect) -> None:
    running = hooked(start, receiver)
    channel = fresh("news-")
    await join(await connect(running), running, channel)
    await receiver.wait_event("channel_occupied", channel)

    post = next(p for p in receiver.delivered() if any(e.get("channel") == channel for e in p.events))
    assert post.path == "/hook"
    assert post.headers["X-Pusher-Key"] == running.key
    assert post.headers["Content-Type"].startswith("application/json")
    body = json.loads(post.body)
    assert set(body) == {"time_ms", "events"}, body
    assert isinstance(body["time_ms"], int)
    assert abs(body["time_ms"] - time.time() * 1000) < 60_000
    assert {"name": "channel_occupied", "channel": channel} in body["events"]

    sdk = pusher.Pusher(app_id=running.app_id, key=running.key, secret=running.secret)
    validated = sdk.validate_webhook(post.headers["X-Pusher-Key"], post.headers["X-Pusher-Signature"], post.body)
    assert validated == body
    # Every delivered body is signed the same way.
    for each in receiver.delivered():
        assert sdk.validate_webhook(each.headers["X-Pusher-Key"], each.headers["X-Pusher-Signature"], each.body)
    other = pusher.Pusher(app_id=running.app_id, key=running.key, secret="some-other-secret")
    assert other.validate_webhook(post.headers["X-Pusher-Key"], post.headers["X-Pusher-Signature"], post.body) is None


# --- channel_occupied / channel_vacated --------------------------------------------------------


async def test_channel_occupied_once_then_vacated_after_the_delay(start, receiver, connect) -> None:
    running = hooked(start, receiver)
    channel = fresh("room-")
    first, second, other = [await connect(running) for _ in range(3)]
    await join(first, running, channel)
    await join(second, running, channel)
    await barrier(running, other, receiver)
    assert receiver.events("channel_occupied", channel) == [{"name": "channel_occupied", "channel": channel}]

    await first.send("pusher:unsubscribe", {"channel": channel})
    await barrier(running, other, receiver)
    assert receiver.events("channel_vacated", channel) == []  # one subscriber is left

    left = time.monotonic()
    await second.close()  # the last subscriber goes by disconnecting
    vacated = await receiver.wait_event("channel_vacated", channel, timeout=DELAY + 4)
    assert vacated == {"name": "channel_vacated", "channel": channel}
    post = next(p for p in receiver.delivered() if vacated in p.events)
    assert post.at - left >= DELAY - 0.05, post.at - left  # held for the delay, not sent at once
    assert len(receiver.events("channel_occupied", channel)) == 1


async def test_vacated_after_unsubscribe_arrives_after_the_delay(start, receiver, connect) -> None:
    running = hooked(start, receiver)
    channel = fresh("brief-")
    sock = await connect(running)
    await join(sock, running, channel)
    await receiver.wait_event("channel_occupied", channel)
    left = time.monotonic()
    await sock.send("pusher:unsubscribe", {"channel": channel})
    await receiver.wait_event("channel_vacated", channel, timeout=DELAY + 4)
    post = next(p for p in receiver.delivered() if {"name": "channel_vacated", "channel": channel} in p.events)
    assert post.at - left >= DELAY - 0.05


async def test_quick_unsubscribe_and_resubscribe_sends_neither_vacated_nor_a_second_occupied(
    start, receiver, connect
) -> None:
    running = hooked(start, receiver)
    flapping, control = fresh("flap-"), fresh("control-")
    sock, other = await connect(running), await connect(running)
    await join(sock, running, flapping)
    await join(sock, running, control)
    await receiver.wait_event("channel_occupied", control)

    await sock.send("pusher:unsubscribe", {"channel": flapping})
    await sock.send("pusher:unsubscribe", {"channel": control})
    await join(sock, running, flapping)  # back well inside the delay
    # The control channel was left after the flapping one: once its vacated is out, the flapping
    # channel's would have been too.
    await receiver.wait_event("channel_vacated", control, timeout=DELAY + 4)
    await barrier(running, other, receiver)
    assert receiver.events("channel_vacated", flapping) == []
    assert receiver.events("channel_occupied", flapping) == [{"name": "channel_occupied", "channel": flapping}]


# --- presence ----------------------------------------------------------------------------------


async def test_member_added_and_removed_once_per_user_not_per_socket(start, receiver, connect) -> None:
    running = hooked(start, receiver)
    channel = fresh("presence-team-")
    tab1, tab2, bob, other = [await connect(running) for _ in range(4)]
    await join(tab1, running, channel, "ann")
    await join(tab2, running, channel, "ann")
    await join(bob, running, channel, "bob")
    await barrier(running, other, receiver)
    assert receiver.events("member_added", channel) == [
        {"name": "member_added", "channel": channel, "user_id": "ann"},
        {"name": "member_added", "channel": channel, "user_id": "bob"},
    ]

    await tab1.close()  # ann still has tab2
    await bob.send("pusher:unsubscribe", {"channel": channel})
    # Bob left after ann's first tab closed: once bob's removal is out, ann's would have been too.
    removed = await receiver.wait_event("member_removed", channel, timeout=DELAY + 4)
    assert removed == {"name": "member_removed", "channel": channel, "user_id": "bob"}
    await barrier(running, other, receiver)
    assert [e["user_id"] for e in receiver.events("member_removed", channel)] == ["bob"]

    await tab2.close()
    await wait_for(lambda: len(receiver.events("member_removed", channel)) == 2, timeout=DELAY + 4)
    assert receiver.events("member_removed", channel)[1] == {
        "name": "member_removed",
        "channel": channel,
        "user_id": "ann",
    }
    await receiver.wait_event("channel_vacated", channel, timeout=DELAY + 4)
    assert len(receiver.events("member_added", channel)) == 2


async def test_member_back_within_the_delay_sends_neither_removed_nor_a_second_added(start, receiver, connect) -> None:
    running = hooked(start, receiver)
    channel = fresh("presence-flap-")
    ann, bob, other = [await connect(running) for _ in range(3)]
    await join(ann, running, channel, "ann")
    await join(bob, running, channel, "bob")
    await ann.expect("pusher_internal:member_added", channel)
    await wait_for(lambda: len(receiver.events("member_added", channel)) == 2)

    await ann.send("pusher:unsubscribe", {"channel": channel})
    await bob.send("pusher:unsubscribe", {"channel": channel})
    await join(ann, running, channel, "ann")  # ann is back at once; bob is not
    await wait_for(lambda: receiver.events("member_removed", channel), timeout=DELAY + 4)
    await barrier(running, other, receiver)
    assert [e["user_id"] for e in receiver.events("member_removed", channel)] == ["bob"]
    assert [e["user_id"] for e in receiver.events("member_added", channel)] == ["ann", "bob"]


# --- client events -----------------------------------------------------------------------------


async def test_client_event_webhook_names_the_sender_socket(start, receiver, connect) -> None:
    running = hooked(start, receiver)
    channel = fresh("private-chat-")
    sender, peer = await connect(running), await connect(running)
    await join(sender, running, channel)
    await join(peer, running, channel)
    await sender.send("client-typing", {"who": "me"}, channel=channel)
    await peer.expect("client-typing", channel)

    event = await receiver.wait_event("client_event", channel)
    assert set(event) == {"name", "channel", "event", "data", "socket_id"}, event  # no user_id off presence
    assert event["event"] == "client-typing"
    assert event["socket_id"] == sender.socket_id
    assert json.loads(event["data"]) == {"who": "me"}


async def test_client_event_webhook_on_presence_carries_the_user_id(start, receiver, connect) -> None:
    running = hooked(start, receiver)
    channel = fresh("presence-chat-")
    sender, peer = await connect(running), await connect(running)
    await join(sender, running, channel, "ann")
    await join(peer, running, channel, "bob")
    await sender.send("client-wave", "hello", channel=channel)
    event = await receiver.wait_event("client_event", channel)
    assert event == {
        "name": "client_event",
        "channel": channel,
        "event": "client-wave",
        "data": "hello",
        "socket_id": sender.socket_id,
        "user_id": "ann",
    }


async def test_refused_client_event_sends_no_webhook(start, receiver, connect) -> None:
    running = hooked(start, receiver)
    channel = fresh("private-refused-")
    outsider, member = await connect(running), await connect(running)
    await join(member, running, channel)
    await outsider.send("client-sneak", {}, channel=channel)
    frame = await outsider.expect("pusher:error")
    assert frame["data"]["code"] == 4009, frame
    await barrier(running, member, receiver)
    assert receiver.events("client_event", channel) == []


# --- cache_miss --------------------------------------------------------------------------------


async def test_cache_miss_webhook_once_per_channel_until_something_is_cached(start, receiver, connect) -> None:
    running = hooked(start, receiver, CLARION_CACHE_TTL="1")
    channel = fresh("cache-quotes-")
    first, second, other = [await connect(running) for _ in range(3)]
    for sock in (first, second):
        await join(sock, running, channel)
        await sock.expect("pusher:cache_miss", channel)
    await barrier(running, other, receiver)
    assert receiver.events("cache_miss", channel) == [{"name": "cache_miss", "channel": channel}]

    # Something is cached, then expires: the next miss is news again.
    await trigger(running, channel, "quote", "1")
    await first.expect("quote", channel)

    async def newcomer_misses() -> bool:
        sock = await connect(running)
        await join(sock, running, channel)
        event: str = (await sock.recv())["event"]
        return event == "pusher:cache_miss"

    await wait_for(newcomer_misses, timeout=5, interval=0.2)
    await wait_for(lambda: len(receiver.events("cache_miss", channel)) == 2)
    await barrier(running, other, receiver)
    assert len(receiver.events("cache_miss", channel)) == 2


# --- subscription_count ------------------------------------------------------------------------


async def test_subscription_count_webhook_on_join_and_leave_but_not_for_presence(start, receiver, connect) -> None:
    running = hooked(start, receiver)  # every event type, counts to sockets off
    channel, presence = fresh("counted-"), fresh("presence-counted-")
    first, second, other = [await connect(running) for _ in range(3)]
    await join(first, running, channel)
    await wait_for(lambda: receiver.events("subscription_count", channel))
    await join(second, running, channel)
    await wait_for(lambda: len(receiver.events("subscription_count", channel)) == 2)
    await second.send("pusher:unsubscribe", {"channel": channel})
    await wait_for(lambda: len(receiver.events("subscription_count", channel)) == 3)
    counts = [e["subscription_count"] for e in receiver.events("subscription_count", channel)]
    assert counts == [1, 2, 1]
    assert receiver.events("subscription_count", channel)[0] == {
        "name": "subscription_count",
        "channel": channel,
        "subscription_count": 1,
    }

    await join(first, running, presence, "ann")
    await join(second, running, presence, "bob")
    await barrier(running, other, receiver)
    assert receiver.events("member_added", presence)
    assert receiver.events("subscription_count", presence) == []


async def test_subscription_count_webhook_with_only_that_event_type(start, receiver, connect) -> None:
    config = f"""
[[apps]]
id = "300"
key = "count-key"
secret = "count-secret"

[[apps.webhooks]]
url = "{receiver.url("/counts")}"
event_types = ["subscription_count"]
"""
    running = start(config=config)
    channel = fresh("counted-")
    sock = await connect(running, "count-key")
    await subscribe(sock, channel, key="count-key", secret="count-secret")
    await wait_for(lambda: receiver.events("subscription_count", channel))
    assert receiver.events() == [{"name": "subscription_count", "channel": channel, "subscription_count": 1}]
    # The sockets themselves get no count: that is CLARION_SUBSCRIPTION_COUNT's business.
    status, _ = await api_call(
        running.http_url,
        "count-key",
        "count-secret",
        "POST",
        "/apps/300/events",
        {"name": "m", "channel": channel, "data": "1"},
    )
    assert status == 200
    assert await sock.recv() == {"event": "m", "channel": channel, "data": "1"}


# --- targets and filters -----------------------------------------------------------------------


async def test_event_types_filter_is_honoured_per_target(start, receiver, connect) -> None:
    config = f"""
[[apps]]
id = "400"
key = "filter-key"
secret = "filter-secret"

[[apps.webhooks]]
url = "{receiver.url("/occupancy")}"
event_types = ["channel_occupied", "channel_vacated"]

[[apps.webhooks]]
url = "{receiver.url("/chat")}"
event_types = ["client_event"]
"""
    running = start(config=config)
    creds = {"key": "filter-key", "secret": "filter-secret"}
    channel = fresh("private-filtered-")
    sender, peer = await connect(running, "filter-key"), await connect(running, "filter-key")
    await subscribe(sender, channel, **creds)
    await subscribe(peer, channel, **creds)
    await sender.send("client-hi", {}, channel=channel)
    await peer.expect("client-hi", channel)
    await sender.send("pusher:unsubscribe", {"channel": channel})
    await peer.send("pusher:unsubscribe", {"channel": channel})

    await receiver.wait_event("channel_vacated", channel, "/occupancy", timeout=DELAY + 6)
    await receiver.wait_event("client_event", channel, "/chat")
    # A later client event is the barrier for /chat.
    later = fresh("private-later-")
    await subscribe(sender, later, **creds)
    await sender.send("client-last", {}, channel=later)
    await receiver.wait_event("client_event", later, "/chat")

    occupancy = [e["name"] for e in receiver.events(path="/occupancy") if e["channel"] == channel]
    chat = [e["name"] for e in receiver.events(path="/chat")]
    assert occupancy == ["channel_occupied", "channel_vacated"]
    assert chat == ["client_event", "client_event"]
    assert all(p.path in ("/occupancy", "/chat") for p in receiver.posts)


def one_target(receiver: Receiver, event_types: list[str]) -> str:
    """A config: one app (id 450, key "one-key") with one target wanting only ``event_types``."""
    return f"""
webhook_delay = {DELAY}

[[apps]]
id = "450"
key = "one-key"
secret = "one-secret"

[[apps.webhooks]]
url = "{receiver.url("/some-types")}"
event_types = {json.dumps(event_types)}
"""


ONE = {"key": "one-key", "secret": "one-secret"}


@pytest.mark.parametrize("wanted", ["channel_occupied", "channel_vacated"])
async def test_quick_resubscribe_is_hidden_from_a_target_that_wants_only_one_occupancy_type(
    start, receiver, connect, wanted: str
) -> None:
    """The delay that hides a quick leave-and-return does not depend on the types a target asked
    for: a channel_occupied-only target sees one occupation, a channel_vacated-only one no vacancy."""
    running = start(config=one_target(receiver, [wanted]))
    flapping, control = fresh("flap-"), fresh("control-")
    sock, other = await connect(running, "one-key"), await connect(running, "one-key")
    await subscribe(sock, flapping, **ONE)
    await subscribe(sock, control, **ONE)
    if wanted == "channel_occupied":
        await receiver.wait_event("channel_occupied", control)

    await sock.send("pusher:unsubscribe", {"channel": flapping})
    await sock.send("pusher:unsubscribe", {"channel": control})
    await subscribe(sock, flapping, **ONE)  # back well inside the delay; the control channel is not
    if wanted == "channel_vacated":
        # The control channel was left after the flapping one: its vacated comes out no earlier.
        await receiver.wait_event("channel_vacated", control, timeout=DELAY + 4)
    else:
        await asyncio.sleep(DELAY + 1.2)  # past the delay and the next housekeeping tick: the behaviour under test
        marker = fresh("barrier-")
        await subscribe(other, marker, **ONE)
        await receiver.wait_event("channel_occupied", marker)

    expected = [{"name": wanted, "channel": flapping}] if wanted == "channel_occupied" else []
    assert receiver.events(channel=flapping) == expected


@pytest.mark.parametrize("wanted", ["member_added", "member_removed"])
async def test_member_back_within_the_delay_is_hidden_from_a_target_that_wants_only_one_member_type(
    start, receiver, connect, wanted: str
) -> None:
    running = start(config=one_target(receiver, [wanted]))
    channel = fresh("presence-flap-")
    ann, control, late = [await connect(running, "one-key") for _ in range(3)]
    await subscribe(ann, channel, user_id="ann", **ONE)
    await subscribe(control, channel, user_id="control", **ONE)
    await ann.expect("pusher_internal:member_added", channel)
    if wanted == "member_added":
        await wait_for(lambda: len(receiver.events(channel=channel)) == 2)

    await ann.send("pusher:unsubscribe", {"channel": channel})
    await control.send("pusher:unsubscribe", {"channel": channel})
    await subscribe(ann, channel, user_id="ann", **ONE)  # back well inside the delay
    if wanted == "member_removed":
        # The control member left after ann: ann's removal, had it been kept, would be out first.
        await wait_for(lambda: receiver.events(channel=channel), timeout=DELAY + 4)
    else:
        await asyncio.sleep(DELAY + 1.2)  # past the delay and the next housekeeping tick: the behaviour under test
        await subscribe(late, channel, user_id="late", **ONE)
        await wait_for(lambda: any(e["user_id"] == "late" for e in receiver.events(channel=channel)))

    users = [event["user_id"] for event in receiver.events(wanted, channel)]
    if wanted == "member_added":
        assert users == ["ann", "control", "late"]
    else:
        assert users == ["control"]


async def test_two_apps_each_get_only_their_own_webhooks(start, receiver, connect) -> None:
    config = f"""
webhook_delay = {DELAY}

[[apps]]
id = "100"
key = "key-a"
secret = "secret-aaaa"

[[apps.webhooks]]
url = "{receiver.url("/a")}"

[[apps]]
id = "200"
key = "key-b"
secret = "secret-bbbb"

[[apps.webhooks]]
url = "{receiver.url("/b")}"
"""
    running = start(config=config)
    channel = fresh("shared-")
    on_a, on_b = await connect(running, "key-a"), await connect(running, "key-b")
    await subscribe(on_a, channel, key="key-a", secret="secret-aaaa")
    await receiver.wait_event("channel_occupied", channel, "/a")
    await subscribe(on_b, channel, key="key-b", secret="secret-bbbb")
    await receiver.wait_event("channel_occupied", channel, "/b")
    await on_a.send("pusher:unsubscribe", {"channel": channel})
    await receiver.wait_event("channel_vacated", channel, "/a", timeout=DELAY + 4)
    # App B's channel of the same name is still occupied.
    marker = fresh("barrier-")
    await subscribe(on_b, marker, key="key-b", secret="secret-bbbb")
    await receiver.wait_event("channel_occupied", marker, "/b")
    assert receiver.events("channel_occupied", channel, "/b") == [{"name": "channel_occupied", "channel": channel}]
    assert receiver.events("channel_vacated", channel, "/b") == []

    apps = {
        "/a": ("key-a", pusher.Pusher(app_id="100", key="key-a", secret="secret-aaaa")),
        "/b": ("key-b", pusher.Pusher(app_id="200", key="key-b", secret="secret-bbbb")),
    }
    for post in receiver.posts:
        assert post.path in apps, post.path
        (key, mine), (other_key, theirs) = apps[post.path], apps["/b" if post.path == "/a" else "/a"]
        assert post.headers["X-Pusher-Key"] == key
        assert mine.validate_webhook(key, post.headers["X-Pusher-Signature"], post.body)
        assert theirs.validate_webhook(other_key, post.headers["X-Pusher-Signature"], post.body) is None


# --- failures ----------------------------------------------------------------------------------


async def test_failed_webhook_is_retried_and_delivered_once(start, receiver, connect) -> None:
    running = hooked(start, receiver)
    channel = fresh("retried-")
    receiver.fail_next = 2
    receiver.fail_when = lambda events: {"name": "channel_occupied", "channel": channel} in events
    sock, other = await connect(running), await connect(running)
    await join(sock, running, channel)
    # Backoff of 1 s then 2 s: the third attempt lands about 3 s later.
    await receiver.wait_event("channel_occupied", channel, timeout=8)
    attempts = [p for p in receiver.posts if {"name": "channel_occupied", "channel": channel} in p.events]
    assert [p.status for p in attempts] == [500, 500, 200]
    assert attempts[1].at - attempts[0].at >= 0.9
    sdk = pusher.Pusher(app_id=running.app_id, key=running.key, secret=running.secret)
    final = attempts[-1]
    assert sdk.validate_webhook(final.headers["X-Pusher-Key"], final.headers["X-Pusher-Signature"], final.body)

    await barrier(running, other, receiver)
    assert len(receiver.events("channel_occupied", channel)) == 1
    assert await failures(running) == 2


def attempts_for(receiver: Receiver, channel: str) -> list[Post]:
    return [p for p in receiver.posts if {"name": "channel_occupied", "channel": channel} in p.events]


def dropped_lines(server: Any, reason: str) -> list[str]:
    return [
        line
        for line in server.log_text().splitlines()
        if "webhook batch dropped" in line and f"reason={reason} " in line
    ]


async def test_a_batch_the_target_keeps_refusing_holds_up_no_later_batch_and_is_dropped_with_its_types(
    start, receiver, connect
) -> None:
    """The target answers 500 to any body with an event on a private-encrypted- channel. Later
    webhooks still arrive while the refused batch waits out its backoff (1, 2, 4 s); a second
    refused batch gets retries of its own; each is dropped when the retry window (10 s) closes,
    counted per event type and logged with its types."""
    receiver.refuse = on_encrypted_channel
    running = occupancy_hooked(start, receiver, CLARION_WEBHOOK_RETRY_FOR="10")
    sock, other = await connect(running), await connect(running)
    refused = fresh("private-encrypted-first-")
    await join(sock, running, refused)
    await wait_for(lambda: attempts_for(receiver, refused))

    later = [fresh("later-") for _ in range(3)]
    for channel in later:
        await join(other, running, channel)
        await receiver.wait_event("channel_occupied", channel, timeout=20)
        # Delivered while the refused batch still had retries to come (its 4th and last attempt
        # is 7 s after its first): the refused batch did not stand in front of it.
        assert len(attempts_for(receiver, refused)) < 4, [p.at for p in attempts_for(receiver, refused)]
        assert not dropped_lines(running, "retries_exhausted")

    second = fresh("private-encrypted-second-")
    await join(other, running, second)
    await wait_for(lambda: attempts_for(receiver, second), timeout=20)
    assert len(attempts_for(receiver, refused)) < 4

    await wait_for(lambda: len(dropped_lines(running, "retries_exhausted")) == 2, timeout=30)
    for channel in (refused, second):
        attempts = attempts_for(receiver, channel)
        assert [p.status for p in attempts] == [500, 500, 500, 500], channel
        gaps = [b.at - a.at for a, b in itertools.pairwise(attempts)]
        assert gaps[0] >= 0.9 and gaps[1] >= 1.9 and gaps[2] >= 3.9, gaps
    for line in dropped_lines(running, "retries_exhausted"):
        assert line.endswith(" attempts=4 events=1 types=channel_occupied:1"), line
    assert (
        await metric(
            running, "clarion_webhook_dropped_total", event_type="channel_occupied", reason="retries_exhausted"
        )
        == 2
    )
    # Everything else arrived once.
    for channel in later:
        assert receiver.events("channel_occupied", channel) == [{"name": "channel_occupied", "channel": channel}]


async def test_retries_wait_in_a_bounded_heap_and_what_does_not_fit_is_dropped_and_logged(
    start, receiver, connect
) -> None:
    """With CLARION_WEBHOOK_QUEUE=10, at most 10 refused events wait for retries; the 11th is
    dropped at once (retry_full), and those still waiting at shutdown are dropped and logged too."""
    receiver.refuse = on_encrypted_channel
    running = occupancy_hooked(start, receiver, CLARION_WEBHOOK_QUEUE="10")
    sock = await connect(running)
    channels = [fresh("private-encrypted-pile-") for _ in range(11)]
    for channel in channels:
        await join(sock, running, channel)
        await wait_for(lambda channel=channel: attempts_for(receiver, channel), timeout=10)

    await wait_for(lambda: dropped_lines(running, "retry_full"), timeout=10)
    assert dropped_lines(running, "retry_full")[0].endswith(" types=channel_occupied:1")
    assert (
        await metric(running, "clarion_webhook_dropped_total", event_type="channel_occupied", reason="retry_full") == 1
    )
    running.proc.terminate()
    await asyncio.to_thread(running.proc.wait, 20)

    await wait_for(lambda: dropped_lines(running, "shutdown"), timeout=10)
    assert dropped_lines(running, "shutdown")[0].endswith(" events=10 types=channel_occupied:10")


async def test_dead_webhook_endpoint_costs_no_delivery_and_counts_failures(server_factory, connect) -> None:
    running = server_factory(
        env={"CLARION_WEBHOOK_URL": f"http://127.0.0.1:{closed_port()}/hook", "CLARION_WEBHOOK_DELAY": str(DELAY)}
    )
    await check_delivery_goes_on_while_webhooks_fail(running, connect)


async def test_hanging_webhook_receiver_costs_no_delivery_and_counts_failures(start, receiver, connect) -> None:
    receiver.hang = True
    running = hooked(start, receiver, CLARION_WEBHOOK_TIMEOUT="1")
    await check_delivery_goes_on_while_webhooks_fail(running, connect)
    assert receiver.posts  # the receiver was reached, and held the request


async def check_delivery_goes_on_while_webhooks_fail(running: Any, connect: Connect) -> None:
    """API and client events reach subscribers while every webhook POST fails, and the failures
    show in ``clarion_webhook_failures_total``, which keeps rising."""
    first, second = await connect(running), await connect(running)

    async def one_round(n: int) -> None:
        channel = fresh("private-busy-")  # a fresh channel: more webhooks pile up each round
        await join(first, running, channel)
        await join(second, running, channel)
        await trigger(running, channel, "api-event", f'{{"round":{n}}}')
        for sock in (first, second):
            assert await sock.recv() == {"event": "api-event", "channel": channel, "data": f'{{"round":{n}}}'}
        await first.send("client-ping", {"round": n}, channel=channel)
        frame = await second.expect("client-ping", channel)
        assert json.loads(frame["data"]) == {"round": n}

    await one_round(0)

    async def failures_reach(count: float) -> None:
        async def reached() -> bool:
            return await failures(running) >= count

        await wait_for(reached, timeout=8, interval=0.1)

    await failures_reach(1)
    seen = await failures(running)
    await one_round(1)
    await one_round(2)
    await failures_reach(seen + 1)
    await one_round(3)


# --- refused settings --------------------------------------------------------------------------


def refused_start(tmp_path: Path, env: dict[str, str], config: str | None = None) -> subprocess.CompletedProcess[str]:
    full = {k: v for k, v in os.environ.items() if not k.startswith("CLARION_")}
    full.update({"CLARION_HOST": "127.0.0.1", "CLARION_PORT": "0", **env})
    args = [sys.executable, "-m", "clarion", "serve"]
    if config is not None:
        path = tmp_path / "hooks.toml"
        path.write_text(config)
        args += ["--config", str(path)]
    try:
        return subprocess.run(args, env=full, cwd=ROOT, capture_output=True, text=True, timeout=20, check=False)
    except subprocess.TimeoutExpired:
        pytest.fail("clarion serve started with a bad webhook setting instead of refusing it")


APP_ENV = {"CLARION_APP_ID": "9", "CLARION_APP_KEY": "k9", "CLARION_APP_SECRET": "secret-9"}


@pytest.mark.parametrize("url", ["ftp://hooks.example/in", "hooks.example/in", "http://", "javascript:alert(1)"])
def test_webhook_url_that_is_not_http_exits_2_naming_it(tmp_path: Path, url: str) -> None:
    result = refused_start(tmp_path, {**APP_ENV, "CLARION_WEBHOOK_URL": url})
    assert result.returncode == 2, (result.stdout, result.stderr)
    assert "listening on" not in result.stdout
    assert re.search(r"webhook_url|CLARION_WEBHOOK_URL", result.stderr), result.stderr


def test_toml_webhook_url_that_is_not_http_exits_2(tmp_path: Path) -> None:
    config = """
[[apps]]
id = "9"
key = "k9"
secret = "secret-9"

[[apps.webhooks]]
url = "file:///etc/passwd"
"""
    result = refused_start(tmp_path, {}, config)
    assert result.returncode == 2, (result.stdout, result.stderr)
    assert re.search(r"webhooks.*url", result.stderr), result.stderr


def test_unknown_webhook_event_type_exits_2_naming_it(tmp_path: Path) -> None:
    config = """
[[apps]]
id = "9"
key = "k9"
secret = "secret-9"

[[apps.webhooks]]
url = "http://127.0.0.1:9/hook"
event_types = ["channel_occupied", "channel_exploded"]
"""
    result = refused_start(tmp_path, {}, config)
    assert result.returncode == 2, (result.stdout, result.stderr)
    assert "listening on" not in result.stdout
    assert "channel_exploded" in result.stderr, result.stderr
    assert re.search(r"event.type", result.stderr), result.stderr


async def test_events_that_pile_up_during_a_post_go_out_together_in_one_body(start, receiver, connect) -> None:
    # A long POST timeout: the held POST must still be waiting when it is released.
    running = hooked(start, receiver, CLARION_WEBHOOK_TIMEOUT="60")
    receiver.hold_next = 1
    sock = await connect(running)
    await join(sock, running, fresh("batch-first-"))
    # The first POST is held by the receiver: the sender waits for its answer, and queues the rest.
    await wait_for(lambda: receiver.posts)
    channels = [fresh("batch-") for _ in range(5)]
    for channel in channels:
        await join(sock, running, channel)
    receiver.held.set()
    for channel in channels:
        await receiver.wait_event("channel_occupied", channel, timeout=8)
    # The occupied events queued behind the held POST go out together. (Subscription counts are
    # read back from the backend first, so through Redis one may follow in a later body.)
    bodies = [
        p
        for p in receiver.delivered()
        if any(e["name"] == "channel_occupied" and e.get("channel") in channels for e in p.events)
    ]
    assert len(bodies) == 1, [(p.status, p.events) for p in receiver.posts]
    assert {e["channel"] for e in bodies[0].events if e["name"] == "channel_occupied"} == set(channels)
