"""`sandboxctl egress ID --allow HOST ... | --reset`, against a real SQLite log and the fake provider."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

import sandbox_lifecycle.adapters.entrypoints.cli.commands as cli
from tests.unit.adapters.entrypoints.cli.test_commands import RecordingProvider, env, fake, run

__all__ = ["env", "fake"]  # the fixtures this module borrows


def test_egress_allows_hosts_then_resets_and_the_log_says_who_and_why(
    fake: RecordingProvider, env: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, _ = run(capsys, "create", "--kind", "data-app", "--json")
    assert code == 0
    sid = json.loads(out)["id"]
    code, _, err = run(
        capsys, "egress", sid, "--allow", "pkgs.test", "files.pkgs.test", "--reason", "pip install"
    )
    assert code == 0, err
    assert fake.instances[sid].egress_allow == ("pkgs.test", "files.pkgs.test")
    code, _, err = run(capsys, "egress", sid, "--allow", "example.com,example.org")
    assert code == 0, err
    assert fake.instances[sid].egress_allow == ("example.com", "example.org")
    code, _, err = run(capsys, "egress", sid, "--allow")  # nothing: the sandbox may reach nothing
    assert code == 0, err
    assert fake.instances[sid].egress_allow == ()
    assert run(capsys, "egress", sid, "--reset")[0] == 0
    assert fake.instances[sid].egress_allow is None
    code, out, _ = run(capsys, "history", sid, "--json")
    changes = [e for e in json.loads(out) if e["type"] == "EgressChanged"]
    assert [e["reason"] for e in changes] == ["pip install", "user", "user", "user"]


def test_egress_refuses_a_raw_ip_and_needs_allow_or_reset(
    fake: RecordingProvider, env: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, _ = run(capsys, "create", "--kind", "data-app", "--json")
    sid = json.loads(out)["id"]
    code, _, err = run(capsys, "egress", sid, "--allow", "169.254.169.254")
    assert code != 0 and "IP address" in err and "Traceback" not in err
    assert run(capsys, "egress", sid)[0] == cli.EXIT_USAGE
    assert run(capsys, "egress", sid, "--allow", "a.test", "--reset")[0] == cli.EXIT_USAGE
    assert ("set_egress", sid) not in fake.calls
