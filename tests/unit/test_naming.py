"""Owned names (DESIGN.md "Owned names"), and the database user fitting MySQL 8's 32 characters."""

from __future__ import annotations

from gamify.naming import MYSQL_USER_MAX, ProgramNames
from gamify.provisioning.mysql import _USER_NAME


def test_the_design_example() -> None:
    names = ProgramNames("acme-2027")
    assert names.namespace == "gamify-acme-2027"
    assert names.stream == "GAMIFY_ACME_2027"
    assert names.subjects == "gamify.acme-2027.>"
    assert names.schema == names.db_user == "gamify_acme_2027"
    assert names.bucket_prefix == "acme-2027/"


def test_database_user_is_the_schema_while_it_fits() -> None:
    fits = "a" * (MYSQL_USER_MAX - len("gamify_"))
    assert ProgramNames(fits).db_user == f"gamify_{fits}"


def test_long_ids_get_a_short_stable_distinct_user() -> None:
    long_a = "globex-corporation-wellness-2027-sprin-a"
    long_b = "globex-corporation-wellness-2027-sprin-b"
    assert len(long_a) == len(long_b) == 40  # the longest program id
    user_a, user_b = ProgramNames(long_a).db_user, ProgramNames(long_b).db_user
    assert len(ProgramNames(long_a).schema) > MYSQL_USER_MAX
    assert len(user_a) == len(user_b) == MYSQL_USER_MAX
    assert user_a != user_b  # same first 24 characters, different programs
    assert user_a == ProgramNames(long_a).db_user  # the same on every call
    assert user_a.startswith("gamify_globex_corp")  # readable: it says whose it is
    assert _USER_NAME.match(user_a) and _USER_NAME.match(user_b)
