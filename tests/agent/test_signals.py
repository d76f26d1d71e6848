"""Stop signals through a wakeup pipe: no lock is ever taken inside a signal handler."""

from __future__ import annotations

import os
import signal
import threading

from miniobserv.agent.signals import StopSignals, run_interruptibly


def test_a_stop_signal_is_read_from_the_pipe():
    with StopSignals() as signals:
        assert signals.wait(0.01) is None
        os.kill(os.getpid(), signal.SIGTERM)
        assert signals.wait() == "SIGTERM"
        os.kill(os.getpid(), signal.SIGINT)  # no KeyboardInterrupt while caught
        assert signals.wait() == "SIGINT"


def test_previous_handlers_are_restored():
    before = signal.getsignal(signal.SIGTERM), signal.getsignal(signal.SIGINT)
    with StopSignals():
        assert signal.getsignal(signal.SIGTERM) not in before
    assert (signal.getsignal(signal.SIGTERM), signal.getsignal(signal.SIGINT)) == before


def test_a_signal_during_the_work_calls_back_and_the_work_can_end():
    release = threading.Event()
    seen: list[str] = []

    def on_signal(name: str) -> None:
        seen.append(name)
        release.set()

    def work() -> None:
        os.kill(os.getpid(), signal.SIGTERM)
        release.wait(30)

    with StopSignals() as signals:
        run_interruptibly(work, on_signal, signals, poll=0.01)
    assert seen == ["SIGTERM"]
    assert release.is_set()
