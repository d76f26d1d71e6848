"""The log tailer on real files in a temporary directory: rotation, truncation, restarts."""

from __future__ import annotations

import json
import logging
import os
import shutil
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import IO

import pytest

from miniobserv.agent.logtail import (
    STATE_FILE,
    TRUNCATED_MARKER,
    Chunk,
    LogLine,
    Tailer,
)
from miniobserv.model import MAX_MESSAGE_BYTES, parse_log_entry

NOW = datetime(2026, 6, 5, 10, 0, 0, tzinfo=UTC)


class Clock:
    """A monotonic clock the test moves by hand."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def logs(tmp_path: Path) -> Path:
    path = tmp_path / "logs"
    path.mkdir()
    return path


@pytest.fixture
def state(tmp_path: Path) -> Path:
    return tmp_path / "state" / "nested"  # created by the tailer


def tailer(pattern: Path | str, state: Path, clock: Clock, **kwargs: object) -> Tailer:
    return Tailer([str(pattern)], state, clock=clock, now=lambda: NOW, local_tz=UTC,
                  **kwargs)  # type: ignore[arg-type]


def write(path: Path, text: str) -> None:
    with open(path, "a", encoding="utf-8") as out:
        out.write(text)


def numbered(start: int, stop: int) -> str:
    return "".join(f"line {n:05d}\n" for n in range(start, stop))


def texts(chunk: Chunk) -> list[str]:
    return [line.text for line in chunk.lines]


def drain(t: Tailer, *, commit: bool = True) -> list[LogLine]:
    """Poll until nothing new arrives, committing each chunk (as after the server's ack)."""
    lines: list[LogLine] = []
    while True:
        chunk = t.poll()
        if commit:
            t.commit(chunk.checkpoint)
        if not chunk.lines:
            return lines
        lines.extend(chunk.lines)


def numbers(lines: list[LogLine]) -> list[int]:
    return [int(line.text.split()[1]) for line in lines]


# --- where reading starts --------------------------------------------------------------------


def test_file_present_at_first_start_is_read_from_its_end(logs: Path, state: Path,
                                                         clock: Clock) -> None:
    write(logs / "app.log", numbered(0, 10))
    with tailer(logs / "*.log", state, clock) as t:
        assert drain(t) == []
        write(logs / "app.log", numbered(10, 12))
        assert texts(t.poll()) == ["line 00010", "line 00011"]


def test_partial_last_line_at_first_start_is_shipped_whole(logs: Path, state: Path,
                                                          clock: Clock) -> None:
    write(logs / "app.log", "old\nhalf a li")
    with tailer(logs / "app.log", state, clock) as t:
        assert drain(t) == []
        write(logs / "app.log", "ne\n")
        assert texts(t.poll()) == ["half a line"]


def test_file_appearing_later_is_read_from_its_start(logs: Path, state: Path,
                                                    clock: Clock) -> None:
    write(logs / "a.log", "before start\n")
    with tailer(logs / "*.log", state, clock) as t:
        assert drain(t) == []
        write(logs / "b.log", numbered(0, 3))
        write(logs / "b.txt", "not matched\n")
        lines = drain(t)
    assert numbers(lines) == [0, 1, 2]
    assert {line.path for line in lines} == {str(logs / "b.log")}


def test_plain_path_missing_at_start_is_read_from_its_start(logs: Path, state: Path,
                                                           clock: Clock) -> None:
    with tailer(logs / "late.log", state, clock) as t:
        assert drain(t) == []
        write(logs / "late.log", numbered(0, 2))
        assert numbers(drain(t)) == [0, 1]


def test_file_created_while_stopped_under_a_known_pattern_is_read_from_its_start(
        logs: Path, state: Path, clock: Clock) -> None:
    write(logs / "a.log", "old\n")
    with tailer(logs / "*.log", state, clock) as t:
        drain(t)
    write(logs / "b.log", numbered(0, 2))  # the agent is down
    with tailer(logs / "*.log", state, clock) as t:
        assert numbers(drain(t)) == [0, 1]
    write(logs / "c.log", "old too\n")  # a pattern the state does not know yet: its end
    with tailer(logs / "c.log", state, clock) as t:
        assert drain(t) == []


def test_pattern_matching_nothing_at_first_start_is_remembered(logs: Path, state: Path,
                                                               clock: Clock) -> None:
    with tailer(logs / "*.log", state, clock) as t:
        assert drain(t) == []
    write(logs / "first.log", numbered(0, 2))  # appears while the agent is down
    with tailer(logs / "*.log", state, clock) as t:
        assert numbers(drain(t)) == [0, 1]


# --- partial lines, limits, content ----------------------------------------------------------


def test_partial_line_is_shipped_once_whole(logs: Path, state: Path, clock: Clock) -> None:
    path = logs / "app.log"
    path.touch()
    with tailer(path, state, clock) as t:
        drain(t)
        write(path, "first half")
        assert drain(t) == []
        clock.advance(3600)  # a live file's partial line waits, however long
        assert drain(t) == []
        write(path, ", second half\nnext")
        assert texts(t.poll()) == ["first half, second half"]
        assert drain(t) == []


def test_lines_are_cleaned(logs: Path, state: Path, clock: Clock) -> None:
    path = logs / "app.log"
    path.touch()
    with tailer(path, state, clock) as t:
        drain(t)
        with open(path, "ab") as out:
            out.write(b"crlf\r\n\n   \n\tindented\nnul\x00inside\nbad \xff\xfe bytes\n")
        assert texts(t.poll()) == ["crlf", "\tindented", "nul\ufffdinside",
                                   "bad \ufffd\ufffd bytes"]


@pytest.mark.parametrize(("size", "cut"), [
    (MAX_MESSAGE_BYTES - 1, False), (MAX_MESSAGE_BYTES, False), (MAX_MESSAGE_BYTES + 1, True),
    (3 * MAX_MESSAGE_BYTES + 17, True),
])
def test_long_line_is_cut_at_64_kib(logs: Path, state: Path, clock: Clock, size: int,
                                    cut: bool) -> None:
    path = logs / "app.log"
    path.touch()
    with tailer(path, state, clock) as t:
        drain(t)
        write(path, "x" * size + "\nafter\n")
        lines = texts(t.poll())
    assert lines[1:] == ["after"]
    assert len(lines[0].encode()) == min(size, MAX_MESSAGE_BYTES)
    assert lines[0].endswith(TRUNCATED_MARKER) == cut


@pytest.mark.parametrize("raw", [
    "é".encode() * 40_000,  # two bytes a character: the cut must not split one
    "€".encode() * 30_000 + b"x",
    b"\xff" * 30_000,  # each bad byte becomes a 3-byte U+FFFD
])
def test_cut_keeps_valid_utf8_within_the_limit(logs: Path, state: Path, clock: Clock,
                                               raw: bytes) -> None:
    path = logs / "app.log"
    path.touch()
    with tailer(path, state, clock) as t:
        drain(t)
        with open(path, "ab") as out:
            out.write(raw + b"\n")
        [line] = t.poll().lines
    assert line.text.endswith(TRUNCATED_MARKER)
    assert len(line.text.encode()) <= MAX_MESSAGE_BYTES
    parse_log_entry(line.to_entry("web-01").to_json(), NOW)  # the model accepts it


def test_long_line_arriving_in_pieces_is_cut_once(logs: Path, state: Path,
                                                  clock: Clock) -> None:
    path = logs / "app.log"
    path.touch()
    with tailer(path, state, clock) as t:
        drain(t)
        for _ in range(5):
            write(path, "y" * 40_000)
            assert drain(t) == []
        write(path, "\n")
        [line] = drain(t)
    assert line.text == "y" * (MAX_MESSAGE_BYTES - len(TRUNCATED_MARKER.encode())) + \
        TRUNCATED_MARKER


def test_poll_is_capped_in_lines_and_bytes(logs: Path, state: Path, clock: Clock) -> None:
    path = logs / "app.log"
    path.touch()
    with tailer(path, state, clock) as t:
        drain(t)
        write(path, numbered(0, 2500))
        sizes = [len(t.poll().lines) for _ in range(4)]
        assert sizes == [1000, 1000, 500, 0]
        write(path, ("z" * 999 + "\n") * 30)
        # stops once 10 000 bytes are reached: 10 lines make 9 990, the 11th passes the mark
        assert len(t.poll(max_bytes=10_000).lines) == 11
        assert len(t.poll(max_lines=7).lines) == 7
        assert len(t.poll().lines) == 12


def test_lines_carry_level_time_and_path(logs: Path, state: Path, clock: Clock) -> None:
    path = logs / "app.log"
    path.touch()
    with tailer(path, state, clock) as t:
        drain(t)
        write(path, "2026-06-05T09:00:00Z ERROR db down\nplain\n")
        first, second = t.poll().lines
    assert (first.level, first.time, first.path) == ("error", datetime(2026, 6, 5, 9,
                                                                       tzinfo=UTC), str(path))
    assert (second.level, second.time) == ("info", NOW)
    entry = parse_log_entry(first.to_entry("web-01").to_json(), NOW)
    assert (entry.host, entry.path, entry.message) == ("web-01", str(path),
                                                       "2026-06-05T09:00:00Z ERROR db down")


# --- rotation, truncation, restarts ----------------------------------------------------------


class Writer:
    """An application appending to its log: it keeps its file open across a rename."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.out: IO[str] = open(path, "a", encoding="utf-8")  # noqa: SIM115

    def lines(self, start: int, stop: int) -> None:
        self.out.write(numbered(start, stop))
        self.out.flush()

    def reopen(self) -> None:
        self.out.close()
        self.out = open(self.path, "a", encoding="utf-8")  # noqa: SIM115

    def close(self) -> None:
        self.out.close()


@pytest.fixture
def writer(logs: Path) -> Iterator[Writer]:
    (logs / "app.log").write_text("written before the agent started\n" * 3)
    w = Writer(logs / "app.log")
    yield w
    w.close()


def rotate_by_rename(logs: Path) -> None:
    """logrotate ``create``: shift the old copies, rename the live file, create a new one."""
    for n in (2, 1):
        if (logs / f"app.log.{n}").exists():
            os.replace(logs / f"app.log.{n}", logs / f"app.log.{n + 1}")
    os.rename(logs / "app.log", logs / "app.log.1")
    (logs / "app.log").touch()


def rotate_by_copytruncate(logs: Path) -> None:
    """logrotate ``copytruncate``: copy the live file, then truncate it in place."""
    for n in (2, 1):
        if (logs / f"app.log.{n}").exists():
            os.replace(logs / f"app.log.{n}", logs / f"app.log.{n + 1}")
    shutil.copyfile(logs / "app.log", logs / "app.log.1")
    os.truncate(logs / "app.log", 0)


def test_500_lines_across_rotations_and_restarts_arrive_exactly_once(
        logs: Path, state: Path, clock: Clock, writer: Writer) -> None:
    got: list[LogLine] = []
    t = tailer(logs / "*.log", state, clock)
    assert drain(t) == []  # what was there before the first start is not shipped
    for start in range(0, 100, 7):  # lines arriving while being followed
        writer.lines(start, min(start + 7, 100))
        got += drain(t)

    writer.lines(100, 150)  # unread when the rename happens
    rotate_by_rename(logs)
    writer.lines(150, 160)  # the application still writes to the renamed file...
    writer.reopen()  # ...until it reopens its log
    writer.lines(160, 200)
    got += drain(t)
    clock.advance(t.ROTATED_GRACE)
    got += drain(t)  # the renamed file is closed now

    writer.lines(200, 250)
    got += drain(t)
    writer.lines(250, 260)  # unread when the copy is made: read from the copy
    rotate_by_copytruncate(logs)
    writer.lines(260, 300)
    got += drain(t)
    clock.advance(t.ROTATED_GRACE)
    got += drain(t)
    writer.lines(300, 320)
    got += drain(t)
    t.close()

    writer.lines(320, 350)  # the agent is down: a rename rotation...
    rotate_by_rename(logs)
    writer.reopen()
    writer.lines(350, 400)
    t = tailer(logs / "*.log", state, clock)  # ...and a restart from the saved state
    got += drain(t)
    writer.lines(400, 450)
    t.close()

    rotate_by_copytruncate(logs)  # down again: a copytruncate rotation
    writer.lines(450, 500)
    t = tailer(logs / "*.log", state, clock)
    got += drain(t)
    clock.advance(t.ROTATED_GRACE)
    got += drain(t)
    t.close()

    assert numbers(got) == list(range(500))
    assert {line.path for line in got} == {str(logs / "app.log")}


def test_only_committed_positions_survive_a_restart(logs: Path, state: Path, clock: Clock,
                                                    writer: Writer) -> None:
    with tailer(logs / "app.log", state, clock) as t:
        drain(t)
        writer.lines(0, 5)
        acked = t.poll()
        writer.lines(5, 8)
        lost_ack = t.poll()
        t.commit(acked.checkpoint)
        writer.lines(8, 10)
        never_sent = t.poll()
    assert numbers(list(acked.lines + lost_ack.lines + never_sent.lines)) == list(range(10))
    with tailer(logs / "app.log", state, clock) as t:
        assert numbers(drain(t)) == list(range(5, 10))  # at least once


def test_unacked_lines_of_a_rotated_file_are_read_again_after_a_restart(
        logs: Path, state: Path, clock: Clock, writer: Writer) -> None:
    with tailer(logs / "*.log", state, clock) as t:
        drain(t)
        writer.lines(0, 4)
        t.commit(t.poll().checkpoint)
        writer.lines(4, 8)
        rotate_by_rename(logs)
        writer.reopen()
        writer.lines(8, 10)
        unacked = t.poll()  # the agent stops before the server answers
    assert numbers(list(unacked.lines)) == list(range(4, 10))
    with tailer(logs / "*.log", state, clock) as t:
        assert numbers(drain(t)) == list(range(4, 10))


def test_older_checkpoint_after_a_newer_one_is_ignored(logs: Path, state: Path, clock: Clock,
                                                       writer: Writer) -> None:
    with tailer(logs / "app.log", state, clock) as t:
        drain(t)
        writer.lines(0, 3)
        first = t.poll()
        writer.lines(3, 6)
        second = t.poll()
        t.commit(second.checkpoint)
        t.commit(first.checkpoint)
    with tailer(logs / "app.log", state, clock) as t:
        assert drain(t) == []


def test_truncation_restarts_at_zero(logs: Path, state: Path, clock: Clock,
                                     writer: Writer) -> None:
    with tailer(logs / "app.log", state, clock) as t:
        drain(t)
        writer.lines(0, 5)
        assert numbers(drain(t)) == list(range(5))
        os.truncate(logs / "app.log", 0)
        writer.lines(5, 7)  # shorter than before
        assert numbers(drain(t)) == [5, 6]
        os.truncate(logs / "app.log", 0)
        writer.lines(7, 30)  # longer than the read position: told by the first bytes
        assert numbers(drain(t)) == list(range(7, 30))


def test_file_rewritten_while_stopped_is_read_from_its_start(logs: Path, state: Path,
                                                             clock: Clock,
                                                             writer: Writer) -> None:
    with tailer(logs / "app.log", state, clock) as t:
        drain(t)
        writer.lines(0, 3)
        drain(t)
    os.truncate(logs / "app.log", 0)  # same inode, new content, larger than the offset
    writer.lines(100, 200)
    with tailer(logs / "app.log", state, clock) as t:
        assert numbers(drain(t)) == list(range(100, 200))


def test_partial_last_line_of_a_rotated_file_is_shipped_when_it_is_finished(
        logs: Path, state: Path, clock: Clock, writer: Writer) -> None:
    with tailer(logs / "*.log", state, clock) as t:
        drain(t)
        writer.out.write("complete\ncut short by a crash")
        writer.out.flush()
        rotate_by_rename(logs)
        assert texts(t.poll()) == ["complete"]
        clock.advance(t.ROTATED_GRACE - 1)
        assert drain(t) == []  # the writer may still finish it
        clock.advance(1)
        assert texts(t.poll()) == ["cut short by a crash"]
        assert drain(t) == []


def test_deleted_file_is_read_to_its_end_then_closed(logs: Path, state: Path, clock: Clock,
                                                     writer: Writer) -> None:
    with tailer(logs / "app.log", state, clock) as t:
        drain(t)
        writer.lines(0, 3)
        os.unlink(logs / "app.log")
        writer.lines(3, 4)
        assert numbers(drain(t)) == [0, 1, 2, 3]
        clock.advance(t.ROTATED_GRACE)
        chunk = t.poll()
        assert chunk.checkpoint.positions == {} and len(chunk.checkpoint.closed) == 1
        t.commit(chunk.checkpoint)
    assert json.loads((state / STATE_FILE).read_text())["files"] == []


def test_rotated_copy_matching_the_pattern_is_not_read_twice(logs: Path, state: Path,
                                                             clock: Clock,
                                                             writer: Writer) -> None:
    with tailer(logs / "app.log*", state, clock) as t:  # matches app.log.1 too
        drain(t)
        writer.lines(0, 5)
        rotate_by_rename(logs)
        writer.reopen()
        writer.lines(5, 8)
        got = drain(t)
    assert numbers(got) == list(range(8))  # the renamed file first: its lines are older
    assert {line.path for line in got} == {str(logs / "app.log")}  # the name written to


@pytest.mark.parametrize("unread", [0, 10])
def test_copytruncate_copy_seen_before_the_truncation_is_not_read_twice(
        logs: Path, state: Path, clock: Clock, writer: Writer, unread: int) -> None:
    """A poll can fall between logrotate's copy and its truncate; the copy then matches the
    pattern while its original is still whole. Its lines are the original's: none twice."""
    with tailer(logs / "app.log*", state, clock) as t:  # matches app.log.1 too
        drain(t)
        writer.lines(0, 100)
        got = drain(t)
        writer.lines(100, 100 + unread)  # unread when the copy is made
        shutil.copyfile(logs / "app.log", logs / "app.log.1")
        got += drain(t)  # the copy exists, the original is not truncated yet
        os.truncate(logs / "app.log", 0)
        writer.lines(100 + unread, 120 + unread)
        got += drain(t)
        clock.advance(t.ROTATED_GRACE)
        got += drain(t)
        writer.lines(120 + unread, 130 + unread)
        got += drain(t)
    assert numbers(got) == list(range(130 + unread))


def test_a_restart_between_copy_and_truncate_reads_every_line_once(
        logs: Path, state: Path, clock: Clock, writer: Writer) -> None:
    with tailer(logs / "app.log*", state, clock) as t:
        drain(t)
        writer.lines(0, 50)
        got = drain(t)
    writer.lines(50, 60)  # the agent is down: logrotate copies...
    shutil.copyfile(logs / "app.log", logs / "app.log.1")
    with tailer(logs / "app.log*", state, clock) as t:  # ...the agent starts...
        got += drain(t)
        os.truncate(logs / "app.log", 0)  # ...and logrotate truncates
        writer.lines(60, 70)
        got += drain(t)
    assert numbers(got) == list(range(70))


def test_a_waiting_copy_that_grows_is_read_as_a_file_of_its_own(
        logs: Path, state: Path, clock: Clock, writer: Writer) -> None:
    with tailer(logs / "app.log*", state, clock) as t:
        drain(t)
        writer.lines(0, 50)
        assert numbers(drain(t)) == list(range(50))
        shutil.copyfile(logs / "app.log", logs / "app.log.1")
        assert drain(t) == []  # a copy: its lines were read from app.log
        write(logs / "app.log.1", numbered(1000, 1001))  # it is not a copy after all
        got = drain(t)
    assert got[-1].text == "line 01000" and len(got) == 3 + 50 + 1  # read from its start
    assert {line.path for line in got} == {str(logs / "app.log.1")}


def test_a_new_file_that_only_starts_like_a_followed_one_is_read(
        logs: Path, state: Path, clock: Clock, writer: Writer) -> None:
    """The same first bytes (and more) but other content: a file of its own, read whole."""
    with tailer(logs / "*.log", state, clock) as t:
        drain(t)
        writer.lines(0, 40)
        assert numbers(drain(t)) == list(range(40))
        head = (logs / "app.log").read_text()[:-len(numbered(39, 40))]  # well over 256 bytes
        (logs / "other.log").write_text(head + "line 99999\n")
        got = drain(t)
    assert [line.text for line in got] == [*head.splitlines(), "line 99999"]
    assert {line.path for line in got} == {str(logs / "other.log")}


# --- state file ------------------------------------------------------------------------------


def test_state_file_holds_committed_positions_only(logs: Path, state: Path, clock: Clock,
                                                   writer: Writer) -> None:
    with tailer(logs / "app.log", state, clock) as t:
        t.poll()
        start = json.loads((state / STATE_FILE).read_text())
        writer.lines(0, 4)
        chunk = t.poll()
        polled = json.loads((state / STATE_FILE).read_text())
        assert polled["files"] == start["files"]  # positions wait for the commit
        [inflight] = polled["inflight"]  # the chunk is saved as in flight before it is sent
        assert inflight["ranges"] == [list(r) for r in chunk.ranges]
        t.commit(chunk.checkpoint)
    assert json.loads((state / STATE_FILE).read_text())["inflight"] == []
    [saved] = json.loads((state / STATE_FILE).read_text())["files"]
    assert saved["offset"] == start["files"][0]["offset"] + 4 * len("line 00000\n")
    assert saved["path"] == str(logs / "app.log")
    assert [p.name for p in state.iterdir()] == [STATE_FILE]  # no temporary files left


def test_unreadable_state_file_is_ignored_and_replaced(logs: Path, state: Path, clock: Clock,
                                                       writer: Writer,
                                                       caplog: pytest.LogCaptureFixture) -> None:
    state.mkdir(parents=True)
    (state / STATE_FILE).write_text('{"version": 1, "files": [{"path": 3}]}')
    with caplog.at_level(logging.WARNING), tailer(logs / "app.log", state, clock) as t:
        assert drain(t) == []  # as on a first start: from the end
    assert "malformed log position file" in caplog.text
    assert len(json.loads((state / STATE_FILE).read_text())["files"]) == 1


def test_only_regular_files_are_followed(logs: Path, state: Path, clock: Clock) -> None:
    (logs / "dir.log").mkdir()
    os.mkfifo(logs / "fifo.log")  # opening a FIFO would block the agent
    (logs / "dangling.log").symlink_to(logs / "nowhere")
    with tailer(logs / "*.log", state, clock) as t:
        assert drain(t) == []
        write(logs / "nowhere", "now it exists\n")
        write(logs / "dir.log" / "inner", "not matched\n")
        assert texts(t.poll()) == ["now it exists"]


def test_poll_after_close_is_refused(logs: Path, state: Path, clock: Clock) -> None:
    t = tailer(logs / "*.log", state, clock)
    t.close()
    with pytest.raises(RuntimeError):
        t.poll()


def test_unreadable_log_file_is_skipped_and_logged(logs: Path, state: Path, clock: Clock,
                                                   caplog: pytest.LogCaptureFixture) -> None:
    secret = logs / "secret.log"
    secret.write_text("x\n")
    secret.chmod(0)
    if os.access(secret, os.R_OK):
        pytest.skip("running as root: permissions are not enforced")
    with caplog.at_level(logging.WARNING), tailer(logs / "*.log", state, clock) as t:
        assert drain(t) == []
    assert "cannot read log file" in caplog.text


# --- multiline -------------------------------------------------------------------------------


JAVA = """2026-06-05 10:00:00,123 ERROR [main] com.example.App - request failed
java.lang.IllegalStateException: boom
\tat com.example.App.handle(App.java:42)
\tat com.example.App.main(App.java:10)
Caused by: java.io.IOException: disk full
\tat com.example.Store.write(Store.java:7)
\t... 2 more
"""
PYTHON = """2026-06-05 10:00:01,000 ERROR app: job failed
Traceback (most recent call last):
  File "/app/job.py", line 3, in <module>
    run()
KeyError: 'id'

During handling of the above exception, another exception occurred:

Traceback (most recent call last):
  File "/app/job.py", line 5, in <module>
    report()
myapp.errors.ReportFailed
"""


def test_multiline_joins_stack_traces(logs: Path, state: Path, clock: Clock) -> None:
    path = logs / "app.log"
    path.touch()
    with tailer(path, state, clock, multiline=True) as t:
        drain(t)
        write(path, JAVA + PYTHON + "2026-06-05 10:00:02,000 INFO app: next\n")
        lines = drain(t)
        assert [line.text for line in lines] == [JAVA.rstrip("\n"),
                                                 PYTHON.rstrip("\n").replace("\n\n", "\n")]
        assert [line.level for line in lines] == ["error", "error"]
        clock.advance(t.MULTILINE_WAIT)  # the last entry waits for a possible continuation
        assert texts(t.poll()) == ["2026-06-05 10:00:02,000 INFO app: next"]


def test_multiline_held_entry_is_not_committed(logs: Path, state: Path, clock: Clock) -> None:
    path = logs / "app.log"
    path.touch()
    with tailer(path, state, clock, multiline=True) as t:
        drain(t)
        write(path, "first\nsecond\n  continued\n")
        assert texts(t.poll()) == ["first"]
        t.commit(t.poll().checkpoint)
    with tailer(path, state, clock, multiline=True) as t:
        write(path, "third\n")
        assert texts(t.poll()) == ["second\n  continued"]


def test_multiline_entry_stays_within_64_kib(logs: Path, state: Path, clock: Clock) -> None:
    path = logs / "app.log"
    path.touch()
    frame = "\tat " + "f" * 996 + "\n"  # 1001 bytes with the joining newline
    with tailer(path, state, clock, multiline=True) as t:
        drain(t)
        write(path, "head\n" + frame * 100 + "next\n")
        lines = drain(t)
        clock.advance(t.MULTILINE_WAIT)
        lines += drain(t)
    assert [len(line.text.encode()) <= MAX_MESSAGE_BYTES for line in lines] == [True] * 3
    assert lines[0].text.startswith("head\n\tat ")
    assert lines[1].text.startswith("\tat ")  # the rest of the trace: a new entry, not lost
    assert "".join(line.text + "\n" for line in lines) == "head\n" + frame * 100 + "next\n"
    assert lines[2].text == "next"


def test_multiline_off_ships_every_line(logs: Path, state: Path, clock: Clock) -> None:
    path = logs / "app.log"
    path.touch()
    with tailer(path, state, clock) as t:
        drain(t)
        write(path, JAVA)
        assert len(drain(t)) == JAVA.count("\n")
