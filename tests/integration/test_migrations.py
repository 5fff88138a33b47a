"""The versioned migrations build exactly the tables the code declares (gamify/db/tables.py)."""

from __future__ import annotations

from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import create_engine, text
from sqlalchemy.engine import make_url

from gamify.db.migrate import current, upgrade
from gamify.db.tables import metadata
from tests.conftest import unique_program_id


def test_migrations_match_the_declared_tables(mysql_admin_url: str) -> None:
    schema = unique_program_id("mig").replace("-", "_")
    admin = create_engine(mysql_admin_url)
    with admin.begin() as connection:
        connection.execute(text(f"CREATE DATABASE `{schema}`"))
    url = make_url(mysql_admin_url).set(database=schema).render_as_string(hide_password=False)
    try:
        upgrade(url)
        upgrade(url)  # idempotent
        assert current(url) == "0003"
        engine = create_engine(url)
        with engine.connect() as connection:
            diff = compare_metadata(MigrationContext.configure(connection), metadata)
        engine.dispose()
        assert diff == [], f"tables.py and the migrations disagree: {diff}"
    finally:
        with admin.begin() as connection:
            connection.execute(text(f"DROP DATABASE IF EXISTS `{schema}`"))
        admin.dispose()
