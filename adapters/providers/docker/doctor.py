"""The Docker provider's doctor checks: the engine's facts, the images, and the egress point.

``CHECKS`` run after the provider check (which built the provider, or failed); ``SLOTS`` answer the
doctor's named slots (see ``entrypoints.cli.doctor``). The docker SDK is imported inside the checks that
use it: it may be missing, which the provider check reports, and the checks are then skipped.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from sandbox_lifecycle.adapters.egress.main import GATEWAY_PORT
from sandbox_lifecycle.adapters.gateway.checks import check_state_dir, check_upstream
from sandbox_lifecycle.adapters.observability.health import FAIL, OK, WARN, Check, CheckFn, Context, combined
from sandbox_lifecycle.adapters.providers.docker.settings import DockerSettings
from sandbox_lifecycle.core.kinds import KINDS

if TYPE_CHECKING:
    from sandbox_lifecycle.adapters.providers.docker.network import SandboxNetworks

_ENGINE_UNREACHABLE = "skipped: the Docker engine is unreachable"


def _own(ctx: Context) -> DockerSettings:
    own: DockerSettings = ctx.settings.provider_settings["docker"]
    return own


def check_engine(ctx: Context) -> Check:
    """The engine facts the Docker provider relies on, read as a first-start engine reports them."""
    if ctx.provider is None:
        return Check("engine", FAIL, _ENGINE_UNREACHABLE, "fix the provider first")
    import docker  # the SDK may be missing (see the module's docstring)

    from sandbox_lifecycle.adapters.providers.docker.bridge import (
        DEFAULT_BRIDGE,
        BridgeAddressUnknown,
        bridge_host_address,
    )

    client = docker.from_env()
    try:
        info = client.api.info()
        bridge = client.api.inspect_network(DEFAULT_BRIDGE)
    finally:
        client.close()
    runtimes = ", ".join(sorted(info.get("Runtimes") or {})) or "none reported"
    facts = (
        f"docker {info.get('ServerVersion', '?')}, storage {info.get('Driver', '?')}, "
        f"runtime {info.get('DefaultRuntime', '?')} (available: {runtimes})"
    )
    reported = any(c.get("Gateway") for c in (bridge.get("IPAM") or {}).get("Config") or [])
    try:
        address = bridge_host_address(bridge)
    except BridgeAddressUnknown as exc:
        # Only a model or git server on this host needs it (a loopback ANTHROPIC_BASE_URL, the demo).
        loopback = urlsplit(ctx.settings.anthropic_base_url).hostname in ("127.0.0.1", "localhost", "::1")
        return Check(
            "engine",
            FAIL if loopback else WARN,
            f"{facts}; host address on the default bridge unknown: {exc}",
            "run the backend on the engine's host, in its network namespace; or point ANTHROPIC_BASE_URL "
            "at a server sandboxes reach without it",
        )
    source = "reported by the engine" if reported else "read from the bridge interface (a first-start engine)"
    return Check("engine", OK, f"{facts}; host address on the default bridge {address}, {source}")


def check_images(ctx: Context) -> Check:
    if ctx.provider is None:
        return Check("images", FAIL, _ENGINE_UNREACHABLE, "fix the provider first")
    import docker  # the SDK may be missing (see the module's docstring)
    import docker.errors

    images = _own(ctx).images
    client = docker.from_env()
    missing = []
    try:
        for kind in sorted(KINDS):
            try:
                client.images.get(images[kind])
            except docker.errors.ImageNotFound:
                missing.append(f"{images[kind]} ({kind})")
    finally:
        client.close()
    if missing:
        return Check(
            "images",
            FAIL,
            f"missing: {', '.join(missing)}",
            "build or pull them, or point SANDBOX_DOCKER_IMAGE / SANDBOX_AI_WRITEBACK_DOCKER_IMAGE elsewhere",
        )
    return Check("images", OK, ", ".join(f"{k}={images[k]}" for k in sorted(KINDS)))


def check_egress_point(ctx: Context) -> Check:
    """The deployment's egress container (docs/network.md) and the state directory it shares."""
    if ctx.provider is None:
        return Check("egress point", FAIL, _ENGINE_UNREACHABLE, "fix the provider first")
    networks = ctx.provider.network
    found = networks.inspect_egress()
    running = bool(found and (found.get("State") or {}).get("Running"))
    parts = [_egress_container(networks, found), check_state_dir(Path(networks.state_dir))]
    if running:
        # Running is not working: a request through the proxy's own path says whether it answers.
        answer = networks.probe_egress(found)
        if answer.ok:
            parts.append(Check("", OK, answer.detail))
        else:
            parts.append(
                Check(
                    "",
                    FAIL,
                    f"the egress proxy does not answer: {answer.detail}",
                    "the next sandbox create restarts it; or now: "
                    f"`docker restart {networks.egress_name}` (sandboxes keep their policies)",
                )
            )
    # The backend writes upstream.json before it starts the container: a running one must have it.
    parts.append(check_upstream(Path(networks.state_dir), bool(ctx.settings.anthropic_api_key), running))
    return combined("egress point", parts)


def check_gateway(ctx: Context) -> Check:
    return Check("gateway", OK, f"served by the egress container on port {GATEWAY_PORT} (see egress point)")


def _egress_container(networks: SandboxNetworks, found: dict[str, Any] | None) -> Check:
    # Here: the network module needs the docker SDK, which may be missing (see the module's docstring).
    from sandbox_lifecycle.adapters.providers.docker.network import LABEL_DEPLOYMENT, LABEL_ROLE, ROLE_EGRESS

    name, deployment = networks.egress_name, networks.deployment
    if found is None:
        return Check("", OK, f"{name} not running: it starts on first need (the first sandbox create)")
    labels = (found.get("Config") or {}).get("Labels") or {}
    if labels.get(LABEL_ROLE) != ROLE_EGRESS or labels.get(LABEL_DEPLOYMENT) != deployment:
        return Check(
            "",
            FAIL,
            f"a container named {name} is not this deployment's egress point: creates fail",
            f"remove or rename it (`docker rm -f {name}`)",
        )
    state = found.get("State") or {}
    if not state.get("Running"):
        return Check(
            "",
            WARN,
            f"{name} is {state.get('Status', 'stopped')}: the next sandbox create starts it again",
            f"`docker logs {name}` says why it stopped",
        )
    attached = set((found.get("NetworkSettings") or {}).get("Networks") or {}) - {"bridge"}
    return Check("", OK, f"{name} running, on {len(attached)} sandbox networks")


CHECKS: tuple[CheckFn, ...] = (check_engine, check_images)
SLOTS: dict[str, CheckFn] = {"egress point": check_egress_point, "gateway": check_gateway}
