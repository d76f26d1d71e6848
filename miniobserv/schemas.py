"""marshmallow schemas of the wire shapes of :mod:`miniobserv.model` (SPEC §2).

They describe the same shapes as the model's single-pass ``parse_*`` functions and call the
same ``check_*`` functions; they serve clients and the API description. They live apart from
the model so that the agent, which never loads a batch from JSON, does not import marshmallow.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any, TypeVar

import marshmallow as ma

from miniobserv.errors import ValidationError
from miniobserv.model import (
    LEVELS,
    MAX_BATCH,
    LogBatch,
    LogEntry,
    Metric,
    MetricBatch,
    check_host,
    check_labels,
    check_message,
    check_name,
    check_time,
    check_value,
    format_time,
)

_T = TypeVar("_T")


def _checked(check: Callable[..., _T], *args: Any) -> _T:
    """``check(*args)``, its ValidationError raised as marshmallow's (same message)."""
    try:
        return check(*args)
    except ValidationError as err:
        raise ma.ValidationError(err.message) from err


def _validator(check: Any) -> Any:
    """Adapt a ``check_*`` function into a marshmallow validator."""

    def validate(value: Any) -> None:
        _checked(check, value)

    return validate


class _Time(ma.fields.Field):
    def _deserialize(self, value: Any, attr: Any, data: Any, **kwargs: Any) -> datetime:
        return _checked(check_time, value, datetime.now(UTC))

    def _serialize(self, value: Any, attr: Any, obj: Any, **kwargs: Any) -> str | None:
        return None if value is None else format_time(value)


class _Number(ma.fields.Field):
    def _deserialize(self, value: Any, attr: Any, data: Any, **kwargs: Any) -> float:
        return _checked(check_value, value)


class _Labels(ma.fields.Field):
    def _deserialize(self, value: Any, attr: Any, data: Any, **kwargs: Any) -> dict[str, str]:
        return _checked(check_labels, value)


class MetricSchema(ma.Schema):
    """Wire shape of a :class:`Metric`."""

    time = _Time(required=True)
    host = ma.fields.String(required=True, validate=_validator(check_host))
    name = ma.fields.String(required=True, validate=_validator(check_name))
    value = _Number(required=True)
    labels = _Labels(load_default=dict)

    @ma.post_load
    def make(self, data: dict[str, Any], **kwargs: Any) -> Metric:
        data["host"] = data["host"].strip()
        return Metric(**data)


class MetricBatchSchema(ma.Schema):
    """Wire shape of a :class:`MetricBatch`."""

    host = ma.fields.String(required=True, validate=_validator(check_host))
    batch_id = ma.fields.UUID(load_default=None)
    metrics = ma.fields.List(ma.fields.Nested(MetricSchema), required=True,
                             validate=ma.validate.Length(min=1, max=MAX_BATCH))

    @ma.post_load
    def make(self, data: dict[str, Any], **kwargs: Any) -> MetricBatch:
        host = data["host"].strip()
        for index, metric in enumerate(data["metrics"]):
            if metric.host != host:
                raise ma.ValidationError(
                    {"metrics": {index: {"host": ["must equal the batch host"]}}})
        return MetricBatch(host=host, metrics=data["metrics"], batch_id=data["batch_id"])


class LogEntrySchema(ma.Schema):
    """Wire shape of a :class:`LogEntry` (``source`` is accepted for ``path``)."""

    time = _Time(required=True)
    host = ma.fields.String(required=True, validate=_validator(check_host))
    level = ma.fields.String(required=True, validate=ma.validate.OneOf(LEVELS))
    message = ma.fields.String(required=True, validate=_validator(check_message))
    path = ma.fields.String(load_default=None)
    source = ma.fields.String(load_default=None, load_only=True)
    labels = _Labels(load_default=dict)

    @ma.post_load
    def make(self, data: dict[str, Any], **kwargs: Any) -> LogEntry:
        source = data.pop("source", None)
        data["path"] = data["path"] if data["path"] is not None else source
        data["host"] = data["host"].strip()
        return LogEntry(**data)


class LogBatchSchema(ma.Schema):
    """Wire shape of a :class:`LogBatch`."""

    host = ma.fields.String(required=True, validate=_validator(check_host))
    batch_id = ma.fields.UUID(load_default=None)
    entries = ma.fields.List(ma.fields.Nested(LogEntrySchema), required=True,
                             validate=ma.validate.Length(min=1, max=MAX_BATCH))

    @ma.post_load
    def make(self, data: dict[str, Any], **kwargs: Any) -> LogBatch:
        return LogBatch(host=data["host"].strip(), entries=data["entries"],
                        batch_id=data["batch_id"])
