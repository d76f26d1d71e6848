"""The schema, in SQLAlchemy Core: what Alembic's migrations build (SPEC §7).

One ``MetaData`` with a naming convention, so every constraint and index has a predictable
name that a later migration can drop. The repositories write their SQL by hand (COPY on
PostgreSQL, executemany on SQLite); these tables document the shape they rely on and are the
target of ``alembic revision --autogenerate`` and of the test that checks the migrations
build exactly this.

An index or table whose ``info["dialects"]`` names the dialects it exists on is built on those only
(:func:`include_object` is the autogenerate filter saying so).

On SQLite ``time``/``last_seen``/``received_at`` are INTEGER microseconds since the UTC epoch,
so epoch-aligned bucketing is exact integer arithmetic; on PostgreSQL they are timestamptz.
"""

from __future__ import annotations

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql

NAMING_CONVENTION = {
    "ix": "ix_%(table_name)s_%(column_0_N_name)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}

metadata = sa.MetaData(naming_convention=NAMING_CONVENTION)


def include_object(obj: object, name: str | None, kind: str, reflected: bool,
                   compare_to: object, *, dialect: str) -> bool:
    """Alembic's ``include_object`` filter on ``dialect``: False for an index or table of
    the metadata that this dialect does not build (its ``info["dialects"]``)."""
    dialects = getattr(obj, "info", {}).get("dialects") \
        if kind in ("index", "table") and not reflected else None
    return dialects is None or dialect in dialects

# timestamptz on PostgreSQL; INTEGER microseconds since the epoch on SQLite.
Timestamp = sa.DateTime(timezone=True).with_variant(sa.BigInteger(), "sqlite")
# The small integer key of a series (INTEGER, the rowid's alias, on SQLite).
SeriesId = sa.BigInteger().with_variant(sa.Integer(), "sqlite")
# jsonb on PostgreSQL (for ``@>`` and ``->>``); JSON text on SQLite (``json_extract``).
Labels = sa.JSON().with_variant(postgresql.JSONB(), "postgresql")

ingested_batches = sa.Table(
    "ingested_batches",
    metadata,
    # One row per accepted batch that carried a batch_id: a retry of it (same id, same kind:
    # ``metrics`` or ``logs``, same ``digest`` of its content, see storage/claims.py) is
    # acknowledged without being stored twice; other content with the same id is refused.
    # ``digest`` is NULL for claims made before revision 0004 (acknowledged as before).
    # ``received_at`` lets the maintenance job prune old ids.
    sa.Column("batch_id", sa.Uuid(), primary_key=True),
    sa.Column("kind", sa.Text(), primary_key=True),
    sa.Column("received_at", Timestamp, nullable=False),
    sa.Column("digest", sa.LargeBinary(), nullable=True),
    sa.Index(None, "received_at"),
)

hosts = sa.Table(
    "hosts",
    metadata,
    # Upserted once per accepted batch: the host list and its status never scan ``samples``.
    sa.Column("host", sa.Text(), primary_key=True),
    sa.Column("last_seen", Timestamp, nullable=False),
)

logs = sa.Table(
    "logs",
    metadata,
    # ``id`` comes from a sequence (an identity column on PostgreSQL, an AUTOINCREMENT rowid
    # on SQLite, so ids are never reused): newest first is ``ORDER BY id DESC`` and keyset
    # paging is ``id < cursor``. On PostgreSQL the primary key is (id, time), because
    # TimescaleDB wants the time column in every unique index; the sequence alone keeps ids
    # unique. ``path`` is the file a line came from (the SDK's ``source``).
    sa.Column("id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), primary_key=True),
    sa.Column("time", Timestamp, nullable=False),
    sa.Column("host", sa.Text(), nullable=False),
    sa.Column("level", sa.Text(), nullable=False),
    sa.Column("message", sa.Text(), nullable=False),
    sa.Column("path", sa.Text(), nullable=True),
    sa.Column("labels", Labels, nullable=False, server_default=sa.text("'{}'")),
    sa.Index(None, "host", "id"),
    sa.Index(None, "time"),
    # PostgreSQL only (with pg_trgm): a trigram index keeps ``lower(message) LIKE '%…%'``
    # usable. Autogenerate skips an expression index a store does not have (SQLite).
    sa.Index("ix_logs_message_trgm", sa.func.lower(sa.text("message")).label("lower_message"),
             postgresql_using="gin", postgresql_ops={"lower_message": "gin_trgm_ops"}),
    sqlite_autoincrement=True,
)

# --- fleet (revision 0003) -----------------------------------------------------------------

alert_states = sa.Table(
    "alert_states",
    metadata,
    # One row per rule and series. ``rule_key`` digests the rule's definition, so an edited
    # rule starts afresh; ``labels_key`` is the series' labels as canonical JSON text.
    sa.Column("rule_key", sa.Text(), primary_key=True),
    sa.Column("host", sa.Text(), primary_key=True),
    sa.Column("labels_key", sa.Text(), primary_key=True),
    sa.Column("state", sa.Text(), nullable=False),
    sa.Column("value", sa.Double(), nullable=True),
    sa.Column("since", Timestamp, nullable=False),
    sa.Column("updated_at", Timestamp, nullable=False),
    sa.Column("last_notified", sa.Text(), nullable=True),
    sa.CheckConstraint("state IN ('ok', 'pending', 'firing', 'no_data')", name="state"),
)

host_states = sa.Table(
    "host_states",
    metadata,
    # The last host.down / host.recovered announced per host, so each is sent once.
    sa.Column("host", sa.Text(), primary_key=True),
    sa.Column("down", sa.Boolean(), nullable=False),
    sa.Column("since", Timestamp, nullable=False),
)

notification_outbox = sa.Table(
    "notification_outbox",
    metadata,
    # Written in the evaluation's transaction, delivered by a separate thread: evaluation
    # never waits on a webhook, and a crash between the two loses nothing.
    sa.Column("id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), primary_key=True,
              autoincrement=True),
    sa.Column("channel", sa.Text(), nullable=False),
    sa.Column("payload", sa.Text(), nullable=False),
    sa.Column("status", sa.Text(), nullable=False),
    sa.Column("attempts", sa.Integer(), nullable=False, server_default=sa.text("0")),
    sa.Column("next_attempt_at", Timestamp, nullable=False),
    sa.Column("created_at", Timestamp, nullable=False),
    sa.Column("finished_at", Timestamp, nullable=True),
    sa.Column("last_error", sa.Text(), nullable=True),
    # The delivery lease (revision 0008): who is POSTing this row, and until when.
    sa.Column("claimed_by", sa.Text(), nullable=True),
    sa.Column("claimed_until", Timestamp, nullable=True),
    sa.CheckConstraint("status IN ('pending', 'sent', 'failed')", name="status"),
    sa.Index(None, "status", "id"),
)

# --- series (revision 0006) ----------------------------------------------------------------

series = sa.Table(
    "series",
    metadata,
    # One row per distinct (host, name, labels): ingest registers each new series in the
    # batch's transaction, and the unique key is the index that counts a host's series for
    # MAX_SERIES_PER_HOST without reading ``samples``. ``labels_text`` is the canonical
    # spelling (fleet_common.canonical_labels); ``last_seen`` is refreshed at most once an
    # hour per series and process, so retention removes series unseen for METRICS_RETENTION.
    # The small ``id`` is what ``samples`` references.
    sa.Column("id", SeriesId, sa.Identity(), primary_key=True),
    sa.Column("host", sa.Text(), nullable=False),
    sa.Column("name", sa.Text(), nullable=False),
    sa.Column("labels_text", sa.Text(), nullable=False),
    sa.Column("labels", Labels, nullable=False, server_default=sa.text("'{}'")),
    sa.Column("first_seen", Timestamp, nullable=False),
    sa.Column("last_seen", Timestamp, nullable=False),
    sa.UniqueConstraint("host", "name", "labels_text"),
    sa.Index(None, "last_seen"),
    sqlite_autoincrement=True,
)

# --- samples (revision 0007) ---------------------------------------------------------------

samples = sa.Table(
    "samples",
    metadata,
    # One value per (series, time): a later write of the same series and time replaces it.
    # The key is the only index SQLite has (a WITHOUT ROWID table: the rows are the key's
    # b-tree, about 30 bytes a point); on PostgreSQL it serves every per-series read, and on
    # TimescaleDB (a hypertable compressed by series_id, ordered by time) it contains the
    # time column, as TimescaleDB wants of every unique index.
    sa.Column("series_id", SeriesId, primary_key=True, autoincrement=False),
    sa.Column("time", Timestamp, primary_key=True),
    sa.Column("value", sa.Double(), nullable=False),
    sqlite_with_rowid=False,
)

# PostgreSQL only (``info["dialects"]``, which the schema comparison honours): BRIN on time,
# tiny and cheap to keep up as points arrive in time order, for retention's range delete.
sa.Index("ix_samples_time", samples.c.time, postgresql_using="brin",
         info={"dialects": ("postgresql",)})

# --- sample_blocks (revision 0009) ---------------------------------------------------------

# PostgreSQL only: 30 minutes of one series per row, packed from ``samples`` once older than
# METRICS_PACK_AFTER (storage/postgres/blocks.py); ``times`` in time order, ``vals`` their
# values. Empty and unread on TimescaleDB.
sample_blocks = sa.Table(
    "sample_blocks",
    metadata,
    sa.Column("series_id", sa.BigInteger(), primary_key=True, autoincrement=False),
    sa.Column("start", sa.DateTime(timezone=True), primary_key=True),
    sa.Column("times", postgresql.ARRAY(sa.DateTime(timezone=True)), nullable=False),
    sa.Column("vals", postgresql.ARRAY(sa.Double()), nullable=False),
    info={"dialects": ("postgresql",)},
)
