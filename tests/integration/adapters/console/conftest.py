"""A console served by `sandboxctl console` over a real SQLite log of real Docker sandboxes, and a
headless Chromium (Debian's, driven by Playwright) to read it."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import DOCKER_IMAGES
from tests.support import session

SANDBOXCTL = str(Path(sys.executable).with_name("sandboxctl"))
CHROMIUM = "/usr/bin/chromium"
# What keeps Debian's Chromium from reaching anywhere on its own (no component updates, no
# background requests); --no-sandbox because the tests run as root.
CHROMIUM_ARGS = ["--no-sandbox", "--disable-background-networking", "--disable-component-update"]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class Deployment:
    """The CLI's environment (Docker provider, a data dir of this test's own) and what it created."""

    env: dict[str, str]
    data_dir: Path
    created: list[str] = field(default_factory=list)

    def run(self, *argv: str, timeout: float = 180) -> str:
        done = subprocess.run(
            [SANDBOXCTL, *argv], env=self.env, capture_output=True, text=True, timeout=timeout, check=False
        )
        assert done.returncode == 0, (
            f"sandboxctl {' '.join(argv)} -> {done.returncode}: {done.stderr[-2000:]}"
        )
        return done.stdout

    def serve(self, *argv: str, env: dict[str, str] | None = None) -> tuple[subprocess.Popen[str], str]:
        """`sandboxctl console` on a free loopback port, once it answers; its URL."""
        port = free_port()
        proc = subprocess.Popen(
            [SANDBOXCTL, "console", "--port", str(port), *argv],
            env=env or self.env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                raise AssertionError(f"the console exited: {proc.stderr.read() if proc.stderr else ''}")
            try:
                socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
                return proc, f"http://127.0.0.1:{port}/"
            except OSError:
                time.sleep(0.1)
        proc.kill()
        raise AssertionError("the console did not start listening within 30 s")


def stop(proc: subprocess.Popen[str]) -> str:
    """Stop a served console (SIGTERM, as an operator would) and return what it wrote on stderr."""
    proc.terminate()
    try:
        _out, err = proc.communicate(timeout=15)
    except subprocess.TimeoutExpired:
        proc.kill()
        _out, err = proc.communicate()
    return err


def deployment_env(data_dir: Path) -> dict[str, str]:
    dropped = ("SANDBOX_", "S3_", "E2B_", "NODE_ENV")
    env = {k: v for k, v in os.environ.items() if not k.startswith(dropped)}
    env.update(
        SANDBOX_PROVIDER="docker",
        SANDBOX_DATA_DIR=str(data_dir),
        SANDBOX_DEPLOYMENT=session.new_deployment("console"),
        SANDBOX_DOCKER_IMAGE=DOCKER_IMAGES["data-app"],
        SANDBOX_AI_WRITEBACK_DOCKER_IMAGE=DOCKER_IMAGES["ai-writeback"],
        SANDBOX_MAX_LIVE="5",
    )
    return env


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    if not Path(CHROMIUM).exists():
        pytest.skip("Debian's chromium is not installed (scripts/install-chromium.sh installs it)")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        chromium = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS, headless=True)
        yield chromium
        chromium.close()
