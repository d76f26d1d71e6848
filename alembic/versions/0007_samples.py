"""Samples: narrow ``(series_id, time, value)`` rows replace the wide ``metrics`` table.

Revision ID: 0007
Revises: 0006
Create Date: 2026-06-21

Every point of ``metrics(time, host, name, value, labels)`` becomes a row of ``samples`` that
references its series (``series``, revision 0006) by id; ``metrics`` is then dropped. One
value per (series, time): the key ``pk_samples (series_id, time)`` (on SQLite the table is
``WITHOUT ROWID``, keyed by it, with INTEGER microsecond times); of old points sharing a
series and a time, the greatest value is kept (what the old ``last`` answered). On PostgreSQL
a BRIN index on ``time`` serves retention's range delete.

TimescaleDB (the extension is installed and not refused with ``-x timescaledb=false``):
``samples`` is a hypertable of 1-day chunks, compressed with ``segmentby = series_id,
orderby = time`` after 7 days, dropped after 30 (the server re-applies ``METRICS_RETENTION``
at start); chunks already older than 7 days are compressed by the upgrade. The continuous
aggregates of 0005 are rebuilt on samples as ``samples_1h`` and ``samples_1d``, grouped by
``(bucket, series_id)`` with the same columns, tie rule, policies and retention, and filled
once at the end, outside the migration's transaction (as 0005 does).

The data move runs in bounded statements: series missing for some points are created first
(0006's backfill, idempotent), then on PostgreSQL one ``INSERT ... SELECT`` per range of
``MOVE_PAGES`` heap pages of ``metrics`` (a TID range scan), or per chunk of a hypertable; on
SQLite ``MOVE_ROWS`` rows at a time by rowid, the labels canonicalised in Python. Servers of
the old version must be stopped meanwhile (a maintenance window: agents keep their batches,
see README). ``downgrade`` rebuilds ``metrics`` with its indexes, hypertable, policies and
rollups as revisions 0001, 0003 and 0005 made them, from ``samples JOIN series``, in the same
kind of bounded statements, then drops ``samples``.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator, Sequence
from types import ModuleType
from typing import Any

import sqlalchemy as sa
from alembic import context, op
from alembic.script import ScriptDirectory
from sqlalchemy.dialects import postgresql

revision: str = "0007"
down_revision: str | Sequence[str] | None = "0006"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# Frozen copies of the types in miniobserv/server/storage/tables.py as of this revision.
SeriesId = sa.BigInteger().with_variant(sa.Integer(), "sqlite")
Timestamp = sa.DateTime(timezone=True).with_variant(sa.BigInteger(), "sqlite")
Labels = sa.JSON().with_variant(postgresql.JSONB(), "postgresql")

log = logging.getLogger("alembic.runtime.migration")

MOVE_PAGES = 2000  # heap pages of the source table per statement (PostgreSQL, plain tables)
MOVE_ROWS = 20_000  # rows per statement (SQLite)
MOVE_SERIES = 500  # series per statement of the SQLite downgrade
# ``config.attributes["move_batch"]`` replaces all three (tests move in many small steps).

CHUNK_INTERVAL = "1 day"
COMPRESS_AFTER = "7 days"
RETENTION = "30 days"
COMPRESSION_START = "1 hour"
RETENTION_START = "1 hour 17 minutes"
# The rollups, as 0005 made them for metrics: width, refresh schedule, first refresh and
# first retention run (their own offsets, clear of every other policy's first run).
ROLLUPS: dict[str, tuple[str, str, str, str]] = {
    "samples_1h": ("1 hour", "30 minutes", "7 minutes", "1 hour 53 minutes"),
    "samples_1d": ("1 day", "1 hour", "37 minutes", "2 hours 7 minutes"),
}
REFRESH_START = "3 days"
REFRESH_END = "1 hour"
ROLLUP_RETENTION = "400 days"

_ROLLUP = """CREATE MATERIALIZED VIEW IF NOT EXISTS {view}
    WITH (timescaledb.continuous, timescaledb.materialized_only = false,
          timescaledb.create_group_indexes = false) AS
    SELECT time_bucket(INTERVAL '{width}', time, TIMESTAMPTZ 'epoch') AS bucket, series_id,
        sum(value) AS sum, count(*) AS count, min(value) AS min, max(value) AS max,
        max(time) AS last_time,
        (array_agg(value ORDER BY time DESC, value DESC))[1] AS last_value
    FROM samples GROUP BY bucket, series_id WITH NO DATA"""
# A rollup's refresh and retention policies (if_not_exists: an interrupted upgrade reruns).
_ROLLUP_POLICIES = """SELECT
    add_continuous_aggregate_policy('{view}', start_offset => INTERVAL '{start}',
        end_offset => INTERVAL '{end}', schedule_interval => INTERVAL '{schedule}',
        initial_start => now() + INTERVAL '{refresh_first}', if_not_exists => true),
    add_retention_policy('{view}', INTERVAL '{kept}',
        initial_start => now() + INTERVAL '{retention_first}', if_not_exists => true)"""
# Points of one series and time fold into one sample: the greatest value.
_MOVE_UP_PG = """INSERT INTO samples (series_id, time, value)
    SELECT s.id, m.time, max(m.value) FROM metrics AS m
    JOIN series AS s ON s.host = m.host AND s.name = m.name AND s.labels = m.labels
    WHERE {window} GROUP BY s.id, m.time
    ON CONFLICT (series_id, time) DO UPDATE SET value = greatest(samples.value, excluded.value)"""
_MOVE_UP_SQLITE = """INSERT INTO samples (series_id, time, value) VALUES (?, ?, ?)
    ON CONFLICT (series_id, time) DO UPDATE SET value = max(value, excluded.value)"""
_MOVE_DOWN = """INSERT INTO metrics (time, host, name, value, labels)
    SELECT x.time, s.host, s.name, x.value, s.labels FROM samples AS x
    JOIN series AS s ON s.id = x.series_id WHERE {window}"""
_TID_WINDOW = "{alias}.ctid >= CAST(:lo AS tid) AND {alias}.ctid < CAST(:hi AS tid)"
_TIME_WINDOW = "{alias}.time >= :lo AND {alias}.time < :hi"

_canonical = json.JSONEncoder(sort_keys=True, separators=(",", ":")).encode


def upgrade() -> None:
    timescale = _is_postgres() and _timescaledb_wanted() and _has_extension("timescaledb")
    if _is_postgres():  # whatever is wanted now, what depends on metrics goes with it
        _revision("0005").downgrade()  # the rollups of metrics (policies first)
        if _is_hypertable("metrics"):
            _remove_policies("metrics")
    _create_samples()
    if timescale:
        _make_samples_hypertable()
    _revision("0006")._backfill()  # a series for every point (idempotent upserts)
    if _is_postgres():
        _move_postgres(_MOVE_UP_PG, "metrics", "m")
    else:
        _move_up_sqlite()
    op.drop_index("ix_metrics_time", table_name="metrics")
    op.drop_index("ix_metrics_host_name_time", table_name="metrics")
    op.drop_table("metrics")
    if timescale:
        _compress_old_chunks()
        _make_rollups()


def downgrade() -> None:
    timescale = _is_postgres() and _is_hypertable("samples")
    if timescale:
        for view in reversed(list(ROLLUPS)):
            _drop_rollup(view)
        _remove_policies("samples")
    op.create_table(
        "metrics",
        sa.Column("time", Timestamp, nullable=False),
        sa.Column("host", sa.Text(), nullable=False), sa.Column("name", sa.Text(), nullable=False),
        sa.Column("value", sa.Double(), nullable=False),
        sa.Column("labels", Labels, nullable=False, server_default=sa.text("'{}'")))
    op.create_index("ix_metrics_host_name_time", "metrics", ["host", "name", "time"])
    op.create_index("ix_metrics_time", "metrics", ["time"], postgresql_using="brin")
    if timescale:
        _revision("0001")._make_hypertable()
    if _is_postgres():
        _move_postgres(_MOVE_DOWN, "samples", "x")
    else:
        _move_down_sqlite()
    op.drop_index("ix_samples_time", table_name="samples", if_exists=True)
    op.drop_table("samples")
    if timescale:
        _revision("0005").upgrade()  # the rollups of metrics, filled outside the transaction


def _create_samples() -> None:
    op.create_table(
        "samples",
        sa.Column("series_id", SeriesId, nullable=False),
        sa.Column("time", Timestamp, nullable=False),
        sa.Column("value", sa.Double(), nullable=False),
        sa.PrimaryKeyConstraint("series_id", "time", name="pk_samples"),
        sqlite_with_rowid=False,
    )
    if _is_postgres():
        op.create_index("ix_samples_time", "samples", ["time"], postgresql_using="brin")


def _move_postgres(statement: str, source: str, alias: str) -> None:
    """Run ``statement`` once per bounded window of ``source``: per chunk of a hypertable,
    else per ``MOVE_PAGES`` heap pages (a TID range scan reads just those)."""
    bind = op.get_bind()
    if _is_hypertable(source):
        template, windows = _TIME_WINDOW, _chunk_ranges(source)
    else:
        template, windows = _TID_WINDOW, _page_ranges(source)
    move = sa.text(statement.format(window=template.format(alias=alias)))
    moved = 0
    for lo, hi in windows:
        moved += bind.execute(move, {"lo": lo, "hi": hi}).rowcount
    log.info("moved %d rows from %s", moved, source)


def _page_ranges(table: str) -> Iterator[tuple[str, str]]:
    pages = int(_scalar("SELECT pg_relation_size(CAST(:t AS regclass))"
                        " / current_setting('block_size')::bigint", t=table))
    step = _batch(MOVE_PAGES)
    for first in range(0, pages, step):
        yield f"({first},0)", f"({first + step},0)"


def _chunk_ranges(table: str) -> list[tuple[Any, Any]]:
    rows = op.get_bind().execute(sa.text(
        "SELECT range_start, range_end FROM timescaledb_information.chunks"
        " WHERE hypertable_name = :t AND hypertable_schema = current_schema()"
        " ORDER BY range_start"), {"t": table})
    return [(start, end) for start, end in rows]


def _move_up_sqlite() -> None:
    """``MOVE_ROWS`` metrics rows at a time by rowid; labels spelled as the sender ordered
    them are canonicalised here, as 0006 and ingest spell ``labels_text``."""
    bind = op.get_bind()
    ids = {(host, name, text): sid for sid, host, name, text in bind.exec_driver_sql(
        "SELECT id, host, name, labels_text FROM series")}
    spellings: dict[str, str] = {}
    last = 0
    while True:
        rows = bind.exec_driver_sql(
            "SELECT rowid, time, host, name, value, labels FROM metrics WHERE rowid > ?"
            " ORDER BY rowid LIMIT ?", (last, _batch(MOVE_ROWS))).fetchall()
        if not rows:
            return
        last = rows[-1][0]
        samples = []
        for _, time, host, name, value, labels in rows:
            text = spellings.get(labels)
            if text is None:
                text = spellings[labels] = _canonical(dict(json.loads(labels or "{}")))
            samples.append((ids[(host, name, text)], time, value))
        bind.exec_driver_sql(_MOVE_UP_SQLITE, samples)


def _move_down_sqlite() -> None:
    bind = op.get_bind()
    move = sa.text(_MOVE_DOWN.format(window="x.series_id >= :lo AND x.series_id < :hi"))
    top, step = int(_scalar("SELECT coalesce(max(id), 0) FROM series")), _batch(MOVE_SERIES)
    for first in range(0, top + 1, step):
        bind.execute(move, {"lo": first, "hi": first + step})


# --- TimescaleDB -----------------------------------------------------------------------------

def _make_samples_hypertable() -> None:
    log.info("timescaledb: samples becomes a hypertable (1-day chunks, compression after "
             "%s, retention %s)", COMPRESS_AFTER, RETENTION)
    op.execute(f"""SELECT create_hypertable('samples', 'time',
        chunk_time_interval => INTERVAL '{CHUNK_INTERVAL}', create_default_indexes => false)""")
    op.execute("""ALTER TABLE samples SET (timescaledb.compress,
        timescaledb.compress_segmentby = 'series_id', timescaledb.compress_orderby = 'time')""")
    op.execute(f"""SELECT add_compression_policy('samples', INTERVAL '{COMPRESS_AFTER}',
        initial_start => now() + INTERVAL '{COMPRESSION_START}')""")
    op.execute(f"""SELECT add_retention_policy('samples', INTERVAL '{RETENTION}',
        initial_start => now() + INTERVAL '{RETENTION_START}')""")


def _compress_old_chunks() -> None:
    """What the compression policy would compress at its first run, now: the moved data
    would otherwise take its uncompressed size on disk until then."""
    count = _scalar(f"""SELECT count(compress_chunk(c, if_not_compressed => true))
        FROM show_chunks('samples', older_than => INTERVAL '{COMPRESS_AFTER}') AS c""")
    log.info("timescaledb: compressed %s chunks of samples", count)


def _make_rollups() -> None:
    for view, (width, schedule, refresh_first, retention_first) in ROLLUPS.items():
        log.info("timescaledb: continuous aggregate %s (%s buckets, kept %s)", view, width,
                 ROLLUP_RETENTION)
        op.execute(_ROLLUP.format(view=view, width=width))
        op.execute(f"CREATE INDEX IF NOT EXISTS ix_{view}_series_id_bucket"
                   f" ON {view} (series_id, bucket)")
        op.execute(_ROLLUP_POLICIES.format(
            view=view, start=REFRESH_START, end=REFRESH_END, schedule=schedule,
            refresh_first=refresh_first, kept=ROLLUP_RETENTION, retention_first=retention_first))
    with op.get_context().autocommit_block():  # refresh_continuous_aggregate needs it
        for view in ROLLUPS:
            op.execute(f"CALL refresh_continuous_aggregate('{view}', NULL, now())")


def _drop_rollup(view: str) -> None:
    """Its jobs first: a policy left behind would point at a view that no longer exists."""
    op.get_bind().execute(sa.text(
        "SELECT remove_retention_policy(c.view_name::text::regclass, if_exists => true),"
        " remove_continuous_aggregate_policy(c.view_name::text::regclass, if_exists => true)"
        " FROM timescaledb_information.continuous_aggregates AS c"
        " WHERE c.view_name = :v AND c.view_schema = current_schema()"), {"v": view})
    op.execute(f"DROP MATERIALIZED VIEW IF EXISTS {view}")


def _remove_policies(table: str) -> None:
    """Jobs first: a policy left behind would point at a table that no longer exists."""
    op.execute(f"SELECT remove_retention_policy('{table}', if_exists => true),"
               f" remove_compression_policy('{table}', if_exists => true)")


# --- helpers ---------------------------------------------------------------------------------

def _revision(name: str) -> ModuleType:
    """An earlier revision's module: its frozen steps are reused, not copied."""
    script = ScriptDirectory.from_config(context.config).get_revision(name)
    assert script is not None
    return script.module


def _batch(default: int) -> int:
    return int(context.config.attributes.get("move_batch", default))


def _is_postgres() -> bool:
    return not context.is_offline_mode() and op.get_bind().dialect.name == "postgresql"


def _timescaledb_wanted() -> bool:
    return bool(_revision("0001")._timescaledb_wanted())


def _scalar(query: str, **params: Any) -> Any:
    return op.get_bind().execute(sa.text(query), params).scalar()


def _has_extension(name: str) -> bool:
    return _scalar("SELECT 1 FROM pg_extension WHERE extname = :n", n=name) is not None


def _is_hypertable(table: str) -> bool:
    return _is_postgres() and bool(_revision("0001")._is_hypertable(table))
