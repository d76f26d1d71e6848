"""marshmallow schemas of the wire shapes of :mod:`miniobserv.model` (SPEC §2).

They describe the same shapes as the model's single-pass ``parse_*`` functions and call the
same ``check_*`` functions; they serve clients and the API description. They live apart from
the model so that the agent, which never loads a batch from JSON, does not import marshmallow.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import replace
from datetime import UTC, datetime
from typing import Any, TypeVar

import marshmallow as ma

from miniobserv.errors import ValidationError
from miniobserv.model import (
    LEVELS,
    MAX_PATH_LEN,
    LogBatch,
    LogEntry,
    Metric,
    MetricBatch,
    check_batch_id,
    check_host,
    check_items,
    check_labels,
    check_level,
    check_message,
    check_name,
    check_text,
    check_time,
    check_value,
    format_time,
)

_T = TypeVar("_T")
_R = TypeVar("_R", Metric, LogEntry)


def _checked(check: Callable[..., _T], *args: Any) -> _T:
    """``check(*args)``, its ValidationError raised as marshmallow's (same message).

    A field path below the checked value (``labels.core``) becomes marshmallow's nested
    messages (``{"core": [...]}``), so both name the same field.
    """
    try:
        return check(*args)
    except ValidationError as err:
        _, dot, below = err.field.partition(".")
        raise ma.ValidationError({below: [err.message]} if dot else err.message) from err


def _validator(check: Any) -> Any:
    """Adapt a ``check_*`` function into a marshmallow validator."""

    def validate(value: Any) -> None:
        _checked(check, value)

    return validate


class _Checked(ma.fields.Field):
    """A field that one model ``check_*`` function validates and converts, null included.

    Any present value, ``null`` too, goes to ``check`` (the model's message, not
    marshmallow's "Field may not be null."); only a missing one is marshmallow's (``required``
    or ``load_default``). ``dump`` writes the value back (default: as it is).
    """

    def __init__(self, check: Callable[[Any], Any],
                 dump: Callable[[Any], Any] | None = None, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.check = check
        self.dump = dump

    def deserialize(self, value: Any, attr: str | None = None,
                    data: Mapping[str, Any] | None = None, **kwargs: Any) -> Any:
        if value is ma.missing:
            return super().deserialize(value, attr, data, **kwargs)
        return _checked(self.check, value)

    def _serialize(self, value: Any, attr: Any, obj: Any, **kwargs: Any) -> Any:
        return value if value is None or self.dump is None else self.dump(value)


def _check_time_now(value: Any) -> datetime:
    return check_time(value, datetime.now(UTC))


class _Time(_Checked):
    def __init__(self, **kwargs: Any) -> None:
        super().__init__(_check_time_now, format_time, **kwargs)


class _Labels(ma.fields.Field):
    def _deserialize(self, value: Any, attr: Any, data: Any, **kwargs: Any) -> dict[str, str]:
        return _checked(check_labels, value)


# The model's parsers say "host: must be a string" for a missing host and ignore keys they do
# not know; the schemas of metrics say the same (tests/test_schema_agreement.py).
_HOST_REQUIRED = {"required": "must be a string"}


class MetricSchema(ma.Schema):
    """Wire shape of a :class:`Metric`."""

    class Meta:
        unknown = ma.EXCLUDE

    error_messages = {"type": "must be an object"}

    time = _Time(required=True, error_messages={"required": "is required"})
    host = _Checked(check_host, required=True, error_messages=_HOST_REQUIRED)
    name = _Checked(check_name, required=True, error_messages={"required": "is required"})
    value = _Checked(check_value, required=True, error_messages={"required": "is required"})
    labels = _Checked(check_labels, load_default=dict)

    @ma.post_load
    def make(self, data: dict[str, Any], **kwargs: Any) -> Metric:
        return Metric(**data)


class _BatchMetricSchema(MetricSchema):
    """A metric inside a batch, whose ``host`` may be left out (it is the batch's)."""

    host = _Checked(check_host, load_default=None)

    @ma.post_load
    def make(self, data: dict[str, Any], **kwargs: Any) -> Metric:
        return Metric(**{**data, "host": data["host"] or ""})  # "": the batch's, filled in


_LIST_REQUIRED: dict[str, Any] = {key: "is required and must be a list"
                                  for key in ("required", "null", "invalid")}


def _records(item_schema: type[ma.Schema], key: str) -> ma.fields.List:
    """The list of 1 to MAX_BATCH records of a batch under ``key``."""

    def check(items: Any) -> None:
        check_items(items, key)

    return ma.fields.List(
        ma.fields.Nested(item_schema, error_messages={"null": "must be an object"}),
        required=True, validate=_validator(check), error_messages=_LIST_REQUIRED)


class _BatchSchema(ma.Schema):
    """The fields every batch has: ``host`` and an optional ``batch_id``."""

    class Meta:
        unknown = ma.EXCLUDE

    error_messages = {"type": "must be a JSON object"}

    host = _Checked(check_host, required=True, error_messages=_HOST_REQUIRED)
    batch_id = _Checked(check_batch_id, str, load_default=None)


class MetricBatchSchema(_BatchSchema):
    """Wire shape of a :class:`MetricBatch`."""

    metrics = _records(_BatchMetricSchema, "metrics")

    @ma.post_load
    def make(self, data: dict[str, Any], **kwargs: Any) -> MetricBatch:
        host = data["host"]
        return MetricBatch(host=host, metrics=_with_batch_host(data["metrics"], host, "metrics"),
                           batch_id=data["batch_id"])


def _log_entry(data: dict[str, Any]) -> LogEntry:
    """The entry of loaded fields; ``source`` is the path when ``path`` is absent (and only
    then checked, as by the model: a ``path`` makes any ``source`` irrelevant)."""
    source = data.pop("source", None)
    path = data["path"]
    if path is None and source is not None:
        try:
            path = check_text(source, "source", MAX_PATH_LEN)
        except ValidationError as err:
            raise ma.ValidationError({"source": [err.message]}) from err
    return LogEntry(**{**data, "path": path})


def _check_path(value: Any) -> str | None:
    return None if value is None else check_text(value, "path", MAX_PATH_LEN)


class LogEntrySchema(ma.Schema):
    """Wire shape of a :class:`LogEntry` (``source`` is accepted for ``path``).

    The same checks as :func:`~miniobserv.model.parse_log_entry`, which the schemas of logs
    once did not share: they required each entry's host, refused unknown keys and let a NUL
    or a 10 000-character path through (tests/test_model_properties.py).
    """

    class Meta:
        unknown = ma.EXCLUDE

    error_messages = {"type": "must be an object"}

    time = _Time(required=True, error_messages={"required": "is required"})
    host = _Checked(check_host, required=True, error_messages=_HOST_REQUIRED)
    level = _Checked(check_level, required=True,
                     error_messages={"required": f"must be one of {', '.join(LEVELS)}"})
    message = _Checked(check_message, required=True,
                       error_messages={"required": "must be a string"})
    path = _Checked(_check_path, load_default=None)
    source = ma.fields.Raw(load_default=None, allow_none=True, load_only=True)
    labels = _Checked(check_labels, load_default=dict)

    @ma.post_load
    def make(self, data: dict[str, Any], **kwargs: Any) -> LogEntry:
        return _log_entry(data)


class _BatchLogEntrySchema(LogEntrySchema):
    """An entry inside a batch, whose ``host`` may be left out (it is the batch's)."""

    host = _Checked(check_host, load_default=None)

    @ma.post_load
    def make(self, data: dict[str, Any], **kwargs: Any) -> LogEntry:
        return _log_entry({**data, "host": data["host"] or ""})  # "": the batch's, filled in


class LogBatchSchema(_BatchSchema):
    """Wire shape of a :class:`LogBatch`."""

    entries = _records(_BatchLogEntrySchema, "entries")

    @ma.post_load
    def make(self, data: dict[str, Any], **kwargs: Any) -> LogBatch:
        host = data["host"]
        return LogBatch(host=host, entries=_with_batch_host(data["entries"], host, "entries"),
                        batch_id=data["batch_id"])


def _with_batch_host(records: list[_R], host: str, key: str) -> list[_R]:
    """``records`` with the batch ``host`` filled in; refuse one whose own host differs."""
    out = []
    for index, record in enumerate(records):
        if not record.host:
            record = replace(record, host=host)
        elif record.host != host:
            raise ma.ValidationError(
                {key: {index: {"host": [f"must equal the batch host {host!r}"]}}})
        out.append(record)
    return out
