"""A throw-away certificate authority and a server certificate it signs (openssl), for TLS origins in
tests: the egress point is told to trust the CA, the origin serves the certificate."""

from __future__ import annotations

import subprocess
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class ThrowawayCA:
    ca: Path  # the CA's certificate (PEM): what a client trusts
    cert: Path  # the server's certificate, for ``names``
    key: Path


def _openssl(*argv: str, cwd: Path) -> None:
    subprocess.run(["openssl", *argv], cwd=cwd, check=True, capture_output=True, timeout=60)


def make_ca(folder: Path, names: list[str]) -> ThrowawayCA:
    """A CA in ``folder`` and a certificate for ``names`` (DNS names) signed by it, valid one day."""
    folder.mkdir(parents=True, exist_ok=True)
    _openssl(
        "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1", "-subj", "/CN=sandbox test CA",
        "-addext", "basicConstraints=critical,CA:TRUE", "-addext", "keyUsage=critical,keyCertSign",
        "-keyout", "ca.key", "-out", "ca.pem",
        cwd=folder,
    )  # fmt: skip
    _openssl(
        "req", "-newkey", "rsa:2048", "-nodes", "-subj", f"/CN={names[0]}", "-keyout", "server.key",
        "-out", "server.csr",
        cwd=folder,
    )  # fmt: skip
    (folder / "ext.cnf").write_text("subjectAltName=" + ",".join(f"DNS:{n}" for n in names) + "\n")
    _openssl(
        "x509", "-req", "-in", "server.csr", "-CA", "ca.pem", "-CAkey", "ca.key", "-CAcreateserial",
        "-days", "1", "-extfile", "ext.cnf", "-out", "server.pem",
        cwd=folder,
    )  # fmt: skip
    return ThrowawayCA(folder / "ca.pem", folder / "server.pem", folder / "server.key")
