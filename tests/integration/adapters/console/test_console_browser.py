"""The console in a real browser (headless Chromium from Debian, Playwright) over a real SQLite log of
real Docker sandboxes: the pages render, a suspend reaches the live view within 2 s, a fork appears in
the tree, a tampered log turns the audit page red. The tests run in this order on one deployment."""

from __future__ import annotations

import json
import sqlite3
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import docker
import pytest

from sandbox_lifecycle.adapters.composition.settings import Settings
from tests.integration.adapters.console.conftest import Deployment, deployment_env, stop
from tests.support.fixtures.providers import remove_docker_sandboxes

pytestmark = [pytest.mark.docker, pytest.mark.slow]

LIVE_WITHIN_S = 2.0


@pytest.fixture(scope="module")
def fleet(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Deployment, str]]:
    """Three Docker sandboxes (one suspended) and a console served over their log."""
    data_dir = tmp_path_factory.mktemp("console")
    d = Deployment(deployment_env(data_dir), data_dir)
    client = docker.from_env()
    proc = None
    try:
        for i in range(3):
            d.created.append(
                json.loads(d.run("create", "--kind", "data-app", "--conversation", f"c{i}", "--json"))["id"]
            )
        d.run("suspend", d.created[2])
        proc, url = d.serve()
        yield d, url
    finally:
        if proc is not None:
            stop(proc)
        remove_docker_sandboxes(
            client, sandbox_ids=d.created, deployments=[Settings.from_env(d.env).deployment]
        )


@pytest.fixture
def page(browser: Any) -> Iterator[Any]:
    context = browser.new_context()
    p = context.new_page()
    errors: list[str] = []
    p.on("pageerror", lambda exc: errors.append(str(exc)))
    p.on("response", lambda r: errors.append(f"{r.status} {r.url}") if r.status >= 400 else None)
    p.on("console", lambda m: errors.append(f"{m.text} {m.location['url']}") if m.type == "error" else None)
    yield p
    context.close()
    assert errors == [], f"the page's script failed: {errors}"


def test_the_pages_render(fleet: tuple[Deployment, str], page: Any) -> None:
    d, url = fleet
    page.goto(url)
    rows = page.locator("table.fleet tbody tr")
    assert rows.count() == 3
    assert page.locator("table.summary").inner_text().count("2 / 5") == 1  # live against SANDBOX_MAX_LIVE
    page.select_option("select[name=state]", "suspended")  # the filter submits itself
    page.wait_for_url("**state=suspended**")
    assert page.locator("table.fleet tbody tr").count() == 1
    page.click(f"text={d.created[2]}")
    assert page.locator("svg.band g.span").count() >= 3
    assert page.locator('svg.diagram g.edge.taken[data-edge="idle suspending"]').count() == 1
    assert page.locator("table.checkpoints tbody tr").count() == 1
    page.goto(url + "audit")
    assert page.get_attribute("#verdict", "data-ok") == "true"
    page.goto(url + "live")
    page.wait_for_selector("#live-status.on", timeout=5000)
    assert page.locator("#live tbody tr").count() >= 3


def test_a_suspend_shows_up_in_the_live_view_within_2_s(fleet: tuple[Deployment, str], page: Any) -> None:
    d, url = fleet
    page.goto(url + "live")
    page.wait_for_selector("#live-status.on", timeout=5000)
    before = page.locator("#live tbody tr").count()
    d.run("suspend", d.created[0])  # returns once Suspended is committed
    committed = time.monotonic()
    page.wait_for_selector(
        f'#live tbody tr:has-text("{d.created[0]}"):has-text("Suspended")', timeout=LIVE_WITHIN_S * 1000
    )
    seen = time.monotonic() - committed
    assert seen <= LIVE_WITHIN_S
    assert page.locator("#live tbody tr").count() >= before + 2  # SuspendRequested and Suspended, no reload
    assert page.evaluate("performance.getEntriesByType('navigation').length") == 1


def test_a_fork_appears_in_the_tree(fleet: tuple[Deployment, str], page: Any) -> None:
    d, url = fleet
    fork = json.loads(d.run("fork", d.created[2], "--json"))["id"]
    d.created.append(fork)
    page.goto(url + f"sandboxes/{d.created[2]}")
    node = page.locator(f'svg.tree a.fork-node[data-sandbox="{fork}"]')
    assert node.count() == 1
    assert page.locator(f'svg.tree a.fork-node.current[data-sandbox="{d.created[2]}"]').count() == 1
    node.click()
    page.wait_for_url(f"**/sandboxes/{fork}")
    assert page.locator(f'svg.tree a.fork-node.current[data-sandbox="{fork}"]').count() == 1


def test_a_tampered_log_turns_the_audit_page_red(fleet: tuple[Deployment, str], page: Any) -> None:
    d, url = fleet
    victim = d.created[1]
    db = sqlite3.connect(Path(d.data_dir) / "sandbox.db")
    with db:
        db.execute(
            "UPDATE events SET meta = json_set(meta, '$.actor', 'someone-else') "
            "WHERE stream_id = ? AND version = 1",
            (victim,),
        )
    db.close()
    page.goto(url + "audit")
    verdict = page.locator("#verdict")
    assert verdict.get_attribute("data-ok") == "false"
    assert "FAILED" in verdict.inner_text()
    assert verdict.evaluate("e => getComputedStyle(e).backgroundColor") == "rgb(179, 38, 30)"
    assert page.locator(f'table.broken a[href="sandboxes/{victim}"]').count() == 1


def test_a_token_signs_the_browser_in_once_and_is_never_shown(
    fleet: tuple[Deployment, str], page: Any
) -> None:
    d, _url = fleet
    token = "console-token-" + "0123456789abcdef"
    proc, url = d.serve(env=d.env | {"SANDBOX_CONSOLE_TOKEN": token})
    try:
        assert page.request.get(url).status == 401
        page.goto(url + "live?token=" + token)
        assert page.url == url + "live"  # the token left the address (and the history)
        page.wait_for_selector("#live-status.on", timeout=5000)
        page.goto(url + "audit")
        assert page.locator("#verdict").count() == 1
        cookies = page.context.cookies()
        assert [c["httpOnly"] for c in cookies] == [True] and token not in cookies[0]["value"]
        assert token not in page.content()
    finally:
        err = stop(proc)
    assert token not in err
