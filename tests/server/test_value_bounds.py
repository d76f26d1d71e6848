"""Metric values within ±MAX_ABS_VALUE: every aggregate of them answers a finite number on
every store; a larger value is a 400 naming it (found by the round-trip property test).

Before the bound, two points 0 and 1.34e154 of one series made PostgreSQL's avg() (which
sums squares) fail with "value out of range: overflow": the query answered 500. Sums of a
few values near 1e308 overflowed to infinity on every store (an answer with null values).
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import pytest
from flask.testing import FlaskClient

from miniobserv.config import ServerConfig
from miniobserv.model import MAX_ABS_VALUE, MAX_BATCH, format_time
from miniobserv.server.app import create_app
from miniobserv.server.storage import open_repositories
from miniobserv.server.storage.base import AGGREGATES
from miniobserv.tokens import mint_token

pytestmark = pytest.mark.integration
SECRET = "v" * 32


@pytest.fixture
def client(database_url: str) -> Iterator[FlaskClient]:
    config = ServerConfig(agent_token=SECRET, database_url=database_url, auto_migrate=False)
    repos = open_repositories(config)
    try:
        yield create_app(config, repos).test_client()
    finally:
        repos.close()


def auth(scope: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {mint_token(SECRET, scope=scope)}"}


def test_every_aggregate_of_the_largest_values_is_finite(client: FlaskClient) -> None:
    now = datetime.now(UTC).replace(microsecond=0)
    points = [{"time": format_time(now - timedelta(seconds=i % 5, microseconds=i)),
               "name": "custom.big", "value": MAX_ABS_VALUE if i % 3 else -MAX_ABS_VALUE}
              for i in range(MAX_BATCH)]
    answer = client.post("/api/v1/metrics", json={"host": "big", "metrics": points},
                         headers=auth("ingest"))
    assert answer.status_code == 202, answer.get_json()
    window = {"host": "big", "name": "custom.big", "bucket": "1m",
              "from": format_time(now - timedelta(minutes=5)),
              "to": format_time(now + timedelta(minutes=1))}
    for agg in AGGREGATES:
        answer = client.get("/api/v1/metrics/query", query_string={**window, "agg": agg},
                            headers=auth("read"))
        assert answer.status_code == 200, (agg, answer.get_json())
        values = [point["value"] for point in answer.get_json()["points"]]
        assert values and all(isinstance(v, float | int) and math.isfinite(v)
                              for v in values), (agg, values)


@pytest.mark.parametrize("value", [MAX_ABS_VALUE * 1.0000001, -1.34e154, 1e308])
def test_a_larger_value_is_refused_naming_it(client: FlaskClient, value: float) -> None:
    point = {"time": format_time(datetime.now(UTC)), "name": "custom.big", "value": value}
    answer = client.post("/api/v1/metrics", json={"host": "big", "metrics": [point]},
                         headers=auth("ingest"))
    assert answer.status_code == 400
    assert answer.get_json()["error"].startswith("metrics[0].value: must be within ±1e+100")
