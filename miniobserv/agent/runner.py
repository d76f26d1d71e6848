"""The agent's threads: a collector, a sender over a bounded queue, and a log tailer (SPEC §6).

The collector never blocks: when the queue is full it drops the newest batch (the oldest
queued data marks the start of an outage), counts and logs it. The sender takes batches in
order. With ``LOG_PATHS`` set, a :class:`~miniobserv.agent.logship.LogShipper` adds a log
thread with its own queue and sender thread, so a log backlog neither delays nor crowds out
metrics. :meth:`Runner.stop` stops collection and log polling at once and gives every queued
batch a drain bounded by ``SHUTDOWN_TIMEOUT``.
"""

from __future__ import annotations

import logging
import threading
import time
import uuid
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING

from miniobserv.agent.collectors import Registry, default_collectors
from miniobserv.agent.drops import DROPS_FILE, DropCounters, describe
from miniobserv.agent.outbox import BatchQueue, BatchSender, Outbox, batch_size
from miniobserv.agent.sender import Batch, Sender, SendResult
from miniobserv.config import AgentConfig
from miniobserv.errors import ConfigError
from miniobserv.model import MAX_BATCH, Metric, MetricBatch

if TYPE_CHECKING:
    from miniobserv.agent.logship import LogShipper
    from miniobserv.agent.spool import Spool

log = logging.getLogger(__name__)

__all__ = ["BatchQueue", "BatchSender", "Outbox", "Runner", "split_batches"]


def split_batches(host: str, metrics: Sequence[Metric],
                  size: int = MAX_BATCH) -> list[MetricBatch]:
    """Metrics cut into batches of at most ``size``, each with its own ``batch_id``."""
    return [MetricBatch(host, list(metrics[start:start + size]), uuid.uuid4())
            for start in range(0, len(metrics), size)]


class Runner:
    """Wires a registry and a sender with ``queue.Queue(maxsize=QUEUE_SIZE)``; optionally logs.

    ``start()`` starts the threads; ``stop()`` shuts them down within the drain bound.
    """

    QUEUE_SIZE = 10
    JOIN_GRACE_S = Outbox.JOIN_GRACE_S

    def __init__(self, host: str, registry: Registry, sender: BatchSender,
                 interval: float = 10.0, shutdown_timeout: float = 10.0,
                 logs: LogShipper | None = None, spool: Spool | None = None,
                 drops: DropCounters | None = None) -> None:
        self.host = host
        self.registry = registry
        self.sender = sender
        self.interval = interval
        self.shutdown_timeout = shutdown_timeout
        self.logs = logs
        self.drops = drops or DropCounters()
        if logs is not None:
            logs.drops = self.drops
            logs.outbox.drops = self.drops
        self.outbox = Outbox("sender", sender, self.QUEUE_SIZE, spool, self.drops)
        self.stopping = threading.Event()  # set: the collector stops at once
        self.dropped = 0  # newest batches dropped because the queue was full
        self._collector: threading.Thread | None = None

    @classmethod
    def from_config(cls, config: AgentConfig) -> Runner:
        """The runner of a real host: every collector, a sender to ``SERVER_URL``, and a log
        shipper when ``LOG_PATHS`` is set.

        Raises ConfigError when AGENT_LABELS leaves no room for the collectors' labels.
        """
        registry = Registry(default_collectors(config.host, config.disk_mounts,
                                               config.net_ifaces), config.agent_labels)
        timeout = config.request_timeout.total_seconds()
        sender = Sender(config.server_url, config.agent_token, timeout=timeout,
                        token_max_ttl=config.token_max_ttl)
        logs = None
        if config.log_paths:
            # Imported here: an agent without LOG_PATHS does not pay for the tailer's modules.
            from miniobserv.agent.logship import LogShipper

            log_sender = Sender(config.server_url, config.agent_token, stop=sender.stop,
                                timeout=timeout, token_max_ttl=config.token_max_ttl)
            logs = LogShipper.from_config(config, log_sender)
        drops = DropCounters((config.spool_dir or config.log_state_dir) / DROPS_FILE)
        return cls(config.host, registry, sender, config.collect_interval.total_seconds(),
                   config.shutdown_timeout.total_seconds(), logs, open_spool(config), drops)

    @property
    def queue(self) -> BatchQueue:
        return self.outbox.queue

    @property
    def sent(self) -> int:
        return self.outbox.sent

    @property
    def lost(self) -> int:
        return self.outbox.lost

    @property
    def threads(self) -> list[threading.Thread]:
        threads = [self._collector, self.outbox.thread]
        threads += self.logs.threads if self.logs is not None else []
        return [t for t in threads if t is not None]

    def start(self) -> None:
        """Start the collector and sender threads (the first pass runs at once), and logs."""
        self._collector = threading.Thread(target=self._collect_loop, name="collector",
                                           daemon=True)
        self.outbox.start()
        self._collector.start()
        spool = self.outbox.spool
        log.info("agent started: host=%s interval=%gs collectors=%s server=%s spool=%s "
                 "dropped in the previous run: %s", self.host, self.interval,
                 ",".join(self.registry.names), self.sender.server_url,
                 "off" if spool is None else f"{spool.path} ({spool.count} batches waiting)",
                 describe(self.drops.previous))
        if self.logs is not None:
            self.logs.start()

    def collect_once(self) -> int:
        """Run every collector once and enqueue the result; returns the batches enqueued."""
        metrics = self.registry.collect()
        return sum(self.enqueue(batch) for batch in split_batches(self.host, metrics))

    def enqueue(self, batch: Batch,
                on_done: Callable[[SendResult], None] | None = None) -> bool:
        """Queue a batch without blocking; when full, drop it (the newest) and count it."""
        if self.outbox.offer(batch, on_done):
            return True
        self.dropped += 1
        self.drops.add("queue_full")
        log.warning("queue full (%d batches): dropped the newest batch of %d items "
                    "(%d dropped so far)", self.QUEUE_SIZE, batch_size(batch), self.dropped)
        return False

    def has_room(self) -> bool:
        """True when a batch enqueued now would not be dropped (for sources that can wait)."""
        return self.outbox.has_room()

    def pending(self) -> int:
        """Batches queued and not yet taken by a sender thread, logs included."""
        logs = self.logs.outbox.queue.pending() if self.logs is not None else 0
        return self.queue.pending() + logs

    def stop(self) -> bool:
        """Stop collecting and polling now, drain the queues within ``shutdown_timeout``.

        True when everything queued was delivered. Past the bound the senders are told to
        give up; metric batches still queued are counted in ``lost`` and logged as an error
        (log lines that were not delivered are read again at the next start). Every thread has
        ended when this returns (a request still in flight gets ``JOIN_GRACE_S`` more; the
        threads are daemons regardless).
        """
        deadline = time.monotonic() + self.shutdown_timeout
        self.stopping.set()
        outboxes = [self.outbox] + ([self.logs.outbox] if self.logs is not None else [])
        for outbox in outboxes:
            outbox.sender.deadline = deadline  # requests made from now on are shortened
        if self.logs is not None:
            self.logs.stop_polling(deadline)
        if self._collector is not None:
            self._collector.join(max(0.0, deadline - time.monotonic()))
        for outbox in outboxes:
            outbox.close()
        if self.logs is not None:
            self.logs.finish(deadline)
        self.outbox.join(deadline)
        if self.lost:
            self.drops.add("lost_at_shutdown", self.lost)
            log.error("shutdown: %d batches not delivered (drain bound %gs)", self.lost,
                      self.shutdown_timeout)
        self.drops.save()
        if self.outbox.spool is not None:
            self.outbox.spool.close()
        log.info("agent stopped: %d batches sent, %d dropped, %d lost, drops: %s", self.sent,
                 self.dropped, self.lost, describe(self.drops.totals))
        unsent_logs = self.logs.outbox.lost if self.logs is not None else 0
        return self.lost == 0 and unsent_logs == 0 and not any(t.is_alive()
                                                               for t in self.threads)

    def give_up(self) -> None:
        """Make every sender stop retrying at once (a second stop signal during the drain)."""
        self.sender.stop.set()
        if self.logs is not None:
            self.logs.outbox.sender.stop.set()

    def _collect_loop(self) -> None:
        while not self.stopping.is_set():
            started = time.monotonic()
            try:
                self.collect_once()
                self.drops.tick()
            except Exception:  # noqa: BLE001 - the loop must outlive any one pass
                log.exception("collection pass failed")
            if self.stopping.wait(max(0.0, self.interval - (time.monotonic() - started))):
                return


def open_spool(config: AgentConfig) -> Spool | None:
    """The spool of ``SPOOL_DIR``, or None when it is not set; ConfigError when unusable."""
    if config.spool_dir is None:
        return None
    # Imported here: sqlite3 costs about 1 MB, paid only with the spool on.
    import sqlite3

    from miniobserv.agent.spool import Spool

    try:
        return Spool(config.spool_dir, config.spool_max_bytes)
    except (OSError, sqlite3.Error) as err:
        raise ConfigError(f"SPOOL_DIR={str(config.spool_dir)!r} cannot be used: "
                          f"{getattr(err, 'strerror', None) or err}") from None
