"""Random ids: correlation ids, turn ids, sandbox ids."""

from __future__ import annotations


def random_id() -> str:
    """A random uuid4 in hex. uuid is imported on the first call: with the platform module it loads, it
    is a noticeable share of a short command's start-up, and an exec or an ls makes no new id."""
    import uuid  # why here: measured in a short command's start-up (tests/**/test_imports.py)

    return uuid.uuid4().hex
