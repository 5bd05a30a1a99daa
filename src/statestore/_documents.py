"""Named documents by category: the checks and the one read or write of each operation.

:class:`statestore.StateStore`'s document methods call these with its
:class:`~statestore._database.Database`. In the ``sessions`` category a JSON document is
a session, saved and loaded as one.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from functools import partial
from typing import Any

from pydantic import BaseModel

from statestore import _ops, _rows
from statestore._database import Database, acknowledged
from statestore._validate import (
    SESSIONS_CATEGORY,
    check_category,
    check_name,
    check_text,
    check_writable_category,
    check_writable_name,
    session_from_document,
)

__all__ = [
    "delete_file",
    "list_categories",
    "list_category",
    "load_json",
    "load_markdown",
    "save_json",
    "save_markdown",
]


async def _save(db: Database, category: str, name: str, kind: str, content: str) -> None:
    now = datetime.now(UTC)
    save = partial(
        _ops.save_document, category=category, name=name, kind=kind, content=content, now=now
    )
    await db.write("save_document", save)


async def _load(db: Database, category: str, name: str, kind: str) -> str | None:
    load = partial(_ops.load_document, category=category, name=name, kind=kind)
    return await db.read("load_document", load)


async def save_markdown(db: Database, category: str, name: str, content: str) -> None:
    """Check and store a markdown document."""
    check_writable_category(category)
    check_writable_name(name, suffix=".md")
    check_text("content", content)
    await _save(db, category, name, "markdown", content)


async def load_markdown(db: Database, category: str, name: str) -> str | None:
    """Return a markdown document's text, or ``None``."""
    check_category(category)
    check_name(name)
    return await _load(db, category, name, "markdown")


async def save_json(db: Database, category: str, name: str, data: Any) -> None:
    """Check and store a JSON document (in ``sessions``: save it as that session)."""
    check_writable_category(category)
    check_writable_name(name)
    if category == SESSIONS_CATEGORY:
        await acknowledged(db.capture_save(session_from_document(name, data)))
        return
    await _save(db, category, name, "json", _rows.dump_json_document("data", data))


async def load_json(db: Database, category: str, name: str, model: type[BaseModel] | None) -> Any:
    """Return a JSON document parsed or validated into ``model``, or ``None``."""
    check_category(category)
    check_name(name)
    if category == SESSIONS_CATEGORY:
        load = partial(_ops.load_session, session_id=name)
        session = await db.read("load_session", load, session_id=name)
        if session is None:
            return None
        dumped = session.model_dump(mode="json")
        return dumped if model is None else model.model_validate(dumped)
    text = await _load(db, category, name, "json")
    if text is None:
        return None
    return json.loads(text) if model is None else model.model_validate_json(text)


async def list_category(db: Database, category: str) -> list[str]:
    """Return a category's sorted document names."""
    check_category(category)
    return await db.read("list_category", partial(_ops.list_category, category=category))


async def list_categories(db: Database) -> list[str]:
    """Return every category holding a document, sorted."""
    return await db.read("list_categories", _ops.list_categories)


async def delete_file(db: Database, category: str, name: str) -> bool:
    """Delete the JSON document of that name if present, else the markdown one."""
    check_category(category)
    check_name(name)
    return await db.write("delete_file", partial(_ops.delete_file, category=category, name=name))
