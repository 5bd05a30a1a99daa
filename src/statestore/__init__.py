"""statestore: an AI-agent service's conversation state in SQL.

The public API is what this module exports; everything else is internal.
"""

from statestore import migrate
from statestore.errors import (
    DatabaseError,
    InvalidDataError,
    InvalidNameError,
    SchemaVersionError,
    StateStoreError,
    StoreClosedError,
)
from statestore.models import AgentResponse, Session, SessionSummary, UserMessage
from statestore.prune import PruneConfig, PruneThrottle
from statestore.store import StateStore

__all__ = [
    "AgentResponse",
    "DatabaseError",
    "InvalidDataError",
    "InvalidNameError",
    "PruneConfig",
    "PruneThrottle",
    "SchemaVersionError",
    "Session",
    "SessionSummary",
    "StateStore",
    "StateStoreError",
    "StoreClosedError",
    "UserMessage",
    "migrate",
]
