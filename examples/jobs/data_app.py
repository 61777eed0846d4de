"""The data-app job: the agent writes a small web app and builds it; the job serves the build detached,
fetches the page through ``sbx.url(port)`` and collects the built files with ``download_dir``.

The build needs nothing from the network (a Node script with no dependencies), so it works after a resume
with the allow-list empty; the built ``dist/`` is excluded from the snapshot and rebuilt each turn.
"""

from __future__ import annotations

import re
import time
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sandbox_lifecycle import HOME, AgentEvent, AgentResult, run_agent

APP = f"{HOME}/app"
PORT = 8080
_TITLE = re.compile(r"<title>(.*?)</title>", re.IGNORECASE | re.DOTALL)


@dataclass(frozen=True)
class DataAppTurn:
    title: str
    files: int
    bytes: int
    url: str
    agent: AgentResult


def fetch(url: str, *, attempts: int = 40, delay: float = 0.25) -> str:
    """GET ``url``, waiting (bounded) for the server that was just started to listen."""
    last: Exception | None = None
    for _ in range(attempts):
        try:
            with urllib.request.urlopen(url, timeout=5) as response:
                return str(response.read().decode("utf-8", "replace"))
        except OSError as exc:
            last = exc
            time.sleep(delay)
    raise RuntimeError(f"{url} did not answer after {attempts} attempts: {last}")


def data_app_turn(
    sbx: Any,
    prompt: str,
    *,
    collect_to: Path,
    continue_: bool = False,
    on_event: Callable[[AgentEvent], None] | None = None,
    port: int = PORT,
    **agent: Any,
) -> DataAppTurn:
    result = run_agent(sbx, prompt, continue_=continue_, on_event=on_event, cwd=APP, **agent)
    # Served detached, as a preview would be; python3 is in every image, so nothing is installed.
    server = sbx.start(["python3", "-m", "http.server", str(port), "--directory", "dist"], cwd=APP)
    try:
        url = sbx.url(port)
        page = fetch(url.rstrip("/") + "/index.html")
    finally:
        server.kill()
    match = _TITLE.search(page)
    report = sbx.download_dir(f"{APP}/dist", collect_to)
    return DataAppTurn(match.group(1).strip() if match else "", report.files, report.bytes, url, result)
