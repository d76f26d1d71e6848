"""A batch validated into columns (the API's path: model.parse_metric_batch) and the same batch
as records (marshmallow's MetricBatchSchema, or built in code) reach the stores as the same
points: the same time, value and series key per point, the same first index per series, and
the same batch_id digest, byte for byte the encoding claims.py documents (computed here from
records as it was before the columns).

Besides the schema agreement table's good batches, generated 1000-point batches mix what the
fast path answers from its lookups with what it must check again: repeated times in several
spellings, label sets in several key orders, no labels, ``{}`` and ``null`` labels, int
values, host spellings; one generated fault at a random place is refused by both as the
schema refuses it (same field, same message).
"""

from __future__ import annotations

import hashlib
import random
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from miniobserv.model import MetricBatch, PointColumns, format_time, parse_metric_batch
from miniobserv.server.storage.base import to_micros
from miniobserv.server.storage.claims import DIGEST_BYTES, metrics_claim
from miniobserv.server.storage.series import BatchSeries, point_keys
from tests.test_schema_agreement import CASES, fast_outcome, resolve, schema_outcome


def reference_digest(batch: MetricBatch) -> bytes:
    """claims.py's digest as written before the columns: fields of records, NUL after each."""
    fields = [batch.host]
    for m in batch.metrics:
        fields += (str(to_micros(m.time)), repr(float(m.value)), m.name)
        fields.append(str(len(m.labels)) if m.labels else "0")
        for key in sorted(m.labels):
            fields += (key, m.labels[key])
    fields.append("")
    return hashlib.blake2b("\0".join(fields).encode(), digest_size=DIGEST_BYTES).digest()


def as_records(batch: MetricBatch) -> MetricBatch:
    return MetricBatch(batch.host, list(batch.metrics), batch.batch_id)


def assert_same_points(fast: MetricBatch, records: MetricBatch) -> None:
    assert isinstance(fast.metrics, PointColumns)
    assert not isinstance(records.metrics, PointColumns)
    ours, theirs = BatchSeries.of(fast), BatchSeries.of(records)
    assert point_keys(fast) == point_keys(records)
    assert ours.first == theirs.first
    assert ours.columns.times == theirs.columns.times == \
        [to_micros(m.time) for m in records.metrics]
    assert ours.columns.values == theirs.columns.values
    assert [repr(v) for v in ours.columns.values] == [repr(v) for v in theirs.columns.values]
    assert fast == records
    if records.batch_id is not None:
        claim, expected = metrics_claim(fast), metrics_claim(records)
        assert claim is not None and expected is not None
        assert claim.digest == expected.digest == reference_digest(records)


GOOD = [(key, data) for key, data in CASES
        if isinstance(fast_outcome(resolve(data, datetime.now(UTC))), MetricBatch)]


@pytest.mark.parametrize("data", [data for _, data in GOOD], ids=[key for key, _ in GOOD])
def test_columns_and_records_of_every_good_batch_agree(data: Any) -> None:
    data = resolve(data, datetime.now(UTC))
    data = {**data, "batch_id": data.get("batch_id") or str(uuid.uuid4())}
    fast, schema = parse_metric_batch(data), schema_outcome(data)
    assert isinstance(schema, MetricBatch)
    assert_same_points(fast, as_records(schema))


HOST = "web-01"
LABEL_SETS = [None, {}, {"core": "0"}, {"core": "1"}, {"core": "0", "env": "prod"},
              {"env": "prod", "core": "0"}, {"mount": "/", "env": "prod", "core": "0"}]
FAULTS: list[tuple[str, Any]] = [
    ("value", None), ("value", "1"), ("value", 1e101), ("value", 10 ** 400), ("value", True),
    ("time", "2026-02-30T00:00:00Z"), ("time", []), ("time", 5), ("time", "2999-01-01T00:00:00Z"),
    ("time", "2026-01-01T00:00:00"), ("name", "cpu"),
    ("name", ["cpu.usage_pct"]), ("labels", {"core": ["0"]}), ("labels", {"core": ""}),
    ("labels", []), ("labels", "core"), ("host", "web-02"), ("host", ["web-01"]),
    ("value", ...), ("time", ...), ("name", ...),  # ...: the key left out
]


def generated(rng: random.Random, now: datetime, fault: tuple[str, Any] | None) -> dict[str, Any]:
    """A 1000-point wire batch of few times and series, with ``fault`` at a random place."""
    base = now - timedelta(minutes=30)
    stamps = [base + timedelta(seconds=10 * i, microseconds=rng.choice([0, 0, 250_000, 1]))
              for i in range(rng.randint(1, 120))]
    spellings = [lambda t: format_time(t),
                 lambda t: format_time(t).replace("Z", "+00:00"),
                 lambda t: (t + timedelta(hours=2)).strftime("%Y-%m-%dT%H:%M:%S.%f+02:00")]
    names = ["cpu.usage_pct", "mem.used_pct", "custom.app.requests"]
    points: list[dict[str, Any]] = []
    for _ in range(1000):
        point: dict[str, Any] = {
            "time": rng.choice(spellings)(rng.choice(stamps)), "name": rng.choice(names),
            "value": rng.choice([rng.uniform(-1e6, 1e6), rng.randint(-10, 10 ** 12), -0.0, 0])}
        labels = rng.choice(LABEL_SETS)
        if labels is not None or rng.random() < 0.5:
            point["labels"] = None if labels is None else dict(labels)
        host = rng.choice([None, HOST, HOST, f" {HOST}"])
        if host is not None:
            point["host"] = host
        points.append(point)
    if fault is not None:
        key, value = fault
        point = points[rng.randrange(len(points))]
        if value is ...:
            point.pop(key, None)
        else:
            point[key] = value
    return {"host": HOST, "metrics": points, "batch_id": str(uuid.uuid4())}


@pytest.mark.parametrize("seed", range(40))
def test_generated_batches_agree(seed: int) -> None:
    rng = random.Random(seed)
    now = datetime.now(UTC)
    data = generated(rng, now, None)
    fast, schema = parse_metric_batch(data), schema_outcome(data)
    assert isinstance(schema, MetricBatch)
    assert_same_points(fast, as_records(schema))
    assert len(fast.metrics.kinds) > len(BatchSeries.of(fast).first)  # key orders: 2 slots


@pytest.mark.parametrize(("seed", "fault"), list(enumerate(FAULTS)), ids=str)
def test_a_generated_fault_is_refused_as_by_the_schema(seed: int, fault: tuple[str, Any]) -> None:
    data = generated(random.Random(seed), datetime.now(UTC), fault)
    fast = fast_outcome(data)
    assert not isinstance(fast, MetricBatch)
    assert schema_outcome(data) == [fast]


def test_records_of_another_host_are_refused_from_columns_too() -> None:
    data = generated(random.Random(1), datetime.now(UTC), None)
    records = as_records(parse_metric_batch(data))
    assert BatchSeries.of(records).first
    other = MetricBatch("web-02", records.metrics, records.batch_id)
    with pytest.raises(Exception, match=r"metrics\[0\]\.host: must equal the batch host"):
        BatchSeries.of(other)
    columns = parse_metric_batch(data)
    with pytest.raises(Exception, match=r"metrics\[0\]\.host: must equal the batch host"):
        BatchSeries.of(MetricBatch("web-02", columns.metrics, columns.batch_id))
