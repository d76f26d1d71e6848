"""Range parameters have the query API's limits (issue 9, item 2): ``/api/v1/dashboard/latest``
refuses a ``from`` more than 30 days back (no ``from=1970``) or past the clock-skew guard.

Logs ``from``/``to`` stay open: they are optional filters of a page that is bounded in entries
and bytes, and the scan behind it is cut at REQUEST_TIMEOUT.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from miniobserv.errors import ValidationError
from miniobserv.model import format_time
from miniobserv.server.api.dashboard import check_since
from tests.security.bounded_support import auth, test_client

NOW = datetime(2026, 6, 1, 12, 0, tzinfo=UTC)
US = timedelta(microseconds=1)


@pytest.mark.parametrize("since", [NOW - timedelta(days=30), NOW, NOW + timedelta(minutes=10)])
def test_since_at_the_edges_is_allowed(since: datetime) -> None:
    assert check_since(since, NOW) == since


@pytest.mark.parametrize(("since", "problem"), [
    (NOW - timedelta(days=30) - US, "from: must be at most 30 days ago"),
    (datetime(1970, 1, 1, tzinfo=UTC), "from: must be at most 30 days ago"),
    (NOW + timedelta(minutes=10) + US, "from: must not be more than 10 minutes in the future"),
])
def test_since_past_the_edges_is_refused(since: datetime, problem: str) -> None:
    with pytest.raises(ValidationError) as caught:
        check_since(since, NOW)
    assert str(caught.value) == problem


@pytest.mark.parametrize(("ago", "status"), [
    (timedelta(days=30) - timedelta(minutes=1), 200),
    (timedelta(days=30) + timedelta(minutes=1), 400),
    (-timedelta(minutes=9), 200),
    (-timedelta(minutes=11), 400),
])
def test_latest_endpoint_applies_it(ago: timedelta, status: int) -> None:
    since = format_time(datetime.now(UTC) - ago)
    response = test_client().get("/api/v1/dashboard/latest",
                                 query_string={"host": "web-01", "from": since}, headers=auth())
    assert response.status_code == status, response.get_json()
    if status == 400:
        assert response.get_json()["error"].startswith("from: ")


def test_from_1970_is_400() -> None:
    response = test_client().get("/api/v1/dashboard/latest", query_string={
        "host": "web-01", "from": "1970-01-01T00:00:00Z"}, headers=auth())
    assert response.get_json() == {"error": "from: must be at most 30 days ago"}
