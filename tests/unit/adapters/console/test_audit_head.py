"""The audit page with a signed head: the log still holds everything up to it, or the page says why not."""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from sandbox_lifecycle.adapters.audit import signed_head as audit_head
from sandbox_lifecycle.adapters.console import HeadSource
from sandbox_lifecycle.core.service import SandboxService
from tests.unit.adapters.console.conftest import client_of


def _head(service: SandboxService, tmp_path: Path, deployment: str = "d") -> tuple[Path, Path]:
    key = Ed25519PrivateKey.generate()
    position, log_hash = service.store.log_head()  # type: ignore[misc]
    head = audit_head.sign(key, position, log_hash, deployment=deployment)
    path = tmp_path / "head.json"
    path.write_text(json.dumps(head.as_json()))
    public = tmp_path / "audit.pub"
    public.write_bytes(
        key.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )
    )
    return path, public


def test_a_log_that_still_reaches_the_head_is_green(service: SandboxService, tmp_path: Path) -> None:
    service.touch(service.create("data-app", "c").id)
    head, public = _head(service, tmp_path)
    html = client_of(service, deployment="d", head=HeadSource(str(head), str(public))).get("/audit").text
    assert 'data-ok="true"' in html and "the log holds everything up to it unchanged" in html
    assert 'class="anchor ok"' in html and "unpinned" not in html
    unpinned = client_of(service, deployment="d", head=HeadSource(str(head))).get("/audit").text
    assert 'data-ok="true"' in unpinned and 'class="unpinned"' in unpinned


def test_a_log_cut_below_the_head_is_red(service: SandboxService, tmp_path: Path) -> None:
    sid = service.create("data-app", "c").id
    service.touch(sid)
    head, public = _head(service, tmp_path)
    db = sqlite3.connect(tmp_path / "sandbox.db")
    with db:
        last = db.execute("SELECT max(position) FROM events").fetchone()[0]
        db.execute("DELETE FROM events WHERE position = ?", (last,))
        db.execute("UPDATE log_head SET position = position - 1")
    db.close()
    html = client_of(service, deployment="d", head=HeadSource(str(head), str(public))).get("/audit").text
    assert 'data-ok="false"' in html and "NOT intact" in html and 'class="anchor failed"' in html


def test_a_head_of_another_deployment_or_key_is_refused(service: SandboxService, tmp_path: Path) -> None:
    service.create("data-app", "c")
    head, public = _head(service, tmp_path, deployment="other")
    html = client_of(service, deployment="d", head=HeadSource(str(head), str(public))).get("/audit").text
    assert 'data-ok="false"' in html and "signed for deployment &#x27;other&#x27;" in html
    head, _public = _head(service, tmp_path)
    wrong = tmp_path / "wrong.pub"  # a key the head was not signed by
    wrong.write_bytes(
        Ed25519PrivateKey.generate()
        .public_key()
        .public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    )
    html = client_of(service, deployment="d", head=HeadSource(str(head), str(wrong))).get("/audit").text
    assert 'data-ok="false"' in html and 'class="anchor failed"' in html
