"""Versioned migrations (alembic), applied per program schema."""

from __future__ import annotations

import threading
from pathlib import Path

from alembic import command
from alembic.config import Config
from sqlalchemy import create_engine
from sqlalchemy.engine import Connection

MIGRATIONS = Path(__file__).parent / "migrations"
# Alembic keeps its `context` and `op` proxies process-global: two upgrades at once (the
# operator provisioning two programs in threads) would mix their connections.
_ONE_AT_A_TIME = threading.Lock()


def _config(connection: Connection) -> Config:
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    config.attributes["connection"] = connection
    return config


def upgrade(url: str, revision: str = "head") -> None:
    """Bring the schema that `url` points at up to `revision` (idempotent)."""
    engine = create_engine(url, pool_pre_ping=True)
    try:
        with _ONE_AT_A_TIME, engine.begin() as connection:
            command.upgrade(_config(connection), revision)
    finally:
        engine.dispose()


def current(url: str) -> str | None:
    from alembic.runtime.migration import MigrationContext

    engine = create_engine(url)
    try:
        with engine.connect() as connection:
            return MigrationContext.configure(connection).get_current_revision()
    finally:
        engine.dispose()
