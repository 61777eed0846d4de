"""This release's version, looked up only when something wants it (the default tag of E2B templates)."""

from __future__ import annotations

import functools


@functools.cache
def package_version() -> str:
    """The installed distribution's version, or "latest" when it is not installed.

    importlib.metadata is imported here, when a version is wanted: with what it loads (email, zipfile)
    and the search for the installed distribution it costs more than a short command's own work.
    """
    # why here: importlib.metadata costs a short command ~65 ms; only asked for when shown
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("sandbox-lifecycle")
    except PackageNotFoundError:
        return "latest"
