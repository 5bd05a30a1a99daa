"""A faithful model of the old file store, for comparison: one pretty JSON file per session.

Saving writes the whole session to a temp file and renames it over the old one; listing
reads and parses every session file, then sorts. This is what statestore replaces.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

from statestore import Session, SessionSummary
from statestore._rows import project_id_of
from statestore.filestore import session_file_text


class FileStore:
    """Sessions as ``<root>/sessions/<id>.json``, written by temp file and rename."""

    def __init__(self, root: Path) -> None:
        self.sessions_dir = root / "sessions"
        self.sessions_dir.mkdir(parents=True, exist_ok=True)

    def save_session(self, session: Session) -> None:
        """Write the whole session as pretty JSON, atomically by rename."""
        text = session_file_text(session)
        fd, temp_path = tempfile.mkstemp(dir=self.sessions_dir, suffix=".tmp")
        with os.fdopen(fd, "w", encoding="utf-8") as temp_file:
            temp_file.write(text)
        os.replace(temp_path, self.sessions_dir / f"{session.id}.json")

    def list_sessions(self) -> list[SessionSummary]:
        """Read every session file and return summaries, most recently updated first."""
        summaries = []
        for path in self.sessions_dir.glob("*.json"):
            session = Session.model_validate_json(path.read_bytes())
            summaries.append(
                SessionSummary(
                    id=session.id,
                    user_id=session.user_id,
                    message_count=len(session.user_messages),
                    active_seed_id=session.active_seed_id,
                    project_id=project_id_of(session.metadata),
                    created_at=session.created_at,
                    updated_at=session.updated_at,
                )
            )
        summaries.sort(key=lambda s: (s.updated_at, s.id), reverse=True)
        return summaries
