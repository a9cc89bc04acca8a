"""What the SDK raises: configuration mistakes, refused and failed deliveries, refused authorizations."""

from __future__ import annotations


class BroadcastError(Exception):
    """Base of every error the SDK raises."""


class ConfigError(BroadcastError):
    """A driver URL, key or setting that cannot work; raised when the broadcaster is built."""


class DeliveryError(BroadcastError):
    """An event did not reach the socket server."""


class BroadcastRefused(DeliveryError):
    """The server answered 4xx: the request itself is wrong and sending it again will not help."""

    def __init__(self, status: int, reason: str) -> None:
        super().__init__(f"the socket server refused the event ({status}): {reason}")
        self.status = status
        self.reason = reason


class BroadcastUnavailable(DeliveryError):
    """The server could not be reached, timed out or answered 5xx (or 429): worth retrying."""

    def __init__(self, reason: str, status: int | None = None) -> None:
        super().__init__(f"the socket server is unavailable: {reason}")
        self.status = status
        self.reason = reason


class AuthorizationRefused(BroadcastError):
    """A channel or user authorization was refused; ``reason`` is safe to show the client."""

    def __init__(self, reason: str, status: int = 403) -> None:
        super().__init__(reason)
        self.reason = reason
        self.status = status
