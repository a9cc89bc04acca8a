"""Pusher v7 error and close codes, and the exceptions the core raises with them."""

from __future__ import annotations

from enum import IntEnum


class ErrorCode(IntEnum):
    """Codes from the Pusher protocol's "Error Codes" section.

    4000-4099: do not reconnect unchanged; 4100-4199: back off; 4200-4299: reconnect now;
    4300-4399: other errors (the connection may stay open).
    """

    SSL_ONLY = 4000
    APP_NOT_FOUND = 4001
    APP_DISABLED = 4003
    OVER_CONNECTION_QUOTA = 4004
    PATH_NOT_FOUND = 4005
    INVALID_VERSION = 4006
    UNSUPPORTED_PROTOCOL = 4007
    NO_PROTOCOL = 4008
    UNAUTHORIZED = 4009
    OVER_CAPACITY = 4100
    RECONNECT = 4200
    PONG_NOT_RECEIVED = 4201
    CLOSED_AFTER_INACTIVITY = 4202
    CLIENT_EVENT_REJECTED = 4301
    WATCHLIST_LIMIT = 4302


class ProtocolError(Exception):
    """A client frame broke a rule. Answered with ``pusher:error``; the socket stays open."""

    def __init__(self, code: ErrorCode, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


class SubscriptionError(Exception):
    """A subscription was refused. Answered with ``pusher:subscription_error`` on that channel.

    ``status`` follows the HTTP-like values pusher-js itself uses for auth failures (401),
    so laravel-echo's ``.error()`` callbacks see the same shape either way.
    """

    def __init__(self, channel: str, kind: str, message: str, status: int) -> None:
        super().__init__(message)
        self.channel = channel
        self.kind = kind
        self.message = message
        self.status = status


class ApiError(Exception):
    """An HTTP API request was refused with ``status`` and a message for the caller; ``auth`` names
    the credential that failed (api_signature, api_timestamp, api_key), for the auth failure count."""

    def __init__(self, status: int, message: str, auth: str | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.auth = auth
