"""Composition root: read settings, choose the implementations, build the service.

The rule it keeps: nothing is appended to the log before the provider could be built. A service that can
write builds its provider first (a missing credential, a missing extra or a bad snapshot store is a
``ConfigError`` before the log is even opened). A read-only service (``require_provider=False``, what
`sandboxctl ls` uses) does not need provider credentials; its provider is built on first use, and its
store will not append until that build has succeeded, so a write through it still changes nothing.
"""

from __future__ import annotations

import importlib.util
import logging
import threading
from collections.abc import Callable, Mapping
from typing import Any

from sandbox_lifecycle.adapters.composition.environ import Shared
from sandbox_lifecycle.adapters.composition.scrubbing import first_line, scrub
from sandbox_lifecycle.adapters.composition.settings import Settings, sqlite_path
from sandbox_lifecycle.adapters.providers import registry
from sandbox_lifecycle.core.errors import ConfigError, StoreError
from sandbox_lifecycle.core.ports import SandboxProvider, SnapshotStore
from sandbox_lifecycle.core.service import SandboxService
from sandbox_lifecycle.events import revision
from sandbox_lifecycle.events.names import redact_url
from sandbox_lifecycle.events.store import open_store

log = logging.getLogger("sandbox_lifecycle")

# module to import -> (extra that installs it, what needs it); a provider's is in its registry entry.
_EXTRAS = {
    "boto3": ("s3", "S3_BUCKET (snapshots in S3)"),
    "psycopg": ("postgres", "a postgresql+psycopg:// SANDBOX_DATABASE_URL"),
    "prometheus_client": ("metrics", "sandboxctl scheduler --metrics-port"),
}


def require_extra(module: str) -> None:
    """ConfigError naming the extra to install when ``module`` (a backing service's library) is missing."""
    extra, needed_by = _EXTRAS[module]
    require_library(module, extra, needed_by)


def require_library(module: str, extra: str, needed_by: str) -> None:
    """ConfigError naming ``extra`` when ``module`` is not installed.

    Found, not imported: the library is loaded where it is used, and a short command may not use it at
    all (an exec on Docker goes through the stdlib engine client)."""
    try:
        found = importlib.util.find_spec(module) is not None
        reason = f"No module named {module!r}"
    except (ImportError, ValueError) as exc:  # a broken installation, or a module without a spec
        found, reason = False, first_line(str(exc))
    if not found:
        raise ConfigError(
            f"{needed_by} needs the {module} library, which is not installed ({reason}): "
            f"pip install 'sandbox-lifecycle[{extra}]'"
        ) from None


def build_store(settings: Settings, *, migrate_embedded: bool = True) -> Any:
    url = settings.database_url
    if not url.startswith("sqlite"):
        require_extra("psycopg")
    try:
        if url.startswith("sqlite"):
            # The embedded default is ours to manage: its directory is made and its schema brought up to
            # date on first use. Settings refused a file whose directory is missing anywhere else.
            path = sqlite_path(url)
            if path is not None and path.parent == settings.data_dir:
                path.parent.mkdir(parents=True, exist_ok=True)
            # One query decides; alembic (0.2 s of imports) only loads when there is something to do.
            if migrate_embedded and revision.current_revision(url, path) != head_revision():
                from sandbox_lifecycle.events import migrate

                migrate.upgrade(url)
        else:
            current, head = revision.current_revision(url), head_revision()
            if current != head:
                raise ConfigError(
                    f"the database is at schema revision {current or 'none'}, this release needs {head}: "
                    "run `sandboxctl db upgrade`"
                )
    except ConfigError:
        raise
    except Exception as exc:
        if not _is_database_error(exc):
            raise
        raise StoreError(database_unreachable(settings, exc)) from None
    return open_store(url)


def head_revision() -> str | None:
    head = revision.head_revision()
    if head is None:  # scripts the scan cannot read: alembic decides
        from sandbox_lifecycle.events import migrate

        head = migrate.head()
    return head


def _is_database_error(exc: BaseException) -> bool:
    # why here: only an error path inspects the driver's exception types
    import sqlite3

    import sqlalchemy.exc

    return isinstance(exc, sqlalchemy.exc.SQLAlchemyError | sqlite3.Error | OSError)


def database_unreachable(settings: Settings, exc: BaseException) -> str:
    """One line naming where the database is (never its password) and the driver's first line."""
    orig = getattr(exc, "orig", None) or exc
    reason = scrub(first_line(str(orig)), settings.secrets())
    return f"cannot open the database at {_where(settings.database_url)}: {reason}"


def _where(url: str) -> str:
    if url.startswith("sqlite"):
        return str(sqlite_path(url) or ":memory:")
    # why here: only error messages name the database's host
    from urllib.parse import urlsplit

    parts = urlsplit(url)
    host = parts.hostname or "localhost (unix socket)"
    port = f":{parts.port}" if parts.port else ""
    return f"{host}{port}{parts.path or ''} ({redact_url(url).split('://', 1)[0]})"


def build_snapshot_store(settings: Settings) -> SnapshotStore:
    if settings.s3 is not None:
        require_extra("boto3")
        # why here: boto3 (the optional s3 extra) loads only with S3_BUCKET set
        from sandbox_lifecycle.adapters.snapshots.s3 import S3SnapshotStore

        store = S3SnapshotStore.from_settings(settings.s3)
        # A fresh MinIO or test endpoint has no bucket yet; an existing one is left as it is.
        store.ensure_bucket()
        return store
    # why here: only the configured store's module (and library: boto3 for S3) is loaded
    from sandbox_lifecycle.adapters.snapshots.localfs import LocalSnapshotStore

    # The directory is ours; Settings checked that its parent exists when it was set explicitly.
    try:
        settings.snapshot_dir.mkdir(parents=settings.snapshot_dir.parent == settings.data_dir, exist_ok=True)
    except OSError as exc:
        # Before anything is written: a suspend would otherwise find out with the intent in the log.
        raise ConfigError(
            f"SANDBOX_SNAPSHOT_DIR={settings.snapshot_dir} is not a usable directory "
            f"({exc.strerror or type(exc).__name__}); point it at a directory, or unset it for "
            "<data dir>/snapshots"
        ) from None
    return LocalSnapshotStore(settings.snapshot_dir)


def build_provider(settings: Settings) -> SandboxProvider:
    """The configured provider; ConfigError when its credential or its library is missing."""
    entry = registry.entry(settings.provider)
    own = settings.provider_settings[settings.provider]
    entry.require(own)
    require_library(entry.library, entry.extra, f"SANDBOX_PROVIDER={entry.name}")
    shared = Shared(
        idle_timeout=settings.policy.idle_timeout,
        deployment=settings.deployment,
        anthropic_base_url=settings.anthropic_base_url,
        anthropic_api_key=settings.anthropic_api_key,
        egress_state_dir=settings.egress_state_dir,
    )
    host = registry.Host(shared=shared, snapshot_store=lambda: build_snapshot_store(settings))
    return entry.build(own, host)


class LazyProvider:
    """Builds the provider on first use, so read-only commands work without provider credentials."""

    def __init__(self, name: str, factory: Callable[[], SandboxProvider]) -> None:
        self.name = name
        self._factory = factory
        self._provider: SandboxProvider | None = None
        # Threads of a web server share the service: exactly one of them builds the provider.
        self._lock = threading.Lock()

    def build(self) -> SandboxProvider:
        if self._provider is None:
            with self._lock:
                if self._provider is None:
                    self._provider = self._factory()
        return self._provider

    def __getattr__(self, attr: str) -> Any:
        return getattr(self.build(), attr)


class _ProviderFirst:
    """The event store of a read-only service: appends wait until the provider has been built.

    Every intent (create, suspend, a timer's GC...) is followed by a provider call; appending it with a
    provider that cannot be built would leave the sandbox stuck in a transitional state.
    """

    def __init__(self, store: Any, provider: LazyProvider) -> None:
        self._store = store
        self._provider = provider

    def append(self, *args: Any, **kwargs: Any) -> Any:
        self._provider.build()
        return self._store.append(*args, **kwargs)

    def __getattr__(self, attr: str) -> Any:
        return getattr(self._store, attr)


def build_service(
    environ: Mapping[str, str] | None = None,
    *,
    settings: Settings | None = None,
    provider: SandboxProvider | None = None,
    require_provider: bool = True,
) -> SandboxService:
    """The service, from ``environ`` (``os.environ`` unless given) or already parsed ``settings``.

    ``provider`` replaces the configured one (tests, benchmarks). ``require_provider=False`` is for
    read-only use: provider credentials may be missing, and any write then raises their ConfigError
    before anything is appended.
    """
    settings = settings or Settings.from_env(environ)
    if provider is not None:
        return SandboxService(
            build_store(settings), provider, policy=settings.policy, capacity=settings.capacity
        )
    if require_provider:
        # Built before the log is opened: a configuration that cannot run leaves the log untouched.
        built = build_provider(settings)
        return SandboxService(
            build_store(settings), built, policy=settings.policy, capacity=settings.capacity
        )
    lazy = LazyProvider(settings.provider, lambda: build_provider(settings))
    store: Any = _ProviderFirst(build_store(settings), lazy)
    placeholder: Any = lazy
    return SandboxService(store, placeholder, policy=settings.policy, capacity=settings.capacity)
