"""Log paging never skips a line while batches commit out of order.

Writer threads store batches through the repository; each batch pauses (a random 0-40 ms)
after its first entry, INSIDE its transaction (the entries are read while the COPY, or the
SQLite inserts, run), so later batches take higher ids and commit first. A reader polls as a
client following the logs does: from the top, newest first, page after page (``cursor`` =
the page's ``next_cursor``) down to the newest id it saw before; everything newer is new.
When the writers are done and a last poll ran, the reader must have seen every stored entry,
each once. On PostgreSQL a first page answers only ids under the horizon of final ids; on
SQLite writers are serialised (``BEGIN IMMEDIATE``), so ids commit in order anyway.
"""

from __future__ import annotations

import random
import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime

import pytest

from miniobserv.model import LogBatch, LogEntry
from miniobserv.server.storage.base import LogQuery, Repositories

WRITERS = 4
BATCHES = 30  # per writer
LINES = 5  # per batch
PAGE = 7  # small pages: many page boundaries


class SlowEntries(list[LogEntry]):
    """Entries that pause after the first one each time they are read."""

    def __init__(self, entries: list[LogEntry], pause_s: float) -> None:
        super().__init__(entries)
        self.pause_s = pause_s

    def __iter__(self) -> Iterator[LogEntry]:
        for index, entry in enumerate(super().__iter__()):
            if index == 1:
                time.sleep(self.pause_s)
            yield entry


class Follower:
    """Polls for lines newer than the newest it saw, walking down from the top."""

    def __init__(self, repos: Repositories) -> None:
        self.repos = repos
        self.seen: list[int] = []
        self.newest = 0
        self.polls = 0

    def poll(self) -> None:
        self.polls += 1
        fresh: list[int] = []
        cursor: int | None = None
        while True:
            page = self.repos.logs.query(LogQuery(limit=PAGE, cursor=cursor))
            fresh += [e.id for e in page.entries if e.id > self.newest]
            if page.next_cursor is None or page.entries[-1].id <= self.newest:
                break
            cursor = page.next_cursor
        if fresh:
            self.newest = max(fresh)
        self.seen += fresh


def write(repos: Repositories, writer: int, errors: list[Exception]) -> None:
    rand = random.Random(writer)
    try:
        for number in range(BATCHES):
            host = f"w{writer}"
            at = datetime.now(UTC)
            entries = [LogEntry(at, host, "info", f"{writer}/{number}/{line}")
                       for line in range(LINES)]
            repos.logs.insert_batch(LogBatch(host, SlowEntries(entries, rand.uniform(0, 0.04))))
    except Exception as err:  # noqa: BLE001 - reported by the test
        errors.append(err)


def stored_ids(repos: Repositories) -> list[int]:
    ids: list[int] = []
    cursor: int | None = None
    while True:
        page = repos.logs.query(LogQuery(limit=1000, cursor=cursor))
        ids += [e.id for e in page.entries]
        if page.next_cursor is None:
            return ids
        cursor = page.next_cursor


@pytest.mark.parametrize("store", ["sqlite", pytest.param("postgres",
                                                          marks=pytest.mark.integration)])
def test_a_follower_sees_every_committed_line_once(repos: Repositories) -> None:
    errors: list[Exception] = []
    writers = [threading.Thread(target=write, args=(repos, i, errors)) for i in range(WRITERS)]
    follower = Follower(repos)
    for thread in writers:
        thread.start()
    while any(thread.is_alive() for thread in writers):
        follower.poll()
    for thread in writers:
        thread.join()
    follower.poll()
    assert errors == []
    stored = stored_ids(repos)
    assert len(stored) == WRITERS * BATCHES * LINES
    assert len(follower.seen) == len(set(follower.seen))  # none twice
    assert sorted(follower.seen) == sorted(stored), \
        f"skipped {len(set(stored) - set(follower.seen))} of {len(stored)}"
    assert follower.polls >= 5  # the polls really ran while batches were in flight
    print(f"\n{repos.__class__.__name__}: {len(stored)} stored, {len(follower.seen)} seen "
          f"in {follower.polls} polls")
