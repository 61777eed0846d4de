"""The provider registry: which sandbox providers this installation has, found by their folders.

A provider is a subpackage of ``adapters.providers`` whose ``__init__.py`` exposes ``PROVIDER``, an
instance of a :class:`ProviderEntry` subclass. ``SANDBOX_PROVIDER`` names the one in use. The entry
declares what the rest of the program needs to know of the provider: its name, the pip extra that
installs its library, how to parse its own variables, what it refuses, how to build it, what it shows
and keeps secret, and where its doctor checks are. Nothing outside the provider's folder names it.

Found by walking the folders, not by entry points: ``importlib.metadata`` (which entry points need) costs
a short command more than its own work, and a plain checkout has no installed metadata at all. See
docs/providers.md.
"""

from __future__ import annotations

import functools
import importlib
import pkgutil
from abc import ABC, abstractmethod
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar, Generic, TypeVar

import sandbox_lifecycle.adapters.providers as providers_package
from sandbox_lifecycle.adapters.composition.environ import EnvReader, Shared
from sandbox_lifecycle.core.errors import ConfigError

if TYPE_CHECKING:
    from sandbox_lifecycle.core.ports import SandboxProvider, SnapshotStore

OwnSettings = TypeVar("OwnSettings")


@dataclass(frozen=True)
class Host:
    """What the composition root lends a provider's builder besides the provider's own settings."""

    # The values every provider may build on: the deployment (which resources are ours), the idle
    # timeout, the model API the gateway forwards to and the gateway's state directory.
    shared: Shared
    # The configured snapshot store (a local directory or S3), built when called: only a provider that
    # keeps snapshots outside itself asks for one.
    snapshot_store: Callable[[], SnapshotStore]

    @property
    def deployment(self) -> str:
        return self.shared.deployment


class ProviderEntry(ABC, Generic[OwnSettings]):
    """What one provider declares. Subclass it in the provider's folder and expose an instance as
    ``PROVIDER`` in the folder's ``__init__.py``, which stays light: it is imported by every command."""

    # The value of SANDBOX_PROVIDER that chooses it.
    name: ClassVar[str]
    # `pip install 'sandbox-lifecycle[<extra>]'` installs its library ...
    extra: ClassVar[str]
    # ... which is this module: found (not imported) before a build, so a missing one is a ConfigError
    # naming the extra before anything is written.
    library: ClassVar[str]
    # What the doctor calls the thing it talks to ("Docker engine"), and what to do when it cannot.
    label: ClassVar[str]
    unreachable_fix: ClassVar[str]
    # Set when the provider keeps its own snapshots (E2B's native pause): shown instead of the snapshot
    # store, and the store is then not probed.
    native_snapshots: ClassVar[str | None] = None
    # The submodule of the provider's folder holding its doctor checks (``CHECKS``, ``SLOTS``; see
    # ``entrypoints.cli.doctor``), or None when it has none.
    doctor: ClassVar[str | None] = None

    @abstractmethod
    def parse(self, reader: EnvReader, shared: Shared) -> OwnSettings:
        """The provider's own settings from its variables; a bad value is ``reader.bad(...)``, never an
        exception, so one error names every bad variable. Parsed whichever provider is chosen."""

    @abstractmethod
    def build(self, own: OwnSettings, host: Host) -> SandboxProvider:
        """The provider. Its library is known to be installed; import it here, not at the top."""

    def refuse(self, own: OwnSettings) -> None:
        """Raise ProviderRefused when this configuration must never run (checked with the settings)."""

    def require(self, own: OwnSettings) -> None:
        """Raise ConfigError when a build would need what is missing (a credential). Checked before a
        build only: read-only commands work without it."""

    def secrets(self, own: OwnSettings) -> tuple[str, ...]:
        """Secret values these settings hold, scrubbed from every message."""
        return ()

    def describe(self, own: OwnSettings) -> dict[str, str]:
        """What `sandboxctl doctor` shows of these settings besides the common ones; never a secret."""
        return {}

    @property
    def doctor_module(self) -> str | None:
        return f"{type(self).__module__}.{self.doctor}" if self.doctor else None


@functools.cache
def registered() -> Mapping[str, ProviderEntry[Any]]:
    """Every provider found in the folders of ``adapters.providers``, by name (sorted)."""
    found: dict[str, ProviderEntry[Any]] = {}
    for info in sorted(pkgutil.iter_modules(providers_package.__path__), key=lambda i: i.name):
        if not info.ispkg:
            continue
        module = importlib.import_module(f"{providers_package.__name__}.{info.name}")
        entry = getattr(module, "PROVIDER", None)
        if not isinstance(entry, ProviderEntry):
            continue  # a shared subpackage, not a provider
        if entry.name in found:
            raise ConfigError(f"two provider folders declare the name {entry.name!r}: {module.__name__}")
        found[entry.name] = entry
    return found


def unknown_provider(name: str) -> str:
    """The problem of a SANDBOX_PROVIDER no folder declares, naming the ones that are registered."""
    return (
        f"SANDBOX_PROVIDER must be one of {', '.join(registered())} (the registered providers), got {name!r}"
    )


def entry(name: str) -> ProviderEntry[Any]:
    """The registered provider of that name; ConfigError listing the registered names when none is."""
    found = registered().get(name)
    if found is None:
        raise ConfigError(unknown_provider(name))
    return found
