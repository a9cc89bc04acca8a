"""The node's dispatch of a session's actions: every kind has its case, and one it does not know
stops the work loudly rather than vanishing (mypy proves the cases complete: ``assert_never``)."""

from __future__ import annotations

import ast
import inspect
import textwrap
import typing
from dataclasses import dataclass

import pytest

from clarion.protocol import session
from clarion.protocol.session import Action, Close, Send
from clarion.server.node import Node
from inprocess import Room


@dataclass(frozen=True)
class Forgotten:
    """An action the dispatch has no case for."""


async def test_an_action_the_dispatch_does_not_know_is_an_error_not_silence() -> None:
    room = Room()
    node = await room.node()
    sock = room.connect(node)
    with pytest.raises(AssertionError):
        await node.carry_out(sock, [Forgotten()])  # type: ignore[list-item]  # not an Action, on purpose


async def test_actions_are_carried_out_in_order() -> None:
    room = Room()
    node = await room.node()
    sock = room.connect(node)
    await node.carry_out(sock, [Send('{"event":"one"}'), Send('{"event":"two"}'), Close(4009, "bye")])
    assert sock.events()[-2:] == ["one", "two"]
    assert sock.closed_with == (4009, "bye")


def test_the_dispatch_has_a_case_for_every_action() -> None:
    tree = ast.parse(textwrap.dedent(inspect.getsource(Node.carry_out)))
    cases = {
        case.pattern.cls.id
        for case in ast.walk(tree)
        if isinstance(case, ast.match_case)
        and isinstance(case.pattern, ast.MatchClass)
        and isinstance(case.pattern.cls, ast.Name)
    }
    assert cases == {kind.__name__ for kind in typing.get_args(Action)}
    assert all(getattr(session, name) in typing.get_args(Action) for name in cases)
