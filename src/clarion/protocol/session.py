"""One connection's protocol state, sans I/O.

The server feeds it frames and clock readings; it answers with actions for the server to carry
out. It never touches a socket, a clock or the event loop, so every rule here is unit-testable.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from . import messages
from .app import App, ClientEvents
from .channels import USER_CHANNEL_PREFIX, Kind, kind_of, name_problem
from .errors import ErrorCode, ProtocolError, SubscriptionError
from .history import EPOCH, MAX_SERIAL
from .signatures import verify_channel_auth, verify_user_auth

MAX_USER_ID_LENGTH = 128
MAX_WATCHLIST = 100  # Pusher: only the first 100 user ids are accepted (4302)
CATCH_UP_RATE = 10  # resumes and rewinds a second per connection, after a burst of one per channel


@dataclass(frozen=True, slots=True)
class Member:
    user_id: str
    user_info: Any


# --- actions the server carries out -----------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Send:
    """Write ``frame``. ``error_code`` / ``refused`` mark pusher:error and subscription_error
    frames, so the server can count and log them without reading the frame."""

    frame: str
    error_code: int | None = None
    refused: str | None = None
    rate_limited: str | None = None  # which per-connection rate limit refused it
    auth: str | None = None  # the credential it refuses (signin), for the auth failure count


@dataclass(frozen=True, slots=True)
class CatchUp:
    """Send this socket the channel's history before its live events: what came after
    (``epoch``, ``serial``) for a resume, or the last ``count`` events or ``seconds`` for a rewind.
    ``limit`` and ``max_age`` are the channel's history rule, which caps every request."""

    channel: str
    limit: int
    max_age: float
    epoch: str | None = None
    serial: int | None = None
    count: int | None = None
    seconds: float | None = None

    @property
    def is_resume(self) -> bool:
        return self.serial is not None


@dataclass(frozen=True, slots=True)
class Join:
    """Register the socket on ``channel`` and answer with subscription_succeeded; then, when the
    subscribe asked for it, catch up from history before anything live."""

    channel: str
    member: Member | None
    catch_up: CatchUp | None = None


@dataclass(frozen=True, slots=True)
class Leave:
    channel: str
    member: Member | None


@dataclass(frozen=True, slots=True)
class Publish:
    """Relay a client event to the channel's other subscribers."""

    channel: str
    event: str
    data: str
    user_id: str | None


@dataclass(frozen=True, slots=True)
class SignIn:
    """The socket is now ``user_id``: register it, answer signin_success, start its watchlist."""

    user_id: str
    user_data: str
    watchlist: tuple[str, ...]
    replaces: tuple[str, ...] | None  # the watchlist of an earlier sign-in on this socket


@dataclass(frozen=True, slots=True)
class Close:
    code: int
    reason: str


Action = Send | Join | Leave | Publish | SignIn | Close | CatchUp
_NOTHING: list[Action] = []


def _parse_member(channel_data: Any, max_info: int) -> Member:
    if not isinstance(channel_data, str):
        raise ValueError("channel_data must be a JSON string for presence channels")
    try:
        payload = messages.loads(channel_data)
    except ValueError:
        raise ValueError("channel_data is not valid JSON") from None
    if not isinstance(payload, dict):
        raise ValueError("channel_data must hold a JSON object")
    user_id = payload.get("user_id")
    # Laravel and many apps send numeric ids; Pusher turns them into strings.
    if isinstance(user_id, int) and not isinstance(user_id, bool):
        user_id = str(user_id)
    if not isinstance(user_id, str) or not user_id:
        raise ValueError("channel_data.user_id must be a non-empty string or an integer")
    if len(user_id) > MAX_USER_ID_LENGTH:
        raise ValueError(f"channel_data.user_id is longer than {MAX_USER_ID_LENGTH} characters")
    user_info = payload.get("user_info")
    if user_info is not None and len(messages.dumps(user_info).encode()) > max_info:
        raise ValueError(f"channel_data.user_info is larger than {max_info} bytes")
    return Member(user_id=user_id, user_info=user_info)


class TokenBucket:
    """``rate`` events a second, with bursts up to ``burst`` (default: ``rate``)."""

    __slots__ = ("burst", "rate", "tokens", "updated")

    def __init__(self, rate: float, now: float, burst: int | None = None) -> None:
        self.rate = rate
        self.burst = float(burst if burst is not None else rate)
        self.tokens = self.burst
        self.updated = now

    def take(self, now: float) -> bool:
        self.tokens = min(self.burst, self.tokens + (now - self.updated) * self.rate)
        self.updated = now
        if self.tokens >= 1.0:
            self.tokens -= 1.0
            return True
        return False


class Session:
    """Protocol state of one WebSocket connection."""

    __slots__ = (
        "_bucket",
        "_catch_ups",
        "_resubscribes",
        "app",
        "channels",
        "last_seen",
        "ping_sent_at",
        "pong_timeout",
        "signin_deadline",
        "socket_id",
        "user_id",
        "user_info",
        "watchlist",
    )

    def __init__(self, app: App, socket_id: str, now: float, pong_timeout: float = 30.0) -> None:
        self.app = app
        self.socket_id = socket_id
        self.channels: dict[str, Member | None] = {}
        self.last_seen = now
        self.ping_sent_at: float | None = None
        self.pong_timeout = pong_timeout
        self._bucket: TokenBucket | None = None
        self._catch_ups: TokenBucket | None = None
        # Presence subscribes that repeat: made at the first one (or the first presence unsubscribe).
        self._resubscribes: TokenBucket | None = None
        self.user_id: str | None = None
        self.watchlist: tuple[str, ...] = ()
        self.user_info: Any = None
        self.signin_deadline = now + app.signin_timeout if app.signin_timeout else None

    def hello(self) -> str:
        return messages.connection_established(self.socket_id, self.app.activity_timeout)

    # --- inbound ----------------------------------------------------------------------------

    def heard(self, now: float) -> None:
        """The client showed it is alive (a WebSocket ping or pong): the keep-alive starts over."""
        self.last_seen = now
        self.ping_sent_at = None

    def receive(self, text: str, now: float) -> list[Action]:
        """Handle one client text frame. Errors become frames; the session stays usable."""
        self.last_seen = now
        self.ping_sent_at = None
        try:
            frame = messages.parse_frame(text)
            event = frame.event
            if event == "pusher:ping":
                return [Send(messages.PONG)]
            if event == "pusher:pong":
                return _NOTHING
            if event == "pusher:subscribe":
                return self._subscribe(frame.data, now)
            if event == "pusher:unsubscribe":
                return self._unsubscribe(frame.data, now)
            if event == "pusher:signin":
                try:
                    return self._signin(frame.data)
                except ProtocolError as exc:
                    if exc.code != ErrorCode.UNAUTHORIZED:
                        raise
                    return [Send(messages.error(exc.code, exc.message), error_code=int(exc.code), auth="signin")]
            if event in ("clarion:resume", "clarion:rewind"):
                return self._catch_up(event, frame.data, now)
            if event.startswith("client-"):
                return self._client_event(frame, now)
            raise ProtocolError(ErrorCode.RECONNECT, f"Unsupported event: {event[:64]}")
        except ProtocolError as exc:
            return [Send(messages.error(exc.code, exc.message), error_code=int(exc.code))]
        except SubscriptionError as exc:
            refusal = messages.subscription_error(exc.channel, exc.kind, exc.message, exc.status)
            return [Send(refusal, refused=exc.kind)]

    def _channel_field(self, data: Any) -> str:
        if not isinstance(data, dict):
            raise ProtocolError(ErrorCode.RECONNECT, "Invalid message format: 'data' must be an object")
        channel = data.get("channel")
        if not isinstance(channel, str):
            raise ProtocolError(ErrorCode.RECONNECT, "Invalid message format: 'data.channel' must be a string")
        return channel

    def _subscribe(self, data: Any, now: float) -> list[Action]:
        app = self.app
        channel = self._channel_field(data)
        problem = name_problem(channel, app.max_channel_name_length)
        if problem is not None:
            raise SubscriptionError(channel[: app.max_channel_name_length], "InvalidChannel", problem, 400)
        kind = kind_of(channel)
        already = channel in self.channels
        if not already and len(self.channels) >= app.max_channels_per_connection:
            raise SubscriptionError(
                channel,
                "LimitReached",
                f"A connection may subscribe to at most {app.max_channels_per_connection} channels",
                429,
            )
        if kind.kind is Kind.USER and channel[len(USER_CHANNEL_PREFIX) :] != self.user_id:
            raise SubscriptionError(
                channel, "AuthError", "A user channel is open only to a socket signed in as that user", 403
            )
        member: Member | None = None
        if kind.needs_auth:
            auth = data.get("auth")
            if not isinstance(auth, str) or not auth:
                raise SubscriptionError(channel, "AuthError", "Missing auth signature", 401)
            channel_data = data.get("channel_data") if kind.is_presence else None
            # A signed-in socket may join presence without channel_data: Pusher then takes the
            # member from the sign-in's user_data (pusher-js does this after pusher.signin()).
            from_signin = kind.is_presence and channel_data is None and self.user_id is not None
            if kind.is_presence and not from_signin and not isinstance(channel_data, str):
                raise SubscriptionError(channel, "AuthError", "Presence channels need channel_data or a sign-in", 401)
            if not verify_channel_auth(app.key, app.secret, auth, self.socket_id, channel, channel_data):
                raise SubscriptionError(channel, "AuthError", "Invalid signature", 401)
            if from_signin:
                assert self.user_id is not None
                if len(messages.dumps(self.user_info).encode()) > app.max_presence_user_info:
                    message = f"user_info from the sign-in is larger than {app.max_presence_user_info} bytes"
                    raise SubscriptionError(channel, "InvalidChannelData", message, 400)
                member = Member(self.user_id, self.user_info)
            elif kind.is_presence:
                try:
                    member = _parse_member(channel_data, app.max_presence_user_info)
                except ValueError as exc:
                    raise SubscriptionError(channel, "InvalidChannelData", str(exc), 400) from None
        if kind.is_presence and (already or self._resubscribes is not None) and not self._may_resubscribe(now):
            # Each answer carries the whole member list (100 KB at 100 members), and leaving and
            # joining again tells every member twice: repeats are bounded per connection.
            message = (
                f"Too many presence subscribes: {app.presence_resubscribe_burst} at once, "
                f"then {app.presence_resubscribe_rate:g} a second"
            )
            frame = messages.subscription_error(channel, "LimitReached", message, 429)
            return [Send(frame, refused="LimitReached", rate_limited="presence_resubscribe")]
        catch_up = self._catch_up_request(channel, data, "subscribe", now)
        if already:
            # Idempotent: answered again, registered once, and still checked like the first time.
            # A presence socket keeps the identity it joined with. A catch-up asked for here runs
            # as if sent after the subscribe (live events may already have reached the socket).
            again: list[Action] = [Join(channel, self.channels[channel])]
            return again if catch_up is None else [*again, catch_up]
        self.channels[channel] = member
        if isinstance(catch_up, Send):
            # No catch-up (history off, or asked too often): subscribed all the same, told at once.
            return [Join(channel, member), catch_up]
        return [Join(channel, member, catch_up)]

    def _signin(self, data: Any) -> list[Action]:
        if not isinstance(data, dict):
            raise ProtocolError(ErrorCode.RECONNECT, "Invalid message format: 'data' must be an object")
        auth = data.get("auth")
        user_data = data.get("user_data")
        if not isinstance(auth, str) or not isinstance(user_data, str):
            raise ProtocolError(
                ErrorCode.RECONNECT, "Invalid message format: signin needs 'auth' and 'user_data' strings"
            )
        app = self.app
        if not verify_user_auth(app.key, app.secret, auth, self.socket_id, user_data):
            raise ProtocolError(ErrorCode.UNAUTHORIZED, "Invalid signin signature")
        try:
            payload = messages.loads(user_data)
        except ValueError:
            raise ProtocolError(ErrorCode.UNAUTHORIZED, "user_data is not valid JSON") from None
        user_id = payload.get("id") if isinstance(payload, dict) else None
        if not isinstance(user_id, str) or not user_id or len(user_id) > MAX_USER_ID_LENGTH:
            raise ProtocolError(
                ErrorCode.UNAUTHORIZED,
                f"user_data.id must be a non-empty string of at most {MAX_USER_ID_LENGTH} characters",
            )
        if self.user_id is not None and self.user_id != user_id:
            raise ProtocolError(ErrorCode.UNAUTHORIZED, "This connection is already signed in as another user")
        raw_watchlist = payload.get("watchlist", [])
        if not isinstance(raw_watchlist, list) or not all(isinstance(u, str) and u for u in raw_watchlist):
            raise ProtocolError(ErrorCode.UNAUTHORIZED, "user_data.watchlist must be a list of user id strings")
        watchlist = tuple(dict.fromkeys(raw_watchlist))
        replaces = self.watchlist if self.user_id is not None else None
        self.user_id = user_id
        self.watchlist = watchlist[:MAX_WATCHLIST]
        self.user_info = payload.get("user_info")
        self.signin_deadline = None
        actions: list[Action] = [SignIn(user_id, user_data, self.watchlist, replaces)]
        if len(watchlist) > MAX_WATCHLIST:
            actions.append(
                Send(
                    messages.error(
                        ErrorCode.WATCHLIST_LIMIT,
                        f"Watchlist limit exceeded: only the first {MAX_WATCHLIST} user ids are watched",
                    ),
                    error_code=int(ErrorCode.WATCHLIST_LIMIT),
                )
            )
        return actions

    def _catch_up(self, event: str, data: Any, now: float) -> list[Action]:
        channel = self._channel_field(data)
        if channel not in self.channels:
            raise ProtocolError(ErrorCode.UNAUTHORIZED, f"{event} needs a subscription to the channel")
        request = self._catch_up_request(channel, data, event, now)
        assert request is not None
        return [request]

    def _catch_up_request(self, channel: str, data: dict[str, Any], event: str, now: float) -> CatchUp | Send | None:
        """Read a resume (``epoch`` + ``serial``) or rewind (``count`` or ``seconds``) request:
        the fields of clarion:resume / clarion:rewind, or ``resume`` / ``rewind`` objects inside
        pusher:subscribe. None when a subscribe asks for neither."""
        if event == "subscribe":
            resume, rewind = data.get("resume"), data.get("rewind")
            if resume is None and rewind is None:
                return None
            if resume is not None and rewind is not None:
                raise ProtocolError(ErrorCode.RECONNECT, "Invalid message format: ask for resume or rewind, not both")
            fields = resume if resume is not None else rewind
            if not isinstance(fields, dict):
                raise ProtocolError(ErrorCode.RECONNECT, "Invalid message format: resume/rewind must be an object")
            is_resume = resume is not None
        else:
            fields, is_resume = data, event == "clarion:resume"
        rule = self.app.history_for(channel)
        if is_resume:
            epoch, serial = fields.get("epoch"), fields.get("serial")
            if not isinstance(epoch, str) or not EPOCH.match(epoch):
                raise ProtocolError(ErrorCode.RECONNECT, "Invalid message format: resume needs an 'epoch' string")
            if not isinstance(serial, int) or isinstance(serial, bool) or not 0 <= serial <= MAX_SERIAL:
                raise ProtocolError(
                    ErrorCode.RECONNECT, "Invalid message format: resume needs a 'serial' integer of at least 0"
                )
            count = seconds = None
        else:
            epoch = serial = None
            count, seconds = fields.get("count"), fields.get("seconds")
            if (count is None) == (seconds is None):
                raise ProtocolError(ErrorCode.RECONNECT, "Invalid message format: rewind needs 'count' or 'seconds'")
            if count is not None and (not isinstance(count, int) or isinstance(count, bool) or count < 1):
                raise ProtocolError(ErrorCode.RECONNECT, "Invalid message format: 'count' must be a positive integer")
            if seconds is not None and (
                not isinstance(seconds, int | float) or isinstance(seconds, bool) or not 0 < seconds < 1e9
            ):
                raise ProtocolError(ErrorCode.RECONNECT, "Invalid message format: 'seconds' must be a positive number")
        if rule is None:
            return Send(messages.catch_up_refused(channel, is_resume, "history_off"))
        if not self._may_catch_up(now):
            return Send(messages.catch_up_refused(channel, is_resume, "rate_limited"))
        if is_resume:
            return CatchUp(channel, rule.size, rule.ttl, epoch=epoch, serial=serial)
        return CatchUp(
            channel,
            rule.size,
            rule.ttl,
            count=min(count, rule.size) if count is not None else None,
            seconds=min(float(seconds), rule.ttl) if seconds is not None else None,
        )

    def _may_catch_up(self, now: float) -> bool:
        """Each catch-up reads history: bounded, so a client cannot make the server read in a
        loop. A reconnecting client resuming every channel it may hold fits in the burst."""
        if self._catch_ups is None:
            self._catch_ups = TokenBucket(CATCH_UP_RATE, now, burst=max(self.app.max_channels_per_connection, 10))
        return self._catch_ups.take(now)

    def _may_resubscribe(self, now: float) -> bool:
        bucket = self._resubscribes
        if bucket is None:
            bucket = self._resubscribes = self._resubscribe_bucket(now)
        return bucket.take(now)

    def _resubscribe_bucket(self, now: float) -> TokenBucket:
        app = self.app
        return TokenBucket(app.presence_resubscribe_rate, now, burst=app.presence_resubscribe_burst)

    def _unsubscribe(self, data: Any, now: float) -> list[Action]:
        channel = self._channel_field(data)
        if channel not in self.channels:
            return _NOTHING
        if self._resubscribes is None and kind_of(channel).is_presence:
            # From now on a presence subscribe may be a rejoin: it counts as a repeat.
            self._resubscribes = self._resubscribe_bucket(now)
        return [Leave(channel, self.channels.pop(channel))]

    def _client_event(self, frame: messages.ClientFrame, now: float) -> list[Action]:
        app = self.app
        channel = frame.channel
        if app.client_events is ClientEvents.NONE:
            raise ProtocolError(ErrorCode.CLIENT_EVENT_REJECTED, "Client events are disabled for this app")
        if channel is None:
            raise ProtocolError(ErrorCode.RECONNECT, "Invalid message format: client events need a 'channel'")
        kind = kind_of(channel)
        if kind.kind is Kind.ENCRYPTED:
            raise ProtocolError(ErrorCode.CLIENT_EVENT_REJECTED, "Client events are not allowed on encrypted channels")
        if not kind.allows_client_events:
            raise ProtocolError(
                ErrorCode.CLIENT_EVENT_REJECTED, "Client events are only allowed on private and presence channels"
            )
        subscribed = channel in self.channels
        if app.client_events is ClientEvents.MEMBERS and not subscribed:
            raise ProtocolError(ErrorCode.UNAUTHORIZED, "Client events need a subscription to the channel")
        if len(frame.event) > app.max_event_name_length:
            raise ProtocolError(
                ErrorCode.CLIENT_EVENT_REJECTED, f"Event name is longer than {app.max_event_name_length} characters"
            )
        data = frame.data if isinstance(frame.data, str) else messages.dumps(frame.data)
        if len(data.encode()) > app.max_message_size:
            raise ProtocolError(
                ErrorCode.CLIENT_EVENT_REJECTED, f"Client event data is larger than {app.max_message_size} bytes"
            )
        if self._bucket is None:
            self._bucket = TokenBucket(app.client_event_rate, now)
        if not self._bucket.take(now):
            raise ProtocolError(
                ErrorCode.CLIENT_EVENT_REJECTED,
                f"Client event rejected due to rate limit ({app.client_event_rate}/s)",
            )
        member = self.channels.get(channel)
        return [Publish(channel, frame.event, data, member.user_id if member is not None else None)]

    # --- what the server tells the session --------------------------------------------------

    def refused(self, channel: str) -> None:
        """The server refused a subscription the session had let through (a full presence
        channel, say): the socket is not on the channel."""
        self.channels.pop(channel, None)

    def gone(self) -> list[tuple[str, Member | None]]:
        """The socket is gone: the channels it was on, for the server to leave, now forgotten."""
        channels = list(self.channels.items())
        self.channels.clear()
        return channels

    # --- timers -----------------------------------------------------------------------------

    def tick(self, now: float) -> list[Action]:
        """Keep-alive: ping after ``activity_timeout`` of silence, close 4201 if no answer; and,
        where the app asks for it, close 4009 a socket that has not signed in in time."""
        if self.signin_deadline is not None and now >= self.signin_deadline:
            self.signin_deadline = None
            return [Close(ErrorCode.UNAUTHORIZED, "Connection not signed in within the app's timeout")]
        if self.ping_sent_at is None:
            if now - self.last_seen >= self.app.activity_timeout:
                self.ping_sent_at = now
                return [Send(messages.PING)]
            return _NOTHING
        if now - self.ping_sent_at >= self.pong_timeout:
            return [Close(ErrorCode.PONG_NOT_RECEIVED, "Pong reply not received")]
        return _NOTHING
