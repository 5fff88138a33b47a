"""The program's Secrets: API keys, its database user, its NATS connection and users.

Values are inputs: the handler generates keys and passwords once and never replaces them
(`merge_secret` keeps what a live Secret already holds). Data is base64 (`data`, not the
write-only `stringData`) so a built Secret compares equal to the one read back from the API.

`<program>-api-keys` holds the plain keys, for the program manager to read
(`kubectl get secret ... -o jsonpath='{.data.api-key}' | base64 -d`), and their SHA-256 hashes:
only the hashes key is ever referenced by a pod. Several keys may be active at once, for
rotation: the first is the current one.

`<program>-nats` holds the NATS URL (no login when the platform has NATS users) and the
program's two NATS users (`gamify.provisioning.nats_auth`): user, password and the password's
bcrypt hash for ingest and scoring. Pods read their own user and password; the operator copies
only the hashes into the NATS server's users Secret (`builders.nats_users`), found by the
`gamification.io/nats-users` label.
"""

from __future__ import annotations

import base64
import hashlib
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy.engine import make_url

from gamify.credentials import hash_api_key
from gamify.naming import ProgramNames
from gamify.nats_login import INGEST, SCORING, WORKLOADS
from gamify.program import Program
from gamify.provisioning.nats_auth import ProgramNatsCredentials
from gamify_operator.builders.labels import COMPONENT_CREDENTIALS, ChildNames, metadata

# Keys of `<program>-api-keys`.
API_KEY = "api-key"  # the current key
API_KEYS = "api-keys"  # every active key, one per line
API_KEY_HASHES = "api-key-hashes"  # comma-separated sha256 hex: GAMIFY_API_KEY_HASHES of ingest
# Keys of `<program>-database`.
DATABASE_URL = "url"
DATABASE_USERNAME = "username"
DATABASE_PASSWORD = "password"
DATABASE_HOST = "host"
DATABASE_PORT = "port"
DATABASE_NAME = "database"
# Keys of `<program>-nats`.
NATS_URL = "url"
# The label that marks `<program>-nats` as holding NATS users (the users Secret is built from
# every Secret carrying it).
LABEL_NATS_USERS = "gamification.io/nats-users"


def nats_user_key(workload: str) -> str:
    return f"{workload}-user"


def nats_password_key(workload: str) -> str:
    return f"{workload}-password"


def nats_password_hash_key(workload: str) -> str:
    return f"{workload}-password-hash"


NATS_INGEST_USER, NATS_INGEST_PASSWORD = nats_user_key(INGEST), nats_password_key(INGEST)
NATS_SCORING_USER, NATS_SCORING_PASSWORD = nats_user_key(SCORING), nats_password_key(SCORING)


@dataclass(frozen=True)
class ProgramSecrets:
    """The secret values of one program, as the handler generated or provisioned them."""

    api_keys: Sequence[str] = field(repr=False)
    database_url: str = field(repr=False)
    nats_url: str
    # The program's NATS users: plain passwords and their bcrypt hashes (by workload).
    nats_credentials: ProgramNatsCredentials | None = field(default=None, repr=False)
    nats_password_hashes: Mapping[str, str] = field(default_factory=dict, repr=False)

    def __post_init__(self) -> None:
        if not self.api_keys or not all(self.api_keys):
            raise ValueError("a program needs at least one API key")


def encode(value: str) -> str:
    return base64.b64encode(value.encode("utf-8")).decode("ascii")


def decode(value: str) -> str:
    return base64.b64decode(value).decode("utf-8")


def read_secret(secret_data: Mapping[str, str] | None, key: str) -> str | None:
    """One decoded value of a Secret's `data` (as read from the API), or None."""
    if not secret_data or key not in secret_data:
        return None
    return decode(secret_data[key])


def _secret(program: Program, name: str, values: Mapping[str, str]) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": metadata(program, name, COMPONENT_CREDENTIALS),
        "type": "Opaque",
        "data": {key: encode(value) for key, value in values.items()},
    }


def api_keys_secret(program: Program, api_keys: Sequence[str]) -> dict[str, Any]:
    keys = list(dict.fromkeys(api_keys))
    return _secret(
        program,
        ChildNames(program.name).api_keys_secret,
        {
            API_KEY: keys[0],
            API_KEYS: "\n".join(keys),
            API_KEY_HASHES: ",".join(hash_api_key(key) for key in keys),
        },
    )


def database_secret(program: Program, database_url: str) -> dict[str, Any]:
    """The program user's URL, and its parts for tools that want them separately."""
    url = make_url(database_url)
    values = {
        DATABASE_URL: database_url,
        DATABASE_USERNAME: url.username or "",
        DATABASE_PASSWORD: url.password or "",
        DATABASE_HOST: url.host or "",
        DATABASE_PORT: str(url.port or ""),
        DATABASE_NAME: url.database or "",
    }
    return _secret(program, ChildNames(program.name).database_secret, values)


def nats_secret(
    program: Program,
    nats_url: str,
    credentials: ProgramNatsCredentials | None = None,
    password_hashes: Mapping[str, str] | None = None,
) -> dict[str, Any]:
    """The URL, and with `credentials` both users (name, password, hash of the password)."""
    values = {NATS_URL: nats_url}
    secret = _secret(program, ChildNames(program.name).nats_secret, values)
    if credentials is None:
        return secret
    hashes = password_hashes or {}
    names = ProgramNames(program.name)
    for workload in WORKLOADS:
        if workload not in hashes:
            raise ValueError(f"no password hash for the {workload} NATS user")
        values[nats_user_key(workload)] = names.nats_workload_user(workload)
        values[nats_password_key(workload)] = credentials.password(workload)
        values[nats_password_hash_key(workload)] = hashes[workload]
    secret = _secret(program, ChildNames(program.name).nats_secret, values)
    secret["metadata"]["labels"][LABEL_NATS_USERS] = "true"
    return secret


def program_secrets(program: Program, secrets: ProgramSecrets) -> list[dict[str, Any]]:
    return [
        api_keys_secret(program, secrets.api_keys),
        database_secret(program, secrets.database_url),
        nats_secret(program, secrets.nats_url, secrets.nats_credentials, secrets.nats_password_hashes),
    ]


def merge_secret(desired: Mapping[str, Any], existing_data: Mapping[str, str] | None) -> dict[str, Any]:
    """`desired` with the live Secret's data winning: a generated value is never replaced.

    Keys only the live Secret has are kept too (e.g. an older key added by hand for rotation).
    """
    merged = dict(desired)
    merged["data"] = {**desired.get("data", {}), **(existing_data or {})}
    return merged


def data_checksum(secrets: Iterable[Mapping[str, Any]]) -> str:
    """sha256 over Secrets' data: in a pod template it restarts pods when a value they read
    changes (env from a Secret is read only at start). Reveals nothing: the values are random."""
    digest = hashlib.sha256()
    for secret in sorted(secrets, key=lambda s: s["metadata"]["name"]):
        digest.update(secret["metadata"]["name"].encode())
        for key, value in sorted(secret.get("data", {}).items()):
            digest.update(f"\0{key}={value}".encode())
        digest.update(b"\n")
    return digest.hexdigest()
