"""Credentials the egress point adds to a sandbox's requests, kept as files in the egress state directory.

``credentials/<sandbox id>.json`` (0600, in a 0700 folder) maps a host as the allow-lists name it
(``api.example.com`` for port 443, ``api.example.com:8443`` otherwise) to the headers to add::

    {"api.example.com": [["Authorization", "Bearer ..."]]}

The backend writes it (``set_credentials``; :func:`write_credentials`), the proxy reads it for a request
of that sandbox to that host (:class:`CredentialStore`), nothing else reads it. A file holding a value is
never mounted into a sandbox, never in a container's config, never logged: a log line names the sandbox,
the host and the header names. ``credentials/deployment.json`` holds the deployment-wide ones (from
``SANDBOX_EGRESS_CREDENTIALS``), for every sandbox whose policy allows the host; a sandbox's own file wins
per host.

Standard library only (see the package docstring).
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import secrets
import threading
from collections.abc import Mapping, Sequence
from pathlib import Path

from .policy import PolicyError, parse_rules
from .tokens import check_sandbox_id

CREDENTIALS_DIR = "credentials"
DEPLOYMENT_FILE = "deployment.json"
# The same rules as core/credentials.py: a name is an RFC 9110 token, a value visible ASCII with inner
# spaces or tabs. Checked again on every read: a file is only used as the rules allow, whoever wrote it.
_NAME = re.compile(r"[!#$%&'*+.^_`|~0-9A-Za-z-]{1,64}")
# A credential's path prefix (``host/org/repo.git/``): plain segments, no dot segment (core/credentials.py).
_PREFIX = re.compile(r"(?:(?!\.{1,2}/)[A-Za-z0-9._~!$&'()*+,;=:@-]+/){1,32}")
_VALUE = re.compile(r"[\x21-\x7e]([\x20-\x7e\t]{0,8190}[\x21-\x7e])?")
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

Headers = list[tuple[str, str]]
# A request path a scoped credential never serves: a dot segment, an escape, a backslash, doubled slashes.
_UNSCOPABLE = re.compile(r"(^|/)\.{1,2}(/|$)|%|\\|//")


def header_ok(name: object, value: object) -> bool:
    """Whether the egress point may send this header as a credential."""
    return (
        isinstance(name, str)
        and isinstance(value, str)
        and _NAME.fullmatch(name) is not None
        and name.lower() not in FORBIDDEN
        and _VALUE.fullmatch(value) is not None
    )


def host_key(host: str, port: int) -> str:
    """The name a host's credentials are kept under: ``host`` for 443, ``host:port`` otherwise."""
    return host if port == 443 else f"{host}:{port}"


def credential_host(allow: Sequence[str], host: str) -> str:
    """``host`` (``name`` or ``name:port``, port 443 when none) as kept, when a rule of ``allow`` lets the
    egress point connect there; ValueError otherwise (the credential would never be used). A path
    prefix after it (``host/org/repo.git/``) is kept as given: the credential is for requests under it."""
    host, slash, prefix = host.partition("/")
    if slash and not _PREFIX.fullmatch(prefix):
        raise ValueError(f"{prefix!r}: a path prefix is plain segments, each ending in /")
    name, _, port_text = host.partition(":")
    port = int(port_text) if port_text.isdigit() and 0 < int(port_text) < 65536 else None
    if port_text and port is None:
        raise ValueError(f"{host!r}: the port must be 1-65535")
    try:
        rules = parse_rules(allow)
    except PolicyError as exc:
        raise ValueError(f"the sandbox's allow-list is unreadable: {exc}") from None
    if not any(rule.matches(name, port or 443) for rule in rules):
        raise ValueError(
            f"{host_key(name, port or 443)} is not in the sandbox's allow-list on port {port or 443}; "
            "credentials are added only to requests to an allowed host (allow it first)"
        )
    return host_key(name, port or 443) + (f"/{prefix}" if slash else "")


def _folder(state_dir: str | os.PathLike[str]) -> Path:
    return Path(state_dir) / CREDENTIALS_DIR


def _write_private(path: Path, document: Mapping[str, Headers]) -> None:
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    os.chmod(path.parent, 0o700)
    tmp = path.with_name(f".{path.name}.{secrets.token_hex(8)}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        with os.fdopen(fd, "w") as f:
            json.dump({host: [list(pair) for pair in pairs] for host, pairs in document.items()}, f)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


_WRITING = threading.Lock()


def write_credentials(
    state_dir: str | os.PathLike[str], sandbox_id: str, host: str, headers: Mapping[str, str]
) -> None:
    """Keep ``headers`` for the sandbox's requests to ``host`` (replacing the host's; empty: remove).
    ValueError, naming the header but never its value, for one the egress point would not send."""
    for name, value in headers.items():
        if not header_ok(name, value):
            raise ValueError(f"header {name!r} cannot be sent as a credential")
    path = _folder(state_dir) / f"{check_sandbox_id(sandbox_id)}.json"
    with _WRITING:  # threads of one backend; a second backend replaces the file whole, never half
        document = _read(path)
        if headers:
            document[host] = list(headers.items())
        else:
            document.pop(host, None)
        _write_private(path, document)


def write_deployment_credentials(state_dir: str | os.PathLike[str], document: Mapping[str, Headers]) -> None:
    """Replace the deployment-wide credentials (``SANDBOX_EGRESS_CREDENTIALS``, parsed by the backend)."""
    for pairs in document.values():
        for name, value in pairs:
            if not header_ok(name, value):
                raise ValueError(f"header {name!r} cannot be sent as a credential")
    _write_private(_folder(state_dir) / DEPLOYMENT_FILE, document)


def remove_credentials(state_dir: str | os.PathLike[str], sandbox_id: str) -> None:
    """Forget every credential of the sandbox (its destroy)."""
    with contextlib.suppress(FileNotFoundError):
        (_folder(state_dir) / f"{check_sandbox_id(sandbox_id)}.json").unlink()


def _read(path: Path) -> dict[str, Headers]:
    """The file's credentials, each header checked; {} when absent or unreadable."""
    try:
        found = json.loads(path.read_text(encoding="utf-8"))
    except (FileNotFoundError, NotADirectoryError, ValueError, UnicodeDecodeError):
        return {}
    if not isinstance(found, dict):
        return {}
    kept: dict[str, Headers] = {}
    for host, pairs in found.items():
        if isinstance(host, str) and isinstance(pairs, list):
            good = [(p[0], p[1]) for p in pairs if isinstance(p, list) and len(p) == 2 and header_ok(*p)]
            if good:
                kept[host] = good
    return kept


class CredentialStore:
    """What the proxy reads: a sandbox's headers for a host, its own over the deployment's."""

    def __init__(self, state_dir: str | os.PathLike[str]) -> None:
        self.folder = _folder(state_dir)

    def for_request(self, sandbox_id: str, host: str, port: int, path: str = "/") -> Headers:
        """``path`` (the request's, before any ``?``): a credential kept under a path prefix of the host
        serves only a request under it (the longest such prefix wins), and only a path with no dot
        segment or escape, which the origin could read as another one."""
        key = host_key(host, port)
        try:
            own = _read(self.folder / f"{check_sandbox_id(sandbox_id)}.json")
        except ValueError:
            return []
        if path.startswith("/") and not _UNSCOPABLE.search(path):
            under = [k for k in own if k.startswith(key + "/") and path.startswith(k[len(key) :])]
            if under:
                return own[max(under, key=len)]
        if key in own:
            return own[key]
        return _read(self.folder / DEPLOYMENT_FILE).get(key, [])
