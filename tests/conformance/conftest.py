"""One real ``clarion serve`` per conformance module, with room for Autobahn's 64 KiB messages."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from conftest import RunningServer, run_server

# An event's data may be 64 KiB, so a WebSocket message may be that plus the 8 KiB envelope.
MAX_MESSAGE_SIZE = 64 * 1024
FRAME_LIMIT = MAX_MESSAGE_SIZE + 8 * 1024


@pytest.fixture(scope="module")
def server() -> Iterator[RunningServer]:
    with run_server(env={"CLARION_MAX_MESSAGE_SIZE": str(MAX_MESSAGE_SIZE)}) as running:
        yield running
