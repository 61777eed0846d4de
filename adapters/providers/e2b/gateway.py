"""The model-API gateway as E2B sandboxes use it: a per-sandbox token instead of the model key.

With ``SANDBOX_GATEWAY_PUBLIC_URL`` set, a sandbox never holds ``ANTHROPIC_API_KEY``. It gets the
gateway's URL as ``ANTHROPIC_BASE_URL`` and a per-sandbox token as ``ANTHROPIC_API_KEY``, at create and on
every command (a resume issues a new token, and E2B keeps the create-time envs, so the current one rides
with each command). The token is revoked on suspend, destroy and snapshot deletion. A process that did not
issue the ref's current token (a restarted backend, another replica) adds one of its own on its first
command, beside the older one, so processes handed that one keep working until the sandbox suspends.

(Docker sandboxes reach the gateway through their egress container instead: see docker/network.py.)
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Mapping
from datetime import datetime
from typing import Any

from sandbox_lifecycle.adapters.egress.bookkeeping import run_usage, start_run
from sandbox_lifecycle.adapters.gateway.state import GatewayState, git_env
from sandbox_lifecycle.adapters.providers.e2b.retry import describe
from sandbox_lifecycle.adapters.providers.e2b.sandboxes import E2BSandboxes, remember_bounded
from sandbox_lifecycle.adapters.providers.e2b.settings import E2BSettings

log = logging.getLogger(__name__)


class ModelGateway:
    """The gateway env of this process's E2B sandboxes; every call is a no-op when the gateway is off."""

    def __init__(self, settings: E2BSettings, sandboxes: E2BSandboxes) -> None:
        self._url = settings.gateway_url
        self._sandboxes = sandboxes
        self._state = (
            GatewayState(settings.gateway_state_dir)
            if settings.gateway_url and settings.gateway_state_dir is not None
            else None
        )
        # ref -> the sandbox's gateway env (its current token), under _lock.
        self._model_envs: dict[str, dict[str, str]] = {}
        self._lock = threading.Lock()

    def command_env(self, ref: str, env: Mapping[str, str] | None) -> dict[str, str] | None:
        """The env a command in the sandbox runs with: the caller's, plus the sandbox's current gateway
        token and URL when the gateway is on (they win: the real key must never be handed in)."""
        model_env = self._current(ref)
        merged = {**(env or {}), **model_env, **self._git_env(ref, model_env)}
        return merged or None

    def model_activity(self, ref: str) -> datetime | None:
        """When the gateway last relayed a model call of the sandbox behind ``ref`` (None: never, or no
        gateway). For the provider's ``last_activity``: a model call is the sandbox's activity."""
        if self._state is None:
            return None
        owner = self._sandboxes.check_owned(ref, None)
        return None if owner is None else self._state.model_activity(owner.sandbox_id)

    def issue(self, sandbox_id: str, *, replace: bool = True) -> dict[str, str]:
        """A new token's env for the sandbox (``replace``: the only valid one from now on)."""
        if self._state is None or self._url is None:
            return {}
        if replace:  # a create or a resume: a run starts, whose usage counts from here
            start_run(self._state.state_dir, sandbox_id)
        return self._state.sandbox_env(sandbox_id, self._url, replace=replace)

    def run_usage(self, sandbox_id: str) -> dict[str, Any] | None:
        """The gateway's counts for the sandbox's current run (egress/bookkeeping.py); None: no gateway."""
        if self._state is None or self._url is None:
            return None
        return run_usage(self._state.state_dir, sandbox_id)

    def keep(self, ref: str, model_env: dict[str, str]) -> None:
        """The env issued for the ref, to ride with each of its commands."""
        if model_env:
            with self._lock:
                remember_bounded(self._model_envs, ref, model_env)

    def revoke(self, sandbox_id: str, ref: str | None = None) -> None:
        if self._state is None:
            return
        with self._lock:
            if ref is not None:
                self._model_envs.pop(ref, None)
        try:
            self._state.revoke(sandbox_id)
        except (OSError, ValueError) as e:
            log.error("e2b: could not revoke the gateway token of %s: %s", sandbox_id, describe(e))

    def _git_env(self, ref: str, model_env: Mapping[str, str]) -> dict[str, str]:
        """Git through the gateway for the hosts the sandbox was granted a git credential for."""
        token = model_env.get("ANTHROPIC_API_KEY")
        owner = self._sandboxes.check_owned(ref, None) if self._state is not None and token else None
        if owner is None or self._state is None or not token or self._url is None:
            return {}
        return git_env(self._url, token, self._state.git_hosts(owner.sandbox_id))

    def _current(self, ref: str) -> dict[str, str]:
        if self._state is None:
            return {}
        with self._lock:
            known = self._model_envs.get(ref)
        if known is not None:
            return known
        # This process did not issue the ref's token (a restart, another replica): add one of its own,
        # leaving the other valid for the processes it was handed to.
        owner = self._sandboxes.check_owned(ref, None)
        if owner is None:
            return {}
        model_env = self.issue(owner.sandbox_id, replace=False)
        self.keep(ref, model_env)
        return model_env
