"""Outbox claims over the fake, SQLite and a real PostgreSQL: a pending item is claimed by one
claimer at a time, for a lease; the attempt is recorded only under the claim that holds it;
a claimer that vanished leaves its item claimable once the lease ends. And the Deliverer: a
second deliverer (a leader handover) never POSTs an item another one holds, nor overtakes it
on its channel."""

from __future__ import annotations

import threading
import time
from collections.abc import Mapping
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from miniobserv.rules import Notification
from miniobserv.server.alerting.notify import Deliverer
from miniobserv.server.storage import migrate, open_repositories
from miniobserv.server.storage.base import Outgoing, Repositories, StorageError
from tests.server.storage.conftest import config_for

NOW = datetime(2026, 6, 5, 10, 0, tzinfo=UTC)
LONG = 60.0
SHORT = 0.3  # a lease the test outlives


def queue(repos: Repositories, *events: tuple[str, str]) -> list[int]:
    """Queue (channel, event) items now; their ids, oldest first."""
    repos.fleet.save_cycle([], [], [Outgoing(channel, {"event": event, "host": "web-01"}, NOW)
                                    for channel, event in events], [])
    return [item.id for item in repos.fleet.pending_notifications()]


def test_a_claimed_item_is_nobody_elses_until_finished(repos: Repositories) -> None:
    fleet = repos.fleet
    [item] = queue(repos, ("a", "firing"))
    assert fleet.claim_notification(item, "A", LONG)
    assert not fleet.claim_notification(item, "B", LONG)
    assert not fleet.claim_notification(item, "A", LONG)  # not re-entrant either
    assert not fleet.finish_notification(item, NOW, delivered=True, claim="B")
    assert [i.id for i in fleet.pending_notifications()] == [item]
    assert fleet.finish_notification(item, NOW, delivered=True, claim="A")
    assert fleet.pending_notifications() == []
    assert not fleet.claim_notification(item, "B", LONG)  # sent: no longer claimable


def test_a_retry_releases_the_claim(repos: Repositories) -> None:
    fleet = repos.fleet
    [item] = queue(repos, ("a", "firing"))
    assert fleet.claim_notification(item, "A", LONG)
    assert fleet.finish_notification(item, NOW, delivered=False, retry_at=NOW, error="500",
                                     claim="A")
    assert fleet.claim_notification(item, "B", LONG)
    assert [i.attempts for i in fleet.pending_notifications()] == [1]


def test_an_ended_lease_is_taken_over_and_the_old_record_refused(repos: Repositories) -> None:
    fleet = repos.fleet
    [item] = queue(repos, ("a", "firing"))
    assert fleet.claim_notification(item, "A", SHORT)
    assert not fleet.claim_notification(item, "B", LONG)  # the lease still runs
    time.sleep(SHORT + 0.2)
    assert fleet.claim_notification(item, "B", LONG)
    # A comes back (its POST outlived the lease): its record must not undo B's.
    assert not fleet.finish_notification(item, NOW, delivered=False, retry_at=NOW, claim="A")
    assert fleet.finish_notification(item, NOW, delivered=True, claim="B")
    assert fleet.pending_notifications() == []


def test_concurrent_claims_of_one_item_one_wins(repos: Repositories) -> None:
    [item] = queue(repos, ("a", "firing"))
    won: list[str] = []
    start = threading.Barrier(6)

    def claim(name: str) -> None:
        start.wait()
        if repos.fleet.claim_notification(item, name, LONG):
            won.append(name)

    threads = [threading.Thread(target=claim, args=(f"c{i}",)) for i in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(won) == 1


class Receiver:
    """A Post that records what it got."""

    def __init__(self) -> None:
        self.got: list[str] = []

    def __call__(self, url: str, body: Mapping[str, Any]) -> int:
        self.got.append(str(body["event"]))
        return 200


def test_a_second_deliverer_skips_and_holds_back_what_another_holds(
        repos: Repositories) -> None:
    """Handover: the old leader claimed channel a's first item and is POSTing it; the new
    leader delivers channel b, and nothing of channel a (its resolved must not overtake)."""
    channels = [Notification("webhook", "http://127.0.0.1:9/a"),
                Notification("webhook", "http://127.0.0.1:9/b")]
    a, b = (channel.key for channel in channels)
    first, _, _ = queue(repos, (a, "firing"), (b, "firing"), (a, "resolved"))
    old = Deliverer(repos.fleet, channels, Receiver())
    assert repos.fleet.claim_notification(first, old.claim, old.lease_s)  # in flight
    post = Receiver()
    new = Deliverer(repos.fleet, channels, post)
    assert new.deliver_due(NOW) == 1
    assert post.got == ["firing"]  # channel b's only
    assert [i.id for i in repos.fleet.pending_notifications()][0] == first
    assert repos.fleet.finish_notification(first, NOW, delivered=True, claim=old.claim)
    assert new.deliver_due(NOW) == 1
    assert post.got == ["firing", "resolved"]
    assert repos.fleet.pending_notifications() == []


@pytest.mark.parametrize("kind", ["sqlite", pytest.param("postgres",
                                                         marks=pytest.mark.integration)])
def test_migration_0008_up_down_up_keeps_pending_rows(kind: str, tmp_path: Path,
                                                      request: pytest.FixtureRequest) -> None:
    url = f"sqlite:///{tmp_path / 'm.db'}" if kind == "sqlite" else \
        request.getfixturevalue("empty_postgres_url")
    migrate.upgrade(url, "0006")
    repos = open_repositories(config_for(url))
    try:
        [item] = queue(repos, ("a", "firing"))
        migrate.upgrade(url)
        assert repos.fleet.claim_notification(item, "A", LONG)  # an old row is unclaimed
        migrate.downgrade(url, "0006")
        assert migrate.current_revision(url) == "0006"
        with pytest.raises(StorageError):  # the claim columns are gone
            repos.fleet.claim_notification(item, "B", LONG)
        migrate.upgrade(url)
        assert repos.fleet.claim_notification(item, "B", LONG)  # the old claim went with them
        assert [i.id for i in repos.fleet.pending_notifications()] == [item]
    finally:
        repos.close()
