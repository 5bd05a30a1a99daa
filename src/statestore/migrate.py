"""Bring a database's schema to a revision with statestore's own alembic migrations.

The migration scripts ship inside the package (``statestore/migrations`` in the wheel) and
live at the top of a checkout (``migrations/``); both run the same scripts. Revisions are
recorded in :data:`VERSION_TABLE`, never in a host application's ``alembic_version``.
"""

from __future__ import annotations

from pathlib import Path

from alembic import command
from alembic.config import Config
from sqlalchemy.engine import Connection
from sqlalchemy.ext.asyncio import AsyncEngine

from statestore.engine import database_errors, write_connection
from statestore.errors import StateStoreError

__all__ = ["VERSION_TABLE", "alembic_config", "script_location", "upgrade_engine"]

VERSION_TABLE = "statestore_alembic_version"
"""The table where statestore's alembic revision is recorded."""


def script_location() -> str:
    """Return the folder holding statestore's migration scripts."""
    packaged = Path(__file__).parent / "migrations"
    if (packaged / "env.py").is_file():
        return str(packaged)
    checkout = Path(__file__).resolve().parents[2] / "migrations"
    if (checkout / "env.py").is_file():
        return str(checkout)
    raise StateStoreError("statestore's migration scripts are missing from this installation")


def alembic_config() -> Config:
    """Return an alembic configuration that runs statestore's migrations programmatically."""
    config = Config()
    config.set_main_option("script_location", script_location())
    return config


def _upgrade(connection: Connection, revision: str) -> None:
    config = alembic_config()
    config.attributes["connection"] = connection
    command.upgrade(config, revision)


async def upgrade_engine(engine: AsyncEngine, revision: str = "head") -> None:
    """Upgrade the database behind ``engine`` to ``revision`` in one write transaction.

    On SQLite the whole upgrade runs inside one ``BEGIN IMMEDIATE`` transaction, so
    processes racing to create the schema take turns, and a migration that fails leaves
    the database at the revision it had.
    """
    with database_errors("schema upgrade"):
        async with engine.connect() as connection:
            connection = await write_connection(connection)
            async with connection.begin():
                await connection.run_sync(_upgrade, revision)
