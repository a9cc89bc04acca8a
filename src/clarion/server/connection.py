"""One WebSocket connection, as an asyncio protocol: frames in, protocol session, frames out.

An idle connection costs one object and its transport: no task, no reader, no timer. A task is
made only while a client frame needs shared state (a subscribe, a sign-in, a publish); the frames
that arrive meanwhile wait in a short queue, in order, and reading pauses when it fills.

Writes go straight to the transport (no await), so fan-out never waits on a socket. A socket
whose unsent bytes pass ``max_buffer`` is a slow consumer: it is closed with 4100 (back off and
reconnect) and counted, and nobody else waits for it.

While the transport buffers nothing, ``out_fd`` is the socket's descriptor and the native fan-out
(``fanout.py``) sends to it directly; the transport's high-water mark is 0, so it tells us
(``pause_writing``) the moment it holds bytes, and from then until it drains every write goes
through it, in order. TLS sockets always write through the transport.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from typing import TYPE_CHECKING

from ..observability import metrics
from ..observability.logs import fields
from ..protocol import messages
from ..protocol.errors import ErrorCode
from ..protocol.session import Send, Session
from . import frames
from .frames import FrameError, text_frame

if TYPE_CHECKING:
    from .node import Node

log = logging.getLogger("clarion.connection")

CLOSE_TIMEOUT = 2.0  # seconds to wait for the client's answer to our close frame
MAX_QUEUED = 64  # client frames waiting behind a slow action before reading pauses


class Connection(asyncio.Protocol):
    __slots__ = (
        "_buffer",
        "_fragments",
        "_queue",
        "_worker",
        "close_code",
        "closing",
        "fd",
        "max_buffer",
        "max_message",
        "node",
        "opened",
        "out_fd",
        "reason",
        "session",
        "transport",
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
        self.max_message = max_message
        self.closing = False
        self.close_code: int | None = None
        self.reason = "client"
        self.opened = time.monotonic()
        self._buffer: bytearray | None = None  # bytes of an unfinished frame
        self._fragments: bytearray | None = None  # an unfinished message: its opcode, then its parts
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
            metrics.SLOW_CONSUMERS.inc()
            log.warning(
                "slow consumer closed",
                extra=fields(app_id=self.session.app.id, socket_id=self.socket_id, buffered=self.max_buffer),
            )
            # A close frame would sit behind the backlog; drop the connection now.
            self.closing = True
            self.out_fd = -1
            self.reason = "slow"
            transport.abort()
            return False
        transport.write(frame)
        return True

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
        transport = self.transport
        if transport.is_closing():
            return
        transport.write(frames.close_frame(code, reason))
        # The client should answer with its own close frame; if it does not, close anyway.
        asyncio.get_running_loop().call_later(CLOSE_TIMEOUT, self._give_up)

    def _give_up(self) -> None:
        if not self.transport.is_closing():
            self.transport.close()

    # --- reading ------------------------------------------------------------------------------

    def data_received(self, data: bytes) -> None:
        buffer = self._buffer
        if buffer is None:
            buffer = bytearray(data)
        else:
            buffer += data
        try:
            parsed, used = frames.parse(buffer, self.max_message)
        except FrameError as exc:
            self._fail(exc.code, exc.reason)
            return
        if used:
            del buffer[:used]
        self._buffer = buffer or None
        for opcode, fin, payload in parsed:
            if self.closing and opcode != frames.CLOSE:
                continue
            self._frame(opcode, fin, payload)

    def _frame(self, opcode: int, fin: bool, payload: bytes) -> None:
        if opcode == frames.TEXT or opcode == frames.BINARY or opcode == frames.CONTINUATION:
            fragments = self._fragments
            if opcode == frames.CONTINUATION:
                if fragments is None:
                    self._fail(frames.PROTOCOL_ERROR, "continuation without a message")
                    return
                fragments += payload  # a running total: no re-summing per fragment
                if len(fragments) - 1 > self.max_message:
                    self._fail(frames.TOO_BIG, "message too big")
                    return
                if not fin:
                    return
                self._fragments = None
                kind = fragments[0]
                payload = bytes(memoryview(fragments)[1:])
            elif fragments is not None:
                self._fail(frames.PROTOCOL_ERROR, "a new message inside a fragmented one")
                return
            elif not fin:
                # Remember the opcode in front of the first part.
                self._fragments = bytearray((opcode,)) + payload
                return
            else:
                kind = opcode
            if kind == frames.BINARY:
                metrics.PROTOCOL_ERRORS.labels(code=str(int(ErrorCode.RECONNECT))).inc()
                self.send(messages.error(int(ErrorCode.RECONNECT), "Binary frames are not supported"))
                return
            try:
                text = payload.decode()
            except UnicodeDecodeError:
                self._fail(frames.INVALID_DATA, "text frame is not UTF-8")
                return
            self._text(text)
        elif opcode == frames.PING:
            self._heard()
            self.transport.write(frames.control_frame(frames.PONG, payload))
        elif opcode == frames.PONG:
            self._heard()
        else:  # CLOSE
            self._closed_by_peer(payload)

    def _heard(self) -> None:
        session = self.session
        session.last_seen = asyncio.get_running_loop().time()
        session.ping_sent_at = None

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
                self.node.answer(self, action)  # type: ignore[arg-type]
            return
        self._queue = []
        self._worker = asyncio.get_running_loop().create_task(self._work(actions))

    async def _work(self, actions: list) -> None:  # type: ignore[type-arg]
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

    def _closed_by_peer(self, payload: bytes) -> None:
        if len(payload) == 1:
            self._fail(frames.PROTOCOL_ERROR, "a close frame's code takes two bytes")
            return
        code = int.from_bytes(payload[:2], "big") if payload else 1005
        if payload and not frames.valid_close_code(code):
            self._fail(frames.PROTOCOL_ERROR, f"close code {code} may not be sent")
            return
        try:
            payload[2:].decode()
        except UnicodeDecodeError:
            self._fail(frames.INVALID_DATA, "close reason is not UTF-8")
            return
        if self.close_code is None:
            self.close_code = code
        if not self.closing:
            self.closing = True
            self.out_fd = -1
            # Answer with the same code, as RFC 6455 asks, then hang up.
            self.transport.write(frames.close_frame(code if payload else 1000))
        self.transport.close()

    def _fail(self, code: int, reason: str) -> None:
        """The client broke the WebSocket protocol: close with ``code`` and stop reading."""
        log.info(
            "connection error",
            extra=fields(app_id=self.session.app.id, socket_id=self.socket_id, code=code, error=reason),
        )
        self._buffer = None
        if not self.closing:
            self.closing = True
            self.out_fd = -1
            self.reason = "error"
            self.close_code = code
            self.transport.write(frames.close_frame(code, reason))
        self.transport.close()

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

    def connection_lost(self, exc: Exception | None) -> None:
        # Before the loop closes the socket: a freed descriptor number must not stay in out_fd.
        self.closing = True
        self.out_fd = -1
        self._buffer = self._fragments = None
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
    asyncio.get_running_loop().call_later(CLOSE_TIMEOUT, _close_quietly, transport)


def _close_quietly(transport: asyncio.Transport) -> None:
    with contextlib.suppress(Exception):
        transport.close()
