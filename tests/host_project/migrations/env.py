"""A host's env.py: its own migrations, then statestore's, on one connection."""

from alembic import context
from host_models import metadata
from sqlalchemy import engine_from_config, pool

import statestore.migrate

config = context.config
engine = engine_from_config(
    config.get_section(config.config_ini_section, {}),
    prefix="sqlalchemy.",
    poolclass=pool.NullPool,
)
with engine.connect() as connection:
    context.configure(
        connection=connection,
        target_metadata=metadata,
        include_name=statestore.migrate.include_name,
    )
    with context.begin_transaction():
        context.run_migrations()
    # statestore keeps its own history in its own version table; at head this does nothing.
    statestore.migrate.upgrade_on_connection(connection)
    connection.commit()
