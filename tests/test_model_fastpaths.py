"""The model's fast paths give exactly what the general code gives: format_time byte for byte,
parse_time's ``...Z`` path the same datetimes and the same refusals as the offset path."""

from __future__ import annotations

import itertools
from datetime import UTC, datetime, timedelta, timezone
from zoneinfo import ZoneInfo

import pytest

from miniobserv.errors import ValidationError
from miniobserv.model import format_time, parse_time


def reference_format_time(value: datetime) -> str:
    """format_time as it was written before its fast path (strftime)."""
    value = value.astimezone(UTC)
    text = f"{value.year:04d}-" + value.strftime("%m-%dT%H:%M:%S")
    if value.microsecond:
        text += f".{value.microsecond:06d}".rstrip("0")
    return text + "Z"


ZONES = [UTC, timezone(timedelta(0)), timezone(timedelta(hours=2)),
         timezone(-timedelta(hours=5, minutes=30)), timezone(timedelta(hours=23, minutes=59)),
         ZoneInfo("UTC"), ZoneInfo("Europe/Paris"), ZoneInfo("America/St_Johns")]
MICROS = [0, 1, 10, 100, 120000, 123456, 500000, 999999, 100000, 10]
MOMENTS = [(2026, 6, 5, 10, 0, 0), (2026, 1, 1, 0, 0, 0), (2024, 2, 29, 23, 59, 59),
           (1999, 12, 31, 23, 59, 59), (2026, 3, 29, 2, 30, 0), (2026, 10, 25, 2, 30, 0),
           (1000, 1, 1, 12, 0, 0), (999, 6, 1, 12, 0, 0), (5, 1, 2, 3, 4, 5),
           (9999, 12, 30, 12, 0, 0), (1970, 1, 1, 0, 0, 0)]
TIMES = [datetime(*moment, micro, tzinfo=zone)  # type: ignore[misc]
         for moment, micro, zone in itertools.product(MOMENTS, MICROS[:6], ZONES)]
TIMES += [datetime.fromtimestamp(seconds, UTC) for seconds in range(0, 10 ** 9, 86_399_999)]
TIMES += [datetime(2026, 6, 5, 10, 0, 0, micro) for micro in MICROS]  # naive: local time


@pytest.mark.parametrize("value", TIMES, ids=str)
def test_format_time_is_byte_identical_to_the_strftime_version(value: datetime) -> None:
    assert format_time(value) == reference_format_time(value)


def test_the_time_table_is_large() -> None:
    assert len(TIMES) >= 500


def outcome(text: str) -> datetime | str:
    try:
        return parse_time(text)
    except ValidationError as err:
        return str(err)


CLOCKS = ["00:00:00", "23:59:59", "12:34:56", "24:00:00", "23:60:00", "23:59:60", "09:05:01",
          "2:00:00", "19:99:00"]
FRACTIONS = ["", ".0", ".5", ".123456", ".000001", ".1234567", ".999999999", "."]
DATES = ["2026-06-05", "2024-02-29", "2025-02-29", "2026-02-30", "2026-13-01", "2026-00-01",
         "0001-01-01", "9999-12-31", "0000-01-01", "2026-04-31", "1970-01-01"]


@pytest.mark.parametrize(("date", "clock", "fraction"),
                         list(itertools.product(DATES, CLOCKS, FRACTIONS)))
def test_parse_time_z_form_matches_the_offset_form(date: str, clock: str, fraction: str) -> None:
    """``...Z`` takes the fast path, ``...+00:00`` the general one: the same answer."""
    z_form, offset_form = (f"{date}T{clock}{fraction}{zone}" for zone in ("Z", "+00:00"))
    fast, general = outcome(z_form), outcome(offset_form)
    assert fast == general
    if isinstance(fast, datetime):
        assert fast.tzinfo is UTC
