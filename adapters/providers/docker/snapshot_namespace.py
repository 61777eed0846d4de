"""A SnapshotStore seen through one deployment's ``<deployment>/`` prefix.

Several deployments (staging and production, two data dirs) may share one snapshot directory or bucket;
the Docker provider stores and lists each one's archives under its own prefix, so a deployment never
lists, reconciles or deletes another's.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import replace
from datetime import datetime
from typing import BinaryIO

from sandbox_lifecycle.core.ports import SnapshotInfo, SnapshotStore


class NamespacedStore:
    """Callers store, list and get back the keys they always used, and never see another deployment's
    objects in the same directory or bucket."""

    def __init__(self, store: SnapshotStore, deployment: str) -> None:
        self._store = store
        self._prefix = f"{deployment}/"

    def put(self, key: str, stream: BinaryIO) -> SnapshotInfo:
        return replace(self._store.put(self._prefix + key, stream), key=key)

    def open(self, key: str) -> BinaryIO:
        return self._store.open(self._prefix + key)

    def stat(self, key: str) -> int | None:
        return self._store.stat(self._prefix + key)

    def delete(self, key: str) -> None:
        self._store.delete(self._prefix + key)

    def remove_stale_uploads(self, older_than: datetime, prefix: str = "") -> list[str]:
        return self._store.remove_stale_uploads(older_than, self._prefix + prefix)

    def keys(self, prefix: str = "") -> Iterator[str]:
        for key in self._store.keys(self._prefix + prefix):
            yield key.removeprefix(self._prefix)
