"""This pytest run's name: every deployment a test makes starts with ``PREFIX``, so the run's clean-up
(and a reader of `docker ps` or the state directories) can tell what it made from what it did not."""

from __future__ import annotations

import uuid

# 't' and 7 hex digits: short enough for labels, container and file names built from it.
PREFIX = "t" + uuid.uuid4().hex[:7]


def new_deployment(role: str = "") -> str:
    """A deployment name of this run, unique to the caller; ``role`` makes it readable in listings."""
    return f"{PREFIX}{'-' + role if role else ''}-{uuid.uuid4().hex[:6]}"
