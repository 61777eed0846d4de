"""How the E2B provider calls E2B: which failures are worth repeating, the one retry policy for calls
that are safe to repeat, and how a failure becomes a ProviderError.

Only calls that are safe to repeat (list, get, pause, connect, kill, set-timeout, file reads and
whole-file writes, SIGKILL) go through ``retrying``, with bounded exponential backoff, on network errors,
5xx and 429. The SDK's own retry layer is switched off (``retries=0``) so this is the one policy.
"""

from __future__ import annotations

import logging
import random
import time
from collections.abc import Callable
from typing import TypeVar

import httpx
import tenacity
from e2b import (
    RateLimitException,
    SandboxException,
    SandboxNotRunningException,
    SandboxUnreachableException,
    ServiceBusyException,
)

from sandbox_lifecycle.adapters.providers.e2b.settings import E2BSettings
from sandbox_lifecycle.core.errors import ProviderError

log = logging.getLogger(__name__)

T = TypeVar("T")


def retrying(
    settings: E2BSettings,
    what: str,
    call: Callable[[], T],
    passthrough: tuple[type[Exception], ...] = (),
) -> T:
    """Run a call that is safe to repeat; transient failures are retried with capped, jittered backoff.

    What still fails becomes a ProviderError (``retryable`` when it was transient), except the
    ``passthrough`` errors the caller maps itself (a 404 means something different per call).
    """

    def worth_repeating(error: BaseException) -> bool:
        # Our own ProviderError (a size limit) is final, and passthrough errors are the caller's.
        return not isinstance(error, (*passthrough, ProviderError)) and transient(error)

    def backoff(state: tenacity.RetryCallState) -> float:
        # Doubling from the base delay up to the cap, with jitter so replicas do not retry in step.
        growth: float = 2.0 ** (state.attempt_number - 1)
        delay = min(settings.retry_base_delay * growth, settings.retry_max_delay)
        return delay * random.uniform(0.5, 1.0)

    def before_sleep(state: tenacity.RetryCallState) -> None:
        error = state.outcome.exception() if state.outcome else None
        log.warning(
            "e2b: %s failed (attempt %d of %d): %s; retrying in %.2fs",
            what,
            state.attempt_number,
            attempts,
            describe(error) if error else "?",
            state.upcoming_sleep,
        )

    attempts = max(1, settings.retry_attempts)
    retrier = tenacity.Retrying(
        stop=tenacity.stop_after_attempt(attempts),
        wait=backoff,
        retry=tenacity.retry_if_exception(worth_repeating),
        before_sleep=before_sleep,
        reraise=True,
        sleep=time.sleep,
    )
    try:
        return retrier(call)
    except passthrough:
        raise
    except ProviderError:
        raise
    except Exception as e:
        raise provider_error(f"E2B {what} failed", e) from e


def transient(error: BaseException) -> bool:
    """Whether repeating a safe call may help: network trouble, throttling, or a server-side failure."""
    if isinstance(error, httpx.TransportError | ServiceBusyException | RateLimitException):
        return True
    # The SDK raises these for envd answers, not for the REST API; they say the sandbox itself is away.
    if isinstance(error, SandboxNotRunningException | SandboxUnreachableException):
        return False
    status = getattr(error, "status_code", None)
    return isinstance(error, SandboxException) and isinstance(status, int) and status >= 500


def describe(error: BaseException) -> str:
    return f"{type(error).__name__}: {error}"


def provider_error(message: str, error: BaseException) -> ProviderError:
    wrapped = ProviderError(f"{message}: {describe(error)}")
    # A 4xx (bad template, wrong key) will fail the same way again; the caller should not retry it.
    wrapped.retryable = transient(error)
    return wrapped
