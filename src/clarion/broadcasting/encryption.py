"""End-to-end encryption for ``private-encrypted-`` channels, as Pusher's SDKs do it.

Each channel's key is SHA256(channel name + master key); the payload is sealed with NaCl
secretbox (XSalsa20-Poly1305) and a random 24-byte nonce, and sent as the JSON text
``{"nonce": b64, "ciphertext": b64}``. pusher-js gets the key as the auth answer's
``shared_secret`` and opens the box with tweetnacl. The socket server never sees the plaintext.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json

import nacl.secret
import nacl.utils

from .errors import ConfigError

MASTER_KEY_BYTES = 32


def parse_master_key(master_key_base64: str) -> bytes:
    try:
        key = base64.b64decode(master_key_base64, validate=True)
    except (binascii.Error, ValueError) as exc:
        raise ConfigError("the encryption master key must be base64") from exc
    if len(key) != MASTER_KEY_BYTES:
        raise ConfigError(f"the encryption master key must be {MASTER_KEY_BYTES} bytes, base64-encoded")
    return key


def shared_secret(channel: str, master_key: bytes) -> bytes:
    return hashlib.sha256(channel.encode() + master_key).digest()


def encrypt(channel: str, data: str, master_key: bytes) -> str:
    box = nacl.secret.SecretBox(shared_secret(channel, master_key))
    nonce = nacl.utils.random(nacl.secret.SecretBox.NONCE_SIZE)
    sealed = box.encrypt(data.encode(), nonce)
    return json.dumps(
        {"nonce": base64.b64encode(nonce).decode(), "ciphertext": base64.b64encode(sealed.ciphertext).decode()}
    )


def decrypt(channel: str, data: str, master_key: bytes) -> str:
    """The inverse of :func:`encrypt` (for tests and tools; clients decrypt with their own library)."""
    sealed = json.loads(data)
    box = nacl.secret.SecretBox(shared_secret(channel, master_key))
    plain: bytes = box.decrypt(base64.b64decode(sealed["ciphertext"]), base64.b64decode(sealed["nonce"]))
    return plain.decode()
