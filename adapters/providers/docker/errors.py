"""What the Docker provider makes of an engine error, on either transport (the stdlib engine client of
``engine.py`` or the docker SDK): a ProviderError, a ProviderLost when the container is gone, and the
start-the-engine hint when no engine answers.

The SDK's errors are recognised without importing it: none can have been raised before it was loaded, so
an exec on the stdlib client never loads it just to look at an error.
"""

from __future__ import annotations

import sys
from typing import Any

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
    sdk = _sdk_errors()
    return sdk is not None and isinstance(exc, sdk.DockerException | sdk.RequestException)


def is_unreachable(exc: BaseException) -> bool:
    if isinstance(exc, EngineUnreachable):
        return True
    sdk = _sdk_errors()
    return sdk is not None and (
        isinstance(exc, sdk.ConnectionError)
        or (isinstance(exc, sdk.DockerException) and not isinstance(exc, sdk.APIError))
    )


def is_not_found(exc: BaseException) -> bool:
    if isinstance(exc, EngineAPIError):
        return exc.status_code == 404
    sdk = _sdk_errors()
    return sdk is not None and isinstance(exc, sdk.NotFound)


def is_api_error(exc: BaseException) -> bool:
    if isinstance(exc, EngineAPIError):
        return True
    sdk = _sdk_errors()
    return sdk is not None and isinstance(exc, sdk.APIError)


def is_enospc(exc: BaseException) -> bool:
    return "no space left on device" in str(exc).lower()


def explain(exc: BaseException) -> str:
    return str(getattr(exc, "explanation", None) or exc)


class _SdkErrors:
    """The SDK's error types (a plain class: a dataclass would cost every exec's start its creation)."""

    def __init__(self, docker_errors: Any, requests_exceptions: Any) -> None:
        self.DockerException = docker_errors.DockerException
        self.APIError = docker_errors.APIError
        self.NotFound = docker_errors.NotFound
        self.RequestException = requests_exceptions.RequestException
        self.ConnectionError = requests_exceptions.ConnectionError


def _sdk_errors() -> _SdkErrors | None:
    """The SDK's error types once it is loaded; None before (nothing can have raised them yet)."""
    if sys.modules.get("docker") is None:
        return None
    import docker.errors  # why: already loaded (checked above); a top-level import would load the SDK
    import requests.exceptions

    return _SdkErrors(docker.errors, requests.exceptions)
