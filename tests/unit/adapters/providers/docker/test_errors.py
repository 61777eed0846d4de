"""Engine errors of the stdlib client map as the SDK's do: gone is ProviderLost, no engine names the fix."""

from __future__ import annotations

from sandbox_lifecycle.adapters.providers.docker.engine import (
    EngineAPIError,
    EngineTimeout,
    EngineUnreachable,
)
from sandbox_lifecycle.adapters.providers.docker.errors import is_engine_error, is_enospc, mapped
from sandbox_lifecycle.core.errors import ProviderError, ProviderLost


def test_a_404_is_a_lost_container_named_by_its_short_ref() -> None:
    error = mapped(EngineAPIError(404, "No such container: abc"), "exec", "0123456789abcdef")
    assert isinstance(error, ProviderLost)
    assert str(error) == "exec: container 0123456789ab no longer exists (No such container: abc)"


def test_no_engine_says_how_to_start_one() -> None:
    error = mapped(EngineUnreachable("cannot connect to unix:///x.sock"), "exec")
    assert type(error) is ProviderError
    assert "the Docker engine is unreachable" in str(error) and "scripts/start-docker.sh" in str(error)


def test_another_status_is_a_failure_with_the_engines_message() -> None:
    error = mapped(EngineAPIError(500, "boom"), "inspect exec")
    assert type(error) is ProviderError and str(error) == "inspect exec failed: boom"


def test_only_engine_errors_are_mapped() -> None:
    assert is_engine_error(EngineTimeout("slow")) and is_engine_error(EngineAPIError(409, "taken"))
    assert not is_engine_error(ValueError("not the engine's"))
    assert is_enospc(ProviderError("write failed: No space left on device"))
