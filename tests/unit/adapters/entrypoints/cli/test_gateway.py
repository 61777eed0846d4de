"""`sandboxctl gateway` as a subprocess, and the gateway's settings."""

from __future__ import annotations

import http.client
import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from sandbox_lifecycle.adapters.composition.environ import DEFAULT_ANTHROPIC_BASE_URL
from sandbox_lifecycle.adapters.composition.settings import Settings
from sandbox_lifecycle.adapters.gateway.state import GatewayState
from sandbox_lifecycle.core.errors import ConfigError
from tests.support.fake_upstream import REAL_KEY, WAIT_S, fake_upstream

SANDBOXCTL = str(Path(sys.executable).with_name("sandboxctl"))


def test_sandboxctl_gateway_serves_with_the_backends_key(tmp_path: Path) -> None:
    state_dir = tmp_path / "egress"
    with fake_upstream() as upstream:
        dropped = ("SANDBOX_", "E2B_", "ANTHROPIC_")
        env = {k: v for k, v in os.environ.items() if not k.startswith(dropped)}
        env.update(
            SANDBOX_DATA_DIR=str(tmp_path / "data"),
            ANTHROPIC_API_KEY=REAL_KEY,
            ANTHROPIC_BASE_URL=upstream.url,
            SANDBOX_EGRESS_STATE_DIR=str(state_dir),
        )
        proc = subprocess.Popen(
            [SANDBOXCTL, "-v", "gateway", "--port", "0"],
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        try:
            assert proc.stdout is not None
            line = proc.stdout.readline()
            assert line.startswith("gateway listening on http://127.0.0.1:"), line
            port = int(line.rsplit(":", 1)[1])
            token = GatewayState(state_dir).issue("sbx1")
            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=WAIT_S)
            conn.request("POST", "/v1/messages", body=b"{}", headers={"x-api-key": token})
            resp = conn.getresponse()
            assert resp.status == 200 and b"message_stop" in resp.read()
            assert upstream.seen[0].headers["x-api-key"] == REAL_KEY
        finally:
            proc.send_signal(signal.SIGTERM)
            out, err = proc.communicate(timeout=WAIT_S)
        assert proc.returncode == 0, err
        assert REAL_KEY not in out + err and token not in out + err
        assert json.loads((state_dir / "upstream.json").read_text())["url"] == upstream.url


def test_sandboxctl_gateway_without_a_key_says_so(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("SANDBOX_", "ANTHROPIC_"))}
    env.update(SANDBOX_DATA_DIR=str(tmp_path), SANDBOX_EGRESS_STATE_DIR=str(tmp_path / "egress"))
    done = subprocess.run([SANDBOXCTL, "gateway"], env=env, capture_output=True, text=True, timeout=60)
    assert done.returncode != 0 and "ANTHROPIC_API_KEY" in done.stderr


def settings(**env: str) -> Settings:
    return Settings.from_env({"SANDBOX_DATA_DIR": "/tmp/x", **env})


def test_gateway_settings_defaults_and_parsing() -> None:
    s = settings(SANDBOX_DEPLOYMENT="prod")
    assert s.anthropic_base_url == DEFAULT_ANTHROPIC_BASE_URL
    assert s.egress_state_dir == Path("/var/lib/sandbox-lifecycle/egress/prod")
    assert (
        s.provider_settings["e2b"].gateway_url is None
        and s.provider_settings["e2b"].gateway_state_dir is None
    )
    s = settings(
        ANTHROPIC_API_KEY="sk-ant-x",
        SANDBOX_GATEWAY_PUBLIC_URL="https://gw.example.com/",
        SANDBOX_EGRESS_STATE_DIR="/srv/egress",
        ANTHROPIC_BASE_URL="https://llm.corp.example/anthropic",
    )
    assert s.provider_settings["e2b"].gateway_url == "https://gw.example.com"
    assert s.provider_settings["e2b"].gateway_state_dir == Path("/srv/egress") == s.egress_state_dir
    assert s.provider_settings["e2b"].sandbox_envs == {}
    assert "gw.example.com" in s.provider_settings["e2b"].egress_allow["data-app"]
    assert s.anthropic_base_url == "https://llm.corp.example/anthropic"
    assert "sk-ant-x" in s.secrets() and "sk-ant-x" not in repr(s)


@pytest.mark.parametrize(
    ("env", "named"),
    [
        ({"SANDBOX_GATEWAY_PUBLIC_URL": "http://gw.example.com", "ANTHROPIC_API_KEY": "k"}, "clear text"),
        ({"SANDBOX_GATEWAY_PUBLIC_URL": "ftp://gw", "ANTHROPIC_API_KEY": "k"}, "SANDBOX_GATEWAY_PUBLIC_URL"),
        ({"SANDBOX_GATEWAY_PUBLIC_URL": "https://gw.example.com"}, "ANTHROPIC_API_KEY is not"),
        ({"ANTHROPIC_BASE_URL": "http://llm.corp.example"}, "ANTHROPIC_BASE_URL"),
        ({"ANTHROPIC_BASE_URL": "https://host:notaport"}, "ANTHROPIC_BASE_URL"),
    ],
)
def test_bad_gateway_settings_are_named(env: dict[str, str], named: str) -> None:
    with pytest.raises(ConfigError, match=named):
        settings(**env)


def test_loopback_plain_http_is_allowed_for_tests() -> None:
    s = settings(
        ANTHROPIC_API_KEY="k",
        SANDBOX_GATEWAY_PUBLIC_URL="http://127.0.0.1:8081",
        ANTHROPIC_BASE_URL="http://localhost:9",
    )
    assert (
        s.provider_settings["e2b"].gateway_url == "http://127.0.0.1:8081"
        and s.anthropic_base_url == "http://localhost:9"
    )


def test_doctor_says_whether_e2b_sandboxes_hold_the_key() -> None:
    assert settings().describe()["e2b_model_gateway"].startswith("off")
    on = settings(ANTHROPIC_API_KEY="sk-ant-x", SANDBOX_GATEWAY_PUBLIC_URL="https://gw.example.com")
    assert on.describe()["e2b_model_gateway"] == "https://gw.example.com"
    assert "sk-ant-x" not in str(on.describe())
