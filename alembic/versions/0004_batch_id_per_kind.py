"""Batch ids per kind, with a digest: ``ingested_batches`` is keyed by ``(batch_id, kind)``.

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-26

Metrics and logs batches had one key space: a client that reused a ``batch_id`` for a logs
batch after a metrics batch (or the other way round) had the second batch acknowledged and
not stored. A retry is a retry of the same kind of batch, so the key now includes the kind.

A client that reused an id for other content (another host, other points) was acknowledged
too, and that batch was lost. The new ``digest`` column holds a digest of the batch's content
(``miniobserv.server.storage.claims``): same id and digest is a retry, another digest a 409.
Claims made before this revision have no digest (NULL): their retries are acknowledged as
before, whatever their content.

Downgrade drops the digests and keeps one row per ``batch_id`` (of the kind first in sort
order): the old key cannot hold both. These rows only guard retries; dropping one loses
nothing stored.
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0004"
down_revision: str | Sequence[str] | None = "0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_KEY = "pk_ingested_batches"


def upgrade() -> None:
    # SQLite cannot alter a primary key: batch mode copies the table into a new one.
    with op.batch_alter_table("ingested_batches") as batch:
        batch.drop_constraint(_KEY, type_="primary")
        batch.create_primary_key(_KEY, ["batch_id", "kind"])
        batch.add_column(sa.Column("digest", sa.LargeBinary(), nullable=True))


def downgrade() -> None:
    op.execute("""DELETE FROM ingested_batches AS b WHERE EXISTS (
        SELECT 1 FROM ingested_batches AS o WHERE o.batch_id = b.batch_id
            AND o.kind < b.kind)""")
    with op.batch_alter_table("ingested_batches") as batch:
        batch.drop_column("digest")
        batch.drop_constraint(_KEY, type_="primary")
        batch.create_primary_key(_KEY, ["batch_id"])
