"""The fan-out loop (server/fanout.py and the native clarion._fanout) over real TCP sockets.

Each test runs a real event loop (uvloop and asyncio) with real ``Connection`` objects on accepted
sockets, as the listener makes them, and reads what a peer socket actually received. Both fan-outs
must keep the same contract: every subscriber but the excluded one gets the frame exactly once, in
order behind anything already queued, and nothing goes to a connection that is closing.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket
import struct
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Callable, Coroutine
from pathlib import Path
from typing import Any

import pytest
import uvloop

from clarion.protocol.app import App
from clarion.protocol.session import Session
from clarion.server import fanout
from clarion.server.connection import Connection
from clarion.server.frames import text_frame
from clarion.server.limits import Admission

APP = App(id="1", key="key", secret="secret-secret")
FANS = ("native", "python")
LOOPS: dict[str, Callable[[], asyncio.AbstractEventLoop]] = {
    "uvloop": uvloop.new_event_loop,
    "asyncio": asyncio.new_event_loop,
}


class _Node:
    """What a Connection asks of its node here: to run its clean-up task and count it out."""

    admission = Admission(
        fd_limit=1024,
        fd_reserve=0,
        max_node_connections=None,
        ip_connection_rate=0,
        ip_connection_burst=1,
        ip_max_connections=0,
        exempt=(),
        trusted_proxies=(),
    )

    def spawn(self, coro: Coroutine[Any, Any, None]) -> None:
        coro.close()


class _Placeholder(asyncio.Protocol):
    pass


def fan(name: str) -> fanout.Fanout:
    """The fan-out named; the native one must have been built (test_the_native_fanout_is_built)."""
    chosen = fanout.fanout_native if name == "native" else fanout.fanout_python
    assert chosen is not None, "clarion._fanout was not built"
    return chosen


def run(loop_name: str, test: Callable[[], Coroutine[Any, Any, None]]) -> None:
    with asyncio.Runner(loop_factory=LOOPS[loop_name]) as runner:
        runner.run(test())


class Pair:
    """A server-side Connection and the client socket at the other end."""

    def __init__(self, conn: Connection, peer: socket.socket) -> None:
        self.conn = conn
        self.peer = peer

    def read(self, size: int, timeout: float = 5.0) -> bytes:
        """Exactly ``size`` bytes from the peer (blocking the loop is fine: the kernel holds them)."""
        self.peer.settimeout(timeout)
        data = bytearray()
        while len(data) < size:
            chunk = self.peer.recv(size - len(data))
            if not chunk:
                break
            data += chunk
        return bytes(data)

    async def drain(self, size: int, timeout: float = 10.0) -> bytes:
        """``size`` bytes from the peer, letting the loop run (and flush its buffer) meanwhile."""
        received = bytearray()
        self.peer.setblocking(False)
        deadline = time.monotonic() + timeout
        while len(received) < size and time.monotonic() < deadline:
            try:
                received += self.peer.recv(1 << 20)
            except BlockingIOError:
                await asyncio.sleep(0.005)
        self.peer.setblocking(True)
        return bytes(received)

    def pending(self) -> bytes:
        """Whatever the peer has received and not read yet, without waiting."""
        self.peer.setblocking(False)
        try:
            return self.peer.recv(1 << 20)
        except BlockingIOError:
            return b""
        finally:
            self.peer.setblocking(True)


@contextlib.asynccontextmanager
async def connected(
    count: int, max_buffer: int = 1 << 20, sndbuf: int | None = None, connection: type[Connection] = Connection
) -> AsyncIterator[list[Pair]]:
    """``count`` Connections on accepted sockets, as the listener makes them; all closed after."""
    loop = asyncio.get_running_loop()
    listener = socket.create_server(("127.0.0.1", 0))
    pairs = []
    try:
        for number in range(count):
            peer = socket.create_connection(listener.getsockname())
            accepted, _ = listener.accept()
            if sndbuf is not None:
                accepted.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, sndbuf)
                peer.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, sndbuf)
            transport, _ = await loop.connect_accepted_socket(_Placeholder, accepted)
            session = Session(APP, f"1.{number}", loop.time())
            # _Node stands in for the server's Node with only what a Connection uses of it.
            conn = connection(_Node(), session, transport, max_buffer, 1 << 16)  # type: ignore[arg-type]
            transport.set_protocol(conn)
            pairs.append(Pair(conn, peer))
    finally:
        listener.close()
    try:
        yield pairs
    finally:
        for pair in pairs:
            pair.conn.transport.abort()
            pair.peer.close()


def sockets_of(pairs: list[Pair]) -> dict[str, Connection]:
    return {pair.conn.socket_id: pair.conn for pair in pairs}


def test_the_native_fanout_is_built() -> None:
    # CI installs with a C compiler: the native loop must be there, and be the default.
    assert fanout.fanout_native is not None
    assert fanout.choose(None) is fanout.fanout_native
    assert fanout.choose("python") is fanout.fanout_python


@pytest.mark.parametrize("loop_name", LOOPS)
@pytest.mark.parametrize("fan_name", FANS)
def test_every_subscriber_but_the_excluded_one_gets_the_frame_once(fan_name: str, loop_name: str) -> None:
    async def test() -> None:
        async with connected(6) as pairs:
            frame = text_frame('{"event":"e","channel":"c","data":"1"}')
            skipped = pairs[2].conn
            assert fanout.send(fan(fan_name), sockets_of(pairs), frame, skipped) == 5
            await asyncio.sleep(0.05)  # the python fan-out's writes may wait for the loop
            for pair in pairs:
                if pair.conn is skipped:
                    assert pair.pending() == b""
                else:
                    assert pair.read(len(frame)) == frame
                    assert pair.pending() == b""

    run(loop_name, test)


@pytest.mark.parametrize("loop_name", LOOPS)
@pytest.mark.parametrize("fan_name", FANS)
def test_a_frame_waits_behind_bytes_the_transport_already_holds(fan_name: str, loop_name: str) -> None:
    async def test() -> None:
        async with connected(1, max_buffer=64 << 20) as (pair,):
            conn = pair.conn
            assert conn.out_fd >= 0  # nothing buffered: direct sends allowed
            big = text_frame("x" * (8 << 20))  # more than the kernel buffers take: the rest queues
            assert conn.write(big)
            await asyncio.sleep(0.05)
            assert conn.transport.get_write_buffer_size() > 0
            assert conn.out_fd == -1  # pause_writing: from now on, through the transport
            small = text_frame("after")
            sent, rest = fan(fan_name)({conn.socket_id: conn}, small, None)
            if fan_name == "native":
                assert (sent, rest) == (0, [(conn, -2)])  # left to the transport, not sent
            for queued, done in rest:
                assert queued.write_rest(small, done)
            assert await pair.drain(len(big) + len(small)) == big + small
            await asyncio.sleep(0.05)
            assert conn.out_fd == conn.fd  # resume_writing: drained, direct again

    run(loop_name, test)


@pytest.mark.parametrize("loop_name", LOOPS)
def test_a_partial_native_send_is_finished_by_the_transport(loop_name: str) -> None:
    async def test() -> None:
        async with connected(1, max_buffer=64 << 20, sndbuf=16 * 1024) as (pair,):
            conn = pair.conn
            frame = text_frame("y" * (4 << 20))
            sent, rest = fan("native")({conn.socket_id: conn}, frame, None)
            assert sent == 0
            [(same, done)] = rest
            assert same is conn and 0 < done < len(frame)  # the socket buffer took only part
            assert conn.write_rest(frame, done)
            assert conn.out_fd == -1
            assert await pair.drain(len(frame)) == frame

    run(loop_name, test)


@pytest.mark.parametrize("loop_name", LOOPS)
def test_a_failed_send_drops_the_connection_and_is_not_counted(loop_name: str) -> None:
    async def test() -> None:
        async with connected(2) as (first, second):
            # The first peer resets its end; the loop has not run since, so the server side has
            # not heard of it and only the send finds out.
            first.peer.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            first.peer.close()
            time.sleep(0.05)  # noqa: ASYNC251 - on purpose: the loop must not run and see the reset first
            frame = text_frame("z")
            sockets = sockets_of([first, second])
            sent, rest = fan("native")(sockets, frame, None)
            assert sent == 1
            assert rest == [(first.conn, -1)]
            assert not first.conn.write_rest(frame, -1)
            assert first.conn.transport.is_closing()
            assert first.conn.out_fd == -1
            assert second.read(len(frame)) == frame

    run(loop_name, test)


class _Watched(Connection):
    """A Connection that notes, when it hears connection_lost, whether its socket is still open."""

    inode: int  # the socket's, set by the test before it closes anything
    lost: asyncio.Event
    heard: tuple[bool, int]  # (socket still open, out_fd) as connection_lost began
    after: int  # out_fd once connection_lost has run

    def connection_lost(self, exc: Exception | None) -> None:
        try:
            still_open = os.fstat(self.fd).st_ino == self.inode
        except OSError:
            still_open = False
        self.heard = (still_open, self.out_fd)
        super().connection_lost(exc)
        self.after = self.out_fd
        self.lost.set()


def _reset(pair: Pair) -> None:
    """The peer resets the connection: close with SO_LINGER 0 sends an RST."""
    pair.peer.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    pair.peer.close()


CLOSES: dict[str, Callable[[Pair], None]] = {
    "abort": lambda pair: pair.conn.transport.abort(),
    "close": lambda pair: pair.conn.transport.close(),
    "peer-eof": lambda pair: pair.peer.shutdown(socket.SHUT_WR),
    "peer-reset": _reset,
}


@pytest.mark.parametrize("loop_name", LOOPS)
@pytest.mark.parametrize("how", CLOSES)
def test_the_loop_closes_a_socket_only_after_connection_lost_clears_out_fd(how: str, loop_name: str) -> None:
    # The native fan-out sends by descriptor number. That is safe only if a number leaves out_fd
    # before the loop closes it (and the kernel may give it to a new connection). Both loops call
    # connection_lost first; this holds them to it, for each way a transport ends.
    async def test() -> None:
        async with connected(1, connection=_Watched) as (pair,):
            conn = pair.conn
            assert isinstance(conn, _Watched)
            conn.inode = os.fstat(conn.fd).st_ino
            conn.lost = asyncio.Event()
            CLOSES[how](pair)
            await asyncio.wait_for(conn.lost.wait(), 5)
            still_open, before = conn.heard
            assert still_open  # the number was still this connection's own socket
            assert before in (conn.fd, -1)  # (-1 already after the peer's EOF)
            assert conn.after == -1

    run(loop_name, test)


@pytest.mark.parametrize("loop_name", LOOPS)
def test_a_closing_connection_gets_no_more_frames(loop_name: str) -> None:
    async def test() -> None:
        async with connected(1) as (pair,):
            pair.conn.close(4009, "bye")  # the close frame goes out; the socket stays open for the answer
            closing = pair.read(2)
            assert closing[0] == 0x88  # a close frame
            pair.read(closing[1])
            assert pair.conn.out_fd == -1
            frame = text_frame("late")
            assert fanout.send(fan("native"), sockets_of([pair]), frame) == 0
            await asyncio.sleep(0.05)
            assert pair.pending() == b""

    run(loop_name, test)


# --- a dict that changes while the native loop walks it ----------------------------------------


class Meddler:
    """A connection whose ``out_fd`` (Python run by the native loop mid-walk) changes the dict."""

    def __init__(self, sockets: dict[str, Any], meddle: Callable[[dict[str, Any]], None] | None = None) -> None:
        self.sockets = sockets
        self.meddle = meddle

    @property
    def out_fd(self) -> int:
        if self.meddle is not None:
            meddle, self.meddle = self.meddle, None
            meddle(self.sockets)
        return -1  # "leave it to the transport": no descriptor is touched


def meddling_dict(meddle: Callable[[dict[str, Any]], None]) -> dict[str, Any]:
    sockets: dict[str, Any] = {}
    for number in range(8):
        sockets[f"s{number}"] = Meddler(sockets)
    sockets["s3"].meddle = meddle
    return sockets


def grow(sockets: dict[str, Any]) -> None:
    for number in range(100):  # enough to make the dict resize
        sockets[f"new{number}"] = Meddler(sockets)


def shrink(sockets: dict[str, Any]) -> None:
    for name in [name for name in sockets if name != "s3"]:
        del sockets[name]


def remove_itself(sockets: dict[str, Any]) -> None:
    del sockets["s3"]  # the dict held the only reference: the loop must hold its own


@pytest.mark.parametrize("meddle", [grow, shrink, remove_itself])
def test_the_native_fanout_raises_if_out_fd_changes_the_dicts_size(meddle: Callable[[dict[str, Any]], None]) -> None:
    native = fanout.fanout_native
    assert native is not None
    sockets = meddling_dict(meddle)
    with pytest.raises(RuntimeError, match="changed size"):
        native(sockets, b"frame", None)


def test_the_native_fanout_walks_a_dict_left_alone_to_the_end() -> None:
    native = fanout.fanout_native
    assert native is not None
    sockets = meddling_dict(lambda sockets: None)
    excluded = sockets["s5"]
    sent, rest = native(sockets, b"frame", excluded)
    assert sent == 0
    assert [conn for conn, _ in rest] == [conn for conn in sockets.values() if conn is not excluded]
    assert {done for _, done in rest} == {-2}


# --- the build switch ---------------------------------------------------------------------------

ROOT = Path(__file__).resolve().parents[2]


def build(tmp_path: Path, require: str | None) -> subprocess.CompletedProcess[str]:
    """Build the extension with a C compiler that does not exist."""
    env = {**os.environ, "CC": str(tmp_path / "no-such-cc")}
    env.pop("CLARION_REQUIRE_NATIVE", None)
    if require is not None:
        env["CLARION_REQUIRE_NATIVE"] = require
    command = [sys.executable, "setup.py", "-q", "build_ext", "--build-lib", str(tmp_path / "lib")]
    command += ["--build-temp", str(tmp_path / "temp")]
    return subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=120, check=False)


@pytest.mark.parametrize("require", [None, "0"])
def test_without_a_compiler_the_build_still_succeeds_unless_native_is_required(
    tmp_path: Path, require: str | None
) -> None:
    result = build(tmp_path, require)
    assert result.returncode == 0, result.stderr
    assert not list((tmp_path / "lib").glob("clarion/_fanout*"))


def test_without_a_compiler_a_required_native_build_fails(tmp_path: Path) -> None:
    result = build(tmp_path, "1")
    assert result.returncode != 0
    assert "no-such-cc" in result.stdout + result.stderr


def test_a_bad_require_native_value_stops_the_build(tmp_path: Path) -> None:
    result = build(tmp_path, "yes")
    assert result.returncode != 0
    assert "CLARION_REQUIRE_NATIVE must be 0 or 1" in result.stderr
