"""Storage: repositories behind the protocols of :mod:`.base`, chosen by ``DATABASE_URL``.

``open_repositories`` must run after gunicorn's fork (the app factory calls it in each
worker): PostgreSQL's connection pool is opened there, and closed by ``close()``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from miniobserv.config import ServerConfig, is_postgres_url
from miniobserv.server.storage.base import Repositories
from miniobserv.server.storage.series import Limits

if TYPE_CHECKING:
    from miniobserv.server.storage.postgres import PostgresRepositories
    from miniobserv.server.storage.sqlite import SQLiteRepositories

__all__ = ["is_postgres_url", "open_repositories", "sync_retention"]


def open_repositories(config: ServerConfig) -> PostgresRepositories | SQLiteRepositories:
    """Open the store of ``config.database_url`` (``postgresql://``, ``sqlite:///path``).

    Queries are cut after ``REQUEST_TIMEOUT``: PostgreSQL's ``statement_timeout``, a
    progress handler on SQLite. Ingest enforces ``MAX_SERIES_PER_HOST`` and
    ``MAX_HOSTS``.
    Does not wait for the database: a PostgreSQL server that is down makes queries raise
    StorageUnavailable (and ``/readyz`` answer 503) until it is back. Raises ValueError for
    any other kind of URL.
    """
    url = config.database_url
    limits = Limits(config.max_series_per_host, config.max_hosts)
    if is_postgres_url(url):
        from miniobserv.server.storage.postgres import PostgresRepositories

        return PostgresRepositories(url, min_size=config.db_pool_min,
                                    max_size=config.db_pool_max,
                                    statement_timeout=config.request_timeout,
                                    limits=limits).open()
    if url.startswith("sqlite:///"):
        from miniobserv.server.storage.sqlite import SQLiteRepositories

        return SQLiteRepositories(url, statement_timeout=config.request_timeout,
                                  limits=limits)
    raise ValueError("DATABASE_URL must start with postgresql://, postgres:// or sqlite:///")


def sync_retention(repos: Repositories, config: ServerConfig) -> bool:
    """Make TimescaleDB's retention policies match ``METRICS_RETENTION`` and
    ``LOGS_RETENTION``; call once at start.

    True when TimescaleDB policies now enforce both; False on plain PostgreSQL, SQLite or
    fakes, where the maintenance job enforces retention. Raises StorageUnavailable when the
    database cannot be reached.
    """
    metrics = repos.sync_retention(config.metrics_retention)
    return repos.sync_retention(config.logs_retention, table="logs") and metrics
