"""A loopback stand-in for the E2B control plane and envd, so the real ``e2b`` SDK can be tested offline.

One ``ThreadingHTTPServer`` on 127.0.0.1 answers both sides; point the SDK at it with
``api_url`` and ``sandbox_url`` set to :attr:`FakeE2B.url`. The SDK then sends every envd call to that one
URL with an ``E2b-Sandbox-Id`` header, which is how the fake tells sandboxes apart.

What it speaks (exactly what the installed SDK calls, nothing more):

* REST (``X-API-KEY`` must equal the configured key): ``POST /v2/sandboxes`` (honours ``Idempotency-Key``;
  429 past :attr:`FakeE2B.max_running` running sandboxes, like E2B's concurrency limit),
  ``GET /v2/sandboxes`` (metadata/state filters, ``limit`` + ``nextToken`` paging, ``x-next-token`` header),
  ``GET /sandboxes/{id}``, ``POST /sandboxes/{id}/pause`` (409 when already paused),
  ``POST /v2/sandboxes/{id}/connect`` (201 when it resumed, 200 when it was running),
  ``POST /sandboxes/{id}/timeout``, ``DELETE /sandboxes/{id}``, ``PUT /sandboxes/{id}/network``.
* snapshots: ``POST /sandboxes/{id}/snapshots`` (``name`` optional; a name taken gets a new build, as E2B
  documents), ``GET /snapshots`` (``sandboxID``/``name`` filters, paged like the listing),
  ``DELETE /templates/{id or name}`` (404 when unknown), and a create whose ``templateID`` names a
  snapshot (its id, its bare name or its namespaced name) starts from the snapshot's files. A snapshot
  holds the filesystem only: a host process cannot be copied, so a sandbox made from one starts with no
  process running, where E2B's full snapshot would restore them from memory.
* public traffic: a create with ``network.allowPublicTraffic`` false gets a ``trafficAccessToken``
  (in the create and connect answers only, never in a lookup or a listing, as E2B does), and the port
  proxy then answers 403 to a request without the ``e2b-traffic-access-token`` header carrying it.
* envd (``X-Access-Token`` must equal the sandbox's token; a paused sandbox answers 502 "was not found" like
  E2B's proxy): ``GET /health``, ``GET /files`` and ``POST /files`` (multipart, or octet-stream written
  to disk as it arrives; downloads are sent in chunks, so big transfers never sit in the fake's memory),
  ``filesystem.Filesystem/Stat``, ``/ListDir`` and ``/Remove`` (Connect unary, JSON codec; the link
  itself for a symlink, recursive for a directory), ``process.Process/Start`` (Connect server
  streaming, JSON codec), ``process.Process/Connect`` (streaming: start, keepalives, end),
  ``process.Process/List`` and ``process.Process/SendSignal``.
* sandbox ports: :attr:`FakeE2B.proxy_url` is an HTTP proxy that routes ``<port>-<sandbox id>.<domain>``
  (the host ``Sandbox.get_host(port)`` gives when the SDK's ``domain`` is :attr:`FakeE2B.domain`) to that
  port on loopback, where the sandbox's servers listen (its commands run on this host).

Every sandbox owns a real directory; its paths map below it (``/home/sandbox/app`` →
``<root>/home/sandbox/app``), so files survive pause/resume. Commands run for real as subprocesses with the
mapped cwd and ``HOME``; absolute paths inside a command are host paths. Like envd, a process outlives a
dropped stream and ends on ``SendSignal``; pausing freezes every process of the sandbox (SIGSTOP) and
the resume thaws them (SIGCONT), which is what E2B's memory snapshot looks like from outside; every
process is killed after ``max_process_seconds`` so a test can never hang on one. A sandbox's end
time is reported but not enforced: a test that wants E2B's auto-pause sets ``state`` itself.
``latency`` delays every answer by that many seconds, as the distance to E2B's cloud would.

Every request is recorded (method, path, query, JSON body with env values redacted, status) and logged at
DEBUG without headers, so neither the API key nor the sandbox envs ever reach a record or a log line.
"""

from __future__ import annotations

import base64
import contextlib
import http.client
import itertools
import json
import logging
import os
import queue
import re
import shutil
import signal
import socket
import subprocess
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path, PurePosixPath
from typing import Any
from urllib.parse import parse_qs, parse_qsl, unquote, urlsplit

log = logging.getLogger(__name__)

ENVD_VERSION = "0.6.7"
SANDBOX_HOME = "/home/sandbox"
# What the templates' images hold before anything runs: the kinds' workdirs.
TEMPLATE_DIRS = ("home/sandbox/app", "home/sandbox/repo")
REDACTED = "<redacted>"
# The namespace E2B puts before a snapshot's name in its full names (``team-slug/name:tag``).
TEAM_SLUG = "fake-team"
TRAFFIC_TOKEN_HEADER = "e2b-traffic-access-token"
_CHUNK = 64 * 1024


class _Drop(Exception):
    """Close the socket without an answer (fault injection)."""


@dataclass
class RecordedRequest:
    """One request as it arrived; ``status`` is filled in once answered (-1: dropped, 0: no answer)."""

    method: str
    path: str
    query: dict[str, list[str]]
    body: Any
    sandbox_id: str | None
    idempotency_key: str | None = None
    # The user envd was asked to act as (the Basic auth name the SDK sends with process calls).
    user: str | None = None
    status: int = 0


@dataclass
class Fault:
    """Applies to the next ``times`` requests whose method matches and whose path fully matches ``path``."""

    method: str
    path: str
    times: int
    status: int | None = None
    delay: float = 0.0
    drop: bool = False


@dataclass
class _Process:
    pid: int
    popen: subprocess.Popen[bytes]
    watchdog: threading.Timer
    # The ProcessConfig it was started with (proto-JSON), as Process/List reports it.
    config: dict[str, Any] = field(default_factory=dict)

    def signal_group(self, sig: int) -> None:
        if self.popen.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.popen.pid, sig)

    def kill(self) -> None:
        self.watchdog.cancel()
        # The command runs in its own session, so the whole group (bash and its children) goes.
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.popen.pid, signal.SIGKILL)
        # Answer SendSignal only once the process is gone, as envd does.
        self.popen.wait(timeout=5)


@dataclass
class FakeSandbox:
    sandbox_id: str
    template_id: str
    metadata: dict[str, str]
    env_vars: dict[str, str] = field(repr=False)
    root: Path
    access_token: str = field(repr=False)
    state: str = "running"
    started_at: datetime = field(default_factory=lambda: datetime.now(UTC))
    end_at: datetime = field(default_factory=lambda: datetime.now(UTC))
    processes: dict[int, _Process] = field(default_factory=dict)
    # The egress configuration in force, as the API takes it (allowOut, denyOut, ...): the create's
    # "network", replaced whole by PUT /sandboxes/{id}/network.
    network: dict[str, Any] = field(default_factory=dict)
    # Set at create only (E2B cannot change it later): None when the sandbox's URLs are public.
    traffic_token: str | None = field(default=None, repr=False)

    def kill_processes(self) -> None:
        for proc in list(self.processes.values()):
            proc.kill()
        self.processes.clear()

    def freeze_processes(self, frozen: bool) -> None:
        for proc in list(self.processes.values()):
            proc.signal_group(signal.SIGSTOP if frozen else signal.SIGCONT)

    def listed(self) -> dict[str, Any]:
        return {
            "templateID": self.template_id,
            "sandboxID": self.sandbox_id,
            "clientID": "fake",
            "startedAt": self.started_at.isoformat(),
            "endAt": self.end_at.isoformat(),
            "cpuCount": 2,
            "memoryMB": 512,
            "diskSizeMB": 1024,
            "state": self.state,
            "envdVersion": ENVD_VERSION,
            "metadata": dict(self.metadata),
        }

    def created(self) -> dict[str, Any]:
        return {
            "templateID": self.template_id,
            "sandboxID": self.sandbox_id,
            "clientID": "fake",
            "envdVersion": ENVD_VERSION,
            "envdAccessToken": self.access_token,
            "trafficAccessToken": self.traffic_token,
            "domain": None,
        }


@dataclass
class FakeSnapshot:
    """A snapshot template: the files of its sandbox when it was taken, under ``root``."""

    name: str
    snapshot_id: str
    sandbox_id: str
    root: Path

    def info(self) -> dict[str, Any]:
        return {"snapshotID": self.snapshot_id, "names": [f"{TEAM_SLUG}/{self.name}:latest"]}


class FakeE2B:
    def __init__(
        self,
        api_key: str,
        workdir: Path,
        *,
        max_page_size: int = 100,
        max_process_seconds: float = 30.0,
        latency: float = 0.0,
    ) -> None:
        self._api_key = api_key
        self._workdir = workdir
        self.max_page_size = max_page_size
        self.max_process_seconds = max_process_seconds
        # Seconds every request waits before it is answered: E2B's cloud is a round trip away, loopback
        # is not, and a benchmark of round trips needs them to cost what they cost in production.
        self.latency = latency
        self._lock = threading.Lock()
        self._sandboxes: dict[str, FakeSandbox] = {}
        # Snapshot templates by bare name (an unnamed one is named by its generated id).
        self._snapshots: dict[str, FakeSnapshot] = {}
        # Names of deleted snapshots: a create from one is a 404, as from any template E2B lacks.
        self._deleted: set[str] = set()
        self._idempotency: dict[str, str] = {}
        self._faults: list[Fault] = []
        self._requests: list[RecordedRequest] = []
        self._pids = itertools.count(1000)
        self._server: ThreadingHTTPServer | None = None
        self._proxy: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None
        # E2B's concurrency limit: a create past this many running sandboxes gets 429 (None: no limit).
        self.max_running: int | None = None

    # --- lifecycle -------------------------------------------------------------------------------------

    def start(self) -> None:
        handler = type("_BoundHandler", (_Handler,), {"fake": self})
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
        self._server.daemon_threads = True
        self._thread = threading.Thread(
            target=self._server.serve_forever, kwargs={"poll_interval": 0.05}, name="fake-e2b", daemon=True
        )
        self._thread.start()
        proxy_handler = type("_BoundProxy", (_PortProxy,), {"fake": self})
        self._proxy = ThreadingHTTPServer(("127.0.0.1", 0), proxy_handler)
        self._proxy.daemon_threads = True
        threading.Thread(
            target=self._proxy.serve_forever,
            kwargs={"poll_interval": 0.05},
            name="fake-e2b-ports",
            daemon=True,
        ).start()

    # The sandbox domain to give the SDK (E2B_DOMAIN) so that get_host names hosts the proxy routes; a
    # reserved name (RFC 2606) that no resolver answers, so nothing but the proxy ever reaches it.
    domain = "e2b.test"

    @property
    def proxy_url(self) -> str:
        assert self._proxy is not None, "FakeE2B.start() first"
        host, port = self._proxy.server_address[:2]
        return f"http://{host!s}:{port}"

    def stop(self) -> None:
        with self._lock:
            for sbx in self._sandboxes.values():
                sbx.kill_processes()
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
        if self._proxy is not None:
            self._proxy.shutdown()
            self._proxy.server_close()
        if self._thread is not None:
            self._thread.join(timeout=5)

    @property
    def url(self) -> str:
        assert self._server is not None, "FakeE2B.start() first"
        host, port = self._server.server_address[:2]
        return f"http://{host!s}:{port}"

    # --- test knobs and assertions --------------------------------------------------------------------

    def inject_fault(
        self,
        method: str,
        path: str,
        *,
        times: int = 1,
        status: int | None = None,
        delay: float = 0.0,
        drop: bool = False,
    ) -> None:
        """Make the next ``times`` matching requests fail with ``status``, stall ``delay`` s, or drop."""
        with self._lock:
            self._faults.append(Fault(method.upper(), path, times, status, delay, drop))

    def lose(self, sandbox_id: str) -> None:
        """Forget a sandbox as E2B does when a paused one is gone: every later call about it is a 404."""
        with self._lock:
            sbx = self._sandboxes.pop(sandbox_id)
            sbx.kill_processes()

    def sandbox(self, sandbox_id: str) -> FakeSandbox:
        with self._lock:
            return self._sandboxes[sandbox_id]

    def sandboxes(self) -> list[FakeSandbox]:
        with self._lock:
            return list(self._sandboxes.values())

    def requests(self, method: str | None = None, path: str | None = None) -> list[RecordedRequest]:
        """Recorded requests, optionally those with this method and a path fully matching the regex."""
        with self._lock:
            recorded = list(self._requests)
        return [
            r
            for r in recorded
            if (method is None or r.method == method.upper())
            and (path is None or re.fullmatch(path, r.path) is not None)
        ]

    def snapshots(self) -> list[FakeSnapshot]:
        with self._lock:
            return list(self._snapshots.values())

    def process_count(self, sandbox_id: str) -> int:
        """Processes of the sandbox still alive."""
        with self._lock:
            procs = list(self._sandboxes[sandbox_id].processes.values())
        return sum(1 for p in procs if p.popen.poll() is None)

    # --- internals used by the handler ----------------------------------------------------------------

    def _take_fault(self, method: str, path: str) -> Fault | None:
        with self._lock:
            for fault in self._faults:
                if fault.times > 0 and fault.method == method and re.fullmatch(fault.path, path):
                    fault.times -= 1
                    return fault
        return None

    def _record(self, request: RecordedRequest) -> None:
        with self._lock:
            self._requests.append(request)

    def _new_sandbox(self, body: dict[str, Any], idempotency_key: str | None) -> FakeSandbox:
        with self._lock:
            if idempotency_key is not None and idempotency_key in self._idempotency:
                existing = self._sandboxes.get(self._idempotency[idempotency_key])
                if existing is not None:
                    return existing
            running = sum(1 for s in self._sandboxes.values() if s.state == "running")
            if self.max_running is not None and running >= self.max_running:
                raise _HTTPError(429, f"concurrency limit of {self.max_running} running sandboxes reached")
            sandbox_id = "i" + uuid.uuid4().hex[:19]
            root = self._workdir / sandbox_id
            template = str(body.get("templateID"))
            snapshot = self._snapshot_named(template)
            if snapshot is None and _bare_name(template) in self._deleted:
                raise _HTTPError(404, f"template '{template}' not found")
            if snapshot is not None:
                shutil.copytree(snapshot.root, root, symlinks=True)
            for rel in TEMPLATE_DIRS:
                (root / rel).mkdir(parents=True, exist_ok=True)
            network = dict(body.get("network") or {})
            timeout = int(body.get("timeout", 15))
            now = datetime.now(UTC)
            sbx = FakeSandbox(
                sandbox_id=sandbox_id,
                template_id=str(body["templateID"]),
                metadata={str(k): str(v) for k, v in (body.get("metadata") or {}).items()},
                env_vars={str(k): str(v) for k, v in (body.get("envVars") or {}).items()},
                network=network,
                root=root,
                access_token=uuid.uuid4().hex,
                traffic_token=None if network.get("allowPublicTraffic", True) else uuid.uuid4().hex,
                started_at=now,
                end_at=now + timedelta(seconds=timeout),
            )
            self._sandboxes[sandbox_id] = sbx
            if idempotency_key is not None:
                self._idempotency[idempotency_key] = sandbox_id
            return sbx

    def _snapshot_named(self, ref: str) -> FakeSnapshot | None:
        """The snapshot a template id or name names (its id, ``name``, ``name:tag``, ``team/name:tag``);
        the caller holds the lock."""
        found = self._snapshots.get(_bare_name(ref))
        if found is None:
            found = next((s for s in self._snapshots.values() if s.snapshot_id == ref), None)
        return found

    def _take_snapshot(self, sbx: FakeSandbox, name: str | None) -> FakeSnapshot:
        with self._lock:
            bare = name or "snap" + uuid.uuid4().hex[:16]
            old = self._snapshots.get(bare)
            root = self._workdir / "_snapshots" / (bare + "-" + uuid.uuid4().hex[:8])
            shutil.copytree(sbx.root, root, symlinks=True)
            # A name taken gets a new build of the same template: the id stays, the files are new.
            snapshot = FakeSnapshot(bare, f"{bare}:latest", sbx.sandbox_id, root)
            self._snapshots[bare] = snapshot
        if old is not None:
            shutil.rmtree(old.root, ignore_errors=True)
        return snapshot

    def _start_process(self, sbx: FakeSandbox, config: dict[str, Any]) -> _Process:
        """Run a ``process.ProcessConfig`` (its proto-JSON form: cmd, args, envs, cwd) in the sandbox."""
        cwd = _map_path(sbx.root, config.get("cwd") or SANDBOX_HOME)
        if not cwd.is_dir():
            raise _ConnectError("invalid_argument", f"cwd '{config.get('cwd')}' does not exist")
        env = {
            "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
            "HOME": str(_map_path(sbx.root, SANDBOX_HOME)),
            "LANG": "C.UTF-8",
            **sbx.env_vars,
            **config.get("envs", {}),
        }
        popen = subprocess.Popen(
            [config["cmd"], *config.get("args", [])],
            cwd=cwd,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            start_new_session=True,
        )
        pid = next(self._pids)
        watchdog = threading.Timer(self.max_process_seconds, _killpg, args=(popen.pid,))
        watchdog.daemon = True
        watchdog.start()
        proc = _Process(pid, popen, watchdog, dict(config))
        with self._lock:
            sbx.processes[pid] = proc
        return proc


class _ConnectError(Exception):
    _HTTP = {"invalid_argument": 400, "not_found": 404, "unimplemented": 404, "unauthenticated": 401}

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message

    @property
    def http_status(self) -> int:
        return self._HTTP.get(self.code, 500)


class _HTTPError(Exception):
    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


def _bare_name(ref: str) -> str:
    """A template's name without its namespace and tag (``team/name:tag`` -> ``name``)."""
    return ref.rsplit("/", 1)[-1].split(":", 1)[0]


def _killpg(pid: int) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.killpg(pid, signal.SIGKILL)


def _map_path(root: Path, sandbox_path: str) -> Path:
    """The host path of a sandbox path; relative paths are relative to the sandbox user's home."""
    posix = PurePosixPath(sandbox_path)
    if not posix.is_absolute():
        posix = PurePosixPath(SANDBOX_HOME) / posix
    host = (root / str(posix).lstrip("/")).resolve()
    if not host.is_relative_to(root.resolve()):
        raise _HTTPError(400, f"path {sandbox_path!r} escapes the sandbox")
    return host


def _map_path_nofollow(root: Path, sandbox_path: str) -> Path:
    """Like ``_map_path``, but the last component is not resolved: a symlink is itself (stat, remove)."""
    posix = PurePosixPath(sandbox_path)
    if not posix.is_absolute():
        posix = PurePosixPath(SANDBOX_HOME) / posix
    parent = _map_path(root, str(posix.parent))
    return parent / posix.name if posix.name else parent


_PB_TYPES = {"file": "FILE_TYPE_FILE", "dir": "FILE_TYPE_DIRECTORY"}


def _entry_info(target: Path, sandbox_path: str) -> dict[str, Any]:
    """A filesystem.EntryInfo in proto-JSON (int64 as a string, enums by name), as envd answers."""
    st = target.lstat()
    is_link = target.is_symlink()
    kind = "dir" if target.is_dir() else "file"
    entry: dict[str, Any] = {
        "name": target.name,
        # Newer envd: the target's type in `type`, the link itself marked by isSymlink.
        "type": _PB_TYPES[kind],
        "path": sandbox_path,
        "size": str(st.st_size),
        "mode": st.st_mode & 0o7777,
        "permissions": oct(st.st_mode & 0o777),
        "owner": "user",
        "group": "user",
        "modifiedTime": datetime.fromtimestamp(st.st_mtime, UTC).isoformat().replace("+00:00", "Z"),
        "isSymlink": is_link,
    }
    if is_link:
        entry["symlinkTarget"] = os.readlink(target)
    return entry


def _redact(body: Any) -> Any:
    """The body with every environment value replaced, for the request record."""
    if not isinstance(body, dict):
        return body
    out = dict(body)
    for key in ("envVars", "envs"):
        if isinstance(out.get(key), dict):
            out[key] = dict.fromkeys(out[key], REDACTED)
    if isinstance(out.get("process"), dict):
        out["process"] = _redact(out["process"])
    return out


def _basic_user(authorization: str | None) -> str | None:
    if not authorization or not authorization.startswith("Basic "):
        return None
    return base64.b64decode(authorization.removeprefix("Basic ")).decode().partition(":")[0]


def _envelope(flags: int, payload: bytes) -> bytes:
    return bytes([flags]) + len(payload).to_bytes(4, "big") + payload


def _parse_multipart(content_type: str, body: bytes) -> list[tuple[str, bytes]]:
    """(filename, content) of each part of a multipart/form-data body."""
    match = re.search(r'boundary="?([^";]+)"?', content_type)
    if match is None:
        raise _HTTPError(400, "multipart body without boundary")
    delimiter = b"--" + match.group(1).encode()
    parts: list[tuple[str, bytes]] = []
    for raw in body.split(delimiter)[1:]:
        if raw.startswith(b"--"):
            break
        head, _, content = raw.partition(b"\r\n\r\n")
        name = re.search(rb'filename="([^"]*)"', head)
        if name is None:
            continue
        parts.append((name.group(1).decode(), content.removesuffix(b"\r\n")))
    return parts


class _Handler(BaseHTTPRequestHandler):
    fake: FakeE2B
    protocol_version = "HTTP/1.1"
    _record: RecordedRequest

    def log_message(self, format: str, *args: Any) -> None:
        # The default writes every request line to stderr; requests are recorded (and logged) by FakeE2B.
        pass

    # --- plumbing ----------------------------------------------------------------------------------------

    def do_GET(self) -> None:
        self._dispatch()

    def do_POST(self) -> None:
        self._dispatch()

    def do_DELETE(self) -> None:
        self._dispatch()

    def do_PUT(self) -> None:
        self._dispatch()

    def _read_body(self) -> bytes:
        if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
            chunks: list[bytes] = []
            while True:
                size = int(self.rfile.readline().split(b";")[0].strip() or b"0", 16)
                if size == 0:
                    self.rfile.readline()
                    return b"".join(chunks)
                chunks.append(self.rfile.read(size))
                self.rfile.readline()
        length = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(length) if length else b""

    def _body_chunks(self) -> Iterator[bytes]:
        """The request body as it arrives, so a streamed upload is written to disk without holding it."""
        if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
            for _ in range(1 << 30):  # bounded by the body's end (a zero-size chunk)
                size = int(self.rfile.readline().split(b";")[0].strip() or b"0", 16)
                if size == 0:
                    self.rfile.readline()
                    return
                yield self.rfile.read(size)
                self.rfile.readline()
            return
        left = int(self.headers.get("Content-Length") or 0)
        while left > 0:
            chunk = self.rfile.read(min(_CHUNK, left))
            if not chunk:
                return
            left -= len(chunk)
            yield chunk

    def _dispatch(self) -> None:
        split = urlsplit(self.path)
        path, query = split.path, parse_qs(split.query)
        streamed = (
            self.command == "POST"
            and path == "/files"
            and self.headers.get("Content-Type", "").startswith("application/octet-stream")
        )
        # A streamed upload is read by its handler (into the file); everything else is read here.
        raw = b"" if streamed else self._read_body()
        body: Any = None
        if raw and "json" in self.headers.get("Content-Type", ""):
            payload = (
                raw[5:] if self.headers.get("Content-Type", "").startswith("application/connect") else raw
            )
            try:
                body = json.loads(payload)
            except ValueError:
                body = None
        self._record = RecordedRequest(
            method=self.command,
            path=path,
            query=query,
            body=_redact(body),
            sandbox_id=self.headers.get("E2b-Sandbox-Id"),
            idempotency_key=self.headers.get("Idempotency-Key"),
            user=_basic_user(self.headers.get("Authorization")),
        )
        self.fake._record(self._record)
        try:
            self._answer(path, query, raw, body)
        except (BrokenPipeError, ConnectionResetError):
            # The client gave up (its deadline passed): there is no one to answer.
            self.close_connection = True
        log.debug("fake e2b: %s %s -> %s", self.command, path, self._record.status)

    def _answer(self, path: str, query: dict[str, list[str]], raw: bytes, body: Any) -> None:
        try:
            if self.fake.latency:
                time.sleep(self.fake.latency)
            fault = self.fake._take_fault(self.command, path)
            if fault is not None:
                if fault.delay:
                    time.sleep(fault.delay)
                if fault.drop:
                    raise _Drop
                if fault.status is not None:
                    raise _HTTPError(fault.status, "injected fault")
            self._route(path, query, raw, body)
        except _Drop:
            self._record.status = -1
            self.close_connection = True
            with contextlib.suppress(OSError):
                self.connection.shutdown(socket.SHUT_RDWR)
        except _HTTPError as e:
            self._send_json(e.status, {"code": e.status, "message": e.message})
        except _ConnectError as e:
            self._send_json(e.http_status, {"code": e.code, "message": e.message})

    def _send(
        self, status: int, payload: bytes, content_type: str, headers: dict[str, str] | None = None
    ) -> None:
        self._record.status = status
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(payload)))
        for key, value in (headers or {}).items():
            self.send_header(key, value)
        self.end_headers()
        self.wfile.write(payload)

    def _send_json(self, status: int, obj: Any, headers: dict[str, str] | None = None) -> None:
        self._send(status, json.dumps(obj).encode(), "application/json", headers)

    def _send_empty(self, status: int) -> None:
        self._record.status = status
        self.send_response(status)
        self.send_header("Content-Length", "0")
        self.end_headers()

    # --- routing ----------------------------------------------------------------------------------------

    def _route(self, path: str, query: dict[str, list[str]], raw: bytes, body: Any) -> None:
        if path in ("/health", "/files") or path.startswith(("/process.Process/", "/filesystem.Filesystem/")):
            self._envd(path, query, raw, body)
            return
        if self.headers.get("X-API-KEY") != self.fake._api_key:
            raise _HTTPError(401, "Invalid API key")
        if path == "/v2/sandboxes":
            if self.command == "POST":
                self._create(body or {})
            else:
                self._list(query)
            return
        if path == "/snapshots" and self.command == "GET":
            self._list_snapshots(query)
            return
        template = re.fullmatch(r"/templates/([^/]+)", path)
        if template is not None and self.command == "DELETE":
            self._delete_template(unquote(template.group(1)))
            return
        match = re.fullmatch(
            r"/(?:v2/)?sandboxes/([^/]+)(?:/(pause|connect|timeout|network|snapshots))?", path
        )
        if match is None:
            raise _HTTPError(404, f"no route {self.command} {path}")
        sandbox_id, action = match.group(1), match.group(2)
        with self.fake._lock:
            sbx = self.fake._sandboxes.get(sandbox_id)
        if sbx is None:
            raise _HTTPError(404, f"sandbox {sandbox_id} not found")
        if action is None and self.command == "GET":
            self._send_json(200, {**sbx.listed(), "envdAccessToken": sbx.access_token})
        elif action is None and self.command == "DELETE":
            with self.fake._lock:
                self.fake._sandboxes.pop(sandbox_id, None)
                sbx.kill_processes()
            shutil.rmtree(sbx.root, ignore_errors=True)
            self._send_empty(204)
        elif action == "pause":
            with self.fake._lock:
                if sbx.state == "paused":
                    raise _HTTPError(409, f"sandbox {sandbox_id} is already paused")
                sbx.freeze_processes(True)
                sbx.state = "paused"
            self._send_empty(204)
        elif action == "connect" and path.startswith("/v2/"):
            timeout = int((body or {}).get("timeout", 300))
            with self.fake._lock:
                resumed = sbx.state == "paused"
                sbx.state = "running"
                if resumed:
                    sbx.freeze_processes(False)
                deadline = datetime.now(UTC) + timedelta(seconds=timeout)
                # Like E2B: a connect only ever extends a running sandbox's life.
                sbx.end_at = deadline if resumed else max(sbx.end_at, deadline)
            self._send_json(201 if resumed else 200, sbx.created())
        elif action == "network" and self.command == "PUT" and not path.startswith("/v2/"):
            self._update_network(sbx, body)
        elif action == "snapshots" and self.command == "POST" and not path.startswith("/v2/"):
            name = (body or {}).get("name")
            if name is not None and not re.fullmatch(r"[a-z0-9][a-z0-9_.-]{0,127}", str(name)):
                raise _HTTPError(400, f"invalid snapshot name {name!r}")
            self._send_json(201, self.fake._take_snapshot(sbx, name).info())
        elif action == "timeout":
            with self.fake._lock:
                sbx.end_at = datetime.now(UTC) + timedelta(seconds=int((body or {})["timeout"]))
            self._send_empty(204)
        else:
            raise _HTTPError(404, f"no route {self.command} {path}")

    def _update_network(self, sbx: FakeSandbox, body: Any) -> None:
        """PUT /sandboxes/{id}/network: the whole egress configuration replaced (what is omitted is
        cleared, as E2B documents); only a running sandbox's, domains never in denyOut."""
        if not isinstance(body, dict):
            raise _HTTPError(400, "a JSON object is required")
        known = {"allowOut", "denyOut", "dnsServers", "egressProxy", "rules", "allow_internet_access"}
        if set(body) - known:
            raise _HTTPError(400, f"unknown fields {sorted(set(body) - known)}")
        for entry in body.get("denyOut") or []:
            if any(c.isalpha() for c in str(entry)) and ":" not in str(entry):
                raise _HTTPError(400, f"denyOut takes CIDR blocks or IP addresses, not {entry!r}")
        with self.fake._lock:
            if sbx.state != "running":
                raise _HTTPError(409, f"sandbox {sbx.sandbox_id} is not running")
            sbx.network = dict(body)
        self._send_empty(204)

    def _list_snapshots(self, query: dict[str, list[str]]) -> None:
        source = query.get("sandboxID", [None])[0]
        name = query.get("name", [None])[0]
        limit = min(int(query.get("limit", ["100"])[0]), self.fake.max_page_size)
        start = int(base64.urlsafe_b64decode(query["nextToken"][0]).decode()) if "nextToken" in query else 0
        with self.fake._lock:
            named = self.fake._snapshot_named(name) if name else None
            matching = [
                s
                for s in sorted(self.fake._snapshots.values(), key=lambda s: s.name)
                if (source is None or s.sandbox_id == source) and (name is None or s is named)
            ]
            page = [s.info() for s in matching[start : start + limit]]
        headers = {}
        if start + limit < len(matching):
            headers["x-next-token"] = base64.urlsafe_b64encode(str(start + limit).encode()).decode()
        self._send_json(200, page, headers)

    def _delete_template(self, ref: str) -> None:
        with self.fake._lock:
            snapshot = self.fake._snapshot_named(ref)
            if snapshot is not None:
                del self.fake._snapshots[snapshot.name]
                self.fake._deleted.add(snapshot.name)
        if snapshot is None:
            raise _HTTPError(404, f"template {ref} not found")
        shutil.rmtree(snapshot.root, ignore_errors=True)
        self._send_empty(204)

    def _create(self, body: dict[str, Any]) -> None:
        if not body.get("templateID"):
            raise _HTTPError(400, "templateID is required")
        sbx = self.fake._new_sandbox(body, self.headers.get("Idempotency-Key"))
        self._send_json(201, sbx.created())

    def _list(self, query: dict[str, list[str]]) -> None:
        wanted_meta = {k: v for k, v in parse_qsl(query.get("metadata", [""])[0])}
        states = set(query["state"][0].split(",")) if "state" in query else {"running", "paused"}
        limit = min(int(query.get("limit", ["100"])[0]), self.fake.max_page_size)
        start = int(base64.urlsafe_b64decode(query["nextToken"][0]).decode()) if "nextToken" in query else 0
        with self.fake._lock:
            matching = [
                s
                for s in sorted(self.fake._sandboxes.values(), key=lambda s: (s.started_at, s.sandbox_id))
                if s.state in states and all(s.metadata.get(k) == v for k, v in wanted_meta.items())
            ]
            page = [s.listed() for s in matching[start : start + limit]]
        headers = {}
        if start + limit < len(matching):
            headers["x-next-token"] = base64.urlsafe_b64encode(str(start + limit).encode()).decode()
        self._send_json(200, page, headers)

    # --- envd --------------------------------------------------------------------------------------------

    def _envd_sandbox(self) -> FakeSandbox:
        sandbox_id = self.headers.get("E2b-Sandbox-Id", "")
        with self.fake._lock:
            sbx = self.fake._sandboxes.get(sandbox_id)
        # E2B's proxy answers for envd when the sandbox is not running; the SDK reads "was not found".
        if sbx is None or sbx.state != "running":
            raise _HTTPError(502, f"The sandbox {sandbox_id} was not found")
        if self.headers.get("X-Access-Token") != sbx.access_token:
            raise _HTTPError(401, "invalid envd access token")
        return sbx

    def _envd(self, path: str, query: dict[str, list[str]], raw: bytes, body: Any) -> None:
        sbx = self._envd_sandbox()
        if path == "/health":
            self._send_empty(204)
        elif path == "/files" and self.command == "GET":
            target = _map_path(sbx.root, query.get("path", [""])[0])
            if not target.is_file():
                raise _HTTPError(404, f"file {query.get('path', [''])[0]!r} not found")
            self._send_file(target)
        elif path == "/files" and self.command == "POST":
            content_type = self.headers.get("Content-Type", "")
            if content_type.startswith("application/octet-stream"):
                name = query["path"][0]
                target = _map_path(sbx.root, name)
                target.parent.mkdir(parents=True, exist_ok=True)
                # Written as it arrives, like envd: a 100 MB upload never sits in the fake's memory.
                with target.open("wb") as out:
                    for chunk in self._body_chunks():
                        out.write(chunk)
                self._send_json(200, [{"name": target.name, "type": "file", "path": name}])
                return
            if content_type.startswith("multipart/form-data"):
                parts = _parse_multipart(content_type, raw)
                if "path" in query and len(parts) == 1:
                    parts = [(query["path"][0], parts[0][1])]
            else:
                parts = [(query["path"][0], raw)]
            written = []
            for name, content in parts:
                target = _map_path(sbx.root, name)
                target.parent.mkdir(parents=True, exist_ok=True)
                target.write_bytes(content)
                written.append({"name": target.name, "type": "file", "path": name})
            self._send_json(200, written)
        elif path.startswith("/filesystem.Filesystem/"):
            self._filesystem(sbx, path.rsplit("/", 1)[1], body or {})
        elif path == "/process.Process/Start":
            self._start(sbx, body)
        elif path == "/process.Process/List":
            with self.fake._lock:
                alive = [p for p in sbx.processes.values() if p.popen.poll() is None]
            self._send_json(200, {"processes": [{"config": p.config, "pid": p.pid} for p in alive]})
        elif path == "/process.Process/Connect":
            self._connect(sbx, body)
        elif path == "/process.Process/SendSignal":
            pid = (body or {}).get("process", {}).get("pid")
            with self.fake._lock:
                proc = sbx.processes.get(pid) if isinstance(pid, int) else None
            if proc is None or proc.popen.poll() is not None:
                raise _ConnectError("not_found", f"process with pid {pid} not found")
            proc.kill()
            self._send_json(200, {})
        else:
            raise _ConnectError("unimplemented", f"{path} is not implemented by the fake")

    def _filesystem(self, sbx: FakeSandbox, method: str, body: dict[str, Any]) -> None:
        """The unary filesystem RPCs the SDK's files.exists/list/remove call (Connect, JSON codec)."""
        name = str(body.get("path", ""))
        target = _map_path_nofollow(sbx.root, name)
        if method == "Stat":
            if not os.path.lexists(target):
                raise _ConnectError("not_found", f"path '{name}' does not exist")
            self._send_json(200, {"entry": _entry_info(target, name)})
        elif method == "Remove":
            if not os.path.lexists(target):
                raise _ConnectError("not_found", f"path '{name}' does not exist")
            # Like envd (os.RemoveAll): a directory goes with everything in it; a link, not its target.
            if target.is_dir() and not target.is_symlink():
                shutil.rmtree(target)
            else:
                target.unlink()
            self._send_json(200, {})
        elif method == "ListDir":
            if not os.path.lexists(target):
                raise _ConnectError("not_found", f"path '{name}' does not exist")
            if not target.is_dir():
                raise _ConnectError("invalid_argument", f"path '{name}' is not a directory")
            entries = [
                _entry_info(child, f"{name.rstrip('/')}/{child.name}") for child in sorted(target.iterdir())
            ]
            self._send_json(200, {"entries": entries})
        else:
            raise _ConnectError(
                "unimplemented", f"filesystem.Filesystem/{method} is not implemented by the fake"
            )

    def _send_file(self, target: Path) -> None:
        """A file's bytes in chunks (a download of any size never sits in the fake's memory)."""
        with target.open("rb") as source:
            size = os.fstat(source.fileno()).st_size
            self._record.status = 200
            self.send_response(200)
            self.send_header("Content-Type", "application/octet-stream")
            self.send_header("Content-Length", str(size))
            self.end_headers()
            left = size
            while left > 0 and (chunk := source.read(min(_CHUNK * 16, left))):
                self.wfile.write(chunk)
                left -= len(chunk)

    def _start(self, sbx: FakeSandbox, body: Any) -> None:
        if not isinstance(body, dict) or not isinstance(body.get("process"), dict):
            raise _ConnectError("invalid_argument", "process config is required")
        proc = self.fake._start_process(sbx, body["process"])
        self._record.status = 200
        self.send_response(200)
        self.send_header("Content-Type", "application/connect+json")
        self.send_header("Transfer-Encoding", "chunked")
        self.end_headers()
        # StartResponse messages in proto-JSON: bytes are base64, field names camelCase.
        self._stream_event({"start": {"pid": proc.pid}})
        for stream, chunk in _read_outputs(proc.popen, lambda: sbx.state == "paused"):
            self._stream_event({"data": {stream: base64.b64encode(chunk).decode()}})
        code = proc.popen.wait()
        proc.watchdog.cancel()
        if code >= 0:
            self._stream_event({"end": {"exitCode": code, "exited": True, "status": f"exit status {code}"}})
        else:
            self._stream_event({"end": {"exitCode": -1, "exited": False, "status": "signal: killed"}})
        self._write_chunk(_envelope(0x02, b"{}"))
        self.wfile.write(b"0\r\n\r\n")

    def _connect(self, sbx: FakeSandbox, body: Any) -> None:
        """Attach to a running process: its start event, keepalives while it runs, then its end (output
        is only streamed to the stream that started it; our supervisors print none)."""
        pid = (body or {}).get("process", {}).get("pid")
        with self.fake._lock:
            proc = sbx.processes.get(pid) if isinstance(pid, int) else None
        if proc is None or proc.popen.poll() is not None:
            raise _ConnectError("not_found", f"process with pid {pid} not found")
        self._record.status = 200
        self.send_response(200)
        self.send_header("Content-Type", "application/connect+json")
        self.send_header("Transfer-Encoding", "chunked")
        self.end_headers()
        self._stream_event({"start": {"pid": proc.pid}})
        # Bounded by the watchdog, which kills every process after max_process_seconds.
        while proc.popen.poll() is None:
            try:
                proc.popen.wait(timeout=0.5)
            except subprocess.TimeoutExpired:
                self._stream_event({"keepalive": {}})  # a client that left makes this raise
        code = proc.popen.returncode
        if code >= 0:
            self._stream_event({"end": {"exitCode": code, "exited": True, "status": f"exit status {code}"}})
        else:
            self._stream_event({"end": {"exitCode": -1, "exited": False, "status": "signal: killed"}})
        self._write_chunk(_envelope(0x02, b"{}"))
        self.wfile.write(b"0\r\n\r\n")

    def _stream_event(self, event: dict[str, Any]) -> None:
        self._write_chunk(_envelope(0, json.dumps({"event": event}).encode()))

    def _write_chunk(self, data: bytes) -> None:
        self.wfile.write(f"{len(data):x}\r\n".encode() + data + b"\r\n")
        self.wfile.flush()


def _read_outputs(
    popen: subprocess.Popen[bytes], paused: Callable[[], bool] = lambda: False
) -> Iterator[tuple[str, bytes]]:
    """("stdout" | "stderr", chunk) as the process writes them, until both pipes close. A sandbox paused
    while its command streams drops the stream (_Drop), as E2B's pause ends every open connection: a
    frozen process's stream must not hold its client until the client's own deadline."""
    chunks: queue.Queue[tuple[str, bytes]] = queue.Queue()

    def pump(name: str, pipe: Any) -> None:
        with pipe:
            while chunk := pipe.read1(_CHUNK):
                chunks.put((name, chunk))
        chunks.put((name, b""))

    readers = [
        threading.Thread(target=pump, args=("stdout", popen.stdout), daemon=True),
        threading.Thread(target=pump, args=("stderr", popen.stderr), daemon=True),
    ]
    for reader in readers:
        reader.start()
    open_pipes = len(readers)
    while open_pipes:
        try:
            name, chunk = chunks.get(timeout=0.2)
        except queue.Empty:
            if paused():
                raise _Drop from None
            continue
        if chunk:
            yield name, chunk
        else:
            open_pipes -= 1


class _PortProxy(BaseHTTPRequestHandler):
    """E2B's edge for sandbox ports: ``<port>-<sandbox id>.<domain>`` reaches ``port`` in that sandbox
    (here: on loopback). Spoken as an HTTP proxy (absolute-form request lines), so a client uses the URL
    the provider returned exactly as it is. Only GET is relayed; 502 when the sandbox is not running or
    nothing listens, as E2B answers."""

    fake: FakeE2B
    protocol_version = "HTTP/1.1"

    def log_message(self, format: str, *args: Any) -> None:
        pass

    def do_GET(self) -> None:
        split = urlsplit(self.path)
        host = split.hostname or (self.headers.get("Host") or "").split(":")[0]
        match = re.fullmatch(r"(\d+)-([A-Za-z0-9]+)\." + re.escape(self.fake.domain), host)
        with self.fake._lock:
            sbx = self.fake._sandboxes.get(match.group(2)) if match else None
        if match is None or sbx is None or sbx.state != "running":
            self._answer(502, b"sandbox not found\n")
            return
        if sbx.traffic_token is not None and self.headers.get(TRAFFIC_TOKEN_HEADER) != sbx.traffic_token:
            message = f"Sandbox is secured with traffic access token. Token header '{TRAFFIC_TOKEN_HEADER}'"
            self._answer(403, message.encode() + b" is missing\n")
            return
        target = http.client.HTTPConnection("127.0.0.1", int(match.group(1)), timeout=10)
        try:
            target.request("GET", (split.path or "/") + (f"?{split.query}" if split.query else ""))
            answer = target.getresponse()
            body = answer.read()
        except OSError:
            self._answer(502, b"nothing listens on that port\n")
            return
        finally:
            target.close()
        self._answer(answer.status, body, answer.getheader("Content-Type") or "application/octet-stream")

    def _answer(self, status: int, body: bytes, content_type: str = "text/plain") -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)
