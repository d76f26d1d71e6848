"""SIGTERM and SIGINT delivered through a pipe, for entry points that must stop cleanly.

A Python signal handler runs in the main thread between two bytecodes, possibly while that
thread holds a lock, so a handler that sets a ``threading.Event`` can deadlock (the event's
lock is not reentrant). Here the handler does nothing: ``signal.set_wakeup_fd`` makes the C
level write each signal's number to a pipe, and :meth:`StopSignals.wait` reads it outside
any handler. Only entry points use this (the main thread must create it).
"""

from __future__ import annotations

import os
import select
import signal
import threading
from collections.abc import Callable
from types import FrameType

STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT)


def _ignore(signum: int, frame: FrameType | None) -> None:
    """Nothing to do here: the wakeup pipe carries the signal to :meth:`StopSignals.wait`."""


class StopSignals:
    """Catches SIGTERM/SIGINT from construction until :meth:`close`; use in the main thread."""

    def __init__(self) -> None:
        self._read, self._write = os.pipe()
        os.set_blocking(self._read, False)
        os.set_blocking(self._write, False)
        self._previous_fd = signal.set_wakeup_fd(self._write, warn_on_full_buffer=False)
        self._previous = {sig: signal.signal(sig, _ignore) for sig in STOP_SIGNALS}

    def wait(self, timeout: float | None = None) -> str | None:
        """The name of the next stop signal, or None after ``timeout`` seconds."""
        while True:
            ready, _, _ = select.select([self._read], [], [], timeout)
            if not ready:
                return None
            for number in os.read(self._read, 64):
                if number in STOP_SIGNALS:
                    return signal.Signals(number).name
            if timeout is not None:
                return None  # only other signals arrived; the caller polls again

    def close(self) -> None:
        """Restore the previous handlers and wakeup fd; close the pipe."""
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)
        signal.set_wakeup_fd(self._previous_fd)
        os.close(self._read)
        os.close(self._write)

    def __enter__(self) -> StopSignals:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def run_interruptibly(work: Callable[[], object], on_signal: Callable[[str], None],
                      signals: StopSignals, poll: float = 0.2) -> None:
    """Run ``work`` in a thread until it ends; each stop signal meanwhile calls ``on_signal``.

    For a shutdown that a second Ctrl-C should cut short.
    """
    worker = threading.Thread(target=work, name="shutdown")
    worker.start()
    while worker.is_alive():
        name = signals.wait(poll)
        if name is not None:
            on_signal(name)
    worker.join()
