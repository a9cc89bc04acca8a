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
    """Failed sign-ins in the last ``window`` seconds: at most ``per_email`` for one email and
    ``per_client`` from one address (higher: many users may share a proxy's address)."""

    def __init__(
        self, per_email: int = 10, per_client: int = 100, window: float = 300.0, max_keys: int = 10_000
    ) -> None:
        self.limits = {"email": per_email, "client": per_client}
        self.window = window
        self.max_keys = max_keys
        self._failures: dict[tuple[str, str], deque[float]] = {}

    def _keys(self, email: str, client: str) -> list[tuple[str, str]]:
        return [("email", email), ("client", client)]

    def blocked(self, email: str, client: str) -> bool:
        now = time.monotonic()
        for key in self._keys(email, client):
            failures = self._failures.get(key)
            if failures is None:
                continue
            while failures and now - failures[0] > self.window:
                failures.popleft()
            if len(failures) >= self.limits[key[0]]:
                return True
        return False

    def failed(self, email: str, client: str) -> None:
        if len(self._failures) > self.max_keys:  # bounded memory: forget the oldest keys
            for stale in list(self._failures)[: self.max_keys // 2]:
                del self._failures[stale]
        now = time.monotonic()
        for key in self._keys(email, client):
            self._failures.setdefault(key, deque()).append(now)

    def succeeded(self, email: str) -> None:
        self._failures.pop(("email", email), None)
