"""The program's MySQL schema, its own database user, the user's grants, and the migrations.

The program user may do anything inside its own schema and nothing outside it. Passwords are
generated once by the caller (the operator keeps them in a Secret, the CLI in `.gamify/`) and
passed in; the password given to `ensure_schema` is authoritative: if the user already exists
and cannot log in with it, its password is reset to it (`ALTER USER ... IDENTIFIED BY`), and
otherwise the user is left untouched.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from contextlib import contextmanager

from sqlalchemy import create_engine, text
from sqlalchemy.engine import URL, Connection, make_url
from sqlalchemy.exc import OperationalError

from gamify.db import migrate
from gamify.naming import ProgramNames

CHARSET = "utf8mb4"
# Binary collation: ids (users, events, rules) compare byte for byte, never case-folded.
COLLATION = "utf8mb4_bin"
PROGRAM_PRIVILEGES = "SELECT, INSERT, UPDATE, DELETE, CREATE, ALTER, INDEX, DROP, REFERENCES, LOCK TABLES"
USER_HOST = "%"
_ACCESS_DENIED = 1045

# Names come from DNS-label program ids, so this only ever rejects a bug or a hostile input.
_SCHEMA_NAME = re.compile(r"^[a-z0-9_]{1,64}$")
_USER_NAME = re.compile(r"^[a-z0-9_]{1,80}$")


def _schema_identifier(names: ProgramNames) -> str:
    if not _SCHEMA_NAME.match(names.schema):
        raise ValueError(f"unsafe schema name {names.schema!r}")
    return f"`{names.schema}`"


def _grant_target(names: ProgramNames) -> str:
    # In GRANT ... ON `db`.*, `_` and `%` are wildcards: unescaped, the grant for
    # `gamify_a_b` would also open `gamify_aab` (another program's schema).
    escaped = _schema_identifier(names).replace("_", r"\_")
    return f"{escaped}.*"


def _user_name(names: ProgramNames) -> str:
    if not _USER_NAME.match(names.db_user):
        raise ValueError(f"unsafe database user name {names.db_user!r}")
    return names.db_user


@contextmanager
def _admin(admin_url: str) -> Iterator[Connection]:
    # DDL and account statements commit implicitly anyway; autocommit makes that explicit;
    # hide_parameters: an error message must never carry the program user's password.
    engine = create_engine(admin_url, isolation_level="AUTOCOMMIT", hide_parameters=True)
    try:
        with engine.connect() as connection:
            yield connection
    finally:
        engine.dispose()


def program_url(admin_url: str, names: ProgramNames, password: str) -> URL:
    """The program user's URL: the admin URL's host, port and options, the program's own
    user, password and schema (the password is quoted by SQLAlchemy when rendered)."""
    base = make_url(admin_url)
    return base.set(username=_user_name(names), password=password, database=names.schema)


def render_url(url: URL) -> str:
    return url.render_as_string(hide_password=False)


def _can_log_in(url: URL) -> bool:
    engine = create_engine(url)
    try:
        with engine.connect():
            return True
    except OperationalError as exc:
        if exc.orig is not None and exc.orig.args and exc.orig.args[0] == _ACCESS_DENIED:
            return False
        raise
    finally:
        engine.dispose()


def _ensure_database(connection: Connection, names: ProgramNames) -> None:
    schema = _schema_identifier(names)
    connection.execute(
        text(f"CREATE DATABASE IF NOT EXISTS {schema} CHARACTER SET {CHARSET} COLLATE {COLLATION}")
    )
    collation = connection.execute(
        text("SELECT DEFAULT_COLLATION_NAME FROM information_schema.SCHEMATA WHERE SCHEMA_NAME = :s"),
        {"s": names.schema},
    ).scalar_one()
    if collation != COLLATION:
        # Created by hand or by an older version: new tables must still get the binary collation.
        connection.execute(text(f"ALTER DATABASE {schema} CHARACTER SET {CHARSET} COLLATE {COLLATION}"))


def _ensure_user(connection: Connection, names: ProgramNames, password: str, url: URL) -> None:
    user = {"user": _user_name(names), "host": USER_HOST, "password": password}
    # The user name and password are bound as string literals (the driver escapes them).
    connection.execute(text("CREATE USER IF NOT EXISTS :user@:host IDENTIFIED BY :password"), user)
    connection.execute(
        text(f"GRANT {PROGRAM_PRIVILEGES} ON {_grant_target(names)} TO :user@:host"),
        {"user": user["user"], "host": USER_HOST},
    )
    # An existing user (e.g. a retained schema re-provisioned) may have another password.
    if not _can_log_in(url):
        connection.execute(text("ALTER USER :user@:host IDENTIFIED BY :password"), user)


def ensure_schema(admin_url: str, names: ProgramNames, password: str) -> str:
    """Create (if missing) the schema, the program user with its grants on that schema only,
    and bring the tables to the latest migration. Returns the program user's database URL.

    Idempotent: a second call with the same password changes nothing.
    """
    if not password:
        raise ValueError("the program database user needs a non-empty password")
    url = program_url(admin_url, names, password)
    with _admin(admin_url) as connection:
        _ensure_database(connection, names)
        _ensure_user(connection, names, password, url)
    rendered = render_url(url)
    # Migrations run as the program user: its grants are exactly what the tables need.
    migrate.upgrade(rendered)
    return rendered


def drop_schema(admin_url: str, names: ProgramNames) -> None:
    """Remove the schema with all its data, and the program user (retention.onDelete=Delete)."""
    schema = _schema_identifier(names)
    with _admin(admin_url) as connection:
        connection.execute(text(f"DROP DATABASE IF EXISTS {schema}"))
        connection.execute(
            text("DROP USER IF EXISTS :user@:host"), {"user": _user_name(names), "host": USER_HOST}
        )


def schema_exists(admin_url: str, names: ProgramNames) -> bool:
    with _admin(admin_url) as connection:
        found = connection.execute(
            text("SELECT 1 FROM information_schema.SCHEMATA WHERE SCHEMA_NAME = :s"),
            {"s": names.schema},
        ).first()
    return found is not None


def user_exists(admin_url: str, names: ProgramNames) -> bool:
    with _admin(admin_url) as connection:
        found = connection.execute(
            text("SELECT 1 FROM mysql.user WHERE User = :user AND Host = :host"),
            {"user": _user_name(names), "host": USER_HOST},
        ).first()
    return found is not None
