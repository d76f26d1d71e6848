"""Alembic environment for MiniObserv: one code path for the CLI and the server (SPEC §7).

The database URL comes from ``config.attributes["database_url"]`` (set by
``miniobserv.server.storage.migrate``), else ``-x url=...``, else the ``DATABASE_URL``
environment variable, else the server's default ``sqlite:///miniobserv.db``.

Every gunicorn worker migrates on start, so runs are serialised: on PostgreSQL by a
session-level advisory lock (with a ``lock_timeout`` so DDL never waits forever behind a
long query), on SQLite by ``BEGIN IMMEDIATE``, which takes the write lock before Alembic
reads the current revision; a SQLite file is left in WAL mode, so the server's connections
never have to switch it while others write.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterator
from contextlib import contextmanager
from functools import partial
from logging.config import fileConfig
from typing import Any

import sqlalchemy as sa
from alembic import context
from sqlalchemy.pool import NullPool

from miniobserv.server.storage.migrate import (
    DEFAULT_DATABASE_URL,
    LOCK_TIMEOUT,
    MIGRATION_LOCK_KEY,
    connect_args,
    sqlalchemy_url,
)
from miniobserv.server.storage.sqlite.db import enable_wal
from miniobserv.server.storage.tables import include_object, metadata

config = context.config
log = logging.getLogger("alembic.env")

# Only the alembic command line configures logging; the server configures its own.
if config.config_file_name is not None and "database_url" not in config.attributes:
    fileConfig(config.config_file_name, disable_existing_loggers=False)


def database_url() -> str:
    """The URL to migrate, from the caller, ``-x url=``, ``DATABASE_URL`` or the default."""
    return (config.attributes.get("database_url")
            or context.get_x_argument(as_dictionary=True).get("url")
            or os.environ.get("DATABASE_URL")
            or DEFAULT_DATABASE_URL)


def make_engine(url: str) -> sa.Engine:
    """A NullPool engine; on SQLite every transaction starts with ``BEGIN IMMEDIATE``."""
    engine = sa.create_engine(url, poolclass=NullPool, connect_args=connect_args(url))
    if not url.startswith("sqlite"):
        return engine

    # pysqlite's own transaction handling defers BEGIN and commits before DDL; take it over
    # (SQLAlchemy's documented recipe) so a migration is one atomic, serialised transaction.
    @sa.event.listens_for(engine, "connect")
    def _no_implicit_transactions(dbapi_connection: Any, _record: Any) -> None:
        dbapi_connection.isolation_level = None

    @sa.event.listens_for(engine, "begin")
    def _begin_immediate(connection: sa.Connection) -> None:
        connection.exec_driver_sql("BEGIN IMMEDIATE")

    return engine


@contextmanager
def serialised(connection: sa.Connection) -> Iterator[None]:
    """Hold the PostgreSQL migration advisory lock for the duration (no-op elsewhere)."""
    if connection.dialect.name != "postgresql":
        yield
        return
    connection.execute(sa.text("SELECT pg_advisory_lock(:key)"), {"key": MIGRATION_LOCK_KEY})
    connection.exec_driver_sql(f"SET lock_timeout = '{LOCK_TIMEOUT}'")  # a constant
    connection.commit()
    try:
        yield
    finally:
        try:
            connection.rollback()
            connection.execute(sa.text("SELECT pg_advisory_unlock(:key)"),
                               {"key": MIGRATION_LOCK_KEY})
            connection.commit()
        except sa.exc.DBAPIError:  # the connection is gone, and its session lock with it
            log.debug("could not release the migration lock explicitly", exc_info=True)


def run_migrations_offline() -> None:
    """Emit SQL to stdout (``alembic upgrade head --sql``); TimescaleDB steps are skipped."""
    url = sqlalchemy_url(database_url())
    context.configure(url=url, target_metadata=metadata, literal_binds=True,
                      render_as_batch=url.startswith("sqlite"),
                      include_object=partial(include_object,
                                             dialect=sa.make_url(url).get_backend_name()))
    with context.begin_transaction():
        context.run_migrations()


def run_migrations_online() -> None:
    """Connect, take the migration lock and run every pending migration in one transaction."""
    engine = make_engine(sqlalchemy_url(database_url()))
    try:
        with engine.connect() as connection, serialised(connection):
            is_sqlite = connection.dialect.name == "sqlite"
            if is_sqlite:
                # Alembic gives dialects without transactional DDL one transaction per
                # migration, so reading the version and running the steps would not share
                # the write lock (two processes could both run 0003). One outer
                # BEGIN IMMEDIATE, which Alembic then leaves alone, makes them share it.
                connection.begin()
            context.configure(connection=connection, target_metadata=metadata,
                              render_as_batch=is_sqlite, compare_type=True,
                              include_object=partial(include_object,
                                                     dialect=connection.dialect.name))
            with context.begin_transaction():
                context.run_migrations()
            if is_sqlite:
                connection.commit()
            raw = connection.connection.driver_connection
            if is_sqlite and raw is not None:
                enable_wal(raw)
    finally:
        engine.dispose()


if context.is_offline_mode():
    run_migrations_offline()
else:
    run_migrations_online()
