"""E2B sandboxes and the gateway, through the real e2b SDK against the loopback fake of E2B.

The fake runs a sandbox's commands as local processes, so a command in the "sandbox" reaches the
gateway on loopback with nothing but its own environment, as the agent CLI would.
"""

from __future__ import annotations

import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from sandbox_lifecycle.adapters.egress.tokens import token_owner
from sandbox_lifecycle.adapters.gateway.state import GatewayState
from sandbox_lifecycle.adapters.providers.e2b.provider import E2BProvider, E2BSettings
from sandbox_lifecycle.core.ports import SnapshotInfo
from tests.support.fake_e2b import FakeE2B
from tests.support.fake_upstream import FakeUpstream, RunningGateway, fake_upstream, running_gateway
from tests.support.fixtures.e2b import AGENT_SECRET, fake_env

# Calls the model the way an SDK in the sandbox would: the base URL and key from the environment only.
MODEL_CALL = """
import os, sys, urllib.error, urllib.request
req = urllib.request.Request(os.environ["ANTHROPIC_BASE_URL"] + "/v1/messages", data=b"{}",
                             headers={"x-api-key": os.environ["ANTHROPIC_API_KEY"]})
try:
    print(urllib.request.urlopen(req, timeout=10).read().decode())
except urllib.error.HTTPError as e:
    print(e.code, e.read().decode())
"""


@dataclass
class World:
    fake: FakeE2B
    upstream: FakeUpstream
    gateway: RunningGateway
    state: GatewayState
    provider: E2BProvider


@pytest.fixture
def world(tmp_path: Path) -> Iterator[World]:
    fake = FakeE2B("e2b_test_key_0123456789", tmp_path / "e2b")
    fake.start()
    state = GatewayState(tmp_path / "egress")
    try:
        with fake_upstream() as up, running_gateway(state.state_dir) as gw:
            env = {
                **fake_env(fake),
                "SANDBOX_GATEWAY_PUBLIC_URL": gw.url,
                "SANDBOX_EGRESS_STATE_DIR": str(state.state_dir),
            }
            settings = E2BSettings.from_env(env)
            # What bootstrap does before the provider hands out tokens.
            state.write_upstream(up.url, AGENT_SECRET)
            yield World(fake, up, gw, state, E2BProvider(settings))
    finally:
        fake.stop()


def sandbox_env(world: World, ref: str) -> dict[str, str]:
    out = world.provider.exec(ref, ["env"], timeout=30).stdout
    return dict(line.split("=", 1) for line in out.splitlines() if "=" in line)


def model_call(world: World, ref: str) -> str:
    return world.provider.exec(ref, [sys.executable, "-c", MODEL_CALL], timeout=30).stdout


def test_settings_keep_the_key_out_of_sandbox_envs_and_allow_the_gateway(world: World) -> None:
    settings = E2BSettings.from_env({**fake_env(world.fake), "SANDBOX_GATEWAY_PUBLIC_URL": world.gateway.url})
    assert settings.sandbox_envs == {}
    assert all("127.0.0.1" in hosts for hosts in settings.egress_allow.values())
    # Without the gateway the key is passed as before (the documented trade-off).
    assert E2BSettings.from_env(fake_env(world.fake)).sandbox_envs == {"ANTHROPIC_API_KEY": AGENT_SECRET}


def test_an_e2b_sandbox_holds_a_token_not_the_key_and_its_calls_get_the_key(world: World) -> None:
    ref = world.provider.create("sbx1", "data-app")
    fake_sandbox = world.fake.sandbox(ref)
    assert AGENT_SECRET not in fake_sandbox.env_vars.values()
    assert fake_sandbox.env_vars["ANTHROPIC_BASE_URL"] == world.gateway.url
    [create] = world.fake.requests("POST", "/v2/sandboxes")
    assert "127.0.0.1" in create.body["network"]["allowOut"]

    env = sandbox_env(world, ref)
    token = env["ANTHROPIC_API_KEY"]
    assert token.startswith("sbx-sbx1-") and AGENT_SECRET not in "\n".join(env.values())
    assert env["ANTHROPIC_BASE_URL"] == world.gateway.url
    assert token_owner(world.state.state_dir, token) == "sbx1"

    assert "message_stop" in model_call(world, ref)
    assert world.upstream.seen[-1].headers["x-api-key"] == AGENT_SECRET
    assert world.state.counters("sbx1")["requests"] == 1
    assert world.provider.model_activity(ref) is not None


def test_suspend_revokes_resume_issues_a_new_token_destroy_revokes(world: World) -> None:
    ref = world.provider.create("sbx1", "data-app")
    first = sandbox_env(world, ref)["ANTHROPIC_API_KEY"]
    snapshot = world.provider.suspend("sbx1", ref, "data-app", "unused")
    assert token_owner(world.state.state_dir, first) is None

    ref = world.provider.resume("sbx1", "data-app", SnapshotInfo(key=snapshot.key, sha256=None, bytes=None))
    second = sandbox_env(world, ref)["ANTHROPIC_API_KEY"]
    assert second != first and token_owner(world.state.state_dir, second) == "sbx1"
    assert "message_stop" in model_call(world, ref)
    # The old token, replayed from inside the sandbox, is refused.
    with_caller_env = world.provider.exec(
        ref, [sys.executable, "-c", MODEL_CALL], timeout=30, env={"X": "1"}
    ).stdout
    assert "message_stop" in with_caller_env  # the current token rides with every command, env or not
    refused = world.provider.exec(
        ref,
        ["sh", "-c", f'ANTHROPIC_API_KEY="{first}" exec "$0" -c "$1"', sys.executable, MODEL_CALL],
        timeout=30,
    ).stdout
    assert refused.startswith("401") and "revoked" in refused

    world.provider.destroy("sbx1", ref)
    assert token_owner(world.state.state_dir, second) is None


def test_a_new_provider_process_adds_a_token_of_its_own_for_a_running_sandbox(world: World) -> None:
    ref = world.provider.create("sbx1", "data-app")
    first = sandbox_env(world, ref)["ANTHROPIC_API_KEY"]
    restarted = E2BProvider(world.provider._settings)
    again = restarted.exec(ref, ["env"], timeout=30).stdout
    second = next(
        line.split("=", 1)[1] for line in again.splitlines() if line.startswith("ANTHROPIC_API_KEY=")
    )
    assert second != first
    # Both stay valid while the sandbox is live (a process handed the first keeps working) ...
    assert token_owner(world.state.state_dir, second) == "sbx1"
    assert token_owner(world.state.state_dir, first) == "sbx1"
    # ... and neither survives it.
    restarted.destroy("sbx1", ref)
    assert token_owner(world.state.state_dir, first) is None
    assert token_owner(world.state.state_dir, second) is None
