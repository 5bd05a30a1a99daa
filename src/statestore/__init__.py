"""statestore: an AI-agent service's conversation state in SQL.

The public API is what this module exports; everything else is internal.
"""

from statestore import migrate
from statestore._listing import ListingFilters
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
    SessionExistsError,
    SessionNotFoundError,
    StateStoreError,
    StorageFullError,
    StoreClosedError,
)
from statestore.filestore import ExportReport, ImportReport, SkippedFile
from statestore.models import (
    AgentResponse,
    SearchHit,
    Session,
    SessionSummary,
    SessionTail,
    UserMessage,
)
from statestore.prune import PruneConfig, PruneThrottle
from statestore.stats import StoreStats
from statestore.store import StateStore
from statestore.sync import SyncStateStore

__all__ = [
    "AgentResponse",
    "ConstraintError",
    "DatabaseBusyError",
    "DatabaseError",
    "DatabaseUnavailableError",
    "ExportReport",
    "ImportReport",
    "InvalidArgumentError",
    "InvalidDataError",
    "InvalidNameError",
    "ListingFilters",
    "MigrationError",
    "PruneConfig",
    "PruneThrottle",
    "ReentrantWriteError",
    "SchemaVersionError",
    "SearchHit",
    "Session",
    "SessionExistsError",
    "SessionNotFoundError",
    "SessionSummary",
    "SessionTail",
    "SkippedFile",
    "StateStore",
    "StateStoreError",
    "StorageFullError",
    "StoreClosedError",
    "StoreStats",
    "SyncStateStore",
    "UserMessage",
    "migrate",
]
