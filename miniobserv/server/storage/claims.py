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
key and value in key order; per log entry ``time``, ``level``, ``message``, ``path`` (``-``
when absent, else ``+`` and the path) and the labels likewise. Validated text never contains
NUL (``model.check_text``, and names and label keys are patterns), so the encoding is
unambiguous. ``blake2b`` runs once over the joined text: about 1 ms per 1000 points.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import TypeVar
from uuid import UUID

from miniobserv.model import LogBatch, MetricBatch, PointColumns
from miniobserv.server.storage.base import BatchConflict, StorageError, to_micros
from miniobserv.server.storage.series import BatchSeries

DIGEST_BYTES = 16  # blake2b-128: collisions between a client's batches are out of reach
_Batch = TypeVar("_Batch", MetricBatch, LogBatch)


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


def metrics_claim(batch: MetricBatch, columns: PointColumns | None = None) -> BatchClaim | None:
    """The claim of a metrics batch, or None when it carries no ``batch_id``; ``columns``
    are the batch's metrics when the caller has them (else they are made)."""
    if batch.batch_id is None:
        return None
    if columns is None:
        columns = BatchSeries.of(batch).columns
    try:
        data = _metric_text(columns).encode()
    except (TypeError, ValueError) as err:  # an unvalidated record no store would accept
        raise StorageError(f"batch cannot be stored: {err}") from err
    return BatchClaim(batch.batch_id, "metrics",
                      hashlib.blake2b(data, digest_size=DIGEST_BYTES).digest())


def logs_claim(batch: LogBatch) -> BatchClaim | None:
    """The claim of a logs batch, or None when it carries no ``batch_id``."""
    if batch.batch_id is None:
        return None
    return BatchClaim(batch.batch_id, "logs", _digest(_entry_fields, batch))


def _digest(fields_of: Callable[[_Batch], list[str]], batch: _Batch) -> bytes:
    """blake2b of the batch's fields, each followed by NUL, in one pass over one buffer."""
    try:
        fields = fields_of(batch)
        fields.append("")  # a NUL after the last field too
        data = "\0".join(fields).encode()
    except (TypeError, ValueError) as err:  # an unvalidated record no store would accept
        raise StorageError(f"batch cannot be stored: {err}") from err
    return hashlib.blake2b(data, digest_size=DIGEST_BYTES).digest()


def _metric_text(columns: PointColumns) -> str:
    """The canonical encoding of a metric batch (see the module's docstring), written per
    point as one string: its time and value, then its slot's name and labels, known once."""
    kinds = []
    for name, labels in columns.kinds:
        fields = [name]
        _add_labels(fields, labels)
        fields.append("")
        kinds.append("\0".join(fields))
    texts = {micros: str(micros) for micros in set(columns.times)}
    return "".join([f"{columns.host}\0",
                    *[f"{texts[micros]}\0{value!r}\0{kinds[slot]}" for slot, micros, value
                      in zip(columns.slots, columns.times, columns.values, strict=True)]])


def _entry_fields(batch: LogBatch) -> list[str]:
    fields = [batch.host]
    for e in batch.entries:
        fields += (str(to_micros(e.time)), e.level, e.message,
                   "-" if e.path is None else "+" + e.path)
        _add_labels(fields, e.labels)
    return fields


def _add_labels(fields: list[str], labels: Mapping[str, str]) -> None:
    if not labels:  # the common case for log entries
        fields.append("0")
        return
    fields.append(str(len(labels)))
    for key in sorted(labels):
        fields += (key, labels[key])
