"""The console's routes over a real SQLite log: read-only, escaped, the pages' contents, the event stream."""

from __future__ import annotations

import json
import sqlite3
import threading
from html.parser import HTMLParser
from pathlib import Path

import pytest
from starlette.applications import Starlette
from starlette.routing import Mount

from sandbox_lifecycle.adapters.composition.bootstrap import build_service
from sandbox_lifecycle.adapters.console import create_app
from sandbox_lifecycle.adapters.console.app import Console
from sandbox_lifecycle.core.capacity import Capacity
from sandbox_lifecycle.core.service import SandboxService
from sandbox_lifecycle.core.usage import Usage
from tests.support.fakes import FakeProvider
from tests.unit.adapters.console.conftest import LOOPBACK, TestClient, client_of

PAGES = ["/", "/audit", "/live", "/static/console.js", "/static/console.css"]
HOSTILE = '"><img src=x onerror=alert(1)><script>alert(2)</script>'


class Tags(HTMLParser):
    """Every start tag of a page with its attributes."""

    def __init__(self) -> None:
        super().__init__()
        self.tags: list[tuple[str, dict[str, str | None]]] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.append((tag, dict(attrs)))


def tags(html: str) -> list[tuple[str, dict[str, str | None]]]:
    parser = Tags()
    parser.feed(html)
    return parser.tags


def assert_inert(html: str) -> None:
    """Nothing in the page runs but the console's own script: no injected element or handler."""
    found = tags(html)
    assert not [t for t, _ in found if t in ("img", "iframe", "object", "embed")]
    assert [a.get("src") for t, a in found if t == "script"] in ([], ["static/console.js"])
    assert not [(t, k) for t, a in found for k in a if k.startswith("on")]


def test_every_route_is_get_only_and_other_methods_get_405(
    client: TestClient, service: SandboxService
) -> None:
    sid = service.create("data-app", "c").id
    inner = create_app(service).app  # type: ignore[attr-defined]  # the Starlette app inside the guard
    for route in inner.routes:
        assert route.methods <= {"GET", "HEAD"}, route.path
    for path in [*PAGES, f"/sandboxes/{sid}", "/live/events"]:
        for method in ("POST", "PUT", "DELETE", "PATCH"):
            assert client.request(method, path).status_code == 405, (method, path)
        if path != "/live/events":
            assert client.head(path).status_code == 200
    assert service.get(sid).version == 2  # nothing changed it


def test_the_pages_render(client: TestClient, service: SandboxService) -> None:
    for path in PAGES:
        answer = client.get(path)
        assert answer.status_code == 200, path
        assert "content-security-policy" in answer.headers
    assert client.get("/static/other.js").status_code == 404
    assert client.get("/sandboxes/nope").status_code == 404


def test_hostile_log_values_are_escaped_on_every_page(client: TestClient, service: SandboxService) -> None:
    sid = service.create("data-app", HOSTILE, actor=HOSTILE).id
    service.suspend(sid, reason=HOSTILE, actor=HOSTILE)
    fork = service.fork(sid, service.checkpoints(sid)[0].version, conversation_id=HOSTILE + "2")
    for path in ["/", f"/sandboxes/{sid}", f"/sandboxes/{fork.id}", "/live", "/?conversation=" + HOSTILE]:
        html = client.get(path).text
        assert "onerror=alert" not in html.replace("onerror=alert(1)&gt;", "")
        assert_inert(html)
    assert "&lt;script&gt;alert(2)&lt;/script&gt;" in client.get(f"/sandboxes/{sid}").text


def test_the_fleet_counts_against_the_limits(service: SandboxService) -> None:
    for i in range(3):
        service.create("data-app", f"c{i}")
    service.suspend(service.create("ai-writeback", "w").id)
    client = client_of(service, capacity=Capacity(max_live=10, max_live_per_kind={"data-app": 4}))
    html = client.get("/").text
    assert "3 / 10" in html and "3 / 4" in html and "0 (no limit)" in html
    assert "page 1 of 1 (4 matching)" in html


def test_the_fleet_pages_on_the_server(service: SandboxService, client: TestClient) -> None:
    ids = {service.create("data-app", f"c{i}").id for i in range(5)}
    first, second = client.get("/?size=3").text, client.get("/?size=3&page=2").text
    shown = [{i for i in ids if f"sandboxes/{i}" in html} for html in (first, second)]
    assert len(shown[0]) == 3 and len(shown[1]) == 2 and shown[0] | shown[1] == ids
    assert 'rel="next"' in first and 'rel="prev"' not in first
    assert "page=2" in first and "size=3" in first


def test_the_sandbox_page_shows_timeline_checkpoints_forks_and_path(
    client: TestClient, service: SandboxService
) -> None:
    sid = service.create("data-app", "c").id
    service.suspend(sid, reason="user")
    version = service.checkpoints(sid)[0].version
    fork = service.fork(sid, version).id
    html = client.get(f"/sandboxes/{sid}").text
    assert 'class="band"' in html and 'data-state="suspended"' in html
    assert f'data-sandbox="{fork}"' in html and f'data-sandbox="{sid}"' in html
    assert f">v{version}<" in html  # the fork's edge is labelled with the checkpoint
    assert 'class="edge taken" data-edge="idle suspending"' in html
    assert 'class="edge taken" data-edge="running idle"' not in html
    assert "SuspendRequested" in html and "Forked" in html
    # The fork's own page draws the same tree, with the fork marked.
    assert f'href="sandboxes/{fork}" class="fork-node current"' in client.get(f"/sandboxes/{fork}").text


def _tamper(tmp_path: Path, sql: str) -> None:
    db = sqlite3.connect(tmp_path / "sandbox.db")
    with db:
        db.execute(sql)
    db.close()


def test_the_audit_page_turns_red_and_names_the_stream(
    client: TestClient, service: SandboxService, tmp_path: Path
) -> None:
    sid = service.create("data-app", "c").id
    service.touch(sid)
    ok = client.get("/audit").text
    assert 'data-ok="true"' in ok and "verdict ok" in ok
    _tamper(
        tmp_path,
        "UPDATE events SET meta = json_set(meta, '$.reason', 'forged') "
        f"WHERE stream_id = '{sid}' AND version = 1",
    )
    failed = client.get("/audit").text
    assert 'data-ok="false"' in failed and "verdict failed" in failed
    assert f"sandboxes/{sid}" in failed and "<td>1</td>" in failed


def test_the_audit_page_says_when_a_signed_head_cannot_be_read(
    service: SandboxService, tmp_path: Path
) -> None:
    from sandbox_lifecycle.adapters.console import HeadSource

    client = client_of(service, head=HeadSource(str(tmp_path / "missing.json")))
    html = client.get("/audit").text
    assert 'data-ok="false"' in html and "missing.json" in html


def test_mounted_under_a_prefix_links_stay_inside_it(service: SandboxService) -> None:
    sid = service.create("data-app", "c").id
    outer = Starlette(routes=[Mount("/console", app=create_app(service))])
    client = TestClient(outer, client=LOOPBACK)
    html = client.get("/console/").text
    assert '<base href="/console/">' in html and f'href="sandboxes/{sid}"' in html
    assert client.get(f"/console/sandboxes/{sid}").status_code == 200
    assert client.get("/console/static/console.css").status_code == 200


def test_the_event_stream_sends_what_commits_after_the_position(service: SandboxService) -> None:
    sid = service.create("data-app", "c").id
    stop = threading.Event()
    client = client_of(service, stop=stop)
    after = service.store.log_head()[0]  # type: ignore[index]
    service.suspend(sid, reason="user", actor="<op>")
    received: list[dict[str, object]] = []
    with client.stream("GET", f"/live/events?after={after}") as answer:
        assert answer.headers["content-type"].startswith("text/event-stream")
        for line in answer.iter_lines():
            if line.startswith("data: "):
                received.append(json.loads(line[6:]))
                if received[-1]["type"] == "Suspended":
                    stop.set()
                    break
    assert [e["type"] for e in received] == ["SuspendRequested", "Suspended"]
    assert received[0]["actor"] == "<op>" and received[0]["sandbox"] == sid
    assert received[0]["href"] == f"sandboxes/{sid}"
    assert set(received[0]) == {"position", "sandbox", "href", "version", "type", "at", "reason", "actor"}


def test_the_live_page_starts_at_the_latest_events(client: TestClient, service: SandboxService) -> None:
    for i in range(3):
        service.create("data-app", f"c{i}")
    html = client.get("/live").text
    last = service.store.log_head()[0]  # type: ignore[index]
    assert f'data-after="{last}"' in html
    assert html.count("CreationRequested") == 3


def test_checkpoint_count_of_a_vanished_sandbox_is_zero(service: SandboxService) -> None:
    assert Console(service, Capacity(), "d").checkpoint_count("gone") == 0


@pytest.mark.parametrize("raw", ["-5", "x", ""])
def test_a_bad_stream_position_starts_from_the_beginning(service: SandboxService, raw: str) -> None:
    service.create("data-app", "c")
    stop = threading.Event()
    client = client_of(service, stop=stop)
    with client.stream("GET", f"/live/events?after={raw}") as answer:
        for line in answer.iter_lines():
            if line.startswith("data: "):
                assert json.loads(line[6:])["position"] == 1
                stop.set()
                break


def test_a_stream_the_log_cannot_read_is_reported_not_a_crash(
    client: TestClient, service: SandboxService, tmp_path: Path
) -> None:
    sid = service.create("data-app", "c").id
    service.touch(sid)
    _tamper(tmp_path, f"DELETE FROM events WHERE stream_id = '{sid}' AND version = 1")
    answer = client.get(f"/sandboxes/{sid}")
    assert answer.status_code == 500 and "cannot show this sandbox" in answer.text
    fleet = client.get("/")
    assert fleet.status_code == 200 and "<td>?</td>" in fleet.text
    assert 'data-ok="false"' in client.get("/audit").text


class _MeteringProvider(FakeProvider):
    """A fake that meters its runs, as the Docker provider does (CPU, memory, bytes, model calls)."""

    def usage(self, sandbox_id: str, ref: str) -> Usage:
        return Usage(
            cpu_seconds=1.25,
            memory_peak_bytes=67_000_000,
            egress_bytes_in=3_145_852,
            egress_bytes_out=None,  # not measured: shown as "-", never as 0
            model_requests=3,
            model_input_tokens=194,
            model_output_tokens=17,
            model_statuses={"200": 2, "529": 1},
        )


def test_the_sandbox_page_shows_each_runs_usage_and_what_was_not_measured(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("SANDBOX_DATA_DIR", str(tmp_path))
    monkeypatch.delenv("SANDBOX_DATABASE_URL", raising=False)
    monkeypatch.setenv("SANDBOX_PROVIDER", "e2b")
    monkeypatch.delenv("E2B_API_KEY", raising=False)
    service = build_service(provider=_MeteringProvider())
    try:
        sid = service.create("data-app", "c").id
        before = client_of(service).get(f"/sandboxes/{sid}").text
        assert 'class="nousage"' in before
        service.suspend(sid, reason="user")
        html = client_of(service).get(f"/sandboxes/{sid}").text
    finally:
        service.store.close()  # type: ignore[attr-defined]
    usage = html[html.index('class="usage"') :]
    usage = usage[: usage.index("</table>")]
    assert "1.25" in usage and "67000000 B" in usage and "3145852 B" in usage
    assert "194" in usage and "17" in usage and "200:2 529:1" in usage
    assert "<td>-</td>" in usage  # egress out: not measured
