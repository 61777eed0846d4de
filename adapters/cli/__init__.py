"""`sandboxctl`, the command line."""

from sandbox_lifecycle.adapters.cli.commands import main

__all__ = ["main"]
