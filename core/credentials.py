"""Credentials the egress point adds to a sandbox's requests (``SandboxService.set_credentials``).

A backend lets code in the sandbox use a service without ever holding its secret: it gives the headers
(``Authorization: Bearer ...``) for one allow-listed host, the provider keeps their values where only the
egress point reads them, and the egress point adds them to the sandbox's requests to that host, and to no
other (docs/network.md). The log records each use, ``CredentialsSet``: the host, the header NAMES, who
and why, never a value. Record, then keep: a credential the log does not show is never in force; if
keeping fails after the record, calling again keeps it (a second event: every call is a use).

Checked here before anything happens, so no provider ever sees what HTTP cannot carry: a header name is
an RFC 9110 token and not one the egress point sets itself (``Host``, framing, hop-by-hop, proxy
headers); a value is visible ASCII with inner spaces or tabs, never a CR, LF, NUL or other control byte
(a CR or LF would smuggle a second header or request into what the egress point sends). An error names
the host and the header's position or name, never a value. An empty mapping removes the host's
credentials.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING

from sandbox_lifecycle.core import egress
from sandbox_lifecycle.core import sandbox as sb
from sandbox_lifecycle.core.errors import CredentialsRefused, SandboxNotFound
from sandbox_lifecycle.core.ids import random_id
from sandbox_lifecycle.core.kernel import Kernel

if TYPE_CHECKING:
    from sandbox_lifecycle.events.records import SandboxRow

# RFC 9110 5.6.2 token.
_NAME = re.compile(r"[!#$%&'*+.^_`|~0-9A-Za-z-]{1,64}")
# Visible ASCII, spaces and tabs only inside (RFC 9110 5.5 without obs-text).
_VALUE = re.compile(r"[\x21-\x7e]([\x20-\x7e\t]{0,8190}[\x21-\x7e])?")
# Headers the egress point writes itself or that frame or route the message: never a credential.
FORBIDDEN = frozenset(
    {
        "host",
        "content-length",
        "transfer-encoding",
        "connection",
        "keep-alive",
        "proxy-connection",
        "proxy-authorization",
        "proxy-authenticate",
        "te",
        "trailer",
        "upgrade",
        "expect",
        "x-sandbox-egress",
    }
)
MAX_HEADERS = 16
# A host as the allow-lists name it: lower-case labels, an optional port (the provider checks the rest).
_HOST = re.compile(r"[a-z0-9_]([a-z0-9_.-]{0,251}[a-z0-9_])?(:[0-9]{1,5})?")
# An optional path prefix after it (``host/org/repo.git/``): the credential goes only to requests under
# it. Plain segments ending in ``/``: no dot segment, no escape that could walk out of it.
_PREFIX = re.compile(r"(?:(?!\.{1,2}/)[A-Za-z0-9._~!$&'()*+,;=:@-]+/){1,32}")

Credentials = Mapping[str, Mapping[str, str]]


def check_headers(headers: Mapping[str, str]) -> dict[str, str]:
    """``headers`` as they will be kept (names as given, checked), or ValueError naming what is wrong
    without repeating a value (module docstring)."""
    if isinstance(headers, str | bytes) or not isinstance(headers, Mapping):
        raise ValueError("headers is a mapping of header name to value")
    if len(headers) > MAX_HEADERS:
        raise ValueError(f"at most {MAX_HEADERS} headers per host")
    kept: dict[str, str] = {}
    for position, (name, value) in enumerate(headers.items(), 1):
        if not isinstance(name, str) or not _NAME.fullmatch(name):
            raise ValueError(f"header #{position}: its name is not an HTTP token (1-64 characters)")
        if name.lower() in FORBIDDEN:
            raise ValueError(f"header {name}: the egress point sets it itself; it cannot be a credential")
        if name.lower() in {k.lower() for k in kept}:
            raise ValueError(f"header {name}: given twice (header names are case-insensitive)")
        if not isinstance(value, str) or not _VALUE.fullmatch(value):
            raise ValueError(
                f"header {name}: its value must be 1-8192 visible ASCII characters (inner spaces or "
                "tabs), with no CR, LF or other control character"
            )
        kept[name] = value
    return kept


def check_host(host: str) -> str:
    """The host as kept (name lower case, no trailing dot; a path prefix as given), or ValueError."""
    name, slash, prefix = host.strip().partition("/") if isinstance(host, str) else ("", "", "")
    text = name.lower().rstrip(".")
    if not _HOST.fullmatch(text) or (slash and not _PREFIX.fullmatch(prefix)):
        raise ValueError(f"{host!r} is not a host name (name, name:port, optionally /path/prefix/)")
    return f"{text}/{prefix}" if slash else text


def set_credentials(
    kernel: Kernel, sandbox_id: str, host: str, headers: Mapping[str, str], reason: str, actor: str
) -> sb.Sandbox:
    """Check, record ``CredentialsSet``, then have the provider keep the values (module docstring).
    CredentialsRefused, with nothing recorded or kept, when the host or a header is refused."""
    try:
        checked, name = check_headers(headers), check_host(host)
    except ValueError as exc:
        raise CredentialsRefused(sandbox_id, str(exc)) from None
    state = kernel.load(sandbox_id)
    if state.kind is None:
        raise SandboxNotFound(sandbox_id)
    try:
        name = kernel.provider.check_credentials(state.kind, state.egress_allow, name)
    except ValueError as exc:
        raise CredentialsRefused(sandbox_id, str(exc)) from None
    command = sb.SetCredentials(host=name, headers=tuple(checked), actor=actor, reason=reason)
    _, after = kernel.run(sandbox_id, lambda _: command, random_id())
    kernel.provider.set_credentials(sandbox_id, name, checked)
    return after


class EgressCalls:
    """What a sandbox may reach and what its requests carry: SandboxService inherits these calls."""

    kernel: Kernel

    def _row(self, sandbox_id: str) -> SandboxRow:
        row = self.kernel.store.get_sandbox(sandbox_id)
        if row is None:
            raise SandboxNotFound(sandbox_id)
        return row

    def set_egress(
        self, sandbox_id: str, allow: Sequence[str] | None, *, reason: str = "user", actor: str | None = None
    ) -> SandboxRow:
        """Replace what the sandbox may reach with ``allow`` (None: its kind's allow-list): core/egress.py."""
        state = egress.set_egress(self.kernel, sandbox_id, allow, reason, actor or self.kernel.actor)
        return self._row(state.id)

    def set_credentials(
        self,
        sandbox_id: str,
        host: str,
        headers: Mapping[str, str],
        *,
        reason: str = "user",
        actor: str | None = None,
    ) -> SandboxRow:
        """The egress point adds ``headers`` to the sandbox's requests to ``host`` (an allow-listed host;
        ``{}`` removes them). Only the header names are recorded (module docstring)."""
        state = set_credentials(self.kernel, sandbox_id, host, headers, reason, actor or self.kernel.actor)
        return self._row(state.id)

    def _turn_credentials(self, sandbox_id: str, credentials: Credentials | None, actor: str) -> None:
        """``turn(credentials={host: headers})``: each host's, recorded as the turn's."""
        for host, headers in (credentials or {}).items():
            self.set_credentials(sandbox_id, host, headers, reason="turn_start", actor=actor)


class TurnCredentials:
    """``sbx.set_credentials(host, headers)`` on a turn's handle (TurnHandle inherits it); ``sbx.git``
    pushes with it where the provider's egress point adds credentials."""

    service: EgressCalls
    id: str

    @property
    def egress_credentials(self) -> bool:
        """Whether the provider's egress point adds credentials (``set_credentials`` works)."""
        return self.service.kernel.capabilities.egress_credentials

    def set_credentials(self, host: str, headers: Mapping[str, str], *, reason: str = "user") -> None:
        self.service.set_credentials(self.id, host, headers, reason=reason)
