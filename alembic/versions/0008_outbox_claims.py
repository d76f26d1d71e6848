"""Outbox claims: a delivery lease on each notification row.

Revision ID: 0008
Revises: 0007
Create Date: 2026-06-20

Numbered 0008 so that it did not collide with the storage rewrite's 0007, which now
precedes it. ``claimed_by`` (the claiming process's token) and
``claimed_until`` (when the lease ends) are set together by one conditional UPDATE before a
webhook POST and cleared when the attempt is recorded; a row claimed by a live lease is
delivered by no one else, and a crashed claimer's rows become claimable once the lease ends
(``notify.claim_lease``). Both columns are nullable: existing rows are unclaimed. The
downgrade drops them (batch mode, so SQLite rebuilds the table).
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0008"
down_revision: str | Sequence[str] | None = "0007"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# Frozen copy of tables.py's Timestamp as of this revision.
Timestamp = sa.DateTime(timezone=True).with_variant(sa.BigInteger(), "sqlite")


def upgrade() -> None:
    with op.batch_alter_table("notification_outbox") as batch:
        batch.add_column(sa.Column("claimed_by", sa.Text(), nullable=True))
        batch.add_column(sa.Column("claimed_until", Timestamp, nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("notification_outbox") as batch:
        batch.drop_column("claimed_until")
        batch.drop_column("claimed_by")
