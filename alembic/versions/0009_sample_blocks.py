"""Sample blocks: old samples packed 30 minutes of a series to a row (plain PostgreSQL).

Revision ID: 0009
Revises: 0008
Create Date: 2026-12-04

``sample_blocks (series_id, start, times timestamptz[], vals float8[])``, keyed
``(series_id, start)``: the server's maintenance job moves each 30-minute window of a series
older than ``METRICS_PACK_AFTER`` out of ``samples`` into one row (see
``miniobserv/server/storage/postgres/blocks.py``). Both arrays are TOAST-compressed with lz4
where the server has it (PostgreSQL 14+ built with lz4), pglz otherwise, and kept in the row
(``STORAGE MAIN``: a read never fetches a block's pieces from the TOAST table).

Created on every PostgreSQL database, TimescaleDB or not, so that the schema is the same;
on TimescaleDB (``samples`` a hypertable, compressed by its own policy) it stays empty and
is never read. Nothing on SQLite. The upgrade packs nothing (the server does, in bounded
batches). ``downgrade`` unpacks every block back into ``samples`` (a narrow row of the same
series and time, written later, is kept), ``MOVE_SERIES`` series per statement, then drops
the table.
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import context, op
from sqlalchemy.dialects import postgresql

revision: str = "0009"
down_revision: str | Sequence[str] | None = "0008"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

MOVE_SERIES = 500  # series per unpacking statement (``config.attributes["move_batch"]``)

_UNPACK = """INSERT INTO samples (series_id, time, value)
    SELECT b.series_id, u.t, u.v
    FROM sample_blocks AS b CROSS JOIN LATERAL unnest(b.times, b.vals) AS u(t, v)
    WHERE b.series_id >= :low AND b.series_id < :high
    ON CONFLICT (series_id, time) DO NOTHING"""


def _is_postgres() -> bool:
    return not context.is_offline_mode() and op.get_bind().dialect.name == "postgresql"


def upgrade() -> None:
    if not _is_postgres():
        return
    op.create_table(
        "sample_blocks",
        sa.Column("series_id", sa.BigInteger(), nullable=False),
        sa.Column("start", sa.DateTime(timezone=True), nullable=False),
        sa.Column("times", postgresql.ARRAY(sa.DateTime(timezone=True)), nullable=False),
        sa.Column("vals", postgresql.ARRAY(sa.Double()), nullable=False),
        sa.PrimaryKeyConstraint("series_id", "start", name="pk_sample_blocks"),
    )
    if op.get_bind().execute(sa.text(
            "SELECT 1 FROM pg_settings WHERE name = 'default_toast_compression'"
            " AND 'lz4' = ANY(enumvals)")).first() is not None:
        op.execute("ALTER TABLE sample_blocks ALTER COLUMN times SET COMPRESSION lz4,"
                   " ALTER COLUMN vals SET COMPRESSION lz4")
    op.execute("ALTER TABLE sample_blocks ALTER COLUMN times SET STORAGE MAIN,"
               " ALTER COLUMN vals SET STORAGE MAIN")


def downgrade() -> None:
    if not _is_postgres():
        return
    bind = op.get_bind()
    bounds = bind.execute(sa.text(
        "SELECT min(series_id), max(series_id) FROM sample_blocks")).first()
    if bounds is not None and bounds[0] is not None:
        step = int(context.config.attributes.get("move_batch", MOVE_SERIES))
        for low in range(int(bounds[0]), int(bounds[1]) + 1, step):
            bind.execute(sa.text(_UNPACK), {"low": low, "high": low + step})
    op.drop_table("sample_blocks")
