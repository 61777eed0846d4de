"""The file and directory verbs through the service, the turn handle and the async handle.

The SQL event store on SQLite and the real E2B provider (the e2b SDK) against the loopback server: each
verb records activity, resumes a suspended sandbox, and reaches the provider.
"""

from __future__ import annotations

import asyncio
from datetime import timedelta
from pathlib import Path

from sandbox_lifecycle import AsyncSandboxService
from sandbox_lifecycle.core.projection import Policy
from sandbox_lifecycle.core.service import SandboxService
from sandbox_lifecycle.events.store import open_store
from tests.support.fake_e2b import FakeE2B
from tests.support.fixtures.providers import e2b_provider, new_deployment

POLICY = Policy(idle_timeout=timedelta(minutes=10))


def _service(url: str, fake: FakeE2B) -> SandboxService:
    return SandboxService(open_store(url), e2b_provider(fake, new_deployment()), policy=POLICY)


def test_turn_handle_file_verbs(clean_sqlite_url: str, fake_e2b: FakeE2B, tmp_path: Path) -> None:
    service = _service(clean_sqlite_url, fake_e2b)
    local = tmp_path / "up"
    (local / "pkg").mkdir(parents=True)
    (local / "pkg" / "m.py").write_bytes(b"m = 1\n")

    with service.turn("c-files", "data-app") as sbx:
        sbx.write_files({"a.txt": "text", "b/c.bin": b"\0\1"})
        assert sbx.exists("b/c.bin") and not sbx.exists("nope")
        assert [(e.name, e.type) for e in sbx.list()] == [("a.txt", "file"), ("b", "dir")]
        report = sbx.upload_dir(local, "proj")
        assert (report.files, report.bytes) == (1, 6)
        sbx.remove("b")
        assert not sbx.exists("b")
        sandbox_id = sbx.id

    # Suspended now; a directory download resumes it, like every data-plane call.
    assert service.get(sandbox_id).state == "suspended"
    down = service.download_dir(sandbox_id, "proj", str(tmp_path / "down"))
    assert (down.files, (tmp_path / "down" / "pkg" / "m.py").read_bytes()) == (1, b"m = 1\n")
    assert [(e.name, e.type) for e in service.list_dir(sandbox_id, "proj")] == [("pkg", "dir")]
    assert service.get(sandbox_id).state in ("idle", "running")


def test_async_handle_file_verbs(clean_sqlite_url: str, fake_e2b: FakeE2B, tmp_path: Path) -> None:
    local = tmp_path / "up"
    local.mkdir()
    (local / "x.txt").write_bytes(b"x")

    async def main() -> None:
        async with AsyncSandboxService(_service(clean_sqlite_url, fake_e2b)) as service:
            async with service.turn("c-async-files", "data-app") as sbx:
                await sbx.write_files({"one.txt": b"1", "two.txt": "2"})
                assert await sbx.exists("two.txt")
                assert [e.name for e in await sbx.list(".")] == ["one.txt", "two.txt"]
                await sbx.remove("one.txt")
                assert (await sbx.upload_dir(local, "up")).files == 1
                assert (await sbx.download_dir("up", tmp_path / "down")).files == 1
                sid = sbx.id
            await service.write_files(sid, {"three.txt": b"3"})
            assert await service.exists(sid, "three.txt")
            assert "three.txt" in [e.name for e in await service.list_dir(sid)]
            await service.remove(sid, "three.txt")
            assert (await service.upload_dir(sid, str(local), "up2")).files == 1
            assert (await service.download_dir(sid, "up2", str(tmp_path / "down2"))).files == 1

    asyncio.run(main())
    assert (tmp_path / "down" / "x.txt").read_bytes() == b"x"
    assert (tmp_path / "down2" / "x.txt").read_bytes() == b"x"
