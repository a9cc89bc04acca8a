"""Joins and leaves: a socket subscribing to a channel (presence members, cache channels, the
subscription count) and leaving it, with the webhooks they cause."""

from __future__ import annotations

import logging
from typing import Any

from ..observability.logs import fields
from ..protocol import messages
from ..protocol import webhooks as hooks
from ..protocol.channels import kind_of
from ..protocol.session import Join, Leave, Member
from ..scaling.contracts import FIRST, FULL, Envelope
from . import refusals
from .catch_up import CatchUps
from .counts import Counts
from .hub import AppHub, Overheard, SkipCached, Socket
from .shared import Shared

log = logging.getLogger("clarion.server")

# Channels a hub remembers having reported a cache miss for; past it, it forgets them all.
MAX_CACHE_MISSES_REPORTED = 10_000


class Joins:
    __slots__ = ("catch_ups", "counts", "shared")

    def __init__(self, shared: Shared, counts: Counts, catch_ups: CatchUps) -> None:
        self.shared = shared
        self.counts = counts
        self.catch_ups = catch_ups

    async def join(self, hub: AppHub, conn: Socket, action: Join) -> None:
        """Every shared-state round trip happens first, the newcomer's ``member_added`` included,
        so the answer comes only once the cluster knows. Then, with no await in between, the
        socket is registered and answered, so nothing on the channel reaches it before
        ``subscription_succeeded`` (and the cached event, on cache channels)."""
        name, member, app = action.channel, action.member, hub.app
        backend = self.shared.backend
        channel = hub.channels.get(name)
        if channel is not None and conn.socket_id in channel.sockets:
            # A repeated subscribe: answer again, register nothing.
            presence = await self._presence(hub, name, member)
            cached = await backend.cached(app.id, name) if kind_of(name).cache else None
            self._answer(hub, conn, name, presence, cached)
            if presence is not None:
                hub.listed(name, conn.socket_id, presence["ids"], self.shared.clock())
            return
        # Member events that reach this node before the socket is registered would pass it by:
        # keep them until it is answered (a presence join only).
        overheard = hub.overhear(name) if member is not None else None
        try:
            await self._join(hub, conn, action, overheard)
        finally:
            if overheard is not None:
                hub.stop_overhearing(name, overheard)

    async def _join(self, hub: AppHub, conn: Socket, action: Join, overheard: Overheard | None) -> None:
        name, member, app = action.channel, action.member, hub.app
        backend = self.shared.backend
        result = None
        if member is not None and not hub.has_member(name, member.user_id):
            result = await backend.join(app.id, name, member.user_id, member.user_info, app.max_presence_members)
            if result == FULL:
                conn.session.refused(name)
                message = f"Presence channel is full ({app.max_presence_members} members)"
                frame = messages.subscription_error(name, "LimitReached", message, 403)
                refusals.subscription_refused(conn, frame)
                conn.send(frame)
                return
        total = await backend.add_subscriptions(app.id, name, 1)
        presence = await self._presence(hub, name, member)
        cached = await backend.cached(app.id, name) if kind_of(name).cache else None
        announced = False
        if member is not None and result == FIRST and self._still_joining(hub, conn, name):
            # The other members hear of the newcomer before the newcomer hears it is in: whoever
            # it tells next already has it in their member list.
            payload = {"user_id": member.user_id, "user_info": member.user_info}
            added = messages.encode("pusher_internal:member_added", payload, name)
            await backend.publish(Envelope(app.id, name, added, conn.socket_id))
            announced = True
        if not self._still_joining(hub, conn, name):
            await self._withdraw(hub, conn, name, member, result, announced)
            return
        hub.join(conn, name, member)
        self._answer(hub, conn, name, presence, cached)
        if presence is not None:
            known = set(presence["ids"])
            if overheard is not None:
                self._tell_overheard(conn, name, overheard, known)
            hub.listed(name, conn.socket_id, known, self.shared.clock())
        catching = self.catch_ups.hold(hub, conn, name) if action.catch_up is not None else None
        if total == 1:
            self.shared.webhook(app.id, hooks.channel_occupied(name))
        if announced and member is not None:
            self.shared.webhook(app.id, hooks.member_added(name, member.user_id))
        self.counts.changed(hub, name)
        if catching is not None and action.catch_up is not None:
            await self.catch_ups.run(hub, conn, action.catch_up, fresh=True, catching=catching)

    @staticmethod
    def _tell_overheard(conn: Socket, name: str, overheard: Overheard, known: set[str]) -> None:
        """Send the member events that came in while the join was made and that its member list
        does not already tell."""
        for frame in overheard.news(known):
            conn.send(frame)
        if overheard.overflowed:
            log.warning(
                "presence join closed: its members changed more than it could hold while it was made",
                extra=fields(app_id=conn.session.app.id, socket_id=conn.socket_id, channel=name),
            )
            conn.close(4200, "Presence members changed too fast during the subscription; reconnect")

    @staticmethod
    def _still_joining(hub: AppHub, conn: Socket, name: str) -> bool:
        """Neither gone nor unsubscribed since the subscribe."""
        return conn.socket_id in hub.connections and name in conn.session.channels

    async def _withdraw(
        self, hub: AppHub, conn: Socket, name: str, member: Member | None, result: int | None, announced: bool
    ) -> None:
        """The socket left (or unsubscribed) while its join was made: take back what was added
        for it, and tell the members it has gone if they were told it came."""
        app, backend = hub.app, self.shared.backend
        await backend.add_subscriptions(app.id, name, -1)
        if (
            member is not None
            and result is not None
            and not hub.has_member(name, member.user_id)
            and await backend.leave(app.id, name, member.user_id)
            and announced
        ):
            removed = messages.encode("pusher_internal:member_removed", {"user_id": member.user_id}, name)
            await backend.publish(Envelope(app.id, name, removed))
        log.info(
            "subscription withdrawn: the socket left while it was made",
            extra=fields(app_id=app.id, socket_id=conn.socket_id, channel=name),
        )

    async def _presence(self, hub: AppHub, name: str, member: Member | None) -> dict[str, Any] | None:
        if member is None:
            return None
        members = await self.shared.backend.members(hub.app.id, name)
        members.setdefault(member.user_id, member.user_info)  # ours, even if a write is in flight
        return {"ids": list(members), "hash": members, "count": len(members)}

    def _answer(
        self,
        hub: AppHub,
        conn: Socket,
        name: str,
        presence: dict[str, Any] | None,
        cached: tuple[str, str, float] | None,
    ) -> None:
        conn.send(messages.subscription_succeeded(name, presence))
        if not kind_of(name).cache:
            return
        if cached is not None:
            conn.send(cached[1])
            channel = hub.channels.get(name)
            if channel is not None and conn.socket_id in channel.sockets:
                channel.catching.setdefault(conn.socket_id, SkipCached(cached[1]))
            return
        conn.send(messages.encode("pusher:cache_miss", {}, name))
        # Pusher de-duplicates cache_miss webhooks: one per channel (per node) until it is cached.
        if name not in hub.cache_miss_reported:
            if len(hub.cache_miss_reported) > MAX_CACHE_MISSES_REPORTED:
                hub.cache_miss_reported.clear()  # bounded; a repeat webhook beats unbounded memory
            hub.cache_miss_reported.add(name)
            self.shared.webhook(hub.app.id, hooks.cache_miss(name))

    async def leave(self, hub: AppHub, conn: Socket, action: Leave) -> None:
        name, member, app = action.channel, action.member, hub.app
        backend = self.shared.backend
        left = hub.leave(conn, name, member)
        if left is None:
            return
        if member is not None and left.member_removed and await backend.leave(app.id, name, member.user_id):
            removed = messages.encode("pusher_internal:member_removed", {"user_id": member.user_id}, name)
            await backend.publish(Envelope(app.id, name, removed))
            self.shared.webhook(app.id, hooks.member_removed(name, member.user_id))
        if await backend.add_subscriptions(app.id, name, -1) == 0:
            self.shared.webhook(app.id, hooks.channel_vacated(name))
        self.counts.changed(hub, name)
