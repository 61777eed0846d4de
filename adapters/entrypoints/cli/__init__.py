"""`sandboxctl`, the command line.

``commands`` is its grammar and dispatch (which verbs exist, their parsers, ``main`` and the exit codes);
``context`` what every verb shares (settings, service, the usage error); each family of verbs has its
module (``sandboxes``, ``transfer``, ``operations``, ``processes``, ``agent``, ``gateway``, ``audit``,
``doctor``), and ``render``/``pretty`` show results to scripts and people. A verb's module is imported
only when that verb runs. This package may import the composition root, core and events; nothing below
it imports the CLI.
"""

from sandbox_lifecycle.adapters.entrypoints.cli.commands import main

__all__ = ["main"]
