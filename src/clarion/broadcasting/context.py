"""The socket id of the request being served (the ``X-Socket-ID`` header pusher-js apps send, as
laravel-echo's interceptors do), set by the integrations' middleware and read by ``to_others()``."""

from __future__ import annotations

import re
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar

SOCKET_ID_HEADER = "X-Socket-ID"
_SOCKET_ID = re.compile(r"\d{1,20}\.\d{1,20}")
_current: ContextVar[str | None] = ContextVar("clarion_socket_id", default=None)


def valid_socket_id(value: str | None) -> str | None:
    """The socket id if it has Pusher's form, else None (a bad header is ignored, not trusted)."""
    if value is None:
        return None
    return value if _SOCKET_ID.fullmatch(value) else None


def current_socket_id() -> str | None:
    return _current.get()


@contextmanager
def socket_id(value: str | None) -> Iterator[None]:
    """Serve one request as coming from this socket (``None``: from no socket)."""
    token = _current.set(valid_socket_id(value))
    try:
        yield
    finally:
        _current.reset(token)
