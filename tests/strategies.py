"""Hypothesis strategies of wire batches: any JSON, batch-shaped JSON, and valid batches.

``json_values`` is any JSON document (the recursive strategy of the Hypothesis docs, with the
strings and numbers that broke parsers before: NUL, lone surrogates, bidi controls, numbers
past a double). ``metric_batch_like`` and ``log_batch_like`` are objects shaped like batches
whose every field is either valid or any JSON, so that generation reaches the checks deep
inside an item, not only the first one. ``metric_batches`` and ``log_batches`` are valid
batches without two points of one (host, name, labels, time).

Times are given relative to a ``now`` the test passes in (no clock read at import).
"""

from __future__ import annotations

import uuid
from datetime import datetime, timedelta, timezone
from typing import Any

from hypothesis import settings
from hypothesis import strategies as st

from miniobserv.model import LEVELS, MAX_ABS_VALUE, METRIC_NAMES, format_time

# Bounded, reproducible runs (CI): the same examples on every run, no example database.
FUZZ = settings(derandomize=True, database=None, deadline=None, max_examples=300)

TRICKY_TEXT = ["", " ", "\x00", "a\x00b", "\ud800", "x\udfffy", "\u202e", "\n", "\t", "\x1b[31m",
               "\u2028", "é", "🙂", "web-01", " web-01 ", "web-02", "cpu.usage_pct",
               "custom.app.requests", "custom.", "CUSTOM.x", "info", "warn", "debug", "error",
               "INFO", "core", "total", "2026-06-05T10:00:00Z", "2026-02-30T10:00:00Z",
               "2026-06-05T10:00:00", "9999-12-31T23:59:59+23:59", "0001-01-01T00:00:00-23:59",
               "1e400", "NaN", str(uuid.UUID(int=7)), "x" * 300, "y" * 5000]
TRICKY_NUMBERS = [0, -0.0, 1, -1, 2**63, -(2**63) - 1, 10**400, -(10**400), 1e308, 5e-324,
                  0.1, True, False]

_scalars = (st.none() | st.booleans() | st.integers()
            | st.floats(allow_nan=False, allow_infinity=False) | st.text(max_size=20)
            | st.sampled_from(TRICKY_TEXT) | st.sampled_from(TRICKY_NUMBERS))
_keys = st.text(max_size=12) | st.sampled_from(["host", "time", "name", "value", "labels",
                                                 "batch_id", "metrics", "entries", "level",
                                                 "message", "path", "source", "core", ""])
json_values: st.SearchStrategy[Any] = st.recursive(
    _scalars,
    lambda children: st.lists(children, max_size=4) | st.dictionaries(_keys, children,
                                                                        max_size=4),
    max_leaves=12)


def _or_any(valid: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
    """Mostly ``valid``, sometimes any JSON: one broken field among valid ones."""
    return st.integers(0, 9).flatmap(lambda pick: json_values if pick == 9 else valid)


def _optional_fields(required: dict[str, st.SearchStrategy[Any]],
                     optional: dict[str, st.SearchStrategy[Any]]) -> st.SearchStrategy[Any]:
    """Objects with ``required`` keys (each sometimes left out) and ``optional`` ones."""

    @st.composite
    def build(draw: st.DrawFn) -> dict[str, Any]:
        obj = draw(st.fixed_dictionaries(required, optional=optional))
        for key in list(obj):
            if draw(st.integers(0, 15)) == 15:  # the simplest draw (0) keeps it
                del obj[key]
        if draw(st.integers(0, 7)) == 7:
            obj[draw(_keys)] = draw(json_values)
        return obj

    return build()


def time_texts(now: datetime) -> st.SearchStrategy[str]:
    """RFC 3339 times from a year before ``now`` to 20 minutes after (past the 10-minute
    guard), in the agent's form and in others (offsets, many fractional digits, ``t``/``z``)."""
    offsets = st.integers(-20 * 60 * 10**6, 366 * 86400 * 10**6)

    def text(micros: int, form: int) -> str:
        moment = now - timedelta(microseconds=micros)
        plain = format_time(moment)
        if form == 1:
            return moment.astimezone(timezone(timedelta(hours=-7))).isoformat()
        if form == 2:
            return moment.astimezone(timezone(timedelta(hours=5, minutes=30))).isoformat(
                timespec="microseconds")
        if form == 3:
            return plain.replace("T", "t").replace("Z", "z")
        if form == 4:
            return plain[:-1] + ("" if "." in plain else ".") + "123456789Z"
        return plain

    return st.builds(text, offsets, st.integers(0, 4))


_label_keys = st.from_regex(r"[A-Za-z_][A-Za-z0-9_]{0,10}", fullmatch=True)
_label_values = st.text(st.characters(exclude_categories=("Cc", "Cs", "Cf", "Zl", "Zp")),
                        min_size=1, max_size=20)
valid_labels = st.dictionaries(_label_keys, _label_values, max_size=4)
valid_hosts = st.text(st.characters(categories=("L", "N")), min_size=1, max_size=30) | \
    st.from_regex(r"[a-z0-9][a-z0-9.-]{0,30}", fullmatch=True)
metric_names = st.sampled_from(sorted(METRIC_NAMES)) | \
    st.from_regex(r"custom(\.[a-z0-9_]{1,8}){1,3}", fullmatch=True)
metric_values = st.floats(-MAX_ABS_VALUE, MAX_ABS_VALUE) | st.integers(-2**70, 2**70) | \
    st.sampled_from([MAX_ABS_VALUE, -MAX_ABS_VALUE, 1.34e99, 5e-324])
# What COPY text, LIKE and JSON escaping could get wrong: backslashes, \N, tabs, line breaks.
_COPY_TEXT = ["\\N", "\\", "a\tb", "\\.", "line\r\n", "50% off_", "é\u2028x", "'; --", "{}"]
_messages = st.text(st.characters(exclude_categories=("Cs",), exclude_characters="\x00"),
                    min_size=1, max_size=200) | st.sampled_from(_COPY_TEXT)
_paths = st.text(st.characters(exclude_categories=("Cs",), exclude_characters="\x00"),
                 min_size=1, max_size=60)
_batch_ids = st.uuids().map(str)


def metric_batch_like(now: datetime) -> st.SearchStrategy[Any]:
    """Objects shaped like a metrics batch, each field valid or any JSON."""
    item = _optional_fields(
        {"time": _or_any(time_texts(now)), "name": _or_any(metric_names),
         "value": _or_any(metric_values)},
        {"labels": _or_any(valid_labels), "host": _or_any(valid_hosts)})
    return _or_any(_optional_fields(
        {"host": _or_any(valid_hosts), "metrics": _or_any(st.lists(_or_any(item), min_size=1, max_size=6))},
        {"batch_id": _or_any(_batch_ids)}))


def log_batch_like(now: datetime) -> st.SearchStrategy[Any]:
    """Objects shaped like a logs batch, each field valid or any JSON."""
    item = _optional_fields(
        {"time": _or_any(time_texts(now)), "level": _or_any(st.sampled_from(LEVELS)),
         "message": _or_any(_messages)},
        {"path": _or_any(_paths), "source": _or_any(_paths), "labels": _or_any(valid_labels),
         "host": _or_any(valid_hosts)})
    return _or_any(_optional_fields(
        {"host": _or_any(valid_hosts), "entries": _or_any(st.lists(_or_any(item), min_size=1, max_size=6))},
        {"batch_id": _or_any(_batch_ids)}))


# --- valid batches, for the round trips through storage ------------------------------------

SeriesKey = tuple[str, str, tuple[tuple[str, str], ...]]


@st.composite
def metric_points(draw: st.DrawFn, now: datetime, host: str,
                  max_points: int = 40) -> list[dict[str, Any]]:
    """Valid wire points of ``host``: a few names, and per name series whose label sets all
    have the same keys (a filter on every label then matches one series exactly), each point
    a distinct time of its series, within the last hour (raw data on every store)."""
    points: list[dict[str, Any]] = []
    for name in draw(st.lists(metric_names, min_size=1, max_size=3, unique=True)):
        keys = draw(st.lists(_label_keys, max_size=2, unique=True))
        label_sets = [{}] if not keys else draw(st.lists(
            st.fixed_dictionaries({key: _label_values for key in keys}), min_size=1,
            max_size=3, unique_by=lambda labels: tuple(sorted(labels.items()))))
        for labels in label_sets:
            times = draw(st.lists(st.integers(0, 3600 * 10**6), min_size=1, max_size=8,
                                  unique=True))
            for micros in times:
                point = {"time": format_time(now - timedelta(microseconds=micros)),
                         "name": name, "value": draw(metric_values)}
                if labels:
                    point["labels"] = labels
                points.append(point)
    return points[:max_points]


@st.composite
def log_entries(draw: st.DrawFn, now: datetime) -> list[dict[str, Any]]:
    """1 to 20 valid wire log entries of the last day (any text; path or source or none)."""
    entries = []
    for _ in range(draw(st.integers(1, 20))):
        entry: dict[str, Any] = {
            "time": format_time(now - timedelta(microseconds=draw(
                st.integers(0, 86400 * 10**6)))),
            "level": draw(st.sampled_from(LEVELS)), "message": draw(_messages)}
        where = draw(st.sampled_from(["path", "source", None]))
        if where is not None:
            entry[where] = draw(_paths)
        labels = draw(valid_labels)
        if labels:
            entry["labels"] = labels
        entries.append(entry)
    return entries

