"""A bounded queue of batches and the thread that sends them, with an optional disk spool.

The runner (metrics) and the log shipper each own an :class:`Outbox`; this module imports
neither, so they do not import each other.

Spool (``SPOOL_DIR``, metrics only). When the queue is full, :meth:`Outbox.offer` writes the
batch to the :class:`~miniobserv.agent.spool.Spool` instead of refusing it; at shutdown the
batches still queued past the drain bound (and the one whose send was cut short) go there too.
Spooled batches are replayed oldest first, with their original ``batch_id`` (the server
acknowledges a repeated id without storing it twice), and throttled: only once a send has
succeeded (the server answers again), only while the live queue is empty (live data first),
one at a time and at most :attr:`Outbox.REPLAY_PER_S` per second, so a recovering server
sees at most the normal traffic plus that rate. A spooled batch is removed only once the
server settled it, so a kill -9 during a replay replays it again at the next start. Log
chunks are never spooled: their files are their buffer (see :mod:`~miniobserv.agent.logship`).
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, NamedTuple, Protocol

from miniobserv.agent.drops import DropCounters
from miniobserv.agent.sender import Batch, SendResult
from miniobserv.model import MetricBatch

if TYPE_CHECKING:
    from miniobserv.agent.spool import Spool

log = logging.getLogger(__name__)

_SENTINEL = object()


class BatchSender(Protocol):
    """What an outbox needs of a sender (see :class:`~miniobserv.agent.sender.Sender`).

    ``send`` returns a result and never raises on purpose; setting ``stop`` makes it give up
    at once; ``deadline`` (a ``time.monotonic()`` value) shortens requests made during the
    drain.
    """

    server_url: str
    stop: threading.Event
    deadline: float | None

    def send(self, batch: Batch) -> SendResult: ...


class Outgoing(NamedTuple):
    """A queued batch and what to call once it is settled (sent, or dropped as permanent).

    ``on_done`` lets a log tailer commit its read position only after the server's answer;
    it is not called for a batch that shutdown left unsent.
    """

    batch: Batch
    on_done: Callable[[SendResult], None] | None = None


def batch_size(batch: Batch) -> int:
    """How many metrics or log entries a batch holds."""
    return len(batch.metrics) if isinstance(batch, MetricBatch) else len(batch.entries)


class BatchQueue(queue.Queue[object]):
    """A bounded queue whose end marker goes in even when it is full."""

    def close(self) -> None:
        """Append the end marker past ``maxsize``: the sender stops when it reaches it."""
        with self.mutex:
            self._put(_SENTINEL)
            self.unfinished_tasks += 1
            self.not_empty.notify()

    def pending(self) -> int:
        """Batches still queued (the end marker not counted)."""
        with self.mutex:
            return sum(isinstance(item, Outgoing) for item in self.queue)


class Outbox:
    """A bounded queue of batches and the thread that sends them in order.

    The thread loops on ``get()``: it stops at the end marker or once the sender was told to
    stop, survives and logs any exception, and calls ``on_done`` of a settled batch. Between
    live batches it replays the spool (see the module docstring).
    """

    JOIN_GRACE_S = 1.0  # past the drain bound, for a request that is just finishing
    REPLAY_PER_S = 5.0  # spooled batches replayed per second at most

    def __init__(self, name: str, sender: BatchSender, size: int, spool: Spool | None = None,
                 drops: DropCounters | None = None) -> None:
        self.name = name
        self.sender = sender
        self.queue = BatchQueue(maxsize=size)
        self.spool = spool
        self.drops = drops or DropCounters()
        self.sent = 0
        self.lost = 0  # batches unsent past the drain bound, with no spool to take them
        self.spooled = 0  # batches written to the spool
        self.replayed = 0  # spooled batches the server settled
        self.healthy = False  # the last send succeeded: replaying may go on
        self.thread: threading.Thread | None = None
        self._next_replay = 0.0

    def start(self) -> None:
        self.thread = threading.Thread(target=self._loop, name=self.name, daemon=True)
        self.thread.start()

    def offer(self, batch: Batch, on_done: Callable[[SendResult], None] | None = None) -> bool:
        """Queue a batch without blocking; when the queue is full, spool it (batches without
        ``on_done`` only). False, and nothing kept, when neither could take it."""
        try:
            self.queue.put_nowait(Outgoing(batch, on_done))
        except queue.Full:
            return on_done is None and self._to_spool(batch)
        return True

    def has_room(self) -> bool:
        return not self.queue.full()

    def close(self) -> None:
        """No more batches: the thread sends what is queued, then ends."""
        self.queue.close()

    def join(self, deadline: float) -> None:
        """Wait for the thread until ``deadline``; past it, make the sender give up. Batches
        still queued then go to the spool, or are counted in ``lost``."""
        if self.thread is not None:
            self.thread.join(max(0.0, deadline - time.monotonic()))
            if self.thread.is_alive():
                self.sender.stop.set()
                self.thread.join(self.JOIN_GRACE_S)
            if self.thread.is_alive():
                log.warning("shutdown: a request is still in flight; not waiting for it")
        while True:
            try:
                item = self.queue.get_nowait()
            except queue.Empty:
                break
            if isinstance(item, Outgoing):
                self._unsent(item)
        if self.spool is not None:
            log.info("spool: %d batches kept for the next start (%d bytes)", self.spool.count,
                     self.spool.bytes)

    def _to_spool(self, batch: Batch) -> bool:
        if self.spool is None:
            return False
        try:
            dropped = self.spool.push(batch)
        except Exception as err:  # noqa: BLE001 - sqlite3.Error, OSError: sqlite3 is lazy
            log.error("spool: cannot write batch %s: %s", batch.batch_id, err)
            return False
        self.spooled += 1
        if dropped:
            self.drops.add("spool_full", dropped)
            log.warning("spool full (%d bytes): dropped the %d oldest spooled batches",
                        self.spool.max_bytes, dropped)
        return True

    def _unsent(self, item: Outgoing) -> None:
        """A batch shutdown left unsent: to the spool when it can take it, else lost."""
        if item.on_done is not None or not self._to_spool(item.batch):
            self.lost += 1

    def _loop(self) -> None:
        while True:
            try:
                item = self.queue.get(timeout=self._replay_wait())
            except queue.Empty:
                self._replay_guarded()
                continue
            try:
                if item is _SENTINEL or self.sender.stop.is_set():
                    if isinstance(item, Outgoing):
                        self._unsent(item)
                    return
                self._send(item)
            except Exception:  # noqa: BLE001 - the sender thread must survive anything
                log.exception("sending a batch failed")
            finally:
                self.queue.task_done()

    def _replay_wait(self) -> float | None:
        """How long ``get`` may block: for ever when there is nothing to replay (yet)."""
        if self.spool is None or not self.healthy or not self.spool.count:
            return None
        return max(0.0, self._next_replay - time.monotonic())

    def _replay_guarded(self) -> None:
        try:
            self._replay_one()
        except Exception:  # noqa: BLE001 - the sender thread must survive anything
            log.exception("replaying a spooled batch failed")
            self._next_replay = time.monotonic() + 1.0

    def _replay_one(self) -> None:
        """Send the oldest spooled batch; remove it once the server settled it."""
        assert self.spool is not None
        self._next_replay = time.monotonic() + 1.0 / self.REPLAY_PER_S
        oldest = self.spool.peek()
        if oldest is None or self.sender.stop.is_set():
            return
        row_id, batch = oldest
        result = self.sender.send(batch)
        if result.outcome == "aborted":
            return  # stays spooled for the next start
        self.spool.remove(row_id)
        self.replayed += 1
        self._settled(result)
        if not self.spool.count:
            log.info("spool: every spooled batch replayed (%d so far)", self.replayed)

    def _send(self, item: object) -> None:
        assert isinstance(item, Outgoing)
        result = self.sender.send(item.batch)
        if result.outcome == "aborted":
            self._unsent(item)
            return
        if item.on_done is not None:
            self.healthy = result.is_sent
            self.sent += result.is_sent
            item.on_done(result)
        else:
            self._settled(result)

    def _settled(self, result: SendResult) -> None:
        self.healthy = result.is_sent
        if result.is_sent:
            self.sent += 1
        else:
            self.drops.add("refused")
