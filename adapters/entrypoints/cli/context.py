"""What every verb of `sandboxctl` shares: the settings and the service a command builds once, the usage
error, the exit codes scripts react to and the one-line failure message."""

from __future__ import annotations

import argparse
import os
import sys
from typing import TYPE_CHECKING

from sandbox_lifecycle.adapters.composition.scrubbing import environ_secrets, scrub
from sandbox_lifecycle.adapters.composition.settings import Settings

if TYPE_CHECKING:
    from sandbox_lifecycle.core.service import SandboxService

# Distinct exit codes so scripts can react without parsing messages.
EXIT_ERROR, EXIT_USAGE, EXIT_BUSY, EXIT_NOT_FOUND, EXIT_EXPIRED, EXIT_TIMEOUT = 1, 2, 3, 4, 5, 124
# The fleet stayed full for SANDBOX_CAPACITY_WAIT_MS: a temporary failure (sysexits' EX_TEMPFAIL).
EXIT_CAPACITY = 75

# Commands that only read the log: they work without provider credentials (and never load its SDK).
READ_ONLY = frozenset({"ls", "show", "history", "replay", "doctor"})


class Usage(Exception):
    """A command line that cannot run as given: exit 2 with the message, before anything is touched."""


def settings_of(args: argparse.Namespace) -> Settings:
    """The command's settings, read from the environment once; their secrets join the log scrubber."""
    if getattr(args, "settings", None) is None:
        args.settings = Settings.from_env()
        if getattr(args, "log_context", None) is not None:
            args.log_context.add_secrets(args.settings.secrets())
    settings: Settings = args.settings
    return settings


def service_of(args: argparse.Namespace, *, read_only: bool | None = None) -> SandboxService:
    """The service the command runs on; ``read_only`` (default: the verb is in READ_ONLY) builds it
    without requiring the provider's credentials."""
    # Imported here: `ls` and `show` read rows without the service, and the composition root loads the
    # service and its decider (tests/integration/adapters/entrypoints/cli/test_imports.py holds them to that).
    from sandbox_lifecycle.adapters.composition.bootstrap import build_service

    if read_only is None:
        read_only = args.cmd in READ_ONLY
    return build_service(settings=settings_of(args), require_provider=not read_only)


def scrubbed(args: argparse.Namespace, text: str) -> str:
    """``text`` without the settings' and the environment's secrets."""
    settings = getattr(args, "settings", None)
    # The environment's secrets always: some (the audit signing key) are read outside Settings.
    secrets = environ_secrets(os.environ)
    return scrub(text, (*settings.secrets(), *secrets) if settings is not None else secrets)


def fail(args: argparse.Namespace, message: str) -> None:
    """``sandboxctl: <message>`` on stderr, on one line, secrets scrubbed."""
    print(f"sandboxctl: {scrubbed(args, ' '.join(message.split()))}", file=sys.stderr)
