"""Missed-message recovery over real sockets: positions on kept channels, ``clarion:resume`` after
a gap (one node, and two nodes through Redis), epochs, refusals, ``clarion:rewind`` and resume or
rewind asked for inside ``pusher:subscribe``. Every event is checked: its serial, its data, its
order, and that it came once."""

from __future__ import annotations

import asyncio
import contextlib
import json
import uuid
from collections.abc import Sequence
from typing import Any

from clarion.protocol import signatures
from pusherclient import PusherSocket, api_call, expect_error, fresh, payload, still_open
from redisproc import SHARED_REDIS_URL

EVENT = "update"


async def publish(server: Any, channel: str, n: int) -> None:
    status, answer = await server.trigger(channel, EVENT, json.dumps({"n": n}))
    assert (status, answer) == (200, {}), answer


async def join(server: Any, connect: Any, channel: str, **extra: Any) -> PusherSocket:
    """A socket subscribed to ``channel`` (signed when private); ``extra`` goes into the subscribe."""
    sock: PusherSocket = await connect(server)
    data: dict[str, Any] = {"channel": channel, **extra}
    if channel.startswith(("private-", "presence-")):
        data["auth"] = signatures.channel_auth(server.key, server.secret, sock.socket_id, channel)
    await sock.send("pusher:subscribe", data)
    await sock.expect("pusher_internal:subscription_succeeded", channel)
    return sock


async def next_event(sock: PusherSocket, timeout: float = 5.0) -> dict[str, Any]:
    """The next frame of the recovery stream: a channel event or a clarion: marker."""
    while True:
        frame = await sock.recv_raw(timeout)
        if frame["event"] == EVENT or frame["event"].startswith("clarion:"):
            return frame
        assert frame["event"].startswith("pusher"), frame


def n_of(frame: dict[str, Any]) -> int:
    n: int = payload(frame)["n"]
    return n


async def position_after_one_event(server: Any, sock: PusherSocket, channel: str, n: int = 0) -> tuple[str, int]:
    await publish(server, channel, n)
    frame = await next_event(sock)
    assert frame["event"] == EVENT and n_of(frame) == n and "replayed" not in frame
    return frame["epoch"], frame["serial"]


async def publish_over(server: Any, channel: str, first: int, count: int, seconds: float) -> None:
    """``count`` events, spread evenly over ``seconds``, numbered from ``first``."""
    for i in range(count):
        await publish(server, channel, first + i)
        await asyncio.sleep(seconds / count)


async def expect_replay(sock: PusherSocket, epoch: str, serials: Sequence[int], numbers: Sequence[int]) -> None:
    """Exactly these events, replayed, in order, then ``clarion:resumed`` recovered."""
    for serial, n in zip(serials, numbers, strict=True):
        frame = await next_event(sock)
        assert frame["event"] == EVENT, frame
        assert (frame["epoch"], frame["serial"], n_of(frame), frame.get("replayed")) == (epoch, serial, n, True)
    done = await next_event(sock)
    assert done["event"] == "clarion:resumed", done
    assert payload(done) == {"channel": done["channel"], "recovered": True, "epoch": epoch, "serial": serials[-1]}


# --- the scenarios -----------------------------------------------------------------------


async def test_a_client_away_while_50_events_are_published_gets_all_50_in_order_once(server, connect) -> None:
    channel = fresh("private-away-")
    first = await join(server, connect, channel)
    epoch, serial = await position_after_one_event(server, first, channel)
    await first.close()

    await publish_over(server, channel, 1, 50, seconds=3)

    back = await join(server, connect, channel)
    await back.send("clarion:resume", {"channel": channel, "epoch": epoch, "serial": serial})
    await expect_replay(back, epoch, range(serial + 1, serial + 51), range(1, 51))
    # Then live again, from the next serial, not marked as replayed.
    await publish(server, channel, 51)
    live = await next_event(back)
    assert (live["serial"], n_of(live), "replayed" in live) == (serial + 51, 51, False)
    await back.nothing(0.3)


async def test_the_same_across_two_nodes_through_redis(server_factory, connect) -> None:
    env = {
        "CLARION_SCALING": "redis",
        "CLARION_REDIS_URL": SHARED_REDIS_URL,
        "CLARION_SCALING_PREFIX": f"recovery-{uuid.uuid4().hex[:12]}",
        # A heartbeat (and a check for dead nodes) every 0.7 s: the absence spans several of them.
        "CLARION_NODE_TTL": "2",
    }
    node_a, node_b = server_factory(env=env), server_factory(env=env)
    channel = fresh("private-two-nodes-")
    first = await join(node_a, connect, channel)
    epoch, serial = await position_after_one_event(node_b, first, channel)
    await first.close()

    # Published through both nodes while away: one history, one sequence of serials.
    await asyncio.gather(
        publish_over(node_a, channel, 1, 25, seconds=3),
        publish_over(node_b, channel, 1001, 25, seconds=3),
    )

    back = await join(node_b, connect, channel)
    await back.send("clarion:resume", {"channel": channel, "epoch": epoch, "serial": serial})
    replayed = []
    while (frame := await next_event(back))["event"] == EVENT:
        assert frame["epoch"] == epoch and frame["replayed"] is True
        replayed.append(frame)
    assert frame["event"] == "clarion:resumed" and payload(frame)["recovered"] is True
    assert [f["serial"] for f in replayed] == list(range(serial + 1, serial + 51))
    numbers = [n_of(f) for f in replayed]
    assert sorted(numbers) == [*range(1, 26), *range(1001, 1026)]
    # Each publisher's events keep their order.
    assert [n for n in numbers if n < 1000] == list(range(1, 26))
    assert [n for n in numbers if n > 1000] == list(range(1001, 1026))
    # And a node that was not involved answers with the same history.
    node_c = server_factory(env=env)
    third = await join(node_c, connect, channel)
    await third.send("clarion:resume", {"channel": channel, "epoch": epoch, "serial": serial + 40})
    await expect_replay(third, epoch, range(serial + 41, serial + 51), [n_of(f) for f in replayed[40:]])


async def test_an_epoch_change_gives_recovered_false_and_replays_nothing(server_factory, connect) -> None:
    # History lives in the server process (or its own Redis prefix): a restarted server starts a
    # new epoch, so a client's old position cannot be trusted.
    before = server_factory()
    channel = fresh("private-epoch-")
    sock = await join(before, connect, channel)
    epoch, serial = await position_after_one_event(before, sock, channel)

    after = server_factory()
    await publish(after, channel, 1)
    back = await join(after, connect, channel)
    await back.send("clarion:resume", {"channel": channel, "epoch": epoch, "serial": serial})
    answer = await next_event(back)
    assert answer["event"] == "clarion:resumed"
    data = payload(answer)
    assert data["recovered"] is False and data["reason"] == "epoch_changed"
    assert data["epoch"] != epoch and data["serial"] == 1
    await publish(after, channel, 2)
    live = await next_event(back)
    assert (live["epoch"], live["serial"], n_of(live), "replayed" in live) == (data["epoch"], 2, 2, False)


async def test_resume_on_a_channel_the_socket_is_not_subscribed_to_is_refused(server, connect) -> None:
    channel = fresh("private-not-mine-")
    owner = await join(server, connect, channel)
    epoch, serial = await position_after_one_event(server, owner, channel)
    await publish(server, channel, 1)

    stranger = await connect(server)
    await stranger.send("clarion:resume", {"channel": channel, "epoch": epoch, "serial": serial - 1})
    error = await expect_error(stranger, 4009)
    assert "subscription" in error["message"]
    await stranger.send("clarion:rewind", {"channel": channel, "count": 10})
    await expect_error(stranger, 4009)
    # Subscribed and then unsubscribed is not subscribed either.
    left = await join(server, connect, channel)
    await left.send("pusher:unsubscribe", {"channel": channel})
    await left.send("clarion:resume", {"channel": channel, "epoch": epoch, "serial": 0})
    await expect_error(left, 4009)
    await stranger.nothing(0.3)
    await still_open(stranger)
    await still_open(left)


# --- positions -----------------------------------------------------------------------------------


async def test_kept_events_carry_consecutive_serials_and_other_frames_carry_none(server, connect) -> None:
    channel = fresh("presence-positions-")
    sock = await connect(server)
    member = json.dumps({"user_id": "u1"})
    await sock.send(
        "pusher:subscribe",
        {
            "channel": channel,
            "auth": signatures.channel_auth(server.key, server.secret, sock.socket_id, channel, member),
            "channel_data": member,
        },
    )
    await sock.expect("pusher_internal:subscription_succeeded", channel)
    other = await connect(server)
    other_member = json.dumps({"user_id": "u2"})
    await other.send(
        "pusher:subscribe",
        {
            "channel": channel,
            "auth": signatures.channel_auth(server.key, server.secret, other.socket_id, channel, other_member),
            "channel_data": other_member,
        },
    )
    added = await sock.recv_raw()
    assert added["event"] == "pusher_internal:member_added" and "serial" not in added
    await other.expect("pusher_internal:subscription_succeeded", channel)
    await other.send("client-typing", {"x": 1}, channel)
    whisper = await sock.recv_raw()
    assert whisper["event"] == "client-typing" and "serial" not in whisper and "epoch" not in whisper
    for n in range(3):
        await publish(server, channel, n)
    frames = [await sock.recv_raw() for _ in range(3)]
    assert [f["serial"] for f in frames] == [1, 2, 3] and len({f["epoch"] for f in frames}) == 1
    assert [json.loads(f["data"]) for f in frames] == [{"n": 0}, {"n": 1}, {"n": 2}]


async def test_public_channels_keep_no_history_by_default_and_say_so(server, connect) -> None:
    channel = fresh("public-")
    sock = await join(server, connect, channel)
    await publish(server, channel, 0)
    frame = await sock.recv_raw()
    assert "serial" not in frame and "epoch" not in frame
    await sock.send("clarion:resume", {"channel": channel, "epoch": "abc", "serial": 0})
    answer = payload(await next_event(sock))
    assert answer == {"channel": channel, "recovered": False, "epoch": None, "serial": 0, "reason": "history_off"}


async def test_resume_from_the_latest_position_recovers_with_nothing_to_replay(server, connect) -> None:
    channel = fresh("private-nothing-missed-")
    sock = await join(server, connect, channel)
    epoch, serial = await position_after_one_event(server, sock, channel)
    await sock.close()
    back = await join(server, connect, channel)
    await back.send("clarion:resume", {"channel": channel, "epoch": epoch, "serial": serial})
    answer = await next_event(back)
    assert payload(answer) == {"channel": channel, "recovered": True, "epoch": epoch, "serial": serial}


async def test_more_missed_than_history_holds_gives_recovered_false_too_old(server_factory, connect) -> None:
    server = server_factory(env={"CLARION_HISTORY": "private-:10:300"})
    channel = fresh("private-too-old-")
    sock = await join(server, connect, channel)
    epoch, serial = await position_after_one_event(server, sock, channel)
    await sock.close()
    for n in range(1, 400):
        await publish(server, channel, n)
    back = await join(server, connect, channel)
    await back.send("clarion:resume", {"channel": channel, "epoch": epoch, "serial": serial})
    answer = await next_event(back)
    assert answer["event"] == "clarion:resumed", answer
    assert payload(answer)["recovered"] is False and payload(answer)["reason"] == "too_old"
    # An unknown future position is refused the same way, with its own reason.
    await back.send("clarion:resume", {"channel": channel, "epoch": epoch, "serial": serial + 10_000})
    assert payload(await next_event(back))["reason"] == "unknown_position"


async def test_history_older_than_its_ttl_is_not_replayed(server_factory, connect) -> None:
    server = server_factory(env={"CLARION_HISTORY": "private-:100:1"})
    channel = fresh("private-ttl-")
    sock = await join(server, connect, channel)
    epoch, serial = await position_after_one_event(server, sock, channel)
    await sock.close()
    await publish(server, channel, 1)
    await asyncio.sleep(1.3)
    await publish(server, channel, 2)
    back = await join(server, connect, channel)
    await back.send("clarion:resume", {"channel": channel, "epoch": epoch, "serial": serial})
    assert payload(await next_event(back))["reason"] == "too_old"
    await back.send("clarion:resume", {"channel": channel, "epoch": epoch, "serial": serial + 1})
    await expect_replay(back, epoch, range(serial + 2, serial + 3), range(2, 3))


async def test_malformed_resume_and_rewind_requests_get_4200_and_the_socket_stays(server, connect) -> None:
    channel = fresh("private-malformed-")
    sock = await join(server, connect, channel)
    bad = [
        ("clarion:resume", {"channel": channel, "serial": 1}),
        ("clarion:resume", {"channel": channel, "epoch": "x y", "serial": 1}),
        ("clarion:resume", {"channel": channel, "epoch": "e", "serial": -1}),
        ("clarion:resume", {"channel": channel, "epoch": "e", "serial": True}),
        ("clarion:resume", {"channel": channel, "epoch": "e", "serial": 2**60}),
        ("clarion:rewind", {"channel": channel}),
        ("clarion:rewind", {"channel": channel, "count": 3, "seconds": 3}),
        ("clarion:rewind", {"channel": channel, "count": 0}),
        ("clarion:rewind", {"channel": channel, "seconds": "10"}),
        ("clarion:resume", "not an object"),
    ]
    for event, data in bad:
        await sock.send(event, data)
        await expect_error(sock, 4200)
    await still_open(sock)
    await publish(server, channel, 7)
    assert n_of(await next_event(sock)) == 7


# --- rewind ----------------------------------------------------------------------------------------


async def test_rewind_by_count_sends_the_last_events_marked_replayed_before_live_ones(server, connect) -> None:
    channel = fresh("private-rewind-")
    for n in range(20):
        await publish(server, channel, n)
    sock = await join(server, connect, channel)
    await sock.send("clarion:rewind", {"channel": channel, "count": 5})
    frames = [await next_event(sock) for _ in range(5)]
    assert [(f["serial"], n_of(f), f["replayed"]) for f in frames] == [(16 + i, 15 + i, True) for i in range(5)]
    done = await next_event(sock)
    assert done["event"] == "clarion:rewound"
    assert payload(done) == {"channel": channel, "count": 5, "epoch": frames[0]["epoch"], "serial": 20}
    await publish(server, channel, 20)
    live = await next_event(sock)
    assert (live["serial"], "replayed" in live) == (21, False)


async def test_rewind_is_capped_by_the_channels_history_size(server_factory, connect) -> None:
    server = server_factory(env={"CLARION_HISTORY": "private-:10:300"})
    channel = fresh("private-capped-")
    for n in range(300):
        await publish(server, channel, n)
    sock = await join(server, connect, channel)
    await sock.send("clarion:rewind", {"channel": channel, "count": 1000})
    frames = []
    while (frame := await next_event(sock))["event"] == EVENT:
        frames.append(frame)
    assert [n_of(f) for f in frames] == list(range(290, 300))
    assert payload(frame)["count"] == 10


async def test_rewind_by_seconds_sends_only_that_recent_history(server, connect) -> None:
    channel = fresh("private-rewind-seconds-")
    for n in range(3):
        await publish(server, channel, n)
    await asyncio.sleep(1.5)
    for n in range(3, 5):
        await publish(server, channel, n)
    sock = await join(server, connect, channel)
    await sock.send("clarion:rewind", {"channel": channel, "seconds": 1})
    frames = [await next_event(sock) for _ in range(3)]
    assert [n_of(f) for f in frames[:2]] == [3, 4]
    assert frames[2]["event"] == "clarion:rewound" and payload(frames[2])["count"] == 2


# --- under live traffic: nothing lost, nothing twice -------------------------------------------------


async def _publish_until(
    server: Any, channel: str, stop: asyncio.Event, numbers: list[int], start: int = 0, lanes: int = 1
) -> None:
    """Publish numbered events until ``stop``, over ``lanes`` concurrent connections."""
    counter = iter(range(start, start + 10**9))

    async def lane() -> None:
        while not stop.is_set():
            n = next(counter)
            await publish(server, channel, n)
            numbers.append(n)
            await asyncio.sleep(0.003)

    await asyncio.gather(*(lane() for _ in range(lanes)))


async def _received_until(
    sock: PusherSocket, wanted: list[int], already: list[dict[str, Any]] | None = None
) -> list[dict[str, Any]]:
    """Frames (after ``already``) until every event numbered in ``wanted`` has arrived, then a
    moment more, so that anything sent twice would show."""
    frames: list[dict[str, Any]] = list(already or [])
    missing = set(wanted) - {n_of(f) for f in frames if f["event"] == EVENT}
    while missing:
        frame = await next_event(sock)
        frames.append(frame)
        if frame["event"] == EVENT:
            missing.discard(n_of(frame))
    with contextlib.suppress(TimeoutError):
        while True:
            frames.append(await next_event(sock, timeout=0.3))
    return frames


def redis_env(**extra: str) -> dict[str, str]:
    return {
        "CLARION_SCALING": "redis",
        "CLARION_REDIS_URL": SHARED_REDIS_URL,
        "CLARION_SCALING_PREFIX": f"recovery-{uuid.uuid4().hex[:12]}",
        **extra,
    }


async def backlog(server: Any, channel: str, count: int) -> None:
    """``count`` events published ahead (10 a request), numbered -count..-1."""
    for start in range(-count, 0, 10):
        batch = [
            {"name": EVENT, "channel": channel, "data": json.dumps({"n": n})} for n in range(start, min(start + 10, 0))
        ]
        status, answer = await api_call(
            server.http_url, server.key, server.secret, "POST", f"/apps/{server.app_id}/batch_events", {"batch": batch}
        )
        assert status == 200, answer


# A long replay through Redis takes milliseconds to read, so live events published meanwhile must
# be held for the socket and sent after it: these tests publish all along to catch any slip.
BUSY = {"CLARION_HISTORY": "private-:5000:300"}


async def test_resume_inside_subscribe_under_live_traffic_is_in_order_with_no_gap_or_duplicate(
    server_factory, connect
) -> None:
    env = redis_env(**BUSY)
    server, publisher_node = server_factory(env=env), server_factory(env=env)
    channel = fresh("private-busy-")
    await backlog(server, channel, 3000)
    stop = asyncio.Event()
    numbers: list[int] = []
    publisher = asyncio.create_task(_publish_until(publisher_node, channel, stop, numbers, lanes=4))
    await asyncio.sleep(0.1)
    back = await join(server, connect, channel, resume={"epoch": await epoch_of(server, channel), "serial": 1})
    await asyncio.sleep(0.3)
    stop.set()
    await publisher
    frames = await _received_until(back, numbers)
    events = [f for f in frames if f["event"] == EVENT]
    # Every event after the position, each once, in serial order: replayed ones first, then live.
    assert [f["serial"] for f in events] == list(range(2, 2 + len(events)))
    assert [n_of(f) for f in events[:2999]] == list(range(-2999, 0))
    assert sorted(n_of(f) for f in events[2999:]) == sorted(numbers)
    marker = next(i for i, f in enumerate(frames) if f["event"] == "clarion:resumed")
    assert payload(frames[marker])["recovered"] is True
    assert all(f.get("replayed") for f in frames[:marker])
    assert not any(f.get("replayed") for f in frames[marker + 1 :])
    assert marker < len(frames) - 1, "no live event followed the replay: the test proved nothing"


async def test_resume_after_subscribe_under_live_traffic_loses_nothing_and_repeats_nothing(
    server_factory, connect
) -> None:
    env = redis_env(**BUSY)
    server, publisher_node = server_factory(env=env), server_factory(env=env)
    channel = fresh("private-busy-after-")
    await backlog(server, channel, 3000)
    stop = asyncio.Event()
    numbers: list[int] = []
    publisher = asyncio.create_task(_publish_until(publisher_node, channel, stop, numbers, lanes=4))
    back = await join(server, connect, channel)
    # A client slow to resume: some events reach it live first. They must not come again.
    early = [await next_event(back) for _ in range(3)]
    await back.send("clarion:resume", {"channel": channel, "epoch": early[0]["epoch"], "serial": 1})
    await asyncio.sleep(0.3)
    stop.set()
    await publisher
    frames = await _received_until(back, numbers, already=early)
    events = [f for f in frames if f["event"] == EVENT]
    serials = [f["serial"] for f in events]
    assert len(serials) == len(set(serials)), "an event came twice"
    assert sorted(serials) == list(range(2, 2 + len(events))), "an event is missing"
    assert sorted(n_of(f) for f in events) == [*range(-2999, 0), *sorted(numbers)]
    # What went out live before the resume was read came first; from the replay on, serial order.
    first_replayed = next(i for i, f in enumerate(events) if f.get("replayed"))
    assert first_replayed >= 3 and not any(f.get("replayed") for f in events[:first_replayed])
    assert serials[:first_replayed] == sorted(serials[:first_replayed])
    assert serials[first_replayed:] == sorted(serials[first_replayed:])
    assert any(f["event"] == "clarion:resumed" and payload(f)["recovered"] for f in frames)


async def epoch_of(server: Any, channel: str) -> str:
    status, answer = await api_call(
        server.http_url,
        server.key,
        server.secret,
        "GET",
        f"/apps/{server.app_id}/channels/{channel}/history",
        limit="1",
    )
    assert status == 200, answer
    epoch: str = answer["epoch"]
    return epoch


async def test_rewind_inside_subscribe_comes_before_any_live_event(server, connect) -> None:
    channel = fresh("private-rewind-sub-")
    for n in range(10):
        await publish(server, channel, n)
    stop = asyncio.Event()
    numbers: list[int] = []
    publisher = asyncio.create_task(_publish_until(server, channel, stop, numbers, start=1000))
    await asyncio.sleep(0.1)
    sock = await join(server, connect, channel, rewind={"count": 5})
    await asyncio.sleep(0.2)
    stop.set()
    await publisher
    frames = await _received_until(sock, [numbers[-1]])
    marker = next(i for i, f in enumerate(frames) if f["event"] == "clarion:rewound")
    assert marker == 5 and all(f["replayed"] for f in frames[:5])
    serials = [f["serial"] for f in frames if f["event"] == EVENT]
    assert serials == list(range(serials[0], serials[0] + len(serials)))


async def test_catch_up_requests_past_the_burst_are_answered_rate_limited_and_the_socket_stays(server, connect) -> None:
    channel = fresh("private-flood-")
    await publish(server, channel, 0)
    sock = await join(server, connect, channel)
    for _ in range(150):  # the burst is one per allowed subscription (100), then 10 a second
        await sock.send("clarion:rewind", {"channel": channel, "count": 1})
    answers: list[dict[str, Any]] = []
    while len(answers) < 150:
        frame = await next_event(sock)
        if frame["event"] == "clarion:rewound":
            answers.append(payload(frame))
    limited = [a for a in answers if a.get("reason") == "rate_limited"]
    served = [a for a in answers if a["count"] == 1]
    assert len(served) + len(limited) == 150
    assert 100 <= len(served) < 115 and limited
    await still_open(sock)


async def test_a_repeated_subscribe_carrying_a_resume_is_answered_like_a_resume_after_it(server, connect) -> None:
    channel = fresh("private-resubscribe-")
    sock = await join(server, connect, channel)
    epoch, serial = await position_after_one_event(server, sock, channel)
    await publish(server, channel, 1)
    assert n_of(await next_event(sock)) == 1
    auth = signatures.channel_auth(server.key, server.secret, sock.socket_id, channel)
    resume = {"epoch": epoch, "serial": serial}
    await sock.send("pusher:subscribe", {"channel": channel, "auth": auth, "resume": resume})
    await sock.expect("pusher_internal:subscription_succeeded", channel)
    # Event 1 reached this socket live already: it is not sent again.
    answer = await next_event(sock)
    assert answer["event"] == "clarion:resumed", answer
    assert payload(answer) == {"channel": channel, "recovered": True, "epoch": epoch, "serial": serial + 1}
