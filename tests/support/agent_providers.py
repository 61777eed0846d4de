"""The FakeProvider made ready for the real agent CLI on the host."""

from __future__ import annotations

import os
import shutil
from collections.abc import Mapping, Sequence
from typing import Any

from sandbox_lifecycle.core.ports import ExecResult
from tests.support.fakes import FakeInstance, FakeProvider


class AgentReadyProvider(FakeProvider):
    """Two things a real sandbox has and the plain fake has not:

    - one home path per sandbox across resumes, as a real sandbox's /home/sandbox is. The CLI files a
      conversation under its working directory's path (``~/.claude/projects/<path>``) and ``--continue``
      looks there; the plain fake names a resumed instance's directory anew each time;
    - an environment the provider gives every command (``sandbox_env``), as the Docker provider gives
      the container the gateway's ``ANTHROPIC_BASE_URL`` and a token, and ``path`` put first on $PATH
      (where the host's ``claude`` is).
    """

    def __init__(self, *, sandbox_env: Mapping[str, str] | None = None, path: str | None = None) -> None:
        super().__init__()
        self.sandbox_env = dict(sandbox_env or {})
        self.path = path

    def _new(self, sandbox_id: str, kind: str) -> FakeInstance:
        inst = super()._new(sandbox_id, kind)
        top = inst.home.parents[1]
        stable = top.with_name(f"home-of-{sandbox_id}") / inst.home.relative_to(top)
        shutil.rmtree(stable.parents[1], ignore_errors=True)
        stable.parent.mkdir(parents=True)
        inst.home.rename(stable)
        inst.home = stable
        return inst

    def _drop(self, sandbox_id: str) -> None:
        inst = self.instances.get(sandbox_id)
        super()._drop(sandbox_id)
        if inst is not None:
            shutil.rmtree(inst.home.parents[1], ignore_errors=True)

    def exec(self, ref: str, command: Sequence[str], **kw: Any) -> ExecResult:
        env = {**self.sandbox_env, **(kw.pop("env", None) or {})}
        if self.path:
            env.setdefault("PATH", f"{self.path}:{os.environ.get('PATH', '/usr/bin:/bin')}")
        return super().exec(ref, command, env=env, **kw)
