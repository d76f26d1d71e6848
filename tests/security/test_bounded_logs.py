"""Log queries have a bounded cost (issue 9, item 2): a search shorter than 3 characters is
400 on every store (the trigram index cannot serve it), and a page holds at most
MAX_LOG_PAGE_BYTES (4 MiB) of message text besides at most ``limit`` entries."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import pytest

from miniobserv.model import MAX_MESSAGE_BYTES, LogBatch, LogEntry
from miniobserv.server.storage.base import MAX_LOG_PAGE_BYTES, LogQuery, Repositories
from tests.security.bounded_support import STORES, auth, opened_store, test_client

T0 = datetime(2026, 1, 1, tzinfo=UTC)
URLS = ["/api/v1/logs/query", "/api/v1/dashboard/logs"]


@pytest.fixture(params=STORES)
def store(request: pytest.FixtureRequest) -> Iterator[Repositories]:
    with opened_store(request.param, request) as repos:
        yield repos


def seed(repos: Repositories, *messages: str) -> None:
    """Store ``messages`` oldest first (so they come back in reverse order)."""
    for start in range(0, len(messages), 100):
        repos.logs.insert_batch(LogBatch("web-01", [
            LogEntry(T0 + timedelta(seconds=start + i), "web-01", "info", message)
            for i, message in enumerate(messages[start:start + 100])]))


@pytest.mark.parametrize("url", URLS)
@pytest.mark.parametrize("key", ["q", "search"])
def test_search_shorter_than_3_characters_is_400(store: Repositories, url: str,
                                                 key: str) -> None:
    seed(store, "abc", "xyzzy")
    client = test_client(store)
    for text in ("a", "ab", "é🚀"):
        response = client.get(url, query_string={key: text}, headers=auth())
        assert response.status_code == 400
        assert response.get_json() == {"error": f"{key}: must be at least 3 characters (a "
                                                "shorter text cannot use the search index)"}
    for text, found in (("abc", ["abc"]), ("yzz", ["xyzzy"]), ("é🚀x", [])):
        response = client.get(url, query_string={key: text}, headers=auth())
        assert response.status_code == 200
        assert [e["message"] for e in response.get_json()["entries"]] == found


def walk(repos: Repositories, **query: int) -> list[list[str]]:
    """Every page of a query, following next_cursor, as lists of messages."""
    pages: list[list[str]] = []
    cursor = None
    while True:
        page = repos.logs.query(LogQuery(cursor=cursor, **query))
        pages.append([entry.message for entry in page.entries])
        if page.next_cursor is None:
            return pages
        cursor = page.next_cursor


def test_pages_stop_at_max_bytes_without_skip_or_overlap(store: Repositories) -> None:
    seed(store, *(f"message {i:02}" for i in range(10)))  # 10 bytes each
    pages = walk(store, max_bytes=30, limit=1000)
    assert pages == [[f"message {i:02}" for i in range(9 - start, max(-1, 6 - start), -1)]
                     for start in (0, 3, 6, 9)]
    assert walk(store, max_bytes=29, limit=1000)[0] == ["message 09", "message 08"]
    assert walk(store, max_bytes=30, limit=2)[0] == ["message 09", "message 08"]


def test_an_entry_larger_than_max_bytes_is_a_page_of_its_own(store: Repositories) -> None:
    seed(store, "small", "a" * 100, "é" * 5)  # "é" is 2 bytes in UTF-8: 10 bytes
    assert walk(store, max_bytes=10, limit=100) == [["é" * 5], ["a" * 100], ["small"]]
    assert walk(store, max_bytes=9, limit=100) == [["é" * 5], ["a" * 100], ["small"]]


def test_the_real_limit_at_its_edge(store: Repositories) -> None:
    big = "x" * MAX_MESSAGE_BYTES
    count = MAX_LOG_PAGE_BYTES // MAX_MESSAGE_BYTES  # 64 messages: exactly 4 MiB
    seed(store, "old", *[big] * count)
    first = store.logs.query(LogQuery(limit=1000))
    assert [len(entry.message) for entry in first.entries] == [MAX_MESSAGE_BYTES] * count
    assert first.next_cursor == first.entries[-1].id  # "old" would be one byte too many
    rest = store.logs.query(LogQuery(limit=1000, cursor=first.next_cursor))
    assert [entry.message for entry in rest.entries] == ["old"]
    assert rest.next_cursor is None


def test_the_api_pages_by_bytes() -> None:
    client = test_client()
    repos = client.application.extensions["miniobserv"]
    big = "x" * MAX_MESSAGE_BYTES
    seed(repos, "old", "older than the rest", *[big] * 64)
    answer = client.get(URLS[0], query_string={"limit": "1000"}, headers=auth()).get_json()
    assert len(answer["entries"]) == 64
    rest = client.get(URLS[0], query_string={"limit": "1000", "cursor": answer["next_cursor"]},
                      headers=auth()).get_json()
    assert [e["message"] for e in rest["entries"]] == ["older than the rest", "old"]
    assert rest["next_cursor"] is None
