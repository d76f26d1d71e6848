"""The WSGI entry point: ``gunicorn -c python:miniobserv.server.gunicorn_conf 'miniobserv.server.wsgi:app'``.

Reads the environment, configures logging and builds the app at import, once per gunicorn
worker (do not preload: the database pool must be opened after the fork). With the shipped
config file (:mod:`miniobserv.server.gunicorn_conf`) the master has checked the configuration
and run the migrations before the fork, so a worker neither fails on a bad variable nor
migrates again. Without it (``gunicorn 'miniobserv.server.wsgi:app'``) each worker migrates
at start, as before, and a configuration error prints one line per worker and exits with
gunicorn's "app failed to load", so the master stops instead of respawning.
"""

from __future__ import annotations

import os

from flask import Flask

from miniobserv.errors import MiniObservError
from miniobserv.server.app import create_app
from miniobserv.server.startup import config_or_exit, configure_logging, fail, worker_config

APP_LOAD_ERROR = 4  # gunicorn.arbiter.Arbiter.APP_LOAD_ERROR


def load() -> Flask:
    """Build the app from the environment, or exit with one line on stderr."""
    config = worker_config(config_or_exit(APP_LOAD_ERROR), os.environ)
    configure_logging(config.log_level)
    try:
        return create_app(config, start_background=True)
    except MiniObservError as err:
        fail(f"miniobserv: {err}", APP_LOAD_ERROR)


app = load()
