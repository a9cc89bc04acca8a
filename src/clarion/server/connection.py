"""One WebSocket connection: protocol session plus the transport it writes to.

Writes go straight to the asyncio transport (no await), so fan-out never waits on a socket. A
socket whose unsent bytes pass ``max_buffer`` is a slow consumer: it is closed with 4100 (back off
and reconnect) and counted, and nobody else waits for it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging

from aiohttp import web

from ..observability import metrics
from ..observability.logs import fields
from ..protocol.errors import ErrorCode
from ..protocol.session import Session
from .frames import text_frame

log = logging.getLogger("clarion.connection")

CLOSE_TIMEOUT = 5.0


class Connection:
    __slots__ = ("closing", "max_buffer", "session", "transport", "ws")

    def __init__(self, session: Session, ws: web.WebSocketResponse, transport: asyncio.Transport, max_buffer: int):
        self.session = session
        self.ws = ws
        self.transport = transport
        self.max_buffer = max_buffer
        self.closing = False

    @property
    def socket_id(self) -> str:
        return self.session.socket_id

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
            # The close frame would sit behind the backlog; drop the connection now.
            self.closing = True
            transport.abort()
            return False
        transport.write(frame)
        return True

    def close(self, code: int, reason: str) -> asyncio.Task[None] | None:
        """Close with a Pusher close code, from any task, without waiting here."""
        if self.closing:
            return None
        self.closing = True
        return asyncio.get_running_loop().create_task(self._close(code, reason))

    async def _close(self, code: int, reason: str) -> None:
        try:
            await asyncio.wait_for(self.ws.close(code=code, message=reason.encode()[:120]), CLOSE_TIMEOUT)
        except (TimeoutError, ConnectionError, RuntimeError):
            pass
        finally:
            if not self.transport.is_closing():
                with contextlib.suppress(Exception):
                    self.transport.abort()


async def reject(ws: web.WebSocketResponse, code: ErrorCode, message: str) -> None:
    """Refuse a connection the Pusher way: a pusher:error frame, then the close code."""
    from ..protocol import messages

    metrics.CONNECTIONS_REFUSED.labels(code=str(int(code))).inc()
    with contextlib.suppress(Exception):
        await ws.send_str(messages.error(int(code), message))
    with contextlib.suppress(Exception):
        await asyncio.wait_for(ws.close(code=int(code), message=message.encode()[:120]), CLOSE_TIMEOUT)
