"""REQUEST_TIMEOUT bounds each webhook POST; SHUTDOWN_TIMEOUT bounds stopping (SPEC §5)."""

from __future__ import annotations

import socket
import threading
from collections.abc import Iterator, Mapping
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
import requests

from miniobserv.config import ServerConfig
from miniobserv.rules import Notification
from miniobserv.server.alerting import notify
from miniobserv.server.alerting.evaluate import Cycle
from miniobserv.server.alerting.notify import Deliverer, post_json
from miniobserv.server.alerting.service import AlertingService
from tests.fakes import FakeRepositories

T0 = datetime.now(UTC).replace(microsecond=0)
PAYLOAD = {"event": "host.down", "host": "web-01", "rule": None, "value": None,
           "at": "2026-06-05T10:00:00Z", "labels": {}}
LIVENESS_S = 60  # a bound for a hung test, not a speed requirement


@pytest.fixture
def silent_url() -> Iterator[str]:
    """A loopback port that takes connections (the kernel's backlog) and never answers."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(8)
    try:
        yield f"http://127.0.0.1:{listener.getsockname()[1]}/hook"
    finally:
        listener.close()


def config(channel: Notification, **changes: Any) -> ServerConfig:
    return replace(ServerConfig(agent_token="x" * 32, alert_notifications=(channel,),
                                alert_interval=timedelta(hours=1)), **changes)


def queue(repos: FakeRepositories, cfg: ServerConfig, count: int) -> None:
    cycle = Cycle(events=[dict(PAYLOAD) for _ in range(count)])
    repos.fleet.save_cycle([], [], cycle.outbox(cfg.alert_notifications, T0), [])


def test_post_json_gives_up_on_a_receiver_that_never_answers(silent_url: str) -> None:
    with pytest.raises(requests.Timeout):
        post_json(silent_url, PAYLOAD, 0.2)


def test_a_silent_receiver_is_a_failed_attempt_to_retry(silent_url: str) -> None:
    repos = FakeRepositories()
    channel = Notification("webhook", silent_url)
    queue(repos, config(channel), 1)
    deliverer = Deliverer(repos.fleet, (channel,), notify.json_poster(0.2))
    assert deliverer.deliver_due(T0) == 0
    [row] = repos.fleet.outbox
    assert (row.status, row.error) == ("pending", "ReadTimeout")
    assert repos.fleet.pending_notifications()[0].attempts == 1


@pytest.mark.parametrize("seconds", [1, 120])
def test_the_service_posts_with_request_timeout(monkeypatch: pytest.MonkeyPatch,
                                                seconds: int) -> None:
    timeouts: list[float] = []

    def record(url: str, body: Mapping[str, Any], timeout_s: float = -1.0) -> int:
        timeouts.append(timeout_s)
        return 204

    monkeypatch.setattr(notify, "post_json", record)
    repos = FakeRepositories()
    channel = Notification("webhook", "http://127.0.0.1:9/hook")
    cfg = config(channel, request_timeout=timedelta(seconds=seconds))
    queue(repos, cfg, 1)
    assert AlertingService(cfg, repos).deliverer.deliver_due(T0) == 1
    assert timeouts == [seconds]


class BlockingPost:
    """A webhook POST that blocks until released; counts its calls."""

    def __init__(self) -> None:
        self.calls = 0
        self.entered = threading.Event()
        self.release = threading.Event()

    def __call__(self, url: str, body: Mapping[str, Any]) -> int:
        self.calls += 1
        self.entered.set()
        self.release.wait(LIVENESS_S)
        return 204


@pytest.fixture
def stuck() -> Iterator[tuple[AlertingService, BlockingPost]]:
    """A started service whose delivery thread is inside a POST, two events queued."""
    repos = FakeRepositories()
    channel = Notification("webhook", "http://127.0.0.1:9/hook")
    cfg = config(channel, shutdown_timeout=timedelta(seconds=1))
    queue(repos, cfg, 2)
    post = BlockingPost()
    service = AlertingService(cfg, repos, post=post).start()
    try:
        assert post.entered.wait(LIVENESS_S)
        yield service, post
    finally:
        post.release.set()
        service.stop(LIVENESS_S)


def test_stop_is_bounded_by_its_timeout(stuck: tuple[AlertingService, BlockingPost],
                                        caplog: pytest.LogCaptureFixture) -> None:
    service, post = stuck
    assert service.stop(0.05) is False
    assert "miniobserv-notify still busy" in caplog.text
    assert not service.leading.is_set()
    post.release.set()
    assert service.stop(LIVENESS_S) is True
    assert post.calls == 1  # stopping: the second event waits for the next process


def test_stop_defaults_to_shutdown_timeout(stuck: tuple[AlertingService, BlockingPost],
                                           caplog: pytest.LogCaptureFixture) -> None:
    service, post = stuck
    assert service.stop() is False  # SHUTDOWN_TIMEOUT=1s passed with the POST still hanging
    assert "after 1.0s" in caplog.text


def test_stop_of_an_idle_service_is_true() -> None:
    repos = FakeRepositories()
    service = AlertingService(config(Notification("webhook", "http://127.0.0.1:9/x")),
                              repos).start()
    assert service.stop(LIVENESS_S) is True
