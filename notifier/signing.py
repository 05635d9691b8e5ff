"""Standard Webhooks signatures: HMAC-SHA256 over `{id}.{timestamp}.{body}`.

Partners verify with any Standard Webhooks library, so the secret format (`whsec_` + base64)
and the header format (`v1,<base64>`, space-separated while a secret is being rotated) are
exactly the specification's.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets
from collections.abc import Iterable

PREFIX = "whsec_"
SECRET_BYTES = 32


def generate_secret() -> str:
    return PREFIX + base64.b64encode(secrets.token_bytes(SECRET_BYTES)).decode()


def secret_key(secret: str) -> bytes:
    """The raw HMAC key of a `whsec_` secret."""
    return base64.b64decode(secret.removeprefix(PREFIX))


def is_valid_secret(secret: str) -> bool:
    if not secret.startswith(PREFIX):
        return False
    try:
        return len(base64.b64decode(secret[len(PREFIX) :], validate=True)) >= 24
    except ValueError:
        return False


def signature_header(keys: Iterable[bytes], message_id: str, timestamp: int, body: bytes) -> str:
    """The `webhook-signature` value: one `v1,` signature per key."""
    signed = f"{message_id}.{timestamp}.".encode() + body
    return " ".join(
        "v1," + base64.b64encode(hmac.new(key, signed, hashlib.sha256).digest()).decode()
        for key in keys
    )
