"""The provider against the real E2B cloud. Runs only when E2B_API_KEY is set; needs the kind's template
built and tagged (``python -m sandboxes.build_e2b_templates``)."""

from __future__ import annotations

import os
import uuid

import pytest

from sandbox_lifecycle.adapters.providers.e2b.provider import E2BProvider, E2BSettings
from sandbox_lifecycle.core.errors import ExecTimeout
from sandbox_lifecycle.core.kinds import DATA_APP

pytestmark = [
    pytest.mark.e2b_live,
    pytest.mark.timeout(300),
    pytest.mark.skipif(not os.environ.get("E2B_API_KEY"), reason="E2B_API_KEY is not set"),
]


def test_create_exec_pause_resume_kill() -> None:
    provider = E2BProvider(E2BSettings.from_env(os.environ))
    sandbox_id = f"live-{uuid.uuid4().hex[:12]}"
    ref = provider.create(sandbox_id, DATA_APP)
    try:
        assert provider.create(sandbox_id, DATA_APP) == ref
        assert provider.exec(ref, ["pwd"], timeout=30).stdout.strip() == "/home/sandbox/app"
        provider.write_file(ref, "/home/sandbox/app/live.txt", b"persisted")
        with pytest.raises(ExecTimeout):
            provider.exec(ref, ["sleep", "60"], timeout=2)
        assert "sleep 60" not in provider.exec(ref, ["ps", "-eo", "args"], timeout=30).stdout

        snapshot = provider.suspend(sandbox_id, ref, DATA_APP, "unused")
        assert provider.snapshot_ok(snapshot)
        assert (found := provider.instance(sandbox_id)) is not None and found.status == "paused"

        assert provider.resume(sandbox_id, DATA_APP, snapshot) == ref
        assert provider.read_file(ref, "/home/sandbox/app/live.txt") == b"persisted"
    finally:
        provider.destroy(sandbox_id, ref)
    assert provider.instance(sandbox_id) is None
