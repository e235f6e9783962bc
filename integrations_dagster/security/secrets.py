"""Credentials at rest: Fernet (from ``cryptography``) with a key from ``INTEGRATIONS_SECRET_KEY``.

The variable may hold several comma-separated keys: the first encrypts, all decrypt
(``MultiFernet``), which is how keys rotate (``integrations rotate-key`` re-encrypts every row with
the first key). Without a key, empty credentials are fine (the synthetic demo needs none) and
storing a real secret is refused unless ``INTEGRATIONS_ALLOW_PLAINTEXT_CREDENTIALS=1`` says the
operator accepts plaintext (used by the local fake-API demo only).
"""

from __future__ import annotations

import json
import os
from typing import Any

from cryptography.fernet import Fernet, InvalidToken, MultiFernet

from integrations_dagster.errors import CredentialsError

ENV_KEY = "INTEGRATIONS_SECRET_KEY"
ENV_ALLOW_PLAINTEXT = "INTEGRATIONS_ALLOW_PLAINTEXT_CREDENTIALS"
_FERNET = "fernet:"
_PLAIN = "plain:"


def generate_key() -> str:
    return Fernet.generate_key().decode()


class CredentialCipher:
    """Encrypts and decrypts credentials. Without explicit ``keys`` it follows the environment at
    each call, so a long-lived store picks up a key set (or rotated) after it was created."""

    def __init__(self, keys: str | None = None, *, allow_plaintext: bool | None = None) -> None:
        self._keys = keys
        self._allow = allow_plaintext
        self._cache: tuple[str, MultiFernet | None] | None = None
        self._fernet  # noqa: B018 - an invalid key is reported now, not at first use

    @property
    def _fernet(self) -> MultiFernet | None:
        raw = os.environ.get(ENV_KEY, "") if self._keys is None else self._keys
        if self._cache is not None and self._cache[0] == raw:
            return self._cache[1]
        parts = [k.strip() for k in raw.split(",") if k.strip()]
        try:
            fernet = MultiFernet([Fernet(k.encode()) for k in parts]) if parts else None
        except (ValueError, TypeError) as exc:
            raise CredentialsError(
                f"{ENV_KEY} is not a valid Fernet key (32 url-safe base64 bytes); "
                "make one with `integrations generate-key`"
            ) from exc
        self._cache = (raw, fernet)
        return fernet

    @property
    def _allow_plaintext(self) -> bool:
        if self._allow is not None:
            return self._allow
        return os.environ.get(ENV_ALLOW_PLAINTEXT, "") in {"1", "true", "yes"}

    @property
    def has_key(self) -> bool:
        return self._fernet is not None

    def encrypt(self, credentials: dict[str, Any] | None) -> str | None:
        if not credentials:
            return None
        data = json.dumps(credentials, sort_keys=True)
        if self._fernet is not None:
            return _FERNET + self._fernet.encrypt(data.encode()).decode()
        if self._allow_plaintext:
            return _PLAIN + data
        raise CredentialsError(
            f"refusing to store credentials unencrypted: set {ENV_KEY} "
            f"(make one with `integrations generate-key`)"
        )

    def decrypt(self, stored: str | None) -> dict[str, Any]:
        if not stored:
            return {}
        if stored.startswith(_PLAIN):
            return dict(json.loads(stored[len(_PLAIN) :]))
        if stored.startswith(_FERNET):
            if self._fernet is None:
                raise CredentialsError(f"credentials are encrypted but {ENV_KEY} is not set")
            try:
                return dict(json.loads(self._fernet.decrypt(stored[len(_FERNET) :].encode())))
            except InvalidToken as exc:
                raise CredentialsError(f"credentials cannot be decrypted with the key(s) in {ENV_KEY}") from exc
        raise CredentialsError("stored credentials have an unknown format")

    def seal(self, data: dict[str, Any], *, purpose: str) -> str:
        """``data`` as an opaque, URL-safe token only a holder of the key can read or forge (an OAuth
        ``state``); refused without a key: there is no plaintext form."""
        if self._fernet is None:
            raise CredentialsError(f"{purpose} needs {ENV_KEY} (make one with `integrations generate-key`)")
        return self._fernet.encrypt(json.dumps(data, sort_keys=True).encode()).decode()

    def unseal(self, token: str, *, max_age: float, purpose: str) -> dict[str, Any]:
        """The data of a ``seal`` token made at most ``max_age`` seconds ago."""
        if self._fernet is None:
            raise CredentialsError(f"{purpose} needs {ENV_KEY}, the key it was started with")
        try:
            self._fernet.decrypt(token.encode())
        except (InvalidToken, ValueError, TypeError):
            raise CredentialsError(
                f"{purpose}: the state does not come from an authorization this deployment started "
                f"(altered, truncated, or made with another {ENV_KEY}); start again"
            ) from None
        try:
            raw = self._fernet.decrypt(token.encode(), ttl=int(max_age))
        except InvalidToken:
            raise CredentialsError(
                f"{purpose}: the authorization was started more than {int(max_age)} s ago; start again"
            ) from None
        return dict(json.loads(raw))

    def rotate(self, stored: str | None) -> str | None:
        """Re-encrypt with the first key (plaintext rows become encrypted)."""
        if not stored:
            return stored
        if self._fernet is None:
            raise CredentialsError(f"{ENV_KEY} must be set to rotate credentials")
        if stored.startswith(_PLAIN):
            return _FERNET + self._fernet.encrypt(stored[len(_PLAIN) :].encode()).decode()
        return _FERNET + self._fernet.rotate(stored[len(_FERNET) :].encode()).decode()
