"""Metric ingestion and queries: ``/api/v1/metrics`` (SPEC §3)."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

from flask import Blueprint, Response, jsonify, request
from werkzeug.datastructures import MultiDict

from miniobserv.errors import ValidationError
from miniobserv.model import (
    MAX_LABEL_VALUE_LEN,
    MAX_LABELS,
    check_host,
    check_name,
    format_time,
    is_label_key,
    parse_metric_batch,
    parse_time,
)
from miniobserv.server.api.auth import INGEST, READ, require
from miniobserv.server.api.body import read_json_body
from miniobserv.server.api.context import current_config, current_repos
from miniobserv.server.api.jsonio import answer_response
from miniobserv.server.storage.base import (
    AGGREGATES,
    BUCKETS,
    MetricQuery,
    MetricsRepository,
    Point,
    Series,
    to_micros,
)

bp = Blueprint("metrics", __name__, url_prefix="/api/v1/metrics")

MAX_RANGE = timedelta(days=30)
# A query the store answers from a rollup (TimescaleDB, 1h/1d buckets) may span this much:
# as long as migration 0005 keeps the rollups.
MAX_ROLLUP_RANGE = timedelta(days=400)
DEFAULT_BUCKET = "1m"
DEFAULT_AGG = "avg"
MAX_GROUP_SERIES = 1000  # series one group_by query may answer


@bp.post("")
@require(INGEST)
def ingest() -> tuple[Response, int]:
    """Validate a whole batch, store it in one transaction, answer 202 with its size."""
    data = read_json_body(current_config().max_body_bytes)
    batch = parse_metric_batch(data)
    count = current_repos().metrics.insert_batch(batch)
    return jsonify(ingested=count), 202


@bp.get("/query")
@require(READ)
def query() -> Response:
    """Bucketed points of one series, or one series per value of ``group_by``."""
    metrics = current_repos().metrics
    metric_query = checked_query(request.args, metrics, current_config().max_query_points)
    series = metrics.query(metric_query)
    return answer_response(query_answer(metric_query, series))


@bp.get("/hosts")
@require(READ)
def hosts() -> Response:
    """Every host that ever sent an accepted batch, sorted."""
    return jsonify(hosts=sorted(current_repos().metrics.hosts()))


def query_answer(query: MetricQuery, series: Sequence[Series]) -> dict[str, Any]:
    """The wire shape of a query result, for :func:`answer_response`."""
    answer: dict[str, Any] = {"host": query.host, "name": query.name, "bucket": query.bucket,
                              "agg": query.agg}
    if query.group_by is None:
        answer["points"] = _points(series[0].points) if series else []
    else:
        answer["series"] = [{"labels": dict(s.labels), "points": _points(s.points)}
                            for s in series]
    return answer


def _points(points: Sequence[Point]) -> list[Point | dict[str, Any]]:
    """The wire points: each Point as it is (orjson writes it ``{"time": …, "value": …}``,
    its whole-second UTC time as format_time would), the rare others as format_time's text.
    Bucket starts are whole seconds on every store: about 0.1 µs a point instead of a
    ``format_time`` call and a dict (1.7 µs)."""
    return [point if point.time.microsecond == 0 and point.time.tzinfo is UTC
            else {"time": format_time(point.time), "value": point.value} for point in points]


# --- query parameters ----------------------------------------------------------------------


def parse_metric_query(args: MultiDict[str, str],
                       serves_from_rollup: Callable[[MetricQuery], bool] | None = None,
                       ) -> MetricQuery:
    """Validate the query-string parameters; raise ValidationError naming the parameter.

    The range may exceed MAX_RANGE, up to MAX_ROLLUP_RANGE, only when ``serves_from_rollup``
    (the repository's) says the store answers the query from a rollup; it is asked only then.
    ``host`` is optional: without it the query is fleet-wide (every host's points as one
    series, or one series per host with ``group_by=host``).
    """
    host_text = args.get("host")
    host = None if host_text is None else check_host(host_text)
    name = check_name(_required(args, "name"))
    start = parse_query_time(_required(args, "from"), "from")
    end = parse_query_time(_required(args, "to"), "to")
    if start >= end:
        raise ValidationError("from", "must be before to")
    query = MetricQuery(host=host, name=name, start=start, end=end,
                        bucket=_choice(args, "bucket", DEFAULT_BUCKET, tuple(BUCKETS)),
                        agg=_choice(args, "agg", DEFAULT_AGG, AGGREGATES),
                        labels=parse_label_filters(args.getlist("label")),
                        group_by=_group_by(args.get("group_by")))
    check_range(query, serves_from_rollup)
    return query


def checked_query(args: MultiDict[str, str], store: MetricsRepository,
                  max_points: int) -> MetricQuery:
    """:func:`parse_metric_query`, then :func:`check_cost` against ``store``."""
    query = parse_metric_query(args, store.serves_from_rollup)
    check_cost(query, store, max_points)
    return query


def bucket_count(query: MetricQuery) -> int:
    """The epoch-aligned buckets ``[start, end]`` touches (the first may start before it)."""
    width = query.bucket_seconds * 1_000_000
    return to_micros(query.end) // width - to_micros(query.start) // width + 1


def check_cost(query: MetricQuery, store: MetricsRepository, max_points: int) -> None:
    """Refuse, before it runs, a query that could answer more than ``max_points`` points.

    At most buckets × series points: the buckets follow from the range, the series are one
    without ``group_by`` and, with it, counted by the store (at most MAX_GROUP_SERIES + 1,
    without reading points). ValidationError names ``group_by`` past MAX_GROUP_SERIES
    series, else ``bucket``, with the number of points.
    """
    buckets = bucket_count(query)
    if buckets > max_points:
        raise _too_many_points(buckets, max_points)
    if query.group_by is None:
        return
    series = store.count_series(query, MAX_GROUP_SERIES + 1)
    if series > MAX_GROUP_SERIES:
        raise ValidationError("group_by", f"the query would return more than "
                                          f"{MAX_GROUP_SERIES} series (at least "
                                          f"{series * buckets} points); at most "
                                          f"{MAX_GROUP_SERIES} series: add label filters")
    if series * buckets > max_points:
        raise _too_many_points(series * buckets, max_points)


def _too_many_points(points: int, max_points: int) -> ValidationError:
    return ValidationError("bucket", f"the query would return up to {points} points "
                                     f"(buckets × series), more than MAX_QUERY_POINTS="
                                     f"{max_points}: use a larger bucket or a shorter range")


def check_range(query: MetricQuery,
                serves_from_rollup: Callable[[MetricQuery], bool] | None) -> None:
    """Raise ValidationError naming ``to`` unless the range is within the query's limit."""
    span = query.end - query.start
    if span <= MAX_RANGE:
        return
    if span <= MAX_ROLLUP_RANGE and serves_from_rollup is not None and \
            serves_from_rollup(query):
        return
    raise ValidationError("to", f"the range from..to must be at most {MAX_RANGE.days} days "
                                f"({MAX_ROLLUP_RANGE.days} days for queries served from a "
                                "rollup: bucket 1h or 1d, agg avg, min, max, sum, count or "
                                "last, on TimescaleDB)")


def _required(args: MultiDict[str, str], key: str) -> str:
    value = args.get(key)
    if value is None:
        raise ValidationError(key, "is required")
    return str(value)


def parse_query_time(text: str, key: str) -> datetime:
    """An RFC 3339 query parameter; ValidationError names ``key``.

    An unescaped "+" in a query string arrives as a space: "10:00:00 02:00" meant "+02:00".
    """
    if len(text) > 6 and text[-6] == " " and text[-3] == ":":
        text = f"{text[:-6]}+{text[-5:]}"
    return parse_time(text, key)


def _choice(args: MultiDict[str, str], key: str, default: str, allowed: Sequence[str]) -> str:
    value = args.get(key, default)
    if value not in allowed:
        raise ValidationError(key, f"must be one of {', '.join(allowed)}")
    return str(value)


def _group_by(value: str | None) -> str | None:
    """A label key, or ``host`` (HOST_GROUP: one series per host, never a label so named)."""
    if value is None:
        return None
    if not is_label_key(value):
        raise ValidationError("group_by", "must be host or a label key "
                                          "([A-Za-z_][A-Za-z0-9_]*, at most 64 characters)")
    return value


def parse_label_filters(values: Sequence[str]) -> tuple[tuple[str, str], ...]:
    """``key:value`` filters, split at the first colon; duplicates collapse."""
    if len(values) > MAX_LABELS:
        raise ValidationError("label", f"at most {MAX_LABELS} label filters")
    filters: dict[tuple[str, str], None] = {}
    for text in values:
        key, sep, value = text.partition(":")
        if not sep:
            raise ValidationError("label", f"{text[:80]!r} must be key:value")
        if not is_label_key(key):
            raise ValidationError("label", f"{key[:80]!r} is not a label key "
                                           "([A-Za-z_][A-Za-z0-9_]*, at most 64 characters)")
        if not value or len(value) > MAX_LABEL_VALUE_LEN or "\x00" in value:
            raise ValidationError("label", f"the value of {key!r} must be 1 to "
                                           f"{MAX_LABEL_VALUE_LEN} characters")
        filters[(key, value)] = None
    return tuple(filters)
