"""Every rule of the data model (SPEC §2) at its edges."""

from __future__ import annotations

import math
import uuid
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import marshmallow as ma
import pytest

from miniobserv.errors import ValidationError
from miniobserv.model import (
    LEVELS,
    METRIC_NAMES,
    METRIC_SPECS,
    Metric,
    MetricBatch,
    check_host,
    check_labels,
    check_message,
    check_name,
    check_time,
    check_value,
    format_time,
    is_metric_name,
    parse_log_batch,
    parse_metric_batch,
    parse_time,
)
from miniobserv.schemas import LogBatchSchema, MetricBatchSchema

NOW = datetime(2026, 6, 5, 12, 0, 0, tzinfo=UTC)
WHEN = "2026-06-05T11:59:00Z"


def metric(**overrides: Any) -> dict[str, Any]:
    item = {"time": WHEN, "host": "web-01", "name": "cpu.usage_pct", "value": 1.5,
            "labels": {"core": "total"}, **overrides}
    return {k: v for k, v in item.items() if v is not None}


def metric_batch(count: int = 1, **overrides: Any) -> dict[str, Any]:
    return {"host": "web-01", "metrics": [metric(**overrides) for _ in range(count)]}


def entry(**overrides: Any) -> dict[str, Any]:
    item = {"time": WHEN, "host": "web-01", "level": "info", "message": "hello", **overrides}
    return {k: v for k, v in item.items() if v is not None}


def log_batch(count: int = 1, **overrides: Any) -> dict[str, Any]:
    return {"host": "web-01", "entries": [entry(**overrides) for _ in range(count)]}


def error(call: Any, *args: Any, **kwargs: Any) -> str:
    with pytest.raises(ValidationError) as info:
        call(*args, **kwargs)
    return str(info.value)


# --- time ----------------------------------------------------------------------------------


@pytest.mark.parametrize(("text", "expected"), [
    ("2026-06-05T10:00:00Z", datetime(2026, 6, 5, 10, tzinfo=UTC)),
    ("2026-06-05t10:00:00z", datetime(2026, 6, 5, 10, tzinfo=UTC)),
    ("2026-06-05T12:30:00+02:30", datetime(2026, 6, 5, 10, tzinfo=UTC)),
    ("2026-06-05T06:00:00-04:00", datetime(2026, 6, 5, 10, tzinfo=UTC)),
    ("2026-06-05T10:00:00+00:00", datetime(2026, 6, 5, 10, tzinfo=UTC)),
    ("2026-06-05T10:00:00-00:00", datetime(2026, 6, 5, 10, tzinfo=UTC)),
    ("2026-06-05T10:00:00.5Z", datetime(2026, 6, 5, 10, 0, 0, 500000, tzinfo=UTC)),
    ("2026-06-05T10:00:00.123Z", datetime(2026, 6, 5, 10, 0, 0, 123000, tzinfo=UTC)),
    ("2026-06-05T10:00:00.123456789Z", datetime(2026, 6, 5, 10, 0, 0, 123456, tzinfo=UTC)),
    ("2026-06-05T10:00:00+23:59", datetime(2026, 6, 4, 10, 1, tzinfo=UTC)),
    ("2024-02-29T00:00:00Z", datetime(2024, 2, 29, tzinfo=UTC)),
])
def test_parse_time_accepts_rfc3339(text: str, expected: datetime) -> None:
    parsed = parse_time(text)
    assert parsed == expected and parsed.tzinfo == UTC


@pytest.mark.parametrize("text", [
    "2026-06-05T10:00:00",  # zone-less
    "2026-06-05T10:00Z",
    "2026-06-05 10:00:00Z",
    "2026-06-05",
    "2026-06-05T10:00:00+0200",
    "2026-06-05T10:00:00+2:00",
    "2026-06-05T10:00:00 Z",
    " 2026-06-05T10:00:00Z",
    "2026-06-05T10:00:00Z\n",
    "2026-06-05T10:00:00.Z",
    "２０２６-06-05T10:00:00Z",  # full-width digits
    "",
])
def test_parse_time_refuses_other_shapes(text: str) -> None:
    assert "must be RFC 3339 with an offset" in error(parse_time, text)


@pytest.mark.parametrize("text", [
    "2026-02-30T10:00:00Z", "2025-02-29T10:00:00Z", "2026-13-01T10:00:00Z",
    "2026-06-05T24:00:00Z", "2026-06-05T10:60:00Z", "2026-06-05T23:59:60Z",
    "0000-01-01T00:00:00Z", "2026-06-05T10:00:00+24:00", "2026-06-05T10:00:00+05:60",
    "0001-01-01T00:00:00+01:00", "9999-12-31T23:59:59-01:00",
])
def test_parse_time_refuses_impossible_times(text: str) -> None:
    assert error(parse_time, text, "from").startswith("from: is not a valid time")


@pytest.mark.parametrize("value", [None, 1780653600, 1.5, ["2026-06-05T10:00:00Z"], True])
def test_parse_time_wants_a_string(value: Any) -> None:
    assert error(parse_time, value) == "time: must be an RFC 3339 string"


def test_future_guard_is_ten_minutes_inclusive() -> None:
    edge = NOW + timedelta(minutes=10)
    assert check_time(format_time(edge), NOW) == edge
    over = edge + timedelta(microseconds=1)
    assert "more than 10 minutes in the future" in error(check_time, format_time(over), NOW)


def test_past_times_are_accepted() -> None:
    assert check_time("1999-01-01T00:00:00Z", NOW).year == 1999


@pytest.mark.parametrize(("value", "text"), [
    (datetime(2026, 6, 5, 10, tzinfo=UTC), "2026-06-05T10:00:00Z"),
    (datetime(2026, 6, 5, 10, 0, 0, 120000, tzinfo=UTC), "2026-06-05T10:00:00.12Z"),
    (datetime(2026, 6, 5, 12, tzinfo=timezone(timedelta(hours=2))), "2026-06-05T10:00:00Z"),
    (datetime(1, 1, 1, 0, 0, 5, tzinfo=UTC), "0001-01-01T00:00:05Z"),  # four-digit years
    (datetime(999, 12, 31, 23, 59, 59, 1, tzinfo=UTC), "0999-12-31T23:59:59.000001Z"),
])
def test_format_time_round_trips(value: datetime, text: str) -> None:
    assert format_time(value) == text
    assert parse_time(text) == value


# --- host, name, value, labels -------------------------------------------------------------


def test_host_length_edges() -> None:
    assert check_host("h" * 253) == "h" * 253
    assert error(check_host, "h" * 254) == "host: must be at most 253 characters"


def test_host_is_trimmed_and_must_not_be_blank() -> None:
    assert check_host("  web-01\t") == "web-01"
    assert error(check_host, " \n ") == "host: must not be empty"
    assert error(check_host, "") == "host: must not be empty"
    assert error(check_host, 5) == "host: must be a string"
    assert error(check_host, "web\x00") == "host: must not contain NUL characters"


@pytest.mark.parametrize("name", sorted(METRIC_NAMES))
def test_every_builtin_name_is_accepted(name: str) -> None:
    assert check_name(name) == name


def test_the_original_nine_names_are_builtin() -> None:
    original = {"cpu.usage_pct", "mem.used_pct", "mem.used_bytes", "mem.total_bytes",
                "disk.used_pct", "disk.used_bytes", "disk.total_bytes", "net.bytes_in",
                "net.bytes_out"}
    assert original <= METRIC_NAMES
    assert len(METRIC_SPECS) == len(METRIC_NAMES)  # no name listed twice


@pytest.mark.parametrize("name", [
    "custom.x", "custom.app.requests_total", "custom.0.1_2", "custom." + "a" * 121,
])
def test_custom_names_are_accepted(name: str) -> None:
    assert is_metric_name(name)


@pytest.mark.parametrize("name", [
    "cpu_usage_pct", "cpu.usage", "CPU.usage_pct", "cpu.usage_pct ", "custom", "custom.",
    "custom..x", "custom.X", "custom.a-b", "custom.a.", "Custom.a", "customx.a",
    "custom." + "a" * 122, "custom.a\x00", "custom.a\n", "", "mem.used_pct.extra",
])
def test_other_names_are_refused(name: str) -> None:
    assert "unknown metric name" in error(check_name, name)


def test_name_must_be_a_string() -> None:
    assert error(check_name, 7) == "name: must be a string"


@pytest.mark.parametrize("value", [0, -1, 1.5, 1e100, -1e100, 10**100, 5e-324])
def test_finite_numbers_are_accepted(value: float) -> None:
    assert check_value(value) == float(value)


@pytest.mark.parametrize(("value", "message"), [
    (math.nan, "must be finite"), (math.inf, "must be finite"), (-math.inf, "must be finite"),
    (True, "must be a number"), (False, "must be a number"), ("1", "must be a number"),
    (None, "must be a number"), ([1], "must be a number"), ({"v": 1}, "must be a number"),
    (10**400, "is out of range"), (-(10**400), "is out of range"),
    (1.0000001e100, "must be within ±1e+100"), (-1e300, "must be within ±1e+100"),
    (10**101, "must be within ±1e+100"), (1.7976931348623157e308, "must be within ±1e+100"),
])
def test_other_values_are_refused(value: Any, message: str) -> None:
    assert error(check_value, value) == f"value: {message}"


def test_label_count_edges() -> None:
    sixteen = {f"k{i}": "v" for i in range(16)}
    assert check_labels(sixteen) == sixteen
    assert error(check_labels, {**sixteen, "k16": "v"}) == "labels: must have at most 16 labels"


def test_label_key_edges() -> None:
    assert check_labels({"k" * 64: "v", "_x": "v", "A9_": "v"})
    assert "label key must match" in error(check_labels, {"k" * 65: "v"})


@pytest.mark.parametrize("key", ["", "1a", "a-b", "a.b", "a b", "é", "a\x00"])
def test_bad_label_keys_are_refused(key: str) -> None:
    assert "label key must match" in error(check_labels, {key: "v"})


def test_label_value_edges() -> None:
    assert check_labels({"k": "v" * 256}) == {"k": "v" * 256}
    assert error(check_labels, {"k": "v" * 257}) == "labels.k: must be at most 256 characters"
    assert error(check_labels, {"k": ""}) == "labels.k: must not be empty"
    assert error(check_labels, {"k": 1}) == "labels.k: must be a string"
    assert error(check_labels, {"k": None}) == "labels.k: must be a string"
    assert error(check_labels, {"k": "a\x00"}) == "labels.k: must not contain NUL characters"
    assert "lone surrogates" in error(check_labels, {"k": "a\ud800"})
    assert check_labels({"k": "déjà vu ✓"}) == {"k": "déjà vu ✓"}


def test_labels_must_be_an_object() -> None:
    assert check_labels(None) == {}
    assert error(check_labels, ["a"]) == "labels: must be an object of string to string"


# --- metric batches --------------------------------------------------------------------------


def test_batch_builds_records() -> None:
    batch_id = uuid.uuid4()
    data = metric_batch(2)
    data["batch_id"] = str(batch_id)
    batch = parse_metric_batch(data, now=NOW)
    assert batch == MetricBatch(host="web-01", batch_id=batch_id, metrics=[
        Metric(time=datetime(2026, 6, 5, 11, 59, tzinfo=UTC), host="web-01",
               name="cpu.usage_pct", value=1.5, labels={"core": "total"})] * 2)
    assert parse_metric_batch(batch.to_json(), now=NOW) == batch


def test_batch_size_edges() -> None:
    assert len(parse_metric_batch(metric_batch(1000), now=NOW).metrics) == 1000
    assert error(parse_metric_batch, metric_batch(1001), now=NOW) == \
        "metrics: must hold at most 1000 items"
    assert error(parse_metric_batch, metric_batch(0), now=NOW) == \
        "metrics: must hold at least 1 item"


def test_metric_errors_carry_their_index() -> None:
    data = metric_batch(5)
    data["metrics"][3]["value"] = "x"
    assert error(parse_metric_batch, data, now=NOW) == "metrics[3].value: must be a number"
    data["metrics"][3] = "x"
    assert error(parse_metric_batch, data, now=NOW) == "metrics[3]: must be an object"


def test_metric_host_must_equal_the_batch_host() -> None:
    data = metric_batch(host="web-02")
    assert error(parse_metric_batch, data, now=NOW) == \
        "metrics[0].host: must equal the batch host 'web-01'"
    data = metric_batch(host=" web-01 ")  # equal after trimming
    assert parse_metric_batch(data, now=NOW).metrics[0].host == "web-01"


def test_metric_without_host_takes_the_batch_host() -> None:
    assert parse_metric_batch(metric_batch(host=None), now=NOW).metrics[0].host == "web-01"


@pytest.mark.parametrize("missing", ["time", "name", "value"])
def test_required_metric_fields(missing: str) -> None:
    data = metric_batch()
    del data["metrics"][0][missing]
    assert error(parse_metric_batch, data, now=NOW) == f"metrics[0].{missing}: is required"


def test_metric_future_time_uses_the_injected_now() -> None:
    data = metric_batch(time=format_time(NOW + timedelta(minutes=10, seconds=1)))
    assert "metrics[0].time: is more than 10 minutes" in error(parse_metric_batch, data,
                                                               now=NOW)


@pytest.mark.parametrize(("data", "message"), [
    ([], "body: must be a JSON object"),
    ({"metrics": []}, "host: must be a string"),
    ({"host": "web-01", "metrics": "x"}, "metrics: is required and must be a list"),
    ({"host": "web-01", "batch_id": "123", "metrics": [metric()]},
     "batch_id: must be a UUID string"),
])
def test_batch_shape_errors(data: Any, message: str) -> None:
    assert error(parse_metric_batch, data, now=NOW) == message


# --- logs ------------------------------------------------------------------------------------


def test_log_batch_builds_records_and_source_is_path() -> None:
    batch = parse_log_batch(log_batch(1, source="app.log"), now=NOW)
    assert batch.entries[0].path == "app.log"
    batch = parse_log_batch(log_batch(1, path="/var/log/syslog", source="other"), now=NOW)
    assert batch.entries[0].path == "/var/log/syslog"
    assert parse_log_batch(batch.to_json(), now=NOW) == batch


@pytest.mark.parametrize("level", LEVELS)
def test_every_level_is_accepted(level: str) -> None:
    assert parse_log_batch(log_batch(level=level), now=NOW).entries[0].level == level


@pytest.mark.parametrize("level", ["INFO", "warning", "fatal", "", None, 1])
def test_other_levels_are_refused(level: Any) -> None:
    data = log_batch()
    data["entries"][0]["level"] = level
    assert error(parse_log_batch, data, now=NOW).startswith("entries[0].level: must be one of")


def test_message_size_edges() -> None:
    assert check_message("m" * 65536) == "m" * 65536
    assert "at most 65536" in error(check_message, "m" * 65537)
    four_bytes = "😀" * 16384  # exactly 64 KiB of UTF-8
    assert check_message(four_bytes) == four_bytes
    assert error(check_message, four_bytes + "m") == "message: must be at most 65536 bytes"
    assert error(check_message, "") == "message: must not be empty"
    assert error(check_message, "a\x00b") == "message: must not contain NUL characters"


def test_log_batch_size_edges() -> None:
    assert len(parse_log_batch(log_batch(1000), now=NOW).entries) == 1000
    assert error(parse_log_batch, log_batch(1001), now=NOW) == \
        "entries: must hold at most 1000 items"
    assert error(parse_log_batch, log_batch(0), now=NOW) == "entries: must hold at least 1 item"


def test_log_entry_errors_carry_their_index() -> None:
    data = log_batch(3)
    data["entries"][2]["time"] = "2026-06-05T10:00:00"
    assert error(parse_log_batch, data, now=NOW).startswith("entries[2].time: must be RFC 3339")
    data = log_batch(3)
    data["entries"][1]["host"] = "other"
    assert error(parse_log_batch, data, now=NOW).startswith("entries[1].host: must equal")


# --- marshmallow schemas describe the same shapes --------------------------------------------


def test_metric_schema_loads_what_the_parser_accepts() -> None:
    data = metric_batch(2, time=format_time(datetime.now(UTC) - timedelta(minutes=1)))
    loaded = MetricBatchSchema().load(data)
    assert loaded == parse_metric_batch(data)


@pytest.mark.parametrize(("override", "field"), [
    ({"value": True}, "value"), ({"value": math.nan}, "value"), ({"name": "cpu_usage"}, "name"),
    ({"time": "2026-06-05T10:00:00"}, "time"), ({"labels": {"1": "v"}}, "labels"),
])
def test_metric_schema_refuses_what_the_parser_refuses(override: dict[str, Any],
                                                       field: str) -> None:
    with pytest.raises(ma.ValidationError) as info:
        MetricBatchSchema().load(metric_batch(**override))
    messages: Any = info.value.messages
    assert field in messages["metrics"][0]


def test_log_schema_maps_source_to_path() -> None:
    data = log_batch(source="app.log", time=format_time(datetime.now(UTC)))
    assert LogBatchSchema().load(data).entries[0].path == "app.log"


@pytest.mark.parametrize(("entry", "path"), [
    ({"path": "app.log", "source": []}, "app.log"),  # a path: the source is not read
    ({"path": None, "source": "sdk.log"}, "sdk.log"),
    ({"source": "sdk.log"}, "sdk.log"),
])
def test_schema_and_parser_read_source_only_without_path(entry: dict[str, Any],
                                                         path: str) -> None:
    data = {"host": "web-01", "entries": [{"time": "2026-06-05T10:00:00Z", "level": "info",
                                           "message": "m", **entry}]}
    assert LogBatchSchema().load(data).entries[0].path == path
    assert parse_log_batch(data).entries[0].path == path


def test_schema_names_a_bad_source() -> None:
    data = {"host": "web-01", "entries": [{"time": "2026-06-05T10:00:00Z", "level": "info",
                                           "message": "m", "source": "a\x00b"}]}
    with pytest.raises(ma.ValidationError) as caught:
        LogBatchSchema().load(data)
    assert caught.value.messages == {"entries": {0: {"source": [
        "must not contain NUL characters"]}}}
