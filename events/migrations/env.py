"""Alembic environment of the event store.

The URL is taken, in order, from ``config.attributes["url"]`` (events.migrate), the ``sqlalchemy.url``
option, or the ``SANDBOX_DATABASE_URL`` environment variable.
"""

from __future__ import annotations

import os
from logging.config import fileConfig

import sqlalchemy as sa
from alembic import context

from sandbox_lifecycle.events.tables import metadata

config = context.config
if config.config_file_name is not None and config.attributes.get("configure_logger", True):
    fileConfig(config.config_file_name, disable_existing_loggers=False)


def _url() -> str:
    url = config.attributes.get("url") or config.get_main_option("sqlalchemy.url")
    url = url or os.environ.get("SANDBOX_DATABASE_URL")
    if not url:
        raise SystemExit("no database URL: set SANDBOX_DATABASE_URL (e.g. sqlite:///sandbox.db)")
    return str(url)


def run_migrations_offline() -> None:
    context.configure(url=_url(), target_metadata=metadata, literal_binds=True, render_as_batch=True)
    with context.begin_transaction():
        context.run_migrations()


def run_migrations_online() -> None:
    engine = sa.create_engine(_url(), poolclass=sa.pool.NullPool)
    with engine.connect() as connection:
        if connection.dialect.name == "sqlite":
            # The store runs SQLite in WAL mode; switching here, while nobody else has the file open
            # yet, spares the first store connections a race for the write lock to switch it.
            connection.exec_driver_sql("PRAGMA journal_mode = WAL")
            connection.commit()
        # render_as_batch: SQLite can only ALTER a table by copying it, which batch mode does.
        context.configure(connection=connection, target_metadata=metadata, render_as_batch=True)
        with context.begin_transaction():
            context.run_migrations()
    engine.dispose()


if context.is_offline_mode():
    run_migrations_offline()
else:
    run_migrations_online()
