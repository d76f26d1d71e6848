"""``python -m miniobserv.agent``: run the host agent until SIGTERM or SIGINT (SPEC §1, §6).

Configuration comes from the environment only. A configuration error is one line on stderr
and exit status 2, with no traceback. A clean shutdown, drained or not, exits 0.
"""

from __future__ import annotations

import logging
import os
import signal
import sys
import threading
from collections.abc import Mapping

from miniobserv.agent.runner import Runner
from miniobserv.config import AgentConfig
from miniobserv.errors import ConfigError

log = logging.getLogger("miniobserv.agent")

LOG_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"


def install_stop_handlers(stop: threading.Event, runner: Runner) -> None:
    """SIGTERM/SIGINT set ``stop``; a second signal also cuts the drain short."""

    def handle(signum: int, frame: object) -> None:
        if stop.is_set():
            log.warning("second %s: giving up the drain", signal.Signals(signum).name)
            runner.sender.stop.set()
        stop.set()

    signal.signal(signal.SIGTERM, handle)
    signal.signal(signal.SIGINT, handle)


def run(runner: Runner, stop: threading.Event) -> int:
    """Run ``runner`` until ``stop`` is set, then shut it down; the exit status."""
    runner.start()
    stop.wait()
    log.info("stopping: draining %d queued batches (at most %.0fs)", runner.queue.qsize(),
             runner.shutdown_timeout)
    runner.stop()
    return 0


def main(environ: Mapping[str, str] | None = None) -> int:
    """Parse the environment, start the agent and run it until a stop signal."""
    try:
        config = AgentConfig.from_env(os.environ if environ is None else environ)
        runner = Runner.from_config(config)
    except ConfigError as err:
        print(f"miniobserv agent: configuration error: {err}", file=sys.stderr)
        return 2
    logging.basicConfig(level=config.log_level, format=LOG_FORMAT)
    logging.captureWarnings(True)  # e.g. pyjwt's note on short secrets: one log line
    stop = threading.Event()
    install_stop_handlers(stop, runner)
    return run(runner, stop)


if __name__ == "__main__":
    sys.exit(main())
