"""The backoff policy: pure functions with an injected random source."""

from __future__ import annotations

from datetime import UTC, datetime
from email.utils import format_datetime

import pytest

from miniobserv.agent.sender import (
    DROP,
    REAUTH,
    RETRY,
    SENT,
    backoff_delay,
    classify,
    retry_after_seconds,
)


@pytest.mark.parametrize("attempt", range(11))
@pytest.mark.parametrize("rand", [0.0, 0.5, 1.0])
def test_backoff_bounds(attempt, rand):
    nominal = min(60.0, 2.0 ** (max(attempt, 1) - 1))
    delay = backoff_delay(attempt, lambda: rand)
    assert delay == pytest.approx(min(60.0, nominal * (0.75 + 0.5 * rand)))
    assert 0.75 * nominal <= delay <= min(60.0, 1.25 * nominal)
    assert delay <= 60.0


def test_backoff_doubles_from_one_second_to_the_cap():
    assert [backoff_delay(n, lambda: 0.5) for n in range(1, 9)] == [1, 2, 4, 8, 16, 32, 60, 60]


@pytest.mark.parametrize("rand", [0.0, 0.5, 1.0])
def test_backoff_of_endless_retries_stays_capped_without_overflow(rand):
    assert 45.0 <= backoff_delay(10**9, lambda: rand) <= 60.0


def test_backoff_takes_its_constants_as_arguments():
    assert backoff_delay(3, lambda: 0.5, base=0.01, cap=1.0) == pytest.approx(0.04)
    assert backoff_delay(3, lambda: 1.0, base=0.01, cap=0.045, jitter=0.25) == 0.045


@pytest.mark.parametrize("status,action", [
    (200, SENT), (202, SENT), (204, SENT), (401, REAUTH), (408, RETRY), (429, RETRY),
    (500, RETRY), (502, RETRY), (503, RETRY), (504, RETRY), (400, DROP), (403, DROP),
    (404, DROP), (413, DROP), (422, DROP),
])
def test_classify(status, action):
    assert classify(status) == action


NOW = datetime(2026, 6, 5, 10, 0, 0, tzinfo=UTC).timestamp()


@pytest.mark.parametrize("header,seconds", [
    ("120", 120.0), (" 3 ", 3.0), ("0", 0.0), ("1.5", 1.5),
    (format_datetime(datetime(2026, 6, 5, 10, 0, 30, tzinfo=UTC), usegmt=True), 30.0),
    ("Fri, 05 Jun 2026 09:59:00 GMT", 0.0),  # already past
    (None, None), ("", None), ("soon", None), ("-5", None), ("Fri, 99 Foo 2026", None),
])
def test_retry_after_seconds_or_http_date(header, seconds):
    assert retry_after_seconds(header, NOW) == seconds
