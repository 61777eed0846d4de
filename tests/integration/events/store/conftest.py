"""The fixtures of this folder's tests, from tests.support.fixtures.store."""

from tests.support.fixtures.store import (  # noqa: F401
    backend,
    db_url,
    empty_db_url,
    pg_base_url,
    pg_migrated_url,
    sqlite_template,
    store,
)
