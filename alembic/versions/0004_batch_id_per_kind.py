"""Batch ids per kind: the primary key of ``ingested_batches`` becomes ``(batch_id, kind)``.

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-26

Metrics and logs batches had one key space: a client that reused a ``batch_id`` for a logs
batch after a metrics batch (or the other way round) had the second batch acknowledged and
not stored. A retry is a retry of the same kind of batch, so the key now includes the kind.

Downgrade keeps one row per ``batch_id`` (of the kind first in sort order): the old key
cannot hold both. These rows only guard retries; dropping one loses nothing stored.
"""

from __future__ import annotations

from collections.abc import Sequence

from alembic import op

revision: str = "0004"
down_revision: str | Sequence[str] | None = "0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_KEY = "pk_ingested_batches"


def upgrade() -> None:
    _set_primary_key(["batch_id", "kind"])


def downgrade() -> None:
    op.execute("""DELETE FROM ingested_batches AS b WHERE EXISTS (
        SELECT 1 FROM ingested_batches AS o WHERE o.batch_id = b.batch_id
            AND o.kind < b.kind)""")
    _set_primary_key(["batch_id"])


def _set_primary_key(columns: list[str]) -> None:
    # SQLite cannot alter a primary key: batch mode copies the table into a new one.
    with op.batch_alter_table("ingested_batches") as batch:
        batch.drop_constraint(_KEY, type_="primary")
        batch.create_primary_key(_KEY, columns)
