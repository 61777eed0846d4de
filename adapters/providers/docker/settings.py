"""The Docker provider's settings: its images, the disk limit, the sandboxes' network, and its refusal.

Parsed from the environment by ``PROVIDER.parse`` (this folder's ``__init__``) with every other setting,
so one ``ConfigError`` names every bad variable; stdlib only (every command imports it).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import field
from pathlib import Path

from sandbox_lifecycle.adapters.composition.environ import (
    DEFAULT_ANTHROPIC_BASE_URL,
    DEFAULT_EGRESS_ALLOW,
    EnvReader,
    Shared,
    egress_allow,
    egress_env_name,
)
from sandbox_lifecycle.core.errors import ProviderRefused
from sandbox_lifecycle.core.kinds import AI_WRITEBACK, DATA_APP
from sandbox_lifecycle.events.values import FieldValues, value_class

DEFAULT_DOCKER_IMAGES = {DATA_APP: "lightdash-sandbox:local", AI_WRITEBACK: "lightdash-ai-writeback:local"}
DOCKER_IMAGE_ENV = {DATA_APP: "SANDBOX_DOCKER_IMAGE", AI_WRITEBACK: "SANDBOX_AI_WRITEBACK_DOCKER_IMAGE"}
DEFAULT_DISK_LIMIT_MB = 10_240
MAX_DISK_LIMIT_MB = 16 * 1024 * 1024  # 16 TiB
DEFAULT_NETWORK_POOL = "10.213.0.0/16"
DEFAULT_SNAPSHOT_CACHE_MB = 1024
MAX_SNAPSHOT_CACHE_MB = 16 * 1024 * 1024
DEFAULT_PIECE_GRACE_MS = 3_600_000


def refuse_production(node_env: str | None) -> None:
    """Raise ProviderRefused for the Docker provider under NODE_ENV=production."""
    if node_env == "production":
        raise ProviderRefused(
            "the Docker provider refuses NODE_ENV=production: the Docker socket is root-equivalent and "
            "a container is not an isolation boundary for untrusted, agent-written code; "
            "use SANDBOX_PROVIDER=e2b in production"
        )


@value_class
class EgressSettings(FieldValues):
    """The network of Docker sandboxes (see docs/network.md): what each kind may reach through the
    egress point, names pinned to addresses, where the egress state lives, which addresses the
    per-sandbox networks take, and the model API the gateway forwards to."""

    allow: Mapping[str, tuple[str, ...]] = field(default_factory=lambda: dict(DEFAULT_EGRESS_ALLOW))
    # host:port:address entries (curl's --resolve form)
    resolve: tuple[str, ...] = ()
    # None: /var/lib/sandbox-lifecycle/egress/<deployment>
    state_dir: Path | None = None
    network_pool: str = DEFAULT_NETWORK_POOL
    upstream_url: str = DEFAULT_ANTHROPIC_BASE_URL
    api_key: str = field(default="", repr=False)
    # Deployment-wide credentials the egress point adds, per host key (SANDBOX_EGRESS_CREDENTIALS), and a
    # CA bundle it trusts besides the system's for their TLS (SANDBOX_EGRESS_UPSTREAM_CA).
    credentials: Mapping[str, tuple[tuple[str, str], ...]] = field(default_factory=dict, repr=False)
    upstream_ca: Path | None = None


@value_class
class PieceSettings(FieldValues):
    """Checkpoints of content-addressed pieces (docs/checkpoints.md): the host's piece cache and how old
    an unreferenced piece must be before the sweep collects it."""

    # SANDBOX_SNAPSHOT_CACHE_MB; 0: no cache (every resume fetches every piece).
    cache_mb: int = DEFAULT_SNAPSHOT_CACHE_MB
    # None: $XDG_CACHE_HOME (or ~/.cache)/sandbox-lifecycle/pieces/<deployment>
    cache_dir: Path | None = None
    # SANDBOX_SNAPSHOT_PIECE_GRACE_MS; a suspend that runs past half of it stores no checkpoint.
    grace_ms: int = DEFAULT_PIECE_GRACE_MS


@value_class
class DockerSettings(FieldValues):
    """What the Docker provider is built with."""

    # kind -> image
    images: Mapping[str, str] = field(default_factory=lambda: dict(DEFAULT_DOCKER_IMAGES))
    # Per-container writable-layer limit; 0 is off.
    disk_limit_mb: int = DEFAULT_DISK_LIMIT_MB
    egress: EgressSettings = field(default_factory=EgressSettings)
    node_env: str = ""
    pieces: PieceSettings = field(default_factory=PieceSettings)


def docker_settings(reader: EnvReader, shared: Shared) -> DockerSettings:
    return DockerSettings(
        images={
            kind: reader.text(name) or DEFAULT_DOCKER_IMAGES[kind] for kind, name in DOCKER_IMAGE_ENV.items()
        },
        disk_limit_mb=reader.integer(
            # 0 turns the limit off: it needs root on the Docker host (a loop-mounted disk per sandbox),
            # which a rootless or remote engine does not give.
            "SANDBOX_DISK_LIMIT_MB",
            DEFAULT_DISK_LIMIT_MB,
            MAX_DISK_LIMIT_MB,
            "megabytes",
            minimum=0,
        ),
        egress=_egress_settings(reader, shared),
        node_env=reader.text("NODE_ENV") or "",
        pieces=PieceSettings(
            cache_mb=reader.integer(
                "SANDBOX_SNAPSHOT_CACHE_MB",
                DEFAULT_SNAPSHOT_CACHE_MB,
                MAX_SNAPSHOT_CACHE_MB,
                "megabytes",
                minimum=0,
            ),
            grace_ms=int(
                reader.millis("SANDBOX_SNAPSHOT_PIECE_GRACE_MS", DEFAULT_PIECE_GRACE_MS).total_seconds()
                * 1000
            ),
        ),
    )


def _egress_settings(reader: EnvReader, shared: Shared) -> EgressSettings:
    allow = egress_allow(reader)
    resolve = tuple(e.strip() for e in (reader.text("SANDBOX_EGRESS_RESOLVE") or "").split(",") if e.strip())
    if allow != DEFAULT_EGRESS_ALLOW or resolve:
        # The policy parser (with socket and json) is loaded to check what the environment changed; the
        # defaults are valid (a test parses them), and every command reads these settings.
        from sandbox_lifecycle.adapters.egress.policy import PolicyError, parse_pin, parse_rules

        for kind, entries in allow.items():
            try:
                parse_rules(entries)
            except PolicyError as exc:
                reader.bad(f"{egress_env_name(kind)}: {exc}")
        for entry in resolve:
            try:
                parse_pin(entry)
            except PolicyError as exc:
                reader.bad(f"SANDBOX_EGRESS_RESOLVE: {exc}")
    pool = reader.text("SANDBOX_DOCKER_NETWORK_POOL") or DEFAULT_NETWORK_POOL
    if pool != DEFAULT_NETWORK_POOL and not network_pool_ok(pool):
        reader.bad(f"SANDBOX_DOCKER_NETWORK_POOL must be an IPv4 network of /28 or larger, got {pool!r}")
    return EgressSettings(
        allow=allow,
        resolve=resolve,
        state_dir=shared.egress_state_dir,
        network_pool=pool,
        upstream_url=shared.anthropic_base_url,
        api_key=shared.anthropic_api_key,
        credentials=_egress_credentials(reader, allow),
        upstream_ca=_upstream_ca(reader),
    )


def _egress_credentials(
    reader: EnvReader, allow: Mapping[str, tuple[str, ...]]
) -> dict[str, tuple[tuple[str, str], ...]]:
    text = reader.text("SANDBOX_EGRESS_CREDENTIALS")
    if text is None:
        return {}
    # why here: parsed only when the variable is set (every command reads these settings)
    from sandbox_lifecycle.adapters.egress.credentials import credential_host
    from sandbox_lifecycle.adapters.gateway.credentials import parse_credentials_env

    try:
        found = parse_credentials_env(text, reader.env)
    except ValueError as exc:
        reader.bad(str(exc))  # names hosts, headers and variables, never a value
        return {}
    for host in found:
        if not any(_allows(entries, host, credential_host) for entries in allow.values()):
            reader.bad(f"SANDBOX_EGRESS_CREDENTIALS: {host} is in no kind's allow-list; allow it first")
    return {host: tuple(headers) for host, headers in found.items()}


def _allows(entries: tuple[str, ...], host: str, check: Callable[[Sequence[str], str], str]) -> bool:
    try:
        check(entries, host)
        return True
    except ValueError:
        return False


def _upstream_ca(reader: EnvReader) -> Path | None:
    text = reader.text("SANDBOX_EGRESS_UPSTREAM_CA")
    if text is None:
        return None
    if not Path(text).is_file():
        reader.bad(f"SANDBOX_EGRESS_UPSTREAM_CA: {text} is not a readable file (a PEM bundle of CAs)")
        return None
    return Path(text)


def network_pool_ok(pool: str) -> bool:
    """An IPv4 network of /28 or larger. Asked of a pool the environment sets only (the default is one):
    ipaddress is loaded here, for the few commands that need it."""
    # why here: only a configured network pool is checked; every command imports this entry
    import ipaddress

    try:
        network = ipaddress.ip_network(pool)
    except ValueError:
        return False
    return network.version == 4 and network.prefixlen <= 28
