"""Round trips to E2B: a two-turn conversation through our E2B provider vs the raw SDK doing the same.

    .venv/bin/python bench/e2b_roundtrips.py [--rounds 7] [--latency 0.05]

In production every provider call is a round trip to E2B's cloud, so what a conversation costs is mostly
how many calls it makes. The conversation: create, exec, suspend, resume, exec, suspend, destroy. Done by

* ``raw-sdk``: the e2b SDK alone, with the same template, metadata, network, lifecycle and idempotency key
  as ours, and nothing else (no ownership check, no retry layer, no event log);
* ``provider``: ``E2BProvider`` (what the service calls for each side effect);
* ``service``: ``SandboxService`` on SQLite over that provider (the log's appends included);
* ``raw-sdk+snapshots``: the raw SDK keeping each suspend as a named snapshot (create_snapshot, kill;
  resume = create from the snapshot; the two snapshots deleted at the end): what a checkpoint per turn
  costs on E2B at the least;
* ``service+checkpoints``: the service over a provider with ``E2B_CHECKPOINTS`` on (the same turns).

Against the loopback E2B server of the tests (tests/support/fake_e2b.py), in this process, with ``latency``
seconds injected before every answer. The ways alternate within each round so drift hits all alike.
Prints the calls of one conversation per way (REST and envd apart, REST by method and path) and the
median wall time of each way with its ratio to the raw SDK, as JSON lines.
"""

from __future__ import annotations

import argparse
import collections
import dataclasses
import json
import re
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from e2b import ALL_TRAFFIC, E2B  # noqa: E402

from sandbox_lifecycle.adapters.providers.e2b.checkpoints import snapshot_name  # noqa: E402
from sandbox_lifecycle.adapters.providers.e2b.provider import E2BProvider, E2BSettings, idempotency_key  # noqa: E402
from sandbox_lifecycle.core.kinds import DATA_APP, KINDS  # noqa: E402
from sandbox_lifecycle.core.sandbox import snapshot_key  # noqa: E402
from sandbox_lifecycle.core.service import SandboxService  # noqa: E402
from sandbox_lifecycle.events.migrate import upgrade  # noqa: E402
from sandbox_lifecycle.events.store import open_store  # noqa: E402
from tests.support.fake_e2b import FakeE2B  # noqa: E402

API_KEY = "e2b_bench_key_0123456789"
DEPLOYMENT = "bench"
ENVD = re.compile(r"/health|/files|/process\.Process/.*")
# E2B ids in paths, so calls group by route.
ID = re.compile(r"/(sandboxes|templates)/[^/]+")
ROUTE = r"/\1/{id}"


def raw_sdk(sdk: type, settings: E2BSettings, sandbox_id: str) -> None:
    workdir = KINDS[DATA_APP].workdir
    sbx = sdk.create(
        template=settings.templates[DATA_APP],
        timeout=settings.sandbox_timeout,
        metadata={
            "sandbox_lifecycle_id": sandbox_id,
            "kind": DATA_APP,
            "managed": "1",
            "deployment": DEPLOYMENT,
        },
        envs=dict(settings.sandbox_envs),
        network={
            "allow_out": list(settings.egress_allow.get(DATA_APP, ())),
            "deny_out": [ALL_TRAFFIC],
            "allow_public_traffic": False,
        },
        lifecycle={"on_timeout": "pause", "auto_resume": False},
        idempotency_key=idempotency_key(DEPLOYMENT, sandbox_id),
    )
    sbx.commands.run("echo turn 1", user=settings.user, cwd=workdir, timeout=60)
    sbx.pause()
    sbx = sdk.connect(sbx.sandbox_id, timeout=settings.sandbox_timeout)
    sbx.commands.run("echo turn 2", user=settings.user, cwd=workdir, timeout=60)
    sbx.pause()
    sbx.kill()


def raw_sdk_snapshots(sdk: type, settings: E2BSettings, sandbox_id: str) -> None:
    """The raw SDK with one snapshot per suspend, as checkpoints need (names as the provider's)."""
    workdir = KINDS[DATA_APP].workdir
    metadata = {
        "sandbox_lifecycle_id": sandbox_id,
        "kind": DATA_APP,
        "managed": "1",
        "deployment": DEPLOYMENT,
    }
    network = {
        "allow_out": list(settings.egress_allow.get(DATA_APP, ())),
        "deny_out": [ALL_TRAFFIC],
        "allow_public_traffic": False,
    }
    lifecycle = {"on_timeout": "pause", "auto_resume": False}
    names = [snapshot_name(DEPLOYMENT, snapshot_key(sandbox_id, v)) for v in (3, 7)]
    sbx = sdk.create(
        template=settings.templates[DATA_APP],
        timeout=settings.sandbox_timeout,
        metadata=metadata,
        envs=dict(settings.sandbox_envs),
        network=network,
        lifecycle=lifecycle,
        idempotency_key=idempotency_key(DEPLOYMENT, sandbox_id),
    )
    sbx.commands.run("echo turn 1", user=settings.user, cwd=workdir, timeout=60)
    sbx.create_snapshot(names[0])
    sbx.kill()
    sbx = sdk.create(
        template=names[0],
        timeout=settings.sandbox_timeout,
        metadata=metadata,
        envs=dict(settings.sandbox_envs),
        network=network,
        lifecycle=lifecycle,
    )
    sbx.commands.run("echo turn 2", user=settings.user, cwd=workdir, timeout=60)
    sbx.create_snapshot(names[1])
    sbx.kill()
    for name in names:
        sdk.delete_snapshot(name)


def provider_conversation(provider: E2BProvider, sandbox_id: str) -> None:
    ref = provider.create(sandbox_id, DATA_APP)
    assert provider.exec(ref, ["echo", "turn 1"], timeout=60).exit_code == 0
    snapshot = provider.suspend(sandbox_id, ref, DATA_APP, "unused-by-e2b")
    ref = provider.resume(sandbox_id, DATA_APP, snapshot)
    assert provider.exec(ref, ["echo", "turn 2"], timeout=60).exit_code == 0
    provider.suspend(sandbox_id, ref, DATA_APP, "unused-by-e2b")
    provider.destroy(sandbox_id, ref)


def service_conversation(service: SandboxService) -> None:
    row = service.create(DATA_APP)
    assert service.exec(row.id, ["echo", "turn 1"], timeout=60).exit_code == 0
    service.suspend(row.id)
    service.resume(row.id)
    assert service.exec(row.id, ["echo", "turn 2"], timeout=60).exit_code == 0
    service.suspend(row.id)
    service.destroy(row.id)


def calls(fake: FakeE2B, run: Callable[[], None]) -> tuple[float, dict[str, object]]:
    before = len(fake.requests())
    started = time.perf_counter()
    run()
    wall = time.perf_counter() - started
    made = fake.requests()[before:]
    rest = [f"{r.method} {ID.sub(ROUTE, r.path)}" for r in made if not ENVD.fullmatch(r.path)]
    envd = [f"{r.method} {r.path}" for r in made if ENVD.fullmatch(r.path)]
    return wall, {
        "rest": len(rest),
        "envd": len(envd),
        "rest_calls": dict(collections.Counter(rest)),
        "envd_calls": dict(collections.Counter(envd)),
    }


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--latency", type=float, default=0.05, help="seconds added to every request")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory() as tmp:
        fake = FakeE2B(API_KEY, Path(tmp) / "e2b", latency=args.latency)
        fake.start()
        try:
            env = {"E2B_API_KEY": API_KEY, "E2B_API_URL": fake.url, "E2B_SANDBOX_URL": fake.url}
            settings = dataclasses.replace(E2BSettings.from_env(env), request_timeout=30.0)
            sdk = E2B(
                api_key=API_KEY, api_url=fake.url, sandbox_url=fake.url, request_timeout=30.0, retries=0
            ).Sandbox
            provider = E2BProvider(settings, deployment=DEPLOYMENT)
            db = f"sqlite:///{tmp}/bench.db"
            upgrade(db)
            service = SandboxService(open_store(db), E2BProvider(settings, deployment=DEPLOYMENT))
            keeping = dataclasses.replace(settings, checkpoints=True)
            service_cp = SandboxService(open_store(db), E2BProvider(keeping, deployment=DEPLOYMENT))
            ways: dict[str, Callable[[int], Callable[[], None]]] = {
                "raw-sdk": lambda i: lambda: raw_sdk(sdk, settings, f"raw-{i}"),
                "provider": lambda i: lambda: provider_conversation(provider, f"prov-{i}"),
                "service": lambda i: lambda: service_conversation(service),
                "raw-sdk+snapshots": lambda i: lambda: raw_sdk_snapshots(sdk, settings, f"rawsnap{i + 1}"),
                "service+checkpoints": lambda i: lambda: service_conversation(service_cp),
            }
            walls: dict[str, list[float]] = {way: [] for way in ways}
            counted: dict[str, dict[str, object]] = {}
            for i in range(-1, args.rounds):  # round -1 warms connections, imports and statements up
                for way, make in ways.items():
                    wall, made = calls(fake, make(i))
                    if i >= 0:
                        walls[way].append(wall)
                        counted[way] = made
            raw = statistics.median(walls["raw-sdk"])
            for way in ways:
                median = statistics.median(walls[way])
                print(
                    json.dumps(
                        {
                            "way": way,
                            "latency_ms": round(args.latency * 1000),
                            **counted[way],
                            "median_ms": round(median * 1000, 1),
                            "ratio_vs_raw": round(median / raw, 3),
                            "rounds": args.rounds,
                        }
                    ),
                    flush=True,
                )
        finally:
            fake.stop()


if __name__ == "__main__":
    main()
