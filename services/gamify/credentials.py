"""API keys and generated passwords.

An API key is shown once (to whoever provisions the program) and only its SHA-256 hash is kept:
in the program's Secret, in `GAMIFY_API_KEY_HASHES`, in memory. Several hashes may be active at
once, so a key can be rotated without downtime: add the new one, move the apps, drop the old.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
from collections.abc import Iterable

API_KEY_PREFIX = "gk_"
KEY_ID_LENGTH = 12
_SHA256_HEX = re.compile(r"^[0-9a-f]{64}$")


def generate_api_key(program: str) -> str:
    """A new key for `program`: `gk_` + 32 random bytes (256 bits), URL-safe.

    The program id is not embedded (a key should not reveal which tenant it opens); the argument
    is kept so callers state whose key they are making, and for a future key format.
    """
    del program
    return API_KEY_PREFIX + secrets.token_urlsafe(32)


def hash_api_key(key: str) -> str:
    """SHA-256 hex of the key.

    A fast hash is right here, unlike for passwords: keys are 256 random bits, so there is no
    dictionary to try and brute force is hopeless however fast the hash; a slow KDF would only
    cost CPU on every request.
    """
    return hashlib.sha256(key.encode("utf-8")).hexdigest()


def key_id(key_hash: str) -> str:
    """A short, loggable name for a key: the first 12 hex digits of its hash."""
    return key_hash[:KEY_ID_LENGTH]


def generate_password() -> str:
    """A database password: 32 random bytes, URL-safe (fits in a SQLAlchemy URL unescaped)."""
    return secrets.token_urlsafe(32)


def parse_key_hashes(text: str) -> list[str]:
    """Comma-separated SHA-256 hex digests (`GAMIFY_API_KEY_HASHES`); blanks are ignored."""
    return [part.strip().lower() for part in text.split(",") if part.strip()]


class KeyRing:
    """The active key hashes of one program."""

    def __init__(self, hashes: Iterable[str]):
        normalised = []
        for value in hashes:
            value = value.strip().lower()
            if not _SHA256_HEX.match(value):
                # Never echo the value: someone may have pasted a key instead of its hash.
                raise ValueError("an API key hash must be 64 hex digits (sha256 of the key)")
            normalised.append(value)
        self._hashes = tuple(dict.fromkeys(normalised))

    def __len__(self) -> int:
        return len(self._hashes)

    def match(self, presented_key: str) -> str | None:
        """The key id of the active key equal to `presented_key`, or None.

        Every active hash is compared, with `hmac.compare_digest`, so the time taken does not
        tell which key (or how much of one) matched.
        """
        presented = hash_api_key(presented_key).encode("ascii")
        found: str | None = None
        for candidate in self._hashes:
            if hmac.compare_digest(presented, candidate.encode("ascii")):
                found = candidate
        return key_id(found) if found is not None else None
