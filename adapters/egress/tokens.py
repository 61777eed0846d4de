"""Per-sandbox gateway tokens, kept as files in the egress state directory.

A token looks like ``sbx-<sandbox id>-<64 hex>``. Only its sha256 is stored, in ``tokens/<sandbox id>``:
the state directory may be read by the gateway process (inside the egress container) without holding any
credential a sandbox could replay elsewhere. A token is valid while that file exists and holds its hash:
the provider issues one on create and resume (a new one, so the old one stops working) and removes it on
suspend, destroy and expiry. The sandbox id inside the token names which file to check, so a token is
never valid for another sandbox.

A backend process that finds a running sandbox without knowing its token (it restarted; another replica
issued it) adds one with ``issue_token(..., replace=False)``: the file then holds a few hashes, one line
each (at most MAX_LIVE_TOKENS, the oldest dropped), and processes the earlier token was handed to keep
working until the sandbox stops being live.

Standard library only (see the package docstring).
"""

from __future__ import annotations

import hashlib
import hmac
import os
import re
import secrets
from pathlib import Path

PREFIX = "sbx-"
_RANDOM_HEX = 64
# Sandbox ids become file names: a bounded label charset, never '.', '..' or a path.
_SANDBOX_ID = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}")
_TOKEN = re.compile(rf"sbx-(?P<id>{_SANDBOX_ID.pattern})-(?P<random>[0-9a-f]{{{_RANDOM_HEX}}})")

MAX_LIVE_TOKENS = 8
# Why a token was refused (the gateway's 401 names it).
MALFORMED = "malformed"
REVOKED = "revoked"


def tokens_dir(state_dir: str | os.PathLike[str]) -> Path:
    return Path(state_dir) / "tokens"


def check_sandbox_id(sandbox_id: str) -> str:
    if not _SANDBOX_ID.fullmatch(sandbox_id):
        raise ValueError(f"{sandbox_id!r} cannot be a sandbox id (1-128 letters, digits, '_', '.', '-')")
    return sandbox_id


def _digest(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def _write_private(path: Path, text: str) -> None:
    """Write atomically (a reader sees the old file or the new one, never half) with mode 0600."""
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{secrets.token_hex(8)}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        with os.fdopen(fd, "w") as f:
            f.write(text)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def issue_token(state_dir: str | os.PathLike[str], sandbox_id: str, *, replace: bool = True) -> str:
    """A new token for the sandbox, returned once and never stored.

    ``replace`` (create, resume): every earlier token stops working. ``replace=False``: the earlier ones
    of this live sandbox stay valid beside it (see the module docstring)."""
    token = f"{PREFIX}{check_sandbox_id(sandbox_id)}-{secrets.token_hex(_RANDOM_HEX // 2)}"
    path = tokens_dir(state_dir) / sandbox_id
    kept: list[str] = []
    if not replace:
        try:
            kept = path.read_text().split()[-(MAX_LIVE_TOKENS - 1) :]
        except FileNotFoundError:
            kept = []
    _write_private(path, "".join(f"{line}\n" for line in [*kept, _digest(token)]))
    return token


def revoke_token(state_dir: str | os.PathLike[str], sandbox_id: str) -> None:
    """The sandbox's token stops working (idempotent)."""
    (tokens_dir(state_dir) / check_sandbox_id(sandbox_id)).unlink(missing_ok=True)


def check_token(state_dir: str | os.PathLike[str], token: str) -> tuple[str | None, str]:
    """``(sandbox id, "")`` for a live token, else ``(None, why)`` with why MALFORMED or REVOKED.

    REVOKED covers every well-formed token that is not the sandbox's current one: its sandbox was
    suspended, destroyed or expired, a resume replaced it, or it was never issued (a guess)."""
    match = _TOKEN.fullmatch(token)
    if match is None:
        return None, MALFORMED
    sandbox_id = match.group("id")
    try:
        stored = (tokens_dir(state_dir) / sandbox_id).read_text().split()
    except (FileNotFoundError, NotADirectoryError):
        return None, REVOKED
    digest = _digest(token).encode()
    # Constant time per comparison, and every line compared: how much of a guess matched, or which line
    # it matched, must not show in how long the answer took.
    matched = False
    for line in stored[:MAX_LIVE_TOKENS]:
        matched |= hmac.compare_digest(line.encode(), digest)
    return (sandbox_id, "") if matched else (None, REVOKED)


def token_owner(state_dir: str | os.PathLike[str], token: str) -> str | None:
    """The sandbox whose live token this is, or None."""
    return check_token(state_dir, token)[0]
