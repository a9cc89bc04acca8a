"""The Pusher Channels v7 protocol as data and pure functions: no sockets, clocks or asyncio."""

from .app import App, ClientEvents
from .channels import ChannelKind, Kind, kind_of, name_problem
from .errors import ApiError, ErrorCode, ProtocolError, SubscriptionError

__all__ = [
    "ApiError",
    "App",
    "ChannelKind",
    "ClientEvents",
    "ErrorCode",
    "Kind",
    "ProtocolError",
    "SubscriptionError",
    "kind_of",
    "name_problem",
]
