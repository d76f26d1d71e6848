"""Fleet: alert state per rule and series, host up/down announcements, notification outbox.

Revision ID: 0003
Revises: 0002
Create Date: 2026-06-05

Also an index on ``metrics.time`` (BRIN on PostgreSQL: tiny and cheap to maintain for rows
that arrive in time order; a b-tree on SQLite) for the newest-point-per-series query of
``/metrics`` and for the retention job's range delete on stores without TimescaleDB.
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0003"
down_revision: str | Sequence[str] | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# Frozen copies of the types in miniobserv/server/storage/tables.py as of this revision.
Timestamp = sa.DateTime(timezone=True).with_variant(sa.BigInteger(), "sqlite")
OutboxId = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def upgrade() -> None:
    op.create_index("ix_metrics_time", "metrics", ["time"], postgresql_using="brin")
    op.create_table(
        "alert_states",
        sa.Column("rule_key", sa.Text(), nullable=False),
        sa.Column("host", sa.Text(), nullable=False),
        sa.Column("labels_key", sa.Text(), nullable=False),
        sa.Column("state", sa.Text(), nullable=False),
        sa.Column("value", sa.Double(), nullable=True),
        sa.Column("since", Timestamp, nullable=False),
        sa.Column("updated_at", Timestamp, nullable=False),
        sa.Column("last_notified", sa.Text(), nullable=True),
        sa.CheckConstraint("state IN ('ok', 'pending', 'firing', 'no_data')",
                           name="ck_alert_states_state"),
        sa.PrimaryKeyConstraint("rule_key", "host", "labels_key", name="pk_alert_states"),
    )
    op.create_table(
        "host_states",
        sa.Column("host", sa.Text(), nullable=False),
        sa.Column("down", sa.Boolean(), nullable=False),
        sa.Column("since", Timestamp, nullable=False),
        sa.PrimaryKeyConstraint("host", name="pk_host_states"),
    )
    op.create_table(
        "notification_outbox",
        sa.Column("id", OutboxId, autoincrement=True, nullable=False),
        sa.Column("channel", sa.Text(), nullable=False),
        sa.Column("payload", sa.Text(), nullable=False),
        sa.Column("status", sa.Text(), nullable=False),
        sa.Column("attempts", sa.Integer(), nullable=False, server_default=sa.text("0")),
        sa.Column("next_attempt_at", Timestamp, nullable=False),
        sa.Column("created_at", Timestamp, nullable=False),
        sa.Column("finished_at", Timestamp, nullable=True),
        sa.Column("last_error", sa.Text(), nullable=True),
        sa.CheckConstraint("status IN ('pending', 'sent', 'failed')",
                           name="ck_notification_outbox_status"),
        sa.PrimaryKeyConstraint("id", name="pk_notification_outbox"),
    )
    op.create_index("ix_notification_outbox_status_id", "notification_outbox",
                    ["status", "id"])


def downgrade() -> None:
    op.drop_index("ix_notification_outbox_status_id", table_name="notification_outbox")
    op.drop_table("notification_outbox")
    op.drop_table("host_states")
    op.drop_table("alert_states")
    op.drop_index("ix_metrics_time", table_name="metrics")
