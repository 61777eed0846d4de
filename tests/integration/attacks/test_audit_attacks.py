"""Red-team attacks on the integrity of the audit trail (docs/audit.md), on real SQLite files and a real
PostgreSQL schema. Events are made through the product (SandboxService on the real store, the fake
provider of tests/support/fakes.py), then tampered with in SQL, as an attacker with write access to
the database would.

Tests named ``test_*_is_found`` / ``*_never_*`` that fail today are attacks that succeed: each one's
docstring says what the attacker does and what docs/audit.md claims. The others are attacks that failed
(they pass today and guard the boundary).
"""

from __future__ import annotations

import json
import sqlite3
import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import orjson
import pytest
import sqlalchemy as sa
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

import sandbox_lifecycle
import sandbox_lifecycle.adapters.entrypoints.cli.commands as cli
from sandbox_lifecycle.adapters.audit import signed_head as audit_head
from sandbox_lifecycle.adapters.entrypoints.relay import signature
from sandbox_lifecycle.core.audit import Anchor, verify_chains
from sandbox_lifecycle.core.replay import rebuild, verify
from sandbox_lifecycle.core.service import SandboxService
from sandbox_lifecycle.events import chain
from sandbox_lifecycle.events.records import NewEvent
from sandbox_lifecycle.events.store import open_store
from tests.support.fakes import FakeProvider
from tests.support.session import new_deployment

BACKENDS = ["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)]


# -- fixtures ----------------------------------------------------------------------------------------


@pytest.fixture(params=BACKENDS)
def db_url(request: pytest.FixtureRequest) -> str:
    if request.param == "sqlite":
        return str(request.getfixturevalue("clean_sqlite_url"))
    return str(request.getfixturevalue("clean_pg_url"))


@pytest.fixture
def sql(db_url: str) -> Iterator[sa.Engine]:
    engine = sa.create_engine(db_url, poolclass=sa.pool.NullPool)
    yield engine
    if engine.dialect.name == "postgresql":
        # The schema is shared by the session: put back the CHECK an attack dropped (_insert_event).
        with engine.begin() as conn:
            conn.execute(sa.text("DELETE FROM events WHERE position <= 0"))
            conn.execute(sa.text(f"ALTER TABLE events DROP CONSTRAINT IF EXISTS {_CHECK}"))
            conn.execute(sa.text(f"ALTER TABLE events ADD CONSTRAINT {_CHECK} CHECK (position > 0)"))
    engine.dispose()


_CHECK = "ck_events_position_positive"


@pytest.fixture
def service(db_url: str) -> Iterator[SandboxService]:
    store = open_store(db_url)
    yield SandboxService(store, FakeProvider(deployment=new_deployment("atk")))
    store.close()


def _fill(service: SandboxService) -> list[str]:
    """Three sandboxes, the second suspended: 8 events, positions 1..8."""
    ids = [service.create("data-app", conversation_id=f"conv-{i}").id for i in range(3)]
    service.suspend(ids[1])
    return ids


def _exec(sql: sa.Engine, statement: str, **params: Any) -> None:
    with sql.begin() as conn:
        conn.execute(sa.text(statement), params)


def _scalar(sql: sa.Engine, statement: str, **params: Any) -> Any:
    with sql.connect() as conn:
        return conn.execute(sa.text(statement), params).scalar_one()


def _insert_event(sql: sa.Engine, position: int, sid: str, version: int, e: NewEvent, h: str) -> None:
    """A row written behind the store's back, with the stream hash the chain wants.

    The schema refuses positions below 1 (``CHECK (position > 0)``, revision 0004); an attacker with
    write access to the database turns that off first (SQLite: for their connection; Postgres: drops the
    constraint), so the verifier must still find such rows."""
    if sql.dialect.name == "sqlite":
        at: Any = e.occurred_at.astimezone(UTC).replace(tzinfo=None).isoformat(" ", "microseconds")
        json_cast = ":data, :meta"
        disable = "PRAGMA ignore_check_constraints = ON"
    else:
        at = e.occurred_at
        json_cast = "CAST(:data AS jsonb), CAST(:meta AS jsonb)"
        disable = f"ALTER TABLE events DROP CONSTRAINT IF EXISTS {_CHECK}"
    with sql.begin() as conn:
        conn.execute(sa.text(disable))
        conn.execute(
            sa.text(
                "INSERT INTO events (position, stream_id, version, type, schema_version, data, meta, "
                "occurred_at, hash, log_hash) "
                f"VALUES (:position, :sid, :version, :type, :sv, {json_cast}, :at, :hash, :lh)"
            ),
            {
                "position": position,
                "sid": sid,
                "version": version,
                "type": e.type,
                "sv": e.schema_version,
                "data": orjson.dumps(e.data).decode(),
                "meta": orjson.dumps(e.metadata).decode(),
                "at": at,
                "hash": h,
                "lh": "0" * 64,
            },
        )


def _forge_suspension(sql: sa.Engine, sid: str, positions: tuple[int, int]) -> None:
    """Two forged events at the end of ``sid``'s stream (a suspension ordered by 'mallory'), with a
    correct stream chain, at the given (non-positive) positions."""
    version, previous = _scalar_row(
        sql, "SELECT version, hash FROM events WHERE stream_id = :s ORDER BY version DESC", s=sid
    )
    meta = {"actor": "mallory", "reason": "user", "correlation_id": "f" * 32}
    now = datetime.now(UTC)
    key = f"snapshots/{sid}/{version + 1}.tar.zst"
    forged = [
        NewEvent(
            type="SuspendRequested",
            data={"snapshot_key": key, "running_processes": None},
            occurred_at=now,
            metadata=meta,
        ),
        NewEvent(
            type="Suspended",
            data={"snapshot_key": key, "sha256": None, "bytes": 0, "running_processes": None},
            occurred_at=now,
            metadata=meta,
        ),
    ]
    hashes = chain.hashes(previous, sid, version, forged)
    for i, (e, h, position) in enumerate(zip(forged, hashes, positions, strict=True), start=1):
        _insert_event(sql, position, sid, version + i, e, h)


def _scalar_row(sql: sa.Engine, statement: str, **params: Any) -> tuple[Any, ...]:
    with sql.connect() as conn:
        return tuple(conn.execute(sa.text(statement), params).first() or ())


def _key_pem(path: Path) -> Path:
    path.write_bytes(
        Ed25519PrivateKey.generate().private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
    )
    return path


def _cli(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = cli.main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


@pytest.fixture
def cli_env(db_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("SANDBOX_DATA_DIR", str(tmp_path))
    monkeypatch.setenv("SANDBOX_DATABASE_URL", db_url)
    monkeypatch.setenv("SANDBOX_PROVIDER", "e2b")
    monkeypatch.delenv("E2B_API_KEY", raising=False)
    monkeypatch.delenv(audit_head.KEY_ENV, raising=False)
    return tmp_path


# -- ATTACK 1 (succeeds): events at position <= 0 are outside the log's chain ----------------------------


@pytest.mark.parametrize("positions", [(-2, -1), (0, -1)], ids=["negative", "zero"])
def test_forged_events_at_non_positive_positions_are_found(
    service: SandboxService, sql: sa.Engine, positions: tuple[int, int]
) -> None:
    """The verifier reads the log's chain from ``position > 0`` only (core/audit.py ``verify_log``,
    ``read_links(0, ...)``), and the streams' chains from every row. So an event inserted at position 0
    or below, with a correct stream hash, at the end of a stream in the middle of the log, is in no
    link of the log's chain: nothing breaks. After `replay --rebuild` the read model agrees too.

    docs/audit.md claims "deletes, inserts or reorders events anywhere but the log's end, with rows set
    to match: found", and, with a signed head at P, "everything up to P is proved unchanged". Today
    `audit verify`, `replay --verify` and `audit verify --head` (head taken before the forgery) all pass,
    while `sandboxctl history` shows the forged suspension ordered by 'mallory'."""
    a, _, _ = _fill(service)
    assert verify_chains(service.store).ok
    before = verify_chains(service.store).head
    anchor = Anchor(*before)

    _forge_suspension(sql, a, positions)
    service.store.replace_all_projections(rebuild(service.store, service.policy))  # `replay --rebuild`

    assert [e.actor for e in service.history(a)][-2:] == ["mallory", "mallory"]  # the forgery is history
    assert verify(service.store, service.policy) == []  # `replay --verify`'s projection half is clean
    report = verify_chains(service.store, anchor=anchor)
    assert not report.ok, (
        "forged events at positions <= 0 pass `audit verify` and the signed head "
        f"(log={report.log}, broken={report.broken}, anchor_problem={report.anchor_problem})"
    )


def test_a_whole_forged_sandbox_at_negative_positions_is_found(
    service: SandboxService, sql: sa.Engine
) -> None:
    """The same hole, for a fabricated sandbox: a complete stream (create, created) at positions -2, -1,
    with its read-model row. Claimed found ("inserts ... anywhere but the log's end")."""
    a, _, _ = _fill(service)
    rows = sorted(service.store.read_stream(a), key=lambda r: r.version)[:2]
    sid = "f0f0f0f0f0f0f0f0"
    forged = [
        NewEvent(
            type=r.type,
            data={**r.data, "conversation_id": "conv-forged"}
            if "conversation_id" in r.data
            else dict(r.data),
            occurred_at=r.occurred_at,
            schema_version=r.schema_version,
            metadata={**r.metadata, "actor": "mallory"},
        )
        for r in rows
    ]
    for i, (e, h) in enumerate(zip(forged, chain.hashes(None, sid, 0, forged), strict=True), start=1):
        _insert_event(sql, i - 3, sid, i, e, h)
    service.store.replace_all_projections(rebuild(service.store, service.policy))
    assert service.store.get_sandbox(sid) is not None
    assert verify(service.store, service.policy) == []
    report = verify_chains(service.store)
    assert not report.ok, "a sandbox that never was in the log's chain passes `audit verify`"


def test_forged_events_at_position_zero_pass_the_cli_with_a_signed_head(
    service: SandboxService,
    sql: sa.Engine,
    cli_env: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """End to end through `sandboxctl`: a head signed and kept before the forgery, checked against the
    pinned key, reports "the log holds everything up to the signed head ... unchanged"."""
    a, _, _ = _fill(service)
    key = _key_pem(cli_env / "audit-key.pem")
    monkeypatch.setenv(audit_head.KEY_ENV, str(key))
    code, out, err = _cli(capsys, "audit", "head", "--json")
    assert code == 0, err
    kept = cli_env / "head.json"
    kept.write_text(out)

    _forge_suspension(sql, a, (-1, 0))
    # The attacker's rebuild, so the read model agrees. It rebuilds whatever it reports: since the
    # log's pass reads every position, `replay --rebuild` itself names the forgery (exit 1).
    _cli(capsys, "replay", "--rebuild")
    code, out, _ = _cli(capsys, "audit", "verify", "--head", str(kept), "--json")
    verdict = json.loads(out)
    code_replay = _cli(capsys, "replay", "--verify")[0]
    assert (code, verdict["ok"], code_replay) != (0, True, 0), (
        "forged events pass `audit verify --head` (anchor intact) and `replay --verify`: " + out
    )


# -- ATTACK 2 (succeeds): the private key printed when the variable holds the key itself ---------------


def test_the_signing_key_never_reaches_the_output_even_given_inline(
    service: SandboxService,
    cli_env: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """docs/audit.md: "The key file is read only to sign; its content never reaches output, logs or
    events." A deployment that sets SANDBOX_AUDIT_SIGNING_KEY to the PEM itself (a common habit:
    ``export KEY="$(cat key.pem)"``, a secret manager injecting the value) gets
    "cannot read the key file '-----BEGIN PRIVATE KEY-----\\nMC4C...'" on stderr, from `audit head` and
    from `audit verify --head`: the whole private key, in cron mail and CI logs. The variable is not in
    settings.SECRET_ENV, so the CLI's scrubber does not hide it either."""
    _fill(service)
    signer = _key_pem(cli_env / "signer.pem")
    monkeypatch.setenv(audit_head.KEY_ENV, str(signer))
    head = cli_env / "head.json"
    head.write_text(_cli(capsys, "audit", "head", "--json")[1])
    pem = signer.read_text()
    secret_line = pem.splitlines()[1]
    monkeypatch.setenv(audit_head.KEY_ENV, pem)
    leaks = []
    for argv in (("audit", "head", "--json"), ("-v", "audit", "verify", "--head", str(head))):
        code, out, err = _cli(capsys, *argv)
        assert code != 0
        if secret_line in out + err:
            leaks.append(f"`sandboxctl {' '.join(argv)}` printed the private key: {err.strip()!r}")
    assert not leaks, "\n".join(leaks)


# -- ATTACK 3 (succeeds): one crafted row stops the whole audit ------------------------------------------


@pytest.mark.parametrize(
    "tamper",
    [
        "UPDATE events SET version = 'x' WHERE position = 8",
        "UPDATE events SET type = CAST('Created' AS BLOB) WHERE position = 4",
        "UPDATE events SET data = CAST(x'7b2261223a22ff227d' AS TEXT) WHERE position = 4",
        "UPDATE events SET hash = CAST(x'ff' AS TEXT) WHERE position = 4",
        "UPDATE events SET stream_id = CAST(x'ff' AS TEXT) WHERE position = 4",
    ],
    ids=["version-text", "type-blob", "data-invalid-utf8", "hash-invalid-utf8", "stream-id-invalid-utf8"],
)
def test_a_crafted_row_is_reported_not_fatal(clean_sqlite_url: str, tamper: str) -> None:
    """docs/audit.md: "a row that cannot be read (malformed JSON) | that version: 'unreadable'; the
    other rows are still checked". Rows SQLite's loose typing lets an attacker write make the verifier
    raise instead (TypeError in ``_check`` / ``chain.content``, or StoreError "Could not decode to UTF-8"
    from the reader): `audit verify` prints one error line (`--json` prints no JSON at all), names no
    stream and checks nothing else, so one row blinds the auditor to every other tampering."""
    store = open_store(clean_sqlite_url)
    service = SandboxService(store, FakeProvider(deployment=new_deployment("atk")))
    _fill(service)
    db = sqlite3.connect(clean_sqlite_url.removeprefix("sqlite:///"))
    with db:
        db.execute(tamper)
        # And an ordinary edit elsewhere, which the auditor must still be told about.
        db.execute("UPDATE events SET meta = json_set(meta, '$.actor', 'mallory') WHERE position = 2")
    db.close()
    try:
        report = verify_chains(store)
    except Exception as exc:
        pytest.fail(f"one crafted row stopped the audit: {type(exc).__name__}: {exc}")
    finally:
        store.close()
    assert not report.ok and len(report.broken) >= 2


@pytest.mark.postgres
def test_an_unparsable_jsonb_row_is_reported_not_fatal_on_postgres(clean_pg_url: str) -> None:
    """The same claim on PostgreSQL: JSONB takes numbers of any size (``1e400``), which orjson refuses
    ("number is infinity when parsed as double"). The Postgres reader has no CorruptStream path at all
    (events/store/postgres.py ``_event_rows``): the JSONDecodeError ends `audit verify` (and `replay`,
    `events`, `history`, the relay) with one line, naming no stream and checking nothing else."""
    store = open_store(clean_pg_url)
    service = SandboxService(store, FakeProvider(deployment=new_deployment("atk")))
    _fill(service)
    engine = sa.create_engine(clean_pg_url, poolclass=sa.pool.NullPool)
    _exec(engine, "UPDATE events SET data = CAST(:d AS jsonb) WHERE position = 4", d='{"a": 1e400}')
    _exec(engine, "UPDATE events SET meta = jsonb_set(meta, '{actor}', '\"mallory\"') WHERE position = 2")
    engine.dispose()
    try:
        report = verify_chains(store)
    except Exception as exc:
        pytest.fail(f"one crafted row stopped the audit: {type(exc).__name__}: {exc}")
    finally:
        store.close()
    assert not report.ok and len(report.broken) >= 2


# -- ATTACK 4 (succeeds): a column of the log outside the hash ---------------------------------------------


def test_an_edited_idempotency_key_is_found(service: SandboxService, sql: sa.Engine) -> None:
    """``events.idempotency_key`` is stored with the event but in neither chain (events/chain.py hashes
    [stream_id, version, type, schema_version, data, metadata, occurred_at]). An attacker can rewrite
    or blank it: a retried request then appends again instead of being recognised, or one request's key
    is moved onto another event. docs/audit.md lists what the hash covers but never says this column is
    left out."""
    service.create("data-app", "conv-k", idempotency_key="req-1")
    _exec(sql, "UPDATE events SET idempotency_key = 'req-forged' WHERE idempotency_key = 'req-1'")
    assert not verify_chains(service.store).ok, "an edited idempotency key passes `audit verify`"


# -- ATTACK 5 (succeeds, a missing claim): an older genuine head is indistinguishable -----------------


def test_verify_head_says_when_the_head_was_signed(
    service: SandboxService,
    cli_env: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """docs/audit.md: the signature lets a head be "kept somewhere merely durable ... and still be told
    from one forged there". But a head binds no deployment and no sequence: whoever can write that
    store can replace the newest head with an older genuine one (or the empty log's head, position 0,
    which verifies against every log of every deployment sharing the key), and `audit verify --head`
    then vouches only up to that older position, without saying when the head was signed: the output
    (text and --json) carries neither signed_at nor the key id, so the auditor cannot notice the swap."""
    ids = _fill(service)
    monkeypatch.setenv(audit_head.KEY_ENV, str(_key_pem(cli_env / "audit-key.pem")))
    old = json.loads(_cli(capsys, "audit", "head", "--json")[1])
    service.destroy(ids[0])
    (cli_env / "old.json").write_text(json.dumps(old))
    code, out, _ = _cli(capsys, "audit", "verify", "--head", str(cli_env / "old.json"), "--json")
    anchor = json.loads(out)["anchor"]
    assert code == 0 and anchor["intact"]
    assert anchor.get("signed_at") == old["signed_at"], (
        "`audit verify --head --json` does not say when the head was signed: an older head swapped in "
        f"for the newest passes unnoticed ({anchor})"
    )


# -- attacks that failed: they pass today -----------------------------------------------------------------


def test_read_model_and_deadline_edits_fail_replay_verify(service: SandboxService, sql: sa.Engine) -> None:
    a, b, _ = _fill(service)
    assert verify(service.store, service.policy) == []
    _exec(sql, "UPDATE sandboxes SET state = 'expired', expired_reason = 'x' WHERE id = :i", i=a)
    assert any("state" in d for d in verify(service.store, service.policy))
    service.store.replace_all_projections(rebuild(service.store, service.policy))
    due = _scalar(sql, "SELECT count(*) FROM sandbox_deadlines WHERE sandbox_id = :i", i=b)
    assert due > 0
    if sql.dialect.name == "sqlite":
        _exec(
            sql,
            "UPDATE sandbox_deadlines SET due_at = '2100-01-01 00:00:00.000000' WHERE sandbox_id = :i",
            i=b,
        )
    else:
        _exec(sql, "UPDATE sandbox_deadlines SET due_at = '2100-01-01T00:00:00Z' WHERE sandbox_id = :i", i=b)
    assert any("deadline" in d for d in verify(service.store, service.policy))


def test_a_mid_log_edit_rehashed_in_both_chains_breaks_at_the_next_position(
    service: SandboxService, sql: sa.Engine
) -> None:
    a, _, _ = _fill(service)
    (position, version) = _scalar_row(
        sql, "SELECT position, version FROM events WHERE stream_id = :s ORDER BY version DESC", s=a
    )
    assert position < 8
    event = next(e for e in service.store.read_stream(a) if e.version == version)
    edited = NewEvent(
        type=event.type,
        data=dict(event.data),
        occurred_at=event.occurred_at,
        schema_version=event.schema_version,
        metadata={**event.metadata, "actor": "mallory"},
    )
    previous = _scalar_row(
        sql, "SELECT hash FROM events WHERE stream_id = :s AND version = :v", s=a, v=version - 1
    )[0]
    (h,) = chain.hashes(previous, a, version - 1, [edited])
    prev_log = _scalar_row(
        sql, "SELECT log_hash FROM events WHERE position < :p ORDER BY position DESC", p=position
    )[0]
    meta = orjson.dumps(edited.metadata).decode()
    cast = "CAST(:m AS jsonb)" if sql.dialect.name == "postgresql" else ":m"
    _exec(
        sql,
        f"UPDATE events SET meta = {cast}, hash = :h, log_hash = :g WHERE position = :p",
        m=meta,
        h=h,
        g=chain.log_link(prev_log, position, h),
        p=position,
    )
    report = verify_chains(service.store)
    assert report.broken == [] and report.log is not None and report.log.position > position


def test_a_cut_tail_with_a_rewritten_head_row_is_shown_by_a_signed_head(
    service: SandboxService, sql: sa.Engine
) -> None:
    _fill(service)
    anchor = Anchor(*verify_chains(service.store).head)
    _exec(sql, "DELETE FROM events WHERE position = 8")
    last, log_hash = _scalar_row(sql, "SELECT position, log_hash FROM events ORDER BY position DESC")
    _exec(sql, "UPDATE log_head SET position = :p, hash = :h WHERE id = 1", p=last, h=log_hash)
    service.store.replace_all_projections(rebuild(service.store, service.policy))
    assert verify_chains(service.store).ok  # documented: not found without a head
    assert verify_chains(service.store, anchor=anchor).anchor_problem is not None
    # The same hash at another position does not stand in for the anchor.
    assert verify_chains(service.store, anchor=Anchor(last, anchor.log_hash)).anchor_problem is not None


def test_a_head_altered_or_signed_by_another_key_is_refused(tmp_path: Path) -> None:
    key = Ed25519PrivateKey.generate()
    head = audit_head.sign(key, 8, "ab" * 32)
    assert audit_head.check(head, key.public_key()) is True
    for field, value in (("position", 9), ("hash", "cd" * 32), ("signed_at", "2000-01-01T00:00:00+00:00")):
        altered = audit_head.SignedHead.from_json(json.dumps({**head.as_json(), field: value}).encode())
        with pytest.raises(audit_head.HeadInvalid):
            audit_head.check(altered, key.public_key())
    other = Ed25519PrivateKey.generate()
    foreign = audit_head.sign(other, 8, "ab" * 32)
    with pytest.raises(audit_head.HeadInvalid):
        audit_head.check(foreign, key.public_key())
    for raw in (
        b'{"format":"sandbox-lifecycle-log-head/1","position":8.0}',
        b"[]",
        b"\xff",
        b'{"format":"sandbox-lifecycle-log-head/1","position":true,"hash":"","signed_at":"",'
        b'"public_key":"","signature":""}',
    ):
        with pytest.raises(audit_head.HeadInvalid):
            audit_head.SignedHead.from_json(raw)


def test_webhook_replays_and_header_swaps_are_refused() -> None:
    secret = b"s3cret"
    body = b'{"event_id":"abc:1","position":5}'
    now = int(time.time())
    good = {
        "X-Sandbox-Signature": signature(secret, body, event_id="abc:1", position=5, timestamp=now),
        "X-Sandbox-Event-Id": "abc:1",
        "X-Sandbox-Position": "5",
    }
    assert sandbox_lifecycle.verify_webhook(secret, body, good) == ("abc:1", 5)
    old = {
        **good,
        "X-Sandbox-Signature": signature(secret, body, event_id="abc:1", position=5, timestamp=now - 301),
    }
    bad_variants = [
        old,
        {**good, "X-Sandbox-Event-Id": "abc:2"},
        {**good, "X-Sandbox-Position": "6"},
        {**good, "X-Sandbox-Signature": good["X-Sandbox-Signature"] + f",t={now}"},
        {**good, "X-Sandbox-Signature": good["X-Sandbox-Signature"].replace(f"t={now}", f"t={now + 1}")},
        {k: v for k, v in good.items() if k != "X-Sandbox-Position"},
        {**good, "X-Sandbox-Position": "-5"},
    ]
    for headers in bad_variants:
        with pytest.raises(ValueError):
            sandbox_lifecycle.verify_webhook(secret, body, headers)
    with pytest.raises(ValueError):
        sandbox_lifecycle.verify_webhook(secret, body + b" ", good)


@pytest.mark.postgres
def test_concurrent_appends_on_postgres_chain_in_commit_order(clean_pg_url: str) -> None:
    """Many writers at once (threads, each its own connection pool): the log chain stays whole and the
    head row names the last event; a reader never sees a hole that fills in later."""
    stores = [open_store(clean_pg_url) for _ in range(6)]
    at = datetime.now(UTC)
    errors: list[BaseException] = []

    def writer(n: int) -> None:
        try:
            for v in range(15):
                stores[n].append(
                    f"s{n}", v, [NewEvent(type="Touched", data={"v": v}, occurred_at=at, metadata={"a": n})]
                )
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=writer, args=(n,)) for n in range(len(stores))]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    assert not errors and not any(t.is_alive() for t in threads)
    report = verify_chains(stores[0], page=7)
    for s in stores:
        s.close()
    assert report.ok and report.events == 90, (report.log, report.broken)
