"""Packed samples on plain PostgreSQL: ``sample_blocks`` (revision 0009).

A narrow row of ``samples`` costs about 89 bytes a point (a 24-byte tuple header, the row, a
line pointer, its key in the primary-key b-tree). The maintenance job therefore moves every
30-minute window of a series older than ``METRICS_PACK_AFTER`` into ONE row of
``sample_blocks (series_id, start, times timestamptz[], vals float8[])``: ``start`` is the
window's epoch-aligned beginning, ``times`` the points' times and ``vals`` their values, both
in time order. That is 16 bytes a point plus about 125 bytes a block, less where TOAST
compresses (lz4 where the server has it; only rows over about 2 KB, e.g. 180 points at 10 s
steps; kept inline, ``STORAGE MAIN``). Whole times rather than int4 microsecond offsets
from ``start`` (12 bytes a point): the ``start + offset * interval`` of every point cost
~60 ns, 1.39x narrow rows' time for a one-series day against 1.10x (EXPLAIN ANALYZE medians,
same run), for 4 bytes a point when the target is 60.

Late points of a window already packed go to ``samples`` as usual; a read gives such a narrow
row precedence over the block's point of the same time (a later write replaces a value, as
on every store), and the next packing merges them into the block. Reads stay cheap: a block
is checked once for narrow rows in its window (one probe of the narrow key); only a block
that has some checks its points one by one. The two kinds of block are two branches of the
UNION: carrying a per-block "has narrow rows" flag through the unnest instead made a
one-series day (8640 points) 2.3x slower than narrow rows (measured 7.4 ms against 3.1;
the Result node above the ProjectSet took the time), the branches 1.1-1.5x.

Only on plain PostgreSQL: a TimescaleDB hypertable compresses its own chunks, so there the
table stays empty and is never read (:func:`uses_blocks`). Every statement here is constant
text; windows, ids and bounds are bound parameters.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from datetime import datetime, timedelta
from typing import Any

import psycopg
from psycopg import sql

from miniobserv.server.storage.postgres.db import is_hypertable

# A block's window: ~180 points at 10 s steps, a row TOAST compresses and keeps inline;
# late points, merges and retention work by it.
BLOCK = timedelta(minutes=30)
_WIDTH = "INTERVAL '30 minutes'"
PACK_SERIES = 200  # series per packing statement (one transaction each)
# pg_try_advisory_xact_lock key of a packing transaction ("miniopak"): two packers at once
# (a former leader still finishing its batch) would each merge the blocks they read before
# the other's commit, and the second write would drop the first one's points.
PACK_LOCK_KEY = 0x6D696E696F70616B
EPOCH_SQL = "TIMESTAMPTZ 'epoch'"

log = logging.getLogger(__name__)


def uses_blocks(conn: psycopg.Connection[Any]) -> bool:
    """True when this database packs samples: ``sample_blocks`` exists and ``samples`` is
    not a TimescaleDB hypertable."""
    row = conn.execute("SELECT to_regclass('sample_blocks') IS NOT NULL").fetchone()
    return bool(row and row[0]) and not is_hypertable(conn, "samples")


def pack_horizon(before: datetime) -> datetime:
    """The start of the block holding ``before``: windows wholly older than it are packed."""
    epoch = datetime(1970, 1, 1, tzinfo=before.tzinfo)
    return before - (before - epoch) % BLOCK


# --- reads ----------------------------------------------------------------------------------

# The points of series ``{series}`` with ``{low_op} {low}`` and ``{high_op} {high}`` on time:
# its narrow rows, the points of its blocks without narrow rows in their window, and those of
# its other blocks that no narrow row of the same time replaces.
# Unnesting in the select list (ProjectSet): 2-3.5x faster than ``LATERAL unnest(times,
# vals)`` with the window on its columns (one-series day: 3.3-4.6 ms against 8.3-11.9).
_POINTS = """(SELECT time, value FROM samples
        WHERE series_id = {series} AND time {low_op} {low} AND time {high_op} {high}
    UNION ALL
    SELECT p.time, p.value FROM ({blocks} AND NOT {narrow}) AS p
    WHERE p.time {low_op} {low} AND p.time {high_op} {high}
    UNION ALL
    SELECT p.time, p.value FROM ({blocks} AND {narrow}) AS p
    WHERE p.time {low_op} {low} AND p.time {high_op} {high}
        AND NOT EXISTS (SELECT 1 FROM samples AS n
            WHERE n.series_id = {series} AND n.time = p.time))"""
# The points of the blocks of series {series} that may hold points of the window.
_BLOCK_POINTS = """SELECT unnest(b.times) AS time, unnest(b.vals) AS value
    FROM sample_blocks AS b
    WHERE b.series_id = {series} AND b.start > {low} - {width} AND b.start <= {high}"""
# Whether block ``b`` has narrow rows in its window (late points: checked one by one).
_NARROW = """EXISTS (SELECT 1 FROM samples AS n WHERE n.series_id = b.series_id
        AND n.time >= b.start AND n.time < b.start + {width})"""
_OPERATORS = {">=": sql.SQL(">="), "<=": sql.SQL("<="), "<": sql.SQL("<")}


def points(series: sql.Composable, low: str, high: str, high_op: str = "<=") -> sql.Composed:
    """A subquery ``(time, value)`` of the narrow and packed points of ``series`` (a column
    expression such as ``s.id``) with ``%(low)s <= time`` and ``time <= %(high)s`` (or
    ``<`` with ``high_op``); ``low`` and ``high`` name bound parameters."""
    bounds = {"series": series, "low": sql.Placeholder(low), "high": sql.Placeholder(high),
              "width": sql.SQL(_WIDTH)}
    return sql.SQL(_POINTS).format(blocks=sql.SQL(_BLOCK_POINTS).format(**bounds),
                                   narrow=sql.SQL(_NARROW).format(width=sql.SQL(_WIDTH)),
                                   low_op=_OPERATORS[">="], high_op=_OPERATORS[high_op],
                                   **bounds)


# The newest point of series ``s.id`` since %(since)s: the narrow one or its newest block's
# last (the narrow one on a tie: it replaced the block's).
LATEST_POINT = f"""(SELECT time, value FROM (
        (SELECT time, value, 0 AS source FROM samples
            WHERE series_id = s.id AND time >= %(since)s ORDER BY time DESC LIMIT 1)
        UNION ALL
        (SELECT b.times[cardinality(b.times)], b.vals[cardinality(b.vals)], 1
            FROM sample_blocks AS b
            WHERE b.series_id = s.id AND b.start > %(since)s - {_WIDTH}
            ORDER BY b.start DESC LIMIT 1)) AS newest (time, value, source)
    WHERE time >= %(since)s ORDER BY time DESC, source LIMIT 1)"""


# --- packing --------------------------------------------------------------------------------

# One transaction: the narrow rows of the series ``%(ids)s`` older than ``%(horizon)s`` (a
# block boundary) leave ``samples``; with the points of blocks they fall into (a narrow row
# replaces the block's point of the same time) they become one block per window. Answers the
# number of narrow rows packed.
PACK = f"""WITH moved AS (DELETE FROM samples
        WHERE series_id = ANY(%(ids)s) AND time < %(horizon)s
        RETURNING series_id, time, value),
    cut AS (SELECT series_id, date_bin({_WIDTH}, time, {EPOCH_SQL}) AS start, time, value
        FROM moved),
    merged AS (SELECT DISTINCT ON (series_id, start, time) series_id, start, time, value
        FROM (SELECT series_id, start, time, value, 0 AS source FROM cut
            UNION ALL
            SELECT b.series_id, b.start, u.t, u.v, 1
            FROM sample_blocks AS b CROSS JOIN LATERAL unnest(b.times, b.vals) AS u(t, v)
            WHERE (b.series_id, b.start) IN (SELECT DISTINCT series_id, start FROM cut)
        ) AS together ORDER BY series_id, start, time, source),
    written AS (INSERT INTO sample_blocks (series_id, start, times, vals)
    SELECT series_id, start, array_agg(time ORDER BY time), array_agg(value ORDER BY time)
    FROM merged GROUP BY series_id, start
    ON CONFLICT (series_id, start) DO UPDATE SET times = excluded.times,
        vals = excluded.vals RETURNING 1)
    SELECT count(*) FROM moved"""
# The next series to pack, in id order, after %(after)s.
_NEXT_SERIES = """SELECT id FROM series WHERE id > %(after)s ORDER BY id LIMIT %(limit)s"""
# The oldest narrow time of the series %(ids)s (one probe of the key per series).
_OLDEST = """SELECT min(x.time) FROM unnest(%(ids)s::bigint[]) AS i(id)
    CROSS JOIN LATERAL (SELECT time FROM samples WHERE series_id = i.id
        ORDER BY time LIMIT 1) AS x"""
# At most this much time of a batch of series per statement: ~430 k rows at 10 s steps, so
# a backlog (the first packing after the upgrade) is moved in bounded transactions too.
PACK_SPAN = timedelta(hours=6)


def pack(conn: psycopg.Connection[Any], before: datetime, should_stop: Callable[[], bool],
         batch: int = PACK_SERIES) -> int:
    """Pack every window ending by ``before``'s block into blocks, ``batch`` series per
    transaction, until done, ``should_stop()``, or another process is packing (its
    transaction holds PACK_LOCK_KEY); the narrow rows packed. ``conn`` is in autocommit
    mode."""
    horizon = pack_horizon(before)
    packed, after = 0, -(2**63)
    while not should_stop():
        ids = [row[0] for row in conn.execute(_NEXT_SERIES, {"after": after,
                                                             "limit": batch}).fetchall()]
        if not ids:
            break
        after = ids[-1]
        row = conn.execute(_OLDEST, {"ids": ids}).fetchone()
        if row is None or row[0] is None or row[0] >= horizon:
            continue  # nothing of theirs to pack
        until = pack_horizon(row[0])
        while until < horizon:
            until = min(horizon, until + PACK_SPAN)
            count = _pack_until(conn, ids, until)
            if count is None:
                log.info("packing: another process packs now; leaving it the rest")
                return packed
            packed += count
            if should_stop():
                return packed
    return packed


def _pack_until(conn: psycopg.Connection[Any], ids: list[int], until: datetime) -> int | None:
    """One transaction: PACK the narrow rows of ``ids`` before ``until``; the rows packed,
    or None when another process holds PACK_LOCK_KEY (nothing done)."""
    with conn.transaction():
        # Its own statement first: PACK's snapshot then follows the other's commit.
        locked = conn.execute("SELECT pg_try_advisory_xact_lock(%s)",
                              (PACK_LOCK_KEY,)).fetchone()
        if not (locked and locked[0]):
            return None
        row = conn.execute(PACK, {"ids": ids, "horizon": until}).fetchone()
    return int(row[0]) if row else 0


# Retention: whole blocks whose window ended before the bound.
EXPIRED_BLOCKS = f"start <= {{}} - {_WIDTH}"
