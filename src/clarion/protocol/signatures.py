"""HMAC-SHA256 signatures: channel auth, user sign-in, HTTP API requests, history tokens and webhooks.

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


def verify_api_query(
    *,
    key: str,
    secret: str,
    method: str,
    paths: tuple[str, ...],
    params: Mapping[str, str],
    now: float,
    window: float = API_TIMESTAMP_WINDOW,
) -> None:
    """Raise ``ApiError(401)`` unless the request line is signed by this app and fresh.

    Everything here comes from the request line, so it is checked before a byte of the body is
    read; ``body_md5``, when given, is part of the signed query, and ``verify_body_md5`` compares
    it with the body once that has been read. ``paths`` holds the request path as sent and, where
    it differs, URL-decoded: SDKs sign whichever they put on the wire, and both are the same
    resource.
    """
    lowered = {k.lower(): v for k, v in params.items()}
    for required in ("auth_key", "auth_timestamp", "auth_version", "auth_signature"):
        if required not in lowered:
            raise ApiError(401, f"Missing {required}", auth="api_signature")
    if not _equal(lowered["auth_key"], key):
        raise ApiError(401, "Unknown auth_key", auth="api_key")
    if lowered["auth_version"] != "1.0":
        raise ApiError(401, "auth_version must be 1.0", auth="api_signature")
    raw_timestamp = lowered["auth_timestamp"]
    if not (raw_timestamp.isascii() and raw_timestamp.isdigit()):
        raise ApiError(401, "auth_timestamp must be an integer", auth="api_timestamp")
    timestamp = int(raw_timestamp)
    if abs(now - timestamp) > window:
        raise ApiError(
            401, f"Timestamp expired: it must be within {int(window)} s of server time", auth="api_timestamp"
        )
    signature = lowered["auth_signature"]
    if not any(_equal(signature, sign_api_request(secret, method, path, params)) for path in paths):
        raise ApiError(401, "Invalid signature", auth="api_signature")


def verify_body_md5(params: Mapping[str, str], body: bytes) -> None:
    """Raise ``ApiError(401)`` unless a non-empty body matches the signed ``body_md5``."""
    if not body:
        return
    given = next((v for k, v in params.items() if k.lower() == "body_md5"), None)
    if given is None:
        raise ApiError(401, "Missing body_md5", auth="api_signature")
    if not _equal(given.lower(), body_md5(body)):
        raise ApiError(401, "body_md5 does not match the body", auth="api_signature")


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
    """``verify_api_query`` and ``verify_body_md5`` together, for a request read whole."""
    verify_api_query(key=key, secret=secret, method=method, paths=paths, params=params, now=now, window=window)
    verify_body_md5(params, body)


# --- history tokens --------------------------------------------------------------------------

HISTORY_TOKEN_MAX_AHEAD = 3600  # seconds: the longest-lived token the server accepts


def history_token(key: str, secret: str, channel: str, expires: int) -> str:
    """The ``X-Clarion-History-Token`` value: ``<expires>:<hex HMAC-SHA256(secret,
    "{key}:history:{channel}:{expires}")>``, issued by the app's backend to a browser that may
    read ``channel``."""
    return f"{expires}:{hmac_hex(secret, f'{key}:history:{channel}:{expires}')}"


def history_token_problem(key: str, secret: str, channel: str, token: str, now: float) -> str | None:
    """Why ``token`` does not open ``channel``'s history now, or None when it does: it must be
    this app's, for this channel, and expire between now and an hour from now."""
    raw_expires, sep, _ = token.partition(":")
    if not sep or not (raw_expires.isascii() and raw_expires.isdigit()) or len(raw_expires) > 12:
        return "X-Clarion-History-Token must read <expires>:<signature>"
    expires = int(raw_expires)
    if expires < now:
        return "History token expired"
    if expires > now + HISTORY_TOKEN_MAX_AHEAD:
        return f"History token expires more than {HISTORY_TOKEN_MAX_AHEAD} s ahead"
    if not _equal(token, history_token(key, secret, channel, expires)):
        return "Invalid history token"
    return None


# --- webhooks --------------------------------------------------------------------------------


def webhook_signature(secret: str, body: bytes) -> str:
    return hmac_hex(secret, body)
