"""Faults under load: conversations on Docker and PostgreSQL taking turns while things break.

    .venv/bin/python bench/faults_bench.py [--minutes 5] [--quick] [--conversations 8] [--workers 4]

Run as root beside the Docker engine (the provider's per-sandbox disks need losetup). What it does:

1. Makes everything it uses, on loopback only: a PostgreSQL cluster of its own (``pg_createcluster 15
   faultbench --port 5439``, never the machine's main cluster), a moto S3 server behind a small proxy that
   can answer 503, a private ``SANDBOX_DATA_DIR`` and a deployment ``faults-<random>``. The allow-lists
   are empty and the model upstream is a closed loopback port: no sandbox can reach any public host.
2. Seeds ``--conversations`` conversations (two of them carry a 20 MB random file, so their snapshots
   are multipart uploads), then runs them in ``--workers`` child processes (each a backend: its own
   ``sandbox_lifecycle.connect()``), turn after turn: ``service.turn()`` resumes the sandbox, writes a
   file of random content (its sha256 recorded), execs a command that checks the file and probes the
   egress proxy, and suspends on leaving the block. A ``sandboxctl scheduler`` process runs the timers.
3. Meanwhile, one after the other: PostgreSQL restarts; the egress container is killed; S3 answers 503
   for 30 s; a worker is SIGKILLed mid-exec and another mid-suspend; a ninth sandbox opens hundreds of
   half-open connections to its egress proxy.
4. Then ``sandboxctl sweep`` (at a time past the lease, so interrupted work is re-driven) and checks:
   every file a turn wrote still has its checksum, every turn completed or failed with an error (counted
   by type), no orphans of the deployment (containers, networks, loop devices, disk images, state
   entries, multipart uploads, unreferenced snapshots), ``sandboxctl replay --verify`` and ``sandboxctl
   audit verify`` clean. Then everything is destroyed, swept again, and nothing of it may remain.

Results: docs/reliability.md. Exit status 0 when every check passed, 1 otherwise.
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import http.client
import http.server
import json
import os
import random
import secrets
import shutil
import signal
import socketserver
import subprocess
import sys
import tempfile
import threading
import time
import traceback
from collections import Counter, defaultdict
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
SANDBOXCTL = str(Path(sys.executable).with_name("sandboxctl"))
PG_VERSION = "15"
PG_CLUSTER = "faultbench"
PG_PORT = 5439
DISK_DIR = "/var/lib/sandbox-lifecycle/disks"
EGRESS_STATE_ROOT = "/var/lib/sandbox-lifecycle/egress"
LABEL_DEPLOYMENT = "sandbox-lifecycle.deployment"
# Every turn's exec: check the file the turn wrote from inside the sandbox, stay a second in exec (so a
# SIGKILL can land there), and time one request through the egress proxy's real data path. The target
# is refused by the empty allow-list before any name is resolved (.invalid never resolves anyway).
TURN_SCRIPT = r"""
import hashlib, socket, sys, time
digest = hashlib.sha256(open(sys.argv[1], "rb").read()).hexdigest()
time.sleep(1)
started = time.monotonic()
try:
    s = socket.create_connection(("egress", 3128), timeout=5)
    s.settimeout(5)
    s.sendall(b"GET http://blocked.invalid/ HTTP/1.1\r\nHost: blocked.invalid\r\n\r\n")
    line = s.recv(64).split(b"\r\n")[0].decode("latin-1")
    s.close()
    probe = line.split(" ")[1] if line.startswith("HTTP/") else "no-answer"
except OSError as exc:
    probe = type(exc).__name__
print(digest, probe, round((time.monotonic() - started) * 1000, 1))
"""
# The attack of issue N item 1: many connections holding half a request line, for HOLD seconds.
ATTACK_SCRIPT = r"""
import socket, sys, time
count, hold = int(sys.argv[1]), float(sys.argv[2])
held, failed = [], 0
for _ in range(count):
    try:
        s = socket.create_connection(("egress", 3128), timeout=2)
        s.sendall(b"GET http://blocked.inv")
        held.append(s)
    except OSError:
        failed += 1
time.sleep(hold)
for s in held:
    s.close()
print(len(held), failed)
"""


def now_iso() -> str:
    return datetime.now(UTC).isoformat(timespec="milliseconds")


# ---------------------------------------------------------------------------------------- workers


def root_cause(exc: BaseException) -> str:
    """The innermost exception under ``exc``: what actually failed, for the results' detail."""
    seen = exc
    for _ in range(20):
        inner = seen.__cause__ or seen.__context__
        if inner is None:
            break
        seen = inner
    return f"{type(seen).__name__}: {' '.join(str(seen).split())[:300]}"


def worker_main(args: argparse.Namespace) -> int:
    """One backend process: takes turns on its conversations until ``--until``, one JSON line per step."""
    import logging

    import sandbox_lifecycle

    # The library's warnings (a retried call, a failed side effect) go to this worker's .err file.
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    out = open(args.results, "a", buffering=1)  # noqa: SIM115 - line-buffered for the whole life

    def record(**fields: Any) -> None:
        out.write(json.dumps({"t": time.time(), "pid": os.getpid(), **fields}) + "\n")
        out.flush()

    conversations = [c.split(":", 1) for c in args.conversations.split(",")]
    try:
        service = sandbox_lifecycle.connect()
    except Exception as exc:  # a PostgreSQL restart can catch a worker at start-up: say so and stop
        record(ev="connect_failed", error=type(exc).__name__, message=str(exc)[:300])
        return 1
    rng = random.Random()
    turn_no = args.first_turn
    while time.time() < args.until:
        conversation, kind = conversations[turn_no % len(conversations)]
        turn_no += 1
        name = f"turns/{args.tag}-{turn_no}.bin"
        data = rng.randbytes(rng.randint(1, 64 * 1024))
        digest = hashlib.sha256(data).hexdigest()
        record(ev="begin", conversation=conversation, turn=turn_no, path=name, sha256=digest)
        phase = "resume"
        try:
            with service.turn(conversation, kind) as sbx:
                record(ev="phase", conversation=conversation, turn=turn_no, phase="write", sandbox=sbx.id)
                phase = "write"
                sbx.write_file(name, data)
                record(ev="written", conversation=conversation, turn=turn_no, sandbox=sbx.id)
                record(ev="phase", conversation=conversation, turn=turn_no, phase="exec")
                phase = "exec"
                result = sbx.exec(["python3", "-c", TURN_SCRIPT, name], timeout=60)
                if result.exit_code != 0:
                    raise RuntimeError(f"turn exec exited {result.exit_code}: {result.stderr[-200:]}")
                inside, probe, probe_ms = result.stdout.split()
                record(
                    ev="probe",
                    conversation=conversation,
                    turn=turn_no,
                    status=probe,
                    ms=float(probe_ms),
                    inside_ok=inside == digest,
                )
                record(ev="phase", conversation=conversation, turn=turn_no, phase="suspend")
                phase = "suspend"
            record(ev="end", conversation=conversation, turn=turn_no, outcome="ok")
        except Exception as exc:
            record(
                ev="end",
                conversation=conversation,
                turn=turn_no,
                outcome="error",
                phase=phase,
                error=type(exc).__name__,
                message=" ".join(str(exc).split())[:300],
                cause=root_cause(exc),
            )
            time.sleep(0.5)  # a fault is usually not gone a millisecond later; do not spin on it
    return 0


# ------------------------------------------------------------------------------------ S3 with 503s


class FaultyS3Proxy:
    """A loopback HTTP proxy in front of moto: forwards every request as is, or answers 503 SlowDown
    while ``failing`` is set. It answers before reading a body only when the client asked for
    ``100-continue`` (as S3 does); otherwise it reads the body first so the connection stays sane."""

    def __init__(self, upstream: str) -> None:
        self.upstream = upstream.removeprefix("http://")
        self.failing = threading.Event()
        self.answered_503 = 0
        self.forwarded = 0
        proxy = self

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, format: str, *args: Any) -> None:
                pass

            def handle_expect_100(self) -> bool:
                if proxy.failing.is_set():
                    self._fail(read_body=False)
                    return False
                return super().handle_expect_100()

            def _fail(self, read_body: bool = True) -> None:
                if read_body:
                    self.rfile.read(int(self.headers.get("Content-Length") or 0))
                body = b"<Error><Code>SlowDown</Code><Message>injected by faults_bench</Message></Error>"
                self.send_response(503)
                self.send_header("Content-Type", "application/xml")
                self.send_header("Content-Length", str(len(body)))
                self.send_header("Connection", "close")
                self.end_headers()
                if self.command != "HEAD":
                    self.wfile.write(body)
                self.close_connection = True
                proxy.answered_503 += 1

            def _any(self) -> None:
                if proxy.failing.is_set():
                    self._fail()
                    return
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                conn = http.client.HTTPConnection(proxy.upstream, timeout=60)
                try:
                    headers = {k: v for k, v in self.headers.items() if k.lower() != "expect"}
                    conn.request(self.command, self.path, body=body or None, headers=headers)
                    answer = conn.getresponse()
                    payload = answer.read()
                    self.send_response(answer.status, answer.reason)
                    for k, v in answer.getheaders():
                        if k.lower() not in ("content-length", "transfer-encoding", "connection"):
                            self.send_header(k, v)
                    # A HEAD answer has no body but the length of the object's: pass that one on.
                    length = answer.getheader("Content-Length") if self.command == "HEAD" else None
                    self.send_header("Content-Length", length or str(len(payload)))
                    self.end_headers()
                    if self.command != "HEAD":
                        self.wfile.write(payload)
                    proxy.forwarded += 1
                finally:
                    conn.close()

            do_GET = do_PUT = do_POST = do_DELETE = do_HEAD = _any

        class Server(socketserver.ThreadingMixIn, http.server.HTTPServer):
            daemon_threads = True

            def handle_error(self, request: Any, client_address: Any) -> None:
                pass  # a SIGKILLed backend drops its connections mid-request: expected here, not news

        self.server = Server(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


# ------------------------------------------------------------------------------------ the harness


def run(
    cmd: list[str], env: dict[str, str] | None = None, timeout: float = 120
) -> subprocess.CompletedProcess[str]:
    # From /: the postgres user that psql runs as may not enter the directory the bench started in.
    return subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=timeout, check=False, cwd="/")


def psql(sql: str) -> str:
    done = run(["runuser", "-u", "postgres", "--", "psql", "-p", str(PG_PORT), "-qtAX", "-c", sql])
    if done.returncode != 0:
        raise RuntimeError(f"psql failed: {done.stderr.strip()}")
    return str(done.stdout).strip()


@contextlib.contextmanager
def own_postgres() -> Iterator[str]:
    """A cluster of our own on 127.0.0.1:5439, dropped at the end: restarting it touches nobody else."""
    listed = run(["pg_lsclusters", "-h"]).stdout.split()
    if PG_CLUSTER in listed:
        raise SystemExit(
            f"a cluster {PG_VERSION}/{PG_CLUSTER} already exists (an earlier run that did not finish?); "
            f"drop it with: pg_dropcluster --stop {PG_VERSION} {PG_CLUSTER}"
        )
    created = run(["pg_createcluster", PG_VERSION, PG_CLUSTER, "--port", str(PG_PORT)])
    try:
        if created.returncode != 0:
            raise SystemExit(f"pg_createcluster failed: {created.stderr.strip()}")
        # Loopback only, in the cluster's conf.d (read after postgresql.conf, so it wins); written here
        # because pg_createcluster -o and pg_conftool do not quote an address.
        conf = Path(f"/etc/postgresql/{PG_VERSION}/{PG_CLUSTER}/conf.d/faultbench.conf")
        conf.write_text("listen_addresses = '127.0.0.1'\nmax_connections = 200\n")
        started = run(["pg_ctlcluster", PG_VERSION, PG_CLUSTER, "start"])
        if started.returncode != 0:
            raise SystemExit(f"pg_ctlcluster start failed: {started.stderr.strip()}")
        password = secrets.token_hex(12)
        psql(f"CREATE ROLE faultbench LOGIN PASSWORD '{password}'")
        psql("CREATE DATABASE faultbench OWNER faultbench")
        yield f"postgresql+psycopg://faultbench:{password}@127.0.0.1:{PG_PORT}/faultbench"
    finally:
        dropped = run(["pg_dropcluster", "--stop", PG_VERSION, PG_CLUSTER])
        if dropped.returncode != 0:
            print(f"pg_dropcluster failed: {dropped.stderr.strip()}", file=sys.stderr)


@dataclass
class Fault:
    name: str
    at: float  # seconds after the load started
    started: float = 0.0
    ended: float = 0.0
    detail: str = ""


@dataclass
class Bench:
    env: dict[str, str]
    deployment: str
    results_dir: Path
    minutes: float
    quick: bool
    s3: FaultyS3Proxy
    conversations: list[tuple[str, str]]
    worker_count: int
    workers: dict[int, subprocess.Popen[bytes]] = field(default_factory=dict)
    worker_files: dict[int, Path] = field(default_factory=dict)
    generation: Counter[int] = field(default_factory=Counter)
    faults: list[Fault] = field(default_factory=list)
    kills: list[dict[str, Any]] = field(default_factory=list)
    big_files: dict[str, str] = field(default_factory=dict)  # conversation -> sha256 of big.bin
    problems: list[str] = field(default_factory=list)
    until: float = 0.0
    attack_result: str = ""

    # --- workers ---------------------------------------------------------------------------------

    def spawn(self, index: int) -> None:
        self.generation[index] += 1
        gen = self.generation[index]
        mine = [c for i, c in enumerate(self.conversations) if i % self.worker_count == index]
        path = self.results_dir / f"w{index}-g{gen}.jsonl"
        self.worker_files[index] = path
        self.workers[index] = subprocess.Popen(
            [sys.executable, __file__, "--worker", "--results", str(path), "--until", str(self.until),
             "--tag", f"w{index}g{gen}", "--first-turn", str(gen * 1000),
             "--conversations", ",".join(f"{c}:{k}" for c, k in mine)],
            env=self.env, stdout=subprocess.DEVNULL, stderr=open(path.with_suffix(".err"), "w"),  # noqa: SIM115
        )  # fmt: skip

    def last_event(self, index: int) -> dict[str, Any] | None:
        try:
            lines = self.worker_files[index].read_text().splitlines()
        except OSError:
            return None
        for line in reversed(lines):
            with contextlib.suppress(ValueError):
                event: dict[str, Any] = json.loads(line)
                return event
        return None

    def kill_in_phase(self, phase: str, limit: float) -> dict[str, Any]:
        """SIGKILL the first worker seen in ``phase`` of a turn (polling its log), then start another."""
        deadline = time.time() + limit
        while time.time() < deadline:
            for index, proc in list(self.workers.items()):
                last = self.last_event(index)
                if proc.poll() is None and last and last.get("ev") == "phase" and last.get("phase") == phase:
                    os.kill(proc.pid, signal.SIGKILL)
                    proc.wait(timeout=10)
                    entry = {"worker": index, "phase": phase, "conversation": last["conversation"],
                             "turn": last["turn"], "t": time.time()}  # fmt: skip
                    self.kills.append(entry)
                    time.sleep(0.5)
                    self.spawn(index)
                    return entry
            time.sleep(0.02)
        return {"phase": phase, "missed": True}

    def respawn_dead(self) -> None:
        """A worker that ended early (it could not connect during a PostgreSQL restart) is replaced."""
        for index, proc in list(self.workers.items()):
            if proc.poll() is not None and time.time() < self.until - 5:
                self.spawn(index)

    # --- faults ----------------------------------------------------------------------------------

    def schedule(self) -> list[Fault]:
        span = self.minutes * 60
        names = ["postgres_restart", "egress_kill", "s3_503", "sigkill_exec", "sigkill_suspend", "attack"]
        return [Fault(n, span * (i + 0.5) / (len(names) + 0.5)) for i, n in enumerate(names)]

    def inject(self, fault: Fault) -> None:
        fault.started = time.time()
        if fault.name == "postgres_restart":
            done = run(["pg_ctlcluster", PG_VERSION, PG_CLUSTER, "restart"], timeout=120)
            fault.detail = f"rc {done.returncode}"
        elif fault.name == "egress_kill":
            done = run(["docker", "kill", f"sandbox-lifecycle-egress-{self.deployment}"])
            fault.detail = f"rc {done.returncode} {done.stderr.strip()[:120]}"
        elif fault.name == "s3_503":
            window = 10.0 if self.quick else 30.0
            before = self.s3.answered_503
            self.s3.failing.set()
            time.sleep(window)
            self.s3.failing.clear()
            fault.detail = f"{window:.0f} s, {self.s3.answered_503 - before} requests answered 503"
        elif fault.name in ("sigkill_exec", "sigkill_suspend"):
            entry = self.kill_in_phase(fault.name.split("_")[1], 30)
            fault.detail = json.dumps({k: v for k, v in entry.items() if k != "t"})
        elif fault.name == "attack":
            fault.detail = self.attack(300, 8 if self.quick else 20)
        fault.ended = time.time()

    def attack(self, count: int, hold: float) -> str:
        import sandbox_lifecycle

        service = sandbox_lifecycle.connect(self.env)
        try:
            with service.turn("attacker", "data-app") as sbx:
                result = sbx.exec(["python3", "-c", ATTACK_SCRIPT, str(count), str(hold)], timeout=hold + 120)
            held, failed = [*result.stdout.split(), "?", "?"][:2]
            return (
                f"{held} half-open connections held {hold:.0f} s ({failed} refused), exit {result.exit_code}"
            )
        except Exception as exc:
            return f"attack turn failed: {type(exc).__name__}: {exc}"[:300]

    # --- the run ---------------------------------------------------------------------------------

    def seed(self) -> None:
        """First turns, before any fault: each conversation's sandbox exists; two carry 20 MB of random
        bytes so every one of their suspends is a multipart upload (parts are 16 MiB)."""
        import sandbox_lifecycle

        service = sandbox_lifecycle.connect(self.env)
        for i, (conversation, kind) in enumerate(self.conversations):
            with service.turn(conversation, kind) as sbx:
                if i < 2:
                    out = sbx.exec(
                        ["sh", "-c", "head -c 20000000 /dev/urandom > big.bin && sha256sum big.bin"],
                        timeout=120,
                        check=True,
                    )
                    self.big_files[conversation] = out.stdout.split()[0]
                else:
                    sbx.exec(["true"], check=True)

    def load(self) -> None:
        self.until = time.time() + self.minutes * 60
        start = time.time()
        for index in range(self.worker_count):
            self.spawn(index)
        self.faults = self.schedule()
        for fault in self.faults:
            while time.time() < start + fault.at:
                self.respawn_dead()
                time.sleep(0.2)
            print(f"[{time.time() - start:6.1f}s] fault: {fault.name}", flush=True)
            self.inject(fault)
            print(f"[{time.time() - start:6.1f}s]   {fault.detail}", flush=True)
        while time.time() < self.until:
            self.respawn_dead()
            time.sleep(0.5)
        # Workers stop taking turns at `until`; one in a turn finishes it. A worker still alive 240 s
        # later is stuck in a turn: that is a hang, reported, and it is killed so the bench can end.
        for index, proc in self.workers.items():
            try:
                proc.wait(timeout=max(1.0, self.until + 240 - time.time()))
            except subprocess.TimeoutExpired:
                last = self.last_event(index)
                self.problems.append(f"worker {index} hung in a turn: last step {last}")
                os.kill(proc.pid, signal.SIGKILL)
                proc.wait(timeout=10)

    def sandboxctl(self, *args: str, timeout: float = 600) -> subprocess.CompletedProcess[str]:
        return run([SANDBOXCTL, *args], env=self.env, timeout=timeout)

    def sweep(self, ahead: timedelta) -> dict[str, Any]:
        """``sandboxctl sweep`` at now + ``ahead``: past the lease and the idle timeout, so everything
        a killed backend left in flight is re-driven (retention is 7 days: nothing expires)."""
        at = (datetime.now(UTC) + ahead).isoformat()
        done = self.sandboxctl("sweep", "--now", at, "--json")
        try:
            report: dict[str, Any] = json.loads(done.stdout)
        except ValueError:
            report = {"errors": [done.stdout[-300:] + done.stderr[-300:]]}
        report["rc"] = done.returncode
        return report


# --------------------------------------------------------------------------------------- analysis


@dataclass
class Tally:
    turns: int = 0
    ok: int = 0
    errors: Counter[str] = field(default_factory=Counter)
    error_samples: dict[str, str] = field(default_factory=dict)
    error_phases: Counter[str] = field(default_factory=Counter)
    unclear: list[str] = field(default_factory=list)
    killed: int = 0
    probes: Counter[str] = field(default_factory=Counter)
    probe_ms: list[float] = field(default_factory=list)
    inside_bad: int = 0
    # conversation -> [(path, sha256, how far the turn got)]
    files: dict[str, list[tuple[str, str, str]]] = field(default_factory=lambda: defaultdict(list))


def tally(results_dir: Path) -> Tally:
    t = Tally()
    for path in sorted(results_dir.glob("w*.jsonl")):
        open_turns: dict[tuple[str, int], dict[str, Any]] = {}
        for line in path.read_text().splitlines():
            try:
                ev = json.loads(line)
            except ValueError:
                continue  # a line cut by SIGKILL
            key = (ev.get("conversation"), ev.get("turn"))
            if ev["ev"] == "begin":
                open_turns[key] = {**ev, "reached": "begun"}
            elif ev["ev"] == "written" and key in open_turns:
                open_turns[key]["reached"] = "written"
            elif ev["ev"] == "probe":
                t.probes[ev["status"]] += 1
                t.probe_ms.append(ev["ms"])
                t.inside_bad += 0 if ev["inside_ok"] else 1
            elif ev["ev"] == "end" and key in open_turns:
                turn = open_turns.pop(key)
                t.turns += 1
                reached = turn["reached"]
                if ev["outcome"] == "ok":
                    t.ok += 1
                    reached = "completed"
                else:
                    t.errors[ev["error"]] += 1
                    t.error_phases[f"{ev['error']} in {ev['phase']}"] += 1
                    t.error_samples.setdefault(ev["error"], ev["message"])
                    if not ev["message"].strip():
                        t.unclear.append(f"{ev['error']} with no message")
                t.files[turn["conversation"]].append((turn["path"], turn["sha256"], reached))
        for turn in open_turns.values():  # begun, never ended: its worker was SIGKILLed
            t.turns += 1
            t.killed += 1
            t.files[turn["conversation"]].append(
                (turn["path"], turn["sha256"], f"killed after {turn['reached']}")
            )
    return t


def check_workspaces(bench: Bench, t: Tally) -> dict[str, Any]:
    """One more turn per conversation, after the sweep: every file a turn got to write must be there
    with its checksum; a file of a turn killed or failed before its write returned may be absent."""
    import sandbox_lifecycle

    service = sandbox_lifecycle.connect(bench.env)
    summary: Counter[str] = Counter()
    lost: list[str] = []
    for conversation, kind in bench.conversations:
        with service.turn(conversation, kind) as sbx:
            listing = sbx.exec(
                [
                    "sh",
                    "-c",
                    "cd turns 2>/dev/null && sha256sum -- *.bin; cd .. && sha256sum big.bin 2>/dev/null",
                ],
                timeout=120,
            )
        found = {}
        for line in listing.stdout.splitlines():
            digest, name = line.split(maxsplit=1)
            found[name if name == "big.bin" else f"turns/{name}"] = digest
        for path, digest, reached in t.files[conversation]:
            got = found.get(path)
            must = reached in ("completed", "written") or reached.endswith("after written")
            if got == digest:
                summary["intact"] += 1
            elif got is not None:
                summary["CORRUPT"] += 1
                lost.append(f"{conversation} {path}: checksum differs ({reached})")
            elif must:
                summary["LOST"] += 1
                lost.append(f"{conversation} {path}: missing ({reached})")
            else:
                summary["never written (turn failed or was killed before the write returned)"] += 1
        if conversation in bench.big_files:
            if found.get("big.bin") == bench.big_files[conversation]:
                summary["intact"] += 1
            else:
                summary["LOST"] += 1
                lost.append(f"{conversation} big.bin: {'missing' if 'big.bin' not in found else 'differs'}")
    return {"summary": dict(summary), "lost": lost}


def leftovers(bench: Bench, live_ids: set[str], strict: bool) -> dict[str, list[str]]:
    """What of this deployment exists that no live sandbox owns (``strict``: anything at all)."""
    import docker

    client = docker.from_env(timeout=30)
    label = f"{LABEL_DEPLOYMENT}={bench.deployment}"
    found: dict[str, list[str]] = defaultdict(list)

    def owned(name: str) -> bool:
        return not strict and any(sid in name for sid in live_ids)

    for c in client.api.containers(all=True, filters={"label": label}):
        name = c["Names"][0].lstrip("/")
        if strict or (c["Labels"].get("sandbox-lifecycle.managed") == "1" and not owned(name)):
            found["containers"].append(name)
    for n in client.api.networks(filters={"label": label}):
        if not owned(n["Name"]):
            found["networks"].append(n["Name"])
    disk_dir = Path(DISK_DIR, bench.deployment)
    images = sorted(disk_dir.glob("*.img")) if disk_dir.is_dir() else []
    for image in images:
        if not owned(image.name):
            found["disk images"].append(image.name)
    loops = run(["losetup", "--noheadings", "--output", "NAME,BACK-FILE"]).stdout
    for line in loops.splitlines():
        if f"/{bench.deployment}/" in line and not owned(line):
            found["loop devices"].append(line.strip())
    state = Path(EGRESS_STATE_ROOT, bench.deployment)
    for sub in ("policies", "tokens", "activity", "counters"):
        folder = state / sub
        for entry in sorted(folder.iterdir()) if folder.is_dir() else []:
            if not owned(entry.name):
                found["state entries"].append(f"{sub}/{entry.name}")
    if strict and disk_dir.is_dir() and any(disk_dir.iterdir()):
        found["state dirs"].append(str(disk_dir))
    s3 = s3_client(bench.env)
    bucket = bench.env["S3_BUCKET"]
    for upload in s3.list_multipart_uploads(Bucket=bucket).get("Uploads", []):
        found["partial uploads"].append(upload["Key"])
    referenced = {row.snapshot_key for row in _rows(bench) if row.snapshot_key}
    for page in s3.get_paginator("list_objects_v2").paginate(Bucket=bucket):
        for obj in page.get("Contents", []):
            # The store keeps keys under the deployment's prefix; a row names the key within it.
            if strict or obj["Key"].removeprefix(f"{bench.deployment}/") not in referenced:
                found["snapshots"].append(obj["Key"])
    return dict(found)


def _rows(bench: Bench) -> list[Any]:
    import sandbox_lifecycle

    return list(sandbox_lifecycle.connect(bench.env).list())


def s3_client(env: dict[str, str]) -> Any:
    import boto3

    # Straight to moto, not through the faulty proxy: the check must not see injected 503s.
    return boto3.client(
        "s3",
        endpoint_url=env["FAULTBENCH_MOTO_URL"],
        region_name="us-east-1",
        aws_access_key_id="faultbench",
        aws_secret_access_key="faultbench",
    )


def destroy_all(bench: Bench) -> list[str]:
    import sandbox_lifecycle

    service = sandbox_lifecycle.connect(bench.env)
    failed = []
    for row in service.list():
        if row.state != "expired":
            try:
                service.destroy(row.id)
            except Exception as exc:
                failed.append(f"{row.id}: {type(exc).__name__}: {exc}"[:200])
    return failed


# --------------------------------------------------------------------------------------- the main


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--minutes", type=float, default=5.0, help="how long the load runs (default 5)")
    parser.add_argument("--quick", action="store_true", help="a 1-minute smoke run with shorter faults")
    parser.add_argument("--conversations", type=int, default=8)
    parser.add_argument("--workers", type=int, default=4, help="backend processes taking the turns")
    parser.add_argument("--keep", action="store_true", help="keep the results directory")
    if "--worker" in sys.argv[1:]:
        # The harness starts this file again as a worker, with arguments of its own.
        wargs = argparse.ArgumentParser()
        for name in ("--results", "--tag", "--conversations"):
            wargs.add_argument(name, required=True)
        wargs.add_argument("--until", type=float, required=True)
        wargs.add_argument("--first-turn", type=int, default=0)
        wargs.add_argument("--worker", action="store_true")
        return worker_main(wargs.parse_args())
    args = parser.parse_args()
    if args.quick:
        args.minutes = 1.0
    if os.geteuid() != 0:
        raise SystemExit("run as root: the provider's per-sandbox disks need losetup")
    return harness(args)


def harness(args: argparse.Namespace) -> int:
    import logging

    from moto.server import ThreadedMotoServer

    logging.getLogger("werkzeug").setLevel(logging.ERROR)  # moto's server logs every request otherwise

    deployment = f"faults-{secrets.token_hex(3)}"
    results_dir = Path(tempfile.mkdtemp(prefix=f"{deployment}-"))
    data_dir = results_dir / "data"
    data_dir.mkdir()
    moto = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    moto.start()
    host, port = moto.get_host_and_port()
    moto_url = f"http://{host}:{port}"
    s3 = FaultyS3Proxy(moto_url)
    print(f"deployment {deployment}, results in {results_dir}", flush=True)
    started = time.time()
    code = 1
    with own_postgres() as db_url:
        env = {
            **{
                k: v
                for k, v in os.environ.items()
                if not k.startswith(("SANDBOX_", "E2B_", "S3_", "ANTHROPIC_"))
            },
            "SANDBOX_PROVIDER": "docker",
            "SANDBOX_DEPLOYMENT": deployment,
            "SANDBOX_DATA_DIR": str(data_dir),
            "SANDBOX_DATABASE_URL": db_url,
            "SANDBOX_DISK_LIMIT_MB": "512",
            # Short enough that a turn a SIGKILL left open is suspended by the timers within the run.
            "SANDBOX_IDLE_TIMEOUT_MS": "20000",
            "SANDBOX_LEASE_MS": "30000",
            "SANDBOX_SWEEP_INTERVAL_MS": "5000",
            # No public host anywhere: empty allow-lists, and a model upstream nobody listens on.
            "SANDBOX_EGRESS_ALLOW_DATA_APP": "",
            "SANDBOX_EGRESS_ALLOW_AI_WRITEBACK": "",
            "ANTHROPIC_BASE_URL": "http://127.0.0.1:9",
            "ANTHROPIC_API_KEY": "faultbench-not-a-key",
            "S3_ENDPOINT": s3.url,
            "S3_BUCKET": f"faults-{deployment}",
            "S3_REGION": "us-east-1",
            "S3_ACCESS_KEY": "faultbench",
            "S3_SECRET_KEY": "faultbench",
            "FAULTBENCH_MOTO_URL": moto_url,
        }
        s3_client(env).create_bucket(Bucket=env["S3_BUCKET"])
        conversations = [
            (f"conv-{i}", "ai-writeback" if i % 4 == 3 else "data-app") for i in range(args.conversations)
        ]
        bench = Bench(env, deployment, results_dir, args.minutes, args.quick, s3, conversations, args.workers)
        scheduler = None
        try:
            upgraded = bench.sandboxctl("db", "upgrade")
            if upgraded.returncode != 0:
                raise SystemExit(f"db upgrade failed: {upgraded.stderr}")
            bench.seed()
            scheduler = subprocess.Popen(
                [SANDBOXCTL, "scheduler"], env=env, stdout=subprocess.DEVNULL,
                stderr=open(results_dir / "scheduler.err", "w"),  # noqa: SIM115
            )  # fmt: skip
            bench.load()
            scheduler.send_signal(signal.SIGTERM)
            scheduler.wait(timeout=60)
            code = report(bench)
        except BaseException:
            traceback.print_exc()
            raise
        finally:
            if scheduler is not None and scheduler.poll() is None:
                scheduler.kill()
            for proc in bench.workers.values():
                if proc.poll() is None:
                    proc.kill()
            # The log goes with the cluster: keep a copy beside the results for whoever reads them.
            with contextlib.suppress(Exception):
                dumped = bench.sandboxctl("events", "--json")
                (results_dir / "events.jsonl").write_text(dumped.stdout)
            with contextlib.suppress(Exception):
                destroy_all(bench)
                bench.sweep(timedelta(minutes=5))
            cleanup(bench)
    s3.close()
    moto.stop()
    print(f"total {time.time() - started:.0f} s")
    if not args.keep and code == 0:
        shutil.rmtree(results_dir, ignore_errors=True)
    return code


def cleanup(bench: Bench) -> None:
    """Whatever of this deployment is still there after the product's own clean-up (counted above as a
    failure already): removed so the machine is left as found. Only objects labelled with it."""
    import docker

    client = docker.from_env(timeout=30)
    label = f"{LABEL_DEPLOYMENT}={bench.deployment}"
    for c in client.api.containers(all=True, filters={"label": label}):
        with contextlib.suppress(docker.errors.APIError):
            client.api.remove_container(c["Id"], force=True, v=True)
    for n in client.api.networks(filters={"label": label}):
        with contextlib.suppress(docker.errors.APIError):
            client.api.remove_network(n["Id"])
    loops = run(["losetup", "--noheadings", "--output", "NAME,BACK-FILE"]).stdout
    for line in loops.splitlines():
        if f"/{bench.deployment}/" in line:
            run(["losetup", "-d", line.split()[0]])
    shutil.rmtree(Path(DISK_DIR, bench.deployment), ignore_errors=True)
    shutil.rmtree(Path(EGRESS_STATE_ROOT, bench.deployment), ignore_errors=True)


def report(bench: Bench) -> int:
    t = tally(bench.results_dir)
    sweep = bench.sweep(timedelta(minutes=5))
    workspaces = check_workspaces(bench, t)
    # The check turns above suspend again: sweep once more so what they left is judged as well.
    sweep2 = bench.sweep(timedelta(minutes=5))
    live = {row.id for row in _rows(bench) if row.state not in ("expired",)}
    orphans = leftovers(bench, live, strict=False)
    replay = bench.sandboxctl("replay", "--verify")
    audit = bench.sandboxctl("audit", "verify")
    states = Counter(row.state for row in _rows(bench))
    destroy_failed = destroy_all(bench)
    sweep3 = bench.sweep(timedelta(minutes=5))
    after = leftovers(bench, set(), strict=True)

    ok = True
    lines = [f"## faults_bench {now_iso()}  deployment {bench.deployment}, {bench.minutes:g} min load", ""]
    lines.append("| fault | at (s) | took (s) | detail |")
    lines.append("| --- | ---: | ---: | --- |")
    t0 = bench.until - bench.minutes * 60
    for f in bench.faults:
        lines.append(f"| {f.name} | {f.started - t0:.0f} | {f.ended - f.started:.1f} | {f.detail} |")
    lines += ["", "| measure | value |", "| --- | --- |"]
    lines.append(f"| turns | {t.turns} ({t.ok} completed, {sum(t.errors.values())} refused with an error, "
                 f"{t.killed} interrupted by SIGKILL) |")  # fmt: skip
    for name, count in t.errors.most_common():
        lines.append(f"| error {name} | {count}: {t.error_samples[name][:160]} |")
    for name, count in t.error_phases.most_common():
        lines.append(f"| where | {name}: {count} |")
    if t.unclear:
        ok = False
        lines.append(f"| errors with no message | {len(t.unclear)} |")
    lines.append(f"| hung turns | {len([p for p in bench.problems if 'hung' in p])} |")
    ms = sorted(t.probe_ms)
    if ms:
        lines.append(
            f"| egress probes | {dict(t.probes)}; median {ms[len(ms) // 2]:.1f} ms, max {ms[-1]:.0f} ms |"
        )
    lines.append(f"| checksum read inside the turn differs | {t.inside_bad} |")
    lines.append(f"| workspaces after the run | {workspaces['summary']} |")
    if workspaces["lost"] or t.inside_bad:
        ok = False
        for item in workspaces["lost"][:20]:
            lines.append(f"| lost | {item} |")
    for name, rep in (("sweep after the load", sweep), ("sweep after the check turns", sweep2)):
        lines.append(f"| {name} | rc {rep.get('rc')}, fired {len(rep.get('fired', []))}, recovered "
                     f"{len(rep.get('recovered', []))}, removed {len(rep.get('removed', []))}, "
                     f"errors {rep.get('errors', [])[:3]} |")  # fmt: skip
    lines.append(f"| sandbox states before clean-up | {dict(states)} |")
    lines.append(f"| orphans (no live owner) | {orphans or 0} |")
    lines.append(
        f"| replay --verify | rc {replay.returncode}: {(replay.stdout + replay.stderr).strip()[:200]} |"
    )
    lines.append(f"| audit verify | rc {audit.returncode}: {(audit.stdout + audit.stderr).strip()[:200]} |")
    lines.append(
        f"| destroy all + sweep | destroy failures {destroy_failed or 0}; sweep rc {sweep3.get('rc')} |"
    )
    lines.append(f"| left after destroy + sweep | {after or 'nothing'} |")
    for problem in bench.problems:
        lines.append(f"| problem | {problem} |")
    if orphans or after or replay.returncode or audit.returncode or bench.problems or destroy_failed:
        ok = False
    lines += ["", f"RESULT: {'PASS' if ok else 'FAIL'}"]
    text = "\n".join(line.replace("\n", " ") if line.startswith("|") else line for line in lines)
    print(text, flush=True)
    (bench.results_dir / "summary.md").write_text(text + "\n")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
