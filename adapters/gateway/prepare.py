"""Host-side wiring of the model gateway: its state directory made ready before a provider starts.

A provider whose sandboxes reach their model through the gateway (E2B with ``SANDBOX_GATEWAY_PUBLIC_URL``)
asks the composition root for this (``registry.Host.prepare_gateway``) before any sandbox is handed a
token the gateway would forward with.
"""

from __future__ import annotations

from sandbox_lifecycle.adapters.composition.settings import Settings
from sandbox_lifecycle.adapters.gateway.state import prepare_gateway
from sandbox_lifecycle.core.errors import ConfigError


def prepare_or_refuse(settings: Settings) -> None:
    """Write the gateway's upstream.json; ConfigError naming the variable to fix when it cannot."""
    try:
        prepare_gateway(settings)
    except (OSError, ValueError) as exc:
        reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else type(exc).__name__
        raise ConfigError(
            f"SANDBOX_GATEWAY_PUBLIC_URL is set, but the gateway state directory "
            f"{settings.egress_state_dir} is not usable ({reason}): set SANDBOX_EGRESS_STATE_DIR to a "
            "directory this user may write, shared with `sandboxctl gateway`"
        ) from None
