"""The test tiers are folders: where a test file lives says what it may reach, and collection refuses a test
whose markers or fixtures say otherwise (docs/testing.md).

* ``tests/unit``: this process, its subprocesses, loopback fakes and temporary files. No Docker engine,
  no PostgreSQL, no S3, no cloud.
* ``tests/contract``: one suite run against several implementations of a port (stores, providers,
  snapshot stores); the parameters that reach a real component carry its marker.
* ``tests/integration``: the real Docker engine, PostgreSQL or S3 (moto), each named by its marker.
* ``tests/live``: a real cloud service, with its key; skipped without it.

The component markers (``docker``, ``postgres``, ``s3``) stay: scripts and ``-m`` select with them, and a
contract or integration test must still carry the marker of every component it uses.
"""

from __future__ import annotations

from pathlib import Path

import pytest

TESTS_DIR = Path(__file__).resolve().parent.parent
TIERS = ("unit", "contract", "integration", "live")

# The fixtures that reach a real component, by the marker a test using them must carry, so that
# `-m "not docker"` (and the other tiers) can never run a test against a component it does not name.
COMPONENT_FIXTURES = {
    "docker": frozenset({"docker_engine"}),
    "postgres": frozenset({"shared_pg_url", "pg_base_url", "pg_migrated_url"}),
    "s3": frozenset({"moto_endpoint"}),
}
# Reaches the Docker engine with no marker (it copies the agent CLI out of the sandbox image when none is
# on PATH), so it has no place in the unit tier either.
UNIT_REFUSED_FIXTURES = frozenset({"host_claude"})
# The live markers and the key without which their tests skip.
LIVE_KEYS = {"e2b_live": "E2B_API_KEY", "anthropic_live": "ANTHROPIC_API_KEY"}


def tier_of(path: Path) -> str | None:
    """The tier folder a test file lives in; None for a file directly in tests/ or outside it."""
    try:
        parts = path.resolve().relative_to(TESTS_DIR).parts
    except ValueError:
        return None
    return parts[0] if len(parts) > 1 and parts[0] in TIERS else None


def misplaced(item: pytest.Item) -> list[str]:
    """Why ``item`` may not run where it lives (nothing: it may)."""
    fixtures = set(getattr(item, "fixturenames", ()))
    markers = {m.name for m in item.iter_markers()}
    in_tests = _under_tests(item.path)
    tier = tier_of(item.path)
    problems = [
        f"{item.nodeid} uses {', '.join(sorted(used))} without @pytest.mark.{marker}"
        for marker, names in COMPONENT_FIXTURES.items()
        if (used := names & fixtures) and marker not in markers
    ]
    if in_tests and tier is None:
        problems.append(f"{item.nodeid} is in no tier: test files live under tests/{{{','.join(TIERS)}}}/")
    if tier == "unit":
        reaches = sorted(markers & set(COMPONENT_FIXTURES))
        reaches += sorted(fixtures & (UNIT_REFUSED_FIXTURES.union(*COMPONENT_FIXTURES.values())))
        if reaches:
            problems.append(
                f"{item.nodeid} is in tests/unit, which reaches no engine, database or S3, but it "
                f"needs {', '.join(reaches)}: move it to tests/integration (tests/contract if it runs one "
                "suite against several implementations)"
            )
    live = sorted(markers & set(LIVE_KEYS))
    if tier == "live" and not live:
        problems.append(
            f"{item.nodeid} is in tests/live without a live marker ({' or '.join(sorted(LIVE_KEYS))})"
        )
    if in_tests and live and tier != "live":
        problems.append(f"{item.nodeid} is marked {', '.join(live)}: live tests live in tests/live")
    return problems


def missing_live_key(item: pytest.Item, environ: dict[str, str]) -> str | None:
    """The key a live test needs and the environment lacks."""
    for marker, key in LIVE_KEYS.items():
        if item.get_closest_marker(marker) and not environ.get(key):
            return key
    return None


def _under_tests(path: Path) -> bool:
    return path.resolve().is_relative_to(TESTS_DIR)
