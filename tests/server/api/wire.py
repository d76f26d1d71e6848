"""Builders of wire-format metric batches for handler tests."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

from miniobserv.model import format_time

HOST = "web-01"
T0 = datetime(2026, 6, 5, 10, 0, 0, tzinfo=UTC)


def recent(seconds_ago: float = 60) -> str:
    """A wire time ``seconds_ago`` before now (so the future guard never trips)."""
    return format_time(datetime.now(UTC) - timedelta(seconds=seconds_ago))


def metric(**overrides: Any) -> dict[str, Any]:
    item: dict[str, Any] = {"time": recent(), "host": HOST, "name": "cpu.usage_pct",
                            "value": 12.5, "labels": {"core": "total"}}
    item.update(overrides)
    return {key: value for key, value in item.items() if value is not None}


def batch(count: int = 1, host: str = HOST, batch_id: uuid.UUID | None = None,
          **metric_overrides: Any) -> dict[str, Any]:
    body: dict[str, Any] = {"host": host,
                            "metrics": [metric(**{"host": host, "value": float(i), **metric_overrides})
                                        for i in range(count)]}
    if batch_id is not None:
        body["batch_id"] = str(batch_id)
    return body
