"""The tables of one program's schema (SQLAlchemy Core).

Each program has its own MySQL schema and user; these tables carry no program column. The
ledger is the source of truth: `users`, `cap_counters`, `rule_counts`, `board_points` are
derived from it in the same transaction and can be rebuilt from it. Alembic migrations in
`gamify/db/migrations` create them; this module is what code imports.
"""

from __future__ import annotations

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    Column,
    Computed,
    Date,
    Index,
    Integer,
    MetaData,
    Numeric,
    String,
    Table,
    UniqueConstraint,
)
from sqlalchemy.dialects.mysql import DATETIME

metadata = MetaData()

# Microsecond precision: ordering of events within a second matters for audits.
Timestamp = DATETIME(fsp=6)

ID = 128  # event and user ids (see gamify.events.Event)
NAME = 63  # rule, reward, badge and board ids

# Every event the scorer has seen: the unique event id is the second idempotency guard.
events = Table(
    "events",
    metadata,
    Column("seq", BigInteger, primary_key=True, autoincrement=True),
    Column("event_id", String(ID), nullable=False),
    Column("type", String(64), nullable=False),
    Column("user_id", String(ID), nullable=False),
    Column("occurred_at", Timestamp, nullable=False),  # UTC
    Column("received_at", Timestamp, nullable=False),  # UTC
    Column("source", String(64)),
    Column("properties", JSON),
    Column("stream_seq", BigInteger, nullable=False),  # JetStream position
    Column("scored_at", Timestamp, nullable=False),
    UniqueConstraint("event_id", name="uq_events_event_id"),
    Index("ix_events_user", "user_id"),
    # Snapshots publish MAX(stream_seq) as the last scored position: an index read, not a scan.
    Index("ix_events_stream_seq", "stream_seq"),
)

# Append-only: one row per award (points > 0) or spend (points < 0).
ledger = Table(
    "ledger",
    metadata,
    Column("id", BigInteger, primary_key=True, autoincrement=True),
    Column("event_id", String(ID), nullable=False),
    Column("user_id", String(ID), nullable=False),
    Column("kind", String(8), nullable=False),  # award | spend
    Column("rule_id", String(NAME)),
    Column("reward_id", String(NAME)),
    Column("base_points", BigInteger, nullable=False),  # before boosts and caps
    Column("multiplier", Numeric(20, 8), nullable=False),
    Column("points", BigInteger, nullable=False),
    Column("occurred_at", Timestamp, nullable=False),
    Column("local_day", Date, nullable=False),  # in the program's time zone
    Column("created_at", Timestamp, nullable=False),
    Index("ix_ledger_user", "user_id"),
    Index("ix_ledger_event", "event_id"),
)

# Per-user totals; `rev` increases on every change so snapshots rewrite only changed users.
users = Table(
    "users",
    metadata,
    Column("user_id", String(ID), primary_key=True),
    Column("points", BigInteger, nullable=False, default=0),  # everything earned
    Column("spent", BigInteger, nullable=False, default=0),
    Column("rev", BigInteger, nullable=False, default=0),
    Column("published_rev", BigInteger, nullable=False, default=0),
    Column("published_ranks", JSON),  # ranks written in the user's last snapshot object
    Column("updated_at", Timestamp, nullable=False),
    # Computed, never written: 1 while the user has changes no snapshot published yet. Its index
    # is what snapshots look up; it moves only when the flag flips, not on every `rev` bump of
    # the scoring hot path (an index on (rev, published_rev) moved on every award).
    Column("changed", Boolean, Computed("rev > published_rev", persisted=False)),
    Index("ix_users_changed", "changed"),
)

cap_counters = Table(
    "cap_counters",
    metadata,
    Column("user_id", String(ID), primary_key=True),
    Column("rule_id", String(NAME), primary_key=True),
    Column("local_day", Date, primary_key=True),
    Column("points", BigInteger, nullable=False),
)

rule_counts = Table(
    "rule_counts",
    metadata,
    Column("user_id", String(ID), primary_key=True),
    Column("rule_id", String(NAME), primary_key=True),
    Column("awards", Integer, nullable=False),
)

badges = Table(
    "badges",
    metadata,
    Column("user_id", String(ID), primary_key=True),
    Column("badge_id", String(NAME), primary_key=True),
    Column("event_id", String(ID), nullable=False),
    Column("awarded_at", Timestamp, nullable=False),
)

redemptions = Table(
    "redemptions",
    metadata,
    Column("event_id", String(ID), primary_key=True),
    Column("user_id", String(ID), nullable=False),
    Column("reward_id", String(NAME), nullable=False),
    Column("status", String(16), nullable=False),  # fulfilled | rejected
    Column("reason", String(200)),
    Column("cost", Integer, nullable=False),
    Column("occurred_at", Timestamp, nullable=False),
    Column("created_at", Timestamp, nullable=False),
    Index("ix_redemptions_user", "user_id"),
)

reward_stock = Table(
    "reward_stock",
    metadata,
    Column("reward_id", String(NAME), primary_key=True),
    Column("stock", Integer),  # NULL: unlimited
    Column("redeemed", Integer, nullable=False, default=0),
)

# Points earned per board window: window_key is `d:2027-01-05` or `w:2027-W01`. The all-time
# board is users.points (gamify.windows).
board_points = Table(
    "board_points",
    metadata,
    Column("window_key", String(16), primary_key=True),
    Column("user_id", String(ID), primary_key=True),
    Column("points", BigInteger, nullable=False),
    # No index on points: snapshots read a window's rows by the primary key and rank them in
    # memory, and every award would move an entry of such an index.
)

snapshot_runs = Table(
    "snapshot_runs",
    metadata,
    Column("version", BigInteger, primary_key=True, autoincrement=True),
    Column("generated_at", Timestamp, nullable=False),
    Column("last_stream_seq", BigInteger, nullable=False),
    Column("users_written", Integer, nullable=False),
    Column("files_written", Integer, nullable=False),
)

# Erasures of employees (LGPD/GDPR, gamify.privacy): the audit log, and the list of erased users
# the scorer checks so that their events are never scored again. It holds no user id: only
# HMAC-SHA256(program salt, user id), enough to prove a given id was erased, nothing more.
erasures = Table(
    "erasures",
    metadata,
    Column("id", BigInteger, primary_key=True, autoincrement=True),
    Column("user_hash", String(64), nullable=False),  # hex HMAC-SHA256
    Column("requested_by", String(128), nullable=False),
    Column("started_at", Timestamp, nullable=False),
    Column("finished_at", Timestamp),  # NULL until the bucket and stream steps are done
    Column("counts", JSON, nullable=False),  # what was removed, per kind: numbers only
    Index("ix_erasures_user_hash", "user_hash"),
)

# One row (id 1): the program's salt for `erasures.user_hash`, made at the first erasure.
privacy_salt = Table(
    "privacy_salt",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=False),
    Column("salt", String(64), nullable=False),  # hex of 32 random bytes
)
