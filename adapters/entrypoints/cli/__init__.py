"""`sandboxctl`, the command line."""

from sandbox_lifecycle.adapters.entrypoints.cli.commands import main

__all__ = ["main"]
