"""Clarion's recovery extension seen through stock pusher-js 8.6.0 and laravel-echo 2.5.0.

Private channels keep history by default, so their server events carry two extra top-level fields,
``epoch`` and ``serial``. Stock clients must not notice: the app's callbacks get ``data`` exactly
as the SDK sent it. The driver's ``wire`` option shows the frames as they came off the socket,
which proves the positions were there all the same.

pusher-js has no way to add fields to its own subscribe, so a client that wants its missed events
sends ``clarion:resume`` (or ``clarion:rewind``) with ``pusher.send_event`` once it is subscribed
again; the replayed events and the ``clarion:resumed`` / ``clarion:rewound`` marker arrive at the
channel's callbacks like any other event on it.

Run with ``CLARION_SCALING=redis`` in the environment to check the same through Redis.
"""

from __future__ import annotations

import json
from typing import Any

import pytest

from compat.nodeclient import NodeClient, Observation, eventually, sdk_call, unique

pytestmark = pytest.mark.compat

EVENT = "update"

PAYLOADS: list[Any] = [
    {"order": 1234, "price": 12.5, "tags": ["a", "b"], "nested": {"ok": True, "nothing": None}},
    {"text": 'héllo \u2713 "quoted" \\ back', "n": 1},
    "just text, not JSON",
    [1, 2, {"three": 3}],
    {"epoch": "not the server's", "serial": -1, "replayed": False},  # look-alike fields in data stay data
]


async def connect_wire(client: NodeClient) -> str:
    """Connect pusher-js with the wire reporting on; the socket_id."""
    await client.command("connect", wire=True)
    obs = await client.expect(type="connected", timeout=10)
    socket_id: str = obs["socket_id"]
    return socket_id


def wire_events(client: NodeClient, channel: str, event: str = EVENT) -> list[dict[str, Any]]:
    """Whole frames of ``event`` on ``channel`` as they came off the socket, in arrival order."""
    frames = [obs["frame"] for obs in client.observed(type="raw")]
    return [f for f in frames if f.get("channel") == channel and f.get("event") == event]


async def wire_event(client: NodeClient, channel: str, event: str = EVENT, data: str | None = None) -> dict[str, Any]:
    """Wait for the next raw frame of ``event`` on ``channel`` (with this ``data`` string)."""

    def wanted(obs: Observation) -> bool:
        frame = obs["frame"]
        return (
            frame.get("channel") == channel
            and frame.get("event") == event
            and (data is None or frame.get("data") == data)
        )

    found: dict[str, Any] = (await client.expect(wanted, type="raw"))["frame"]
    return found


def delivered(client: NodeClient, channel: str) -> list[tuple[str, Any]]:
    """(event, data) of everything pusher-js gave the channel's global callback, in order."""
    return [(obs["event"], obs["data"]) for obs in client.observed(type="event", channel=channel, via="global")]


async def trigger(server: Any, channel: str, data: Any, event: str = EVENT) -> None:
    assert await sdk_call(server.pusher().trigger, channel, event, data) == {}


async def away(server: Any, client: NodeClient, channel: str) -> None:
    """Disconnect pusher-js and wait until the server has let go of its (only) subscriber."""
    await client.command("disconnect")
    await client.expect(type="state", current="disconnected")
    sdk = server.pusher()
    await eventually(lambda: sdk_call(sdk.channel_info, channel), lambda info: info["occupied"] is False)


async def back(client: NodeClient, channel: str) -> None:
    """``pusher.connect()`` again; returns once pusher-js has subscribed the channel again."""
    await client.command("reconnect")
    await client.expect(type="connected", timeout=10)
    await client.subscribed(channel)


# --- stock clients are unaffected ------------------------------------------------------------------


async def test_pusher_js_gets_kept_events_unchanged_while_the_wire_carries_consecutive_serials(
    server, node_client
) -> None:
    client = await node_client()
    await connect_wire(client)
    channel = unique("private-stock-")
    await client.subscribe(channel)
    await client.command("bind", channel=channel, event=EVENT)

    for data in PAYLOADS:
        await trigger(server, channel, data)
    for data in PAYLOADS:
        bound = await client.expect(type="event", channel=channel, event=EVENT, via="bind")
        assert bound["data"] == data
        assert bound["metadata"] == {}
    for _ in PAYLOADS:  # each frame's raw copy comes after pusher-js handed it to the callbacks
        await wire_event(client, channel)

    # What the app saw: the data as sent, through both bind() and bind_global(), nothing else.
    assert delivered(client, channel) == [(EVENT, data) for data in PAYLOADS]
    # What the socket carried: the SDK's data string untouched, then the position, last.
    frames = wire_events(client, channel)
    sent = [data if isinstance(data, str) else json.dumps(data, ensure_ascii=False) for data in PAYLOADS]
    assert [f["data"] for f in frames] == sent
    assert all(list(f) == ["event", "channel", "data", "epoch", "serial"] for f in frames), frames
    assert len({f["epoch"] for f in frames}) == 1
    first = frames[0]["serial"]
    assert [f["serial"] for f in frames] == list(range(first, first + len(PAYLOADS)))
    assert client.observed(type="connection_error") == []


async def test_public_channel_frames_carry_no_position(server, node_client) -> None:
    client = await node_client()
    await connect_wire(client)
    channel = unique("public-stock-")
    await client.subscribe(channel)

    await trigger(server, channel, {"n": 1})

    assert (await client.expect(type="event", channel=channel, event=EVENT))["data"] == {"n": 1}
    assert await wire_event(client, channel) == {"event": EVENT, "channel": channel, "data": '{"n": 1}'}


async def test_laravel_echo_private_listen_gets_kept_events_unchanged(server, node_client) -> None:
    client = await node_client("echo")
    await client.command("echo_connect", wire=True)
    await client.expect(type="connected", timeout=10)
    name = unique("stock.echo.")
    ack = await client.command("echo_listen", kind="private", channel=name, event=".order.updated")
    channel = ack["channel"]
    assert channel == f"private-{name}"
    await client.subscribed(channel)

    for data in PAYLOADS:
        await trigger(server, channel, data, event="order.updated")

    for data in PAYLOADS:
        obs = await client.expect(type="event", channel=channel, event=".order.updated", via="echo")
        assert obs["data"] == data
    for _ in PAYLOADS:
        await wire_event(client, channel, "order.updated")
    frames = wire_events(client, channel, "order.updated")
    first = frames[0]["serial"]
    assert [f["serial"] for f in frames] == list(range(first, first + len(PAYLOADS)))
    assert len({f["epoch"] for f in frames}) == 1
    assert client.observed(type="subscription_error") == []
    assert client.observed(type="connection_error") == []


# --- recovery through pusher-js -------------------------------------------------------------------


async def test_resume_after_reconnect_gives_the_missed_events_in_order_once_then_resumed(server, node_client) -> None:
    client = await node_client()
    await connect_wire(client)
    channel = unique("private-resume-")
    await client.subscribe(channel)
    await client.command("bind", channel=channel, event="clarion:resumed")

    await trigger(server, channel, {"n": 0})
    last = await wire_event(client, channel)
    epoch, serial = last["epoch"], last["serial"]

    await away(server, client, channel)
    for n in range(1, 6):
        await trigger(server, channel, {"n": n})
    await back(client, channel)
    await client.command(
        "send_event", event="clarion:resume", data={"channel": channel, "epoch": epoch, "serial": serial}
    )

    resumed = await client.expect(type="event", channel=channel, event="clarion:resumed", via="bind")
    assert resumed["data"] == {"channel": channel, "recovered": True, "epoch": epoch, "serial": serial + 5}
    # Live again afterwards: the next event comes once, not marked.
    await trigger(server, channel, {"n": 6})
    await client.expect(type="event", channel=channel, event=EVENT, via="global", data={"n": 6})
    await wire_event(client, channel, data='{"n": 6}')

    assert delivered(client, channel) == [
        (EVENT, {"n": 0}),
        *[(EVENT, {"n": n}) for n in range(1, 6)],
        ("clarion:resumed", resumed["data"]),
        (EVENT, {"n": 6}),
    ]
    frames = wire_events(client, channel)
    assert [(f["serial"], f.get("replayed", False)) for f in frames] == [
        (serial, False),
        *[(serial + n, True) for n in range(1, 6)],
        (serial + 6, False),
    ]
    assert {f["epoch"] for f in frames} == {epoch}
    assert client.observed(type="connection_error") == []


async def test_resume_with_a_position_from_another_epoch_says_so_and_replays_nothing(server, node_client) -> None:
    client = await node_client()
    await connect_wire(client)
    channel = unique("private-resume-epoch-")
    await client.subscribe(channel)
    await client.command("bind", channel=channel, event="clarion:resumed")
    await trigger(server, channel, {"n": 0})
    last = await wire_event(client, channel)

    await client.command("send_event", event="clarion:resume", data={"channel": channel, "epoch": "0ld", "serial": 0})

    resumed = await client.expect(type="event", channel=channel, event="clarion:resumed", via="bind")
    assert resumed["data"] == {
        "channel": channel,
        "recovered": False,
        "epoch": last["epoch"],
        "serial": last["serial"],
        "reason": "epoch_changed",
    }
    assert delivered(client, channel) == [(EVENT, {"n": 0}), ("clarion:resumed", resumed["data"])]


async def test_rewind_gives_the_last_events_to_the_channel_callback_then_rewound(server, node_client) -> None:
    channel = unique("private-rewind-")
    for n in range(8):
        await trigger(server, channel, {"n": n})
    client = await node_client()
    await connect_wire(client)
    await client.subscribe(channel)
    await client.command("bind", channel=channel, event=EVENT)
    await client.command("bind", channel=channel, event="clarion:rewound")

    await client.command("send_event", event="clarion:rewind", data={"channel": channel, "count": 3})

    rewound = await client.expect(type="event", channel=channel, event="clarion:rewound", via="bind")
    frames = [await wire_event(client, channel) for _ in range(3)]
    epoch = frames[0]["epoch"]
    assert rewound["data"] == {"channel": channel, "count": 3, "epoch": epoch, "serial": frames[-1]["serial"]}
    assert [json.loads(f["data"]) for f in frames] == [{"n": 5}, {"n": 6}, {"n": 7}]
    assert all(f["replayed"] is True and f["epoch"] == epoch for f in frames)
    assert [f["serial"] for f in frames] == list(range(frames[0]["serial"], frames[0]["serial"] + 3))
    assert [obs["data"] for obs in client.events(channel, EVENT) if obs["via"] == "bind"] == [
        {"n": 5},
        {"n": 6},
        {"n": 7},
    ]
    await trigger(server, channel, {"n": 8})
    await client.expect(type="event", channel=channel, event=EVENT, via="global", data={"n": 8})
    assert delivered(client, channel) == [
        *[(EVENT, {"n": n}) for n in (5, 6, 7)],
        ("clarion:rewound", rewound["data"]),
        (EVENT, {"n": 8}),
    ]


async def test_resume_on_a_channel_pusher_js_is_not_subscribed_to_is_refused_with_4009(server, node_client) -> None:
    client = await node_client()
    await connect_wire(client)
    channel = unique("private-not-mine-")

    await client.command("send_event", event="clarion:resume", data={"channel": channel, "epoch": "e", "serial": 0})

    error = await client.expect(type="connection_error")
    assert error["error"]["data"]["code"] == 4009
    # The connection stays up and usable.
    other = unique("private-still-")
    await client.subscribe(other)
    assert await client.state() == "connected"
