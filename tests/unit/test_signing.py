"""Signatures against known answers: the Standard Webhooks specification's own reference vector
for `v1` (HMAC-SHA256), and for ed25519 (`v1a`) a vector derived once from a fixed seed (and
checked then against Node's crypto, an implementation of its own), kept here as literals, so a
change of encoding, of what is signed or of the key format fails at once."""

from __future__ import annotations

import base64

import pytest
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from notifier import signing

SEED = bytes(range(32))
PRIVATE = "whsk_AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8="
PUBLIC = "whpk_A6EHv/POEL4dcN0Y50vAmWfk1jCbpQ1fHdyGZBJVMbg="
BODY = (
    b'{"type":"order.created","timestamp":"2026-11-24T12:00:00.000Z",'
    b'"data":{"order_id":42,"total":99.5}}'
)
SIGNATURE = (
    "v1a,E40re2QFzJd0WkpVRQ5NWXf69z0j/1XynGW5uV4ZoJHKJvojpowgVKr8DEUpzMHSqyKVzfRLEhU58llKF12xCA=="
)


def test_the_standard_webhooks_reference_vector() -> None:
    """The example of the Standard Webhooks specification (and of its libraries' tests):
    a partner verifying with any of them accepts what notifier signs."""
    key = signing.secret_key("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw")
    header = signing.signature_header(
        [key], "msg_p5jXN8AQM9LWM0D4loKWxJek", 1614265330, b'{"test": 2432232314}'
    )
    assert header == "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE="


def test_the_known_answer() -> None:
    assert signing.key_pair(SEED) == (PRIVATE, PUBLIC)
    key = signing.secret_key(PRIVATE)
    assert signing.signature_header([key], "ord-42-created", 1795521600, BODY) == SIGNATURE


def test_cryptographys_verifier_accepts_it_and_nothing_else() -> None:
    public = Ed25519PublicKey.from_public_bytes(base64.b64decode(PUBLIC.removeprefix("whpk_")))
    raw = base64.b64decode(SIGNATURE.removeprefix("v1a,"))
    assert len(raw) == 64
    public.verify(raw, b"ord-42-created.1795521600." + BODY)
    for tampered in (
        b"ord-42-created.1795521601." + BODY,
        b"ord-42-created.1795521600." + BODY[:-1],
    ):
        with pytest.raises(InvalidSignature):
            public.verify(raw, tampered)


def test_one_signature_per_key_of_either_kind() -> None:
    hmac_key = signing.secret_key("whsec_" + base64.b64encode(b"k" * 32).decode())
    header = signing.signature_header(
        [signing.secret_key(PRIVATE), hmac_key], "ord-42-created", 1795521600, BODY
    )
    first, second = header.split(" ")
    assert first == SIGNATURE
    assert second.startswith("v1,") and len(base64.b64decode(second[3:])) == 32


def test_new_key_pairs_are_new_and_work() -> None:
    private, public = signing.generate_key_pair()
    assert (private, public) != signing.generate_key_pair()
    assert public.startswith("whpk_") and len(base64.b64decode(public[5:])) == 32
    header = signing.signature_header([signing.secret_key(private)], "m", 1, b"{}")
    key = Ed25519PublicKey.from_public_bytes(base64.b64decode(public[5:]))
    key.verify(base64.b64decode(header[4:]), b"m.1.{}")


@pytest.mark.parametrize(
    "bad", ["whsk_not base64!", "whsk_" + base64.b64encode(b"x" * 31).decode()]
)
def test_a_broken_private_key_is_a_value_error(bad: str) -> None:
    with pytest.raises(ValueError):
        signing.secret_key(bad)
