"""Alembic environment: migrations run against one program's schema at a time.

The caller (gamify.db.migrate.upgrade) passes an open connection whose default database is the
program's schema, so the version table lives inside that schema too.
"""

from alembic import context

from gamify.db.tables import metadata

connection = context.config.attributes["connection"]
context.configure(connection=connection, target_metadata=metadata, compare_type=True)
with context.begin_transaction():
    context.run_migrations()
