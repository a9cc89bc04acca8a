"""The Presence part of the contract, run against both twins: members per channel held per node,
joins refused when full, leaves that count only the last holder, and signed-in users."""

from __future__ import annotations

from clarion.scaling.contracts import FIRST, FULL, HELD

from .conftest import Cluster

APP = "app-1"
OTHER_APP = "app-2"
ROOM = "presence-room"


# --- presence ----------------------------------------------------------------------------------


async def test_join_is_first_then_the_number_of_holding_nodes_then_held_on_repeat(cluster: Cluster) -> None:
    a, b, c = [await cluster.node() for _ in range(3)]
    assert await a.join(APP, ROOM, "ann", {"name": "Ann"}, 100) == FIRST
    assert await b.join(APP, ROOM, "ann", {"name": "Ann"}, 100) == 2
    assert await a.join(APP, ROOM, "ann", {"name": "Ann"}, 100) == HELD
    assert await b.join(APP, ROOM, "ann", {"name": "Ann"}, 100) == HELD
    assert await c.join(APP, ROOM, "ann", {"name": "Ann"}, 100) == 3
    # Same user on another channel, or another app, is a new member there.
    assert await b.join(APP, "presence-other", "ann", {}, 100) == FIRST
    assert await b.join(OTHER_APP, ROOM, "ann", {}, 100) == FIRST


async def test_join_is_refused_when_the_channel_is_full_of_other_users_but_never_for_a_user_already_in(
    cluster: Cluster,
) -> None:
    a, b, c = [await cluster.node() for _ in range(3)]
    assert await a.join(APP, ROOM, "ann", {}, 2) == FIRST
    assert await b.join(APP, ROOM, "bob", {}, 2) == FIRST
    assert await c.join(APP, ROOM, "cat", {}, 2) == FULL
    assert await a.join(APP, ROOM, "cat", {}, 2) == FULL
    # Users already in the channel join from any node, full or not.
    assert await c.join(APP, ROOM, "ann", {}, 2) == 2
    assert await c.join(APP, ROOM, "bob", {}, 2) == 2
    assert await a.join(APP, ROOM, "ann", {}, 2) == HELD
    # Another channel, and the same channel of another app, have their own limit.
    assert await c.join(APP, "presence-elsewhere", "cat", {}, 2) == FIRST
    assert await c.join(OTHER_APP, ROOM, "cat", {}, 2) == FIRST
    # Once a user has gone for good, there is room again.
    assert await a.leave(APP, ROOM, "ann") is False
    assert await c.leave(APP, ROOM, "ann") is True
    assert await c.join(APP, ROOM, "cat", {}, 2) == FIRST


async def test_a_refused_join_registers_nothing(cluster: Cluster) -> None:
    a, b = [await cluster.node() for _ in range(2)]
    assert await a.join(APP, ROOM, "ann", {}, 1) == FIRST
    assert await b.join(APP, ROOM, "bob", {}, 1) == FULL
    assert set(await a.members(APP, ROOM)) == {"ann"}
    assert await b.leave(APP, ROOM, "bob") is False
    assert await a.leave(APP, ROOM, "ann") is True
    assert await b.join(APP, ROOM, "bob", {}, 1) == FIRST


async def test_leave_is_true_only_when_the_last_holding_node_lets_go(cluster: Cluster) -> None:
    a, b, c = [await cluster.node() for _ in range(3)]
    for node in (a, b, c):
        await node.join(APP, ROOM, "ann", {"name": "Ann"}, 100)
    assert await b.leave(APP, ROOM, "ann") is False
    assert await a.leave(APP, ROOM, "ann") is False
    assert set(await b.members(APP, ROOM)) == {"ann"}
    assert await c.leave(APP, ROOM, "ann") is True
    assert await a.members(APP, ROOM) == {}
    # A user nobody holds, or a channel nobody is in, has nothing to leave.
    assert await c.leave(APP, ROOM, "ann") is False
    assert await a.leave(APP, "presence-empty", "ann") is False


async def test_leaving_twice_from_one_node_does_not_release_another_nodes_hold(cluster: Cluster) -> None:
    a, b = [await cluster.node() for _ in range(2)]
    await a.join(APP, ROOM, "ann", {}, 100)
    await b.join(APP, ROOM, "ann", {}, 100)
    assert await a.leave(APP, ROOM, "ann") is False
    assert await a.leave(APP, ROOM, "ann") is False
    assert set(await a.members(APP, ROOM)) == {"ann"}
    assert await b.leave(APP, ROOM, "ann") is True


async def test_members_merges_every_nodes_members_with_their_info(cluster: Cluster) -> None:
    a, b, c = [await cluster.node() for _ in range(3)]
    await a.join(APP, ROOM, "ann", {"name": "Ann", "tags": [1, 2]}, 100)
    await b.join(APP, ROOM, "bob", None, 100)
    await b.join(APP, ROOM, "ann", {"name": "Ann", "tags": [1, 2]}, 100)
    await c.join(APP, "presence-else", "cat", "just a string", 100)
    expected = {"ann": {"name": "Ann", "tags": [1, 2]}, "bob": None}
    for node in (a, b, c):
        assert await node.members(APP, ROOM) == expected
        assert await node.members(APP, "presence-else") == {"cat": "just a string"}
        assert await node.members(OTHER_APP, ROOM) == {}


# --- online users ------------------------------------------------------------------------------


async def test_a_user_comes_online_with_the_first_node_and_goes_offline_with_the_last(cluster: Cluster) -> None:
    a, b = [await cluster.node() for _ in range(2)]
    assert await a.online(APP, ("ann", "bob")) == set()
    assert await a.user_online(APP, "ann") is True
    assert await b.user_online(APP, "ann") is False
    assert await a.user_online(APP, "ann") is False  # a repeat is not counted twice
    assert await b.online(APP, ("ann", "bob")) == {"ann"}
    assert await b.online(OTHER_APP, ("ann",)) == set()
    assert await a.user_offline(APP, "ann") is False
    assert await a.user_offline(APP, "ann") is False  # nor is a repeated offline
    assert await a.online(APP, ("ann",)) == {"ann"}
    assert await b.user_offline(APP, "ann") is True
    assert await a.online(APP, ("ann", "bob")) == set()
    assert await b.user_offline(APP, "bob") is False  # never online
    assert await a.online(APP, ()) == set()
