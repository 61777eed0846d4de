"""The main job: two turns of one conversation on real sandboxes, then the audit trail."""

from __future__ import annotations

import hashlib
import os
import time
import uuid

from sandbox_lifecycle.adapters.entrypoints.cli.render import print_history
from sandbox_lifecycle.core.kinds import HOME, kind_spec
from sandbox_lifecycle.core.service import SandboxService


def run_demo(service: SandboxService, *, kind: str = "data-app") -> int:
    spec = kind_spec(kind)
    conversation = f"demo-{uuid.uuid4().hex[:8]}"
    payload = os.urandom(256 * 1024)
    digest = hashlib.sha256(payload).hexdigest()
    print(f"conversation {conversation}: two turns on a {kind} sandbox ({service.provider.name} provider)\n")

    started = time.monotonic()
    with service.turn(conversation, kind) as sbx:
        print(f"turn 1: sandbox {sbx.id} is running")
        sbx.write_file("NOTES.md", f"# {conversation}\nwritten in turn 1\n")
        sbx.write_file("data.bin", payload)
        sbx.write_file(f"{HOME}/.claude/session.json", '{"turn": 1}\n')
        # Dependencies are not part of the workspace snapshot; they are rebuilt, not stored.
        sbx.write_file("node_modules/dep/index.js", "module.exports = 1\n")
        result = sbx.exec(["sh", "-c", "ls -A && sha256sum data.bin && id -un"])
        print(result.stdout.rstrip())
    row = service.get(sbx.id)
    print(
        f"turn 1 ended in {time.monotonic() - started:.2f}s: state={row.state}, "
        f"snapshot={row.snapshot_key} ({row.snapshot_bytes or 0} bytes)\n"
    )

    started = time.monotonic()
    with service.turn(conversation, kind) as again:
        print(f"turn 2: sandbox {again.id} resumed in {spec.workdir}")
        notes = again.read_file("NOTES.md").decode()
        same = hashlib.sha256(again.read_file("data.bin")).hexdigest() == digest
        state = again.read_file(f"{HOME}/.claude/session.json").decode().strip()
        deps = again.exec(["sh", "-c", "test -e node_modules && echo present || echo absent"]).stdout.strip()
        print(f"NOTES.md: {notes.splitlines()[-1]!r}; data.bin intact: {same}; .claude state: {state}")
        print(f"node_modules after resume: {deps} (excluded from the snapshot by the {kind} workspace spec)")
    row = service.get(again.id)
    print(f"turn 2 ended in {time.monotonic() - started:.2f}s: state={row.state}\n")

    print(f"history of {again.id}:")
    print_history(service.history(again.id))
    print(f"\ninspect: sandboxctl show {again.id}; clean up: sandboxctl destroy {again.id}")
    ok = same and notes.endswith("written in turn 1\n") and deps == "absent" and row.state == "suspended"
    if not ok:
        print("demo FAILED: the workspace did not survive the suspend/resume cycle as expected")
    return 0 if ok else 1
