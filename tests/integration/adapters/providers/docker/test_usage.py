"""Usage and fresh pools on the real engine (issue R, sections 3 and 4), through the service.

A sandbox that burns a second of CPU and touches 60 MB records it at its suspend; one that downloads N
bytes from an origin of this test (on the engine's bridge address, a name pinned with
SANDBOX_EGRESS_RESOLVE, allowed for the kind) records at least N bytes in; calls to the scripted model
through the gateway record their count, tokens and statuses. A pool whose kind's image is rebuilt under
the same tag (a tiny image of this run, FROM the real one, differing by a label) never hands out the
sandbox made from the old one, and maintain replaces it.
"""

from __future__ import annotations

import contextlib
import http.server
import io
import json
import threading
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import docker
import docker.errors
import pytest

from sandbox_lifecycle.adapters.agent.scripted_model import Fail, Reply, ScriptedModel
from sandbox_lifecycle.adapters.providers.docker.bridge import bridge_host_address
from sandbox_lifecycle.adapters.providers.docker.provider import DockerProvider
from sandbox_lifecycle.adapters.providers.docker.settings import EgressSettings
from sandbox_lifecycle.adapters.snapshots.localfs import LocalSnapshotStore
from sandbox_lifecycle.core import lifecycle as lc
from sandbox_lifecycle.core.capacity import Capacity
from sandbox_lifecycle.core.kinds import AI_WRITEBACK, DATA_APP
from sandbox_lifecycle.core.projection import Policy
from sandbox_lifecycle.core.service import SandboxService
from sandbox_lifecycle.events.store import open_store
from tests.conftest import DOCKER_IMAGES
from tests.support.fixtures.docker import LABEL_DEPLOYMENT, RUN_PREFIX, TEST_LIMITS, remove_network_leftovers

pytestmark = pytest.mark.docker

ORIGIN = "origin.test"
DEPLOYMENT = f"{RUN_PREFIX}-use"
POLICY = Policy(idle_timeout=timedelta(hours=1), retention=timedelta(days=1), lease=timedelta(minutes=5))
DOWNLOAD_BYTES = 3 * 1024 * 1024 + 7
# The pool test's image: this run's tag, rebuilt to a new ID by changing a label.
POOL_IMAGE = f"{RUN_PREFIX.lower()}-pool:latest"


class _Blob(http.server.BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        self.send_response(200)
        self.send_header("Content-Length", str(DOWNLOAD_BYTES))
        self.end_headers()
        self.wfile.write(b"z" * DOWNLOAD_BYTES)

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture(scope="module")
def bridge(docker_client: docker.DockerClient) -> str:
    return bridge_host_address(docker_client.api.inspect_network("bridge"))


@pytest.fixture(scope="module")
def origin(bridge: str) -> Iterator[int]:
    server = http.server.ThreadingHTTPServer((bridge, 0), _Blob)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield int(server.server_address[1])
    finally:
        server.shutdown()
        server.server_close()


@pytest.fixture
def model(bridge: str) -> Iterator[ScriptedModel]:
    with ScriptedModel(host=bridge) as server:
        yield server


def _service(
    docker_client: docker.DockerClient,
    tmp_path: Path,
    url: str,
    egress: EgressSettings,
    images: dict[str, str],
    capacity: Capacity | None = None,
) -> SandboxService:
    provider = DockerProvider(
        images,
        LocalSnapshotStore(tmp_path / "snapshots"),
        client=docker_client,
        environ={},
        limits=TEST_LIMITS,
        deployment=DEPLOYMENT,
        disk_limit_mb=0,
        egress=egress,
    )
    return SandboxService(open_store(url), provider, policy=POLICY, capacity=capacity or Capacity())


def _cleanup(docker_client: docker.DockerClient, service: SandboxService) -> None:
    service.store.close()  # type: ignore[attr-defined]
    for container in docker_client.containers.list(
        all=True, filters={"label": f"{LABEL_DEPLOYMENT}={DEPLOYMENT}"}
    ):
        with contextlib.suppress(docker.errors.NotFound):
            container.remove(force=True, v=True)
    remove_network_leftovers(docker_client, f"{LABEL_DEPLOYMENT}={DEPLOYMENT}")


@pytest.fixture
def service(
    docker_client: docker.DockerClient,
    tmp_path: Path,
    bridge: str,
    origin: int,
    model: ScriptedModel,
    clean_sqlite_url: str,
) -> Iterator[SandboxService]:
    egress = EgressSettings(
        allow={DATA_APP: (f"{ORIGIN}:{origin}",), AI_WRITEBACK: ()},
        resolve=(f"{ORIGIN}:{origin}:{bridge}",),
        state_dir=tmp_path / "egress-state",
        # A loopback upstream: the provider hands the egress container the bridge address instead.
        upstream_url=f"http://127.0.0.1:{model.port}",
        api_key="sk-usage-test-key",
    )
    built = _service(docker_client, tmp_path, clean_sqlite_url, egress, dict(DOCKER_IMAGES))
    try:
        yield built
    finally:
        _cleanup(docker_client, built)


def _usage(service: SandboxService, sid: str) -> dict[str, Any]:
    history = service.history(sid)
    assert history[-1].type == "UsageRecorded", [h.type for h in history]
    assert history[-2].type in ("Suspended", "Destroyed")
    return dict(history[-1].data)


BURN = """
import time
held = b"x" * (60 * 1024 * 1024)  # written, so every page is touched
started = time.process_time()
while time.process_time() - started < 1.2:
    pass
print(len(held))
"""


def test_a_suspend_records_the_cpu_and_peak_memory_of_the_run(service: SandboxService) -> None:
    sid = service.create(DATA_APP).id
    done = service.exec(sid, ["python3", "-c", BURN], timeout=120)
    assert done.exit_code == 0, done.stderr
    service.suspend(sid)
    usage = _usage(service, sid)
    print(f"usage after a 1.2 s burn of 60 MB: {json.dumps(usage)}")
    assert usage["cpu_seconds"] > 0.5
    if usage["memory_peak_bytes"] is None:
        pytest.skip("this engine reports no memory peak (cgroup v2): recorded as None, by design")
    assert usage["memory_peak_bytes"] > 50 * 1024 * 1024
    assert usage["since"] is not None
    # A resumed sandbox starts a new run: its next usage counts from the resume.
    service.resume(sid)
    service.suspend(sid)
    again = _usage(service, sid)
    assert again["cpu_seconds"] < usage["cpu_seconds"] and again["since"] > usage["since"]
    service.destroy(sid)
    assert service.history(sid)[-1].type == "Destroyed"  # suspended: nothing ran, nothing measured


FETCH = """
import os, urllib.request
got = urllib.request.urlopen(URL, timeout=30).read()
print(len(got))
"""


def test_bytes_downloaded_through_the_egress_point_are_counted_in(
    service: SandboxService, origin: int
) -> None:
    sid = service.create(DATA_APP).id
    url = f"http://{ORIGIN}:{origin}/blob"
    done = service.exec(sid, ["python3", "-c", FETCH.replace("URL", repr(url))], timeout=120)
    assert done.exit_code == 0 and done.stdout.strip() == str(DOWNLOAD_BYTES), done.stderr
    service.destroy(sid)
    usage = _usage(service, sid)
    print(f"usage after a {DOWNLOAD_BYTES} byte download: {json.dumps(usage)}")
    assert usage["egress_bytes_in"] >= DOWNLOAD_BYTES
    assert 0 < usage["egress_bytes_out"] < DOWNLOAD_BYTES  # the request went out, no body
    assert usage["model_requests"] == 0 and usage["model_statuses"] == {}


CALLS = """
import json, os, urllib.request, urllib.error
base, key = os.environ["ANTHROPIC_BASE_URL"], os.environ["ANTHROPIC_API_KEY"]
seen = {"input": 0, "output": 0, "statuses": []}
for stream in (False, True, False):
    body = {"model": "m", "max_tokens": 50, "stream": stream, "tools": [{"name": "t"}],
            "messages": [{"role": "user", "content": "count me " * 40}]}
    request = urllib.request.Request(base + "/v1/messages", data=json.dumps(body).encode(),
        headers={"x-api-key": key, "content-type": "application/json", "anthropic-version": "2023-06-01"})
    try:
        answer = urllib.request.urlopen(request, timeout=30)
    except urllib.error.HTTPError as e:
        seen["statuses"].append(e.code)
        continue
    seen["statuses"].append(answer.status)
    text = answer.read().decode()
    if not stream:
        usage = json.loads(text)["usage"]
        seen["input"] += usage["input_tokens"]; seen["output"] += usage["output_tokens"]
    else:
        last = {}
        for line in text.splitlines():
            if line.startswith("data:"):
                event = json.loads(line[5:])
                usage = (event.get("message") or {}).get("usage") or event.get("usage") or {}
                last.update(usage)
        seen["input"] += last["input_tokens"]; seen["output"] += last["output_tokens"]
print(json.dumps(seen))
"""


def test_model_calls_through_the_gateway_record_requests_tokens_and_statuses(
    service: SandboxService, model: ScriptedModel
) -> None:
    model.extend([Reply("one"), Reply("two, streamed"), Fail(529, "overloaded_error")])
    sid = service.create(DATA_APP).id
    done = service.exec(sid, ["python3", "-c", CALLS], timeout=120)
    assert done.exit_code == 0, done.stderr
    seen = json.loads(done.stdout)
    assert seen["statuses"] == [200, 200, 529]
    service.suspend(sid)
    usage = _usage(service, sid)
    print(f"usage after 3 gateway calls: {json.dumps(usage)}")
    assert usage["model_requests"] == 3
    assert usage["model_statuses"] == {"200": 2, "529": 1}
    assert usage["model_input_tokens"] == seen["input"] > 0
    assert usage["model_output_tokens"] == seen["output"] > 0
    # Gateway bytes count as the sandbox's traffic through the egress point too.
    assert usage["egress_bytes_out"] > 0 and usage["egress_bytes_in"] > 0
    service.destroy(sid)


# ----------------------------------------------------------------------------------------------- pools


def _build(client: docker.DockerClient, generation: int) -> str:
    dockerfile = f"FROM {DOCKER_IMAGES[AI_WRITEBACK]}\nLABEL sandbox-lifecycle-test-generation={generation}\n"
    image, _ = client.images.build(fileobj=io.BytesIO(dockerfile.encode()), tag=POOL_IMAGE, rm=True)
    return str(image.id)


@pytest.fixture
def pool_service(
    docker_client: docker.DockerClient, tmp_path: Path, clean_sqlite_url: str
) -> Iterator[tuple[SandboxService, list[str]]]:
    built: list[str] = [_build(docker_client, 1)]
    egress = EgressSettings(allow={DATA_APP: (), AI_WRITEBACK: ()}, state_dir=tmp_path / "egress-state")
    service = _service(
        docker_client,
        tmp_path,
        clean_sqlite_url,
        egress,
        {**DOCKER_IMAGES, AI_WRITEBACK: POOL_IMAGE},
        Capacity(warm_pool={AI_WRITEBACK: 1}),
    )
    try:
        yield service, built
    finally:
        service.pools.settle()
        _cleanup(docker_client, service)
        for image in [POOL_IMAGE, *built]:
            with contextlib.suppress(docker.errors.ImageNotFound, docker.errors.APIError):
                docker_client.images.remove(image, force=True, noprune=True)


def test_a_rebuilt_image_is_never_handed_out_stale_and_maintain_replaces_it(
    docker_client: docker.DockerClient, pool_service: tuple[SandboxService, list[str]]
) -> None:
    service, built = pool_service
    service.maintain_pools()
    (old,) = [r.id for r in service.list(lc.IDLE) if r.conversation_id is None]
    (joined,) = [h for h in service.history(old) if h.type == "Pooled"]
    assert joined.data["image"] == built[0]

    built.append(_build(docker_client, 2))
    assert built[1] != built[0]
    with service.turn("conv-fresh", AI_WRITEBACK) as sbx:
        assert sbx.id != old
        claimed = sbx.id
    service.pools.settle()
    assert service.get(old).conversation_id is None  # never handed out

    report = service.maintain_pools()
    row = service.get(old)
    assert row.state == lc.EXPIRED and row.expired_reason == "stale_image", report
    fresh = [r.id for r in service.list(lc.IDLE) if r.conversation_id is None and r.id != claimed]
    assert len(fresh) == 1
    (joined,) = [h for h in service.history(fresh[0]) if h.type == "Pooled"]
    assert joined.data["image"] == built[1]
