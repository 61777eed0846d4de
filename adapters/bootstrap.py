"""Composition root: read settings, choose the implementations, build the service."""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from sandbox_lifecycle.adapters.settings import Settings
from sandbox_lifecycle.core.errors import ConfigError
from sandbox_lifecycle.core.ports import SandboxProvider, SnapshotStore
from sandbox_lifecycle.core.service import SandboxService

log = logging.getLogger("sandbox_lifecycle")


def build_store(settings: Settings, *, migrate_embedded: bool = True) -> Any:
    from sandbox_lifecycle.events import migrate
    from sandbox_lifecycle.events.store import SqlEventStore

    url = settings.database_url
    if url.startswith("sqlite"):
        # The embedded default is ours to manage: bring it to the current schema on first use.
        path = url.split("///", 1)[-1]
        if path and path != ":memory:":
            Path(path).parent.mkdir(parents=True, exist_ok=True)
        if migrate_embedded:
            migrate.upgrade(url)
    else:
        current, head = migrate.current(url), migrate.head()
        if current != head:
            raise ConfigError(
                f"the database is at schema revision {current or 'none'}, this release needs {head}: "
                "run `sandboxctl db upgrade`"
            )
    return SqlEventStore(url)


def build_snapshot_store(settings: Settings) -> SnapshotStore:
    if settings.s3_bucket:
        from sandbox_lifecycle.adapters.snapshots.s3 import S3SnapshotStore

        store = S3SnapshotStore.from_env(settings.environ)
        # A fresh MinIO or test endpoint has no bucket yet; an existing one is left as it is.
        store.ensure_bucket()
        return store
    from sandbox_lifecycle.adapters.snapshots.localfs import LocalSnapshotStore

    settings.snapshot_dir.mkdir(parents=True, exist_ok=True)
    return LocalSnapshotStore(settings.snapshot_dir)


def build_provider(settings: Settings) -> SandboxProvider:
    if settings.provider == "docker":
        from sandbox_lifecycle.adapters.providers.docker import DockerProvider

        return DockerProvider(
            settings.docker_images,
            build_snapshot_store(settings),
            environ=settings.environ,
            deployment=settings.deployment,
        )
    from sandbox_lifecycle.adapters.providers.e2b import E2BProvider, E2BSettings

    return E2BProvider(E2BSettings.from_env(settings.environ), deployment=settings.deployment)


class LazyProvider:
    """Builds the provider on first use, so read-only commands work without provider credentials."""

    def __init__(self, name: str, factory: Callable[[], SandboxProvider]) -> None:
        self.name = name
        self._factory = factory
        self._provider: SandboxProvider | None = None

    def __getattr__(self, attr: str) -> Any:
        if self._provider is None:
            self._provider = self._factory()
        return getattr(self._provider, attr)


def build_service(
    environ: Mapping[str, str] | None = None, *, settings: Settings | None = None
) -> SandboxService:
    settings = settings or Settings.from_env(environ)
    if settings.provider == "docker":
        from sandbox_lifecycle.adapters.providers.docker import refuse_production

        # Before anything can be recorded in the log, not when the lazy provider is first used.
        refuse_production(settings.environ)
    provider: Any = LazyProvider(settings.provider, lambda: build_provider(settings))
    return SandboxService(build_store(settings), provider, policy=settings.policy)
