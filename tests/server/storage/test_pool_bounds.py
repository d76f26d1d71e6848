"""The pool's wait for a connection never outlasts the request's own bound (REQUEST_TIMEOUT).

No database is needed: the pool is built closed and only its settings are read.
"""

from __future__ import annotations

from datetime import timedelta

import pytest

from miniobserv.server.storage.postgres import db

URL = "postgresql://nobody@127.0.0.1:1/none"


@pytest.mark.parametrize(("request_timeout", "expected"), [
    (timedelta(seconds=1), 1.0),
    (timedelta(seconds=3), 3.0),
    (timedelta(milliseconds=2500), 2.5),
    (timedelta(seconds=120), db.POOL_TIMEOUT_S),
])
def test_pool_wait_is_bounded_by_the_request_timeout(request_timeout: timedelta,
                                                     expected: float) -> None:
    database = db.PostgresDatabase(URL, statement_timeout=request_timeout)
    assert database.pool.timeout == expected
    assert database.pool.timeout <= request_timeout.total_seconds()


def test_without_a_request_timeout_the_pool_waits_its_default() -> None:
    assert db.PostgresDatabase(URL).pool.timeout == db.POOL_TIMEOUT_S
