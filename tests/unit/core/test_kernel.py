"""The kernel's incremental load: what the data plane reads is what a whole replay of the log says."""

from __future__ import annotations

from datetime import timedelta

from sandbox_lifecycle.core import sandbox as sb
from sandbox_lifecycle.core.service import SandboxService
from tests.support.fakes import FakeProvider, InMemoryEventStore


def _touch(service: SandboxService, sandbox_id: str) -> None:
    service.kernel.run(sandbox_id, lambda s: sb.Touch(window=timedelta(0), actor="other"))


def test_load_latest_reads_what_others_appended_since() -> None:
    store = InMemoryEventStore()
    ours, theirs = SandboxService(store, FakeProvider()), SandboxService(store, FakeProvider())
    sid = ours.create("data-app").id
    assert ours.kernel.load_latest(sid) == ours.load(sid)
    for _ in range(3):
        _touch(theirs, sid)  # another replica writes; ours remembers an older version
    latest = ours.kernel.load_latest(sid)
    assert latest == theirs.load(sid) and latest.version == ours.load(sid).version


def test_load_latest_reads_only_the_new_events() -> None:
    store = InMemoryEventStore()
    service = SandboxService(store, FakeProvider())
    sid = service.create("data-app").id
    service.kernel.load_latest(sid)
    _touch(service, sid)
    reads: list[int] = []
    read_stream = store.read_stream

    def counted(stream_id: str, after_version: int = 0) -> list:  # type: ignore[type-arg]
        records = read_stream(stream_id, after_version)
        reads.append(len(records))
        return records

    store.read_stream = counted  # type: ignore[method-assign]
    assert service.kernel.load_latest(sid) == service.load(sid)
    assert reads[0] == 1  # the one touch, not the whole stream
