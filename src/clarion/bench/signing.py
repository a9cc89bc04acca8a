"""Signed requests to the Pusher HTTP API, exactly as the server SDKs sign them.

``POST /apps/{id}/events?auth_key=..&auth_timestamp=..&auth_version=1.0&body_md5=..&auth_signature=..``
where the signature is HMAC-SHA256 (hex, keyed with the app secret) of
``METHOD\\nPATH\\nquery`` with the query's keys lower-cased and sorted and no URL escaping.
"""

from __future__ import annotations

import hashlib
import hmac
import time


def signed_query(key: str, secret: str, method: str, path: str, body: bytes = b"") -> dict[str, str]:
    """The query parameters for one API request."""
    params = {"auth_key": key, "auth_timestamp": str(int(time.time())), "auth_version": "1.0"}
    if body:
        params["body_md5"] = hashlib.md5(body, usedforsecurity=False).hexdigest()
    query = "&".join(f"{k}={v}" for k, v in sorted(params.items()))
    to_sign = f"{method.upper()}\n{path}\n{query}"
    params["auth_signature"] = hmac.new(secret.encode(), to_sign.encode(), hashlib.sha256).hexdigest()
    return params
