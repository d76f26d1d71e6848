"""The agent's two threads: a collector and a sender over a bounded queue (SPEC §6).

The collector never blocks: when the queue is full it drops the newest batch (the oldest
queued data marks the start of an outage), counts and logs it. The sender takes batches in
order. :meth:`Runner.stop` stops collection at once and gives the queued batches a drain
bounded by ``SHUTDOWN_TIMEOUT``.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
import uuid
from collections.abc import Callable, Sequence
from typing import NamedTuple, Protocol

from miniobserv.agent.collectors import Registry, default_collectors
from miniobserv.agent.sender import Batch, Sender, SendResult
from miniobserv.config import AgentConfig
from miniobserv.model import MAX_BATCH, Metric, MetricBatch

log = logging.getLogger(__name__)

_SENTINEL = object()


class BatchSender(Protocol):
    """What the runner needs of a sender (see :class:`~miniobserv.agent.sender.Sender`).

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


def split_batches(host: str, metrics: Sequence[Metric],
                  size: int = MAX_BATCH) -> list[MetricBatch]:
    """Metrics cut into batches of at most ``size``, each with its own ``batch_id``."""
    return [MetricBatch(host, list(metrics[start:start + size]), uuid.uuid4())
            for start in range(0, len(metrics), size)]


class Runner:
    """Wires a registry and a sender with ``queue.Queue(maxsize=QUEUE_SIZE)``.

    ``start()`` starts both threads; ``stop()`` shuts them down within the drain bound.
    """

    QUEUE_SIZE = 10
    JOIN_GRACE_S = 1.0  # past the drain bound, for a request that is just finishing

    def __init__(self, host: str, registry: Registry, sender: BatchSender,
                 interval: float = 10.0, shutdown_timeout: float = 10.0) -> None:
        self.host = host
        self.registry = registry
        self.sender = sender
        self.interval = interval
        self.shutdown_timeout = shutdown_timeout
        self.queue: queue.Queue[object] = queue.Queue(maxsize=self.QUEUE_SIZE)
        self.stopping = threading.Event()  # set: the collector stops at once
        self.dropped = 0  # newest batches dropped because the queue was full
        self.sent = 0
        self.lost = 0  # batches still unsent when the drain bound ran out
        self._collector: threading.Thread | None = None
        self._sender: threading.Thread | None = None

    @classmethod
    def from_config(cls, config: AgentConfig) -> Runner:
        """The runner of a real host: every collector, a sender to ``SERVER_URL``.

        Raises ConfigError when AGENT_LABELS leaves no room for the collectors' labels.
        """
        registry = Registry(default_collectors(config.host, config.disk_mounts,
                                               config.net_ifaces), config.agent_labels)
        sender = Sender(config.server_url, config.agent_token,
                        timeout=config.request_timeout.total_seconds())
        return cls(config.host, registry, sender, config.collect_interval.total_seconds(),
                   config.shutdown_timeout.total_seconds())

    @property
    def threads(self) -> list[threading.Thread]:
        return [t for t in (self._collector, self._sender) if t is not None]

    def start(self) -> None:
        """Start the collector and sender threads (the first pass runs at once)."""
        self._collector = threading.Thread(target=self._collect_loop, name="collector",
                                           daemon=True)
        self._sender = threading.Thread(target=self._send_loop, name="sender", daemon=True)
        self._sender.start()
        self._collector.start()
        log.info("agent started: host=%s interval=%gs collectors=%s server=%s", self.host,
                 self.interval, ",".join(self.registry.names), self.sender.server_url)

    def collect_once(self) -> int:
        """Run every collector once and enqueue the result; returns the batches enqueued."""
        metrics = self.registry.collect()
        return sum(self.enqueue(batch) for batch in split_batches(self.host, metrics))

    def enqueue(self, batch: Batch,
                on_done: Callable[[SendResult], None] | None = None) -> bool:
        """Queue a batch without blocking; when full, drop it (the newest) and count it."""
        try:
            self.queue.put_nowait(Outgoing(batch, on_done))
        except queue.Full:
            self.dropped += 1
            size = len(batch.metrics) if isinstance(batch, MetricBatch) else len(batch.entries)
            log.warning("queue full (%d batches): dropped the newest batch of %d items "
                        "(%d dropped so far)", self.QUEUE_SIZE, size, self.dropped)
            return False
        return True

    def has_room(self) -> bool:
        """True when a batch enqueued now would not be dropped (for sources that can wait)."""
        return not self.queue.full()

    def stop(self) -> bool:
        """Stop collecting now, drain the queue within ``shutdown_timeout``; True if drained.

        Past the bound the sender is told to give up, and what is still queued is counted in
        ``lost`` and logged as an error. Both threads have ended when this returns (a request
        still in flight gets ``JOIN_GRACE_S`` more; the thread is a daemon regardless).
        """
        deadline = time.monotonic() + self.shutdown_timeout
        self.stopping.set()
        self.sender.deadline = deadline
        if self._collector is not None:
            self._collector.join(max(0.0, deadline - time.monotonic()))
        if self._sender is not None:
            self._drain(self._sender, deadline)
        self.lost += sum(isinstance(item, Outgoing) for item in list(self.queue.queue))
        if self.lost:
            log.error("shutdown: %d batches not delivered (drain bound %gs)", self.lost,
                      self.shutdown_timeout)
        log.info("agent stopped: %d batches sent, %d dropped, %d lost", self.sent,
                 self.dropped, self.lost)
        return self.lost == 0 and not any(t.is_alive() for t in self.threads)

    def _drain(self, sender: threading.Thread, deadline: float) -> None:
        """Let the sender empty the queue until ``deadline``, then make it give up."""
        try:
            self.queue.put(_SENTINEL, timeout=max(0.0, deadline - time.monotonic()))
            sender.join(max(0.0, deadline - time.monotonic()))
        except queue.Full:
            pass
        if sender.is_alive():
            self.sender.stop.set()
            sender.join(self.JOIN_GRACE_S)
        if sender.is_alive():
            log.warning("shutdown: a request is still in flight; not waiting for it")

    def _collect_loop(self) -> None:
        while not self.stopping.is_set():
            started = time.monotonic()
            try:
                self.collect_once()
            except Exception:  # noqa: BLE001 - the loop must outlive any one pass
                log.exception("collection pass failed")
            if self.stopping.wait(max(0.0, self.interval - (time.monotonic() - started))):
                return

    def _send_loop(self) -> None:
        while True:
            item = self.queue.get()
            try:
                if item is _SENTINEL or self.sender.stop.is_set():
                    if isinstance(item, Outgoing):
                        self.lost += 1
                    return
                self._send(item)
            except Exception:  # noqa: BLE001 - the sender thread must survive anything
                log.exception("sending a batch failed")
            finally:
                self.queue.task_done()

    def _send(self, item: object) -> None:
        assert isinstance(item, Outgoing)
        result = self.sender.send(item.batch)
        if result.outcome == "aborted":
            self.lost += 1
            return
        if result.is_sent:
            self.sent += 1
        if item.on_done is not None:
            item.on_done(result)
