"""The NATS server's users Secret: one include file with the admin and every program's users.

The NATS server includes `users.conf` from this Secret (mounted; its config reloader sends
SIGHUP when the file changes). The content is computed from scratch from the programs' NATS
Secrets (`<program>-nats`, labelled `gamification.io/nats-users`), so writing it is idempotent
and any writer with the full list writes the same bytes. Only bcrypt hashes go in: the plain
passwords stay in the programs' Secrets.

A Secret counts only where the operator puts it: named `<program>-nats` in the program's own
namespace `gamify-<program>`, with the program's label. A labelled Secret anywhere else (say,
made by hand in another namespace) is ignored, so nobody can add a user for a program from
outside that program's namespace.
"""

from __future__ import annotations

import base64
import re
from collections.abc import Iterable, Mapping
from typing import Any

import bcrypt

from gamify.naming import ProgramNames
from gamify.nats_login import WORKLOADS
from gamify.provisioning.nats_auth import hash_password, render_users
from gamify_operator.builders.labels import (
    APP_NAME,
    LABEL_COMPONENT,
    LABEL_MANAGED_BY,
    LABEL_NAME,
    LABEL_PART_OF,
    LABEL_PROGRAM,
    MANAGED_BY,
    ChildNames,
)
from gamify_operator.builders.secrets import LABEL_NATS_USERS, nats_password_hash_key

USERS_KEY = "users.conf"  # the file the NATS server includes
ADMIN_HASH_KEY = "admin-password-hash"  # kept so the admin's hash stays the same across writes
COMPONENT_NATS_USERS = "nats-users"
# Program NATS Secrets, cluster-wide.
PROGRAM_SECRETS_SELECTOR = f"{LABEL_NATS_USERS}=true,{LABEL_MANAGED_BY}={MANAGED_BY}"
# A program id (the CRD's rule): a DNS label of at most 40 characters, so no dots or wildcards
# can reach a user name or a subject.
_PROGRAM_ID = re.compile(r"^[a-z0-9]([-a-z0-9]{0,38}[a-z0-9])?$")


def _decode(value: str) -> str:
    return base64.b64decode(value).decode("utf-8")


def program_hashes(secrets: Iterable[Mapping[str, Any]]) -> dict[str, dict[str, str]]:
    """{program: {workload: bcrypt hash}} from listed `<program>-nats` Secrets (API shape).

    Secrets not where the operator puts them, or without both hashes, are left out.
    """
    found: dict[str, dict[str, str]] = {}
    for secret in secrets:
        meta = secret.get("metadata") or {}
        program = (meta.get("labels") or {}).get(LABEL_PROGRAM)
        if not program or not _PROGRAM_ID.match(program):
            continue
        children = ChildNames(program)
        expected = (children.namespace, children.nats_secret)
        if (meta.get("namespace"), meta.get("name")) != expected or meta.get("deletionTimestamp"):
            continue
        data = secret.get("data") or {}
        keys = {workload: nats_password_hash_key(workload) for workload in WORKLOADS}
        if not all(data.get(key) for key in keys.values()):
            continue
        hashes = {workload: _decode(data[key]) for workload, key in keys.items()}
        if all(value.startswith(("$2a$", "$2b$")) for value in hashes.values()):
            found[program] = hashes
    return found


def admin_hash(admin_password: str, live_data: Mapping[str, str] | None) -> str:
    """The admin's bcrypt hash: the live Secret's while it still matches the password (a new
    salt each write would change the file, and reload the server, for nothing)."""
    stored = (live_data or {}).get(ADMIN_HASH_KEY)
    if stored:
        text = _decode(stored)
        try:
            if bcrypt.checkpw(admin_password.encode("utf-8"), text.encode("ascii")):
                return text
        except ValueError:  # not a bcrypt hash: make a new one
            pass
    return hash_password(admin_password)


def users_secret(
    name: str,
    namespace: str,
    admin_user: str,
    admin_password_hash: str,
    programs: Mapping[str, Mapping[str, str]],
) -> dict[str, Any]:
    """The Secret the NATS server includes its users from."""
    content = render_users(admin_password_hash, programs, admin_user=admin_user)
    labels = {
        LABEL_NAME: APP_NAME,
        LABEL_COMPONENT: COMPONENT_NATS_USERS,
        LABEL_MANAGED_BY: MANAGED_BY,
        LABEL_PART_OF: APP_NAME,
    }
    data = {USERS_KEY: content, ADMIN_HASH_KEY: admin_password_hash}
    return {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": {"name": name, "namespace": namespace, "labels": labels},
        "type": "Opaque",
        "data": {key: base64.b64encode(value.encode("utf-8")).decode("ascii") for key, value in data.items()},
    }


def users_of(secret_data: Mapping[str, str] | None) -> str:
    """The include file held by a live users Secret ("" when none)."""
    value = (secret_data or {}).get(USERS_KEY)
    return _decode(value) if value else ""


def program_user_names(program: str) -> list[str]:
    names = ProgramNames(program)
    return [names.nats_workload_user(workload) for workload in WORKLOADS]
