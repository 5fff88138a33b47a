"""The salted hash that stands for an erased user id, and the scorer's "was this user erased?".

The audit log must not keep the personal data it is about, yet must let the company prove later
that a given employee id was erased (and the scorer must recognise that id when it comes back).
Each program gets its own random salt, made at its first erasure and kept in its own schema;
`user_hash` is HMAC-SHA256(salt, user id). Without the salt the hash cannot be matched to an id;
with it (whoever can read the schema) one can test a candidate id, which is what proving needs.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from collections.abc import Iterable

from sqlalchemy.engine import Connection

from gamify.db import tables as t

SALT_ROW = 1
SALT_BYTES = 32


def user_hash(salt: str, user: str) -> str:
    """Hex HMAC-SHA256 of `user` keyed with the program's salt (hex)."""
    return hmac.new(bytes.fromhex(salt), user.encode(), hashlib.sha256).hexdigest()


def read_salt(connection: Connection) -> str | None:
    """The program's salt, or None when no one was ever erased from it."""
    row = connection.exec_driver_sql(
        f"SELECT salt FROM {t.privacy_salt.name} WHERE id = %s", (SALT_ROW,)
    ).first()
    return None if row is None else str(row[0])


def ensure_salt(connection: Connection) -> str:
    """The program's salt, made now if missing (two first erasures at once agree on one)."""
    connection.exec_driver_sql(
        f"INSERT IGNORE INTO {t.privacy_salt.name} (id, salt) VALUES (%s, %s)",
        (SALT_ROW, secrets.token_hex(SALT_BYTES)),
    )
    salt = read_salt(connection)
    if salt is None:  # pragma: no cover - the row was just inserted or already there
        raise RuntimeError("the program's privacy salt could not be created")
    return salt


def erased_among(connection: Connection, users: Iterable[str]) -> set[str]:
    """Which of `users` were erased from this program. One primary-key read when none ever was
    (the scorer calls this for every batch), two otherwise."""
    wanted = sorted(set(users))
    if not wanted:
        return set()
    salt = read_salt(connection)
    if salt is None:
        return set()
    by_hash = {user_hash(salt, user): user for user in wanted}
    marks = ", ".join(["%s"] * len(by_hash))
    rows = connection.exec_driver_sql(
        f"SELECT DISTINCT user_hash FROM {t.erasures.name} WHERE user_hash IN ({marks})",
        tuple(by_hash),
    )
    return {by_hash[row[0]] for row in rows}
