"""The background-process, port and activity part of the provider contract (fake, Docker, loopback E2B).

A process started with ``start`` runs on after the call, no exec's cleanup touches it, its output is
read back from the sandbox, it is waited for and killed by id; a suspend stops it where the provider's
pause cannot keep it (Docker) and keeps it where it can (E2B). ``url`` reaches a server it runs.
"""

from __future__ import annotations

import socket
import time
import urllib.error
import urllib.request

import pytest

from sandbox_lifecycle.core.errors import ProcessNotFound, Unsupported
from sandbox_lifecycle.core.kinds import DATA_APP
from sandbox_lifecycle.core.preview import preview_of
from sandbox_lifecycle.core.sandbox import snapshot_key
from tests.support.fixtures.providers import Harness


def _wait_until(check, seconds: float = 20.0) -> bool:  # type: ignore[no-untyped-def]
    for _ in range(int(seconds / 0.1)):
        if check():
            return True
        time.sleep(0.1)
    return bool(check())


def test_a_started_process_runs_detached_and_reports_output_and_status(harness: Harness) -> None:
    p = harness.provider
    ref = p.create(harness.new_id(), DATA_APP)

    info = p.start(
        ref, ["sh", "-c", 'echo "out $GREETING"; pwd; echo err >&2; exit 7'], env={"GREETING": "hi"}
    )

    assert info.running and info.command[0] == "sh"
    assert p.wait_process(ref, info.id, 20) == 7
    out, err = p.process_output(ref, info.id)
    assert out.decode().splitlines()[0] == "out hi"
    assert out.decode().splitlines()[1].endswith("/app")  # the kind's workdir by default
    assert err == b"err\n"
    [listed] = [q for q in p.processes(ref) if q.id == info.id]
    assert (listed.running, listed.exit_code, listed.command) == (False, 7, info.command)


def test_execs_do_not_kill_a_background_process_and_kill_does(harness: Harness) -> None:
    p = harness.provider
    ref = p.create(harness.new_id(), DATA_APP)
    long = p.start(ref, ["sh", "-c", "echo started; sleep 60"])

    # Every exec's wrapper kills what the exec left behind; a background process is not the exec's.
    assert p.exec(ref, ["true"], timeout=20).exit_code == 0
    with pytest.raises(TimeoutError):
        p.wait_process(ref, long.id, 0.5)
    assert [q.running for q in p.processes(ref) if q.id == long.id] == [True]

    p.kill_process(ref, long.id)

    assert p.wait_process(ref, long.id, 20) == 137
    [killed] = [q for q in p.processes(ref) if q.id == long.id]
    assert (killed.running, killed.exit_code) == (False, 137)
    p.kill_process(ref, long.id)  # killing an ended process is success


def test_an_unknown_process_id_is_process_not_found(harness: Harness) -> None:
    p = harness.provider
    ref = p.create(harness.new_id(), DATA_APP)

    with pytest.raises(ProcessNotFound):
        p.process_output(ref, "0123456789abcde")
    with pytest.raises(ProcessNotFound):
        p.wait_process(ref, "0123456789abcde", 1)
    assert p.processes(ref) == []


def test_last_activity_is_when_a_process_output_last_moved(harness: Harness) -> None:
    p = harness.provider
    ref = p.create(harness.new_id(), DATA_APP)
    assert p.last_activity(ref) is None

    proc = p.start(ref, ["sh", "-c", "echo one; sleep 0.3; echo two"])
    assert p.wait_process(ref, proc.id, 20) == 0

    seen = p.last_activity(ref)
    assert seen is not None
    again = p.last_activity(ref)
    assert again == seen  # nothing moved since


def test_suspend_stops_processes_unless_the_pause_keeps_them(harness: Harness) -> None:
    p = harness.provider
    sid = harness.new_id()
    ref = p.create(sid, DATA_APP)
    proc = p.start(ref, ["sh", "-c", "while true; do echo tick; sleep 0.2; done"])

    snap = p.suspend(sid, ref, DATA_APP, snapshot_key(sid, 3))
    resumed = p.resume(sid, DATA_APP, snap)

    if p.capabilities.pause_keeps_processes:
        assert [q.running for q in p.processes(resumed) if q.id == proc.id] == [True]
        before = p.process_output(resumed, proc.id)[0].count(b"tick")
        assert _wait_until(lambda: p.process_output(resumed, proc.id)[0].count(b"tick") > before)
        p.kill_process(resumed, proc.id)
    else:
        assert [q for q in p.processes(resumed) if q.running] == []


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_url_reaches_a_server_started_in_the_sandbox(
    harness: Harness, request: pytest.FixtureRequest
) -> None:
    p = harness.provider
    ref = p.create(harness.new_id(), DATA_APP)
    if not p.capabilities.ports:
        with pytest.raises(Unsupported, match="url"):
            p.url(ref, 8000)
        return
    port = _free_port()
    p.write_file(ref, "index.html", b"hello from the sandbox\n")
    # 0.0.0.0: on Docker the forwarder reaches the server over the sandbox's own network.
    server = p.start(ref, ["python3", "-m", "http.server", str(port), "--bind", "0.0.0.0"])
    url = p.url(ref, port)
    preview = preview_of(p, ref, port)
    assert preview.url == url
    # On E2B the URL names <port>-<id>.<domain>; the loopback fake's port proxy is what resolves it.
    proxies = {"http": request.getfixturevalue("fake_e2b").proxy_url} if harness.name == "e2b" else {}
    opener = urllib.request.build_opener(urllib.request.ProxyHandler(proxies))

    def get(headers: dict[str, str]) -> bytes | int | None:
        try:
            with opener.open(
                urllib.request.Request(f"{url}/index.html", headers=headers), timeout=5
            ) as answer:
                return bytes(answer.read())
        except urllib.error.HTTPError as refused:
            return refused.code if refused.code == 403 else None
        except (urllib.error.URLError, OSError):
            return None

    try:
        assert _wait_until(lambda: get(dict(preview.headers)) is not None)
        assert get(dict(preview.headers)) == b"hello from the sandbox\n"
        # E2B: public traffic is off, so the URL alone is refused; Docker's forwarder needs no header.
        assert set(preview.headers) == ({"e2b-traffic-access-token"} if harness.name == "e2b" else set())
        assert get({}) == (403 if harness.name == "e2b" else b"hello from the sandbox\n")
    finally:
        p.kill_process(ref, server.id)


def test_kill_reaches_what_the_process_started_even_in_a_session_of_its_own(harness: Harness) -> None:
    p = harness.provider
    ref = p.create(harness.new_id(), DATA_APP)
    escapee = "import os, time; os.setsid(); print(os.getpid(), flush=True); time.sleep(120)"
    proc = p.start(ref, ["sh", "-c", f'python3 -c "{escapee}" & wait'])
    assert _wait_until(lambda: p.process_output(ref, proc.id)[0].strip().isdigit())
    child = p.process_output(ref, proc.id)[0].decode().strip()

    p.kill_process(ref, proc.id)

    # `kill -0` from the sandbox: exit 0 while that pid lives.
    assert _wait_until(lambda: p.exec(ref, ["sh", "-c", f"kill -0 {child}"], timeout=20).exit_code != 0, 10)
