"""`sandboxctl audit verify`, `audit head` and `replay --verify` against a real SQLite log tampered with
behind the store's back: what the issue found passing, and what only a head kept elsewhere shows."""

from __future__ import annotations

import builtins
import json
import sqlite3
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

import sandbox_lifecycle.adapters.entrypoints.cli.commands as cli
from sandbox_lifecycle.adapters.audit import signed_head as audit_head
from sandbox_lifecycle.adapters.composition.bootstrap import build_service
from sandbox_lifecycle.core.service import SandboxService
from tests.support.fakes import FakeProvider


@pytest.fixture
def env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    monkeypatch.setenv("SANDBOX_DATA_DIR", str(tmp_path))
    monkeypatch.delenv("SANDBOX_DATABASE_URL", raising=False)
    monkeypatch.setenv("SANDBOX_PROVIDER", "e2b")
    monkeypatch.delenv("E2B_API_KEY", raising=False)
    monkeypatch.delenv(audit_head.KEY_ENV, raising=False)
    yield tmp_path


@pytest.fixture
def service(env: Path) -> SandboxService:
    return build_service(provider=FakeProvider())


def _key_file(path: Path) -> Path:
    """An Ed25519 key in the form `openssl genpkey -algorithm ed25519` writes: PEM PKCS#8."""
    pem = Ed25519PrivateKey.generate().private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    path.write_bytes(pem)
    return path


@pytest.fixture
def key(env: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    path = _key_file(env / "audit-key.pem")
    monkeypatch.setenv(audit_head.KEY_ENV, str(path))
    return path


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = cli.main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def _sql(env: Path, *statements: str) -> None:
    db = sqlite3.connect(env / "sandbox.db")
    with db:
        for statement in statements:
            db.execute(statement)
    db.close()


def _three(service: SandboxService) -> tuple[str, str, str]:
    ids = tuple(service.create("data-app", f"conv-{i}").id for i in range(3))
    service.touch(ids[0])
    return ids  # type: ignore[return-value]


def _delete_sandbox(env: Path, sid: str) -> None:
    _sql(
        env,
        f"DELETE FROM events WHERE stream_id = '{sid}'",
        f"DELETE FROM sandboxes WHERE id = '{sid}'",
        f"DELETE FROM sandbox_deadlines WHERE sandbox_id = '{sid}'",
    )


def test_a_deleted_sandbox_fails_audit_verify_and_replay_verify(
    service: SandboxService, env: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    _, b, _ = _three(service)
    assert run(capsys, "audit", "verify")[0] == 0
    _delete_sandbox(env, b)
    code, out, err = run(capsys, "audit", "verify")
    assert code == 1 and "the log's chain broken at position" in out and "problem(s)" in err
    code, out, _ = run(capsys, "audit", "verify", "--json")
    report = json.loads(out)
    assert code == 1 and report["broken"] == [] and report["log"]["position"] > 0
    code, out, _ = run(capsys, "replay", "--verify")
    assert code == 1 and "the log's chain broken at position" in out


def test_a_stream_cut_short_with_its_row_set_to_match_fails_both(
    service: SandboxService, env: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    a, _, _ = _three(service)
    last = service.store.get_sandbox(a)
    assert last is not None
    _sql(
        env,
        f"DELETE FROM events WHERE stream_id = '{a}' AND version = {last.version}",
        f"UPDATE sandboxes SET version = {last.version - 1} WHERE id = '{a}'",
    )
    assert run(capsys, "audit", "verify")[0] == 1
    assert run(capsys, "replay", "--verify")[0] == 1


def _cut_the_tail(env: Path, sid: str) -> None:
    """The whole attack on the end of the log: the last sandbox deleted and the head row rewritten to
    the event before it, which no check inside the database can tell from an honest log."""
    _delete_sandbox(env, sid)
    _sql(
        env,
        "UPDATE log_head SET position = (SELECT max(position) FROM events), "
        "hash = (SELECT log_hash FROM events ORDER BY position DESC LIMIT 1) WHERE id = 1",
    )


def test_a_signed_head_kept_elsewhere_shows_a_cut_tail_the_database_cannot(
    service: SandboxService, env: Path, key: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    _, _, c = _three(service)
    code, out, err = run(capsys, "audit", "head", "--json")
    assert code == 0, err
    head = json.loads(out)
    assert head["position"] == max(e.position for e in service.store.read_all())
    assert key.read_text().splitlines()[1] not in out + err  # the key never reaches the output
    kept = env / "head.json"
    kept.write_text(out)

    service.touch(c)  # the log moves on: the old head still verifies
    code, out, _ = run(capsys, "audit", "verify", "--head", str(kept))
    assert code == 0 and "everything up to the signed head" in out

    _cut_the_tail(env, c)
    assert run(capsys, "audit", "verify")[0] == 0  # nothing inside the database shows it
    assert run(capsys, "replay", "--verify")[0] == 0
    code, out, _ = run(capsys, "audit", "verify", "--head", str(kept), "--json")
    report = json.loads(out)
    assert code == 1 and report["anchor"]["intact"] is False
    assert "cut from its end" in report["anchor"]["detail"]


def test_an_edit_before_the_head_rehashed_to_the_end_is_shown_by_the_head(
    service: SandboxService, env: Path, key: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    a, _, _ = _three(service)
    kept = env / "head.json"
    kept.write_text(run(capsys, "audit", "head", "--json")[1])
    # A forger with the code recomputes every hash after an edit: inside the database it is perfect.
    from sandbox_lifecycle.events import chain

    _sql(env, f"UPDATE events SET meta = json_set(meta, '$.actor', 'nobody') WHERE stream_id = '{a}'")
    store = service.store
    fixed = {}
    previous: dict[str, str | None] = {}
    for item in store.read_chain():
        h = chain.event_hash(previous.get(item.event.stream_id), item.event)
        previous[item.event.stream_id] = fixed[item.event.position] = h
    log_hash: str | None = None
    for position in sorted(fixed):
        log_hash = chain.log_link(log_hash, position, fixed[position])
        _sql(
            env,
            f"UPDATE events SET hash = '{fixed[position]}', log_hash = '{log_hash}' "
            f"WHERE position = {position}",
        )
    _sql(env, f"UPDATE log_head SET hash = '{log_hash}' WHERE id = 1")
    assert run(capsys, "audit", "verify")[0] == 0
    code, out, _ = run(capsys, "audit", "verify", "--head", str(kept))
    assert code == 1 and "signed head (position" in out


def test_a_forged_or_foreign_head_is_refused(
    service: SandboxService, env: Path, key: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    _three(service)
    head = json.loads(run(capsys, "audit", "head", "--json")[1])
    forged = env / "forged.json"
    forged.write_text(json.dumps({**head, "position": head["position"] - 1}))
    code, _, err = run(capsys, "audit", "verify", "--head", str(forged))
    assert code == cli.EXIT_ERROR and "signature does not verify" in err

    other = _key_file(env / "other.pem")
    kept = env / "head.json"
    kept.write_text(json.dumps(head))
    code, _, err = run(capsys, "audit", "verify", "--head", str(kept), "--public-key", str(other))
    assert code == cli.EXIT_ERROR and "not by the pinned key" in err
    code, _, err = run(capsys, "audit", "verify", "--head", str(env / "nope.json"))
    assert code == cli.EXIT_ERROR and "cannot read" in err


def test_audit_head_needs_its_key_and_says_how_to_make_one(
    service: SandboxService, env: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    code, _, err = run(capsys, "audit", "head")
    assert code == cli.EXIT_ERROR and audit_head.KEY_ENV in err and "openssl genpkey" in err
    bad = env / "bad.pem"
    bad.write_text("-----BEGIN PRIVATE KEY-----\nc2VjcmV0LXNlY3JldA==\n-----END PRIVATE KEY-----\n")
    monkeypatch.setenv(audit_head.KEY_ENV, str(bad))
    code, out, err = run(capsys, "audit", "head")
    assert code == cli.EXIT_ERROR and "not an unencrypted PEM PKCS#8" in err
    assert "c2VjcmV0" not in out + err


def test_a_missing_cryptography_is_named(
    service: SandboxService, key: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    real_import = builtins.__import__

    def no_cryptography(name: str, *args: Any, **kwargs: Any) -> Any:
        if name.startswith("cryptography"):
            raise ImportError(f"No module named {name!r}")
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_cryptography)
    code, _, err = run(capsys, "audit", "head")
    assert code == cli.EXIT_ERROR and "'cryptography'" in err and "sandbox-lifecycle[audit]" in err
