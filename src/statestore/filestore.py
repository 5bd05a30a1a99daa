"""The file store's directory layout: read for import, written again for export.

The file store kept one pretty-printed JSON file per session, ``sessions/<id>.json``, and
named documents as ``<category>/<name>.md`` (markdown) or ``<category>/<name>.json``, where
a category may be nested (``memory/notes/x.md``). Each file was written to a temporary
file and renamed over the old one, so a crash could leave ``*.tmp`` files behind.

Here files become checked rows (in a worker thread, a batch at a time) and stored state
becomes files again; :class:`statestore.StateStore` exposes both as ``import_directory``
and ``export_directory``.
"""

from __future__ import annotations

import asyncio
import collections
import json
import multiprocessing
import os
import stat
import uuid
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass, field
from datetime import UTC, datetime
from functools import partial
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from statestore import _ops, _rows, _validate
from statestore._database import Database, plan_save
from statestore._rows import TimeCodec
from statestore._sql import DocumentRow
from statestore._tx import Tx
from statestore._validate import SESSIONS_CATEGORY, check_category, check_name
from statestore.errors import InvalidArgumentError, InvalidDataError, InvalidNameError
from statestore.models import Session

__all__ = [
    "TEMP_SUFFIX",
    "DocumentFile",
    "ExportReport",
    "ImportPreview",
    "ImportReport",
    "Progress",
    "SessionFile",
    "SkippedFile",
    "document_path",
    "export_directory",
    "find_files",
    "import_directory",
    "json_document_text",
    "json_file_text",
    "preview_import",
    "read_file",
    "session_file_text",
    "write_file",
]

TEMP_SUFFIX = ".tmp"
"""Files the file store left half-written; import ignores and counts them."""

MAX_FILE_BYTES = 256 * 1024 * 1024
"""The largest file import reads: far above any session or document, far below memory."""

_SUFFIX_KIND = {".md": "markdown", ".json": "json"}
_KIND_SUFFIX = {kind: suffix for suffix, kind in _SUFFIX_KIND.items()}


@dataclass(frozen=True)
class SkippedFile:
    """A file import could not read, and why."""

    path: str
    """The file's path relative to the imported directory, with ``/`` separators."""
    reason: str


@dataclass(frozen=True)
class SessionFile:
    """A ``sessions/<id>.json`` file, validated."""

    path: str
    session: Session
    text: str = field(default="", repr=False)
    """The file's text, as validated."""


@dataclass(frozen=True)
class DocumentFile:
    """A ``<category>/<name>.md|.json`` file, checked and in storage form."""

    path: str
    category: str
    name: str
    kind: str
    content: str
    """Markdown text, or the JSON value as compact JSON text."""
    modified_at: datetime
    """The file's modification time, kept as the document's ``updated_at``."""


@dataclass
class ImportReport:
    """What :meth:`~statestore.StateStore.import_directory` did.

    ``*_added`` were new, ``*_updated`` replaced a different stored version,
    ``*_unchanged`` were already stored exactly so (a second import of one directory
    reports everything unchanged), and ``*_kept`` were stored with a later ``updated_at``
    than the file's (saved since the file was written) and left as they were.
    """

    sessions_added: int = 0
    sessions_updated: int = 0
    sessions_unchanged: int = 0
    sessions_kept: int = 0
    documents_added: int = 0
    documents_updated: int = 0
    documents_unchanged: int = 0
    documents_kept: int = 0
    temp_files: int = 0
    """Leftover ``*.tmp`` files, ignored."""
    skipped: list[SkippedFile] = field(default_factory=list)
    """Files not imported, each with the reason, in path order."""

    @property
    def complete(self) -> bool:
        """Whether every file other than temp files was imported."""
        return not self.skipped


@dataclass
class ExportReport:
    """What :meth:`~statestore.StateStore.export_directory` wrote."""

    sessions: int = 0
    documents: int = 0
    skipped: list[SkippedFile] = field(default_factory=list)
    """Files that could not be written (the reason is the system's), in the order met;
    every other file was written."""

    @property
    def complete(self) -> bool:
        """Whether every session and document was written."""
        return not self.skipped


def find_files(root: Path) -> tuple[list[str], int]:
    """Return the files under ``root`` to import, sorted, and how many temp files there are.

    Paths are relative, with ``/`` separators. Hidden folders are not walked, and hidden
    files (but the file store's own temp files) are left out.

    Raises:
        InvalidDataError: ``root`` is not a directory.
    """
    if not root.is_dir():
        raise InvalidArgumentError("directory", f"{str(root)!r} is not a directory")
    found: list[str] = []
    temp_files = 0
    for folder, subfolders, files in os.walk(root):
        # Hidden folders (.git, .venv, ...) are never a file store's categories.
        subfolders[:] = sorted(name for name in subfolders if not name.startswith("."))
        for file_name in sorted(files):
            if file_name.endswith(TEMP_SUFFIX):
                temp_files += 1
            elif not file_name.startswith("."):  # .DS_Store, .gitignore, ...
                found.append((Path(folder) / file_name).relative_to(root).as_posix())
    return found, temp_files


def read_file(root: Path, path: str) -> SessionFile | DocumentFile | SkippedFile:
    """Read and check one file; a file that cannot be imported comes back as skipped."""
    *folders, file_name = path.split("/")
    stem, suffix = os.path.splitext(file_name)
    kind = _SUFFIX_KIND.get(suffix)
    if kind is None:
        return SkippedFile(path, "not a .md or .json file")
    if not folders:
        return SkippedFile(path, "not inside a category folder")
    category = "/".join(folders)
    try:
        check_category(category)
        check_name(stem)
    except InvalidNameError as exc:
        return SkippedFile(path, str(exc))
    try:
        status = (root / path).stat()
        if not stat.S_ISREG(status.st_mode):  # a FIFO would block, a device never end
            return SkippedFile(path, "not a regular file")
        if status.st_size > MAX_FILE_BYTES:
            return SkippedFile(
                path, f"is {status.st_size:,} bytes; the limit is {MAX_FILE_BYTES:,}"
            )
        raw = (root / path).read_bytes()
        modified_at = datetime.fromtimestamp(status.st_mtime, UTC)
    except OSError as exc:
        return SkippedFile(path, f"cannot be read: {exc.strerror}")
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        return SkippedFile(path, f"not UTF-8 text (byte {raw[exc.start]:#04x} at {exc.start})")
    try:
        if kind == "markdown":
            _validate.check_text("content", text)
            return DocumentFile(path, category, stem, kind, text, modified_at)
        if category == SESSIONS_CATEGORY:
            return SessionFile(path, _validate.session_from_json(stem, text), text)
        content = _rows.dump_json_document("data", json.loads(text))
    except json.JSONDecodeError as exc:
        return SkippedFile(path, f"not valid JSON: {exc}")
    except InvalidDataError as exc:
        return SkippedFile(path, str(exc))
    except ValidationError as exc:
        first = exc.errors()[0]
        if first["type"] == "json_invalid":
            return SkippedFile(
                path, f"not valid JSON: {first['msg'].removeprefix('Invalid JSON: ')}"
            )
        where = ".".join(str(part) for part in first["loc"]) or "session"
        return SkippedFile(path, f"not a valid session: {where}: {first['msg']}")
    except RecursionError:
        return SkippedFile(path, "JSON nests too deeply")
    return DocumentFile(path, category, stem, kind, content, modified_at)


def json_file_text(data: object) -> str:
    """Return a JSON value as the file store wrote it: indented by two spaces, not ASCII-escaped."""
    return json.dumps(data, indent=2, ensure_ascii=False)


def session_file_text(session: Session) -> str:
    """Return a session's file as the file store wrote it."""
    return json_file_text(session.model_dump(mode="json"))


def json_document_text(content: str) -> str:
    """Return a JSON document's file as the file store wrote it, from its stored text."""
    return json_file_text(json.loads(content))


def document_path(category: str, name: str, kind: str) -> str:
    """Return the relative path of a document's file."""
    return f"{category}/{name}{_KIND_SUFFIX[kind]}"


def write_file(root: Path, path: str, text: str, modified_at: datetime | None = None) -> None:
    """Write one file the way the file store did: a temp file renamed over the old one.

    The temp file's name is short and unique (any file name fits beside it), and it is
    removed if the write fails.

    Raises:
        OSError: The file could not be written; nothing is left of the attempt.
    """
    target = root / path
    target.parent.mkdir(parents=True, exist_ok=True)
    temporary = target.with_name(f".{uuid.uuid4().hex}{TEMP_SUFFIX}")
    try:
        temporary.write_text(text, encoding="utf-8")
        if modified_at is not None:
            stamp = modified_at.timestamp()
            os.utime(temporary, (stamp, stamp))
        os.replace(temporary, target)
    except BaseException:
        temporary.unlink(missing_ok=True)
        raise


IMPORT_BATCH = 200
"""Files imported per transaction: a crash loses at most the batch in flight, never part
of a session, and a rerun finishes the job."""

PARALLEL_IMPORT_MIN_FILES = 2_000
"""An import asked for worker processes uses them from this many files on; below, starting
them would cost more than they save."""

EXPORT_BATCH = 100
"""Sessions loaded before their files are written, in one thread hop."""

Progress = Callable[[int, int], None]
"""Called with (files done, files in all) as an import or export goes."""


Batch = tuple[
    list[tuple[_ops.SaveJob, Callable[[], Session]]], list[dict[str, Any]], list[SkippedFile]
]
"""One batch of files read: sessions as rows (with how to get the validated session, which
import needs only when a version is stored already), documents as rows, and the files
skipped, in path order."""


def _read_batch(time: TimeCodec, root: Path, paths: list[str], *, apart: bool) -> Batch:
    """Read, check and turn into rows one batch of files, in ``time``'s storage form.

    Runs in a worker thread, or ``apart`` in a worker process: then each session comes
    back as its file's text, to validate again only if needed (pickling a model back
    costs more than validating it).
    """
    sessions: list[tuple[_ops.SaveJob, Callable[[], Session]]] = []
    documents: list[dict[str, Any]] = []
    skipped: list[SkippedFile] = []
    for path in paths:
        read = read_file(root, path)
        if isinstance(read, SkippedFile):
            skipped.append(read)
        elif isinstance(read, SessionFile):
            try:
                job, _ = plan_save(read.session, time)
            except InvalidDataError as exc:
                skipped.append(SkippedFile(path, str(exc)))
                continue
            if apart:
                again = partial(_validate.session_from_json, read.session.id, read.text)
            else:
                again = partial(_given, read.session)
            sessions.append((job, again))
        else:
            documents.append(
                {
                    "category": read.category,
                    "name": read.name,
                    "kind": read.kind,
                    "content": read.content,
                    "now": time.bind(read.modified_at),
                }
            )
    return sessions, documents, skipped


def _given(session: Session) -> Session:
    return session


def _import_batch(
    tx: Tx,
    sessions: list[tuple[_ops.SaveJob, Callable[[], Session]]],
    documents: list[dict[str, Any]],
    replace_newer: bool,
) -> tuple[_ops.ImportCounts, _ops.ImportCounts]:
    return (
        _ops.import_sessions(tx, sessions, replace_newer=replace_newer),
        _ops.import_documents(tx, documents, replace_newer=replace_newer),
    )


class _Readers:
    """Reads batches ahead of the writer: in one worker thread, or in worker processes.

    At most ``ahead`` batches are read before they are written. Results come back in the
    order asked, so skipped files keep path order.
    """

    def __init__(self, time: TimeCodec, root: Path, batches: list[list[str]], workers: int):
        self._read = partial(_read_batch, time, root, apart=workers > 0)
        self._batches = iter(batches)
        self._pool = (
            ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("spawn"))
            if workers
            else None
        )
        self._ahead: collections.deque[asyncio.Future[Batch]] = collections.deque()
        for _ in range(max(1, workers) + 1):
            self._read_next()

    def _read_next(self) -> None:
        batch = next(self._batches, None)
        if batch is None:
            return
        loop = asyncio.get_running_loop()
        self._ahead.append(loop.run_in_executor(self._pool, self._read, batch))

    async def next(self) -> Batch:
        """The next batch, read; and the one after it is asked for."""
        read = await self._ahead.popleft()
        self._read_next()
        return read

    def close(self, *, finished: bool) -> None:
        """Stop the workers: once ``finished``, joined (they are idle); otherwise (an error,
        a cancel) what was read ahead is dropped and the workers are ended at once, as
        reading has no effect to lose."""
        if self._pool is None:
            return
        if finished:
            self._pool.shutdown(wait=True)
            return
        for ahead in self._ahead:
            ahead.cancel()
        processes = getattr(self._pool, "_processes", None) or {}
        for process in list(processes.values()):
            process.terminate()
        self._pool.shutdown(wait=False, cancel_futures=True)


async def import_directory(
    database: Database,
    root: Path,
    progress: Progress | None = None,
    *,
    replace_newer: bool = False,
    workers: int = 0,
) -> ImportReport:
    """Import a file store's directory; see :meth:`StateStore.import_directory`."""
    database.check_writable("import_directory")
    if not isinstance(workers, int) or isinstance(workers, bool) or not 0 <= workers <= 64:
        raise InvalidArgumentError("workers", f"must be an int from 0 to 64, not {workers!r}")
    paths, temp_files = await asyncio.to_thread(find_files, root)
    report = ImportReport(temp_files=temp_files)
    batches = [paths[start : start + IMPORT_BATCH] for start in range(0, len(paths), IMPORT_BATCH)]
    # The next batches are read while this one is written (SQLite leaves the GIL to other
    # threads while it steps; worker processes need no GIL at all).
    apart = workers if len(paths) >= PARALLEL_IMPORT_MIN_FILES else 0
    readers = _Readers(database.time, root, batches, apart)
    done = 0
    finished = False
    try:
        for batch in batches:
            try:
                sessions, documents, skipped = await readers.next()
            except BrokenProcessPool as exc:
                raise InvalidArgumentError(
                    "workers",
                    "a worker process died before it read its files; a script importing "
                    'with workers needs the `if __name__ == "__main__":` guard (workers '
                    "are started by spawn, which imports the script again)",
                ) from exc
            report.skipped.extend(skipped)
            session_counts, document_counts = await database.write(
                "import_directory",
                partial(
                    _import_batch,
                    sessions=sessions,
                    documents=documents,
                    replace_newer=replace_newer,
                ),
            )
            _count(report, session_counts, document_counts)
            done += len(batch)
            if progress is not None:
                progress(done, len(paths))
        finished = True
    finally:
        readers.close(finished=finished)
    return report


@dataclass
class ImportPreview:
    """What importing a directory would store: its files read and checked, written nowhere."""

    sessions: int = 0
    documents: int = 0
    temp_files: int = 0
    skipped: list[SkippedFile] = field(default_factory=list)
    """Files an import would skip, each with the reason, in path order."""


async def preview_import(root: Path) -> ImportPreview:
    """Read and check a directory as :func:`import_directory` would, storing nothing.

    Whether a session is new or replaces a stored one is not known without a database:
    ``sessions`` counts every importable session file.
    """
    paths, temp_files = await asyncio.to_thread(find_files, root)
    preview = ImportPreview(temp_files=temp_files)
    for start in range(0, len(paths), IMPORT_BATCH):
        batch = paths[start : start + IMPORT_BATCH]
        sessions, documents, skipped = await asyncio.to_thread(
            _read_batch, _rows.SQLITE_TIME, root, batch, apart=False
        )
        preview.sessions += len(sessions)
        preview.documents += len(documents)
        preview.skipped.extend(skipped)
    return preview


def _count(
    report: ImportReport, session_counts: _ops.ImportCounts, document_counts: _ops.ImportCounts
) -> None:
    """Add one batch's counts to the report."""
    report.sessions_added += session_counts.added
    report.sessions_updated += session_counts.updated
    report.sessions_unchanged += session_counts.unchanged
    report.sessions_kept += session_counts.kept
    report.documents_added += document_counts.added
    report.documents_updated += document_counts.updated
    report.documents_unchanged += document_counts.unchanged
    report.documents_kept += document_counts.kept


def _write_or_skip(
    root: Path, path: str, text: str, modified_at: datetime, skipped: list[SkippedFile]
) -> bool:
    """Write one exported file; a file the system refuses is recorded, not raised."""
    try:
        write_file(root, path, text, modified_at)
    except OSError as exc:
        skipped.append(SkippedFile(path, f"cannot be written: {exc.strerror or exc}"))
        return False
    return True


def _write_sessions(root: Path, sessions: list[Session], skipped: list[SkippedFile]) -> int:
    return sum(
        _write_or_skip(
            root,
            f"{SESSIONS_CATEGORY}/{session.id}.json",
            session_file_text(session),
            session.updated_at,
            skipped,
        )
        for session in sessions
    )


def _write_documents(
    root: Path, category: str, rows: list[DocumentRow], skipped: list[SkippedFile]
) -> int:
    return sum(
        _write_or_skip(
            root,
            document_path(category, row.name, row.kind),
            json_document_text(row.content) if row.kind == "json" else row.content,
            row.updated_at,
            skipped,
        )
        for row in rows
    )


def _check_export_target(root: Path, overwrite: bool) -> None:
    if root.exists() and not root.is_dir():
        raise InvalidArgumentError("directory", f"{str(root)!r} is not a directory")
    try:
        occupied = root.is_dir() and any(root.iterdir())
    except OSError as exc:
        raise InvalidArgumentError("directory", f"{str(root)!r} cannot be read: {exc}") from exc
    if not overwrite and occupied:
        raise InvalidArgumentError(
            "directory",
            f"{str(root)!r} is not empty; export into an empty directory, or allow writing "
            "over its files (overwrite=True; statestore export --overwrite)",
        )


def _load_sessions(tx: Tx, session_ids: list[str]) -> list[Session]:
    """Load these sessions in one read; a session deleted meanwhile is left out."""
    loaded = (_ops.load_session(tx, session_id) for session_id in session_ids)
    return [session for session in loaded if session is not None]


async def check_export_target(root: Path, *, overwrite: bool) -> None:
    """Refuse an export target that is a file, or a directory with files (unless overwrite).

    Raises:
        InvalidArgumentError: ``root`` is not a directory, cannot be read, or is not empty.
    """
    await asyncio.to_thread(_check_export_target, root, overwrite)


async def export_directory(
    database: Database,
    root: Path,
    session_ids: list[str],
    *,
    documents: bool,
    progress: Progress | None,
) -> ExportReport:
    """Write these sessions, and every document if ``documents``, as a file store.

    See :meth:`StateStore.export_directory`; check the target first with
    :func:`check_export_target`.
    """
    categories = await database.read("export_directory", _ops.list_categories) if documents else []
    total = len(session_ids) + len(categories)
    report = ExportReport()
    for start in range(0, len(session_ids), EXPORT_BATCH):
        batch = session_ids[start : start + EXPORT_BATCH]
        sessions = await database.read(
            "export_directory", partial(_load_sessions, session_ids=batch)
        )
        report.sessions += await asyncio.to_thread(_write_sessions, root, sessions, report.skipped)
        if progress is not None:
            progress(start + len(batch), total)
    for done, category in enumerate(categories, start=1):
        rows = await database.read(
            "export_directory", partial(_ops.documents_in, category=category)
        )
        report.documents += await asyncio.to_thread(
            _write_documents, root, category, rows, report.skipped
        )
        if progress is not None:
            progress(len(session_ids) + done, total)
    return report
