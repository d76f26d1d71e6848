"""The Flask application factory (STYLE: composition).

gunicorn imports :mod:`miniobserv.server.wsgi` in each worker, after the fork, so the
database pool opened here belongs to one process; it is closed when that process exits.
"""

from __future__ import annotations

import atexit
import logging
import threading

from flask import Flask, Response, request

from miniobserv.config import ServerConfig
from miniobserv.server import api
from miniobserv.server.alerting.service import AlertingService
from miniobserv.server.api.context import install
from miniobserv.server.api.errors import readiness_unavailable
from miniobserv.server.api.jsonio import OrjsonProvider
from miniobserv.server.storage.base import Repositories, StorageUnavailable
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
    migrations: PendingMigrations | None = None
    if repos is None:
        repos, migrations = open_store(config)
        atexit.register(_close, repos)
    app = Flask(__name__, static_folder=None)  # the dashboard serves its own assets
    if migrations is not None:
        app.before_request(migrations.before_request)
    app.json = OrjsonProvider(app)  # orjson: request and response bodies in C
    app.json.sort_keys = False  # answers keep their documented order
    install(app, config, repos)
    telemetry_for_process(shared=start_background).install(app)
    api.register(app)
    if start_background:
        service = AlertingService(config, repos).start()
        app.extensions[SERVICE_KEY] = service
        atexit.register(service.stop)  # registered after _close: runs before it
    return app


def stop_background(app: Flask, timeout: float | None = None) -> bool:
    """Stop the alerting threads of ``app``, if it started any (before closing its store).

    ``timeout`` (seconds; default ``SHUTDOWN_TIMEOUT``) bounds the wait; False when a thread
    was still busy at the end of it.
    """
    service = app.extensions.get(SERVICE_KEY)
    return service is None or service.stop(timeout)


class PendingMigrations:
    """Migrations that could not run at start because the database was down.

    Every request but ``/healthz`` tries them again first (one thread at a time) and answers
    503 while the database stays unreachable; once they ran, the check is one attribute read.
    """

    def __init__(self, database_url: str) -> None:
        self.database_url = database_url
        self.done = False
        self._lock = threading.Lock()

    def ensure(self) -> None:
        """Run the migrations unless done; raise StorageUnavailable while the database is down.

        One thread tries at a time; the others answer 503 at once instead of queueing behind
        it (each attempt may take ``migrate.CONNECT_TIMEOUT_S``: queued, a request could wait
        many of them, far past REQUEST_TIMEOUT).
        """
        from miniobserv.server.storage import migrate

        if not self._lock.acquire(blocking=False):
            raise StorageUnavailable("database unavailable: migrations being retried")
        try:
            if not self.done:
                migrate.upgrade_or_unavailable(self.database_url)
                self.done = True
                logger.info("database reachable again: migrations done")
        finally:
            self._lock.release()

    def before_request(self) -> Response | tuple[Response, int] | None:
        if self.done or request.endpoint == "health.healthz":
            return None
        try:
            self.ensure()
        except StorageUnavailable:
            if request.endpoint == "health.readyz":
                return readiness_unavailable()
            raise  # the 503 of every other endpoint, Retry-After included
        return None


def open_store(config: ServerConfig) -> tuple[Repositories, PendingMigrations | None]:
    """Open the repositories, migrating first when ``AUTO_MIGRATE`` allows.

    When the database cannot be reached, the process still starts: the returned
    PendingMigrations retries before each request (gunicorn would otherwise stop every
    worker because one failed to boot during an outage).
    """
    # Imported here: handler tests pass fakes and never load a database driver.
    from miniobserv.server import storage
    from miniobserv.server.storage import migrate

    pending = None
    if config.auto_migrate:
        try:
            migrate.upgrade_or_unavailable(config.database_url)
        except StorageUnavailable as err:
            logger.warning("%s at start; migrations will be retried before requests", err)
            pending = PendingMigrations(config.database_url)
    repos: Repositories = storage.open_repositories(config)
    return repos, pending


def _close(repos: Repositories) -> None:
    try:
        repos.close()
    except Exception:  # at exit there is no caller left to tell
        logger.exception("closing the repositories failed")
