"""Fleet-wide reads over the fake, SQLite and a real PostgreSQL (issue 10).

Queries without a host (every host's points as one series), ``group_by=host`` (one series per
host), ``count_series`` of both, ``top`` (hosts ranked by one aggregate over a range) and
``latest`` with a limit. Expected answers are computed here from the raw points, with the
reference aggregates of the per-host contract suite, never hard-coded.
"""

from __future__ import annotations

import random
import uuid
from collections import defaultdict
from collections.abc import Iterator, Sequence
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from miniobserv.model import Metric, MetricBatch
from miniobserv.server.storage import migrate, open_repositories
from miniobserv.server.storage.base import (
    AGGREGATES,
    HOST_GROUP,
    HostValue,
    MetricQuery,
    Repositories,
    Series,
    TopQuery,
)
from tests.fakes import FakeRepositories
from tests.server.storage.conftest import STORES, config_for
from tests.server.storage.test_contract import assert_same, reference_points, reference_value

NAME = "cpu.usage_pct"
# "Zeta" sorts before "db-01" by code point, after it in most collations: the order is ours.
HOSTS = ("web-01", "web-02", "db-01", "Zeta")
START = datetime.now(UTC).replace(microsecond=0) - timedelta(hours=4, seconds=17)
END = START + timedelta(hours=3, microseconds=250)


def make_points(seed: int = 10) -> list[Metric]:
    """Every host on one shared time grid (ties across hosts), per-core and total series,
    a host only some series reach, points just outside the window, another metric."""
    rng = random.Random(seed)
    points: list[Metric] = []
    time = START - timedelta(minutes=2)
    while time <= END + timedelta(minutes=2):
        for index, host in enumerate(HOSTS):
            cores = ("total", "0") if index < 3 else ("total",)
            for core in cores:
                value = round(rng.uniform(0, 100) + 10 * index, rng.choice([0, 2]))
                points.append(Metric(time, host, NAME, value, {"core": core}))
        time += timedelta(seconds=rng.randint(30, 400))
    for edge in (START - timedelta(microseconds=1), START, END):
        points.append(Metric(edge, "web-02", NAME, rng.uniform(0, 100), {"core": "total"}))
    points.append(Metric(START + timedelta(minutes=1), "db-01", "mem.used_pct", 5.0))
    return points


POINTS = make_points()


def fleet_reference(points: Sequence[Metric], query: MetricQuery) -> list[Series]:
    """SPEC §3's answer with ``host`` optional and ``group_by=host`` grouping by host."""
    groups: dict[str, list[Metric]] = defaultdict(list)
    for m in points:
        if query.host in (None, m.host) and m.name == query.name and \
                query.start <= m.time <= query.end and \
                all(m.labels.get(k) == v for k, v in query.labels):
            if query.group_by == HOST_GROUP:
                groups[m.host].append(m)
            elif query.group_by is None:
                groups[""].append(m)
            elif query.group_by in m.labels:
                groups[m.labels[query.group_by]].append(m)
    if query.group_by is None:
        return [Series({}, reference_points(groups.get("", []), query))]
    return [Series({query.group_by: key}, reference_points(groups[key], query))
            for key in sorted(groups)]


def top_reference(points: Sequence[Metric], query: TopQuery) -> list[HostValue]:
    by_host: dict[str, list[Metric]] = defaultdict(list)
    for m in points:
        if m.name == query.name and query.start <= m.time <= query.end and \
                all(m.labels.get(k) == v for k, v in query.labels):
            by_host[m.host].append(m)
    values = [HostValue(host, reference_value(query.agg, ms)) for host, ms in by_host.items()]
    sign = -1 if query.order == "desc" else 1
    return sorted(values, key=lambda v: (sign * v.value, v.host))[:query.limit]


def load(repos: Repositories, points: Sequence[Metric]) -> Repositories:
    by_host: dict[str, list[Metric]] = defaultdict(list)
    for m in points:
        by_host[m.host].append(m)
    for host, host_points in by_host.items():
        for i in range(0, len(host_points), 1000):
            repos.metrics.insert_batch(MetricBatch(host, host_points[i:i + 1000], uuid.uuid4()))
    return repos


@pytest.fixture(scope="module")
def fleet_sqlite(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Repositories]:
    url = f"sqlite:///{tmp_path_factory.mktemp('fleetquery') / 'fleet.db'}"
    migrate.upgrade(url)
    opened = load(open_repositories(config_for(url)), POINTS)
    yield opened
    opened.close()


@pytest.fixture(scope="module")
def fleet_postgres(postgres_databases: Any) -> Iterator[Repositories]:
    url = postgres_databases.create()
    opened = load(open_repositories(config_for(url)), POINTS)
    yield opened
    opened.close()
    postgres_databases.drop(url)


@pytest.fixture(scope="module")
def fleet_fake() -> Repositories:
    return load(FakeRepositories(), POINTS)


@pytest.fixture(scope="module", params=STORES)
def loaded(request: pytest.FixtureRequest) -> Repositories:
    """A store holding POINTS, shared by the read-only tests of this module."""
    return request.getfixturevalue(f"fleet_{request.param}")  # type: ignore[no-any-return]


def test_the_data_set_has_ties_across_hosts_and_a_host_without_cores() -> None:
    newest = max(m.time for m in POINTS if m.time <= END and m.host != "web-02")
    assert {m.host for m in POINTS if m.time == newest} == set(HOSTS)
    assert not any(m.host == "Zeta" and m.labels.get("core") == "0" for m in POINTS)


SELECTIONS: dict[str, dict[str, Any]] = {
    "every-host": {"host": None},
    "every-host,core=total": {"host": None, "labels": (("core", "total"),)},
    "by-host": {"host": None, "group_by": HOST_GROUP},
    "by-host,core=0": {"host": None, "group_by": HOST_GROUP, "labels": (("core", "0"),)},
    "one-host,by-host": {"host": "web-02", "group_by": HOST_GROUP},
    "every-host,by-core": {"host": None, "group_by": "core"},
}


@pytest.mark.parametrize("selection", list(SELECTIONS))
@pytest.mark.parametrize("agg", AGGREGATES)
@pytest.mark.parametrize("bucket", ["5m", "1h"])
def test_fleet_query_matches_reference(loaded: Repositories, bucket: str, agg: str,
                                       selection: str) -> None:
    query = MetricQuery(name=NAME, start=START, end=END, bucket=bucket, agg=agg,
                        **SELECTIONS[selection])
    expected = fleet_reference(POINTS, query)
    assert any(s.points for s in expected)
    assert_same(loaded.metrics.query(query), expected)


def test_group_by_host_answers_every_host_in_code_point_order(loaded: Repositories) -> None:
    query = MetricQuery(None, NAME, START, END, bucket="1h", group_by=HOST_GROUP)
    assert [s.labels for s in loaded.metrics.query(query)] == \
        [{"host": h} for h in sorted(HOSTS)]


def test_fleet_query_of_nothing(loaded: Repositories) -> None:
    query = MetricQuery(None, "disk.used_pct", START, END, group_by=HOST_GROUP)
    assert loaded.metrics.query(query) == []
    assert loaded.metrics.query(replace(query, group_by=None)) == [Series({}, [])]


@pytest.mark.parametrize(("selection", "limit"), [
    ({"group_by": HOST_GROUP}, 100), ({"group_by": HOST_GROUP}, 2),
    ({"group_by": HOST_GROUP, "labels": (("core", "0"),)}, 100),
    ({"group_by": HOST_GROUP, "host": "db-01"}, 100),
    ({"group_by": "core"}, 100), ({}, 100)])
def test_count_series_of_fleet_queries(loaded: Repositories, selection: dict[str, Any],
                                       limit: int) -> None:
    query = MetricQuery(**{"host": None, **selection}, name=NAME, start=START, end=END)
    expected = min(len(fleet_reference(POINTS, query)), limit)
    assert loaded.metrics.count_series(query, limit) == expected


@pytest.mark.parametrize("order", ["desc", "asc"])
@pytest.mark.parametrize("agg", AGGREGATES)
def test_top_matches_reference(loaded: Repositories, agg: str, order: str) -> None:
    query = TopQuery(NAME, START, END, agg=agg, labels=(("core", "total"),), limit=3,
                     order=order)
    expected = top_reference(POINTS, query)
    got = loaded.metrics.top(query)
    assert [h.host for h in got] == [h.host for h in expected]
    assert [h.value for h in got] == pytest.approx([h.value for h in expected], rel=1e-9)


def test_top_limit_filters_and_window(loaded: Repositories) -> None:
    everyone = TopQuery(NAME, START, END, agg="count", limit=100)
    assert sorted(h.host for h in loaded.metrics.top(everyone)) == sorted(HOSTS)
    core0 = replace(everyone, labels=(("core", "0"),))
    assert {h.host for h in loaded.metrics.top(core0)} == set(HOSTS) - {"Zeta"}
    assert [h.host for h in loaded.metrics.top(replace(everyone, limit=1))] == \
        [top_reference(POINTS, everyone)[0].host]
    # Only web-02 has a point at exactly START: the window is inclusive.
    edge = replace(everyone, end=START + timedelta(microseconds=1))
    assert [h.host for h in loaded.metrics.top(edge)] == ["web-02"]
    assert loaded.metrics.top(edge) == top_reference(POINTS, edge)
    assert loaded.metrics.top(replace(everyone, name="disk.used_pct")) == []


def test_top_ties_are_ranked_by_host_name(repos: Repositories) -> None:
    time = datetime.now(UTC).replace(microsecond=0) - timedelta(minutes=1)
    load(repos, [Metric(time, host, "mem.used_pct", value, {}) for host, value in
                 (("b", 5.0), ("a", 5.0), ("c", 9.0), ("B", 5.0))])
    query = TopQuery("mem.used_pct", time - timedelta(minutes=1), time, agg="max")
    assert [h.host for h in repos.metrics.top(query)] == ["c", "B", "a", "b"]
    assert [h.host for h in repos.metrics.top(replace(query, order="asc"))] == \
        ["B", "a", "b", "c"]


def test_latest_limit_cuts_the_answer(loaded: Repositories) -> None:
    since = START - timedelta(minutes=5)
    every = loaded.fleet.latest(since, name=NAME)
    assert len(every) == 7  # 3 hosts x (total, 0) + Zeta's total
    assert loaded.fleet.latest(since, name=NAME, limit=7) == every
    cut = loaded.fleet.latest(since, name=NAME, limit=6)
    assert len(cut) == 6 and all(value in every for value in cut)


def test_fleet_queries_never_serve_from_a_rollup(loaded: Repositories) -> None:
    recent = datetime.now(UTC) - timedelta(days=2)
    for selection in SELECTIONS.values():
        query = MetricQuery(name=NAME, start=recent, end=recent + timedelta(days=1),
                            bucket="1h", **selection)
        assert not loaded.metrics.serves_from_rollup(query)


HOSTILE = "x') OR 1=1; DROP TABLE metrics; --"


def test_hostile_label_values_and_keys_are_only_values(loaded: Repositories) -> None:
    labels = ((HOSTILE[:10].replace(" ", "_").replace("'", "_").replace(")", "_"), HOSTILE),
              ("core", HOSTILE))
    for label in labels:
        query = MetricQuery(None, NAME, START, END, labels=(label,), group_by=HOST_GROUP)
        assert loaded.metrics.query(query) == []
        assert loaded.metrics.count_series(query, 10) == 0
        assert loaded.metrics.top(TopQuery(NAME, START, END, labels=(label,))) == []
    everyone = TopQuery(NAME, START, END, agg="count", limit=100)
    assert len(loaded.metrics.top(everyone)) == len(HOSTS)  # the table is still there
