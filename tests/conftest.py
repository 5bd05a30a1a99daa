"""Shared fixtures: a migrated store on each backend under test, and SQLite helpers.

Tests that take ``store`` (or ``target``) run once per backend chosen with
``--backends`` or ``$STATESTORE_TEST_BACKENDS`` (default ``sqlite,postgresql,pgbouncer``),
unless they also take ``db_path`` or ``traced``, or are marked ``sqlite_only``: those are
about the SQLite file and run on SQLite only. Tests marked ``postgresql`` are about the
server itself (its processes, locks and faults) and run on the ``postgresql`` backend only.
PostgreSQL is the server at ``$STATESTORE_TEST_POSTGRESQL`` (default
``postgresql+asyncpg://postgres@127.0.0.1:5432/test``); each test run creates a database of
its own there and drops it at the end, and each test starts with its tables empty. The
``pgbouncer`` backend is that same database reached through a PgBouncer in transaction
pooling mode that the run starts (see :mod:`tests.pgbouncer`); its tests run after all others.
"""

from __future__ import annotations

import asyncio
import os
import secrets
import sqlite3
import subprocess
import sys
from collections.abc import AsyncIterator, Coroutine, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import asyncpg
import pytest
from sqlalchemy import URL, make_url

from statestore import StateStore, _runner, migrate

from .pgbouncer import running_pgbouncer

REPOSITORY = Path(__file__).resolve().parents[1]
SAMPLE_DIR = REPOSITORY / "examples" / "filestore-sample"

BACKENDS = ("sqlite", "postgresql", "pgbouncer")
POSTGRESQL_SERVER = os.environ.get(
    "STATESTORE_TEST_POSTGRESQL", "postgresql+asyncpg://postgres@127.0.0.1:5432/test"
)
SQLITE_ONLY_FIXTURES = {"db_path", "traced"}


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption(
        "--backends",
        default=os.environ.get("STATESTORE_TEST_BACKENDS", ",".join(BACKENDS)),
        help="comma-separated backends the store tests run on (sqlite, postgresql, pgbouncer)",
    )


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "sqlite_only: a test about SQLite, run on SQLite only")
    config.addinivalue_line(
        "markers", "postgresql: a test about PostgreSQL, run only when it is a chosen backend"
    )
    config.addinivalue_line(
        "markers", "pgbouncer: a test about PgBouncer, run only when it is a chosen backend"
    )
    chosen = [name.strip() for name in config.getoption("--backends").split(",") if name.strip()]
    unknown = set(chosen) - set(BACKENDS)
    if unknown or not chosen:
        raise pytest.UsageError(f"--backends takes {', '.join(BACKENDS)}; got {chosen}")
    config.stash[_BACKENDS] = chosen


_BACKENDS = pytest.StashKey[list[str]]()


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    """Run each test that needs a backend once per backend that applies to it."""
    if "route" not in metafunc.fixturenames:
        return
    sqlite_only = SQLITE_ONLY_FIXTURES & set(metafunc.fixturenames) or (
        metafunc.definition.get_closest_marker("sqlite_only") is not None
    )
    if metafunc.definition.get_closest_marker("postgresql") is not None:
        chosen = ["postgresql"]
    elif sqlite_only:
        chosen = ["sqlite"]
    else:
        chosen = metafunc.config.stash[_BACKENDS]
    metafunc.parametrize("route", chosen, indirect=True)


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Leave out tests about a server that is not a chosen backend; run PgBouncer's last.

    PgBouncer keeps its server connections to the run's database open after its clients
    have gone, and tests on the direct ``postgresql`` backend count who is connected there.
    """
    unchosen = {"postgresql", "pgbouncer"} - set(config.stash[_BACKENDS])
    kept: list[pytest.Item] = []
    left_out: list[pytest.Item] = []
    for item in items:
        about = {mark.name for mark in item.iter_markers()}
        (left_out if about & unchosen else kept).append(item)
    if left_out:
        config.hook.pytest_deselected(items=left_out)
    items[:] = sorted(kept, key=through_pgbouncer)


def through_pgbouncer(item: pytest.Item) -> bool:
    """Return whether a test reaches the server through PgBouncer."""
    callspec = getattr(item, "callspec", None)
    route = callspec.params.get("route") if callspec is not None else None
    return route == "pgbouncer" or item.get_closest_marker("pgbouncer") is not None


def run_worker_module(module: str, *arguments: str, timeout: float) -> None:
    """Run ``python -m tests.<module> ARGUMENTS`` from the repository root; fail on error.

    The worker writes its results to files; its output is shown only when it fails.
    """
    finished = subprocess.run(
        [sys.executable, "-m", f"tests.{module}", *arguments],
        cwd=REPOSITORY,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        timeout=timeout,
        check=False,
    )
    assert finished.returncode == 0, finished.stdout


def run_apart(work: Coroutine[Any, Any, Any]) -> Any:
    """Run a coroutine to the end in a thread of its own (callable with a loop running)."""
    with ThreadPoolExecutor(1) as thread:
        return thread.submit(asyncio.run, work).result()


def server_dsn(database: str | None = None) -> str:
    """Return an asyncpg DSN for the test server, on ``database`` if given."""
    url = make_url(POSTGRESQL_SERVER)
    if database is not None:
        url = url.set(database=database)
    return url.set(drivername="postgresql").render_as_string(hide_password=False)


async def create_database(name: str) -> None:
    """Create an empty database on the test server."""
    try:
        connection = await asyncpg.connect(server_dsn())
    except (OSError, asyncpg.PostgresError) as exc:
        raise RuntimeError(
            f"the PostgreSQL test server at {POSTGRESQL_SERVER} is not reachable ({exc}); "
            "start it, point $STATESTORE_TEST_POSTGRESQL at one, or run SQLite only with "
            "--backends=sqlite"
        ) from exc
    try:
        await connection.execute(f'CREATE DATABASE "{name}"')
    finally:
        await connection.close()


async def drop_database(name: str) -> None:
    """Drop a database of the test server, disconnecting whoever is still on it."""
    connection = await asyncpg.connect(server_dsn())
    try:
        await connection.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    finally:
        await connection.close()


@contextmanager
def own_database(prefix: str) -> Iterator[URL]:
    """Create a database of its own on the test server, yield its URL, and drop it after."""
    name = f"{prefix}_{os.getpid()}_{secrets.token_hex(4)}"
    run_apart(create_database(name))
    try:
        yield make_url(POSTGRESQL_SERVER).set(database=name)
    finally:
        run_apart(drop_database(name))


@pytest.fixture
def fresh_postgresql() -> Iterator[URL]:
    """Yield the URL of a new, empty database on the test server; drop it afterwards."""
    with own_database("statestore_test") as url:
        yield url


@pytest.fixture(scope="session")
def postgresql_url() -> Iterator[URL]:
    """Yield the URL of this test run's own database, migrated to head; drop it at the end."""
    with own_database("statestore_test") as url:
        run_apart(migrate.upgrade(url))
        yield url


async def empty_tables(url: URL) -> None:
    """Delete every row statestore keeps, so that a test starts from an empty store."""
    connection = await asyncpg.connect(server_dsn(url.database))
    try:
        await connection.execute(
            "TRUNCATE sessions, messages, responses, documents, search_entries RESTART IDENTITY; "
            "UPDATE statestore_counters SET value = 0"
        )
    finally:
        await connection.close()


@pytest.fixture
async def raw(postgresql_url: URL) -> AsyncIterator[asyncpg.Connection]:
    """A plain asyncpg connection on this run's database, its tables emptied first."""
    await empty_tables(postgresql_url)
    connection = await asyncpg.connect(server_dsn(postgresql_url.database))
    try:
        yield connection
    finally:
        await connection.close()


@pytest.fixture(scope="session")
def pgbouncer_url(postgresql_url: URL) -> Iterator[URL]:
    """Yield the URL of this run's database through a PgBouncer started for the run; stop it after.

    The URL is the form statestore documents for PgBouncer in transaction pooling mode.
    """
    with running_pgbouncer(make_url(POSTGRESQL_SERVER)) as port:
        yield postgresql_url.set(host="127.0.0.1", port=port, query={"statement_cache_size": "0"})


@pytest.fixture
def route(request: pytest.FixtureRequest) -> str:
    """The chosen backend this test runs on (parametrized in ``pytest_generate_tests``)."""
    return str(request.param)


@pytest.fixture
def backend(route: str) -> str:
    """The database this test's store runs on: ``sqlite`` or ``postgresql``.

    The ``pgbouncer`` backend runs on PostgreSQL too, so tests that pick SQL or checks by
    backend pick PostgreSQL's for it; ``route`` and ``target`` tell the two apart.
    """
    return "postgresql" if route == "pgbouncer" else route


@pytest.fixture
def target(route: str, request: pytest.FixtureRequest, tmp_path: Path) -> Path | URL:
    """Return where a store for this test lives: a new SQLite file, or the emptied test database.

    On the ``pgbouncer`` backend the database is reached through PgBouncer.
    """
    if route == "sqlite":
        return tmp_path / "state.db"
    url: URL = request.getfixturevalue("postgresql_url")
    run_apart(empty_tables(url))
    if route == "pgbouncer":
        pgbouncer_url: URL = request.getfixturevalue("pgbouncer_url")
        return pgbouncer_url
    return url


@pytest.fixture
def db_path(tmp_path: Path) -> Path:
    """Return the path of a fresh SQLite database file."""
    return tmp_path / "state.db"


@pytest.fixture
async def store(target: Path | URL) -> AsyncIterator[StateStore]:
    """Yield a store on a new, migrated database of the backend under test; close it after."""
    async with StateStore.open(target) as opened:
        yield opened


@dataclass
class Traced:
    """The SQLite connections stores opened, in order, each with the SQL it ran.

    The first a store opens is its writer's; readers and the checkpointer follow.
    """

    connections: list[tuple[sqlite3.Connection, list[str]]] = field(default_factory=list)

    def of(self, index: int) -> list[str]:
        """Return the statements run on the ``index``-th connection opened."""
        return self.connections[index][1]

    def statements(self) -> list[str]:
        """Return every statement traced, connection by connection."""
        return [statement.strip() for _, run in self.connections for statement in run]

    def clear(self) -> None:
        """Forget the statements traced so far."""
        for _, run in self.connections:
            run.clear()


@pytest.fixture
def traced(monkeypatch: pytest.MonkeyPatch) -> Traced:
    """Trace each SQLite connection that stores open from now on (stdlib trace callback)."""
    recorded = Traced()
    connect = _runner._connect_sqlite

    def connect_and_trace(*args: Any) -> sqlite3.Connection:
        connection = connect(*args)
        statements: list[str] = []
        connection.set_trace_callback(statements.append)
        recorded.connections.append((connection, statements))
        return connection

    monkeypatch.setattr(_runner, "_connect_sqlite", connect_and_trace)
    return recorded
