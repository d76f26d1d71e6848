"""Logs: one table, keyset paging by id, substring search; a hypertable on TimescaleDB.

Revision ID: 0002
Revises: 0001
Create Date: 2026-06-05

``logs.id`` comes from a sequence: an identity column on PostgreSQL, an AUTOINCREMENT rowid
on SQLite (never reused, even after the newest rows are deleted). On PostgreSQL the primary
key is ``(id, time)`` because a hypertable's unique indexes must contain its time column; the
sequence alone keeps ids unique.

On PostgreSQL ``pg_trgm`` is created when the server offers it (inside a SAVEPOINT: a role
without the right to create it gets a warning and no trigram index, and search still works,
by scanning); a GIN trigram index on ``lower(message)`` then serves ``q``/``search``. The
extension is left in place on downgrade: other objects of the database may use it.

With TimescaleDB (installed by 0001, and not refused with ``-x timescaledb=false``), ``logs``
becomes a hypertable of 1-day chunks, compressed after 7 days (segmented by host, ordered by
id so that keyset paging skips whole compressed batches) and dropped after 14 days
(``LOGS_RETENTION``'s default). Both policies start at their own offsets, distinct from each
other and from those of ``metrics``, so that no two first runs collide.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

import sqlalchemy as sa
from alembic import context, op
from sqlalchemy.dialects import postgresql

revision: str = "0002"
down_revision: str | Sequence[str] | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

log = logging.getLogger("alembic.runtime.migration")

# Frozen copies of the types in miniobserv/server/storage/tables.py as of this revision.
Timestamp = sa.DateTime(timezone=True).with_variant(sa.BigInteger(), "sqlite")
Labels = sa.JSON().with_variant(postgresql.JSONB(), "postgresql")

CHUNK_INTERVAL = "1 day"
COMPRESS_AFTER = "7 days"
RETENTION = "14 days"
# 0001 starts the metrics policies 1 hour and 1 hour 17 minutes after migrating.
COMPRESSION_START = "1 hour 29 minutes"
RETENTION_START = "1 hour 43 minutes"
TRIGRAM_INDEX = "ix_logs_message_trgm"


def upgrade() -> None:
    is_postgres = _is_postgres()
    op.create_table("logs", *_columns(is_postgres), sqlite_autoincrement=True)
    op.create_index("ix_logs_host_id", "logs", ["host", "id"])
    op.create_index("ix_logs_time", "logs", ["time"])
    if is_postgres and _ensure_pg_trgm():
        op.create_index(TRIGRAM_INDEX, "logs",
                        [sa.func.lower(sa.text("message")).label("lower_message")],
                        postgresql_using="gin",
                        postgresql_ops={"lower_message": "gin_trgm_ops"})
    if _timescaledb_wanted() and _has_extension("timescaledb"):
        _make_hypertable()


def downgrade() -> None:
    if _is_postgres() and _is_hypertable("logs"):
        # Jobs first: a policy left behind would point at a table that no longer exists.
        op.execute("SELECT remove_retention_policy('logs', if_exists => true)")
        op.execute("SELECT remove_compression_policy('logs', if_exists => true)")
    op.drop_table("logs")  # and its indexes with it


def _columns(is_postgres: bool) -> list[sa.SchemaItem]:
    """The columns; ``id`` is an identity column on PostgreSQL, the rowid on SQLite."""
    if is_postgres:
        ident: list[sa.SchemaItem] = [
            sa.Column("id", sa.BigInteger(), sa.Identity(always=True), nullable=False),
            sa.PrimaryKeyConstraint("id", "time", name="pk_logs")]
    else:
        ident = [sa.Column("id", sa.Integer(), nullable=False),
                 sa.PrimaryKeyConstraint("id", name="pk_logs")]
    return [
        *ident,
        sa.Column("time", Timestamp, nullable=False),
        sa.Column("host", sa.Text(), nullable=False),
        sa.Column("level", sa.Text(), nullable=False),
        sa.Column("message", sa.Text(), nullable=False),
        sa.Column("path", sa.Text(), nullable=True),
        sa.Column("labels", Labels, nullable=False, server_default=sa.text("'{}'")),
    ]


def _is_postgres() -> bool:
    return not context.is_offline_mode() and op.get_bind().dialect.name == "postgresql"


def _timescaledb_wanted() -> bool:
    if not _is_postgres():
        return False
    flag = context.get_x_argument(as_dictionary=True).get("timescaledb")
    if flag is not None:
        return flag.lower() not in ("0", "false", "no", "off")
    return bool(context.config.attributes.get("timescaledb", True))


def _scalar(query: str, **params: Any) -> Any:
    return op.get_bind().execute(sa.text(query), params).scalar()


def _has_extension(name: str) -> bool:
    return _scalar("SELECT 1 FROM pg_extension WHERE extname = :n", n=name) is not None


def _ensure_pg_trgm() -> bool:
    """Create pg_trgm when the server offers it; True when it is usable here."""
    if _has_extension("pg_trgm"):
        return True
    if _scalar("SELECT 1 FROM pg_available_extensions WHERE name = 'pg_trgm'") is None:
        log.warning("pg_trgm is not available on this server: log search scans the table")
        return False
    bind = op.get_bind()
    try:
        with bind.begin_nested():  # a SAVEPOINT: a failure leaves the migration intact
            bind.execute(sa.text("CREATE EXTENSION IF NOT EXISTS pg_trgm"))
    except sa.exc.DBAPIError as err:
        log.warning("pg_trgm cannot be created (%s): log search scans the table",
                    str(err.orig).strip().splitlines()[0])
        return False
    return True


def _is_hypertable(table: str) -> bool:
    if not _has_extension("timescaledb"):
        return False
    return _scalar("SELECT 1 FROM timescaledb_information.hypertables WHERE hypertable_name = :t"
                   " AND hypertable_schema = current_schema()", t=table) is not None


def _make_hypertable() -> None:
    log.info("timescaledb: logs becomes a hypertable (1-day chunks, compression after %s, "
             "retention %s)", COMPRESS_AFTER, RETENTION)
    op.execute(f"""SELECT create_hypertable('logs', 'time',
        chunk_time_interval => INTERVAL '{CHUNK_INTERVAL}',
        create_default_indexes => false, migrate_data => true)""")
    op.execute("""ALTER TABLE logs SET (timescaledb.compress,
        timescaledb.compress_segmentby = 'host',
        timescaledb.compress_orderby = 'id DESC, time DESC')""")
    op.execute(f"""SELECT add_compression_policy('logs', INTERVAL '{COMPRESS_AFTER}',
        initial_start => now() + INTERVAL '{COMPRESSION_START}')""")
    op.execute(f"""SELECT add_retention_policy('logs', INTERVAL '{RETENTION}',
        initial_start => now() + INTERVAL '{RETENTION_START}')""")
