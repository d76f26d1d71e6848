"""Follow log files by polling, without losing or repeating a line (SPEC §6, log tailing).

A :class:`Tailer` follows every regular file matched by ``LOG_PATHS`` patterns (paths or globs).
Each file is known by its identity ``(st_dev, st_ino)`` and kept open, so a file that is renamed
away (rotation) or deleted is still read to its end through the open descriptor. Polling uses
``os.stat``/``os.pread`` only (no inotify).

Where reading starts:

* a file seen at the first poll whose pattern is new to the state file: its end (after the last
  complete line, so a partial last line is shipped whole once it is completed);
* a file with a saved position: that position;
* any other file (a later glob match, the new file after a rotation, a file created while the
  agent was stopped under a pattern it already followed): its start.

Rotation. Rename-and-create: the old file is drained through its descriptor, then closed once
it has not grown for :attr:`Tailer.ROTATED_GRACE` seconds (writers that reopen late are still
read); its partial last line, if any, is then shipped as it is — the writer is gone. Copytruncate
and truncation (the file is shorter than the read position, or its first bytes changed): reading
restarts at 0, after the lines past the read position are taken from the copy (a sibling file
with the same first bytes, e.g. ``app.log.1``) when one is found; without a copy, a partial last
line already read is shipped as it is. After a restart, a saved file
that is no longer at its path is looked for by inode (renamed rotation) or by its first bytes
(copytruncate) in its directory. A saved position also stores a fingerprint of the file's first
bytes, so a recycled inode is recognised as a new file. A copytruncate copy that matches a
pattern is recognised too, also when a poll falls between the copy and the truncation (it is
a prefix of a followed file: left alone until the truncation takes the unread rest from it).
Patterns should still match live files only (``*.log``, not ``*``): other rotated files, such
as compressed ones (``app.log.2.gz``), are read as new files.

Lines: only complete lines are shipped; the newline (and a ``\\r`` before it) is removed,
undecodable bytes become U+FFFD, NUL becomes U+FFFD, blank lines are skipped (the model refuses
empty messages), and a message longer than 64 KiB in UTF-8 is cut on a character boundary and
ends with :data:`TRUNCATED_MARKER`. With ``multiline=True``, indented lines and stack-trace lines
(``Traceback (most recent call last):``, ``Caused by:``, ``java.lang.X: …``, the final line of a
Python traceback) join the entry before them, up to 64 KiB; an entry is shipped when the next
entry starts or the file has been idle for :attr:`Tailer.MULTILINE_WAIT` seconds.

At-least-once: :meth:`Tailer.poll` returns a :class:`Chunk` with the lines and a
:class:`Checkpoint`; :meth:`Tailer.commit` saves that checkpoint (atomically, temp file and
``os.replace``) once the server acknowledged the batch. Checkpoints are cumulative: committing
the newest covers the older ones, and committing an older one after a newer one is ignored.
A chunk with lines is saved as in flight (its byte ranges, the read time of its lines
without a timestamp) before ``poll`` returns it, and forgotten at its commit; after a restart
the chunks in flight come first, re-read from exactly those ranges: the same entries under the
same ``batch_id``, so the server's dedup acknowledges them as repeats even when the files grew
meanwhile. When a file changed under a chunk in flight (gone, truncated, other first bytes),
that chunk and the later ones are given up (logged) and reading goes on from the committed
positions, as without the record. A chunk must not be dropped on the agent
side (a later commit would cover its lines): poll only when the send queue has room, the files
themselves are the buffer::

    chunk = tailer.poll()                      # at most 1000 lines, about 1 MiB of text
    if chunk.lines:
        batch = LogBatch(host, chunk.to_entries(host), batch_id=chunk.batch_id)
        ...                                    # send; on 2xx, or a permanent 4xx:
        tailer.commit(chunk.checkpoint)        # in the order the chunks were polled
"""

from __future__ import annotations

import contextlib
import dataclasses
import fnmatch
import glob
import hashlib
import logging
import os
import stat
import threading
import time
import uuid
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, tzinfo
from pathlib import Path
from typing import Any

from miniobserv.agent.levels import parse_line
from miniobserv.agent.logstate import (
    STATE_FILE,
    FilePosition,
    Ident,
    InFlight,
    Range,
    load_state,
    save_state,
)
from miniobserv.agent.multiline import Assembler, utf8_len
from miniobserv.model import MAX_BATCH, MAX_MESSAGE_BYTES, LogEntry

log = logging.getLogger(__name__)

TRUNCATED_MARKER = " …[truncated]"
FP_BYTES = 256  # how many leading bytes identify a file's content
CHUNK_NAMESPACE = uuid.UUID("5b0e4f8e-6a57-4c1e-9a51-0d1c6c0f11a1")  # of log chunk batch ids
MAX_CHUNK_BYTES = 1024 * 1024  # message bytes per chunk: the JSON body stays far below 8 MiB
_MARKER_BYTES = len(TRUNCATED_MARKER.encode())

@dataclass(frozen=True)
class LogLine:
    """One shipped entry: its text (without newline), level, time and the file it came from."""

    path: str
    text: str
    level: str
    time: datetime

    def to_entry(self, host: str) -> LogEntry:
        """The model's :class:`LogEntry` of this line for ``host``."""
        return LogEntry(time=self.time, host=host, level=self.level, message=self.text,
                        path=self.path)


@dataclass(frozen=True)
class Checkpoint:
    """The positions after one poll; :meth:`Tailer.commit` saves them."""

    seq: int
    positions: Mapping[Ident, FilePosition]
    closed: frozenset[Ident] = frozenset()


@dataclass(frozen=True)
class Chunk:
    """What one :meth:`Tailer.poll` read: at most ``max_lines`` lines and their checkpoint.

    ``ranges`` names what was read, in reading order: per file ``(st_dev, st_ino,
    fingerprint, start, end)`` (``end`` -1: read to its end and closed). The same bytes
    polled again after a restart give the same ranges, hence the same :attr:`batch_id`.
    ``replayed``: the chunk was in flight when the agent last stopped and was re-read from
    its saved ranges (see :class:`~miniobserv.agent.logstate.InFlight`).
    """

    lines: tuple[LogLine, ...]
    checkpoint: Checkpoint
    ranges: tuple[Range, ...] = ()
    replayed: bool = False

    def to_entries(self, host: str) -> list[LogEntry]:
        return [line.to_entry(host) for line in self.lines]

    @property
    def batch_id(self) -> uuid.UUID:
        """A UUIDv5 of the host-independent ranges (open files by identity, then closed
        ones): a re-sent chunk keeps its id."""
        ordered = sorted(self.ranges, key=lambda r: (r[4] == -1, r[0], r[1]))
        text = ";".join(f"{d}:{i}:{fp}:{a}-{b}" for d, i, fp, a, b in ordered)
        return uuid.uuid5(CHUNK_NAMESPACE, text)


@dataclass
class _Budget:
    lines: int
    bytes: int

    def allows(self, entries: int = 1) -> bool:
        return self.lines >= entries and self.bytes > 0


@dataclass
class _File:
    """One followed file: its descriptor, read position and the line being assembled."""

    fd: int
    path: str
    ident: Ident
    done: int  # end of the last line handled (shipped, skipped or held)
    fp_len: int = 0
    fp: str = ""
    buf: bytearray = field(default_factory=bytearray)  # the incomplete line at ``done``
    skipped: int = 0  # bytes of that line dropped past the size limit
    entry: Assembler = field(default_factory=Assembler)  # multiline entry being assembled
    draining: bool = False  # no longer at a matched path: read to the end, then close
    renamed: bool = False  # rotated to another matched path: older lines than the new file's
    truncated: bool = False  # shrank or changed under us: restart at 0 once flushed
    limit: int | None = None  # re-reading a chunk in flight: read no further than this
    last_size: int = 0
    last_growth: float = 0.0

    @property
    def read_pos(self) -> int:
        return self.done + len(self.buf) + self.skipped

    @property
    def commit_pos(self) -> int:
        return self.entry.start if self.entry else self.done

    def position(self) -> FilePosition:
        return FilePosition(self.path, self.ident[0], self.ident[1], self.commit_pos,
                            self.fp_len, self.fp)

    def restart(self) -> None:
        """Forget everything read: the file starts over at offset 0."""
        self.done = self.skipped = 0
        self.buf.clear()
        self.entry.reset()
        self.truncated = False
        self.fp_len, self.fp = fingerprint(self.fd)


class Tailer:
    """Follow the files matched by ``patterns``, keeping positions in ``state_dir``.

    :param patterns: file paths or globs (``~`` is expanded; ``**`` recurses).
    :param state_dir: where :data:`STATE_FILE` is kept; created when missing.
    :param multiline: join indented and stack-trace lines to the entry before them.
    :param clock: monotonic seconds, for the rotation grace and the multiline wait.
    :param now: the read time of lines without their own timestamp.
    :param local_tz: the zone of zone-less timestamps (None: the host's zone).

    ``poll`` and ``commit`` may be called from different threads.
    """

    ROTATED_GRACE = 5.0  # seconds a renamed or deleted file must stay unchanged to be closed
    MULTILINE_WAIT = 2.0  # seconds of silence that end a multiline entry
    BLOCK = 64 * 1024
    COPY_CANDIDATES = 64  # siblings examined when looking for a copytruncate copy

    def __init__(self, patterns: Iterable[str], state_dir: str | os.PathLike[str], *,
                 multiline: bool = False, clock: Callable[[], float] = time.monotonic,
                 now: Callable[[], datetime] = lambda: datetime.now(UTC),
                 local_tz: tzinfo | None = None) -> None:
        self.patterns = tuple(os.path.expanduser(p) for p in patterns)
        self.state_path = Path(state_dir) / STATE_FILE
        self.multiline = multiline
        self._clock, self._now, self._local_tz = clock, now, local_tz
        self._lock = threading.Lock()
        self._files: dict[Ident, _File] = {}
        self._closed: set[Ident] = set()
        self._copies: dict[Ident, int] = {}  # copies waiting for a truncation: ident → size
        self._warned: set[str] = set()
        self._seq = self._committed_seq = 0
        self._started = self._shut = False
        self._dirty = False
        Path(state_dir).mkdir(parents=True, exist_ok=True)
        state = load_state(self.state_path)
        self._known_patterns, self._committed = state.patterns, state.positions
        self._pending = list(state.inflight)  # in flight at the last stop: re-read first
        self._inflight: list[InFlight] = []  # polled by this run, not committed yet
        self._closed_at: dict[Ident, int] = {}  # where files closed since the last poll ended
        self._polled: dict[Ident, FilePosition] = {}  # positions after the previous poll
        self._polled_closed: frozenset[Ident] = frozenset()

    # --- public API ------------------------------------------------------------------------

    def poll(self, max_lines: int = MAX_BATCH, max_bytes: int = MAX_CHUNK_BYTES) -> Chunk:
        """Read what is new: at most ``max_lines`` lines and about ``max_bytes`` of text.

        Reading stops once ``max_bytes`` of message text are reached, so a chunk may pass it by
        one entry (at most 64 KiB). Files that cannot be read are logged and skipped.

        A chunk with lines is saved as in flight before it is returned, until its commit.
        After a restart, the chunks in flight at the last stop come first, re-read from their
        saved byte ranges with their saved read time (the same entries, the same
        ``batch_id``), one per poll and whatever the budget, before anything new is read.
        """
        if max_lines < 1:
            raise ValueError("max_lines must be at least 1")
        with self._lock:
            if self._shut:
                raise RuntimeError("poll() on a closed Tailer")
            self._scan(startup=not self._started)
            self._started = True
            replayed = self._replay() if self._pending else None
            if replayed is not None:
                return replayed
            budget, lines = _Budget(max_lines, max_bytes), list[LogLine]()
            read_time = self._now()
            order = self._reading_order()
            for f in order:
                if not budget.allows():
                    break
                self._read_file(f, budget, lines, read_time)
            return self._chunk(lines, read_time, [f.ident for f in order])

    def _chunk(self, lines: list[LogLine], read_time: datetime, order: list[Ident],
               replayed: InFlight | None = None) -> Chunk:
        """The chunk of this poll; one with lines is saved as in flight. A replayed chunk
        keeps its saved ranges (a file's fingerprint may have grown since)."""
        self._seq += 1
        checkpoint = Checkpoint(self._seq, {i: f.position() for i, f in self._files.items()},
                                frozenset(self._closed))
        spans = self._spans(checkpoint, {ident: n for n, ident in enumerate(order)})
        inflight = InFlight(tuple(s[:5] for s in spans), tuple(s[5] for s in spans),
                            tuple(s[6] for s in spans), read_time.isoformat())
        inflight = replayed or inflight
        if lines or replayed:
            self._inflight.append(dataclasses.replace(inflight, seq=self._seq))
            self._dirty = True
        if self._dirty:
            self._save()
        return Chunk(tuple(lines), checkpoint, inflight.ranges, replayed is not None)

    def _spans(self, checkpoint: Checkpoint, order: Mapping[Ident, int],
               ) -> list[tuple[int, int, str, int, int, int, int]]:
        """What this poll read, per file, since the previous poll (or the saved state), in
        reading order: each chunk range, its fingerprinted length and where reading ended."""
        before = self._polled or self._committed
        spans = []
        for ident, pos in sorted(checkpoint.positions.items()):
            old = before.get(ident)
            start = old.offset if old is not None and old.fp == pos.fp else 0
            if start != pos.offset:
                spans.append((ident[0], ident[1], pos.fp, start, pos.offset, pos.fp_len,
                              pos.offset))
        for ident in sorted(checkpoint.closed - set(self._polled_closed)):
            old = before.get(ident)
            if old is not None:
                spans.append((ident[0], ident[1], old.fp, old.offset, -1, old.fp_len,
                              self._closed_at.get(ident, old.offset)))
        self._closed_at.clear()
        self._polled = dict(checkpoint.positions)
        self._polled_closed = frozenset(checkpoint.closed)
        return sorted(spans, key=lambda s: order.get((s[0], s[1]), len(order)))

    # --- chunks in flight at the last stop -------------------------------------------------

    def _replay(self) -> Chunk | None:
        """The oldest chunk in flight at the last stop, re-read; None when it cannot be (then
        neither can the later ones: reading goes on from the positions reached)."""
        pending = self._pending.pop(0)
        files = self._replayable(pending)
        try:
            read_time = datetime.fromisoformat(pending.read_time)
        except ValueError:
            files = None
        if files is None:
            log.warning("cannot re-read %d log chunks in flight at the last stop (a file "
                        "changed or is gone): reading on from the saved positions; lines "
                        "the server stored before the stop may be stored again",
                        len(self._pending) + 1)
            self._pending.clear()
            self._dirty = True
            return None
        log.info("re-sending a log chunk in flight at the last stop (%d left)",
                 len(self._pending))
        lines: list[LogLine] = []
        for f, (*_, start, end), stop in zip(files, pending.ranges, pending.ends, strict=True):
            self._guarded(f, self._reread, f, start, end, stop, lines, read_time)
        return self._chunk(lines, read_time, [f.ident for f in files], replayed=pending)

    def _replayable(self, pending: InFlight) -> list[_File] | None:
        """The files of ``pending``, each still with its identity, its first bytes and its
        bytes up to where the chunk ended, and not read past the chunk's start; else None."""
        files = []
        for (dev, ino, fp, start, _), head, stop in zip(pending.ranges, pending.heads,
                                                       pending.ends, strict=True):
            f = self._files.get((dev, ino))
            if f is None or f.truncated or f.buf or f.entry or f.commit_pos > start:
                return None
            try:
                if not _same_head(f.fd, head, fp) or os.fstat(f.fd).st_size < stop:
                    return None
            except OSError:
                return None
            files.append(f)
        return files

    def _reread(self, f: _File, start: int, end: int, stop: int, out: list[LogLine],
                read_time: datetime) -> None:
        """Read ``f`` from ``start`` to ``stop`` again and ship what the chunk shipped: the
        entry held at ``stop`` was ended by the line there; a closed file closes again
        unless it grew since (it is then read on as before)."""
        budget = _Budget(1 << 62, 1 << 62)
        f.done, f.limit = start, stop  # bytes before ``start`` gave no line: skipped
        try:
            self._read_lines(f, budget, out, read_time)
        finally:
            f.limit = None
        if end == -1:
            self._flush(f, out, read_time, budget)
            if os.fstat(f.fd).st_size == stop:
                self._close(f)
        else:
            self._emit_held(f, out, read_time, budget)

    def commit(self, checkpoint: Checkpoint) -> None:
        """Save ``checkpoint`` as shipped: call it when the server acknowledged the batch
        holding the chunk's lines (or refused it for good). Older checkpoints are ignored."""
        with self._lock:
            if checkpoint.seq <= self._committed_seq:
                return
            self._committed_seq = checkpoint.seq
            self._inflight = [c for c in self._inflight if c.seq > checkpoint.seq]
            for ident in checkpoint.closed:
                self._committed.pop(ident, None)
                self._closed.discard(ident)
            self._committed.update(checkpoint.positions)
            self._save()

    def close(self) -> None:
        """Close every open file; positions are not saved (only commits save)."""
        with self._lock:
            for f in self._files.values():
                os.close(f.fd)
            self._files.clear()
            self._shut = True

    def __enter__(self) -> Tailer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # --- discovery -------------------------------------------------------------------------

    def _scan(self, startup: bool) -> None:
        """Match the patterns, notice rotations and truncations, open new files."""
        matched = self._match()
        for ident, f in list(self._files.items()):
            if ident in matched:  # ``path`` stays the name the lines were written under
                f.draining, f.renamed = False, matched[ident][0] != f.path
                self._guarded(f, self._check_size, f, matched[ident][1])
            elif not f.draining:
                log.info("log file %s was rotated or removed; reading it to its end", f.path)
                f.draining = True
        if startup:
            # Record the patterns now: a file that appears under them later, even while the
            # agent is stopped, is then read from its start.
            self._dirty = self._dirty or frozenset(self.patterns) != self._known_patterns
            self._restore(matched)
        for ident in [i for i in self._copies if i not in matched]:
            del self._copies[ident]
        for ident, (path, st, known) in matched.items():
            if ident not in self._files:
                start = "start" if known or not startup else "end"
                if start == "start" and self._is_waiting_copy(path, ident, st):
                    continue
                self._follow(path, ident, st, start)

    def _match(self) -> dict[Ident, tuple[str, os.stat_result, bool]]:
        """Regular files matched now: identity → (path, stat, pattern already in the state)."""
        matched: dict[Ident, tuple[str, os.stat_result, bool]] = {}
        for pattern in self.patterns:
            known = pattern in self._known_patterns
            for path in _expand(pattern):
                try:
                    st = os.stat(path)
                except OSError:
                    continue
                if stat.S_ISREG(st.st_mode):
                    ident = (st.st_dev, st.st_ino)
                    old = matched.get(ident)
                    matched[ident] = (old[0] if old else path, st, known or bool(old and old[2]))
        return matched

    def _restore(self, matched: Mapping[Ident, tuple[str, os.stat_result, bool]]) -> None:
        """First poll: resume saved files, wherever rotation moved them."""
        for ident, saved in list(self._committed.items()):
            if ident in self._files:  # already taken as a copytruncate copy
                continue
            if ident in matched:
                path, st, _ = matched[ident]
                self._follow(path, ident, st, saved)
                continue
            found = self._find_renamed(saved) if self._matches(saved.path) else None
            if found is not None:
                log.info("resuming rotated log file %s (was %s)", found[0], saved.path)
                f = self._follow(found[0], ident, found[1], saved)
                if f is not None:
                    f.path, f.draining = saved.path, True
            else:
                del self._committed[ident]
                self._dirty = True

    def _follow(self, path: str, ident: Ident, st: os.stat_result,
                start: str | FilePosition) -> _File | None:
        """Open ``path`` and follow it from ``start``: "start", "end" or a saved position."""
        fd = self._open(path, ident)
        if fd is None:
            return None
        f = _File(fd=fd, path=path, ident=ident, done=0, last_growth=self._clock())
        self._files[ident] = f
        self._closed.discard(ident)
        if isinstance(start, FilePosition):
            f.path, f.done, f.fp_len, f.fp = start.path, start.offset, start.fp_len, start.fp
            f.renamed = path != start.path
            return f if self._guarded(f, self._check_size, f, st) else None
        if not self._guarded(f, self._start_at, f, st.st_size, start):
            return None
        log.info("following log file %s from its %s", path, start)
        self._committed[ident] = f.position()
        self._dirty = True
        return f

    def _start_at(self, f: _File, size: int, start: str) -> None:
        f.done = _end_of_last_line(f.fd, size, self.BLOCK) if start == "end" else 0
        f.fp_len, f.fp = fingerprint(f.fd)
        f.last_size = size

    def _guarded(self, f: _File, action: Callable[..., object], *args: Any) -> bool:
        """Run ``action``; on an I/O error, log it and stop following ``f``."""
        try:
            action(*args)
        except OSError as err:
            self._stop(f, err)
            return False
        return True

    def _stop(self, f: _File, err: OSError) -> None:
        log.warning("stopped reading log file %s: %s", f.path, err.strerror or err)
        self._close(f)

    def _open(self, path: str, ident: Ident) -> int | None:
        try:
            fd = os.open(path, os.O_RDONLY | getattr(os, "O_CLOEXEC", 0))
        except OSError as err:
            if path not in self._warned:
                self._warned.add(path)
                log.warning("cannot read log file %s: %s", path, err.strerror)
            return None
        st = os.fstat(fd)
        if (st.st_dev, st.st_ino) != ident:  # replaced between stat and open: next poll
            os.close(fd)
            return None
        self._warned.discard(path)
        return fd

    def _matches(self, path: str) -> bool:
        return any(fnmatch.fnmatchcase(path, p) for p in self.patterns)

    # --- rotation and truncation -----------------------------------------------------------

    def _check_size(self, f: _File, st: os.stat_result) -> None:
        """Mark ``f`` truncated when it shrank below the read position or its head changed."""
        size = st.st_size
        changed = size < f.read_pos or (
            f.fp_len > 0 and size != f.last_size and fingerprint(f.fd, f.fp_len)[1] != f.fp)
        if changed and not f.truncated:
            log.info("log file %s was truncated; reading it again from its start", f.path)
            copy = self._find_copy(f)
            if copy is not None:
                self._hand_over(f, *copy)
                return
            f.truncated = True
        elif f.fp_len < FP_BYTES and size > f.fp_len and not f.truncated:
            f.fp_len, f.fp = fingerprint(f.fd)
        f.last_size = size

    def _hand_over(self, f: _File, fd: int, ident: Ident) -> None:
        """Copytruncate: the unread rest is in the copy ``fd``; ``f`` starts over at 0."""
        log.info("reading the rest of %s from its rotated copy", f.path)
        self._copies.pop(ident, None)
        copy = _File(fd=fd, path=f.path, ident=ident, done=f.done, fp_len=f.fp_len, fp=f.fp,
                     buf=f.buf, skipped=f.skipped, entry=f.entry, draining=True,
                     last_size=os.fstat(fd).st_size, last_growth=self._clock())
        self._files[ident] = copy
        f.buf, f.entry = bytearray(), Assembler()
        f.restart()
        f.last_size = os.fstat(f.fd).st_size

    def _find_copy(self, f: _File) -> tuple[int, Ident] | None:
        """A sibling of ``f`` that starts with the same bytes and holds the unread part."""
        if f.fp_len == 0:
            return None
        for path in _siblings(f.path, self.COPY_CANDIDATES):
            try:
                st = os.stat(path)
            except OSError:
                continue
            ident = (st.st_dev, st.st_ino)
            if (ident in self._files or not stat.S_ISREG(st.st_mode)
                    or st.st_size < f.read_pos):
                continue
            fd = self._open(path, ident)
            if fd is not None and _same_head(fd, f.fp_len, f.fp):
                return fd, ident
            if fd is not None:
                os.close(fd)
        return None

    def _is_waiting_copy(self, path: str, ident: Ident, st: os.stat_result) -> bool:
        """Is the new file ``path`` a copy of a followed file that is not truncated yet?

        logrotate's copytruncate copies, then truncates; a scan in between sees the copy as a
        new file. Its lines are the original's, so it is left alone until the truncation,
        which takes from it the lines not yet read (:meth:`_find_copy`). A copy is a prefix of
        its original: the same first bytes, and the same bytes before the copy's end. One that
        grows later is a file of its own after all, read from its start.
        """
        seen = self._copies.get(ident)
        if seen is not None:
            if seen == st.st_size:
                return True
            log.info("log file %s grew: following it as a file of its own", path)
            del self._copies[ident]
            return False
        if st.st_size < FP_BYTES:
            return False
        fd = self._open(path, ident)
        if fd is None:
            return False
        try:
            original = next((f for f in self._files.values()
                             if f.fp_len == FP_BYTES and not f.truncated
                             and _is_prefix(fd, f.fd, st.st_size, f.fp)), None)
        finally:
            os.close(fd)
        if original is None:
            return False
        log.info("log file %s is a copy of %s: waiting for the truncation", path, original.path)
        self._copies[ident] = st.st_size
        return True

    def _find_renamed(self, saved: FilePosition) -> tuple[str, os.stat_result] | None:
        """The file with the saved identity in the saved path's directory (renamed rotation)."""
        directory = os.path.dirname(saved.path) or "."
        try:
            entries = list(os.scandir(directory))
        except OSError:
            return None
        for entry in entries:
            try:
                if entry.inode() != saved.ino:
                    continue
                st = entry.stat(follow_symlinks=False)
            except OSError:
                continue
            if st.st_dev == saved.dev and stat.S_ISREG(st.st_mode) and \
                    self._has_head(entry.path, saved):
                return entry.path, st
        return None

    def _has_head(self, path: str, saved: FilePosition) -> bool:
        """Does the file at ``path`` still start with the saved fingerprinted bytes?"""
        fd = self._open(path, saved.ident)
        if fd is None:
            return False
        try:
            return _same_head(fd, saved.fp_len, saved.fp)
        finally:
            os.close(fd)

    # --- reading ---------------------------------------------------------------------------

    def _reading_order(self) -> list[_File]:
        """Rotated files first (their lines are older), then the others, rotating the start
        so that one busy file cannot starve the rest."""
        files = list(self._files.values())
        draining = [f for f in files if f.draining or f.renamed]
        live = [f for f in files if not (f.draining or f.renamed)]
        if live:
            turn = self._seq % len(live)
            live = live[turn:] + live[:turn]
        return draining + live

    def _read_file(self, f: _File, budget: _Budget, out: list[LogLine],
                   read_time: datetime) -> None:
        if f.truncated:
            if not budget.allows(2):
                return
            self._flush(f, out, read_time, budget)
            if not self._guarded(f, f.restart):
                return
        try:
            at_end = self._read_lines(f, budget, out, read_time)
        except OSError as err:
            self._stop(f, err)
            return
        if not at_end:
            return
        idle = self._clock() - f.last_growth
        if f.draining and idle >= self.ROTATED_GRACE and budget.allows(2):
            self._flush(f, out, read_time, budget)
            self._close(f)
        elif f.entry and idle >= self.MULTILINE_WAIT and budget.allows():
            self._emit_held(f, out, read_time, budget)

    def _read_lines(self, f: _File, budget: _Budget, out: list[LogLine],
                    read_time: datetime) -> bool:
        """Read blocks and handle complete lines until the end of the file (True) or the
        budget is spent (False)."""
        while budget.allows():
            pos = f.read_pos
            size = self.BLOCK if f.limit is None else min(self.BLOCK, f.limit - pos)
            data = os.pread(f.fd, size, pos) if size > 0 else b""
            if not data:
                return True
            f.last_growth = self._clock()
            start = 0
            while (nl := data.find(b"\n", start)) >= 0:
                if not budget.allows():
                    return False
                raw, cut = _take_line(f, data, start, nl)
                line_start, f.done = f.done, pos + nl + 1
                self._handle(f, _decode(raw), cut, line_start, out, read_time, budget)
                start = nl + 1
            _keep_partial(f, data, start)
        return False

    def _handle(self, f: _File, text: str, cut: bool, line_start: int, out: list[LogLine],
                read_time: datetime, budget: _Budget) -> None:
        """One complete line: ship it, or hold it while its entry may continue."""
        if not text or text.isspace():
            return
        text = _fit(text, cut)
        if not self.multiline:
            self._ship(f, text, out, read_time, budget)
            return
        done = f.entry.add(text, line_start)
        if done is not None:
            self._ship(f, done.text, out, read_time, budget, first=done.first)

    def _emit_held(self, f: _File, out: list[LogLine], read_time: datetime,
                   budget: _Budget) -> None:
        done = f.entry.take()
        if done is not None:
            self._ship(f, done.text, out, read_time, budget, first=done.first)

    def _ship(self, f: _File, text: str, out: list[LogLine], read_time: datetime,
              budget: _Budget, first: str | None = None) -> None:
        level, stamp = parse_line(first if first is not None else text, read_time,
                                  self._local_tz)
        out.append(LogLine(f.path, text, level, stamp))
        budget.lines -= 1
        budget.bytes -= utf8_len(text)

    def _flush(self, f: _File, out: list[LogLine], read_time: datetime,
               budget: _Budget) -> None:
        """The file is finished: its partial last line and held entry are shipped as they are."""
        if f.buf or f.skipped:
            raw, cut, line_start = bytes(f.buf), f.skipped > 0, f.done
            f.done, f.buf, f.skipped = f.read_pos, bytearray(), 0
            self._handle(f, _decode(raw), cut, line_start, out, read_time, budget)
        if f.entry:
            self._emit_held(f, out, read_time, budget)

    def _close(self, f: _File) -> None:
        self._closed_at[f.ident] = f.read_pos
        with contextlib.suppress(OSError):
            os.close(f.fd)
        self._files.pop(f.ident, None)
        self._closed.add(f.ident)

    # --- state file ------------------------------------------------------------------------

    def _save(self) -> None:
        """Write the committed positions atomically; a failure is logged and retried later."""
        try:
            save_state(self.state_path, self.patterns, self._committed.values(),
                       self._inflight + self._pending)
        except OSError as err:
            log.error("cannot save log positions to %s: %s", self.state_path, err)
            self._dirty = True
            return
        self._known_patterns = frozenset(self.patterns)
        self._dirty = False


# --- helpers ---------------------------------------------------------------------------------


def fingerprint(fd: int, length: int = FP_BYTES) -> tuple[int, str]:
    """``(n, digest)`` of the first ``n <= length`` bytes of an open file."""
    head = os.pread(fd, length, 0)
    return len(head), hashlib.blake2b(head, digest_size=16).hexdigest()


def _same_head(fd: int, length: int, digest: str) -> bool:
    try:
        return fingerprint(fd, length) == (length, digest)
    except OSError:
        return False


def _is_prefix(copy_fd: int, fd: int, size: int, digest: str, block: int = 4096) -> bool:
    """Do the ``size`` bytes of ``copy_fd`` begin the file ``fd`` (head digest, last block)?"""
    try:
        if os.fstat(fd).st_size < size or fingerprint(copy_fd)[1] != digest:
            return False
        start = max(0, size - block)
        return os.pread(copy_fd, size - start, start) == os.pread(fd, size - start, start)
    except OSError:
        return False


def _expand(pattern: str) -> list[str]:
    if any(c in pattern for c in "*?["):
        return sorted(glob.glob(pattern, recursive=True))
    return [pattern]


def _siblings(path: str, limit: int) -> list[str]:
    """Files next to ``path`` whose name starts like its own (``app.log.1``, ``app-1.log``)."""
    directory, name = os.path.split(path)
    stem = name.split(".", 1)[0] or name
    try:
        names = sorted(n for n in os.listdir(directory or ".")
                       if n.startswith(stem) and n != name)
    except OSError:
        return []
    return [os.path.join(directory, n) for n in names[:limit]]


def _end_of_last_line(fd: int, size: int, block: int) -> int:
    """Where to start "at the end": after the last newline, so a partial last line is whole."""
    start = max(0, size - block)
    tail = os.pread(fd, size - start, start)
    nl = tail.rfind(b"\n")
    if nl >= 0:
        return start + nl + 1
    return 0 if start == 0 else size


def _take_line(f: _File, data: bytes, start: int, nl: int) -> tuple[bytes, bool]:
    """The line ending at ``data[nl]``: the held partial plus ``data[start:nl]``, at most the
    size limit; ``cut`` tells whether bytes were dropped."""
    room = MAX_MESSAGE_BYTES - len(f.buf)
    raw = bytes(f.buf) + data[start:min(nl, start + room)]
    cut = f.skipped > 0 or nl - start > room
    f.buf.clear()
    f.skipped = 0
    return raw, cut


def _keep_partial(f: _File, data: bytes, start: int) -> None:
    room = MAX_MESSAGE_BYTES - len(f.buf)
    piece = data[start:]
    f.buf += piece[:room]
    f.skipped += max(0, len(piece) - room)


def _decode(raw: bytes) -> str:
    if raw.endswith(b"\r"):
        raw = raw[:-1]
    text = raw.decode("utf-8", "replace")
    return text.replace("\x00", "\ufffd") if "\x00" in text else text


def _fit(text: str, cut: bool) -> str:
    """``text`` within 64 KiB of UTF-8, with the marker when anything was cut."""
    if not cut and len(text) * 4 <= MAX_MESSAGE_BYTES:
        return text
    data = text.encode()
    if not cut and len(data) <= MAX_MESSAGE_BYTES:
        return text
    return data[:MAX_MESSAGE_BYTES - _MARKER_BYTES].decode("utf-8", "ignore") + TRUNCATED_MARKER
