"""Series: one row per distinct (host, name, labels), the per-host cardinality limit's count.

Revision ID: 0006
Revises: 0005
Create Date: 2026-06-19

``series`` gives every distinct series a small integer ``id`` (the groundwork of narrow
samples keyed by series id), its ``host``, ``name``, ``labels_text`` (the labels as canonical
JSON text: sorted keys, compact, the spelling of ``fleet_common.canonical_labels``) and
``labels`` (jsonb on PostgreSQL, JSON text on SQLite), and when it was first and last seen.
The unique key ``(host, name, labels_text)`` is also the index that counts a host's series
(``MAX_SERIES_PER_HOST``) without reading ``metrics``, and an index on ``last_seen`` serves
the maintenance job's removal of series not seen within ``METRICS_RETENTION``.

The upgrade backfills ``series`` from ``metrics`` with ONE scan of it (``SELECT host, name,
labels, min(time), max(time) ... GROUP BY``); the labels are canonicalised in Python so that
every store and the ingest path spell them alike (PostgreSQL's ``jsonb::text`` is neither
compact nor in sorted key order). On a large store this takes a while, once. ``metrics`` itself
is unchanged. The downgrade drops the table.
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Sequence
from typing import Any

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0006"
down_revision: str | Sequence[str] | None = "0005"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# Frozen copies of the types in miniobserv/server/storage/tables.py as of this revision.
Timestamp = sa.DateTime(timezone=True).with_variant(sa.BigInteger(), "sqlite")
Labels = sa.JSON().with_variant(postgresql.JSONB(), "postgresql")
SeriesId = sa.BigInteger().with_variant(sa.Integer(), "sqlite")
BACKFILL_CHUNK = 5000  # series inserted per statement during the backfill

_encode = json.JSONEncoder(sort_keys=True, separators=(",", ":")).encode
_GROUPED = "SELECT host, name, labels, min(time), max(time) FROM metrics GROUP BY host, name, labels"


def upgrade() -> None:
    op.create_table(
        "series",
        sa.Column("id", SeriesId, sa.Identity(), nullable=False),
        sa.Column("host", sa.Text(), nullable=False),
        sa.Column("name", sa.Text(), nullable=False),
        sa.Column("labels_text", sa.Text(), nullable=False),
        sa.Column("labels", Labels, nullable=False, server_default=sa.text("'{}'")),
        sa.Column("first_seen", Timestamp, nullable=False),
        sa.Column("last_seen", Timestamp, nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_series"),
        sa.UniqueConstraint("host", "name", "labels_text", name="uq_series_host_name_labels_text"),
        sqlite_autoincrement=True,
    )
    op.create_index("ix_series_last_seen", "series", ["last_seen"])
    _backfill()


def downgrade() -> None:
    op.drop_index("ix_series_last_seen", table_name="series")
    op.drop_table("series")


def _backfill() -> None:
    bind = op.get_bind()
    postgres = bind.dialect.name == "postgresql"
    labels = "CAST(CAST(:text AS text) AS jsonb)" if postgres else ":text"
    insert = sa.text(
        "INSERT INTO series (host, name, labels_text, labels, first_seen, last_seen)"
        f" VALUES (:host, :name, :text, {labels},"
        " :first, :last) ON CONFLICT (host, name, labels_text) DO UPDATE SET"
        f" first_seen = {'least' if postgres else 'min'}(series.first_seen, excluded.first_seen),"
        f" last_seen = {'greatest' if postgres else 'max'}(series.last_seen, excluded.last_seen)")
    chunk: list[dict[str, Any]] = []
    for row in _grouped(bind):
        chunk.append(row)
        if len(chunk) >= BACKFILL_CHUNK:
            bind.execute(insert, chunk)
            chunk = []
    if chunk:
        bind.execute(insert, chunk)


def _grouped(bind: sa.Connection) -> Iterator[dict[str, Any]]:
    """One row per (host, name, labels spelling) of ``metrics``, labels canonicalised.

    Several spellings of one label set (SQLite keeps the sender's key order) fold into one
    series through the upsert's ``min``/``max``.
    """
    result = bind.execute(sa.text(_GROUPED).execution_options(stream_results=True))
    for host, name, labels, first, last in result:
        parsed = json.loads(labels) if isinstance(labels, str) else labels
        yield {"host": host, "name": name, "text": _encode(dict(parsed or {})),
               "first": first, "last": last}
