"""statestore: an AI-agent service's conversation state in SQL.

The public API is what this module exports; everything else is internal.
"""

from statestore.errors import (
    DatabaseError,
    InvalidDataError,
    InvalidNameError,
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
    "Session",
    "SessionSummary",
    "StateStore",
    "StateStoreError",
    "StoreClosedError",
    "UserMessage",
]
