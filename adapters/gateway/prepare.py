"""Host-side wiring of the model gateway: its state directory made ready before a provider starts.

A provider whose sandboxes reach their model through the gateway (E2B with ``SANDBOX_GATEWAY_PUBLIC_URL``)
calls this when it is built, before any sandbox is handed a token the gateway would forward with.
"""

from __future__ import annotations

from pathlib import Path

from sandbox_lifecycle.adapters.gateway.state import GatewayState
from sandbox_lifecycle.core.errors import ConfigError


def prepare_or_refuse(state_dir: Path, upstream_url: str, api_key: str) -> None:
    """Write the gateway's upstream.json; ConfigError naming the variable to fix when it cannot."""
    try:
        GatewayState(state_dir).write_upstream(upstream_url, api_key)
    except (OSError, ValueError) as exc:
        reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else type(exc).__name__
        raise ConfigError(
            f"SANDBOX_GATEWAY_PUBLIC_URL is set, but the gateway state directory {state_dir} is not usable "
            f"({reason}): set SANDBOX_EGRESS_STATE_DIR to a directory this user may write, shared with "
            "`sandboxctl gateway`"
        ) from None
