"""Sign-in: argon2 password hashes, session cookies, double-submit CSRF, and a limit on failed
logins. Tokens are random (``secrets``); the database keeps only their SHA-256, so a leaked table
signs nobody in. Comparisons of secrets are constant-time."""

from __future__ import annotations

import hashlib
import hmac
import secrets
import time
from collections import deque

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError

SESSION_COOKIE = "session"
CSRF_COOKIE = "csrf_token"
CSRF_HEADER = "X-CSRF-Token"

_hasher = PasswordHasher()
# Verified against when the email is unknown, so a miss costs as much as a wrong password.
_DUMMY_HASH = _hasher.hash(secrets.token_urlsafe(16))


def hash_password(password: str) -> str:
    return _hasher.hash(password)


def verify_password(stored: str | None, password: str) -> bool:
    try:
        return _hasher.verify(stored or _DUMMY_HASH, password) and stored is not None
    except (VerificationError, InvalidHashError):
        return False


def new_token() -> str:
    return secrets.token_urlsafe(32)


def token_hash(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def csrf_ok(cookie: str | None, header: str | None, expected: str) -> bool:
    """Double submit: the header (which only our pages can set) matches the cookie, and both are
    the token issued to this session."""
    if not cookie or not header:
        return False
    return hmac.compare_digest(cookie, header) and hmac.compare_digest(header, expected)


class LoginLimiter:
    """At most ``limit`` failed logins per key (email, client address) in ``window`` seconds."""

    def __init__(self, limit: int = 10, window: float = 300.0, max_keys: int = 10_000) -> None:
        self.limit = limit
        self.window = window
        self.max_keys = max_keys
        self._failures: dict[str, deque[float]] = {}

    def blocked(self, *keys: str) -> bool:
        now = time.monotonic()
        for key in keys:
            failures = self._failures.get(key)
            if failures is None:
                continue
            while failures and now - failures[0] > self.window:
                failures.popleft()
            if len(failures) >= self.limit:
                return True
        return False

    def failed(self, *keys: str) -> None:
        if len(self._failures) > self.max_keys:  # bounded memory: forget the oldest keys
            for stale in list(self._failures)[: self.max_keys // 2]:
                del self._failures[stale]
        now = time.monotonic()
        for key in keys:
            self._failures.setdefault(key, deque()).append(now)

    def succeeded(self, *keys: str) -> None:
        for key in keys:
            self._failures.pop(key, None)
