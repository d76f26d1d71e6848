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

from miniobserv.model import LogBatch, MetricBatch
from miniobserv.server.storage.base import BatchConflict, StorageError, to_micros

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


def metrics_claim(batch: MetricBatch) -> BatchClaim | None:
    """The claim of a metrics batch, or None when it carries no ``batch_id``."""
    if batch.batch_id is None:
        return None
    return BatchClaim(batch.batch_id, "metrics", _digest(_metric_fields, batch))


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


def _metric_fields(batch: MetricBatch) -> list[str]:
    fields = [batch.host]
    labelled: dict[tuple[tuple[str, str], ...], list[str]] = {}  # each label set's fields once
    for m in batch.metrics:
        fields += (str(to_micros(m.time)), repr(float(m.value)), m.name)
        items = tuple(m.labels.items()) if m.labels else ()
        label_fields = labelled.get(items)
        if label_fields is None:
            label_fields = labelled[items] = []
            _add_labels(label_fields, m.labels)
        fields += label_fields
    return fields


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
