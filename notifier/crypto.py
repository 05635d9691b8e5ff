"""Partner secrets at rest: Fernet-encrypted when NOTIFIER_SECRET_KEY is set, plain otherwise.

Fernet (AES-128-CBC + HMAC-SHA256, from `cryptography`) is authenticated, so a tampered or
wrongly-keyed value fails loudly instead of signing with garbage.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from cryptography.fernet import Fernet, InvalidToken

from notifier import signing

if TYPE_CHECKING:
    from notifier.models import Partner

_MARK = "enc:"


class SecretBox:
    def __init__(self, key: bytes | None) -> None:
        self._fernet = Fernet(key) if key else None

    def seal(self, secret: str) -> str:
        if self._fernet is None:
            return secret
        return _MARK + self._fernet.encrypt(secret.encode()).decode()

    def open(self, stored: str) -> str:
        if not stored.startswith(_MARK):
            return stored
        if self._fernet is None:
            raise ValueError("partner secrets are encrypted: set NOTIFIER_SECRET_KEY")
        try:
            return self._fernet.decrypt(stored[len(_MARK) :].encode()).decode()
        except InvalidToken:
            raise ValueError("a partner secret does not decrypt with NOTIFIER_SECRET_KEY") from None

    def signing_keys(self, partner: Partner, now_ms: int) -> list[signing.Key]:
        """The HMAC keys of the partner's secrets that still sign at `now_ms`, newest first;
        ValueError when one cannot be opened."""
        return [
            signing.secret_key(self.open(s.value)) for s in partner.secrets if s.signs_at(now_ms)
        ]
