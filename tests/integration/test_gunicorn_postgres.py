"""gunicorn serving real HTTP against a real PostgreSQL: ingest, query, readiness.

The cluster here is this module's own (not the session's shared one) because the test stops
and starts it again. Workers start at once on an empty database, so they also prove that the
migrations are serialised by the advisory lock and that each worker opens its pool after the
fork.
"""

from __future__ import annotations

import gzip
import json
import sys
import time
import uuid
from collections.abc import Iterator, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

import psycopg
import pytest
import requests

from miniobserv.model import format_time
from miniobserv.tokens import mint_token
from tests.conftest import ThrowawayCluster, find_pg_bindir, free_port
from tests.processes import CONFIG_ARGS, LoggedProcess

pytestmark = pytest.mark.integration

SECRET = "integration-secret-0123456789abcdef"
WORKERS = 4


@pytest.fixture(scope="module")
def cluster() -> Iterator[tuple[ThrowawayCluster, str]]:
    bindir = find_pg_bindir()
    if bindir is None:
        pytest.fail("PostgreSQL's initdb/pg_ctl were not found: run ./scripts/test")
    own = ThrowawayCluster(bindir, timescaledb=False)
    try:
        admin_url = own.start()
        with psycopg.connect(admin_url, autocommit=True) as conn:
            conn.execute("CREATE DATABASE miniobserv")
        yield own, admin_url.rsplit("/", 1)[0] + "/miniobserv"
    finally:
        own.destroy()


class Server(LoggedProcess):
    def __init__(self, database_url: str, args: Sequence[str] = ()) -> None:
        self.url = f"http://127.0.0.1:{free_port()}"
        super().__init__(
            [sys.executable, "-m", "gunicorn", "-w", str(WORKERS), "-b", self.url[7:],
             *args, "miniobserv.server.wsgi:app"],
            {"DATABASE_URL": database_url, "AGENT_TOKEN": SECRET, "LOG_LEVEL": "INFO"})

    def get(self, path: str, **kwargs: Any) -> requests.Response:
        return requests.get(self.url + path, timeout=10, **kwargs)

    def wait_status(self, path: str, status: int, timeout: float = 60) -> requests.Response:
        deadline = time.monotonic() + timeout
        last: requests.Response | None = None
        while time.monotonic() < deadline and self.proc.poll() is None:
            try:
                last = self.get(path)
                if last.status_code == status:
                    return last
            except requests.RequestException:
                pass
            time.sleep(0.2)
        got = last.status_code if last is not None else "no answer"
        raise AssertionError(f"{path} never answered {status} (last: {got}):\n{self.output}")


@pytest.fixture(scope="module")
def server(cluster: tuple[ThrowawayCluster, str]) -> Iterator[Server]:
    proc = Server(cluster[1])
    try:
        proc.wait_status("/readyz", 200)
        yield proc
    finally:
        assert proc.terminate() == 0, proc.output


def auth(scope: str | None = None) -> dict[str, str]:
    return {"Authorization": f"Bearer {mint_token(SECRET, scope=scope)}"}


def post_batch(server: Server, batch: dict[str, Any], *, gzipped: bool = False) -> requests.Response:
    body = json.dumps(batch).encode()
    headers = {**auth("ingest"), "Content-Type": "application/json"}
    if gzipped:
        body, headers["Content-Encoding"] = gzip.compress(body), "gzip"
    return requests.post(server.url + "/api/v1/metrics", data=body, headers=headers, timeout=10)


def batch_of(host: str, start: datetime, values: list[float], **labels: str) -> dict[str, Any]:
    return {"host": host, "batch_id": str(uuid.uuid4()), "metrics": [
        {"time": format_time(start + timedelta(seconds=i)), "host": host,
         "name": "cpu.usage_pct", "value": v, "labels": {"core": "total", **labels}}
        for i, v in enumerate(values)]}


def query(server: Server, host: str, start: datetime, **params: str) -> requests.Response:
    return server.get("/api/v1/metrics/query", headers=auth("read"), params={
        "host": host, "name": "cpu.usage_pct", "label": "core:total",
        "from": format_time(start - timedelta(minutes=5)),
        "to": format_time(start + timedelta(minutes=5)), **params})


def minute_start() -> datetime:
    now = datetime.now(UTC).replace(second=0, microsecond=0)
    return now - timedelta(minutes=2)


def test_every_worker_started_against_one_migrated_schema(
        server: Server, cluster: tuple[ThrowawayCluster, str]) -> None:
    with psycopg.connect(cluster[1]) as conn:
        (revision,) = conn.execute("SELECT version_num FROM alembic_version").fetchone() or ("",)
    assert revision
    assert server.output.count("Booting worker") == WORKERS
    assert "Traceback" not in server.output


def test_ingest_then_query_in_buckets_over_http(server: Server) -> None:
    start = minute_start()
    plain = post_batch(server, batch_of("gw-01", start, [10.0, 20.0, 30.0]))
    assert (plain.status_code, plain.json()) == (202, {"ingested": 3})
    later = post_batch(server, batch_of("gw-01", start + timedelta(minutes=1), [50.0]),
                       gzipped=True)
    assert (later.status_code, later.json()) == (202, {"ingested": 1})

    answer = query(server, "gw-01", start, bucket="1m", agg="avg")
    assert answer.status_code == 200, answer.text
    assert answer.json()["points"] == [
        {"time": format_time(start), "value": 20.0},
        {"time": format_time(start + timedelta(minutes=1)), "value": 50.0}]
    hosts = server.get("/api/v1/metrics/hosts", headers=auth("read"))
    assert "gw-01" in hosts.json()["hosts"]


def test_a_retried_batch_is_stored_once(server: Server) -> None:
    start = minute_start()
    batch = batch_of("gw-02", start, [1.0, 2.0])
    assert post_batch(server, batch).status_code == 202
    assert post_batch(server, batch).json() == {"ingested": 2}
    counted = query(server, "gw-02", start, bucket="1h", agg="count").json()["points"]
    assert [p["value"] for p in counted] == [2]


def test_readiness_follows_the_database_down_and_up(
        server: Server, cluster: tuple[ThrowawayCluster, str]) -> None:
    own, _ = cluster
    start = minute_start()
    assert post_batch(server, batch_of("gw-03", start, [7.0])).status_code == 202
    own.stop_server()
    try:
        down = server.wait_status("/readyz", 503)
        assert down.json()["status"] == "unavailable"
        assert "error" in down.json()
        assert server.get("/healthz").json() == {"status": "ok"}
        refused = post_batch(server, batch_of("gw-03", start, [8.0]))
        assert refused.status_code == 503
        assert "error" in refused.json()
    finally:
        own.start_server()
    server.wait_status("/readyz", 200)
    retried = post_batch(server, batch_of("gw-03", start + timedelta(seconds=30), [9.0]))
    assert retried.status_code == 202
    values = query(server, "gw-03", start, bucket="1m", agg="sum").json()["points"]
    assert [p["value"] for p in values] == [16.0]


@pytest.mark.parametrize("args", [(), CONFIG_ARGS], ids=["bare", "config"])
def test_workers_started_during_an_outage_serve_once_the_database_is_back(
        cluster: tuple[ThrowawayCluster, str], args: Sequence[str]) -> None:
    """With the config file the master's bounded attempt fails, and the workers retry."""
    own, url = cluster
    admin = url.rsplit("/", 1)[0] + "/postgres"
    name = f"started_in_outage_{len(args)}"
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute(f"CREATE DATABASE {name}")
    own.stop_server()
    late: Server | None = None
    try:
        late = Server(url.rsplit("/", 1)[0] + "/" + name, args)
        down = late.wait_status("/readyz", 503)
        assert down.json() == {"status": "unavailable", "error": "database unavailable"}
        refused = post_batch(late, batch_of("gw-04", minute_start(), [1.0]))
        assert refused.status_code == 503
        assert late.get("/healthz").status_code == 200
    finally:
        own.start_server()
    try:
        late.wait_status("/readyz", 200)
        start = minute_start()
        assert post_batch(late, batch_of("gw-04", start, [4.0])).status_code == 202
        assert query(late, "gw-04", start).json()["points"][0]["value"] == 4.0
        assert "Worker failed to boot" not in late.output
        assert late.output.count("Booting worker") == WORKERS  # none was killed and restarted
    finally:
        assert late.terminate() == 0, late.output
