"""`sandboxctl scheduler --metrics-port`: the service's metrics on a registry of their own, over HTTP."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from sandbox_lifecycle.adapters.composition.bootstrap import require_extra
from sandbox_lifecycle.adapters.composition.settings import Settings

log = logging.getLogger("sandbox_lifecycle.metrics")

# Where the model gateway keeps its per-sandbox counters when no SANDBOX_EGRESS_STATE_DIR says otherwise.
DEFAULT_EGRESS_STATE_ROOT = Path("/var/lib/sandbox-lifecycle/egress")


def gateway_state_dir(settings: Settings) -> Path:
    configured = getattr(settings, "egress_state_dir", None)
    return Path(configured) if configured else DEFAULT_EGRESS_STATE_ROOT / settings.deployment


def serve_metrics(service: Any, settings: Settings, port: int, host: str = "127.0.0.1") -> Any:
    """Instrument ``service`` and serve its metrics at http://host:port/metrics; returns the server."""
    require_extra("prometheus_client")
    # why here: prometheus_client (an optional extra) loads only when metrics are served
    from sandbox_lifecycle.adapters.observability.metrics import instrument, serve

    observer = instrument(service, gateway_state_dir=gateway_state_dir(settings))
    server = serve(observer.registry, port, host)
    log.info("metrics at http://%s:%d/metrics", host, server.server_port)
    print(f"metrics at http://{host}:{server.server_port}/metrics", flush=True)
    return server
