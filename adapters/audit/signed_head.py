"""Signed heads of the log: the anchor an auditor keeps outside the database.

A head is the position and log hash (events/chain.py ``log_link``) of the log's last event when it was
taken, the time and the deployment's name (``SANDBOX_DEPLOYMENT``, else one derived from the database
URL), signed with Ed25519 by a key the deployment keeps (``SANDBOX_AUDIT_SIGNING_KEY`` names a PEM
PKCS#8 private key file, as ``openssl genpkey -algorithm ed25519 -out key.pem`` writes it). The name
binds the head to one deployment: the empty log's head (position 0) of one deployment does not vouch for
another's log, even where both share a key.
The log hash at a position commits to every event up to it, so a log that still reaches the head's hash
at the head's position holds everything up to it unchanged (core/audit.py ``verify_chains(anchor=...)``).

The signature lets a head be kept somewhere merely durable (a ticket, a mail, an object store without
write-once) and still be told from one forged there: it is checked against a public key the auditor
pins (``--public-key``), or the deployment's own key. The private key is read only to sign; it never
reaches a log line, an event or the CLI's output: errors never show the variable's value (a variable that
holds a PEM key itself rather than a path is refused, and the CLI scrubs the value from any message).

Needs the ``cryptography`` package (the ``audit`` extra): only signing and checking heads use it.
"""

from __future__ import annotations

import base64
import hashlib
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import orjson

from sandbox_lifecycle.core.errors import ConfigError

if TYPE_CHECKING:
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

KEY_ENV = "SANDBOX_AUDIT_SIGNING_KEY"
# /2: the statement names the deployment (/1, unreleased, did not).
FORMAT = "sandbox-lifecycle-log-head/2"
_MISSING = (
    "signing and checking log heads needs the 'cryptography' package: "
    "pip install 'sandbox-lifecycle[audit]' (or pip install cryptography)"
)


class HeadInvalid(ValueError):
    """A head file that is malformed, or whose signature does not verify."""


def _serialization() -> Any:
    try:
        # why here: the optional `audit` extra; the verbs that sign or verify name it when missing
        from cryptography.hazmat.primitives import serialization
    except ImportError:
        raise ConfigError(_MISSING) from None
    return serialization


@dataclass(frozen=True, slots=True)
class SignedHead:
    position: int
    log_hash: str
    signed_at: str  # RFC 3339, UTC
    public_key: str  # the raw 32-byte Ed25519 key, base64
    signature: str  # base64 of the signature over ``statement()``
    deployment: str = ""  # the deployment whose log it is (Settings.deployment)

    def statement(self) -> bytes:
        """The signed bytes: compact JSON with sorted keys, so any implementation can rebuild them."""
        return statement(self.position, self.log_hash, self.signed_at, self.deployment)

    @property
    def key_id(self) -> str:
        try:
            return key_id(base64.b64decode(self.public_key, validate=True))
        except ValueError:
            return "(not a base64 key)"

    def as_json(self) -> dict[str, Any]:
        return {
            "format": FORMAT,
            "deployment": self.deployment,
            "position": self.position,
            "hash": self.log_hash,
            "signed_at": self.signed_at,
            "public_key": self.public_key,
            "key_id": self.key_id,
            "signature": self.signature,
        }

    @classmethod
    def from_json(cls, raw: bytes) -> SignedHead:
        try:
            data = orjson.loads(raw)
        except orjson.JSONDecodeError as exc:
            raise HeadInvalid(f"not JSON ({exc})") from None
        if not isinstance(data, dict) or data.get("format") != FORMAT:
            raise HeadInvalid(f"not a log head (expected format {FORMAT!r})")
        position, log_hash = data.get("position"), data.get("hash")
        texts = [data.get(k) for k in ("signed_at", "public_key", "signature", "deployment")]
        if (
            not isinstance(position, int)
            or isinstance(position, bool)
            or position < 0
            or not isinstance(log_hash, str)
            or not all(isinstance(t, str) for t in texts)
        ):
            raise HeadInvalid(
                "a log head needs position (int >= 0), hash, signed_at, public_key, signature, deployment"
            )
        return cls(position, log_hash, *texts)  # type: ignore[arg-type]


def statement(position: int, log_hash: str, signed_at: str, deployment: str) -> bytes:
    return orjson.dumps(
        {
            "format": FORMAT,
            "deployment": deployment,
            "position": position,
            "hash": log_hash,
            "signed_at": signed_at,
        },
        option=orjson.OPT_SORT_KEYS,
    )


def key_id(raw_public_key: bytes) -> str:
    """A short name for a public key: the first 16 hex digits of its SHA-256."""
    return hashlib.sha256(raw_public_key).hexdigest()[:16]


def load_private_key(value: str) -> Ed25519PrivateKey:
    """The signing key of the file ``value`` (the variable's value) names.

    No message shows ``value``: a deployment may have put the key itself there (``export
    KEY="$(cat key.pem)"``, a secret manager injecting the content), and an error quoting it would print
    the private key into cron mail and CI logs. Such a value is refused, not used: a key in the
    environment is readable by every process the signer starts and by whoever reads its environment.
    """
    if "-----BEGIN" in value or "\n" in value or "\r" in value:
        raise ConfigError(
            f"{KEY_ENV} holds a key itself, not the path of a key file (its value is not shown): put the "
            f"PEM key in a file only the signer can read and set {KEY_ENV} to that file's path"
        )
    try:
        pem = Path(value).read_bytes()
    except (OSError, ValueError) as exc:
        reason = exc.strerror if isinstance(exc, OSError) else "not a usable path"
        raise ConfigError(
            f"{KEY_ENV}: cannot read the key file it names (value not shown): {reason}"
        ) from None
    return _private_key(pem, f"{KEY_ENV}: the file it names")


def _private_key(pem: bytes, what: str) -> Ed25519PrivateKey:
    serialization = _serialization()
    # why here: the optional `audit` extra (see _serialization)
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    try:
        key = serialization.load_pem_private_key(pem, password=None)
    except (ValueError, TypeError):
        # The parser's message is not passed on: nothing of the key's content may reach the output.
        raise ConfigError(
            f"{what} is not an unencrypted PEM PKCS#8 private key "
            "(make one with `openssl genpkey -algorithm ed25519 -out key.pem`)"
        ) from None
    if not isinstance(key, Ed25519PrivateKey):
        raise ConfigError(f"{what} is not an Ed25519 key")
    return key


def load_public_key(path: str) -> Ed25519PublicKey:
    """A PEM public key (``openssl pkey -in key.pem -pubout``), or the public half of a private key."""
    serialization = _serialization()
    # why here: the optional `audit` extra (see _serialization)
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

    try:
        pem = Path(path).read_bytes()
    except OSError as exc:
        raise ConfigError(f"cannot read the public key file {path!r}: {exc.strerror}") from None
    try:
        key = serialization.load_pem_public_key(pem)
    except (ValueError, TypeError):
        return _private_key(pem, f"--public-key {path!r}").public_key()
    if not isinstance(key, Ed25519PublicKey):
        raise ConfigError(f"{path!r} is not an Ed25519 public key")
    return key


def _raw(public: Ed25519PublicKey) -> bytes:
    serialization = _serialization()
    raw: bytes = public.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    return raw


def sign(
    key: Ed25519PrivateKey,
    position: int,
    log_hash: str,
    now: datetime | None = None,
    *,
    deployment: str = "",
) -> SignedHead:
    at = (now or datetime.now(UTC)).astimezone(UTC).isoformat(timespec="microseconds")
    signature = key.sign(statement(position, log_hash, at, deployment))
    return SignedHead(
        position,
        log_hash,
        at,
        base64.b64encode(_raw(key.public_key())).decode(),
        base64.b64encode(signature).decode(),
        deployment,
    )


def check(head: SignedHead, pinned: Ed25519PublicKey | None) -> bool:
    """Raise HeadInvalid unless the signature verifies; True when it was checked against ``pinned``,
    False when only against the key the head carries (which proves nothing about who signed it)."""
    # why here: the optional `audit` extra (see _serialization)
    from cryptography.exceptions import InvalidSignature

    # why here: the optional `audit` extra (see _serialization)
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

    try:
        carried = base64.b64decode(head.public_key, validate=True)
        signature = base64.b64decode(head.signature, validate=True)
        key = Ed25519PublicKey.from_public_bytes(carried)
    except ValueError:
        raise HeadInvalid("its public_key or signature is not a base64 Ed25519 value") from None
    if pinned is not None and _raw(pinned) != carried:
        raise HeadInvalid(
            f"it was signed by key {key_id(carried)}, not by the pinned key {key_id(_raw(pinned))}"
        )
    try:
        key.verify(signature, head.statement())
    except InvalidSignature:
        raise HeadInvalid("its signature does not verify: the head was altered or forged") from None
    return pinned is not None
