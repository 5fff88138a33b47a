"""Shared fixtures: the real servers every service test talks to.

A test that needs a server and finds none FAILS (it never skips): `make test` and `.ci/run`
start NATS (JetStream), MariaDB and the GCS emulator first (scripts/servers.sh).
"""

from __future__ import annotations

import os
import secrets
import socket
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any
from urllib.parse import urlparse

import pytest

from gamify.settings import Servers, nats_auth_dir

# The control plane fixtures (kubeconfig, kube_api, kubectl, gp_crd, programs) for every folder.
pytest_plugins = ["tests.cluster"]

os.environ.setdefault("STORAGE_EMULATOR_HOST", "http://127.0.0.1:4443")
# The shared NATS's users (admin password) stay found when a test points GAMIFY_HOME elsewhere.
os.environ.setdefault("GAMIFY_NATS_AUTH_DIR", str(nats_auth_dir()))


def _reachable(url: str, default_port: int) -> None:
    parsed = urlparse(url)
    host, port = parsed.hostname or "127.0.0.1", parsed.port or default_port
    try:
        socket.create_connection((host, port), timeout=2).close()
    except OSError as exc:
        pytest.fail(f"server {url} is not reachable ({exc}); start it with `make servers-up`")


@pytest.fixture(scope="session")
def servers() -> Servers:
    return Servers.from_env()


@pytest.fixture(scope="session")
def nats_url(servers: Servers) -> str:
    _reachable(servers.nats_url, 4222)
    return servers.nats_url


@pytest.fixture(scope="session")
def mysql_admin_url(servers: Servers) -> str:
    _reachable(servers.mysql_admin_url, 3306)
    return servers.mysql_admin_url


@pytest.fixture(scope="session")
def gcs_emulator() -> str:
    url = os.environ["STORAGE_EMULATOR_HOST"]
    _reachable(url, 4443)
    return url


@pytest.fixture(scope="session")
def gcs_client(gcs_emulator: str):  # type: ignore[no-untyped-def]
    from google.auth.credentials import AnonymousCredentials
    from google.cloud import storage

    return storage.Client(project="test", credentials=AnonymousCredentials())


@pytest.fixture
def gcs_bucket(gcs_client) -> Iterator[str]:  # type: ignore[no-untyped-def]
    """A fresh emulator bucket; yields its name."""
    with fresh_bucket(gcs_client, "test") as name:
        yield name


@contextmanager
def fresh_bucket(gcs_client: Any, prefix: str) -> Iterator[str]:
    """An emulator bucket `<prefix>-<random>`, emptied and deleted afterwards; yields its name."""
    name = f"{prefix}-{secrets.token_hex(4)}"
    bucket = gcs_client.create_bucket(name)
    yield name
    for blob in gcs_client.list_blobs(name):
        blob.delete()
    bucket.delete()


def free_port() -> int:
    """A TCP port nothing listens on right now (for a private server or process)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def unique_program_id(prefix: str = "t") -> str:
    """A program id no other test uses (DNS label, <= 40 chars)."""
    return f"{prefix}-{secrets.token_hex(4)}"
