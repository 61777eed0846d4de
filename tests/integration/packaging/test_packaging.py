"""One import name, proven on the built wheel: it holds ``sandbox_lifecycle`` only, and works installed.

The wheel is installed with ``[all]`` into a fresh venv (no system site-packages). Its dependencies come
from a wheelhouse made of the distributions installed in the running environment, so the test is offline
and installs exactly the versions the rest of the suite ran against. Then, from a directory holding an
application's own ``core`` and ``events`` packages, the README's embedding example runs against SQLite
and a real Docker sandbox, and ``sandboxctl --help`` and ``sandboxctl db upgrade`` run from that venv.
"""

from __future__ import annotations

import base64
import csv
import hashlib
import io
import os
import re
import shutil
import sqlite3
import subprocess
import sys
import time
import tomllib
import zipfile
from importlib.metadata import Distribution, distribution
from pathlib import Path
from typing import Any

import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

from tests.conftest import DOCKER_IMAGES
from tests.support.fixtures.providers import new_deployment, remove_docker_sandboxes
from tests.unit import architecture_rules

ROOT = Path(__file__).resolve().parents[3]
PIP = [sys.executable, "-m", "pip"]
# Everything the packaging steps (build, venv, install) may take together.
INSTALL_BUDGET_S = 120

# An import of one of our folders by its bare name: `import core`, `from events.store import ...`.
BARE_IMPORT = re.compile(
    r"^\s*(?:from\s+(?:core|events|adapters)(?:\.\S+)?\s+import\b|import\s+(?:core|events|adapters)\b)", re.M
)
# The same as a string (importlib.import_module("core.x"), mock.patch("adapters.x.y")).
BARE_DOTTED = re.compile(r"""(?:import_module|patch(?:\.object)?)\(\s*["'](?:core|events|adapters)\.""")


def _clean_pip_env() -> dict[str, str]:
    """The environment with no pip configuration: only the wheelhouse given on the command line counts."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("PIP_")}
    env["PIP_CONFIG_FILE"] = os.devnull
    env["PIP_DISABLE_PIP_VERSION_CHECK"] = "1"
    return env


def source_copy(dest: Path) -> Path:
    """The checkout's files (tracked, and new ones not ignored) copied to ``dest``, links kept as links.

    pip builds in the source tree; a copy keeps build/ and egg-info out of the checkout, and shows that
    the wheel needs nothing that is not in version control.
    """
    listed = subprocess.run(
        ["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
        cwd=ROOT,
        check=True,
        capture_output=True,
        timeout=60,
    ).stdout.decode()
    for rel in filter(None, listed.split("\0")):
        src = ROOT / rel
        if not src.exists() and not src.is_symlink():
            continue  # deleted in the work tree, not yet committed
        target = dest / rel
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(src, target, follow_symlinks=False)
    return dest


# ----------------------------------------------------------------------- a wheelhouse, offline


def requirement_closure(root: str, extras: set[str]) -> list[Distribution]:
    """The installed distributions ``root[extras]`` needs, transitively (markers evaluated here)."""
    wanted: dict[str, set[str]] = {}
    todo = [(root, set(extras))]
    for _ in range(10_000):  # bounded: each step adds a package or an extra
        if not todo:
            break
        name, want = todo.pop()
        key = canonicalize_name(name)
        if key in wanted and want <= wanted[key]:
            continue
        have = wanted.setdefault(key, set())
        have |= want
        for raw in distribution(name).requires or []:
            req = Requirement(raw)
            envs = [{"extra": e} for e in sorted(have)] + [{"extra": ""}]
            if req.marker is None or any(req.marker.evaluate(env) for env in envs):
                todo.append((req.name, set(req.extras)))
    else:
        raise AssertionError("the requirement closure did not settle")
    return [distribution(name) for name in sorted(wanted) if name != canonicalize_name(root)]


def _record_hash(data: bytes) -> str:
    return "sha256=" + base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()


def wheel_of_installed(dist: Distribution, dest: Path) -> Path:
    """Re-pack an installed distribution as the wheel it was installed from (its files, per RECORD).

    Scripts (outside site-packages) are left out: pip writes them again from entry_points.txt.
    """
    files = [f for f in dist.files or [] if not str(f).startswith("..") and f.suffix != ".pyc"]
    info_dir = next(f.parts[0] for f in files if f.name == "METADATA" and f.parts[0].endswith(".dist-info"))
    tags = [
        line.split(":", 1)[1].strip()
        for line in (dist.read_text("WHEEL") or "").splitlines()
        if line.startswith("Tag:")
    ]
    parts = [list(dict.fromkeys(t.split("-")[i] for t in tags)) for i in range(3)]
    tag = "-".join(".".join(p) for p in parts)
    path = dest / f"{info_dir.removesuffix('.dist-info')}-{tag}.whl"
    skip = {"RECORD", "INSTALLER", "REQUESTED", "direct_url.json"}
    record = io.StringIO()
    writer = csv.writer(record, lineterminator="\n")
    # Stored, not deflated: this wheel lives for one test; compressing botocore would dominate its time.
    with zipfile.ZipFile(path, "w", zipfile.ZIP_STORED) as whl:
        for f in files:
            if f.parts[0] == info_dir and f.name in skip:
                continue
            data = Path(str(dist.locate_file(f))).read_bytes()
            whl.writestr(str(f), data)
            writer.writerow([str(f), _record_hash(data), len(data)])
        writer.writerow([f"{info_dir}/RECORD", "", ""])
        whl.writestr(f"{info_dir}/RECORD", record.getvalue())
    return path


# ---------------------------------------------------------------------------------- fixtures


class Installed:
    def __init__(self, wheel: Path, venv: Path, timings: dict[str, float]) -> None:
        self.wheel = wheel
        self.venv = venv
        self.timings = timings

    @property
    def python(self) -> str:
        return str(self.venv / "bin" / "python")

    @property
    def sandboxctl(self) -> str:
        return str(self.venv / "bin" / "sandboxctl")


@pytest.fixture(scope="module")
def installed(tmp_path_factory: pytest.TempPathFactory) -> Installed:
    base = tmp_path_factory.mktemp("packaging")
    timings: dict[str, float] = {}

    started = time.monotonic()
    dist_dir = base / "dist"
    # The build backend (setuptools) comes through pip's own configuration and cache, as any build's does.
    source = source_copy(base / "src")
    subprocess.run(
        [*PIP, "wheel", "--no-deps", "--quiet", "--wheel-dir", str(dist_dir), str(source)],
        check=True,
        timeout=INSTALL_BUDGET_S,
        cwd=base,
    )
    (wheel,) = dist_dir.glob("sandbox_lifecycle-*.whl")
    timings["build"] = time.monotonic() - started

    started = time.monotonic()
    house = base / "wheelhouse"
    house.mkdir()
    for dist in requirement_closure("sandbox-lifecycle", {"all"}):
        wheel_of_installed(dist, house)
    timings["wheelhouse"] = time.monotonic() - started

    started = time.monotonic()
    venv = base / "venv"
    # No pip inside: the running pip installs into it (--python), which saves seeding one.
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True, timeout=60)
    subprocess.run(
        [
            *PIP,
            "--python",
            str(venv / "bin" / "python"),
            "install",
            "--quiet",
            "--no-index",
            # Bytecode is compiled on first import anyway; compiling botocore up front is most of an install.
            "--no-compile",
            "--find-links",
            str(house),
            f"{wheel}[all]",
        ],
        check=True,
        timeout=INSTALL_BUDGET_S,
        env=_clean_pip_env(),
    )
    timings["install"] = time.monotonic() - started
    print("packaging timings (s):", {k: round(v, 1) for k, v in timings.items()})
    return Installed(wheel, venv, timings)


def _venv_env(installed: Installed, **extra: str) -> dict[str, str]:
    # Nothing of this checkout may leak in: no PYTHONPATH, and the venv's bin first on PATH.
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    env["PATH"] = f"{installed.venv / 'bin'}{os.pathsep}{env.get('PATH', '')}"
    env.update(extra)
    return env


# ------------------------------------------------------------------------------------- tests


@pytest.mark.slow
def test_the_wheel_holds_sandbox_lifecycle_only_and_ships_its_types_and_migrations(
    installed: Installed,
) -> None:
    names = zipfile.ZipFile(installed.wheel).namelist()
    tops = {n.split("/", 1)[0] for n in names}
    (info,) = [t for t in tops if t.endswith(".dist-info")]
    assert tops == {"sandbox_lifecycle", info}
    assert re.fullmatch(r"sandbox_lifecycle-[^-]+\.dist-info", info)
    for member in (
        "sandbox_lifecycle/py.typed",
        "sandbox_lifecycle/core/service.py",
        "sandbox_lifecycle/core/async_service.py",
        "sandbox_lifecycle/events/store/postgres.py",
        "sandbox_lifecycle/events/migrations/env.py",
        "sandbox_lifecycle/adapters/entrypoints/scheduler.py",
    ):
        assert member in names, member
    assert any(n.startswith("sandbox_lifecycle/events/migrations/versions/") for n in names)
    # Every module of the source tree, each once under its import name (Alembic's folder included),
    # and no other module: package-dir mapped every folder, and nothing came in twice.
    expected = {
        "/".join(m.name.split(".") + (["__init__.py"] if m.is_package else []))
        + ("" if m.is_package else ".py")
        for m in architecture_rules.discover().values()
    }
    assert any("/migrations/versions/" in n for n in expected)
    assert sorted(expected - set(names)) == []
    assert sorted({n for n in names if n.endswith(".py")} - expected) == []
    assert "sandbox_lifecycle/events/migrations/script.py.mako" in names
    entry_points = zipfile.ZipFile(installed.wheel).read(f"{info}/entry_points.txt").decode()
    assert "sandboxctl = sandbox_lifecycle.adapters.entrypoints.cli:main" in entry_points

    # Installed, it added nothing else to site-packages either (every file it owns, per RECORD).
    list_files = (
        "import importlib.metadata as m; print(*m.distribution('sandbox-lifecycle').files, sep='\\n')"
    )
    record = subprocess.run(
        [installed.python, "-c", list_files],
        # Not the checkout: its egg-info (an editable install's) would answer instead.
        cwd=installed.venv,
        check=True,
        capture_output=True,
        text=True,
        env=_venv_env(installed),
    ).stdout.split()
    outside = {f for f in record if not f.startswith(("sandbox_lifecycle/", info + "/"))}
    assert outside == {"../../../bin/sandboxctl"}
    assert installed.timings["install"] < 60, installed.timings


USE_SECTION = re.compile(r"^## Use\n(?P<body>.*?)^## ", re.S | re.M)
PYTHON_BLOCK = re.compile(r"```python\n(?P<code>.*?)```", re.S)


@pytest.mark.slow
@pytest.mark.docker
def test_the_readme_example_runs_from_the_installed_wheel_next_to_an_apps_own_core_and_events(
    installed: Installed, tmp_path: Path, docker_engine: Any
) -> None:
    use = USE_SECTION.search((ROOT / "README.md").read_text())
    assert use, "README has no Use section"
    # The embedding example and the asyncio one, verbatim: the blocks that build the service (the others
    # are fragments that use an `sbx` of those examples).
    blocks = [m["code"] for m in PYTHON_BLOCK.finditer(use["body"])]
    [sync_example] = [b for b in blocks if "sandbox_lifecycle.connect()" in b]
    [async_example] = [b for b in blocks if "sandbox_lifecycle.connect_async()" in b]
    assert "async def handle_turn" in async_example and "asyncio.run(" in async_example

    app = tmp_path / "app"
    for package in ("core", "events"):
        (app / package).mkdir(parents=True)
        (app / package / "__init__.py").write_text(f"OWNER = 'the application'\nNAME = {package!r}\n")
    script = app / "main.py"
    script.write_text(
        "import sys\n"
        "import core, events\n"
        + sync_example
        + "sync_sbx, sync_service = sbx, service\n"
        + "print('ASYNC-OUT ', end='')\n"
        + async_example  # runs itself: prints the turn's output, then closes its service
        + "sbx, service = sync_sbx, sync_service\n"
        "# The application's own packages are still the ones imported by those names.\n"
        "assert core.OWNER == events.OWNER == 'the application'\n"
        "ours = [m for m in sys.modules if m.split('.')[0] in ('core', 'events', 'adapters') and '.' in m]\n"
        "assert not ours, ours\n"
        "import sandbox_lifecycle\n"
        "assert sandbox_lifecycle.__file__.startswith(sys.prefix), sandbox_lifecycle.__file__\n"
        # The suspend's usage (UsageRecorded) follows it in the same append; the lifecycle's last two:
        "print('EXAMPLE-OK', [h.type for h in service.history(sbx.id) if h.type != 'UsageRecorded'][-2:])\n"
    )
    deployment = new_deployment()
    env = _venv_env(
        installed,
        SANDBOX_PROVIDER="docker",
        SANDBOX_DATA_DIR=str(tmp_path / "data"),
        SANDBOX_DEPLOYMENT=deployment,
        SANDBOX_DOCKER_IMAGE=DOCKER_IMAGES["data-app"],
        SANDBOX_AI_WRITEBACK_DOCKER_IMAGE=DOCKER_IMAGES["ai-writeback"],
    )
    env.pop("SANDBOX_DATABASE_URL", None)
    try:
        run = subprocess.run(
            [installed.python, str(script)], cwd=app, env=env, capture_output=True, text=True, timeout=300
        )
    finally:
        remove_docker_sandboxes(docker_engine, deployments=[deployment])
    assert run.returncode == 0, run.stderr
    assert "EXAMPLE-OK ['SuspendRequested', 'Suspended']" in run.stdout
    assert "ASYNC-OUT hello" in run.stdout
    # The embedded default: a SQLite log in the data dir.
    assert (tmp_path / "data" / "sandbox.db").exists()


@pytest.mark.slow
def test_sandboxctl_of_the_installed_wheel_helps_and_upgrades_a_database(
    installed: Installed, tmp_path: Path
) -> None:
    env = _venv_env(installed, SANDBOX_DATA_DIR=str(tmp_path / "data"))
    helped = subprocess.run(
        [installed.sandboxctl, "--help"], env=env, cwd=tmp_path, capture_output=True, text=True, timeout=60
    )
    assert helped.returncode == 0, helped.stderr
    for command in ("create", "exec", "scheduler", "replay", "db"):
        assert command in helped.stdout

    db = tmp_path / "fresh.db"
    upgraded = subprocess.run(
        [installed.sandboxctl, "db", "upgrade"],
        env={**env, "SANDBOX_DATABASE_URL": f"sqlite:///{db}"},
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert upgraded.returncode == 0, upgraded.stderr
    with sqlite3.connect(db) as conn:
        tables = {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
        (revision,) = conn.execute("SELECT version_num FROM alembic_version").fetchone()
    assert {"events", "sandboxes", "sandbox_deadlines"} <= tables
    assert revision


def test_no_module_imports_our_folders_by_their_bare_names() -> None:
    # The patterns themselves must catch what they are for, or this test could never fail.
    for bad in (
        "from core.service import X",
        "import events.store",
        "  from adapters import cli",
        "import core",
    ):
        assert BARE_IMPORT.search(bad), bad
    assert BARE_DOTTED.search('mock.patch("core.service.utcnow")')
    for fine in ("from sandbox_lifecycle.core import x", "import coredump", "from eventsourcing import y"):
        assert not BARE_IMPORT.search(fine), fine

    skip = {".venv", ".git", "build", "dist", "node_modules", "__pycache__"}
    sources = [
        p
        for p in ROOT.rglob("*.py")
        if not skip & set(p.relative_to(ROOT).parts)
        # This file, whose samples of bad imports are checked above.
        and p.resolve() != Path(__file__).resolve()
    ]
    assert len(sources) > 50, "the scan found too few files to be looking in the right place"
    offenders = []
    for path in sources:
        text = path.read_text(encoding="utf-8")
        for pattern in (BARE_IMPORT, BARE_DOTTED):
            offenders += [f"{path.relative_to(ROOT)}: {m.group(0).strip()}" for m in pattern.finditer(text)]
    assert offenders == []


def test_the_package_is_real_folders_and_pyproject_lists_each_of_them() -> None:
    # No links: every module has one path (tests/unit/test_architecture.py checks the folders too).
    assert [p.name for p in (ROOT / "sandbox_lifecycle").iterdir() if p.is_symlink()] == []
    config = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["tool"]["setuptools"]
    # pyproject lists packages by hand (find cannot prefix the names): a new folder must be added there,
    # or the wheel would silently leave it out.
    folders = {m.name for m in architecture_rules.discover().values() if m.is_package}
    assert sorted(folders ^ set(config["packages"])) == []
    for name, folder in config["package-dir"].items():
        assert (ROOT / folder / "__init__.py").is_file(), name


def test_a_checkout_imports_each_module_from_its_one_real_file(tmp_path: Path) -> None:
    """Through the editable install, from anywhere; and from a clone on PYTHONPATH with no install."""
    modules = ["core/service.py", "events/store/base.py", "adapters/entrypoints/cli/commands.py"]
    names = ["sandbox_lifecycle." + m.removesuffix(".py").replace("/", ".") for m in modules]
    probe = (
        f"import importlib, sys\nprint(*(importlib.import_module(n).__file__ for n in {names!r}))\n"
        "assert not {'core', 'events', 'adapters'} & set(sys.modules), 'a bare name was imported'\n"
    )
    # -S skips site-packages' .pth files, the editable install's hook among them; the dependencies stay.
    site = [p for p in sys.path if p.endswith("site-packages")]
    without_install = [sys.executable, "-S", "-c", f"import sys; sys.path += {site!r}\n{probe}"]
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    for command, extra in (([sys.executable, "-c", probe], {}), (without_install, {"PYTHONPATH": str(ROOT)})):
        run = subprocess.run(
            command, env={**env, **extra}, cwd=tmp_path, capture_output=True, text=True, timeout=60
        )
        assert run.returncode == 0, run.stderr
        assert run.stdout.split() == [str(ROOT / m) for m in modules], command
