"""``python -m miniobserv.agent``: run the host agent until SIGTERM or SIGINT (SPEC §1, §6).

Configuration comes from the environment only. A configuration error is one line on stderr
and exit status 2, with no traceback. A clean shutdown, drained or not, exits 0.
"""

from __future__ import annotations

import logging
import os
import sys
import warnings
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from typing import TYPE_CHECKING

from miniobserv.agent.signals import StopSignals, run_interruptibly
from miniobserv.config import AgentConfig
from miniobserv.errors import ConfigError

if TYPE_CHECKING:
    from miniobserv.agent.runner import Runner

log = logging.getLogger("miniobserv.agent")

LOG_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"


# Optional libraries that the agent's dependencies import at start-up if they are installed,
# though the agent never uses them: requests takes charset_normalizer (or chardet) to guess the
# encoding of a response body that names none, and pyjwt takes cryptography for the RSA and EC
# algorithms (tokens here are HS256 only). Both libraries support running without them
# (``requests.compat.chardet is None`` decodes such a body as UTF-8; ``jwt.algorithms.has_crypto``
# is False). Leaving them out saves 2.7 MB of the agent's 31 MB, and about 9 MB more on a host
# whose Python has cryptography installed (BENCHMARKS.md).
UNUSED_OPTIONAL_IMPORTS = ("charset_normalizer", "chardet", "cryptography")
_NO_CHARSET_DETECTION = "Unable to find acceptable character detection dependency"


@contextmanager
def without_modules(names: tuple[str, ...]) -> Iterator[None]:
    """Make ``import name`` fail for ``names`` (not yet imported) inside the block.

    A None entry in ``sys.modules`` is the import system's documented way to make an import
    raise ModuleNotFoundError. The entries are removed on the way out, so a later import
    elsewhere in the process behaves normally.
    """
    blocked = [name for name in names if name not in sys.modules]
    for name in blocked:
        sys.modules[name] = None  # type: ignore[assignment]
    try:
        yield
    finally:
        for name in blocked:
            if sys.modules.get(name, False) is None:
                del sys.modules[name]


def load_runner() -> type[Runner]:
    """Import the agent (and with it requests and pyjwt) without their unused optional parts."""
    with without_modules(UNUSED_OPTIONAL_IMPORTS), warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=_NO_CHARSET_DETECTION)
        from miniobserv.agent.runner import Runner
    return Runner


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
        runner = load_runner().from_config(config)
    except ConfigError as err:
        print(f"miniobserv agent: configuration error: {err}", file=sys.stderr)
        return 2
    logging.basicConfig(level=config.log_level, format=LOG_FORMAT)
    logging.captureWarnings(True)  # e.g. pyjwt's note on short secrets: one log line
    with StopSignals() as signals:
        return run(runner, signals)


if __name__ == "__main__":
    sys.exit(main())
