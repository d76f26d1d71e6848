"""Query answers format each bucket start once per answer, and exactly as format_time does."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone

from miniobserv.model import format_time
from miniobserv.server.api.metrics import query_answer
from miniobserv.server.storage.base import MetricQuery, Point, Series

START = datetime(2026, 6, 5, tzinfo=UTC)
PLUS_2 = timezone(timedelta(hours=2))


def grouped(series: list[Series]) -> dict[str, object]:
    query = MetricQuery(host="web-01", name="cpu.usage_pct", start=START,
                        end=START + timedelta(hours=1), group_by="core")
    return query_answer(query, series)


def test_every_point_of_every_series_has_format_times_text() -> None:
    times = [START + timedelta(minutes=i, microseconds=micro)
             for i in range(60) for micro in (0, 250_000)]
    series = [Series({"core": str(core)}, [Point(at, float(core)) for at in times])
              for core in range(5)]
    answer = grouped(series)
    assert answer["series"] == [
        {"labels": {"core": str(core)},
         "points": [{"time": format_time(at), "value": float(core)} for at in times]}
        for core in range(5)]


def test_the_same_instant_in_another_zone_reads_the_same() -> None:
    utc, plus_2 = START, START.astimezone(PLUS_2)
    answer = grouped([Series({"core": "0"}, [Point(utc, 1.0)]),
                      Series({"core": "1"}, [Point(plus_2, 2.0)]),
                      Series({"core": "2"}, [Point(START + timedelta(seconds=1), 3.0)])])
    texts = [s["points"][0]["time"] for s in answer["series"]]  # type: ignore[attr-defined]
    assert texts == ["2026-06-05T00:00:00Z", "2026-06-05T00:00:00Z", "2026-06-05T00:00:01Z"]
