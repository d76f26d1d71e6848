"""One logs contract, three stores: the fake, SQLite and a real PostgreSQL (SPEC §3, §7).

Expected pages come from a naive reference filter over the entries written, never from the
store under test.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Sequence
from dataclasses import replace
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest

from miniobserv.model import LEVELS, LogBatch, LogEntry, Metric, MetricBatch
from miniobserv.server.storage import open_repositories
from miniobserv.server.storage.base import (
    MAX_LOG_LIMIT,
    BatchConflict,
    LogPage,
    LogQuery,
    LogRecord,
    MetricQuery,
    Repositories,
    StorageError,
)
from miniobserv.server.storage.postgres.logs import like_pattern
from tests.fakes import FakeRepositories
from tests.server.storage.conftest import assert_unavailable, config_for, run_in_threads

US = timedelta(microseconds=1)
T0 = datetime(2026, 6, 5, 10, 0, 0, tzinfo=UTC)
HOST = "web-01"
def entry(message: str, *, host: str = HOST, level: str = "info", time: datetime = T0,
          path: str | None = "/var/log/app.log", **labels: str) -> LogEntry:
    return LogEntry(time=time, host=host, level=level, message=message, path=path,
                    labels=labels)


def store_entries(repos: Repositories, entries: Sequence[LogEntry],
                  batch_id: uuid.UUID | None = None) -> None:
    """Store ``entries`` in batches of one host each, in order."""
    start = 0
    while start < len(entries):
        end = start
        while end < len(entries) and entries[end].host == entries[start].host:
            end += 1
        batch = LogBatch(entries[start].host, entries[start:end], batch_id)
        assert repos.logs.insert_batch(batch) == end - start
        start = end


def walk(repos: Repositories, query: LogQuery) -> list[LogRecord]:
    """Every page of ``query``, following ``next_cursor`` to the end."""
    records: list[LogRecord] = []
    cursor = query.cursor
    while True:
        page = repos.logs.query(LogQuery(**{**query.__dict__, "cursor": cursor}))
        records.extend(page.entries)
        if page.next_cursor is None:
            return records
        assert page.next_cursor == page.entries[-1].id
        cursor = page.next_cursor


def messages(records: Sequence[LogRecord]) -> list[str]:
    return [record.message for record in records]


# --- the reference -------------------------------------------------------------------------

def reference(entries: Sequence[LogEntry], query: LogQuery) -> list[str]:
    """The messages ``query`` must find among ``entries`` (stored in order), newest first."""
    levels = LEVELS if query.min_level is None else LEVELS[LEVELS.index(query.min_level):]
    needle = (query.search or "").translate(ASCII_LOWER)
    found = [e.message for e in reversed(entries)
             if (query.host is None or e.host == query.host)
             and (query.level is None or e.level == query.level)
             and e.level in levels
             and (query.start is None or e.time >= query.start)
             and (query.end is None or e.time <= query.end)
             and needle in e.message.translate(ASCII_LOWER)]
    return found


ASCII_LOWER = {code: code + 32 for code in range(ord("A"), ord("Z") + 1)}

SEARCH_TEXTS = [
    "disk 50% full", "disk 500 full", "disk 50x full", "user_id=7", "userXid=7", "USER_ID=8",
    "Connection TimeOut after 3s", "timeout", "TIMEOUT!", "C:\\temp\\x.log opened",
    "C:temp opened", "100%_done", "100%%_done", "a\\%b", "Größe ERROR in Straße", "ÉCHEC total",
    "échec partiel", "emoji 🚀 launched", "tab\there", "'quoted' \"double\"",
]


def data_set() -> list[LogEntry]:
    """Entries over several hosts, levels, times (window edges included) and texts."""
    entries = []
    for i, text in enumerate(SEARCH_TEXTS * 3):
        entries.append(entry(f"{text} #{i}", host=["web-01", "web-02", "db-1"][i % 3],
                             level=LEVELS[i % 4], time=T0 + timedelta(seconds=i)))
    for offset in (-US, timedelta(0), timedelta(seconds=30), timedelta(seconds=30) + US):
        entries.append(entry(f"edge {offset}", time=T0 + timedelta(seconds=10) + offset))
    return entries


QUERIES: dict[str, LogQuery] = {
    "all": LogQuery(),
    "host": LogQuery(host="web-02"),
    "unknown host": LogQuery(host="nobody"),
    **{f"level={level}": LogQuery(level=level) for level in LEVELS},
    **{f"min_level={level}": LogQuery(min_level=level) for level in LEVELS},
    "window": LogQuery(start=T0 + timedelta(seconds=10), end=T0 + timedelta(seconds=40)),
    "from only": LogQuery(start=T0 + timedelta(seconds=50)),
    "to only": LogQuery(end=T0 + timedelta(seconds=5)),
    "instant": LogQuery(start=T0 + timedelta(seconds=10), end=T0 + timedelta(seconds=10)),
    "50%": LogQuery(search="50%"),
    "_id": LogQuery(search="_id="),
    "mixed case": LogQuery(search="tImEoUt"),
    "backslash": LogQuery(search="C:\\temp"),
    "percent-underscore": LogQuery(search="%_"),
    "escape char": LogQuery(search="\\%"),
    "non-ASCII exact": LogQuery(search="Straße"),
    "ASCII folded in non-ASCII text": LogQuery(search="größe error"),
    "emoji": LogQuery(search="🚀"),
    "nothing": LogQuery(search="no such text"),
    "combined": LogQuery(host="web-01", min_level="info", start=T0,
                         end=T0 + timedelta(seconds=45), search="O"),
    "small pages": LogQuery(limit=7),
    "cursor": LogQuery(cursor=20, limit=5),
}


# --- reads ----------------------------------------------------------------------------------

@pytest.fixture
def loaded(repos: Repositories) -> Repositories:
    store_entries(repos, data_set())
    return repos


@pytest.mark.parametrize("name", QUERIES)
def test_query_matches_reference(loaded: Repositories, name: str) -> None:
    query = QUERIES[name]
    # In a fresh store the ids are 1..n in store order: a cursor keeps the first cursor-1.
    written = data_set()[:None if query.cursor is None else query.cursor - 1]
    expected = reference(written, query)
    assert messages(walk(loaded, query)) == expected
    first = loaded.logs.query(query)
    assert messages(first.entries) == expected[:query.limit]
    assert (first.next_cursor is None) == (len(expected) <= query.limit)


def test_the_reference_finds_what_it_should() -> None:
    """Guard the data and the reference: literal %, _ and \\, and ASCII-only folding."""
    found = {name: [m.split(" #")[0] for m in reference(data_set(), q)]
             for name, q in QUERIES.items()}
    assert set(found["50%"]) == {"disk 50% full"}
    assert set(found["_id"]) == {"user_id=7", "USER_ID=8"}
    assert set(found["mixed case"]) == {"Connection TimeOut after 3s", "timeout", "TIMEOUT!"}
    assert set(found["backslash"]) == {"C:\\temp\\x.log opened"}
    assert set(found["percent-underscore"]) == {"100%_done", "100%%_done"}
    assert set(found["escape char"]) == {"a\\%b"}
    assert set(found["ASCII folded in non-ASCII text"]) == {"Größe ERROR in Straße"}
    assert len(found["instant"]) == 2 and len(found["window"]) > 3  # an edge, line #10
    assert found["nothing"] == [] and found["unknown host"] == []


def test_round_trip_keeps_every_field(repos: Repositories) -> None:
    local = timezone(timedelta(hours=-3, minutes=-30))
    written = [entry("first", level="debug", time=T0 + 7 * US),
               entry("second ünïcode", level="error", path=None, env="prod", team="a"),
               entry("x" * 65536, level="warn", time=T0.astimezone(local)),
               entry("fourth", host="db-1", level="info")]
    store_entries(repos, written)
    page = repos.logs.query(LogQuery())
    assert page.next_cursor is None
    ids = [record.id for record in page.entries]
    assert ids == sorted(ids, reverse=True) and len(set(ids)) == 4 and min(ids) >= 1
    for record, source in zip(page.entries, reversed(written), strict=True):
        assert (record.host, record.level, record.message, record.path, dict(record.labels)) \
            == (source.host, source.level, source.message, source.path, dict(source.labels))
        assert record.time == source.time and record.time.utcoffset() == timedelta(0)


def test_ids_follow_batch_order_across_batches(repos: Repositories) -> None:
    for n in range(3):
        store_entries(repos, [entry(f"b{n}-{i}") for i in range(5)])
    records = walk(repos, LogQuery())
    assert messages(records) == [f"b{n}-{i}" for n in (2, 1, 0) for i in range(4, -1, -1)]
    ids = [record.id for record in records]
    assert ids == sorted(ids, reverse=True) and len(set(ids)) == 15


def test_empty_store_answers_an_empty_last_page(repos: Repositories) -> None:
    assert repos.logs.query(LogQuery()) == LogPage([], None)
    assert repos.logs.query(LogQuery(cursor=1)) == LogPage([], None)


@pytest.mark.parametrize("count, pages", [(99, [99]), (100, [100]), (101, [100, 1]),
                                          (200, [100, 100]), (250, [100, 100, 50])])
def test_next_cursor_is_null_exactly_on_the_last_page(repos: Repositories, count: int,
                                                      pages: list[int]) -> None:
    store_entries(repos, [entry(f"line {i}") for i in range(count)])
    sizes, cursor = [], None
    while True:
        page = repos.logs.query(LogQuery(limit=100, cursor=cursor))
        sizes.append(len(page.entries))
        if page.next_cursor is None:
            break
        cursor = page.next_cursor
    assert sizes == pages


def test_limit_of_1000_returns_1000(repos: Repositories) -> None:
    store_entries(repos, [entry(f"line {i}") for i in range(1000)])
    store_entries(repos, [entry("one more")])
    page = repos.logs.query(LogQuery(limit=MAX_LOG_LIMIT))
    assert len(page.entries) == 1000 and page.entries[0].message == "one more"
    assert page.next_cursor == page.entries[-1].id
    assert messages(repos.logs.query(LogQuery(cursor=page.next_cursor)).entries) == ["line 0"]


@pytest.mark.parametrize("host", [None, HOST])
def test_paging_while_entries_arrive_has_no_gap_or_overlap(repos: Repositories,
                                                           host: str | None) -> None:
    """250 entries in 3 pages of 100; new entries between fetches stay out of the walk."""
    written = [entry(f"old {i}", host=HOST) for i in range(250)]
    store_entries(repos, written[:120])
    store_entries(repos, [entry("other host", host="web-09")])
    store_entries(repos, written[120:])
    if host is None:
        written.insert(120, entry("other host", host="web-09"))
    seen: list[LogRecord] = []
    cursor, pages = None, 0
    while True:
        page = repos.logs.query(LogQuery(host=host, limit=100, cursor=cursor))
        seen.extend(page.entries)
        pages += 1
        # New entries arrive between two fetches, for the walked host and another one.
        store_entries(repos, [entry(f"new {pages}-{i}", host=HOST) for i in range(30)])
        store_entries(repos, [entry(f"new {pages}", host="web-09")])
        if page.next_cursor is None:
            break
        cursor = page.next_cursor
    assert pages == 3
    assert messages(seen) == [e.message for e in reversed(written)]
    assert len({record.id for record in seen}) == len(seen)
    assert not any(m.startswith("new") for m in messages(seen))
    assert messages(repos.logs.query(LogQuery(host=host, limit=1)).entries) == [
        f"new {pages}" if host is None else f"new {pages}-29"]


# --- writes ---------------------------------------------------------------------------------

def test_duplicate_batch_id_is_acknowledged_and_stored_once(repos: Repositories) -> None:
    batch_id = uuid.uuid4()
    batch = LogBatch(HOST, [entry("a"), entry("b")], batch_id)
    assert repos.logs.insert_batch(batch) == 2
    assert repos.logs.insert_batch(batch) == 2
    retry = LogBatch(HOST, [entry("a", x="1", y="2"), entry("b")], batch_id=uuid.uuid4())
    assert repos.logs.insert_batch(retry) == 2
    reordered = [replace(retry.entries[0], labels={"y": "2", "x": "1"}), retry.entries[1]]
    assert repos.logs.insert_batch(replace(retry, entries=reordered)) == 2  # labels unordered
    assert messages(walk(repos, LogQuery())) == ["b", "a", "b", "a"]
    for _ in range(2):  # without a batch_id: no dedup
        repos.logs.insert_batch(LogBatch(HOST, [entry("d")]))
    assert messages(walk(repos, LogQuery())) == ["d", "d", "b", "a", "b", "a"]


CHANGES: dict[str, Callable[[LogEntry], LogEntry]] = {
    "host": lambda e: replace(e, host="web-02"),
    "time": lambda e: replace(e, time=e.time + US),
    "level": lambda e: replace(e, level="warn"),
    "message": lambda e: replace(e, message=e.message + "!"),
    "path": lambda e: replace(e, path="/var/log/other.log"),
    "no path": lambda e: replace(e, path=None),
    "label": lambda e: replace(e, labels={"app": "api"}),
    # The fields are delimited: moving text from one field to the next is another batch.
    "fields shifted": lambda e: replace(e, message="hello /var/log", path="app.log"),
}


@pytest.mark.parametrize("change", list(CHANGES))
def test_reused_batch_id_with_other_entries_is_a_conflict(repos: Repositories,
                                                          change: str) -> None:
    batch_id = uuid.uuid4()
    first = LogBatch(HOST, [entry("x"), entry("hello", path="/var/log/app.log")], batch_id)
    assert repos.logs.insert_batch(first) == 2
    other = CHANGES[change](first.entries[1])
    with pytest.raises(BatchConflict) as raised:
        repos.logs.insert_batch(LogBatch(other.host, [first.entries[0], other], batch_id))
    assert (raised.value.batch_id, raised.value.kind) == (batch_id, "logs")
    assert messages(walk(repos, LogQuery())) == ["hello", "x"]
    assert repos.metrics.hosts() == [HOST]
    with pytest.raises(BatchConflict):  # fewer entries
        repos.logs.insert_batch(LogBatch(HOST, first.entries[:1], batch_id))
    assert repos.logs.insert_batch(first) == 2  # the true retry is still acknowledged
    assert len(walk(repos, LogQuery())) == 2


def test_concurrent_log_batches_with_one_id_store_it_once(repos: Repositories) -> None:
    batch_id = uuid.uuid4()
    conflicts: list[int] = []

    def send(worker: int) -> None:
        try:
            repos.logs.insert_batch(LogBatch(HOST, [entry(f"w{worker}")] * 20, batch_id))
        except BatchConflict:
            conflicts.append(worker)

    assert run_in_threads(send, 5) == []
    assert len(conflicts) == 4
    [stored] = {record.message for record in walk(repos, LogQuery())}
    assert len(walk(repos, LogQuery())) == 20 and stored not in {f"w{w}" for w in conflicts}


def test_a_batch_id_is_per_kind(repos: Repositories) -> None:
    """A metrics batch and a logs batch with the same id are two batches: both are stored."""
    batch_id = uuid.uuid4()
    metrics = MetricBatch(HOST, [Metric(T0, HOST, "mem.used_pct", 12.5)], batch_id)
    assert repos.metrics.insert_batch(metrics) == 1
    assert repos.logs.insert_batch(LogBatch(HOST, [entry("a")], batch_id)) == 1
    assert repos.logs.insert_batch(LogBatch(HOST, [entry("a")], batch_id)) == 1  # a retry
    assert repos.metrics.insert_batch(metrics) == 1  # a retry
    assert messages(walk(repos, LogQuery())) == ["a"]
    window = MetricQuery(HOST, "mem.used_pct", T0, T0 + timedelta(minutes=1), bucket="1m",
                         agg="count")
    [series] = repos.metrics.query(window)
    assert [point.value for point in series.points] == [1]


def test_accepted_batch_marks_the_host_as_seen(repos: Repositories) -> None:
    assert repos.metrics.hosts() == []
    store_entries(repos, [entry("hello", host="log-only-host")])
    assert repos.metrics.hosts() == ["log-only-host"]


def bad_entry() -> LogEntry:
    """An entry every store refuses: no message (NOT NULL)."""
    return LogEntry(T0, HOST, "info", None)  # type: ignore[arg-type]


def test_failing_batch_stores_nothing(repos: Repositories) -> None:
    good = [entry(f"line {i}") for i in range(999)]
    failing = LogBatch(HOST, [*good[:600], bad_entry(), *good[600:]], uuid.uuid4())
    with pytest.raises(StorageError):
        repos.logs.insert_batch(failing)
    assert repos.logs.query(LogQuery()) == LogPage([], None)
    assert repos.metrics.hosts() == []
    retry = LogBatch(HOST, good[:3], failing.batch_id)  # its id was not recorded
    assert repos.logs.insert_batch(retry) == 3
    assert messages(walk(repos, LogQuery())) == ["line 2", "line 1", "line 0"]


def test_concurrent_batches_are_all_stored_with_unique_ids(repos: Repositories) -> None:
    def send(worker: int) -> None:
        for i in range(5):
            batch = [entry(f"w{worker} b{i} e{j}", host=f"h{worker}") for j in range(50)]
            repos.logs.insert_batch(LogBatch(f"h{worker}", batch, uuid.uuid4()))

    assert run_in_threads(send, 4) == []
    records = walk(repos, LogQuery(limit=333))
    assert len(records) == 1000 and len({r.id for r in records}) == 1000
    for worker in range(4):  # each worker's entries in the order it sent them
        own = messages(walk(repos, LogQuery(host=f"h{worker}")))
        assert own == [f"w{worker} b{i} e{j}" for i in range(4, -1, -1)
                       for j in range(49, -1, -1)]


def down_calls(repos: Repositories) -> list[Callable[[], object]]:
    return [lambda: repos.logs.query(LogQuery()),
            lambda: repos.logs.insert_batch(LogBatch(HOST, [entry("x")]))]


def test_down_fake_and_unreadable_sqlite_are_unavailable(tmp_path: Path) -> None:
    fake = FakeRepositories()
    fake.down = True
    opened = open_repositories(config_for(f"sqlite:///{tmp_path / 'missing' / 'x.db'}"))
    assert_unavailable([*down_calls(fake), *down_calls(opened)])
    opened.close()


def test_unreachable_postgres_is_unavailable(unreachable_postgres: Repositories) -> None:
    assert_unavailable(down_calls(unreachable_postgres))


# --- the query object and the pattern --------------------------------------------------------

@pytest.mark.parametrize("kwargs", [{"limit": 0}, {"limit": -1}, {"limit": 1001},
                                    {"cursor": 0}, {"cursor": -5},
                                    {"level": "info", "min_level": "warn"},
                                    {"level": "fatal"}, {"min_level": "WARN"}])
def test_log_query_refuses_bad_arguments(kwargs: dict[str, Any]) -> None:
    with pytest.raises(ValueError):
        LogQuery(**kwargs)


def test_levels_of_a_query() -> None:
    assert LogQuery().levels() is None
    assert LogQuery(level="warn").levels() == ("warn",)
    assert LogQuery(min_level="debug").levels() == LEVELS
    assert LogQuery(min_level="warn").levels() == ("warn", "error")
    assert LogQuery(min_level="error").levels() == ("error",)


@pytest.mark.parametrize("text, pattern", [("plain", "%plain%"), ("50%", "%50\\%%"),
                                           ("a_b", "%a\\_b%"), ("C:\\x", "%C:\\\\x%"),
                                           ("\\%_", "%\\\\\\%\\_%")])
def test_like_pattern_escapes_the_wildcards_and_the_escape(text: str, pattern: str) -> None:
    assert like_pattern(text) == pattern


# --- both SQL stores, one answer ----------------------------------------------------------

@pytest.mark.integration
def test_sql_stores_answer_identically(sqlite_url: str, fresh_postgres_url: str) -> None:
    stores = [open_repositories(config_for(url)) for url in (sqlite_url, fresh_postgres_url)]
    try:
        for opened in stores:
            store_entries(opened, data_set())
        for query in QUERIES.values():
            lite, pg = (opened.logs.query(query) for opened in stores)
            assert lite == pg
    finally:
        for opened in stores:
            opened.close()
