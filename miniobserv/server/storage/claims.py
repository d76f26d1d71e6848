"""Batch-id claims: what ``ingested_batches`` keeps of a batch so that a retry is recognised.

A batch that carries a ``batch_id`` is claimed with a digest of its validated content. A
later batch with the same id and kind is the retry of a stored batch when its digest is the
same (acknowledged, nothing stored) and a client's mistake when it is not
(:class:`~miniobserv.server.storage.base.BatchConflict`, the API answers 409): reusing an id
for other content must not be acknowledged and silently dropped. A claim stored before
digests existed (migration 0004) has none: it is acknowledged as before.

The digest covers the records as stored, not the request bytes, so a retry that was
re-serialised or re-compressed is still recognised. Its canonical encoding is UTF-8 text,
one NUL after every field: the host, then per metric ``time`` (UTC microseconds since the
epoch), ``value`` (``repr`` of the float), ``name``, the number of labels and each label's
key and value in key order; per log entry ``time``, ``level``, ``message``, ``path`` (an
empty field marked ``-`` when absent, ``+`` before a present one) and the labels likewise.
Validated text never contains NUL (``model.check_text``), so the encoding is unambiguous.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from uuid import UUID

from miniobserv.model import LogBatch, MetricBatch
from miniobserv.server.storage.base import BatchConflict, StorageError

DIGEST_BYTES = 16  # blake2b-128: collisions between a client's batches are out of reach
EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
MICROSECOND = timedelta(microseconds=1)


@dataclass(frozen=True)
class BatchClaim:
    """The claim of one batch: its id, its kind (``metrics`` or ``logs``), its digest."""

    batch_id: UUID
    kind: str
    digest: bytes

    def check_retry(self, stored_digest: bytes | None) -> None:
        """Accept the retry of the batch claimed with ``stored_digest``, or raise.

        ``None`` (a claim older than digests) is accepted: its content is unknown.
        Raises BatchConflict when the stored batch had other content.
        """
        if stored_digest is not None and bytes(stored_digest) != self.digest:
            raise BatchConflict(self.batch_id, self.kind)


def metrics_claim(batch: MetricBatch) -> BatchClaim | None:
    """The claim of a metrics batch, or None when it carries no ``batch_id``."""
    if batch.batch_id is None:
        return None
    fields = (f"{_micros(m.time)}\0{float(m.value)!r}\0{m.name}\0{_labels(m.labels)}"
              for m in batch.metrics)
    return BatchClaim(batch.batch_id, "metrics", _digest(batch.host, fields))


def logs_claim(batch: LogBatch) -> BatchClaim | None:
    """The claim of a logs batch, or None when it carries no ``batch_id``."""
    if batch.batch_id is None:
        return None
    fields = (f"{_micros(e.time)}\0{e.level}\0{e.message}\0"
              f"{'-' if e.path is None else '+' + e.path}\0{_labels(e.labels)}"
              for e in batch.entries)
    return BatchClaim(batch.batch_id, "logs", _digest(batch.host, fields))


def _digest(host: str, records: Iterable[str]) -> bytes:
    """blake2b of the host and the records' fields, each record ending with NUL."""
    digest = hashlib.blake2b(digest_size=DIGEST_BYTES)
    try:
        digest.update(f"{host}\0".encode())
        for record in records:
            digest.update(f"{record}\0".encode())
    except (TypeError, ValueError) as err:  # an unvalidated record no store would accept
        raise StorageError(f"batch cannot be stored: {err}") from err
    return digest.digest()


def _micros(time: datetime) -> int:
    return (time - EPOCH) // MICROSECOND


def _labels(labels: Mapping[str, str]) -> str:
    if not labels:
        return "0"
    return f"{len(labels)}\0" + "\0".join(f"{key}\0{labels[key]}" for key in sorted(labels))
