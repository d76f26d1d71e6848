"""Query and latest answers write every time exactly as format_time does, fast path or not.

orjson writes whole-second UTC datetimes itself (``answer_response``); every other time
(microseconds, another zone) goes through format_time. The written JSON is what is checked.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta, timezone
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from flask import Flask

from miniobserv.model import format_time
from miniobserv.server.api.jsonio import OrjsonProvider, answer_response, wire_time
from miniobserv.server.api.metrics import query_answer
from miniobserv.server.storage.base import MetricQuery, Point, Series

START = datetime(2026, 6, 5, tzinfo=UTC)
PLUS_2 = timezone(timedelta(hours=2))
# The edges of what orjson and format_time could write apart: no, one and six fractional
# digits, trailing zeros, the last microsecond of a bucket, the first of the next, and years
# of fewer than four digits.
EDGE_TIMES = [START, START + timedelta(microseconds=1), START + timedelta(microseconds=10),
              START + timedelta(microseconds=250_000), START + timedelta(microseconds=999_999),
              START + timedelta(minutes=1) - timedelta(microseconds=1),
              START + timedelta(minutes=1), datetime(1, 1, 1, tzinfo=UTC),
              datetime(999, 12, 31, 23, 59, 59, tzinfo=UTC),
              datetime(9999, 12, 31, 23, 59, 59, 999_999, tzinfo=UTC)]


def written(answer: dict[str, Any], debug: bool = False) -> Any:
    """``answer`` as answer_response writes it, parsed back."""
    app = Flask(__name__)
    app.json = OrjsonProvider(app)
    app.debug = debug
    with app.app_context():
        response = answer_response(answer)
    assert response.mimetype == "application/json"
    return json.loads(response.get_data())


def grouped(series: list[Series]) -> dict[str, Any]:
    query = MetricQuery(host="web-01", name="cpu.usage_pct", start=START,
                        end=START + timedelta(hours=1), group_by="core")
    return query_answer(query, series)


def test_every_point_of_every_series_has_format_times_text() -> None:
    times = [START + timedelta(minutes=i, microseconds=micro)
             for i in range(60) for micro in (0, 250_000)]
    series = [Series({"core": str(core)}, [Point(at, float(core)) for at in times])
              for core in range(5)]
    assert written(grouped(series))["series"] == [
        {"labels": {"core": str(core)},
         "points": [{"time": format_time(at), "value": float(core)} for at in times]}
        for core in range(5)]


@pytest.mark.parametrize("at", EDGE_TIMES, ids=format_time)
def test_one_series_point_at_an_edge_reads_as_format_time(at: datetime) -> None:
    query = MetricQuery(host="web-01", name="cpu.usage_pct", start=START,
                        end=START + timedelta(hours=1))
    answer = written(query_answer(query, [Series({}, [Point(at, 1.5)])]))
    assert answer == {"host": "web-01", "name": "cpu.usage_pct", "bucket": "1m", "agg": "avg",
                      "points": [{"time": format_time(at), "value": 1.5}]}


@pytest.mark.parametrize("at", EDGE_TIMES, ids=format_time)
def test_wire_time_writes_as_format_time(at: datetime) -> None:
    assert written({"t": wire_time(at)}) == {"t": format_time(at)}


def test_the_same_instant_in_another_zone_reads_the_same() -> None:
    utc, plus_2 = START, START.astimezone(PLUS_2)
    etc_utc = START.astimezone(ZoneInfo("Etc/UTC"))  # a zero offset that is not datetime.UTC
    answer = written(grouped([Series({"core": "0"}, [Point(utc, 1.0)]),
                              Series({"core": "1"}, [Point(plus_2, 2.0)]),
                              Series({"core": "2"}, [Point(START + timedelta(seconds=1), 3.0)]),
                              Series({"core": "3"}, [Point(etc_utc, 4.0)])]))
    texts = [s["points"][0]["time"] for s in answer["series"]]
    assert texts == ["2026-06-05T00:00:00Z", "2026-06-05T00:00:00Z", "2026-06-05T00:00:01Z",
                     "2026-06-05T00:00:00Z"]
    assert wire_time(plus_2) == wire_time(etc_utc) == "2026-06-05T00:00:00Z"


def test_debug_answers_are_indented_like_flasks_and_mean_the_same() -> None:
    answer = {"points": [Point(START, 1.0)], "since": wire_time(START)}
    app = Flask(__name__)
    app.json = OrjsonProvider(app)
    app.debug = True
    with app.app_context():
        data = answer_response(answer).get_data(as_text=True)
    assert data.startswith('{\n  "points": [')
    assert written(answer, debug=True) == written(answer) == {
        "points": [{"time": "2026-06-05T00:00:00Z", "value": 1.0}],
        "since": "2026-06-05T00:00:00Z"}


@pytest.mark.parametrize("odd", ["\ud800", 1 << 70], ids=["lone surrogate", "past 64 bits"])
def test_what_orjson_refuses_is_written_by_the_standard_library_alike(odd: Any) -> None:
    at = START + timedelta(microseconds=250_000)
    answer = {"labels": {"k": odd}, "points": [Point(START, 1.0), Point(at, 2.0)],
              "time": wire_time(START)}
    expected = {"labels": {"k": odd}, "points": [{"time": "2026-06-05T00:00:00Z", "value": 1.0},
                                                 {"time": format_time(at), "value": 2.0}],
                "time": "2026-06-05T00:00:00Z"}
    assert written(answer) == written(answer, debug=True) == expected
