"""The WSGI entry point: ``gunicorn 'miniobserv.server.wsgi:app'``.

Reads the environment, configures logging and builds the app at import, once per gunicorn
worker (do not preload: the database pool must be opened after the fork). A configuration
error prints one line naming the variable and exits non-zero without a traceback; the exit
status is gunicorn's "app failed to load", so the master stops instead of respawning.
"""

from __future__ import annotations

import logging
import sys

from flask import Flask

from miniobserv.config import ServerConfig
from miniobserv.errors import MiniObservError
from miniobserv.server.app import create_app

APP_LOAD_ERROR = 4  # gunicorn.arbiter.Arbiter.APP_LOAD_ERROR
LOG_FORMAT = "%(asctime)s %(levelname)s [%(process)d] %(name)s: %(message)s"


def configure_logging(level: str) -> None:
    """Log to stderr at ``level`` (the root logger; never tokens)."""
    logging.basicConfig(level=level, format=LOG_FORMAT, stream=sys.stderr)


def load() -> Flask:
    """Build the app from the environment, or exit with one line on stderr."""
    try:
        config = ServerConfig.from_env()
        configure_logging(config.log_level)
        return create_app(config)
    except MiniObservError as err:
        print(f"miniobserv: {err}", file=sys.stderr, flush=True)
        raise SystemExit(APP_LOAD_ERROR) from None


app = load()
