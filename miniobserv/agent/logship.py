"""Ship the lines of ``LOG_PATHS`` to the server, each at least once (SPEC §6, issue 4).

A :class:`LogShipper` runs one thread that polls a :class:`~miniobserv.agent.logtail.Tailer`
about every second (never less often than once per ``COLLECT_INTERVAL``) and sends each chunk
of at most 1000 lines as one :class:`~miniobserv.model.LogBatch` whose ``batch_id`` is derived
from the files' identities and byte ranges (:attr:`~miniobserv.agent.logtail.Chunk.batch_id`),
so a chunk re-read after a restart keeps its id and the server stores it once. The tailer
saves each chunk as in flight (its byte ranges and read time) before it is queued, and after a
restart re-reads exactly those chunks first, byte-identical, so the server acknowledges them
as repeats even when the files grew meanwhile (a 409, the same id with other content, still
counts as stored: the fallback when a file changed under a chunk in flight). Chunks go through
their own bounded queue and sender thread (the same discipline as metrics: backoff,
retries without end, a bounded drain). The tailer's read position is committed, in poll order,
only once the server acknowledged the batch (2xx) or refused it for good. A chunk refused with
413 or 400 is split in halves and re-sent, down to single lines: only a line refused on its own
is dropped, counted (``log_lines_refused``) and logged. Log chunks are never dropped on the
agent side: the thread polls only while the queue has room, so during an outage the files
themselves are the buffer.
"""

from __future__ import annotations

import functools
import logging
import threading
import time
import uuid

from miniobserv.agent.drops import DropCounters
from miniobserv.agent.logtail import MAX_CHUNK_BYTES, Checkpoint, Chunk, Tailer
from miniobserv.agent.outbox import BatchSender, Outbox
from miniobserv.agent.sender import SendResult
from miniobserv.config import AgentConfig
from miniobserv.errors import ConfigError
from miniobserv.model import MAX_BATCH, LogBatch

log = logging.getLogger(__name__)

CONFLICT = 409  # the id was stored before: a chunk re-read after a restart (read times differ)
SPLIT_ON = (400, 413)  # a chunk refused whole is split: one bad or oversized line keeps its own


def is_full(chunk: Chunk, max_lines: int = MAX_BATCH, max_bytes: int = MAX_CHUNK_BYTES) -> bool:
    """True when a poll stopped at its line or byte budget: more lines are probably waiting."""
    if len(chunk.lines) >= max_lines:
        return True
    return sum(len(line.text.encode()) for line in chunk.lines) >= max_bytes


class LogShipper:
    """A log thread that polls a tailer and an :class:`Outbox` that sends its batches.

    Tunables are UPPER_CASE attributes so tests can shrink them.
    """

    POLL_S = 1.0
    MAX_LINES = MAX_BATCH
    QUEUE_SIZE = 4  # chunks polled ahead of the server's answers

    def __init__(self, host: str, tailer: Tailer, sender: BatchSender,
                 interval: float = 10.0) -> None:
        self.host = host
        self.tailer = tailer
        self.outbox = Outbox("log sender", sender, self.QUEUE_SIZE)
        self.poll_every = min(self.POLL_S, interval)
        self.stopping = threading.Event()  # set: polling stops at once
        self.queued = 0  # batches handed to the outbox
        self.lines_lost = 0  # lines of batches the server refused for good
        self.drops = DropCounters()  # the runner shares its own
        self._thread: threading.Thread | None = None

    @classmethod
    def from_config(cls, config: AgentConfig, sender: BatchSender) -> LogShipper:
        """The shipper of ``LOG_PATHS``; ConfigError when LOG_STATE_DIR cannot be used."""
        try:
            tailer = Tailer(config.log_paths, config.log_state_dir,
                            multiline=config.log_multiline)
        except OSError as err:
            raise ConfigError(f"LOG_STATE_DIR={str(config.log_state_dir)!r} cannot be used: "
                              f"{err.strerror or err}") from None
        return cls(config.host, tailer, sender, config.collect_interval.total_seconds())

    @property
    def threads(self) -> list[threading.Thread]:
        return [t for t in (self._thread, self.outbox.thread) if t is not None]

    def start(self) -> None:
        """Start the sender and log threads; the first poll runs at once."""
        self.outbox.start()
        self._thread = threading.Thread(target=self._poll_loop, name="logtail", daemon=True)
        self._thread.start()
        log.info("log tailing started: patterns=%s state=%s multiline=%s",
                 ",".join(self.tailer.patterns), self.tailer.state_path.parent,
                 "on" if self.tailer.multiline else "off")

    def poll_once(self) -> int:
        """Poll while the queue has room and chunks come full; returns the batches queued."""
        queued = 0
        while self.outbox.has_room() and not self.stopping.is_set():
            chunk = self.tailer.poll(self.MAX_LINES)
            if not chunk.lines:  # an empty chunk needs no commit
                break
            self._enqueue(chunk)
            queued += 1
            if not chunk.replayed and not is_full(chunk, self.MAX_LINES):
                break
        return queued

    def stop_polling(self, deadline: float) -> None:
        """Stop polling now; wait for a poll in progress until ``deadline`` at most."""
        self.stopping.set()
        if self._thread is not None:
            self._thread.join(max(0.0, deadline - time.monotonic()))

    def finish(self, deadline: float) -> None:
        """After :meth:`stop_polling` and ``outbox.close()``: drain until ``deadline``, then
        close the tailer. Positions of batches not acknowledged stay uncommitted."""
        self.outbox.join(deadline)
        if self.outbox.lost:
            log.warning("shutdown: %d log batches not delivered; their lines will be read "
                        "again at the next start", self.outbox.lost)
        if self._thread is not None and self._thread.is_alive():
            log.warning("shutdown: a log poll is still running; not closing the files")
            return
        self.tailer.close()
        log.info("log tailing stopped: %d batches sent, %d lines refused by the server",
                 self.outbox.sent, self.lines_lost)

    def _enqueue(self, chunk: Chunk) -> None:
        batch = LogBatch(self.host, chunk.to_entries(self.host), chunk.batch_id)
        if not self.outbox.offer(batch, functools.partial(self._settled, batch,
                                                          chunk.checkpoint)):
            # Only this thread fills the queue and it checked for room: cannot happen.
            raise RuntimeError("log queue full after has_room()")
        self.queued += 1

    def _settled(self, batch: LogBatch, checkpoint: Checkpoint, result: SendResult) -> None:
        """The server answered for good: commit the chunk's positions (in poll order).

        A chunk refused as a whole (413, 400) is split and its halves sent again, down to
        single lines; only a line refused on its own is dropped, counted and logged."""
        if not result.is_sent and result.status != CONFLICT and \
                not self._resend_halves(batch, result):
            return  # stopped half-way: nothing committed, the chunk is read again
        self.tailer.commit(checkpoint)

    def _resend_halves(self, batch: LogBatch, result: SendResult) -> bool:
        """Send ``batch`` again in halves (ids derived from its own, so they are stable);
        False when shutdown cut it short."""
        if len(batch.entries) == 1 or result.status not in SPLIT_ON:
            self._refused(batch, result)
            return True
        middle = len(batch.entries) // 2
        for index, entries in enumerate((batch.entries[:middle], batch.entries[middle:])):
            assert batch.batch_id is not None
            half = LogBatch(batch.host, entries, uuid.uuid5(batch.batch_id, str(index)))
            answer = self.outbox.sender.send(half)
            if answer.outcome == "aborted":
                return False
            if not answer.is_sent and answer.status != CONFLICT and \
                    not self._resend_halves(half, answer):
                return False
        return True

    def _refused(self, batch: LogBatch, result: SendResult) -> None:
        self.lines_lost += len(batch.entries)
        self.drops.add("log_lines_refused", len(batch.entries))
        log.error("log batch %s refused by the server (HTTP %s): %d lines from %s lost",
                  batch.batch_id, result.status, len(batch.entries),
                  ", ".join(sorted({e.path or "?" for e in batch.entries})))

    def _poll_loop(self) -> None:
        while not self.stopping.is_set():
            try:
                self.poll_once()
            except Exception:  # noqa: BLE001 - the loop must outlive any one poll
                log.exception("polling the log files failed")
            if self.stopping.wait(self.poll_every):
                return
