"""Catch-up: a socket's missed or recent history (``clarion:resume``, ``clarion:rewind``, or the
same inside ``pusher:subscribe``), sent before its live frames, in serial order, each event once.

While history is read, the socket's live frames on the channel are held (``hub.CatchingUp``);
after the replay they follow, less those the replay already sent.
"""

from __future__ import annotations

from ..observability import metrics
from ..protocol import messages
from ..protocol.history import gap
from ..protocol.session import CatchUp
from ..scaling.contracts import History
from .hub import AppHub, CatchingUp, Socket
from .shared import Shared


class CatchUps:
    __slots__ = ("shared",)

    def __init__(self, shared: Shared) -> None:
        self.shared = shared

    def hold(self, hub: AppHub, conn: Socket, name: str) -> CatchingUp | None:
        """Hold the socket's live frames on ``name`` from now until its history is sent. None when
        the socket is not on the channel, or a history read is already in flight for it there."""
        channel = hub.channels.get(name)
        if channel is None or conn.socket_id not in channel.sockets:
            return None
        earlier = channel.catching.get(conn.socket_id)
        if isinstance(earlier, CatchingUp) and earlier.held is not None:
            return None  # one history read at a time per socket and channel
        # An earlier catch-up that only waits to skip in-flight duplicates is replaced: this one
        # reads at least as far, and skips the same frames (a cached event's too: it is history).
        catching = channel.catching[conn.socket_id] = CatchingUp()
        return catching

    async def run(
        self, hub: AppHub, conn: Socket, action: CatchUp, *, fresh: bool, catching: CatchingUp | None = None
    ) -> None:
        """Send history and its end marker, then the live frames held meanwhile, then go live.

        ``fresh``: asked for in the subscribe itself, so nothing went out live before the hold.
        Otherwise the socket may have had live events since its subscribe; those are not sent again.
        """
        name = action.channel
        if catching is None:
            catching = self.hold(hub, conn, name)
            if catching is None:
                # One history read at a time per socket and channel (or the join did not complete).
                conn.send(messages.catch_up_refused(name, action.is_resume, "busy"))
                return
        channel = hub.channels[name]
        live = None if fresh else channel.live_range(conn.socket_id)
        backend = self.shared.backend
        if action.is_resume:
            history = await backend.history(
                hub.app.id, name, after=action.serial, limit=action.limit, max_age=action.max_age
            )
        else:
            max_age = action.seconds if action.seconds is not None else action.max_age
            limit = action.count if action.count is not None else action.limit
            history = await backend.history(hub.app.id, name, after=None, limit=limit, max_age=max_age)
        if hub.channels.get(name) is not channel or channel.catching.get(conn.socket_id) is not catching:
            return  # unsubscribed or gone meanwhile
        del channel.catching[conn.socket_id]
        reason = unrecoverable(action, history, catching)
        if reason is not None:
            # Nothing replayed: the client must refetch its state; live frames held meanwhile follow.
            if action.is_resume:
                metrics.RESUMES.labels(outcome=reason).inc()
            conn.send(messages.catch_up_refused(name, action.is_resume, reason, history.epoch, history.serial))
            release(conn, catching, None, 0)
            return
        sent = 0
        for serial, frame in history.entries:
            if live is not None and live[0] < serial <= live[1]:
                continue  # it reached this socket live after the subscribe
            conn.send(messages.as_replayed(frame))
            sent += 1
        upto = max(history.serial, live[1] if live is not None else 0)
        metrics.REPLAYED.inc(sent)
        if action.is_resume:
            metrics.RESUMES.labels(outcome="recovered").inc()
            conn.send(messages.resumed(name, True, history.epoch, upto))
        else:
            conn.send(messages.rewound(name, sent, history.epoch, upto))
        release(conn, catching, history.epoch, upto)
        if not catching.caught_up(channel.last):
            channel.catching[conn.socket_id] = catching  # skip live frames the replay already sent


def unrecoverable(action: CatchUp, history: History, catching: CatchingUp) -> str | None:
    """Why a resume cannot give back everything missed, or None when it can."""
    if not history.available:
        return "unavailable"
    if catching.overflowed:
        return "overflow"
    if not action.is_resume:
        return None
    assert action.serial is not None and action.epoch is not None
    entries = history.entries
    first = entries[0][0] if entries else None
    return gap(action.epoch, action.serial, history.epoch, history.serial, first, len(entries))


def release(conn: Socket, catching: CatchingUp, epoch: str | None, upto: int) -> None:
    """Write the live frames held during the read that the replay did not already send."""
    held, catching.held = catching.held or [], None
    catching.epoch, catching.upto = epoch or "", upto
    for frame, serial, frame_epoch in held:
        if serial and frame_epoch == catching.epoch and serial <= catching.upto:
            continue
        conn.write(frame)
        if serial and frame_epoch == catching.epoch:
            catching.upto = serial
