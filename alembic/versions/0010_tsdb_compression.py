"""TimescaleDB: samples in one batch per series and chunk, LZ4-packed; samples_1h compressed.

Revision ID: 0010
Revises: 0009
Create Date: 2026-12-04

Only on TimescaleDB (``samples`` a hypertable); elsewhere nothing changes. 0007's compression
policy on ``samples`` is replaced by the job :data:`JOB` (procedure ``compress_samples``,
same schedule, same ``compress_after``), which compresses each chunk older than that in its
own transaction with:

* ``timescaledb.compression_batch_size_limit`` = :data:`BATCH_SIZE_LIMIT` (set locally: the
  setting is TimescaleDB's per session, never persisted, so a policy cannot carry it). A
  day's chunk of a 10 s series (8640 points) becomes one compressed batch instead of nine of
  at most 1000: each batch carries a row, an index entry and each algorithm's header
  (the 10 M-point fleet workload, 1111 points per series: 9000 batches fewer, 2.44 MB or
  0.24 B per point less). The price: the newest point of a series in a compressed chunk
  (``/metrics/latest`` with a ``within`` reaching past 7 days) decompresses its whole
  batch (EXPLAIN ANALYZE, 1000 series at 10 M points: about 25 ms instead of 10).
* its compressed batches packed: TimescaleDB stores the gorilla and delta-delta data with
  ``STORAGE EXTERNAL`` (out of line, never compressed again); for decimal values gorilla's
  XORs repeat bit patterns that LZ4 finds (cpu and memory percentages: 30 % smaller; the
  fleet workload's samples 14 % smaller, 4.3 MB or 0.43 B per point at 10 M points). The
  compressed chunk's ``time`` and ``value`` become ``STORAGE EXTENDED, COMPRESSION lz4`` and
  the chunk is rewritten (``CLUSTER`` on its segment index: an ACCESS EXCLUSIVE lock on the
  compressed chunk, about a second per 10 M points). Rows TimescaleDB adds later to a packed
  chunk (late points recompressed) are LZ4-compressed as they are written. Without LZ4 in
  this PostgreSQL build (``--with-lz4``), the migration keeps pglz, which saves about as
  much here. Chunks compressed before 0010 keep their batches of 1000; the job's next run
  packs them.

The rollup ``samples_1h`` (kept 400 days, never compressed until now: an hour of a series
is a 140-byte row) is compressed too, segmented by ``series_id`` and ordered by ``bucket``,
by a compression policy after :data:`ROLLUP_COMPRESS_AFTER`, well past its refresh window
(at most 3 days, see ``db.refresh_start_offset``): 140 -> 42 bytes per row (100 series, 40
days at 1 min steps, its 10-day chunks compressed). Not ``samples_1d``: a chunk holds 10
rows per series, which compress to no fewer bytes (217 -> 219 per row, same data).

Query answers are unchanged (the same rows); decompression reads one batch per series and
day. ``downgrade`` removes the job and its procedure and adds 0007's compression policy
back; chunks already packed stay as they are (TimescaleDB reads them either way); the
rollup's policy goes and its chunks are decompressed.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Sequence

import sqlalchemy as sa
from alembic import context, op
from alembic.script import ScriptDirectory

revision: str = "0010"
down_revision: str | Sequence[str] | None = "0009"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

log = logging.getLogger("alembic.runtime.migration")

PROCEDURE = "compress_samples"
BATCH_SIZE_LIMIT = 8640  # one day of a 10 s series; TimescaleDB allows up to 32767
COMPRESS_AFTER = "7 days"  # 0007's
SCHEDULE = "12 hours"  # what 0007's policy got by default (half the 1-day chunk interval)
COMPRESSION_START = "1 hour"  # 0007's first run, clear of every other policy's
ROLLUP_COMPRESS_AFTER = "7 days"
# The rollup's compression policy first runs at its own offset, clear of every other's.
ROLLUP_COMPRESSION_STARTS: dict[str, str] = {"samples_1h": "2 hours 23 minutes"}

# Each chunk compressed in a transaction of its own, then packed in another (COMMIT after
# each): a long backlog never holds every lock, and a failed pack (the next run packs it)
# keeps the compression.
_PROCEDURE = """CREATE OR REPLACE PROCEDURE compress_samples(job_id integer, config jsonb)
LANGUAGE plpgsql AS $proc$
DECLARE
    chunk regclass;
BEGIN
    FOR chunk IN SELECT c FROM show_chunks('samples',
            older_than => (config ->> 'compress_after')::interval) AS c ORDER BY 1 LOOP
        PERFORM set_config('timescaledb.compression_batch_size_limit',
                           config ->> 'batch_size_limit', true);
        PERFORM compress_chunk(chunk, if_not_compressed => true);
        COMMIT;
        CALL pack_samples_chunk(chunk, config ->> 'toast_compression');
        COMMIT;
    END LOOP;
END
$proc$"""
# The compressed chunk of ``chunk``, once: its compressed columns EXTENDED with ``method``,
# then rewritten so that every batch stored out of line is compressed that way. Batches
# small enough to stay in their row (under 2 kB: PostgreSQL compresses nothing there) are
# left alone: a rewrite would only lose the free space that compress_chunk filled. Then, at
# every call, ANALYZE of the compressed chunk: without statistics the planner took it for a
# few batches and read one series by decompressing the whole chunk in a hash join (one
# series' day over HTTP: 50 ms at 1 M points, 485 ms at 10 M, against 1-3 ms with them),
# until autovacuum's next analyze.
_PACK = """CREATE OR REPLACE PROCEDURE pack_samples_chunk(chunk regclass, method text)
LANGUAGE plpgsql AS $proc$
DECLARE
    packed regclass;
    segment_index name;
BEGIN
    SELECT format('%I.%I', z.schema_name, z.table_name)::regclass INTO packed
    FROM _timescaledb_catalog.chunk AS c JOIN _timescaledb_catalog.chunk AS z
        ON z.id = c.compressed_chunk_id
    JOIN pg_class AS r ON r.relname = c.table_name
    JOIN pg_namespace AS n ON n.oid = r.relnamespace AND n.nspname = c.schema_name
    WHERE r.oid = chunk;
    IF packed IS NULL THEN
        RETURN;  -- not compressed
    END IF;
    SELECT i.relname INTO segment_index FROM pg_index AS x
        JOIN pg_class AS i ON i.oid = x.indexrelid WHERE x.indrelid = packed LIMIT 1;
    IF segment_index IS NOT NULL AND EXISTS (SELECT 1 FROM pg_attribute
            WHERE attrelid = packed AND attname = 'value' AND attstorage = 'e') THEN
        EXECUTE format('ALTER TABLE %s ALTER COLUMN time SET STORAGE EXTENDED,'
                       ' ALTER COLUMN time SET COMPRESSION %s,'
                       ' ALTER COLUMN value SET STORAGE EXTENDED,'
                       ' ALTER COLUMN value SET COMPRESSION %s', packed, method, method);
        IF EXISTS (SELECT 1 FROM pg_class WHERE oid = packed
                AND pg_relation_size(reltoastrelid) > 0) THEN  -- batches out of line: pack
            EXECUTE format('CLUSTER %s USING %I', packed, segment_index);
        END IF;
    END IF;
    EXECUTE format('ANALYZE %s', packed);
END
$proc$"""


def upgrade() -> None:
    if not _is_hypertable("samples"):
        return
    config = {"compress_after": COMPRESS_AFTER, "batch_size_limit": BATCH_SIZE_LIMIT,
              "toast_compression": _toast_compression()}
    log.info("timescaledb: samples compressed by the job %s (%s)", PROCEDURE, config)
    op.execute(_PACK)
    op.execute(_PROCEDURE)
    op.execute("SELECT remove_compression_policy('samples', if_exists => true)")
    op.get_bind().execute(sa.text(
        "SELECT add_job('compress_samples', CAST(:schedule AS interval),"
        " config => CAST(:config AS jsonb),"
        " initial_start => now() + CAST(:start AS interval))"),
        {"schedule": SCHEDULE, "config": json.dumps(config), "start": COMPRESSION_START})
    for view, start in ROLLUP_COMPRESSION_STARTS.items():
        if _is_rollup(view):
            op.execute(f"""ALTER MATERIALIZED VIEW {view} SET (timescaledb.compress = true,
                timescaledb.compress_segmentby = 'series_id',
                timescaledb.compress_orderby = 'bucket')""")
            op.execute(f"""SELECT add_compression_policy('{view}',
                compress_after => INTERVAL '{ROLLUP_COMPRESS_AFTER}',
                initial_start => now() + INTERVAL '{start}', if_not_exists => true)""")


def downgrade() -> None:
    if not _is_hypertable("samples"):
        return
    for view in ROLLUP_COMPRESSION_STARTS:
        if _is_rollup(view):
            op.execute(f"SELECT remove_compression_policy('{view}', if_exists => true)")
            op.execute(f"SELECT count(decompress_chunk(c, if_compressed => true))"
                       f" FROM show_chunks('{view}') AS c")
            op.execute(f"ALTER MATERIALIZED VIEW {view} SET (timescaledb.compress = false)")
    op.execute("SELECT delete_job(job_id) FROM timescaledb_information.jobs"
               f" WHERE proc_name = '{PROCEDURE}' AND proc_schema = current_schema()")
    op.execute(f"DROP PROCEDURE IF EXISTS {PROCEDURE}(integer, jsonb)")
    op.execute("DROP PROCEDURE IF EXISTS pack_samples_chunk(regclass, text)")
    op.execute(f"""SELECT add_compression_policy('samples', INTERVAL '{COMPRESS_AFTER}',
        initial_start => now() + INTERVAL '{COMPRESSION_START}', if_not_exists => true)""")


def _toast_compression() -> str:
    """``lz4`` when this PostgreSQL was built with it, else ``pglz``."""
    bind = op.get_bind()
    try:
        with bind.begin_nested():
            bind.execute(sa.text("SELECT set_config('default_toast_compression', 'lz4', true)"))
    except sa.exc.DBAPIError:
        return "pglz"
    return "lz4"


def _is_rollup(view: str) -> bool:
    return op.get_bind().execute(sa.text(
        "SELECT 1 FROM timescaledb_information.continuous_aggregates"
        " WHERE view_name = :v AND view_schema = current_schema()"), {"v": view}).first() \
        is not None


def _is_hypertable(table: str) -> bool:
    if context.is_offline_mode() or op.get_bind().dialect.name != "postgresql":
        return False
    script = ScriptDirectory.from_config(context.config).get_revision("0001")
    assert script is not None
    return bool(script.module._is_hypertable(table))
