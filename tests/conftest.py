"""The databases of the test suite: a real PostgreSQL server and SQLite files (SPEC §8).

``postgres_url`` (session) is ``TEST_DATABASE_URL`` when set (a ``postgresql://`` URL of a
role allowed to CREATE DATABASE); otherwise the run starts a throwaway cluster in a
temporary directory, listening on 127.0.0.1 and a free port, and deletes it at the end.
When the server has the ``timescaledb`` extension files, the cluster preloads it, so the
TimescaleDB paths are tested too (``MINIOBSERV_TEST_TIMESCALEDB=off`` starts it without).

PostgreSQL refuses to run as root, so as root ``initdb``/``pg_ctl`` run as the ``postgres``
system user. That is also why pytest-postgresql's ``postgresql_proc`` is not used: it runs
``initdb`` as the current user.
"""

from __future__ import annotations

import os
import pwd
import secrets
import shlex
import shutil
import socket
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import psycopg
import pytest
from psycopg import sql

from miniobserv.server.storage import migrate
from tests.processes import Gunicorn

SETUP_HINT = ("run the README's test command (./scripts/test), which installs Debian's "
              "postgresql, or set TEST_DATABASE_URL=postgresql://user@host:port/db")
START_TIMEOUT_S = 60


def find_pg_bindir() -> Path | None:
    """The directory holding initdb and pg_ctl: PATH, ``pg_config --bindir``, Debian's."""
    candidates = []
    initdb = shutil.which("initdb")
    if initdb:
        candidates.append(Path(initdb).resolve().parent)
    pg_config = shutil.which("pg_config")
    if pg_config:
        out = subprocess.run([pg_config, "--bindir"], capture_output=True, text=True)
        candidates.append(Path(out.stdout.strip()))
    candidates += sorted(Path("/usr/lib/postgresql").glob("*/bin"),
                         key=lambda path: _version_key(path.parent.name), reverse=True)
    for bindir in candidates:
        if (bindir / "initdb").is_file() and (bindir / "pg_ctl").is_file():
            return bindir
    return None


def _version_key(text: str) -> tuple[int, ...]:
    return tuple(int(part) for part in text.split(".") if part.isdigit())


def has_timescaledb_files(bindir: Path) -> bool:
    """True when the server of ``bindir`` has the timescaledb extension installed."""
    pg_config = bindir / "pg_config"
    if pg_config.is_file():
        out = subprocess.run([str(pg_config), "--sharedir", "--pkglibdir"],
                             capture_output=True, text=True).stdout.split()
        sharedir, pkglibdir = (Path(out[0]), Path(out[1])) if len(out) == 2 else (None, None)
    else:  # Debian's layout: /usr/lib/postgresql/15/bin -> /usr/share/postgresql/15
        sharedir = Path("/usr/share/postgresql") / bindir.parent.name
        pkglibdir = bindir.parent / "lib"
    return sharedir is not None and pkglibdir is not None and \
        (sharedir / "extension" / "timescaledb.control").is_file() and \
        (pkglibdir / "timescaledb.so").is_file()


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def with_database(url: str, dbname: str) -> str:
    """``url`` with its database replaced by ``dbname``."""
    parts = urlsplit(url)
    return urlunsplit(parts._replace(path="/" + dbname))


class ThrowawayCluster:
    """A PostgreSQL cluster in a temporary directory, owned by ``postgres`` when we are root."""

    # Speed over durability: fine for tests that never crash the server, where a commit is
    # on disk once the process has written it. ``durable=True`` keeps PostgreSQL's defaults,
    # for tests that kill it (``stop_server("immediate")``): with synchronous_commit=off such
    # a crash loses transactions already acknowledged (seen: 3 acknowledged batches of 32).
    FAST_OPTIONS = ("-c fsync=off", "-c synchronous_commit=off", "-c full_page_writes=off")

    def __init__(self, bindir: Path, *, timescaledb: bool, durable: bool = False) -> None:
        self.bindir = bindir
        self.timescaledb = timescaledb
        self.durable = durable
        self.root = Path(tempfile.mkdtemp(prefix="miniobserv-pg-"))
        self.data = self.root / "data"
        self.log = self.root / "postgres.log"
        self.port = 0
        self._watchdog: subprocess.Popen[bytes] | None = None

    def _command(self, *args: str) -> list[str]:
        cmd = [str(self.bindir / args[0]), *args[1:]]
        return ["runuser", "-u", "postgres", "--", *cmd] if os.geteuid() == 0 else cmd

    def _run(self, *args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(self._command(*args), cwd=self.root, capture_output=True,
                              text=True, timeout=START_TIMEOUT_S + 30)

    def _watch(self) -> None:
        """Stop and delete the cluster if this process dies without its teardown (SIGKILL,
        a broken pipe...): a detached shell polls our pid. ``destroy`` ends it."""
        stop = " ".join(shlex.quote(arg) for arg in self._command(
            "pg_ctl", "stop", "-D", str(self.data), "-m", "immediate", "-w"))
        script = (f"while kill -0 {os.getpid()} 2>/dev/null; do sleep 1; done; "
                  f"{stop} >/dev/null 2>&1; rm -rf {shlex.quote(str(self.root))}")
        self._watchdog = subprocess.Popen(
            ["sh", "-c", script], start_new_session=True, stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)

    def start(self) -> str:
        """initdb and start; return the superuser URL of the ``postgres`` database."""
        if os.geteuid() == 0:
            try:
                owner = pwd.getpwnam("postgres")
            except KeyError:
                pytest.fail(f"no 'postgres' system user to run PostgreSQL as: {SETUP_HINT}",
                            pytrace=False)
            os.chown(self.root, owner.pw_uid, owner.pw_gid)
        self._check(self._run("initdb", "-D", str(self.data), "-U", "postgres", "-A", "trust",
                              "-E", "UTF8", "--no-locale", "--no-sync"), "initdb")
        for _ in range(3):  # another process may take the free port first
            self.port = free_port()
            result = self._pg_ctl_start()
            if result.returncode == 0:
                self._watch()
                return f"postgresql://postgres@127.0.0.1:{self.port}/postgres"
        self._check(result, "pg_ctl start")
        raise AssertionError("unreachable")

    def _pg_ctl_start(self) -> subprocess.CompletedProcess[str]:
        return self._run("pg_ctl", "start", "-D", str(self.data), "-l", str(self.log),
                         "-w", "-t", str(START_TIMEOUT_S), "-o", self._options())

    STOP_MODES = ("smart", "fast", "immediate")

    def stop_server(self, mode: str = "fast") -> None:
        """Stop the server, keeping its files (for outage tests).

        ``mode`` is pg_ctl's: ``fast`` ends every session (their transactions roll back) and
        shuts down cleanly; ``immediate`` kills the server processes at once, as a crash does
        (the next start runs crash recovery); ``smart`` waits for the sessions to end.
        """
        if mode not in self.STOP_MODES:
            raise ValueError(f"pg_ctl stop mode must be one of {self.STOP_MODES}: {mode!r}")
        self._check(self._run("pg_ctl", "stop", "-D", str(self.data), "-m", mode, "-w",
                              "-t", str(START_TIMEOUT_S)), f"pg_ctl stop -m {mode}")

    def start_server(self) -> None:
        """Start the stopped server again on the same port (after crash recovery, if any)."""
        self._check(self._pg_ctl_start(), "pg_ctl start")

    def is_running(self) -> bool:
        """True while ``pg_ctl status`` finds the server running."""
        return self._run("pg_ctl", "status", "-D", str(self.data)).returncode == 0

    def _options(self) -> str:
        options = [f"-p {self.port}", "-c listen_addresses=127.0.0.1", f"-k {self.root}",
                   *(() if self.durable else self.FAST_OPTIONS), "-c max_connections=200"]
        if self.timescaledb:
            options += ["-c shared_preload_libraries=timescaledb",
                        "-c timescaledb.telemetry_level=off"]
        return " ".join(options)

    def _check(self, result: subprocess.CompletedProcess[str], what: str) -> None:
        if result.returncode != 0:
            server_log = self.log.read_text(errors="replace")[-2000:] if self.log.exists() else ""
            pytest.fail(f"{what} failed ({result.returncode}): {result.stderr.strip()}\n"
                        f"{server_log}", pytrace=False)

    def destroy(self) -> None:
        """Stop the server at once (nothing in it is worth keeping) and delete the files."""
        if (self.data / "postmaster.pid").exists():
            self._run("pg_ctl", "stop", "-D", str(self.data), "-m", "immediate", "-w")
        shutil.rmtree(self.root, ignore_errors=True)
        if self._watchdog is not None:
            self._watchdog.kill()
            self._watchdog.wait()


@pytest.fixture(scope="session")
def postgres_url() -> Iterator[str]:
    """The URL of a running PostgreSQL server (superuser of the throwaway cluster)."""
    url = os.environ.get("TEST_DATABASE_URL", "").strip()
    if url:
        yield url
        return
    bindir = find_pg_bindir()
    if bindir is None:
        pytest.fail(f"PostgreSQL's initdb/pg_ctl were not found: {SETUP_HINT}", pytrace=False)
    wanted = os.environ.get("MINIOBSERV_TEST_TIMESCALEDB", "on").lower() not in ("0", "off")
    cluster = ThrowawayCluster(bindir, timescaledb=wanted and has_timescaledb_files(bindir))
    try:
        yield cluster.start()
    finally:
        cluster.destroy()


class PostgresDatabases:
    """Creates databases with random names on the test server and drops them again."""

    def __init__(self, server_url: str) -> None:
        self.server_url = server_url
        self.created: list[str] = []

    def _admin(self, statement: sql.Composed) -> None:
        with psycopg.connect(self.server_url, autocommit=True) as conn:
            conn.execute(statement)

    def create(self, *, migrated: bool = True, timescaledb: bool = True) -> str:
        """A new empty database's URL; migrated to head unless ``migrated=False``.

        ``timescaledb=False`` migrates it as plain PostgreSQL even where TimescaleDB exists.
        """
        name = f"miniobserv_test_{secrets.token_hex(6)}"
        self._admin(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
        self.created.append(name)
        url = with_database(self.server_url, name)
        if migrated:
            migrate.upgrade(url, timescaledb=timescaledb)
        return url

    def drop(self, url: str) -> None:
        name = urlsplit(url).path.lstrip("/")
        # FORCE: TimescaleDB's job scheduler keeps a connection to every database using it.
        self._admin(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(
            sql.Identifier(name)))
        if name in self.created:
            self.created.remove(name)

    def drop_all(self) -> None:
        for name in list(self.created):
            self.drop(with_database(self.server_url, name))


@pytest.fixture(scope="session")
def postgres_databases(postgres_url: str) -> Iterator[PostgresDatabases]:
    """Factory of fresh databases on the test server; leftovers are dropped at the end."""
    databases = PostgresDatabases(postgres_url)
    try:
        yield databases
    finally:
        databases.drop_all()


@pytest.fixture
def fresh_postgres_url(postgres_databases: PostgresDatabases) -> Iterator[str]:
    """A database of this test alone, migrated to head, dropped afterwards."""
    url = postgres_databases.create()
    try:
        yield url
    finally:
        postgres_databases.drop(url)


@pytest.fixture
def sqlite_url(tmp_path: Path) -> str:
    """A SQLite file of this test alone, migrated to head."""
    url = f"sqlite:///{tmp_path / 'miniobserv.db'}"
    migrate.upgrade(url)
    return url


@pytest.fixture(params=["sqlite", "postgresql"])
def database_url(request: pytest.FixtureRequest) -> str:
    """A migrated database of this test alone, once SQLite and once PostgreSQL."""
    fixture = "sqlite_url" if request.param == "sqlite" else "fresh_postgres_url"
    return str(request.getfixturevalue(fixture))


@pytest.fixture
def gunicorn(database_url: str) -> Iterator[Gunicorn]:
    """gunicorn serving the app on ``database_url``, ready; stopped after the test."""
    server = Gunicorn(database_url)
    try:
        server.wait_ready()
        yield server
    finally:
        server.terminate()


# Files a test saved for people to look at (screenshots); listed at the end of the run so the
# CI log names them.
SAVED_ARTIFACTS: list[Path] = []


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    for path in SAVED_ARTIFACTS:
        terminalreporter.write_line(f"artifact saved: {path}")

