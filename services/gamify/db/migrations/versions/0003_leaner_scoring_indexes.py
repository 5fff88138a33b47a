"""leaner indexes on the scoring hot path

`board_points.ix_board_rank` was never read (snapshots scan a window by the primary key and rank
in memory) yet every award moved one of its entries per window. `users.ix_users_changed` on
(rev, published_rev) could not serve `rev > published_rev` as a range and moved on every rev
bump; it is replaced by an index on a computed `changed` flag, which moves only when the flag
flips. The all-time board's rows (`window_key = 'all'`) are dropped: that board is
`users.points` (every point earned), so each award writes a third fewer board rows.

Revision ID: 0003
Revises: 0002
Create Date: 2026-12-05 01:30:00
"""

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.drop_index("ix_board_rank", table_name="board_points")
    op.drop_index("ix_users_changed", table_name="users")
    op.add_column(
        "users",
        sa.Column("changed", sa.Boolean(), sa.Computed("rev > published_rev", persisted=False)),
    )
    op.create_index("ix_users_changed", "users", ["changed"], unique=False)
    op.execute("DELETE FROM board_points WHERE window_key = 'all'")


def downgrade() -> None:
    op.execute(
        "INSERT INTO board_points (window_key, user_id, points) "
        "SELECT 'all', user_id, points FROM users WHERE points > 0"
    )
    op.drop_index("ix_users_changed", table_name="users")
    op.drop_column("users", "changed")
    op.create_index("ix_users_changed", "users", ["rev", "published_rev"], unique=False)
    op.create_index("ix_board_rank", "board_points", ["window_key", "points", "user_id"], unique=False)
