"""Keeping secrets out of what is shown: scrubbing messages, and the short first line of one.

Settings know their own secret values (``Settings.secrets()``); :func:`environ_secrets` finds them in an
environment that may not even parse, for the CLI's last-resort errors and its log set-up.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from urllib.parse import unquote

# Variables whose values must never be shown, whatever they hold.
# SANDBOX_AUDIT_SIGNING_KEY names a key file, but a deployment may put the PEM key itself there.
SECRET_ENV = (
    "E2B_API_KEY",
    "ANTHROPIC_API_KEY",
    "S3_SECRET_KEY",
    "SANDBOX_WEBHOOK_SECRET",
    "SANDBOX_AUDIT_SIGNING_KEY",
    "SANDBOX_CONSOLE_TOKEN",
)


def url_password(url: str) -> str:
    _scheme, sep, rest = url.partition("://")
    if not sep or "@" not in rest:
        return ""
    creds = rest.rpartition("@")[0]
    return unquote(creds.split(":", 1)[1]) if ":" in creds else ""


def scrub(text: str, secrets: tuple[str, ...] | list[str]) -> str:
    """``text`` with every secret value replaced (longest first, so a prefix never leaves a tail)."""
    for secret in sorted(set(secrets), key=len, reverse=True):
        if len(secret) >= 4:
            text = text.replace(secret, "***")
            quoted = re.sub(r"[^A-Za-z0-9_.~-]", lambda m: f"%{ord(m.group()):02X}", secret)
            if quoted != secret:
                text = text.replace(quoted, "***")
    return text


def environ_secrets(environ: Mapping[str, str]) -> tuple[str, ...]:
    """The secrets of an environment that may not parse as Settings (for the CLI's last-resort errors)."""
    values = [environ.get(name, "") for name in SECRET_ENV]
    # A multi-line secret (a PEM key) reaches a message joined onto one line or quoted with its "\n"
    # escaped, where the whole value no longer matches: each line is scrubbed on its own too.
    values += [line.strip() for v in values if "\n" in v for line in v.splitlines()]
    values.append(url_password(environ.get("SANDBOX_DATABASE_URL", "")))
    return tuple(v for v in values if v)


def first_line(text: str, limit: int = 400) -> str:
    line = text.strip().splitlines()[0] if text.strip() else ""
    return line if len(line) <= limit else line[:limit] + "..."
