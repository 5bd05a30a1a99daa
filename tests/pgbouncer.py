"""Run a PgBouncer in transaction pooling mode in front of the test server, for one test run.

Many application processes usually reach PostgreSQL through PgBouncer in transaction pooling
mode: a client connection holds a server connection only while a transaction runs, so
transactions of different client connections take turns on the same few server connections.
Whatever a client leaves on its server connection outside a transaction (a named prepared
statement, a session setting) is there for the next client instead. The ``pgbouncer``
backend runs the store tests through such a PgBouncer; this module starts it.

PgBouncer 1.18 (Debian 12's) cannot track protocol-level prepared statements, so the store is
reached with ``?statement_cache_size=0``, the form statestore documents for PgBouncer.
"""

from __future__ import annotations

import ctypes
import functools
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import URL

SERVER_POOL_SIZE = 4
"""Server connections PgBouncer opens per database and user: fewer than a store's pool, so
that client connections share server connections as they do behind a busy PgBouncer."""

MISSING = (
    "pgbouncer is not installed: install Debian's pgbouncer (apt-get install pgbouncer) "
    "or choose --backends sqlite,postgresql"
)

RUN_AS = "postgres"
"""The account PgBouncer runs as when the tests run as root."""

_PR_SET_PDEATHSIG = 1
"""Linux ``prctl`` option: the signal a process gets when the thread that started it ends."""

_STOP_WITH_STARTER = (
    functools.partial(ctypes.CDLL(None).prctl, _PR_SET_PDEATHSIG, signal.SIGTERM)
    if sys.platform == "linux"
    else None
)
"""Run in PgBouncer's process before it starts: have Linux send it SIGTERM when the thread
that started it ends, so that PgBouncer ends with a test run killed before its fixtures tear
down. It runs after the switch of user, which would clear the request."""


@contextmanager
def running_pgbouncer(server: URL) -> Iterator[int]:
    """Run PgBouncer in front of ``server`` until the block ends; yield the port it listens on.

    Every database name maps to the same database on ``server``, so a database created during
    the run is reachable through PgBouncer without a reload. PgBouncer runs in the foreground
    as a child of this process, logging to a file that a failure to start shows.

    Raises:
        pytest.fail.Exception: the binary is not installed, or PgBouncer did not start.
    """
    binary = _find_binary()
    port = _free_port()
    with tempfile.TemporaryDirectory(prefix="statestore-pgbouncer-") as directory:
        # PgBouncer reads its files as RUN_AS, which cannot enter a directory only root can.
        os.chmod(directory, 0o755)
        config = _write_config(Path(directory), server, port)
        log = Path(directory, "pgbouncer.log")
        # PgBouncer refuses to run as root; as root, start it as RUN_AS with RUN_AS's group only.
        account: dict[str, Any] = (
            {"user": RUN_AS, "group": RUN_AS, "extra_groups": []} if os.geteuid() == 0 else {}
        )
        with log.open("wb") as output:
            process = subprocess.Popen(
                [binary, str(config)],
                stdin=subprocess.DEVNULL,
                stdout=output,
                stderr=subprocess.STDOUT,
                preexec_fn=_STOP_WITH_STARTER,
                **account,
            )
        try:
            _wait_until_listening(process, port, log)
            yield port
        finally:
            process.terminate()
            try:
                process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()


def _find_binary() -> str:
    """Return the pgbouncer binary's path; Debian puts it in /usr/sbin, off many users' PATH."""
    binary = shutil.which("pgbouncer") or shutil.which("pgbouncer", path="/usr/sbin")
    if binary is None:
        pytest.fail(MISSING, pytrace=False)
    return binary


def _free_port() -> int:
    """Return a TCP port on 127.0.0.1 that nothing listens on now."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


def _write_config(directory: Path, server: URL, port: int) -> Path:
    """Write PgBouncer's configuration and user list into ``directory``; return the former.

    Clients are trusted as the users the list names, and PgBouncer logs in to the server with
    the password listed. asyncpg's startup packet carries only ``client_encoding``, ``user``
    and ``database``, which PgBouncer accepts, so no startup parameter needs ignoring.
    """
    users = directory / "users.txt"
    users.write_text(f'"{server.username}" "{server.password or ""}"\n', encoding="utf-8")
    config = directory / "pgbouncer.ini"
    config.write_text(
        "[databases]\n"
        f"* = host={server.host} port={server.port or 5432}\n"
        "\n"
        "[pgbouncer]\n"
        "listen_addr = 127.0.0.1\n"
        f"listen_port = {port}\n"
        "unix_socket_dir =\n"
        "auth_type = trust\n"
        f"auth_file = {users}\n"
        "pool_mode = transaction\n"
        f"default_pool_size = {SERVER_POOL_SIZE}\n"
        "max_client_conn = 1000\n"
        "log_connections = 0\n"
        "log_disconnections = 0\n",
        encoding="utf-8",
    )
    return config


def _wait_until_listening(process: subprocess.Popen[bytes], port: int, log: Path) -> None:
    """Return once PgBouncer accepts TCP connections on ``port``; fail if it exits or stalls."""
    deadline = time.monotonic() + 10
    while process.poll() is None and time.monotonic() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
        except OSError:
            time.sleep(0.05)
        else:
            return
    pytest.fail(
        f"PgBouncer did not start listening on 127.0.0.1:{port}:\n"
        + log.read_text(encoding="utf-8", errors="replace"),
        pytrace=False,
    )
