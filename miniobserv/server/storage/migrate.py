"""Run the Alembic migrations from code (``miniobserv migrate``, the server's auto-migrate).

The migrations live in the repository's top-level ``alembic/`` directory next to
``alembic.ini``; ``alembic upgrade head`` from a shell reaches the same code. Several
processes may call :func:`upgrade` at once (gunicorn workers): ``alembic/env.py`` serialises
them with a PostgreSQL advisory lock, or ``BEGIN IMMEDIATE`` on SQLite.
"""

from __future__ import annotations

import logging
import sys
from pathlib import Path
from typing import Any

import alembic.command
import sqlalchemy as sa
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy.pool import NullPool

import miniobserv
from miniobserv.config import POSTGRES_URL_PREFIXES
from miniobserv.server.storage.base import StorageUnavailable

log = logging.getLogger(__name__)

DEFAULT_DATABASE_URL = "sqlite:///miniobserv.db"
# pg_advisory_lock key shared by every process migrating one database ("miniobs" in ASCII).
MIGRATION_LOCK_KEY = 0x6D696E696F6273
# How long one DDL statement may wait for a table lock held by a running query.
LOCK_TIMEOUT = "30s"
SQLITE_BUSY_TIMEOUT_S = 60.0
# Seconds one PostgreSQL connection attempt of a migration may take (libpq waits for the OS's
# TCP timeout, minutes, without it): an unreachable database fails fast and start goes on.
CONNECT_TIMEOUT_S = 5


def migrations_root(source: Path, prefix: Path) -> Path:
    """Where ``alembic/`` and ``alembic.ini`` are: the source tree ``source`` (editable
    installs, the Docker image) or, for a regular ``pip install``, the copy that setup.cfg's
    data_files put in ``<prefix>/share/miniobserv``."""
    installed = prefix / "share" / "miniobserv"
    if (source / "alembic" / "env.py").is_file():
        return source
    return installed if (installed / "alembic" / "env.py").is_file() else source


ROOT = migrations_root(Path(miniobserv.__file__).resolve().parent.parent, Path(sys.prefix))
SCRIPT_LOCATION = ROOT / "alembic"
INI_PATH = ROOT / "alembic.ini"


def sqlalchemy_url(database_url: str) -> str:
    """Translate a ``DATABASE_URL`` into SQLAlchemy's spelling (psycopg 3 for PostgreSQL)."""
    for prefix in POSTGRES_URL_PREFIXES:
        if database_url.startswith(prefix):
            return "postgresql+psycopg://" + database_url[len(prefix):]
    return database_url


def alembic_config(database_url: str, *, timescaledb: bool = True) -> Config:
    """An Alembic Config for ``database_url`` pointing at the repository's migrations.

    ``timescaledb=False`` makes the migrations leave TimescaleDB alone even where the
    extension is available (plain-PostgreSQL behaviour; the tests use it).
    """
    if not SCRIPT_LOCATION.is_dir():
        raise FileNotFoundError(f"Alembic migrations not found at {SCRIPT_LOCATION}")
    cfg = Config(str(INI_PATH) if INI_PATH.is_file() else None)
    cfg.set_main_option("script_location", str(SCRIPT_LOCATION))
    cfg.attributes["database_url"] = database_url
    cfg.attributes["timescaledb"] = timescaledb
    return cfg


def upgrade(database_url: str, revision: str = "head", *, timescaledb: bool = True) -> None:
    """Migrate the database up to ``revision``; safe to call from several processes at once.

    A database already at head returns after one read, without waiting for the migration
    lock (every gunicorn worker calls this at start).
    """
    cfg = alembic_config(database_url, timescaledb=timescaledb)
    if revision == "head" and current_revision(database_url) == \
            ScriptDirectory.from_config(cfg).get_current_head():
        log.debug("the database is at the newest revision already")
        return
    log.info("migrating the database up to %s", revision)
    alembic.command.upgrade(cfg, revision)


def downgrade(database_url: str, revision: str) -> None:
    """Migrate the database down to ``revision`` (``"base"`` removes every table)."""
    log.info("migrating the database down to %s", revision)
    alembic.command.downgrade(alembic_config(database_url), revision)


def head_revision() -> str | None:
    """The newest revision of the migrations shipped with this code."""
    return ScriptDirectory.from_config(alembic_config("sqlite:///unused.db")).get_current_head()


def connect_args(url: str) -> dict[str, Any]:
    """The DBAPI arguments of a migration connection to ``url`` (SQLAlchemy's spelling):
    ``connect_timeout`` on PostgreSQL unless the URL sets its own, busy timeout on SQLite."""
    if url.startswith("sqlite"):
        return {"timeout": SQLITE_BUSY_TIMEOUT_S}
    return {} if "connect_timeout=" in url else {"connect_timeout": CONNECT_TIMEOUT_S}


def current_revision(database_url: str) -> str | None:
    """The revision the database is at, or None when it was never migrated."""
    url = sqlalchemy_url(database_url)
    engine = sa.create_engine(url, poolclass=NullPool, connect_args=connect_args(url))
    try:
        with engine.connect() as connection:
            return MigrationContext.configure(connection).get_current_revision()
    finally:
        engine.dispose()


def upgrade_or_unavailable(database_url: str, revision: str = "head") -> None:
    """:func:`upgrade`, raising StorageUnavailable when the database cannot be reached.

    A worker that starts during a database outage then serves 503s and retries, instead of
    failing to boot (which makes gunicorn stop the whole server).
    """
    try:
        upgrade(database_url, revision)
    except sa.exc.OperationalError as err:  # refused, timed out, shutting down, locked
        raise StorageUnavailable(f"database unavailable: {type(err.orig).__name__}") from err
