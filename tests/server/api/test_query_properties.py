"""Query-string parsers, for any parameters (Hypothesis; derandomized, bounded).

``parse_metric_query`` (with its cost check), ``parse_top_query``, ``parse_log_query`` and
``latest``'s ``within`` either build a query or raise ValidationError naming one of their
parameters; never another exception (the schemathesis run covers them through HTTP with
fewer, schema-shaped values).
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st
from werkzeug.datastructures import MultiDict

from miniobserv.errors import ValidationError
from miniobserv.model import LEVELS, format_time
from miniobserv.server.api.fleet_metrics import parse_top_query, parse_within
from miniobserv.server.api.logs import parse_log_query
from miniobserv.server.api.metrics import checked_query
from miniobserv.server.storage.base import AGGREGATES, BUCKETS, TOP_ORDERS
from tests.fakes import FakeMetricsRepository
from tests.strategies import FUZZ, TRICKY_TEXT

METRIC_PARAMS = ["host", "name", "from", "to", "bucket", "agg", "label", "group_by"]
TOP_PARAMS = ["name", "from", "to", "agg", "label", "limit", "order"]
LOG_PARAMS = ["host", "level", "min_level", "from", "to", "q", "search", "limit", "cursor"]
VALUES = ["cpu.usage_pct", "custom.a", "1m", "10s", "1d", "avg", "p99", "last", "core",
          "host", "core:0", "core:", ":0", "a:b:c", "asc", "desc", "0", "1", "100", "101",
          "-1", "00000000000000000000001", "9" * 30, "info", "error", "5m", "10s", "1.5h",
          "1e400s", "0s", "2026-06-05T10:00:00 02:00", "2026-06-05T10:00:00+02:00 "]


def times(now: datetime) -> st.SearchStrategy[str]:
    """Times around ``now`` (a second to 500 days away), and the far ends of the calendar."""
    offsets = st.integers(-500 * 86400, 500 * 86400).map(lambda s: timedelta(seconds=s))
    return st.builds(lambda d: format_time(now + d), offsets) | st.sampled_from(
        ["0001-01-01T00:00:00Z", "0001-01-01T00:00:00+23:59", "9999-12-31T23:59:59Z",
         "9999-12-31T23:59:59-23:59", "1970-01-01T00:00:00Z"])


def parameters(names: list[str], now: datetime) -> st.SearchStrategy[MultiDict[str, str]]:
    """Each parameter usually plausible (so that parsing gets past the first), sometimes any
    text or absent, sometimes repeated; in a random order."""
    anything = st.sampled_from(VALUES) | st.sampled_from(TRICKY_TEXT) | st.text(max_size=12) \
        | times(now)
    ago = st.integers(0, 40 * 86400).map(lambda s: format_time(now - timedelta(seconds=s)))
    ahead = st.integers(0, 86400).map(lambda s: format_time(now + timedelta(seconds=s)))
    plausible = {"from": ago, "to": ahead, "name": st.sampled_from(
        ["cpu.usage_pct", "custom.a"]), "host": st.just("web-01"), "label": st.sampled_from(
        ["core:0", "core:total"]), "group_by": st.sampled_from(["core", "host"]),
        "bucket": st.sampled_from(list(BUCKETS)), "agg": st.sampled_from(AGGREGATES),
        "level": st.sampled_from(LEVELS), "min_level": st.sampled_from(LEVELS),
        "limit": st.integers(0, 2000).map(str), "cursor": st.integers(0, 10**6).map(str),
        "order": st.sampled_from(TOP_ORDERS), "q": st.just("err"), "search": st.just("err")}

    @st.composite
    def build(draw: st.DrawFn) -> MultiDict[str, str]:
        pairs = []
        for name in names:
            pick = draw(st.integers(0, 9))
            if pick >= (3 if name == "min_level" else 8):  # min_level: rarely with level
                continue
            pairs.append((name, draw(anything if pick == 7 else plausible[name])))
        pairs += draw(st.lists(st.tuples(st.sampled_from(names), anything), max_size=2))
        return MultiDict(draw(st.permutations(pairs)))

    return build()


def assert_names_one_of(err: ValidationError, names: list[str]) -> None:
    assert err.field in names, (err.field, err.message)
    assert err.message


@pytest.mark.parametrize("rollup", [False, True])
@FUZZ
@given(data=st.data())
def test_a_metric_query_is_built_or_refused_naming_a_parameter(rollup: bool,
                                                               data: st.DataObject) -> None:
    store = FakeMetricsRepository()
    store.rollup = rollup
    args = data.draw(parameters(METRIC_PARAMS, datetime.now(UTC)))
    try:
        query = checked_query(args, store, max_points=10_000)
    except ValidationError as err:
        assert_names_one_of(err, METRIC_PARAMS)
        return
    assert query.start < query.end


def _top_is_sane(query: Any) -> bool:
    return bool(query.start < query.end and 1 <= query.limit <= 100)


def _log_is_sane(query: Any) -> bool:
    return query.start is None or query.end is None or query.start <= query.end


PARSERS = {"top": (parse_top_query, TOP_PARAMS, _top_is_sane),
           "logs": (parse_log_query, LOG_PARAMS, _log_is_sane)}


@pytest.mark.parametrize("kind", sorted(PARSERS))
@FUZZ
@given(data=st.data())
def test_a_query_is_built_or_refused_naming_a_parameter(kind: str, data: st.DataObject) -> None:
    parse, names, is_sane = PARSERS[kind]
    args = data.draw(parameters(names, datetime.now(UTC)))
    try:
        query = parse(args)
    except ValidationError as err:
        assert_names_one_of(err, names)
        return
    assert is_sane(query)


@FUZZ
@given(st.sampled_from(VALUES) | st.sampled_from(TRICKY_TEXT) | st.text(max_size=12)
       | st.from_regex(r"[0-9]{1,20}(\.[0-9]{1,5})?(ms|s|m|h|d)", fullmatch=True))
def test_within_is_a_duration_or_refused_naming_it(text: str) -> None:
    try:
        within = parse_within(text)
    except ValidationError as err:
        assert err.field == "within"
        return
    assert timedelta(seconds=10) <= within <= timedelta(days=1)
