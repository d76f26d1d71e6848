"""The WSGI entry point: ``gunicorn -c python:miniobserv.server.gunicorn_conf 'miniobserv.server.wsgi:app'``.

Reads the environment, configures logging and builds the app at import, once per gunicorn
worker (do not preload: the database pool must be opened after the fork). With the shipped
config file (:mod:`miniobserv.server.gunicorn_conf`) the master has checked the configuration
and run the migrations before the fork, so a worker neither fails on a bad variable nor
migrates again. Without it (``gunicorn 'miniobserv.server.wsgi:app'``) each worker migrates
at start, as before, and a configuration error is printed by the first failing worker of the
master, which exits with gunicorn's "app failed to load", so the master stops instead of
respawning (:func:`fail_once`).
"""

from __future__ import annotations

import os
import signal
import sys
import time
from typing import NoReturn

from flask import Flask

from miniobserv.config import ServerConfig
from miniobserv.errors import MiniObservError
from miniobserv.server.app import create_app
from miniobserv.server.exposure import gunicorn_binds, warn_if_exposed
from miniobserv.server.masterfiles import master_path, remove_stale
from miniobserv.server.startup import EXPOSURE_CHECKED_ENV, configure_logging, fail, worker_config

APP_LOAD_ERROR = 4  # gunicorn.arbiter.Arbiter.APP_LOAD_ERROR
FOLLOWER_WAIT_S = 1.0
LOAD_ERROR_PREFIX = "miniobserv-load-error-"
FOLLOWER_EXIT = 1  # any status but gunicorn's 3 and 4, which would halt it a second time


def load() -> Flask:
    """Build the app from the environment, or exit with one line on stderr."""
    try:
        config = worker_config(ServerConfig.from_env(), os.environ)
        configure_logging(config.log_level)
        app = create_app(config, start_background=True)
        if os.environ.get(EXPOSURE_CHECKED_ENV) != "1":  # without the config file: per worker
            warn_if_exposed(config, gunicorn_binds())
        return app
    except MiniObservError as err:
        fail_once(f"miniobserv: {err}")


def fail_once(message: str) -> NoReturn:
    """Print ``message`` once per gunicorn master and exit with its "app failed to load".

    Only reached without the shipped config file, whose master checks the configuration
    before forking. When several workers exit with that status at once, gunicorn (27) raises
    a second HaltServer while stopping and prints a traceback. So only the first failing
    worker of a master reports and exits with that status; the others wait for the master's
    SIGTERM, which ends them quietly, and exit with FOLLOWER_EXIT if it came too early.
    """
    if is_first_failure():
        fail(message, APP_LOAD_ERROR)
    signal.signal(signal.SIGTERM, signal.SIG_DFL)  # gunicorn's handler would only flag it
    time.sleep(FOLLOWER_WAIT_S)
    raise SystemExit(FOLLOWER_EXIT)


def is_first_failure() -> bool:
    """True outside gunicorn, and in the first worker of a gunicorn master to ask."""
    if "gunicorn.arbiter" not in sys.modules:  # imported directly, not by a gunicorn worker
        return True
    remove_stale(LOAD_ERROR_PREFIX)  # the markers of masters that have exited
    marker = master_path(LOAD_ERROR_PREFIX, os.getppid())
    try:
        os.close(os.open(marker, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o600))
    except FileExistsError:
        return False
    except OSError:  # no writable temp dir: report from every worker rather than none
        return True
    return True


app = load()
