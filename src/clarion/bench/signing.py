"""Signed requests to the Pusher HTTP API, exactly as the server SDKs sign them (the signing
itself is the protocol core's, the same code that verifies them in the server)."""

from __future__ import annotations

import time

from ..protocol.signatures import body_md5, sign_api_request


def signed_query(key: str, secret: str, method: str, path: str, body: bytes = b"") -> dict[str, str]:
    """The query parameters for one API request."""
    params = {"auth_key": key, "auth_timestamp": str(int(time.time())), "auth_version": "1.0"}
    if body:
        params["body_md5"] = body_md5(body)
    params["auth_signature"] = sign_api_request(secret, method, path, params)
    return params
