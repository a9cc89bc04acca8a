"""Channel authorization and user sign-in, for the integrations' ``/broadcasting/*`` routes.

The app says who is asking (its existing authentication gives a user object, or None); the route
table says what that user may join. Every decision is logged with the user id, the channel and
the route that decided, never with channel data. Refusals raise :class:`AuthorizationRefused`,
which the integrations answer as ``{"error": reason}`` with its status (403, or 400 for a
malformed request).
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from ..protocol.channels import Kind, kind_of, name_problem
from ..protocol.signatures import channel_auth, hmac_hex, user_auth
from . import encryption, observe
from .broadcaster import Broadcaster
from .context import valid_socket_id
from .errors import AuthorizationRefused, ConfigError
from .routes import ChannelRoutes, GuardResult, RouteMatch

HISTORY_TOKEN_TTL = 300
HISTORY_TOKEN_MAX_TTL = 3600


def default_user_id(user: Any) -> str | int | None:
    """``user.id``, ``user.pk`` (Django) or ``user["id"]``."""
    if user is None:
        return None
    if isinstance(user, Mapping):
        value = user.get("id")
    else:
        value = getattr(user, "id", None)
        if value is None:
            value = getattr(user, "pk", None)
    return value if isinstance(value, str | int) and not isinstance(value, bool) else None


def history_token(app_key: str, app_secret: str, channel: str, expires: int) -> str:
    """``<expires>:<hex HMAC-SHA256(secret, "{key}:history:{channel}:{expires}")>`` for the
    ``X-Clarion-History-Token`` header of Clarion's history endpoint."""
    return f"{expires}:{hmac_hex(app_secret, f'{app_key}:history:{channel}:{expires}')}"


@dataclass
class Authorizer:
    """What ``/broadcasting/auth``, ``/broadcasting/user-auth`` and ``/broadcasting/history`` do.

    ``user_id`` and ``user_info`` read the app's user (``user_info`` goes into sign-in data);
    ``watchlist`` gives the user ids whose online state the user may watch.
    """

    broadcaster: Broadcaster
    routes: ChannelRoutes
    user_id: Callable[[Any], str | int | None] = default_user_id
    user_info: Callable[[Any], Mapping[str, Any] | None] | None = None
    watchlist: Callable[[Any], list[str]] | None = None
    history_ttl: int = HISTORY_TOKEN_TTL

    def __post_init__(self) -> None:
        if not self.broadcaster.app_key or not self.broadcaster.app_secret:
            raise ConfigError("channel authorization needs the app key and secret (a pusher:// driver, or app_key=)")
        if not 1 <= self.history_ttl <= HISTORY_TOKEN_MAX_TTL:
            raise ConfigError(f"history_ttl must be 1..{HISTORY_TOKEN_MAX_TTL} seconds")
        self._key: str = self.broadcaster.app_key
        self._secret: str = self.broadcaster.app_secret

    # -- channel auth ------------------------------------------------------------------------------

    async def authorize(self, user: Any, params: Mapping[str, Any]) -> dict[str, Any]:
        channel, socket_id, history = self._request(user, params)
        found, result = await self.routes.check(user, channel) if self._needs_route(channel) else (None, True)
        return self._answer(user, channel, socket_id, history, found, result)

    def authorize_sync(self, user: Any, params: Mapping[str, Any]) -> dict[str, Any]:
        channel, socket_id, history = self._request(user, params)
        found, result = self.routes.check_sync(user, channel) if self._needs_route(channel) else (None, True)
        return self._answer(user, channel, socket_id, history, found, result)

    def _needs_route(self, channel: str) -> bool:
        return kind_of(channel).needs_auth

    def _refuse(
        self, kind: str, user: Any, channel: str | None, reason: str, status: int = 403, pattern: str | None = None
    ) -> AuthorizationRefused:
        observe.authorization(
            kind,
            allowed=False,
            user_id=self.user_id(user) if user is not None else None,
            channel=channel,
            pattern=pattern,
            reason=reason,
        )
        return AuthorizationRefused(reason, status)

    def _request(self, user: Any, params: Mapping[str, Any]) -> tuple[str, str | None, bool]:
        channel = params.get("channel_name")
        if not isinstance(channel, str) or not channel:
            raise self._refuse("channel", user, None, "channel_name is required", 400)
        problem = name_problem(channel)
        if problem is not None:
            raise self._refuse("channel", user, channel[:200], f"invalid channel name: {problem}")
        history = str(params.get("history", "")) in ("1", "true")
        raw_socket = params.get("socket_id")
        socket_id = valid_socket_id(raw_socket) if isinstance(raw_socket, str) else None
        if history and raw_socket in (None, ""):
            socket_id = None
        elif socket_id is None:
            raise self._refuse("channel", user, channel, "socket_id is required and must look like 123.456", 400)
        kind = kind_of(channel)
        if kind.kind is Kind.USER:
            raise self._refuse("channel", user, channel, "user channels are joined by signing in, not by channel auth")
        if not history and not kind.needs_auth:
            raise self._refuse("channel", user, channel, "public channels need no authorization", 400)
        if user is None or self.user_id(user) is None:
            raise self._refuse("channel", user, channel, "not authenticated")
        return channel, socket_id, history

    def _answer(
        self,
        user: Any,
        channel: str,
        socket_id: str | None,
        history: bool,
        found: RouteMatch | None,
        result: GuardResult,
    ) -> dict[str, Any]:
        pattern = found.route.pattern if found else None
        if found is None and kind_of(channel).needs_auth:
            raise self._refuse("channel", user, channel, "no channel route matches this channel")
        if result is False or result is None:
            raise self._refuse("channel", user, channel, "the channel's guard refused this user", pattern=pattern)
        kind = kind_of(channel)
        user_id = self.user_id(user)
        if history:
            expires = int(time.time()) + self.history_ttl
            observe.authorization(
                "history",
                allowed=True,
                user_id=user_id,
                channel=channel,
                pattern=pattern,
                reason="history token issued",
            )
            return {"history_token": history_token(self._key, self._secret, channel, expires), "expires": expires}
        assert socket_id is not None
        answer: dict[str, Any]
        if kind.is_presence:
            member: dict[str, Any] = {"user_id": str(user_id)}
            if isinstance(result, dict):
                member["user_info"] = result
            channel_data = json.dumps(member, separators=(",", ":"))
            answer = {
                "auth": channel_auth(self._key, self._secret, socket_id, channel, channel_data),
                "channel_data": channel_data,
            }
        else:
            answer = {"auth": channel_auth(self._key, self._secret, socket_id, channel)}
        if kind.kind is Kind.ENCRYPTED:
            master = self.broadcaster.master_key
            if master is None:
                raise self._refuse("channel", user, channel, "encrypted channels are not configured", 403, pattern)
            answer["shared_secret"] = _b64(encryption.shared_secret(channel, master))
        observe.authorization(
            "channel", allowed=True, user_id=user_id, channel=channel, pattern=pattern, reason="route allowed"
        )
        return answer

    # -- user sign-in ------------------------------------------------------------------------------

    def authenticate_user(self, user: Any, params: Mapping[str, Any]) -> dict[str, Any]:
        """The ``pusher:signin`` answer ``{"auth", "user_data"}`` for the app's current user."""
        raw_socket = params.get("socket_id")
        socket_id = valid_socket_id(raw_socket) if isinstance(raw_socket, str) else None
        if socket_id is None:
            raise self._refuse("user", user, None, "socket_id is required and must look like 123.456", 400)
        user_id = self.user_id(user)
        if user is None or user_id is None:
            raise self._refuse("user", user, None, "not authenticated")
        data: dict[str, Any] = {"id": str(user_id)}
        info = self.user_info(user) if self.user_info else None
        if info:
            data["user_info"] = dict(info)
        if self.watchlist is not None:
            data["watchlist"] = [str(x) for x in self.watchlist(user)]
        user_data = json.dumps(data, separators=(",", ":"))
        observe.authorization("user", allowed=True, user_id=user_id, channel=None, pattern=None, reason="signed in")
        return {"auth": user_auth(self._key, self._secret, socket_id, user_data), "user_data": user_data}

    # -- history through the backend ------------------------------------------------------------

    def history_request(self, user: Any, params: Mapping[str, Any]) -> tuple[str, dict[str, str]]:
        """Checks for ``GET /broadcasting/history`` before any guard runs: (channel, query)."""
        channel = params.get("channel_name")
        if not isinstance(channel, str) or not channel:
            raise self._refuse("history", user, None, "channel_name is required", 400)
        problem = name_problem(channel)
        if problem is not None:
            raise self._refuse("history", user, channel[:200], f"invalid channel name: {problem}")
        if kind_of(channel).kind is Kind.USER:
            raise self._refuse("history", user, channel, "a user channel's history is not served here")
        if kind_of(channel).needs_auth and (user is None or self.user_id(user) is None):
            raise self._refuse("history", user, channel, "not authenticated")
        query = {k: str(params[k]) for k in ("epoch", "since", "limit") if params.get(k) not in (None, "")}
        return channel, query

    def history_allowed(self, user: Any, channel: str, found: RouteMatch | None, result: GuardResult) -> None:
        pattern = found.route.pattern if found else None
        if kind_of(channel).needs_auth and (found is None or result is False or result is None):
            reason = (
                "no channel route matches this channel" if found is None else "the channel's guard refused this user"
            )
            raise self._refuse("history", user, channel, reason, pattern=pattern)
        observe.authorization(
            "history",
            allowed=True,
            user_id=self.user_id(user) if user is not None else None,
            channel=channel,
            pattern=pattern,
            reason="history read",
        )

    async def history(self, user: Any, params: Mapping[str, Any]) -> Any:
        channel, query = self.history_request(user, params)
        found, result = await self.routes.check(user, channel) if kind_of(channel).needs_auth else (None, True)
        self.history_allowed(user, channel, found, result)
        return await self.broadcaster._pusher().ahistory(channel, query)

    def history_sync(self, user: Any, params: Mapping[str, Any]) -> Any:
        channel, query = self.history_request(user, params)
        found, result = self.routes.check_sync(user, channel) if kind_of(channel).needs_auth else (None, True)
        self.history_allowed(user, channel, found, result)
        return self.broadcaster._pusher().history(channel, query)


def _b64(raw: bytes) -> str:
    import base64

    return base64.b64encode(raw).decode()
