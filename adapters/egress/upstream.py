"""Where the gateway forwards to, and which headers of a message go along.

Standard library only (see the package docstring).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from urllib.parse import urlsplit

from .gateway_streams import PoolKey

# Headers that belong to one connection, not to the message (RFC 9110 7.6.1), plus the two that carry
# the credential, which the gateway sets itself.
HOP_BY_HOP = frozenset(
    {
        "connection",
        "keep-alive",
        "proxy-authenticate",
        "proxy-authorization",
        "proxy-connection",
        "te",
        "trailer",
        "transfer-encoding",
        "upgrade",
        "expect",
    }
)
CREDENTIAL_HEADERS = frozenset({"x-api-key", "authorization"})


@dataclass(frozen=True)
class Upstream:
    scheme: str
    host: str  # for TLS and the Host header
    port: int
    base_path: str
    api_key: str = field(repr=False)
    # Where to connect, when not ``host``: the address the policy checked.
    address: str = ""

    @property
    def host_header(self) -> str:
        default = 443 if self.scheme == "https" else 80
        host = f"[{self.host}]" if ":" in self.host else self.host
        return host if self.port == default else f"{host}:{self.port}"

    @property
    def key(self) -> PoolKey:
        return (self.scheme, self.host, self.port, self.address or self.host)


def parse_upstream(url: str, api_key: str) -> Upstream:
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValueError(f"upstream URL must be http(s)://host[:port][/path], got {url!r}")
    port = parts.port or (443 if parts.scheme == "https" else 80)
    return Upstream(parts.scheme, parts.hostname, port, parts.path.rstrip("/"), api_key)


def filtered(headers: Iterable[tuple[str, str]], drop: frozenset[str]) -> list[tuple[str, str]]:
    """Headers without hop-by-hop ones, without those ``Connection`` names, and without ``drop``."""
    headers = list(headers)
    named = connection_tokens(headers)
    return [(k, v) for k, v in headers if (low := k.lower()) not in HOP_BY_HOP | drop and low not in named]


def connection_tokens(headers: list[tuple[str, str]]) -> set[str]:
    return {t.strip().lower() for k, v in headers if k.lower() == "connection" for t in v.split(",")}
