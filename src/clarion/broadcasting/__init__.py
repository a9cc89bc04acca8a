"""``clarion.broadcasting``: broadcasting for Python web apps, as Laravel does it.

Events (pydantic models) go to channels through a driver (signed HTTP to any Pusher-protocol
server), now, through a Redis queue, or after the database transaction commits; a channel route
table authorizes subscriptions; the integrations mount ``/broadcasting/auth`` in FastAPI,
Starlette and Django. Nothing here imports the server. See docs/backend-sdk.md.
"""

from . import observe as signals
from .auth import Authorizer, history_token
from .broadcaster import Broadcaster
from .channels import Channel, EncryptedPrivateChannel, PresenceChannel, PrivateChannel, UserChannel
from .context import current_socket_id, socket_id
from .delivery import RetryPolicy, SyncQueue
from .drivers import LogDriver, NullDriver, PusherDriver, PusherSettings, driver_from_url
from .errors import (
    AuthorizationRefused,
    BroadcastError,
    BroadcastRefused,
    BroadcastUnavailable,
    ConfigError,
    DeliveryError,
)
from .events import AnonymousEvent, BroadcastEvent, PendingBroadcast
from .inprocess import HeldLetter, InProcessQueue, QueueFull
from .listeners import listen
from .messages import Message
from .models import ModelBroadcast
from .routes import ChannelRoutes
from .standard import (
    CategoryCreated,
    CategoryDeleted,
    CategoryUpdated,
    MediaUploadCompleted,
    MediaUploadProgress,
    UserNotification,
)

__all__ = [
    "AnonymousEvent",
    "AuthorizationRefused",
    "Authorizer",
    "BroadcastError",
    "BroadcastEvent",
    "BroadcastRefused",
    "BroadcastUnavailable",
    "Broadcaster",
    "CategoryCreated",
    "CategoryDeleted",
    "CategoryUpdated",
    "Channel",
    "ChannelRoutes",
    "ConfigError",
    "DeliveryError",
    "EncryptedPrivateChannel",
    "HeldLetter",
    "InProcessQueue",
    "LogDriver",
    "MediaUploadCompleted",
    "MediaUploadProgress",
    "Message",
    "ModelBroadcast",
    "NullDriver",
    "PendingBroadcast",
    "PresenceChannel",
    "PrivateChannel",
    "PusherDriver",
    "PusherSettings",
    "QueueFull",
    "RetryPolicy",
    "SyncQueue",
    "UserChannel",
    "UserNotification",
    "current_socket_id",
    "driver_from_url",
    "history_token",
    "listen",
    "signals",
    "socket_id",
]
