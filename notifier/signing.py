"""Standard Webhooks signatures over `{id}.{timestamp}.{body}`: `v1` (HMAC-SHA256 with a shared
`whsec_` secret) and `v1a` (ed25519, for partners who must not hold a shared secret).

Partners verify `v1` with any Standard Webhooks library, so the secret format (`whsec_` +
base64) and the header format (`v1,<base64>`, space-separated while a secret is being rotated)
are exactly the specification's. For `v1a` notifier makes the key pair: the private key is
kept as `whsk_` + base64 of its 32-byte seed (sealed at rest like secrets, never shown), the
partner gets `whpk_` + base64 of the 32-byte public key, and each signature is
`v1a,<base64 of 64 bytes>`. During a rotation, or a change from one scheme to the other, a
request carries one signature per valid key, of either kind.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import secrets
from collections.abc import Iterable

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from notifier.errors import Invalid

PREFIX = "whsec_"
PRIVATE_PREFIX = "whsk_"
PUBLIC_PREFIX = "whpk_"
SECRET_BYTES = 32

#: What signs: an HMAC key (v1) or an ed25519 private key (v1a).
Key = bytes | Ed25519PrivateKey


def generate_secret() -> str:
    return PREFIX + base64.b64encode(secrets.token_bytes(SECRET_BYTES)).decode()


def generate_key_pair() -> tuple[str, str]:
    """A new v1a key pair: (`whsk_` private key, `whpk_` public key)."""
    return key_pair(secrets.token_bytes(32))


def key_pair(seed: bytes) -> tuple[str, str]:
    """The v1a key pair of a 32-byte seed, as text."""
    private = Ed25519PrivateKey.from_private_bytes(seed)
    return PRIVATE_PREFIX + base64.b64encode(seed).decode(), public_text(private)


def public_text(private: Ed25519PrivateKey) -> str:
    raw = private.public_key().public_bytes(
        serialization.Encoding.Raw, serialization.PublicFormat.Raw
    )
    return PUBLIC_PREFIX + base64.b64encode(raw).decode()


def secret_key(secret: str) -> Key:
    """What signs with a stored key: the raw HMAC key of a `whsec_` secret, or the ed25519
    private key of a `whsk_` one. ValueError for anything else."""
    if secret.startswith(PRIVATE_PREFIX):
        try:
            seed = base64.b64decode(secret[len(PRIVATE_PREFIX) :], validate=True)
        except binascii.Error:
            raise ValueError("a v1a private key is not base64") from None
        if len(seed) != 32:
            raise ValueError("a v1a private key is not 32 bytes")
        return Ed25519PrivateKey.from_private_bytes(seed)
    return base64.b64decode(secret.removeprefix(PREFIX))


def is_valid_secret(secret: str) -> bool:
    if not secret.startswith(PREFIX):
        return False
    try:
        return len(base64.b64decode(secret[len(PREFIX) :], validate=True)) >= 24
    except ValueError:
        return False


def signature_header(keys: Iterable[Key], message_id: str, timestamp: int, body: bytes) -> str:
    """The `webhook-signature` value: one signature per key, `v1,` or `v1a,` by its kind."""
    signed = f"{message_id}.{timestamp}.".encode() + body
    return " ".join(_sign(key, signed) for key in keys)


def _sign(key: Key, signed: bytes) -> str:
    if isinstance(key, bytes):
        return "v1," + base64.b64encode(hmac.new(key, signed, hashlib.sha256).digest()).decode()
    return "v1a," + base64.b64encode(key.sign(signed)).decode()


def checked_secret(secret: str | None) -> str:
    """A partner's own secret once checked, or a new one."""
    if secret is None:
        return generate_secret()
    if not is_valid_secret(secret):
        raise Invalid("secret: must be whsec_ followed by base64 of at least 24 bytes")
    return secret
