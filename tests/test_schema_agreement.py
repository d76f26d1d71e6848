"""The fast path (model.parse_metric_batch) and the schema of record (schemas.MetricBatchSchema)
agree on every point of a large generated table: both accept it and build equal batches, or both
refuse it naming the same field with the same message.

Each bad case has one fault, so marshmallow (which reports every error) has exactly one to
report. A point is tried alone and after good points repeating its values, where the fast path
answers from what it already checked (``_MetricBatchChecks``).
"""

from __future__ import annotations

import math
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import marshmallow as ma
import pytest

from miniobserv import model
from miniobserv.errors import ValidationError
from miniobserv.model import MetricBatch, format_time, parse_metric_batch
from miniobserv.schemas import MetricBatchSchema

HOST = "web-01"
DROP = object()  # a key left out of the point


@dataclass(frozen=True)
class Ago:
    """A time ``seconds`` before the moment the case runs (negative: ahead), in ``form``."""

    seconds: float
    form: str = "{}"  # applied to format_time's text

    def text(self, now: datetime) -> str:
        return self.form.format(format_time(now - timedelta(seconds=self.seconds)))


def point(**fields: Any) -> dict[str, Any]:
    base: dict[str, Any] = {"time": Ago(60), "host": HOST, "name": "cpu.usage_pct",
                            "value": 12.5, "labels": {"core": "total"}}
    base.update(fields)
    return {key: value for key, value in base.items() if value is not DROP}


def resolve(value: Any, now: datetime) -> Any:
    if isinstance(value, Ago):
        return value.text(now)
    if isinstance(value, dict):
        return {key: resolve(item, now) for key, item in value.items()}
    if isinstance(value, list):
        return [resolve(item, now) for item in value]
    return value


# --- the table -------------------------------------------------------------------------------

GOOD_TIMES = [
    Ago(60), Ago(0), Ago(86400 * 400), Ago(-590), Ago(-300), Ago(3600, "{}"),
    "2026-01-01T00:00:00Z", "2026-01-01T00:00:00.5Z", "2026-01-01T00:00:00.123456Z",
    "2026-01-01T00:00:00.1234567891Z", "2026-01-01T00:00:00.000001Z", "2026-01-01t00:00:00z",
    "2026-01-01T02:00:00+02:00", "2025-12-31T18:30:00-05:30", "2026-01-01T00:00:00+00:00",
    "2026-01-01T00:00:00-00:00", "2024-02-29T12:00:00Z", "0001-01-01T00:00:00Z",
    "1999-12-31T23:59:59.999999Z", "2026-01-01T23:59:59+23:59", "2026-06-05T10:00:00.000Z",
]
BAD_TIMES = [
    DROP, None, 123, 1.5, True, [], {}, "", " ", "2026-01-01", "2026-01-01T00:00:00",
    "2026-01-01 00:00:00Z", "2026-01-01T00:00Z", "2026-01-01T00:00:00.Z", "2026-1-01T00:00:00Z",
    "2026-01-01T00:00:00+0200", "2026-01-01T00:00:00+24:00", "2026-01-01T00:00:00+02:60",
    "2026-01-01T00:00:60Z", "2016-12-31T23:59:60Z", "2026-02-30T00:00:00Z",
    "2025-02-29T00:00:00Z", "2026-13-01T00:00:00Z", "2026-00-10T00:00:00Z",
    "2026-01-01T24:00:00Z", "2026-01-01T00:60:00Z", "0000-01-01T00:00:00Z",
    "0001-01-01T00:00:00+01:00", "9999-12-31T23:59:59-01:00",
    "\u0662\u0660\u0662\u0666-01-01T00:00:00Z",
    " 2026-01-01T00:00:00Z", "2026-01-01T00:00:00Z ", "2026-01-01T00:00:00ZZ",
    Ago(-610), Ago(-3600), Ago(-86400 * 365), Ago(60, "{} "), Ago(60, "x{}"),
]
GOOD_HOSTS = [DROP, HOST, f" {HOST} ", f"{HOST}\t", f"\n{HOST}"]
BAD_HOSTS = [
    None, 5, True, [], {}, "", "   ", "web-02", "WEB-01", f"{HOST}\x00", f"{HOST}\n", "\x00",
    f"{HOST}\u202e", "a" * (model.MAX_HOST_LEN + 1),
]
CUSTOM = ["custom.a", "custom.a_b.c9", "custom.x.y.z", "custom." + "a" * (model.MAX_NAME_LEN - 7)]
GOOD_NAMES = sorted(model.METRIC_NAMES) + CUSTOM
BAD_NAMES = [
    DROP, None, 5, True, [], {}, "", "custom", "custom.", "custom..a", "Custom.a", "custom.A",
    "custom.a-b", "custom." + "a" * (model.MAX_NAME_LEN - 6), "cpu.usage_pct ", "CPU.usage_pct",
    "cpu", "x" * 1000, "custom.a\x00", "custom.é",
]
GOOD_VALUES = [0, -0.0, 1, -1, 1.5, -12.25, model.MAX_ABS_VALUE, -model.MAX_ABS_VALUE, 5e-324,
               2 ** 53, 10 ** 100, 2 ** 64, float(2 ** 63)]
BAD_VALUES = [DROP, None, True, False, "1", "1.5", "NaN", [], {}, [1], math.nan, math.inf,
              -math.inf, 10 ** 400, -(10 ** 400), 1e308, -1e308, 10 ** 300, 1.0000001e100]
_KEYS = [f"k{i}" for i in range(model.MAX_LABELS + 1)]
GOOD_LABELS = [
    DROP, None, {}, {"core": "0"}, {"_x": "v"}, {"a" * model.MAX_LABEL_KEY_LEN: "v"},
    {"core": "v" * model.MAX_LABEL_VALUE_LEN}, {key: "v" for key in _KEYS[:model.MAX_LABELS]},
    {"mount": "/var/lib"}, {"iface": "café"}, {"A9_z": "x y"}, {"core": "total", "mount": "/"},
]
BAD_LABELS = [
    [], "core", 5, True, [["core", "0"]], {key: "v" for key in _KEYS},
    {"a" * (model.MAX_LABEL_KEY_LEN + 1): "v"}, {"1a": "v"}, {"a-b": "v"}, {"": "v"}, {"a.b": "v"},
    {"é": "v"}, {"core": ""}, {"core": "v" * (model.MAX_LABEL_VALUE_LEN + 1)}, {"core": 5},
    {"core": None}, {"core": True}, {"core": ["0"]}, {"core": {"a": "b"}}, {"core": "a\x00"},
    {"core": "a\nb"}, {"core": "\t"}, {"core": "\x1b[31m"}, {"core": "\x7f"}, {"core": "\x85"},
    {"core": "\x9f"}, {"core": "\u061c"}, {"core": "\u200e"}, {"core": "\u2028"},
    {"core": "\u202a"}, {"core": "\u2066"}, {"core": "\ud800"}, {"ok": "v", "core": "\x00"},
]
BAD_ITEMS: list[Any] = [None, 5, "point", [], True]


def point_cases() -> Iterator[tuple[str, Any, bool]]:
    """``(id, point, whether it is good)``."""
    table = [("time", GOOD_TIMES, BAD_TIMES), ("host", GOOD_HOSTS, BAD_HOSTS),
             ("name", GOOD_NAMES, BAD_NAMES), ("value", GOOD_VALUES, BAD_VALUES),
             ("labels", GOOD_LABELS, BAD_LABELS)]
    for key, good, bad in table:
        for index, value in enumerate(good):
            yield f"{key}-good-{index}", point(**{key: value}), True
        for index, value in enumerate(bad):
            yield f"{key}-bad-{index}", point(**{key: value}), False
    for index, item in enumerate(BAD_ITEMS):
        yield f"item-bad-{index}", item, False
    yield "unknown-key", point(unit="pct"), True


POINTS = list(point_cases())


def batch(metrics: list[Any], **fields: Any) -> dict[str, Any]:
    body: dict[str, Any] = {"host": HOST, "metrics": metrics}
    body.update(fields)
    return {key: value for key, value in body.items() if value is not DROP}


def batch_cases() -> Iterator[tuple[str, Any]]:
    for key, item, good in POINTS:
        yield f"alone-{key}", batch([item])
        # After good points with its other values, so that the fast path answers from what it
        # checked; a good point twice (answered from what it checked), a bad one once (one
        # fault: marshmallow reports every point's).
        yield f"repeated-{key}", batch([point(), point(value=1.0), item] + [item] * good)
    inheriting = point(host=DROP)
    for index, host in enumerate([HOST, f" {HOST} ", "a" * model.MAX_HOST_LEN, "café", "x"]):
        yield f"batch-host-good-{index}", batch([inheriting, point(host=host)], host=host)
    for index, host in enumerate([DROP, *BAD_HOSTS[:7], f"{HOST}\x00", f"{HOST}\u2029",
                                  f"{HOST}\u061c", "\ud800", "a" * (model.MAX_HOST_LEN + 1)]):
        yield f"batch-host-bad-{index}", batch([inheriting], host=host)
    good_ids = [DROP, None, str(uuid.uuid4()), str(uuid.uuid4()).upper(), uuid.uuid4().hex,
                "{12345678-1234-5678-1234-567812345678}"]
    for index, batch_id in enumerate(good_ids + ["not-a-uuid", "", 5, True, [], {}, "1234"]):
        yield f"batch-id-{index}", batch([point()], batch_id=batch_id)
    for index, metrics in enumerate([DROP, None, {}, "x", 5, [], [point()] * model.MAX_BATCH,
                                     [point()] * (model.MAX_BATCH + 1)]):
        yield f"metrics-{index}", batch(metrics) if metrics is not DROP else {"host": HOST}
    for index, body in enumerate([[], "x", 5, None, True]):
        yield f"body-{index}", body
    yield "body-unknown-key", batch([point()], agent="1.0")


CASES = list(batch_cases())


def test_the_table_is_large_and_mixed() -> None:
    outcomes = [fast_outcome(resolve(data, datetime.now(UTC))) for _, data in CASES]
    refused = sum(isinstance(outcome, tuple) for outcome in outcomes)
    assert len(CASES) >= 400
    assert 200 <= refused <= len(CASES) - 150


# --- the comparison --------------------------------------------------------------------------


def flatten(messages: Any, path: str = "") -> list[tuple[str, str]]:
    """marshmallow's nested messages as ``(field path, message)`` in the model's notation."""
    if isinstance(messages, list):
        return [(path or "body", str(message)) for message in messages]
    out: list[tuple[str, str]] = []
    for key, inner in messages.items():
        if key == ma.exceptions.SCHEMA:
            sub = path
        elif isinstance(key, int):
            sub = f"{path}[{key}]"
        else:
            sub = f"{path}.{key}" if path else str(key)
        out += flatten(inner, sub)
    return out


def fast_outcome(data: Any) -> MetricBatch | tuple[str, str]:
    try:
        return parse_metric_batch(data)
    except ValidationError as err:
        return err.field, err.message


def schema_outcome(data: Any) -> MetricBatch | list[tuple[str, str]]:
    try:
        loaded: MetricBatch = MetricBatchSchema().load(data)
    except ma.ValidationError as err:
        return flatten(err.messages)
    return loaded


@pytest.mark.parametrize(("data"), [data for _, data in CASES], ids=[key for key, _ in CASES])
def test_fast_path_and_schema_agree(data: Any) -> None:
    data = resolve(data, datetime.now(UTC))
    fast, schema = fast_outcome(data), schema_outcome(data)
    if isinstance(fast, MetricBatch):
        assert schema == fast
    else:
        assert schema == [fast]
