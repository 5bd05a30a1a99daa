"""Alembic environment for statestore's own tables.

Run from a checkout (``alembic upgrade head``), it opens the database named by
``-x db=PATH_OR_URL``, else ``$STATESTORE_DB``, else ``sqlalchemy.url`` in ``alembic.ini``,
and migrates it the way statestore always does (see ``statestore.migrate``): one write
transaction, foreign keys off during it on SQLite, checked afterwards. Given a connection in
``config.attributes["connection"]``, it migrates on that connection instead.
"""

from __future__ import annotations

import asyncio
import os
from logging.config import fileConfig

from alembic import context
from sqlalchemy.engine import Connection

from statestore._engine import create_engine, resolve_url
from statestore._schema import metadata
from statestore.migrate import VERSION_TABLE, check_foreign_keys, migrating, schema_tables_only

config = context.config
if config.config_file_name is not None and "connection" not in config.attributes:
    fileConfig(config.config_file_name, disable_existing_loggers=False)


def _configure(**options: object) -> None:
    context.configure(
        target_metadata=metadata,
        version_table=VERSION_TABLE,
        render_as_batch=True,
        compare_type=True,
        include_name=schema_tables_only,
        **options,
    )


def _database() -> str:
    return (
        context.get_x_argument(as_dictionary=True).get("db")
        or os.environ.get("STATESTORE_DB")
        or config.get_main_option("sqlalchemy.url")
        or "statestore.db"
    )


def run_on_connection(connection: Connection) -> None:
    _configure(connection=connection)
    with context.begin_transaction():
        context.run_migrations()
    check_foreign_keys(connection)


async def run_online() -> None:
    engine = create_engine(resolve_url(_database()))
    try:
        async with migrating(engine) as connection:
            await connection.run_sync(run_on_connection)
    finally:
        await engine.dispose()


if context.is_offline_mode():
    _configure(url=resolve_url(_database()), literal_binds=True)
    with context.begin_transaction():
        context.run_migrations()
elif (connection := config.attributes.get("connection")) is not None:
    run_on_connection(connection)
else:
    asyncio.run(run_online())
