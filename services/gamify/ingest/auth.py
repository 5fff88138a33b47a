"""`Authorization: Bearer <api key>` against the program's active key hashes."""

from __future__ import annotations

from gamify.credentials import KeyRing
from gamify.ingest.errors import ApiError

_REALM = 'Bearer realm="gamify"'


def _unauthorized(message: str, invalid: bool) -> ApiError:
    challenge = f'{_REALM}, error="invalid_token"' if invalid else _REALM
    return ApiError(401, "unauthorized", message, headers={"WWW-Authenticate": challenge})


def authenticate(keyring: KeyRing, authorization: str | None) -> str:
    """The key id of the presented key; 401 when it is missing or not an active key.

    The key itself is never logged nor echoed: only its id (a prefix of its hash) leaves here.
    """
    if not authorization:
        raise _unauthorized("missing Authorization header: send `Authorization: Bearer <api key>`", False)
    scheme, _, key = authorization.strip().partition(" ")
    if scheme.lower() != "bearer" or not key.strip():
        raise _unauthorized("the Authorization header must be `Bearer <api key>`", False)
    found = keyring.match(key.strip())
    if found is None:
        raise _unauthorized("the API key is not valid for this program", True)
    return found
