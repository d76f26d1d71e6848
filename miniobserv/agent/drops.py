"""Counters of everything the agent dropped, logged while drops happen and kept across starts.

Every drop increments a counter: ``queue_full`` (the queue was full and no spool is on),
``spool_full`` (the spool dropped its oldest batch), ``refused`` (the server refused a batch
for good), ``log_lines_refused`` (single log lines the server refused), ``lost_at_shutdown``
(batches still unsent past the drain bound with no spool to take them).

The runner calls :meth:`DropCounters.tick` from its collector loop: once a minute, while the
last minute had drops, one WARNING line gives that minute's counts and the totals. The totals
are saved to ``agent-drops.json`` in the state directory (``SPOOL_DIR`` when set, else
``LOG_STATE_DIR``) at each of those lines and at shutdown; the next start reports them in its
start-up line and starts again from zero. A kill -9 forgets at most the last minute's counts.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Callable
from pathlib import Path

from miniobserv.agent.logstate import write_atomically

log = logging.getLogger(__name__)

DROPS_FILE = "agent-drops.json"
NAMES = ("queue_full", "spool_full", "refused", "log_lines_refused", "lost_at_shutdown")


def describe(counts: dict[str, int]) -> str:
    """``queue_full=3 spool_full=1``: the non-zero counts, or ``none``."""
    return " ".join(f"{name}={counts[name]}" for name in NAMES if counts.get(name)) or "none"


class DropCounters:
    """Thread-safe drop counters; ``path`` (optional) is where the totals are kept."""

    EVERY_S = 60.0

    def __init__(self, path: Path | None = None,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.path = path
        self._clock = clock
        self._lock = threading.Lock()
        self.totals = dict.fromkeys(NAMES, 0)
        self._reported = dict.fromkeys(NAMES, 0)
        self._next = clock() + self.EVERY_S
        self.previous = self._load()  # what the last run dropped (reported at start)

    def add(self, name: str, n: int = 1) -> None:
        if n:
            with self._lock:
                self.totals[name] += n

    def total(self) -> int:
        return sum(self.totals.values())

    def tick(self) -> None:
        """Once ``EVERY_S`` has passed: log and save the counts if the last period had drops."""
        if self._clock() < self._next:
            return
        self._next = self._clock() + self.EVERY_S
        with self._lock:
            totals = dict(self.totals)
            recent = {name: totals[name] - self._reported[name] for name in NAMES}
            self._reported = totals
        if any(recent.values()):
            log.warning("dropped in the last %gs: %s (since start: %s)", self.EVERY_S,
                        describe(recent), describe(totals))
            self.save()

    def save(self) -> None:
        """Write the totals to ``path``; a failure is logged, never raised."""
        if self.path is None:
            return
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            write_atomically(self.path, json.dumps(self.totals))
        except OSError as err:
            log.warning("cannot save drop counts to %s: %s", self.path, err)

    def _load(self) -> dict[str, int]:
        """The totals the previous run saved; the file is then cleared (this run starts at 0)."""
        if self.path is None or not self.path.exists():
            return {}
        try:
            data = json.loads(self.path.read_text(encoding="utf-8"))
            previous = {name: int(data.get(name, 0)) for name in NAMES}
        except (OSError, ValueError, TypeError, AttributeError) as err:
            log.warning("ignoring unreadable drop counts in %s: %s", self.path, err)
            previous = {}
        self.save()
        return previous
