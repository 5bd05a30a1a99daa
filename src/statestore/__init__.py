"""statestore: an AI-agent service's conversation state in SQL.

The public API is what this module exports; everything else is internal.
"""

from statestore import migrate
from statestore._validate import MAX_JSON_DEPTH, MAX_TEXT_LENGTH
from statestore.errors import (
    ConstraintError,
    DatabaseBusyError,
    DatabaseError,
    DatabaseUnavailableError,
    InvalidArgumentError,
    InvalidDataError,
    InvalidNameError,
    MigrationError,
    ReentrantWriteError,
    SchemaVersionError,
    StateStoreError,
    StorageFullError,
    StoreClosedError,
)
from statestore.models import AgentResponse, Session, SessionSummary, UserMessage
from statestore.prune import PruneConfig, PruneThrottle
from statestore.store import StateStore

__all__ = [
    "MAX_JSON_DEPTH",
    "MAX_TEXT_LENGTH",
    "AgentResponse",
    "ConstraintError",
    "DatabaseBusyError",
    "DatabaseError",
    "DatabaseUnavailableError",
    "InvalidArgumentError",
    "InvalidDataError",
    "InvalidNameError",
    "MigrationError",
    "PruneConfig",
    "PruneThrottle",
    "ReentrantWriteError",
    "SchemaVersionError",
    "Session",
    "SessionSummary",
    "StateStore",
    "StateStoreError",
    "StorageFullError",
    "StoreClosedError",
    "UserMessage",
    "migrate",
]
