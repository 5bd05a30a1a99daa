"""Damaged storage: a file that is not a database, read-only storage, a full disk.

Each gives a typed error (``DatabaseError``, a ``StateStoreError``) at open or at the
failing write -- never a hang, never a raw driver exception -- and what a store held
before is still there afterwards.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import random
import shutil
import sqlite3
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from statestore import DatabaseError, Session, StateStore, UserMessage

ROOT = Path(__file__).resolve().parents[1]

NO_HANG = 60.0
"""Seconds after which an operation counts as hung (each takes milliseconds)."""

PAGE = 4096


async def fill(path: Path, sessions: int = 40) -> dict[str, str]:
    """Store sessions of 20 messages and a document at ``path``; return the sessions' JSON."""
    saved = {}
    async with StateStore.open(path) as store:
        for index in range(sessions):
            session = Session(id=f"s{index}", user_id="u")
            for turn in range(20):
                session.add_user_message(f"message {turn} " + "words " * 40)
            await store.save_session(session)
            saved[session.id] = session.model_dump_json()
        await store.save_markdown("notes", "kept", "still here")
    return saved


def integrity(path: Path) -> list[tuple[str]]:
    """Return what SQLite's integrity check says of the file."""
    with contextlib.closing(sqlite3.connect(path)) as connection:
        return connection.execute("PRAGMA integrity_check").fetchall()


def damage(path: Path, how: str) -> bytes:
    """Damage the database file at ``path`` in one way; return its new bytes."""
    path.write_bytes(damaged(path.read_bytes(), how))
    return path.read_bytes()


def damage_leaves_of(path: Path, table: str, pages: int) -> None:
    """Overwrite the last ``pages`` leaf pages of ``table`` with noise, in place (the
    file's own last pages may belong to any b-tree, the search index's among them)."""
    with contextlib.closing(sqlite3.connect(path)) as connection:
        leaves = [
            page
            for (page,) in connection.execute(
                "SELECT pageno FROM dbstat WHERE name = ? AND pagetype = 'leaf' ORDER BY pageno",
                (table,),
            )
        ][-pages:]
    with path.open("r+b") as file:
        for page in leaves:
            file.seek((page - 1) * PAGE)
            file.write(random.Random(page).randbytes(PAGE))


def overwrite_tail(path: Path, pages: int) -> None:
    """Overwrite the file's last ``pages`` pages with noise, in place."""
    size = path.stat().st_size
    with path.open("r+b") as file:
        file.seek(size - pages * PAGE)
        file.write(random.Random(pages).randbytes(pages * PAGE))


async def assert_intact(path: Path, saved: dict[str, str]) -> None:
    """Assert the file is sound and holds exactly what was saved, and takes new writes."""
    assert integrity(path) == [("ok",)]
    async with StateStore.open(path) as store:
        for session_id, state in saved.items():
            loaded = await store.load_session(session_id)
            assert loaded is not None
            assert loaded.model_dump_json() == state
        assert await store.load_markdown("notes", "kept") == "still here"
        await store.save_markdown("notes", "later", "writes work again")


# -- a file that is not (or no longer) a database -----------------------------------------


def damaged(good: bytes, how: str) -> bytes:
    """Return the bytes of the good database file damaged in one way."""
    rng = random.Random(how)
    noise = rng.randbytes
    size = len(good)
    return {
        "random-bytes": lambda: noise(size),
        "zeros": lambda: bytes(size),
        "truncated-to-header": lambda: good[:100],
        "truncated-half": lambda: good[: size // 2],
        "first-page-garbage": lambda: good[:100] + noise(PAGE - 100) + good[PAGE:],
        "middle-pages-garbage": lambda: (
            good[: size // 3] + noise(4 * PAGE) + good[size // 3 + 4 * PAGE :]
        ),
        "tail-pages-garbage": lambda: good[: size - 30 * PAGE] + noise(30 * PAGE),
        "last-pages-garbage": lambda: good[: size - 4 * PAGE] + noise(4 * PAGE),
        "none": lambda: good,
    }[how]()


DAMAGE = [
    "random-bytes",
    "zeros",
    "truncated-to-header",
    "truncated-half",
    "first-page-garbage",
    "middle-pages-garbage",
    "tail-pages-garbage",
]


@pytest.mark.parametrize("how", DAMAGE)
async def test_a_damaged_file_fails_at_open_with_a_database_error(db_path: Path, how: str) -> None:
    """Opening (and migrating) a damaged file raises DatabaseError and writes nothing to it."""
    await fill(db_path)
    before = damage(db_path, how)

    with pytest.raises(DatabaseError) as raised:
        await asyncio.wait_for(StateStore.open(db_path), NO_HANG)

    assert isinstance(raised.value.__cause__, Exception)
    assert damage(db_path, "none") == before


async def test_damaged_pages_fail_each_read_that_meets_them(db_path: Path) -> None:
    """Reads that meet damaged pages raise DatabaseError; the others return exact data."""
    saved = await fill(db_path)
    damage_leaves_of(db_path, "messages", 4)
    outcomes: list[str] = []
    async with StateStore.open(db_path, migrate=False) as store:
        for session_id, state in saved.items():
            try:
                loaded = await asyncio.wait_for(store.load_session(session_id), NO_HANG)
            except DatabaseError as error:
                outcomes.append(str(error))
            else:
                assert loaded is not None
                assert loaded.model_dump_json() == state
                outcomes.append("exact")

    assert "exact" in outcomes
    assert {o for o in outcomes if o != "exact"} == {
        "load_session failed: database disk image is malformed"
    }


async def test_pages_damaged_under_an_open_store_fail_its_reads(db_path: Path) -> None:
    """A store whose file is damaged while open raises DatabaseError, then closes cleanly."""
    saved = await fill(db_path)
    outcomes: list[str] = []
    async with StateStore.open(db_path) as store:
        assert await store.load_session("s0") is not None
        overwrite_tail(db_path, 30)
        for session_id, state in saved.items():
            try:
                loaded = await asyncio.wait_for(store.load_session(session_id), NO_HANG)
            except DatabaseError:
                outcomes.append("error")
            else:
                assert loaded is not None
                assert loaded.model_dump_json() == state
                outcomes.append("exact")

    assert "error" in outcomes


# -- read-only storage --------------------------------------------------------------------


@contextlib.contextmanager
def read_only_file(path: Path) -> Iterator[None]:
    """Make ``path`` unwritable even for root (``chattr +i``), else by permissions."""
    if os.geteuid() != 0:
        path.chmod(0o444)
        try:
            yield
        finally:
            path.chmod(0o644)
        return
    if shutil.which("chattr") is None:
        pytest.skip("running as root without chattr: no way to make a file read-only here")
    made = subprocess.run(["chattr", "+i", str(path)], capture_output=True, check=False)
    if made.returncode != 0:
        pytest.skip(f"chattr +i does not work here: {made.stderr!r}")
    try:
        yield
    finally:
        subprocess.run(["chattr", "-i", str(path)], check=True)


async def test_a_read_only_database_reads_and_refuses_writes(db_path: Path) -> None:
    """On a read-only file, loads work and a save raises DatabaseError; nothing is lost."""
    saved = await fill(db_path)

    with read_only_file(db_path):
        async with StateStore.open(db_path) as store:
            loaded = await store.load_session("s3")
            assert loaded is not None
            assert loaded.model_dump_json() == saved["s3"]
            with pytest.raises(DatabaseError, match="readonly"):
                await asyncio.wait_for(store.save_session(Session(user_id="new")), NO_HANG)
            with pytest.raises(DatabaseError, match="readonly"):
                await asyncio.wait_for(store.delete_session("s3"), NO_HANG)
            assert await store.load_markdown("notes", "kept") == "still here"

    await assert_intact(db_path, saved)


def unmount(mount_point: Path) -> None:
    """Unmount ``mount_point``; if it is busy, detach it lazily rather than leave it."""
    if subprocess.run(["umount", str(mount_point)], check=False).returncode != 0:
        subprocess.run(["umount", "-l", str(mount_point)], check=True)


@contextlib.contextmanager
def read_only_mount(directory: Path, mount_point: Path) -> Iterator[Path]:
    """Yield a read-only bind mount of ``directory`` (skip where mounting is not allowed)."""
    mount_point.mkdir()
    bound = subprocess.run(
        ["mount", "--bind", str(directory), str(mount_point)], capture_output=True, check=False
    )
    if bound.returncode != 0:
        pytest.skip(f"cannot bind-mount here: {bound.stderr!r}")
    try:
        subprocess.run(
            ["mount", "-o", "remount,bind,ro", str(mount_point)], capture_output=True, check=True
        )
        yield mount_point
    finally:
        unmount(mount_point)


async def test_a_read_only_filesystem_fails_at_open(db_path: Path, tmp_path: Path) -> None:
    """On a read-only filesystem, opening an existing or a new database raises DatabaseError."""
    saved = await fill(db_path)

    with read_only_mount(db_path.parent, tmp_path / "ro") as mounted:
        with pytest.raises(DatabaseError, match="unable to open"):
            await asyncio.wait_for(StateStore.open(mounted / db_path.name), NO_HANG)
        with pytest.raises(DatabaseError, match="unable to open"):
            await asyncio.wait_for(StateStore.open(mounted / "new.db"), NO_HANG)

    assert not (db_path.parent / "new.db").exists()
    await assert_intact(db_path, saved)


# -- a full disk --------------------------------------------------------------------------


def test_writes_past_the_file_size_limit_fail_typed_and_lose_nothing(db_path: Path) -> None:
    """With RLIMIT_FSIZE reached (EFBIG), saves raise DatabaseError; earlier data stays."""
    saved = asyncio.run(fill(db_path, sessions=5))
    limit = db_path.stat().st_size + 700_000  # room for a few saves, then the limit
    finished = subprocess.run(
        [sys.executable, "-m", "tests.fault_workers", "full", str(db_path), str(limit)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )

    assert finished.returncode == 0, finished.stderr
    report = json.loads(finished.stdout)
    assert report["errors"], "the limit was never reached"
    for error in report["errors"]:
        assert error["type"] == "DatabaseError", error
        assert "StateStoreError" in error["mro"]
    assert report["kept"] == saved["s0"]
    assert report["kept_document"] == "still here"
    assert report["after"] == "space again"
    asyncio.run(assert_intact(db_path, saved))
    with contextlib.closing(sqlite3.connect(db_path)) as connection:
        stored = {row[0] for row in connection.execute("SELECT id FROM sessions")}
        documents = {row[0] for row in connection.execute("SELECT name FROM documents")}
    for name in report["saved"]:
        assert name in stored | documents  # what a save acknowledged is there


@contextlib.contextmanager
def small_filesystem(mount_point: Path, size: str) -> Iterator[Path]:
    """Yield a tmpfs of ``size`` (skip where mounting is not allowed)."""
    mount_point.mkdir()
    mounted = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(mount_point)],
        capture_output=True,
        check=False,
    )
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {mounted.stderr!r}")
    try:
        yield mount_point
    finally:
        unmount(mount_point)


async def test_a_full_filesystem_fails_writes_typed_and_loses_nothing(tmp_path: Path) -> None:
    """On a full filesystem (ENOSPC), saves raise DatabaseError; what was stored stays."""
    with small_filesystem(tmp_path / "small", "1m") as directory:
        path = directory / "state.db"
        saved = await fill(path, sessions=5)
        errors: list[Exception] = []
        async with StateStore.open(path) as store:
            for index in range(12):
                session = Session(id=f"big-{index}", user_id="big")
                session.user_messages.append(UserMessage(content="y" * 150_000))
                try:
                    await asyncio.wait_for(store.save_session(session), NO_HANG)
                except DatabaseError as error:
                    errors.append(error)
                else:
                    saved[session.id] = session.model_dump_json()
            loaded = await store.load_session("s0")
            assert loaded is not None
            assert loaded.model_dump_json() == saved["s0"]

        assert errors, "the filesystem never filled"
        assert all("full" in str(error) for error in errors)
        assert integrity(path) == [("ok",)]
        copy = tmp_path / "copy.db"
        with (
            contextlib.closing(sqlite3.connect(path)) as source,
            contextlib.closing(sqlite3.connect(copy)) as target,
        ):
            source.backup(target)

    # Checked on a copy with room to spare, since opening writes (WAL, checkpoints).
    await assert_intact(copy, saved)
