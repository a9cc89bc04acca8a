"""``pusher_internal:subscription_count`` with pusher-js, on a server whose app enables it
(``CLARION_SUBSCRIPTION_COUNT=true``).

pusher-js re-emits it to the app as ``pusher:subscription_count`` ({subscription_count: N}) and
keeps the last value in ``channel.subscriptionCount``. Below 100 subscribers Pusher sends it on
every change, to every subscriber of the channel.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from compat.nodeclient import eventually, sdk_call, unique
from conftest import RunningServer, run_server

pytestmark = pytest.mark.compat


@pytest.fixture(scope="module")
def server() -> Iterator[RunningServer]:
    """This module's server (used by ``auth_endpoint`` and ``node_client``): counts enabled."""
    with run_server(env={"CLARION_SUBSCRIPTION_COUNT": "true"}) as running:
        yield running


def counts(client, channel: str) -> list[int]:
    return [obs["data"]["subscription_count"] for obs in client.observed(type="subscription_count", channel=channel)]


async def expect_count(client, channel: str, n: int) -> None:
    obs = await client.expect(type="subscription_count", channel=channel)
    assert obs["data"] == {"subscription_count": n}, f"{client.label}: {obs}\n{client.report()}"
    assert obs["count"] == n  # channel.subscriptionCount


@pytest.mark.parametrize("prefix", ["counted-", "private-counted-"])
async def test_counts_follow_subscribes_and_unsubscribes(server, node_client, prefix: str) -> None:
    channel = unique(prefix)
    a, b = await node_client("a"), await node_client("b")
    await a.connect()
    await b.connect()
    sdk = server.pusher()

    await a.subscribe(channel)
    await expect_count(a, channel, 1)

    await b.subscribe(channel)
    await expect_count(a, channel, 2)
    await expect_count(b, channel, 2)

    await b.command("unsubscribe", channel=channel)
    await expect_count(a, channel, 1)
    await eventually(lambda: sdk_call(sdk.channel_info, channel, ["subscription_count"]), lambda i: i["occupied"])

    await sdk_call(sdk.trigger, channel, "marker", {})
    await a.expect(type="event", channel=channel, event="marker")
    assert counts(a, channel) == [1, 2, 1]
    assert counts(b, channel) == [2]


async def test_count_drops_when_a_subscriber_disconnects(server, node_client) -> None:
    channel = unique("counted-close-")
    a, b, c = await node_client("a"), await node_client("b"), await node_client("c")
    for client in (a, b, c):
        await client.connect()
    await a.subscribe(channel)
    await b.subscribe(channel)
    await c.subscribe(channel)
    await expect_count(a, channel, 1)
    await expect_count(a, channel, 2)
    await expect_count(a, channel, 3)

    await c.close()

    await expect_count(a, channel, 2)
    await expect_count(b, channel, 2)
