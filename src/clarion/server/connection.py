"""One WebSocket connection, as an asyncio protocol: bytes in, protocol session, frames out.

A thin adapter: the RFC 6455 rules (frames, fragments, pings, the close handshake) are the pure
``frames.WebSocket``, the Pusher rules the pure ``protocol.session.Session``; this class carries
bytes and events between them and the socket.

An idle connection costs one object and its transport: no task, no reader, no timer. A task is
made only while a client frame needs shared state (a subscribe, a sign-in, a publish); the frames
that arrive meanwhile wait in a short queue, in order, and reading pauses when it fills.

Writes go straight to the transport (no await), so fan-out never waits on a socket. A socket
whose unsent bytes pass ``max_buffer`` is a slow consumer: it is closed with 4100 (back off and
reconnect) and counted, and nobody else waits for it. Pongs and close frames go through the same
bound. Every close we start or answer ends within ``CLOSE_TIMEOUT``: a socket whose client stopped
reading behind a backlog is aborted then, since a graceful close would wait for a drain that never
comes.

While the transport buffers nothing, ``out_fd`` is the socket's descriptor and the native fan-out
(``fanout.py``) sends to it directly; the transport's high-water mark is 0, so it tells us
(``pause_writing``) the moment it holds bytes, and from then until it drains every write goes
through it, in order. TLS sockets always write through the transport.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Coroutine
from typing import Any, Protocol, assert_never

from ..observability import metrics
from ..observability.logs import fields
from ..protocol import messages
from ..protocol.errors import ErrorCode
from ..protocol.session import Action, Send, Session
from . import frames
from .frames import Binary, Closed, Failed, Ping, Pong, WebSocket, text_frame
from .limits import Admission


class Node(Protocol):
    """What a connection asks of its node (``server.node.Node``), and no more: naming it here
    rather than importing the node keeps the import graph free of cycles."""

    def answer(self, conn: Connection, action: Send) -> None: ...

    async def carry_out(self, conn: Connection, actions: list[Action]) -> None: ...

    def spawn(self, work: Coroutine[Any, Any, None]) -> None: ...

    async def drop(self, conn: Connection) -> None: ...

    @property
    def admission(self) -> Admission: ...


log = logging.getLogger("clarion.connection")

CLOSE_TIMEOUT = 2.0  # seconds to wait for the client's answer to our close frame
MAX_QUEUED = 64  # client frames waiting behind a slow action before reading pauses


class Connection(asyncio.Protocol):
    __slots__ = (
        "_queue",
        "_worker",
        "close_code",
        "closing",
        "fd",
        "max_buffer",
        "node",
        "opened",
        "out_fd",
        "reason",
        "session",
        "transport",
        "ws",
    )

    def __init__(
        self,
        node: Node,
        session: Session,
        transport: asyncio.Transport,
        max_buffer: int,
        max_message: int,
    ) -> None:
        self.node = node
        self.session = session
        self.transport = transport
        self.max_buffer = max_buffer
        self.ws = WebSocket(max_message)  # the RFC 6455 state: fragments, close handshake, limits
        self.closing = False
        self.close_code: int | None = None
        self.reason = "client"
        self.opened = time.monotonic()
        self._queue: list[str] | None = None  # frames waiting for the worker
        self._worker: asyncio.Task[None] | None = None  # held: the loop keeps only a weak reference
        self.fd = self.out_fd = -1
        sock = transport.get_extra_info("socket")
        if sock is not None and transport.get_extra_info("sslcontext") is None:
            self.fd = self.out_fd = sock.fileno()
            transport.set_write_buffer_limits(high=0)  # pause_writing as soon as anything is buffered

    @property
    def socket_id(self) -> str:
        return self.session.socket_id

    # --- writing ------------------------------------------------------------------------------

    def send(self, text: str) -> None:
        self.write(text_frame(text))

    def write(self, frame: bytes) -> bool:
        """Queue one pre-encoded frame. False if the socket is gone or was just closed as slow."""
        transport = self.transport
        if self.closing or transport.is_closing():
            return False
        if transport.get_write_buffer_size() > self.max_buffer:
            self._slow()
            return False
        transport.write(frame)
        return True

    def _slow(self) -> None:
        metrics.SLOW_CONSUMERS.inc()
        log.warning(
            "slow consumer closed",
            extra=fields(app_id=self.session.app.id, socket_id=self.socket_id, buffered=self.max_buffer),
        )
        # A close frame would sit behind the backlog; drop the connection now.
        self.closing = True
        self.out_fd = -1
        self.reason = "slow"
        self.transport.abort()

    def _write_close(self, frame: bytes) -> None:
        """Our close frame, within the same bound as every other write: behind a backlog past
        ``max_buffer`` it would never be read, so the socket is dropped as slow instead."""
        transport = self.transport
        if transport.is_closing():
            return
        if transport.get_write_buffer_size() > self.max_buffer:
            self._slow()
            return
        transport.write(frame)

    def write_rest(self, frame: bytes, done: int) -> bool:
        """Finish what the native fan-out began: ``done`` bytes went out, or -1 if the send
        failed, or -2 if it left this socket to the transport."""
        if done == -2:
            return self.write(frame)
        if done < 0:
            # The peer is gone (reset); drop the socket now rather than wait for a read to notice.
            self.closing = True
            self.out_fd = -1
            self.transport.abort()
            return False
        self.transport.write(memoryview(frame)[done:])
        return True

    def close(self, code: int, reason: str) -> None:
        """Close with a Pusher close code, from anywhere, without waiting here."""
        if self.closing:
            return
        self.closing = True
        self.out_fd = -1
        self.reason = "server"
        self.close_code = code
        frame = self.ws.close(code, reason)
        if frame is None or self.transport.is_closing():
            return
        self._write_close(frame)
        # The client should answer with its own close frame; if it does not, hang up anyway.
        asyncio.get_running_loop().call_later(CLOSE_TIMEOUT, hang_up, self.transport, self.session.app.id)

    def _hang_up(self) -> None:
        """Close the TCP connection once our last bytes are out; a client that stopped reading
        must not hold it open, so it is aborted if that takes longer than CLOSE_TIMEOUT."""
        self.transport.close()
        asyncio.get_running_loop().call_later(CLOSE_TIMEOUT, hang_up, self.transport, self.session.app.id)

    # --- reading ------------------------------------------------------------------------------

    def data_received(self, data: bytes) -> None:
        for event in self.ws.receive(data):
            if type(event) is str:
                if not self.closing:
                    self._text(event)
            else:
                # `type() is str` (cheaper than isinstance here) does not narrow the union for mypy.
                self._event(event)  # type: ignore[arg-type]

    def _event(self, event: Binary | Ping | Pong | Closed | Failed) -> None:
        match event:
            case Ping():
                self.session.heard(asyncio.get_running_loop().time())
                # Through the slow-consumer bound: a client that pings and never reads is dropped.
                self.write(event.pong)
            case Pong():
                self.session.heard(asyncio.get_running_loop().time())
            case Binary():
                metrics.PROTOCOL_ERRORS.labels(code=str(int(ErrorCode.RECONNECT))).inc()
                self.send(messages.error(int(ErrorCode.RECONNECT), "Binary frames are not supported"))
            case Closed():
                if self.close_code is None:
                    self.close_code = event.code
                if event.reply is None:  # the answer to our close: its timer is running
                    self.transport.close()
                    return
                self.closing = True
                self.out_fd = -1
                self._write_close(event.reply)
                self._hang_up()
            case Failed():
                log.info(
                    "connection error",
                    extra=fields(
                        app_id=self.session.app.id, socket_id=self.socket_id, code=event.code, error=event.reason
                    ),
                )
                if not self.closing:
                    self.closing = True
                    self.out_fd = -1
                    self.reason = "error"
                    self.close_code = event.code
                if event.reply is not None:
                    self._write_close(event.reply)
                self._hang_up()
            case _:
                assert_never(event)

    def _text(self, text: str) -> None:
        metrics.FRAMES_RECEIVED.inc()
        if self._queue is not None:
            self._queue.append(text)
            if len(self._queue) >= MAX_QUEUED:
                self.transport.pause_reading()  # back-pressure on a client that floods
            return
        actions = self.session.receive(text, asyncio.get_running_loop().time())
        if not actions:
            return
        if all(type(action) is Send for action in actions):
            for action in actions:
                self.node.answer(self, action)  # type: ignore[arg-type]  # all Send, checked just above
            return
        self._queue = []
        self._worker = asyncio.get_running_loop().create_task(self._work(actions))

    async def _work(self, actions: list[Action]) -> None:
        """Carry out actions that need shared state, then the frames queued meanwhile, in order."""
        loop = asyncio.get_running_loop()
        try:
            while True:
                await self.node.carry_out(self, actions)
                queue = self._queue
                if not queue or self.transport.is_closing():
                    break
                text = queue.pop(0)
                if len(queue) < MAX_QUEUED // 2:
                    self.transport.resume_reading()
                actions = self.session.receive(text, loop.time())
        except Exception:
            self.reason = "server-error"
            log.exception("connection failed", extra=fields(app_id=self.session.app.id, socket_id=self.socket_id))
            self.transport.abort()
        finally:
            self._queue = None
            self._worker = None

    # --- the end ------------------------------------------------------------------------------

    # Writes never wait: the slow-consumer rule in write() bounds the buffer. These only say
    # whether the native fan-out may send to the socket directly.
    def pause_writing(self) -> None:
        self.out_fd = -1

    def resume_writing(self) -> None:
        if not self.closing:
            self.out_fd = self.fd

    def eof_received(self) -> None:
        self.out_fd = -1  # the peer is leaving; the transport closes itself next
        # ... once what it holds is sent, which a peer that stopped reading never lets happen.
        asyncio.get_running_loop().call_later(CLOSE_TIMEOUT, hang_up, self.transport, self.session.app.id)

    def connection_lost(self, exc: Exception | None) -> None:
        # Before the loop closes the socket: a freed descriptor number must not stay in out_fd.
        self.closing = True
        self.out_fd = -1
        self.node.admission.closed(self.socket_id)
        # A worker still carrying out shared-state actions is left to finish, not cancelled: it
        # takes back what it added for a socket that is gone (Node._join) and then stops, while a
        # cancel landing between two Redis commands would leave a count or a member behind.
        self.node.spawn(self._gone())

    async def _gone(self) -> None:
        # Shielded by running as its own task: a shutdown must not leave presence half-removed.
        app_id = self.session.app.id
        try:
            await self.node.drop(self)
        finally:
            metrics.CONNECTIONS.labels(app_id=app_id).dec()
            metrics.CONNECTIONS_CLOSED.labels(reason=self.reason).inc()
            log.info(
                "connection closed",
                extra=fields(
                    app_id=app_id,
                    socket_id=self.socket_id,
                    reason=self.reason,
                    code=self.close_code,
                    seconds=round(time.monotonic() - self.opened, 3),
                ),
            )


def refuse(transport: asyncio.Transport, code: ErrorCode, message: str) -> None:
    """Refuse an upgraded socket the Pusher way: a pusher:error frame, then the close code."""
    metrics.CONNECTIONS_REFUSED.labels(code=str(int(code))).inc()
    transport.write(text_frame(messages.error(int(code), message)) + frames.close_frame(int(code), message))
    asyncio.get_running_loop().call_later(CLOSE_TIMEOUT, hang_up, transport, None)


def hang_up(transport: asyncio.Transport, app_id: str | None) -> None:
    """The close handshake has had its time: close, or abort if bytes are still unsent (a client
    that stopped reading would keep the socket, its quota slot and its memory for ever)."""
    buffered = transport.get_write_buffer_size()
    if not buffered:
        transport.close()  # nothing left to send: closes at once (a no-op once closed)
        return
    metrics.CLOSE_TIMEOUTS.inc()
    log.info(
        "close timed out, socket aborted", extra=fields(app_id=app_id, buffered=buffered, remote=remote(transport))
    )
    transport.abort()


def remote(transport: asyncio.Transport) -> str:
    peer = transport.get_extra_info("peername")
    return str(peer[0]) if isinstance(peer, tuple) and peer else ""
