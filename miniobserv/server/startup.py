"""What the server's gunicorn entry points share: the configuration, logging, migrations.

``wsgi`` runs in each worker; ``gunicorn_conf`` runs in the master, once, before the workers
fork. When the master has migrated the database it says so in the environment the workers
inherit (``MINIOBSERV_MIGRATED=1``), and the workers skip their own run; without the config
file every worker migrates at start, serialised by the advisory lock, as before.
"""

from __future__ import annotations

import dataclasses
import logging
import sys
from collections.abc import MutableMapping
from typing import NoReturn

from miniobserv.config import ServerConfig
from miniobserv.errors import MiniObservError
from miniobserv.server.storage.base import StorageUnavailable

LOG_FORMAT = "%(asctime)s %(levelname)s [%(process)d] %(name)s: %(message)s"
MIGRATED_ENV = "MINIOBSERV_MIGRATED"
# Set by the shipped config file in the master: it checked the exposure, once for all workers.
EXPOSURE_CHECKED_ENV = "MINIOBSERV_EXPOSURE_CHECKED"

log = logging.getLogger(__name__)


def configure_logging(level: str) -> None:
    """Log to stderr at ``level`` (the root logger; never tokens)."""
    logging.basicConfig(level=level, format=LOG_FORMAT, stream=sys.stderr)
    # Alembic lists every plugin it loads at INFO; the migrations it runs stay visible.
    logging.getLogger("alembic.runtime.plugins").setLevel(logging.WARNING)
    logging.captureWarnings(True)  # e.g. PyJWT's note on short secrets: a log line, once


def config_or_exit(status: int) -> ServerConfig:
    """The server's configuration, or one line on stderr and ``SystemExit(status)``."""
    try:
        return ServerConfig.from_env()
    except MiniObservError as err:
        fail(f"miniobserv: {err}", status)


def fail(message: str, status: int) -> NoReturn:
    print(message, file=sys.stderr, flush=True)
    raise SystemExit(status)


def migrate_before_fork(config: ServerConfig, environ: MutableMapping[str, str]) -> bool:
    """Migrate once, in the gunicorn master; True (and ``MIGRATED_ENV`` set) when done.

    An unreachable database is not fatal: the connection attempt is bounded
    (``migrate.CONNECT_TIMEOUT_S``), a warning is logged, and the workers migrate as they do
    without the config file (readiness answers 503 until the database answers).
    """
    environ.pop(MIGRATED_ENV, None)  # a re-executed master (SIGUSR2) decides afresh
    if not config.auto_migrate:
        return False
    from miniobserv.server.storage import migrate  # alembic and SQLAlchemy: only here

    try:
        migrate.upgrade_or_unavailable(config.database_url)
    except StorageUnavailable as err:
        log.warning("%s at start; the workers will retry the migrations", err)
        return False
    environ[MIGRATED_ENV] = "1"
    log.info("migrations done in the master; workers will not run them")
    return True


def worker_config(config: ServerConfig, environ: MutableMapping[str, str]) -> ServerConfig:
    """``config`` with ``auto_migrate`` off when the master migrated already."""
    if config.auto_migrate and environ.get(MIGRATED_ENV) == "1":
        return dataclasses.replace(config, auto_migrate=False)
    return config
