"""``python -m miniobserv.agent``: run the host agent until SIGTERM or SIGINT (SPEC §1, §6).

Configuration comes from the environment only. A configuration error is one line on stderr
and exit status 2, with no traceback. A clean shutdown, drained or not, exits 0.
"""

from __future__ import annotations

import logging
import os
import sys
from collections.abc import Mapping

from miniobserv.agent.runner import Runner
from miniobserv.agent.signals import StopSignals, run_interruptibly
from miniobserv.config import AgentConfig
from miniobserv.errors import ConfigError

log = logging.getLogger("miniobserv.agent")

LOG_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"


def run(runner: Runner, signals: StopSignals) -> int:
    """Run ``runner`` until SIGTERM/SIGINT, then drain; a second signal gives up the drain."""
    runner.start()
    name = signals.wait()
    log.info("%s: stopping: draining %d queued batches (at most %gs)", name,
             runner.pending(), runner.shutdown_timeout)
    run_interruptibly(runner.stop, lambda second: give_up_drain(runner, second), signals)
    return 0


def give_up_drain(runner: Runner, signal_name: str) -> None:
    """What a second stop signal does: the senders (metrics and logs) stop retrying at once."""
    log.warning("second %s: giving up the drain", signal_name)
    runner.give_up()


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
    with StopSignals() as signals:
        return run(runner, signals)


if __name__ == "__main__":
    sys.exit(main())
