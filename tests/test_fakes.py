"""The in-memory fake's own arithmetic (the storage contract suite covers its behaviour)."""

from __future__ import annotations

import random
import statistics
from datetime import UTC, datetime

import pytest

from miniobserv.server.storage.base import StorageError, StorageUnavailable
from miniobserv.server.storage.shaping import percentile_cont
from tests.fakes import FakeRepositories, bucket_start
from tests.server.api.wire import batch


@pytest.mark.parametrize("size", [1, 2, 3, 7, 100, 101])
@pytest.mark.parametrize("fraction", [0.5, 0.95, 0.99])
def test_percentile_cont_is_linear_between_closest_ranks(size: int, fraction: float) -> None:
    values = [random.Random(i).uniform(-50, 50) for i in range(size)]
    expected = values[0] if size == 1 else statistics.quantiles(
        values, n=100, method="inclusive")[round(fraction * 100) - 1]
    assert percentile_cont(sorted(values), fraction) == pytest.approx(expected)


def test_percentile_cont_known_values() -> None:
    assert percentile_cont([1, 2, 3, 4], 0.5) == 2.5
    assert percentile_cont([1, 2, 3, 4, 10], 0.95) == pytest.approx(8.8)


@pytest.mark.parametrize(("time", "width", "expected"), [
    (datetime(2026, 6, 5, 10, 7, 59, 999999, tzinfo=UTC), 300,
     datetime(2026, 6, 5, 10, 5, tzinfo=UTC)),
    (datetime(2026, 6, 5, 23, 59, tzinfo=UTC), 86400, datetime(2026, 6, 5, tzinfo=UTC)),
    (datetime(1969, 12, 31, 23, 59, 59, 500000, tzinfo=UTC), 10,
     datetime(1969, 12, 31, 23, 59, 50, tzinfo=UTC)),
])
def test_bucket_start_floors_to_the_epoch(time: datetime, width: int,
                                          expected: datetime) -> None:
    assert bucket_start(time, width) == expected


def test_failure_mid_batch_and_down_store_nothing() -> None:
    from miniobserv.model import parse_metric_batch

    repos = FakeRepositories()
    repos.metrics.fail_after = 1
    with pytest.raises(StorageError):
        repos.metrics.insert_batch(parse_metric_batch(batch(3)))
    repos.metrics.fail_after = None
    repos.down = True
    with pytest.raises(StorageUnavailable):
        repos.metrics.insert_batch(parse_metric_batch(batch(3)))
    with pytest.raises(StorageUnavailable):
        repos.ping()
    repos.down = False
    assert repos.metrics.stored() == [] and repos.metrics.hosts() == []
