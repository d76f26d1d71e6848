"""Rollups: TimescaleDB continuous aggregates of metrics in 1-hour and 1-day buckets.

Revision ID: 0005
Revises: 0004
Create Date: 2026-06-12

Only when ``metrics`` is a hypertable (and TimescaleDB is not refused with
``-x timescaledb=false``): ``metrics_1h`` and ``metrics_1d`` hold, per bucket, host, name and
labels, what serves ``avg min max sum count last`` exactly: ``sum``, ``count``, ``min``,
``max``, and the newest point's time and value (``last_time``, ``last_value``; among points of
the same newest time the greatest value, as the raw query breaks ties). Buckets are
``time_bucket(width, time, TIMESTAMPTZ 'epoch')``, the same bucket starts as the raw query's
``date_bin(width, time, TIMESTAMPTZ 'epoch')`` (TimescaleDB's default origin, 2000-01-03, is a
whole number of days from the epoch too, but the origin is spelled out). Real-time
aggregation is on (``materialized_only = false``): buckets past the last refresh are
aggregated from ``metrics`` at query time, so answers include the newest points.

Refresh policies run every ``SCHEDULE`` over ``[now - REFRESH_START, now - REFRESH_END]``.
``REFRESH_START`` must stay below the raw retention (``METRICS_RETENTION``, 30 days by
default): TimescaleDB forgets the rollup of a region whose raw chunks were dropped when it
refreshes that region again, so a shorter window is what lets the rollups outlive the raw
data. A point arriving later than ``REFRESH_START`` after its time is not rolled up. The
rollups themselves are dropped after ``ROLLUP_RETENTION`` (400 days: a year and a month, so
month-long and year-over-year queries are served; the API allows rollup-served ranges up to
that). Existing data is rolled up once, at upgrade, outside the migration's transaction
(``refresh_continuous_aggregate`` refuses to run inside one); on a large store that takes a
while, and other workers wait for the migration lock meanwhile. Every step is idempotent, so
an upgrade interrupted after that commit can simply run again. Plain PostgreSQL and SQLite:
nothing to do.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

import sqlalchemy as sa
from alembic import context, op

revision: str = "0005"
down_revision: str | Sequence[str] | None = "0004"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

log = logging.getLogger("alembic.runtime.migration")

# view name -> bucket width; both read the raw table (not one another), so each bucket's
# sums add the same raw values as the raw query does.
ROLLUPS: dict[str, str] = {"metrics_1h": "1 hour", "metrics_1d": "1 day"}
REFRESH_START = "3 days"
REFRESH_END = "1 hour"
SCHEDULE: dict[str, str] = {"metrics_1h": "30 minutes", "metrics_1d": "1 hour"}
ROLLUP_RETENTION = "400 days"
# First runs at their own offsets, clear of 0001's and 0002's policies (1 h to 1 h 43 min).
REFRESH_STARTS: dict[str, str] = {"metrics_1h": "7 minutes", "metrics_1d": "37 minutes"}
RETENTION_STARTS: dict[str, str] = {"metrics_1h": "1 hour 53 minutes",
                                    "metrics_1d": "2 hours 7 minutes"}

_VIEW = """CREATE MATERIALIZED VIEW IF NOT EXISTS {view}
    WITH (timescaledb.continuous, timescaledb.materialized_only = false,
          timescaledb.create_group_indexes = false) AS
    SELECT time_bucket(INTERVAL '{width}', time, TIMESTAMPTZ 'epoch') AS bucket,
        host, name, labels,
        sum(value) AS sum, count(*) AS count, min(value) AS min, max(value) AS max,
        max(time) AS last_time,
        (array_agg(value ORDER BY time DESC, value DESC))[1] AS last_value
    FROM metrics
    GROUP BY bucket, host, name, labels
    WITH NO DATA"""


def upgrade() -> None:
    if not (_timescaledb_wanted() and _is_hypertable("metrics")):
        return
    for view, width in ROLLUPS.items():
        log.info("timescaledb: continuous aggregate %s (%s buckets, kept %s)", view, width,
                 ROLLUP_RETENTION)
        op.execute(_VIEW.format(view=view, width=width))
        op.execute(f"CREATE INDEX IF NOT EXISTS ix_{view}_host_name_bucket"
                   f" ON {view} (host, name, bucket)")
        op.execute(f"""SELECT add_continuous_aggregate_policy('{view}',
            start_offset => INTERVAL '{REFRESH_START}', end_offset => INTERVAL '{REFRESH_END}',
            schedule_interval => INTERVAL '{SCHEDULE[view]}',
            initial_start => now() + INTERVAL '{REFRESH_STARTS[view]}', if_not_exists => true)""")
        op.execute(f"""SELECT add_retention_policy('{view}', INTERVAL '{ROLLUP_RETENTION}',
            initial_start => now() + INTERVAL '{RETENTION_STARTS[view]}',
            if_not_exists => true)""")
    with op.get_context().autocommit_block():  # refresh_continuous_aggregate needs it
        for view in ROLLUPS:
            # Everything up to now: the refresh policy only ever looks REFRESH_START back.
            op.execute(f"CALL refresh_continuous_aggregate('{view}', NULL, now())")


def downgrade() -> None:
    if not _is_postgres() or not _has_extension("timescaledb"):
        return
    for view in reversed(list(ROLLUPS)):
        if _scalar("SELECT 1 FROM timescaledb_information.continuous_aggregates"
                   " WHERE view_name = :v AND view_schema = current_schema()", v=view) is None:
            continue
        # Jobs first: a policy left behind would point at a view that no longer exists.
        op.execute(f"SELECT remove_retention_policy('{view}', if_exists => true)")
        op.execute(f"SELECT remove_continuous_aggregate_policy('{view}', if_exists => true)")
        op.execute(f"DROP MATERIALIZED VIEW {view}")


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


def _is_hypertable(table: str) -> bool:
    if not _has_extension("timescaledb"):
        return False
    return _scalar("SELECT 1 FROM timescaledb_information.hypertables WHERE hypertable_name = :t"
                   " AND hypertable_schema = current_schema()", t=table) is not None
