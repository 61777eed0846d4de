"""The backend's side of credentials at the egress point: the deployment-wide form from the environment,
and the state the egress point reads them from (``adapters/egress/credentials.py``).

``SANDBOX_EGRESS_CREDENTIALS`` names headers and the variables holding their values, never a value
itself, so the variable can be shown, logged and put in a unit file without giving anything away::

    SANDBOX_EGRESS_CREDENTIALS="api.example.com=Authorization:EXAMPLE_AUTH;pkgs.test:8443=X-Token:PKG_TOKEN,X-Team:TEAM"

``host[:port]=Header:VARIABLE[,Header:VARIABLE...]``, hosts separated by ``;``. Each header's value is
read from ``VARIABLE`` of the backend's environment. A parse error names the entry's position, the host,
the header or the variable, never what a variable holds (a value that HTTP cannot carry is refused as
"the value of VARIABLE", not shown).
"""

from __future__ import annotations

import os
import re
import shutil
from collections.abc import Mapping
from pathlib import Path

from sandbox_lifecycle.adapters.egress.credentials import Headers, header_ok, write_deployment_credentials
from sandbox_lifecycle.adapters.egress.inject import CA_FILE

VARIABLE = "SANDBOX_EGRESS_CREDENTIALS"
_ENV_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,127}")
_HOST = re.compile(r"[a-z0-9_]([a-z0-9_.-]{0,251}[a-z0-9_])?(:[0-9]{1,5})?")


def parse_credentials_env(text: str, environ: Mapping[str, str]) -> dict[str, Headers]:
    """``{host key: [(header, value), ...]}`` from the variable's text (module docstring), or ValueError
    that never repeats a value."""
    found: dict[str, Headers] = {}
    for position, entry in enumerate((e.strip() for e in text.split(";")), 1):
        if not entry:
            continue
        host, sep, spec = entry.partition("=")
        host = host.strip().lower().rstrip(".")
        name, _, port = host.partition(":")
        if not sep or not _HOST.fullmatch(host) or (port and not 0 < int(port) < 65536):
            raise ValueError(f"{VARIABLE}: entry {position} is not host[:port]=Header:VARIABLE,...")
        key = name if port in ("", "443") else host
        if key in found:
            raise ValueError(f"{VARIABLE}: {key} is named twice")
        headers: Headers = []
        for pair in (p.strip() for p in spec.split(",")):
            header, sep2, variable = (part.strip() for part in pair.partition(":"))
            if not sep2 or not _ENV_NAME.fullmatch(variable):
                raise ValueError(f"{VARIABLE}: {key}: each header is Header:VARIABLE (a variable's name)")
            if header.lower() in {h.lower() for h, _ in headers}:
                raise ValueError(f"{VARIABLE}: {key}: header {header!r} is named twice")
            value = environ.get(variable)
            if value is None:
                raise ValueError(f"{VARIABLE}: {key}: {variable} (the value of {header!r}) is not set")
            if not header_ok(header, value):
                raise ValueError(
                    f"{VARIABLE}: {key}: {header!r} is not a header a credential may set, or the value of "
                    f"{variable} is not a header value (visible ASCII, no CR, LF or control character)"
                )
            headers.append((header, value))
        found[key] = headers
    return found


def prepare_credentials(
    state_dir: str | os.PathLike[str], deployment: Mapping[str, Headers], upstream_ca: Path | None
) -> None:
    """Write what the egress point reads: the deployment-wide credentials, and the CA bundle it trusts
    (besides the system's) for the TLS of credentialed requests (none: the file is removed)."""
    write_deployment_credentials(state_dir, deployment)
    target = Path(state_dir) / CA_FILE
    if upstream_ca is None:
        target.unlink(missing_ok=True)
        return
    temp = target.with_name(f".{CA_FILE}.{os.getpid()}.tmp")
    shutil.copyfile(upstream_ca, temp)
    os.chmod(temp, 0o644)
    os.replace(temp, target)
