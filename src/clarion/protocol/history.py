"""Clarion's recovery extension, as pure rules: when a client's last position can be caught up
from what a channel's history holds, and how an HTTP history query reads."""

from __future__ import annotations

import re
from dataclasses import dataclass

from .errors import ApiError

MAX_SERIAL = 2**53 - 1  # what a JavaScript client can hold exactly
EPOCH = re.compile(r"\A[A-Za-z0-9_-]{1,64}\Z")
_WHOLE = re.compile(r"\A[0-9]{1,20}\Z")  # ASCII digits only, short enough to read safely


def gap(
    asked_epoch: str,
    asked_serial: int,
    epoch: str | None,
    serial: int,
    first: int | None,
    count: int,
    *,
    paged: bool = False,
) -> str | None:
    """Why the events after (``asked_epoch``, ``asked_serial``) cannot all be given back, or None
    when they can. ``epoch``/``serial`` are the channel's current position; ``first`` and
    ``count`` describe the entries read after the asked serial (oldest first). ``paged``: the read
    was limited on purpose (HTTP ``limit``), so only its start must join up with the position."""
    if epoch is None or epoch != asked_epoch:
        return "epoch_changed"  # history was lost (restart without Redis, outage, expiry)
    if asked_serial > serial:
        return "unknown_position"
    missed = serial - asked_serial
    if missed and (first != asked_serial + 1 or (count < missed and not paged)):
        return "too_old"  # trimmed by size or age
    return None


@dataclass(frozen=True, slots=True)
class HistoryQuery:
    epoch: str | None
    since: int | None
    limit: int


def parse_history_query(params: dict[str, str], max_limit: int) -> HistoryQuery:
    """``epoch`` and ``since`` (a serial) ask for what came after that position; without them the
    newest events are read. ``limit`` is capped by the channel's history size."""
    epoch = params.get("epoch") or None
    if epoch is not None and not EPOCH.match(epoch):
        raise ApiError(400, "'epoch' must be 1 to 64 letters, digits, '-' or '_'")
    since: int | None = None
    if params.get("since", "") != "":
        raw = params["since"]
        if not _WHOLE.match(raw) or int(raw) > MAX_SERIAL:
            raise ApiError(400, "'since' must be a serial: a whole number of at least 0")
        since = int(raw)
        if epoch is None:
            raise ApiError(400, "'since' needs the 'epoch' it belongs to")
    limit = max_limit
    if params.get("limit", "") != "":
        raw = params["limit"]
        if not _WHOLE.match(raw) or int(raw) < 1:
            raise ApiError(400, "'limit' must be a whole number of at least 1")
        limit = min(int(raw), max_limit)
    return HistoryQuery(epoch, since, limit)
