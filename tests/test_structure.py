"""The package's structure: the layers in CONTRIBUTING.md hold, and stay walkable."""

from __future__ import annotations

import ast
import asyncio
import importlib
import inspect
import re
import sys
import threading
import typing
from collections.abc import Iterator
from pathlib import Path
from types import FrameType
from typing import Any

import pytest

import statestore
from statestore import StateStore, _rows, _sql
from statestore.models import Session

from .test_delta import exchange

PACKAGE = Path(statestore.__file__).parent
MODULES = sorted(path.stem for path in PACKAGE.glob("*.py") if path.stem != "__init__")


def _tree(module: str) -> ast.Module:
    return ast.parse((PACKAGE / f"{module}.py").read_text(encoding="utf-8"))


def _runtime_imports(module: str) -> set[str]:
    """The package modules ``module`` imports when it runs (not under TYPE_CHECKING)."""
    imported: set[str] = set()
    for node in _tree(module).body:
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            continue
        for inner in ast.walk(node):
            if isinstance(inner, ast.ImportFrom) and inner.module:
                if inner.module == "statestore":
                    imported.update(alias.name for alias in inner.names)
                elif inner.module.startswith("statestore."):
                    imported.add(inner.module.split(".")[1])
    return imported & set(MODULES)


def test_no_module_imports_itself_back() -> None:
    """The package's modules import each other without a cycle."""
    graph = {module: _runtime_imports(module) for module in MODULES}
    state: dict[str, str] = {}

    def visit(module: str, path: list[str]) -> None:
        state[module] = "open"
        for imported in sorted(graph[module]):
            if state.get(imported) == "open":
                raise AssertionError(" -> ".join([*path, module, imported]))
            if imported not in state:
                visit(imported, [*path, module])
        state[module] = "done"

    for module in MODULES:
        if module not in state:
            visit(module, [])


@pytest.mark.parametrize("module", MODULES)
def test_each_module_stays_small(module: str) -> None:
    """No module is much over 600 lines."""
    lines = (PACKAGE / f"{module}.py").read_text(encoding="utf-8").count("\n")
    assert lines <= 620, f"{module}.py has {lines} lines"


def _private_uses(module: str) -> Iterator[str]:
    """Yield ``other._name`` uses of another package module's private names."""
    tree = _tree(module)
    aliases: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module == "statestore":
            aliases.update(alias.asname or alias.name for alias in node.names)
        if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("statestore"):
            for alias in node.names:
                private = alias.name.startswith("_") and not alias.name.startswith("__")
                if private and ((node.module or "").count(".") or alias.name not in MODULES):
                    yield f"from {node.module} import {alias.name}"
    for node in ast.walk(tree):
        if (
            isinstance(node, ast.Attribute)
            and isinstance(node.value, ast.Name)
            and node.value.id in aliases
            and node.attr.startswith("_")
            and not node.attr.startswith("__")
        ):
            yield f"{node.value.id}.{node.attr}"


@pytest.mark.parametrize("module", MODULES)
def test_no_module_reaches_into_another_modules_private_names(module: str) -> None:
    """A module uses only the public names of the modules it imports (private modules too)."""
    assert list(_private_uses(module)) == []


# -- the public line ---------------------------------------------------------------------


def _statestore_classes(annotation: Any) -> Iterator[type]:
    """Yield the statestore classes an annotation names, however nested."""
    if isinstance(annotation, type) and annotation.__module__.startswith("statestore"):
        yield annotation
    for argument in typing.get_args(annotation):
        yield from _statestore_classes(argument)


def test_every_type_a_public_method_takes_or_returns_is_exported() -> None:
    """What StateStore's methods take and return can be imported from statestore."""
    exported = {getattr(statestore, name) for name in statestore.__all__}
    found: set[type] = set()
    for name, method in inspect.getmembers(StateStore, inspect.isfunction):
        if name.startswith("_"):
            continue
        hints = typing.get_type_hints(method)
        for annotation in hints.values():
            found.update(_statestore_classes(annotation))
    assert found, "no statestore types found: the check is broken"
    assert {cls.__name__ for cls in found - exported} == set()


def test_every_public_name_of_a_public_module_is_exported_or_documented_there() -> None:
    """Each name in statestore.__all__ exists, and public modules' own names are theirs."""
    for name in statestore.__all__:
        assert getattr(statestore, name) is not None
    for module in MODULES:
        if module.startswith("_"):
            continue
        namespace = importlib.import_module(f"statestore.{module}")
        for name in getattr(namespace, "__all__", []):
            assert hasattr(namespace, name), f"statestore.{module}.{name}"


# -- rows are read by name ----------------------------------------------------------------------

ROW_STATEMENTS = [
    pytest.param(_sql.LOAD_SESSION, _sql.SessionRow, id="session"),
    pytest.param(_sql.SELECT_MESSAGES, _sql.MessageRow, id="messages"),
    pytest.param(_sql.SELECT_RESPONSES, _sql.ResponseRow, id="responses"),
    pytest.param(_sql.session_summaries(set()), _sql.SummaryRow, id="summaries"),
    pytest.param(_sql.PRUNABLE_STALE, _sql.SummaryRow, id="prunable"),
    pytest.param(_sql.SESSION_TOKENS, _sql.TokenRow, id="tokens"),
    pytest.param(_sql.OLDEST_SESSIONS_BOUND, _sql.BoundRow, id="bound"),
    pytest.param(_sql.LOAD_DOCUMENT_STAMPED, _sql.StampedDocumentRow, id="stamped-document"),
    pytest.param(_sql.DOCUMENTS_IN_CATEGORY, _sql.DocumentRow, id="documents"),
]


@pytest.mark.parametrize(("statement", "row_type"), ROW_STATEMENTS)
def test_each_select_list_is_its_row_type(statement: str, row_type: type[tuple[Any, ...]]) -> None:
    """A SELECT's columns are its row type's fields, in order."""
    match = re.search(r"SELECT\s+(.*?)\s+FROM", statement, re.S)
    assert match is not None
    columns = [column.strip() for column in match.group(1).split(",")]
    assert columns == list(row_type._fields)  # type: ignore[attr-defined]


def _unpacked_names(function: Any) -> list[list[str]]:
    """The names each tuple-unpacking in ``function`` binds, in order."""
    tree = ast.parse(_dedented(function))
    found = []
    for node in ast.walk(tree):
        targets = []
        if isinstance(node, ast.For | ast.comprehension):
            targets = [node.target]
        elif isinstance(node, ast.Assign):
            targets = node.targets
        for target in targets:
            if isinstance(target, ast.Tuple) and all(isinstance(e, ast.Name) for e in target.elts):
                found.append([e.id for e in target.elts])  # type: ignore[union-attr]
    return found


def _dedented(function: Any) -> str:
    source = inspect.getsource(function)
    indent = len(source) - len(source.lstrip())
    return "\n".join(line[indent:] for line in source.splitlines())


@pytest.mark.parametrize(
    ("decoder", "row_type"),
    [
        pytest.param(_rows.messages_from_rows, _sql.MessageRow, id="messages"),
        pytest.param(_rows.responses_from_rows, _sql.ResponseRow, id="responses"),
        pytest.param(_rows.summary_from_row, _sql.SummaryRow, id="summary"),
    ],
)
def test_hot_rows_are_unpacked_by_their_row_types_names(
    decoder: Any, row_type: type[tuple[Any, ...]]
) -> None:
    """Rows read per item (too many to wrap each in a NamedTuple) unpack into its field names."""
    fields = [name.rstrip("_") for name in row_type._fields]  # type: ignore[attr-defined]
    unpacked = [[name.rstrip("_") for name in names] for names in _unpacked_names(decoder)]
    assert fields in unpacked, unpacked


# -- a save's path ----------------------------------------------------------------------------


class _ModulePaths:
    """Records, for every statestore call, the statestore modules on the call stack."""

    def __init__(self) -> None:
        self.paths: set[tuple[str, ...]] = set()
        self.lock = threading.Lock()

    def __call__(self, frame: FrameType, event: str, arg: Any) -> None:
        if event != "call":
            return
        stack: list[str] = []
        current: FrameType | None = frame
        while current is not None:
            module = current.f_globals.get("__name__", "")
            if module.startswith("statestore") and module != "statestore":
                name = module.removeprefix("statestore.")
                if not stack or stack[-1] != name:
                    stack.append(name)
            current = current.f_back
        if stack:
            with self.lock:
                self.paths.add(tuple(reversed(stack)))


async def test_a_save_walks_down_few_modules_and_never_back(tmp_path: Path) -> None:
    """A save's calls cross few modules, and no call path returns to a module it left."""
    async with StateStore.open(tmp_path / "state.db") as store:
        session = Session(user_id="u")
        exchange(session, "first")
        await store.save_session(session)
        exchange(session, "second")  # the append-only path
        recorder = _ModulePaths()
        # The writer thread runs already: a write of its own turns its profiling on.
        await store._db.write("profile", lambda tx: sys.setprofile(recorder))
        sys.setprofile(recorder)
        try:
            await store.save_session(session)
            await asyncio.sleep(0)
        finally:
            sys.setprofile(None)
            await store._db.write("profile", lambda tx: sys.setprofile(None))
    returning = [path for path in recorder.paths if len(set(path)) < len(path)]
    modules = {module for path in recorder.paths for module in path}
    assert returning == []
    print("modules a save crosses:", sorted(modules))
    print("longest call path:", " -> ".join(max(recorder.paths, key=len)))
    # 11 since telemetry: _telemetry is on every write's path (a span, the writer's metrics).
    assert len(modules) <= 11, sorted(modules)
    assert max(len(path) for path in recorder.paths) <= 5, max(recorder.paths, key=len)
