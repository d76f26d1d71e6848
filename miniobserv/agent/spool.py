"""The agent's durable spool: metric batches the full queue cannot take wait on disk (issue 11).

``<SPOOL_DIR>/spool.sqlite3`` is one SQLite table, one row per batch: the batch's JSON
(``batch_id`` included), gzip-compressed. SQLite rather than hand-made segment files because
its write-ahead log already gives what a spool needs: each push is one transaction, and with
``journal_mode=WAL`` and ``synchronous=FULL`` a committed push has been fsynced; a kill -9 (or
power loss) at any moment loses at most the push in progress, and a torn WAL frame fails its
checksum and is ignored when the file is opened again, with nothing to write ourselves.
Dropping the oldest rows when the spool is full is one ``DELETE``. The module (and sqlite3,
about 1 MB of memory) is imported only when ``SPOOL_DIR`` is set.

Sizes count the stored bytes (compressed JSON), not SQLite's pages: ``SPOOL_MAX_BYTES``
bounds the payload, the file is a little larger (page slack, the WAL).
"""

from __future__ import annotations

import gzip
import json
import logging
import sqlite3
import threading
from pathlib import Path
from typing import Any

from miniobserv.model import LogBatch, MetricBatch, parse_log_batch, parse_metric_batch

log = logging.getLogger(__name__)

SPOOL_FILE = "spool.sqlite3"
_SCHEMA = """CREATE TABLE IF NOT EXISTS spool (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    kind TEXT NOT NULL,
    body BLOB NOT NULL
)"""
_PARSERS: dict[str, Any] = {"metric": parse_metric_batch, "log": parse_log_batch}

Batch = MetricBatch | LogBatch


def encode(batch: Batch) -> bytes:
    """The stored form of a batch: its JSON, gzip level 1 (cheap; JSON shrinks about 10×)."""
    return gzip.compress(json.dumps(batch.to_json(), separators=(",", ":")).encode(),
                         compresslevel=1)


def decode(kind: str, body: bytes) -> Batch:
    batch: Batch = _PARSERS[kind](json.loads(gzip.decompress(body)))
    return batch


class Spool:
    """Batches in arrival order, at most ``max_bytes`` of them; thread-safe.

    ``push`` appends (dropping the oldest when full), ``peek`` returns the oldest without
    removing it, ``remove`` deletes it once the server settled it: a batch being replayed when
    the agent dies is replayed again at the next start, with the same ``batch_id``.
    """

    def __init__(self, directory: str | Path, max_bytes: int) -> None:
        Path(directory).mkdir(parents=True, exist_ok=True)
        self.path = Path(directory) / SPOOL_FILE
        self.max_bytes = max_bytes
        self.dropped = 0  # oldest batches dropped because the spool was full
        self._lock = threading.Lock()
        self._db = sqlite3.connect(self.path, check_same_thread=False, isolation_level=None)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=FULL")
        self._db.execute(_SCHEMA)
        self.count, self.bytes = self._db.execute(
            "SELECT count(*), coalesce(sum(length(body)), 0) FROM spool").fetchone()

    def push(self, batch: Batch) -> int:
        """Store ``batch``; returns how many of the oldest batches were dropped to make room
        (the batch itself when it alone is larger than the spool)."""
        body = encode(batch)
        kind = "metric" if isinstance(batch, MetricBatch) else "log"
        if len(body) > self.max_bytes:
            self.dropped += 1
            return 1
        with self._lock:
            count, size = self.count, self.bytes
            try:  # one transaction: a crash never drops old rows without adding the new one
                self._db.execute("BEGIN IMMEDIATE")
                dropped = self._make_room(len(body))
                self._db.execute("INSERT INTO spool (kind, body) VALUES (?, ?)", (kind, body))
                self._db.execute("COMMIT")
            except sqlite3.Error:
                self.count, self.bytes = count, size
                if self._db.in_transaction:
                    self._db.execute("ROLLBACK")
                raise
            self.count += 1
            self.bytes += len(body)
        self.dropped += dropped
        return dropped

    def peek(self) -> tuple[int, Batch] | None:
        """``(row id, batch)`` of the oldest batch, or None when the spool is empty.

        A row that cannot be decoded (a bug, or a file edited by hand) is dropped, logged."""
        while True:
            with self._lock:
                row = self._db.execute(
                    "SELECT id, kind, body FROM spool ORDER BY id LIMIT 1").fetchone()
            if row is None:
                return None
            try:
                return row[0], decode(row[1], row[2])
            except Exception as err:  # noqa: BLE001 - any damage: skip the row, keep going
                log.error("spool: dropping unreadable batch %d: %s", row[0], err)
                self.remove(row[0])
                self.dropped += 1

    def remove(self, row_id: int) -> None:
        with self._lock:
            size = self._db.execute("SELECT length(body) FROM spool WHERE id = ?",
                                    (row_id,)).fetchone()
            if size is None:
                return
            self._db.execute("DELETE FROM spool WHERE id = ?", (row_id,))
            self.count -= 1
            self.bytes -= size[0]

    def close(self) -> None:
        with self._lock:
            self._db.close()

    def _make_room(self, size: int) -> int:
        """Delete the oldest rows until ``size`` more bytes fit; returns how many went."""
        dropped = 0
        while self.count and self.bytes + size > self.max_bytes:
            row_id, length = self._db.execute(
                "SELECT id, length(body) FROM spool ORDER BY id LIMIT 1").fetchone()
            self._db.execute("DELETE FROM spool WHERE id = ?", (row_id,))
            self.count -= 1
            self.bytes -= length
            dropped += 1
        return dropped
