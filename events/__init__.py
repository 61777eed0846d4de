"""The log: event types, their codec, the hash chain, the SQL event store and its migrations.

Everything an auditor replays is defined here, so this package depends on nothing else in the project:
it may import the standard library, SQLAlchemy, Alembic and orjson, never ``core`` or ``adapters``.
"""
