"""Properties of batch validation, for any JSON (Hypothesis; derandomized, bounded).

Whatever decoded JSON comes in, ``parse_metric_batch`` and ``parse_log_batch`` either return
a batch or raise ValidationError naming a field of the batch (``host``, ``metrics[3].value``
...), never anything else; a batch they accept validates again, from its own wire form, to
the same batch; and the marshmallow schemas of the same shapes accept exactly what the
parsers accept, building the same batches.
"""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta
from typing import Any

import marshmallow as ma
import pytest
from hypothesis import given
from hypothesis import strategies as st

from miniobserv.errors import ValidationError
from miniobserv.model import LogBatch, MetricBatch, parse_log_batch, parse_metric_batch
from miniobserv.schemas import LogBatchSchema, MetricBatchSchema
from tests.strategies import FUZZ, log_batch_like, metric_batch_like

# A field path: the body, or a batch field, then [index] and .key parts (a key may be any text).
FIELD = re.compile(r"(body|host|batch_id|metrics|entries)(\[\d+\])?(\.|$)", re.DOTALL)
# The model's check_time refuses times past now + 10 minutes; the schemas read the clock
# themselves, a moment later: points this close to that edge may fall on either side.
EDGE = timedelta(seconds=5)


def assert_names_a_field(err: ValidationError) -> None:
    assert FIELD.match(err.field), repr(err.field)
    assert err.message
    assert str(err) == f"{err.field}: {err.message}"


def refusal(parse: Any, data: Any, now: datetime) -> ValidationError | None:
    try:
        parse(data, now)
    except ValidationError as err:
        return err
    return None


def near_the_edge(data: Any, now: datetime) -> bool:
    """True when a time of ``data`` is within EDGE of now + 10 minutes."""
    limit = now + timedelta(minutes=10)
    if isinstance(data, dict):
        return any(near_the_edge(value, now) for value in data.values())
    if isinstance(data, list):
        return any(near_the_edge(value, now) for value in data)
    if isinstance(data, str):
        try:
            moment = datetime.fromisoformat(data.replace("z", "Z").replace("t", "T"))
        except ValueError:
            return False
        return moment.tzinfo is not None and abs(moment - limit) <= EDGE
    return False


KINDS = {"metrics": (metric_batch_like, parse_metric_batch, MetricBatchSchema, MetricBatch),
         "logs": (log_batch_like, parse_log_batch, LogBatchSchema, LogBatch)}


@pytest.mark.parametrize("kind", sorted(KINDS))
@FUZZ
@given(data=st.data())
def test_a_batch_is_accepted_or_refused_naming_a_field(kind: str, data: st.DataObject) -> None:
    batch_like, parse, _, record_type = KINDS[kind]
    now = datetime.now(UTC)
    body = data.draw(batch_like(now))
    try:
        batch = parse(body, now)
    except ValidationError as err:
        assert_names_a_field(err)
        return
    assert isinstance(batch, record_type)
    assert parse(batch.to_json(), now) == batch


@pytest.mark.parametrize("kind", sorted(KINDS))
@FUZZ
@given(data=st.data())
def test_the_schema_accepts_what_the_parser_accepts(kind: str, data: st.DataObject) -> None:
    batch_like, parse, schema, _ = KINDS[kind]
    now = datetime.now(UTC)
    body = data.draw(batch_like(now))
    refused = refusal(parse, body, now)
    try:
        loaded = schema().load(body)
    except ma.ValidationError as err:
        assert refused is not None or near_the_edge(body, now), err.messages
        return
    assert refused is None or near_the_edge(body, now), str(refused)
    if refused is None:
        assert loaded == parse(body, now)
