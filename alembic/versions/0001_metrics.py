"""Metrics, batch-id dedup and hosts; TimescaleDB hypertable and policies when available.

Revision ID: 0001
Revises:
Create Date: 2026-05-10

On PostgreSQL, when the server offers the ``timescaledb`` extension, it is created (inside a
SAVEPOINT: it fails unless the library is in ``shared_preload_libraries``, and then the
migration carries on as plain PostgreSQL, saying why). With it, ``metrics`` becomes a
hypertable of 1-day chunks, compressed after 7 days, dropped after 30 days (the server
re-applies ``METRICS_RETENTION`` at start). Each policy has its own ``initial_start`` so their
first runs do not collide and deadlock. ``-x timescaledb=false`` (or the ``timescaledb``
attribute set by ``miniobserv.server.storage.migrate``) leaves TimescaleDB alone.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

import sqlalchemy as sa
from alembic import context, op
from sqlalchemy.dialects import postgresql

revision: str = "0001"
down_revision: str | Sequence[str] | None = None
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

log = logging.getLogger("alembic.runtime.migration")

# Frozen copies of the types in miniobserv/server/storage/tables.py as of this revision.
Timestamp = sa.DateTime(timezone=True).with_variant(sa.BigInteger(), "sqlite")
Labels = sa.JSON().with_variant(postgresql.JSONB(), "postgresql")

CHUNK_INTERVAL = "1 day"
COMPRESS_AFTER = "7 days"
RETENTION = "30 days"
COMPRESSION_START = "1 hour"
RETENTION_START = "1 hour 17 minutes"


def upgrade() -> None:
    op.create_table(
        "metrics",
        sa.Column("time", Timestamp, nullable=False),
        sa.Column("host", sa.Text(), nullable=False),
        sa.Column("name", sa.Text(), nullable=False),
        sa.Column("value", sa.Double(), nullable=False),
        sa.Column("labels", Labels, nullable=False, server_default=sa.text("'{}'")),
    )
    op.create_index("ix_metrics_host_name_time", "metrics", ["host", "name", "time"])
    op.create_table(
        "ingested_batches",
        sa.Column("batch_id", sa.Uuid(), nullable=False),
        sa.Column("kind", sa.Text(), nullable=False),
        sa.Column("received_at", Timestamp, nullable=False),
        sa.PrimaryKeyConstraint("batch_id", name="pk_ingested_batches"),
    )
    op.create_index("ix_ingested_batches_received_at", "ingested_batches", ["received_at"])
    op.create_table(
        "hosts",
        sa.Column("host", sa.Text(), nullable=False),
        sa.Column("last_seen", Timestamp, nullable=False),
        sa.PrimaryKeyConstraint("host", name="pk_hosts"),
    )
    if _timescaledb_wanted() and _ensure_timescaledb():
        _make_hypertable()


def downgrade() -> None:
    if _is_postgres() and _is_hypertable("metrics"):
        # Jobs first: a policy left behind would point at a table that no longer exists.
        op.execute("SELECT remove_retention_policy('metrics', if_exists => true)")
        op.execute("SELECT remove_compression_policy('metrics', if_exists => true)")
    op.drop_table("hosts")
    op.drop_index("ix_ingested_batches_received_at", table_name="ingested_batches")
    op.drop_table("ingested_batches")
    op.drop_index("ix_metrics_host_name_time", table_name="metrics")
    op.drop_table("metrics")


def _is_postgres() -> bool:
    return not context.is_offline_mode() and op.get_bind().dialect.name == "postgresql"


def _timescaledb_wanted() -> bool:
    if not _is_postgres():
        return False
    flag = context.get_x_argument(as_dictionary=True).get("timescaledb")
    if flag is not None:
        return flag.lower() not in ("0", "false", "no", "off")
    return bool(context.config.attributes.get("timescaledb", True))


def _ensure_timescaledb() -> bool:
    """Create the extension when the server can load it; True when it is usable here."""
    bind = op.get_bind()
    if _scalar("SELECT 1 FROM pg_extension WHERE extname = 'timescaledb'") is not None:
        return True
    if _scalar("SELECT 1 FROM pg_available_extensions WHERE name = 'timescaledb'") is None:
        log.info("timescaledb is not available on this server: plain PostgreSQL tables")
        return False
    # Unless the library is in shared_preload_libraries, CREATE EXTENSION fails with FATAL,
    # ending the session: check first. A preloaded library has registered its settings (and
    # pg_settings shows them to every role, unlike shared_preload_libraries itself).
    if _scalar("SELECT 1 FROM pg_settings WHERE name LIKE 'timescaledb.%' LIMIT 1") is None:
        log.warning("timescaledb is installed but cannot be used (it is not in "
                    "shared_preload_libraries); plain PostgreSQL tables")
        return False
    try:
        with bind.begin_nested():  # a SAVEPOINT: a failure leaves the migration intact
            bind.execute(sa.text("CREATE EXTENSION IF NOT EXISTS timescaledb"))
    except sa.exc.DBAPIError as err:
        log.warning("timescaledb is installed but cannot be used (%s); plain PostgreSQL tables",
                    str(err.orig).strip().splitlines()[0])
        return False
    return True


def _scalar(query: str) -> Any:
    return op.get_bind().execute(sa.text(query)).scalar()


def _is_hypertable(table: str) -> bool:
    bind = op.get_bind()
    if bind.execute(sa.text(
            "SELECT 1 FROM pg_extension WHERE extname = 'timescaledb'")).first() is None:
        return False
    return bind.execute(sa.text(
        "SELECT 1 FROM timescaledb_information.hypertables WHERE hypertable_name = :t"
        " AND hypertable_schema = current_schema()"), {"t": table}).first() is not None


def _make_hypertable() -> None:
    log.info("timescaledb: metrics becomes a hypertable (1-day chunks, compression after "
             "%s, retention %s)", COMPRESS_AFTER, RETENTION)
    op.execute(f"""SELECT create_hypertable('metrics', 'time',
        chunk_time_interval => INTERVAL '{CHUNK_INTERVAL}',
        create_default_indexes => false, migrate_data => true)""")
    op.execute("""ALTER TABLE metrics SET (timescaledb.compress,
        timescaledb.compress_segmentby = 'host, name',
        timescaledb.compress_orderby = 'time DESC')""")
    op.execute(f"""SELECT add_compression_policy('metrics', INTERVAL '{COMPRESS_AFTER}',
        initial_start => now() + INTERVAL '{COMPRESSION_START}')""")
    op.execute(f"""SELECT add_retention_policy('metrics', INTERVAL '{RETENTION}',
        initial_start => now() + INTERVAL '{RETENTION_START}')""")
