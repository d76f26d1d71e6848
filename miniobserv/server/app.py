"""The Flask application factory (STYLE: composition).

gunicorn imports :mod:`miniobserv.server.wsgi` in each worker, after the fork, so the
database pool opened here belongs to one process; it is closed when that process exits.
"""

from __future__ import annotations

import atexit
import logging

from flask import Flask

from miniobserv.config import ServerConfig
from miniobserv.server import api
from miniobserv.server.alerting.service import AlertingService
from miniobserv.server.api.context import install
from miniobserv.server.storage.base import Repositories
from miniobserv.server.telemetry import telemetry_for_process

SERVICE_KEY = "miniobserv.alerting"

logger = logging.getLogger(__name__)


def create_app(config: ServerConfig | None = None,
               repos: Repositories | None = None, *, start_background: bool = False) -> Flask:
    """Build the app; without ``repos``, migrate (unless disabled) and open the store.

    Repositories passed in stay the caller's to close; those opened here are closed at
    process exit. ``start_background`` (the WSGI entry point, ``serve`` and the demo) starts
    this process's alerting threads, stopped at exit, and in a gunicorn worker shares the
    request counters with the other workers. Raises ConfigError when ``config`` is None and
    the environment is invalid.
    """
    config = config if config is not None else ServerConfig.from_env()
    if repos is None:
        repos = open_store(config)
        atexit.register(_close, repos)
    app = Flask(__name__, static_folder=None)  # the dashboard serves its own assets
    app.json.sort_keys = False  # type: ignore[attr-defined]  # answers keep their documented order
    install(app, config, repos)
    telemetry_for_process(shared=start_background).install(app)
    api.register(app)
    if start_background:
        service = AlertingService(config, repos).start()
        app.extensions[SERVICE_KEY] = service
        atexit.register(service.stop)  # registered after _close: runs before it
    return app


def stop_background(app: Flask) -> None:
    """Stop the alerting threads of ``app``, if it started any (before closing its store)."""
    service = app.extensions.get(SERVICE_KEY)
    if service is not None:
        service.stop()


def open_store(config: ServerConfig) -> Repositories:
    """Run the migrations when ``AUTO_MIGRATE`` allows, then open the repositories."""
    # Imported here: handler tests pass fakes and never load a database driver.
    from miniobserv.server import storage
    from miniobserv.server.storage import migrate

    if config.auto_migrate:
        migrate.upgrade(config.database_url)
    repos: Repositories = storage.open_repositories(config)
    return repos


def _close(repos: Repositories) -> None:
    try:
        repos.close()
    except Exception:  # at exit there is no caller left to tell
        logger.exception("closing the repositories failed")
