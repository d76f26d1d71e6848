"""Log chunks exactly once across restarts (ids from file identity and byte range), and a
refused chunk split down to the one line the server refuses."""

from __future__ import annotations

import gzip
import json
import logging
import sqlite3
import threading
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

from miniobserv.agent.logship import LogShipper
from miniobserv.agent.logstate import STATE_FILE
from miniobserv.agent.logtail import Tailer
from miniobserv.agent.sender import Batch, SendResult, classify
from miniobserv.config import ServerConfig
from miniobserv.model import LogBatch
from miniobserv.server.app import create_app
from miniobserv.tokens import mint_token
from tests.agent.helpers import SECRET


class FlaskSender:
    """The agent's sending, through the real server app's test client (no retries)."""

    server_url = "flask://test"

    def __init__(self, app) -> None:
        self.client = app.test_client()
        self.stop = threading.Event()
        self.deadline: float | None = None
        self.statuses: list[int] = []
        self.max_entries: int | None = None  # answer 413 above this many entries
        self.refuse: str | None = None  # answer 400 to a batch holding this message

    def send(self, batch: Batch) -> SendResult:
        assert isinstance(batch, LogBatch)
        if self.max_entries is not None and len(batch.entries) > self.max_entries:
            status = 413
        elif self.refuse is not None and any(e.message == self.refuse for e in batch.entries):
            status = 400
        else:
            body = gzip.compress(json.dumps(batch.to_json()).encode())
            status = self.client.post("/api/v1/logs", data=body, headers={
                "Content-Type": "application/json", "Content-Encoding": "gzip",
                "Authorization": f"Bearer {mint_token(SECRET)}"}).status_code
        self.statuses.append(status)
        return SendResult("sent" if classify(status) == "sent" else "dropped", 1, status)


def stored_messages(db: Path) -> list[str]:
    with sqlite3.connect(db) as conn:
        return [row[0] for row in conn.execute("SELECT message FROM logs ORDER BY id")]


def ship_once(tailer: Tailer, sender: FlaskSender) -> LogShipper:
    shipper = LogShipper("web-01", tailer, sender)
    shipper.outbox.start()
    assert shipper.poll_once() == 1
    shipper.outbox.close()
    shipper.outbox.join(time.monotonic() + 10)
    return shipper


def test_a_chunk_resent_after_a_restart_is_stored_once(tmp_path, sqlite_url):
    app = create_app(ServerConfig(agent_token=SECRET, database_url=sqlite_url,
                                  auto_migrate=False))
    db = Path(sqlite_url.removeprefix("sqlite:///"))
    log_file, state = tmp_path / "app.log", tmp_path / "state"
    log_file.write_text("")
    first = Tailer([str(log_file)], state)
    first.poll()  # follows the file from its (empty) end
    log_file.write_text("".join(f"line {i}\n" for i in range(5)))
    chunk = first.poll()
    sender = FlaskSender(app)
    sent = sender.send(LogBatch("web-01", chunk.to_entries("web-01"), chunk.batch_id))
    assert sent.is_sent  # stored, but the agent dies before committing the position
    first.close()

    again = Tailer([str(log_file)], state)  # the restart reads the same bytes again
    shipper = ship_once(again, sender)
    assert stored_messages(db) == [f"line {i}" for i in range(5)]  # once, not twice
    assert sender.statuses[-1] in (202, 409)  # 409: same id, other read times: stored
    assert shipper.lines_lost == 0
    again.close()
    third = Tailer([str(log_file)], state)
    assert third.poll().lines == ()  # the position was committed after the re-send
    third.close()


def test_the_same_byte_range_gives_the_same_id_and_another_range_another(tmp_path):
    log_file = tmp_path / "app.log"
    log_file.write_text("")
    with Tailer([str(log_file)], tmp_path / "state") as tailer:
        tailer.poll()
        log_file.write_text("a\nb\n")
        first = tailer.poll()
    with Tailer([str(log_file)], tmp_path / "state") as tailer:  # nothing was committed
        again = tailer.poll()
    assert [line.text for line in again.lines] == ["a", "b"]
    assert again.batch_id == first.batch_id
    with open(log_file, "a") as out:
        out.write("c\n")
    with Tailer([str(log_file)], tmp_path / "state") as tailer:
        replayed = tailer.poll()  # the chunk in flight first, as it was: a+b, not a+b+c
        rest = tailer.poll()
    assert [line.text for line in replayed.lines] == ["a", "b"]
    assert replayed.batch_id == first.batch_id and replayed.lines == first.lines
    assert [line.text for line in rest.lines] == ["c"]
    assert rest.batch_id != first.batch_id  # c is another range


def test_a_refused_chunk_is_split_down_to_the_one_line_the_server_refuses(tmp_path,
                                                                          sqlite_url, caplog):
    app = create_app(ServerConfig(agent_token=SECRET, database_url=sqlite_url,
                                  auto_migrate=False))
    db = Path(sqlite_url.removeprefix("sqlite:///"))
    log_file = tmp_path / "app.log"
    log_file.write_text("")
    tailer = Tailer([str(log_file)], tmp_path / "state")
    tailer.poll()
    lines = [f"line {i}" for i in range(10)]
    log_file.write_text("".join(line + "\n" for line in lines))
    sender = FlaskSender(app)
    sender.max_entries = 3  # a body limit: 413 above three lines
    sender.refuse = "line 6"  # and one line the server refuses on its own
    with caplog.at_level(logging.ERROR):
        shipper = ship_once(tailer, sender)
    assert stored_messages(db) == [line for line in lines if line != "line 6"]
    assert shipper.lines_lost == 1
    assert shipper.drops.totals["log_lines_refused"] == 1
    assert caplog.text.count("refused by the server") == 1
    assert 413 in sender.statuses and 400 in sender.statuses
    tailer.close()


# --- the chunks in flight at a crash are re-sent as they were --------------------------------


class Clock:
    """Read times: a restart reads at another time than the run that crashed."""

    def __init__(self, start: datetime) -> None:
        self.now = start

    def __call__(self) -> datetime:
        return self.now


def crash_after_sending(tailer: Tailer, sender: FlaskSender) -> LogBatch:
    """Poll one chunk, have the server store it, then "crash": no commit, files closed."""
    chunk = tailer.poll()
    batch = LogBatch("web-01", chunk.to_entries("web-01"), chunk.batch_id)
    assert sender.send(batch).is_sent
    tailer.close()
    return batch


def test_a_file_grown_after_a_crash_resends_the_chunk_in_flight_byte_identical(tmp_path,
                                                                               sqlite_url):
    app = create_app(ServerConfig(agent_token=SECRET, database_url=sqlite_url,
                                  auto_migrate=False))
    db = Path(sqlite_url.removeprefix("sqlite:///"))
    log_file, state = tmp_path / "app.log", tmp_path / "state"
    log_file.write_text("")
    clock = Clock(datetime(2026, 5, 1, 12, 0, tzinfo=UTC))
    first = Tailer([str(log_file)], state, now=clock)
    first.poll()
    log_file.write_text("".join(f"line {i}\n" for i in range(5)))  # no timestamps: read time
    sender = FlaskSender(app)
    crash_after_sending(first, sender)

    with open(log_file, "a") as out:  # the file grows while the agent is down
        out.write("".join(f"line {i}\n" for i in range(5, 9)))
    clock.now += timedelta(minutes=3)
    again = Tailer([str(log_file)], state, now=clock)
    shipper = ship_all(again, sender, batches=2)
    assert stored_messages(db) == [f"line {i}" for i in range(9)]  # each line once
    assert sender.statuses == [202, 202, 202]  # the re-send is a repeat, not a 409
    assert shipper.lines_lost == 0
    again.close()
    with Tailer([str(log_file)], state) as third:  # both committed, nothing in flight
        assert third.poll().lines == ()
    assert json.loads((state / STATE_FILE).read_text())["inflight"] == []


def ship_all(tailer: Tailer, sender: FlaskSender, batches: int) -> LogShipper:
    """One ``poll_once`` (replays first, then what is new), sent and drained."""
    shipper = LogShipper("web-01", tailer, sender)
    shipper.outbox.start()
    assert shipper.poll_once() == batches
    shipper.outbox.close()
    shipper.outbox.join(time.monotonic() + 10)
    return shipper


def test_every_chunk_in_flight_is_replayed_in_order_with_its_own_range(tmp_path):
    log_file, state = tmp_path / "app.log", tmp_path / "state"
    log_file.write_text("")
    with Tailer([str(log_file)], state) as tailer:
        tailer.poll()
        log_file.write_text("".join(f"line {i}\n" for i in range(7)))
        polled = [tailer.poll(max_lines=3) for _ in range(3)]  # 3 + 3 + 1 lines in flight
        tailer.commit(polled[0].checkpoint)  # the first was settled before the crash
    with open(log_file, "a") as out:
        out.write("line 7\n")
    with Tailer([str(log_file)], state) as tailer:
        replayed = [tailer.poll(max_lines=1000) for _ in range(2)]
        rest = tailer.poll()
    assert [c.replayed for c in replayed] == [True, True]
    assert [(c.batch_id, c.lines) for c in replayed] == [(c.batch_id, c.lines)
                                                         for c in polled[1:]]
    assert [line.text for line in rest.lines] == ["line 7"] and not rest.replayed


def test_a_multiline_entry_held_at_the_crash_is_replayed_as_it_was(tmp_path):
    log_file, state = tmp_path / "app.log", tmp_path / "state"
    log_file.write_text("")
    text = ("start\nTraceback (most recent call last):\n  File \"x.py\", line 1\n"
            "KeyError: 'a'\nnext entry\n  indented\n")
    with Tailer([str(log_file)], state, multiline=True) as tailer:
        tailer.poll()
        log_file.write_text(text)
        chunk = tailer.poll()  # "next entry" is held: it may continue
    assert [line.text for line in chunk.lines] == [text.split("\nnext")[0]]  # the traceback
    with open(log_file, "a") as out:
        out.write("  more indented\nlast\n")
    with Tailer([str(log_file)], state, multiline=True) as tailer:
        again = tailer.poll()
        after = tailer.poll()
    assert again.replayed and again.lines == chunk.lines and again.batch_id == chunk.batch_id
    assert [line.text for line in after.lines] == ["next entry\n  indented\n  more indented"]


def test_a_file_changed_under_a_chunk_in_flight_falls_back_to_the_saved_position(tmp_path,
                                                                                caplog):
    log_file, state = tmp_path / "app.log", tmp_path / "state"
    log_file.write_text("")
    with Tailer([str(log_file)], state) as tailer:
        tailer.poll()
        log_file.write_text("old 1\nold 2\n")
        tailer.poll()
    log_file.write_text("new\n")  # truncated and rewritten: the range is not there any more
    with caplog.at_level(logging.WARNING), Tailer([str(log_file)], state) as tailer:
        chunk = tailer.poll()
    assert "cannot re-read 1 log chunks in flight" in caplog.text
    assert not chunk.replayed and [line.text for line in chunk.lines] == ["new"]


def test_a_chunk_in_flight_that_closed_a_rotated_file_is_replayed_from_the_rotated_file(
        tmp_path):
    log_file, state = tmp_path / "app.log", tmp_path / "state"
    log_file.write_text("")
    clock = Clock(datetime(2026, 5, 1, tzinfo=UTC))
    seconds = iter(range(0, 10_000, 10))
    with Tailer([str(log_file)], state, clock=lambda: float(next(seconds))) as tailer:
        tailer.ROTATED_GRACE = 5.0
        tailer.poll()
        log_file.write_text("old 1\n")
        tailer.poll()
        (log_file).rename(tmp_path / "app.log.1")  # rename-and-create rotation
        log_file.write_text("new 1\n")
        with open(tmp_path / "app.log.1", "a") as late:
            late.write("old 2\n")  # a late writer, then the old file is drained and closed
        rotated = tailer.poll()
    assert [line.text for line in rotated.lines] == ["old 2", "new 1"]
    assert any(end == -1 for *_, end in rotated.ranges)
    with Tailer([str(log_file)], state, now=clock) as tailer:
        first, second, rest = tailer.poll(), tailer.poll(), tailer.poll()
    assert [line.text for line in first.lines] == ["old 1"] and first.replayed
    assert (second.batch_id, second.lines) == (rotated.batch_id, rotated.lines)
    assert rest.lines == () and not rest.replayed
