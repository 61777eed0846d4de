"""What the Docker provider makes of an engine error, on either transport (the stdlib engine client of
``engine.py`` or the docker SDK): a ProviderError, a ProviderLost when the container is gone, and the
start-the-engine hint when no engine answers.

The SDK's errors are recognised without importing it: none can have been raised before it was loaded, so
an exec on the stdlib client never loads it just to look at an error.
"""

from __future__ import annotations

import sys

from sandbox_lifecycle.adapters.providers.docker.engine import (
    EngineAPIError,
    EngineTimeout,
    EngineUnreachable,
)
from sandbox_lifecycle.core.errors import ProviderError, ProviderLost

START_ENGINE_HINT = (
    "start it with `sudo scripts/start-docker.sh` (or start Docker Desktop), or set DOCKER_HOST"
)


def mapped(exc: BaseException, action: str, ref: str | None = None) -> ProviderError:
    """The ProviderError (or ProviderLost) that says what ``action`` on container ``ref`` ran into."""
    if is_unreachable(exc):
        return ProviderError(f"{action}: the Docker engine is unreachable ({exc}); {START_ENGINE_HINT}")
    if is_not_found(exc):
        what = f"container {ref[:12]}" if ref else "the container"
        return ProviderLost(f"{action}: {what} no longer exists ({explain(exc)})")
    if is_api_error(exc):
        return ProviderError(f"{action} failed: {explain(exc)}")
    return ProviderError(f"{action} failed: {exc}")


def is_engine_error(exc: BaseException) -> bool:
    """An error of either transport (which ``mapped`` turns into a ProviderError)."""
    if isinstance(exc, EngineUnreachable | EngineTimeout | EngineAPIError):
        return True
    if not _sdk_loaded():
        return False
    import docker.errors  # why: already in sys.modules (checked above); never loads the SDK
    import requests.exceptions

    return isinstance(exc, docker.errors.DockerException | requests.exceptions.RequestException)


def is_unreachable(exc: BaseException) -> bool:
    if isinstance(exc, EngineUnreachable):
        return True
    if not _sdk_loaded():
        return False
    import docker.errors  # why: already in sys.modules (checked above); never loads the SDK
    import requests.exceptions

    return isinstance(exc, requests.exceptions.ConnectionError) or (
        isinstance(exc, docker.errors.DockerException) and not isinstance(exc, docker.errors.APIError)
    )


def is_not_found(exc: BaseException) -> bool:
    if isinstance(exc, EngineAPIError):
        return exc.status_code == 404
    if not _sdk_loaded():
        return False
    import docker.errors  # why: already in sys.modules (checked above); never loads the SDK

    return isinstance(exc, docker.errors.NotFound)


def is_api_error(exc: BaseException) -> bool:
    if isinstance(exc, EngineAPIError):
        return True
    if not _sdk_loaded():
        return False
    import docker.errors  # why: already in sys.modules (checked above); never loads the SDK

    return isinstance(exc, docker.errors.APIError)


def is_enospc(exc: BaseException) -> bool:
    return "no space left on device" in str(exc).lower()


def explain(exc: BaseException) -> str:
    return str(getattr(exc, "explanation", None) or exc)


def _sdk_loaded() -> bool:
    return sys.modules.get("docker") is not None
