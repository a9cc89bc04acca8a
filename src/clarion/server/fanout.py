"""Writing one encoded frame to every subscriber of a channel: the hot path.

The native loop (``clarion._fanout``, built from ``src/clarion/_fanout.c`` at install) sends the
frame with ``send(2)`` straight to each socket whose transport has nothing buffered. What it
cannot finish (a full socket buffer, bytes already queued, a closing transport) comes back to
:meth:`Connection.write_rest`, which queues it on the transport as before. Where the extension is
missing (no C compiler at install) the same contract runs in Python, one transport write per socket.
"""

from __future__ import annotations

from typing import Protocol, TypeVar

from .config import ConfigError


class Subscriber(Protocol):
    """All the fan-out needs of a socket (``Connection`` is the real one)."""

    out_fd: int  # the socket's descriptor while nothing is queued before it, else -1

    def write(self, frame: bytes) -> bool: ...

    def write_rest(self, frame: bytes, done: int) -> bool: ...


S = TypeVar("S", bound=Subscriber)


class Fanout(Protocol):
    """(sockets, frame, socket to skip) -> (sockets that took the whole frame, [(socket, bytes sent
    or -1/-2)]). A dict, not any mapping: the native loop walks it with ``PyDict_Next``."""

    def __call__(
        self, sockets: dict[str, S], frame: bytes, exclude: S | None, /
    ) -> tuple[int, list[tuple[S, int]]]: ...


def fanout_python(sockets: dict[str, S], frame: bytes, exclude: S | None, /) -> tuple[int, list[tuple[S, int]]]:
    """The native loop's contract, in Python: every socket through its transport."""
    sent = 0
    for conn in sockets.values():
        if conn is not exclude and conn.write(frame):
            sent += 1
    return sent, []


fanout_native: Fanout | None
try:
    from .._fanout import fanout as fanout_native
except ImportError:  # pragma: no cover - only without a C compiler at install
    fanout_native = None


def choose(name: str | None) -> Fanout:
    """The fan-out named in the settings; by default the native one where it was built. Checked
    once at start (``clarion serve`` exits 2 when ``native`` was asked for but not built)."""
    if name == "native" or (name is None and fanout_native is not None):
        if fanout_native is None:
            raise ConfigError("fanout = native, but clarion._fanout was not built (no C compiler at install?)")
        return fanout_native
    return fanout_python


def send(fan: Fanout, sockets: dict[str, S], frame: bytes, exclude: S | None = None) -> int:
    """Write ``frame`` to every connection in ``sockets`` but ``exclude``; how many took it."""
    sent, rest = fan(sockets, frame, exclude)
    for conn, done in rest:
        if conn.write_rest(frame, done):
            sent += 1
    return sent
