"""HMAC-SHA256 signatures: channel auth, user sign-in, HTTP API requests and webhooks.

Every comparison of a secret-derived value goes through ``hmac.compare_digest``.
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Mapping

from .errors import ApiError

API_TIMESTAMP_WINDOW = 600  # seconds, as Pusher documents for auth_timestamp


def hmac_hex(secret: str, message: str | bytes) -> str:
    data = message.encode() if isinstance(message, str) else message
    return hmac.new(secret.encode(), data, hashlib.sha256).hexdigest()


def _equal(a: str, b: str) -> bool:
    return hmac.compare_digest(a.encode(), b.encode())


# --- channel authorization -------------------------------------------------------------------


def channel_string_to_sign(socket_id: str, channel: str, channel_data: str | None = None) -> str:
    if channel_data is None:
        return f"{socket_id}:{channel}"
    return f"{socket_id}:{channel}:{channel_data}"


def channel_auth(key: str, secret: str, socket_id: str, channel: str, channel_data: str | None = None) -> str:
    """The ``auth`` value an auth endpoint returns: ``<key>:<hex signature>``."""
    return f"{key}:{hmac_hex(secret, channel_string_to_sign(socket_id, channel, channel_data))}"


def verify_channel_auth(
    key: str, secret: str, auth: str, socket_id: str, channel: str, channel_data: str | None = None
) -> bool:
    expected = channel_auth(key, secret, socket_id, channel, channel_data)
    return _equal(auth, expected)


# --- user sign-in ----------------------------------------------------------------------------


def user_auth(key: str, secret: str, socket_id: str, user_data: str) -> str:
    return f"{key}:{hmac_hex(secret, f'{socket_id}::user::{user_data}')}"


def verify_user_auth(key: str, secret: str, auth: str, socket_id: str, user_data: str) -> bool:
    return _equal(auth, user_auth(key, secret, socket_id, user_data))


# --- HTTP API --------------------------------------------------------------------------------


def api_string_to_sign(method: str, path: str, params: Mapping[str, str]) -> str:
    """``METHOD\\nPATH\\nk=v&...``: keys lower-cased and sorted, values not URL-escaped."""
    query = "&".join(
        f"{k}={v}" for k, v in sorted((k.lower(), v) for k, v in params.items() if k.lower() != "auth_signature")
    )
    return f"{method.upper()}\n{path}\n{query}"


def sign_api_request(secret: str, method: str, path: str, params: Mapping[str, str]) -> str:
    return hmac_hex(secret, api_string_to_sign(method, path, params))


def body_md5(body: bytes) -> str:
    return hashlib.md5(body, usedforsecurity=False).hexdigest()


def verify_api_request(
    *,
    key: str,
    secret: str,
    method: str,
    paths: tuple[str, ...],
    params: Mapping[str, str],
    body: bytes,
    now: float,
    window: float = API_TIMESTAMP_WINDOW,
) -> None:
    """Raise ``ApiError(401)`` unless the request is signed by this app, fresh, and intact.

    ``paths`` holds the request path as sent and, where it differs, URL-decoded: SDKs sign
    whichever they put on the wire, and both are the same resource.
    """
    lowered = {k.lower(): v for k, v in params.items()}
    for required in ("auth_key", "auth_timestamp", "auth_version", "auth_signature"):
        if required not in lowered:
            raise ApiError(401, f"Missing {required}")
    if not _equal(lowered["auth_key"], key):
        raise ApiError(401, "Unknown auth_key")
    if lowered["auth_version"] != "1.0":
        raise ApiError(401, "auth_version must be 1.0")
    raw_timestamp = lowered["auth_timestamp"]
    if not (raw_timestamp.isascii() and raw_timestamp.isdigit()):
        raise ApiError(401, "auth_timestamp must be an integer")
    timestamp = int(raw_timestamp)
    if abs(now - timestamp) > window:
        raise ApiError(401, f"Timestamp expired: it must be within {int(window)} s of server time")
    if body:
        given_md5 = lowered.get("body_md5")
        if given_md5 is None:
            raise ApiError(401, "Missing body_md5")
        if not _equal(given_md5.lower(), body_md5(body)):
            raise ApiError(401, "body_md5 does not match the body")
    signature = lowered["auth_signature"]
    if not any(_equal(signature, sign_api_request(secret, method, path, params)) for path in paths):
        raise ApiError(401, "Invalid signature")


# --- webhooks --------------------------------------------------------------------------------


def webhook_signature(secret: str, body: bytes) -> str:
    return hmac_hex(secret, body)
