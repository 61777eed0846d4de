"""The egress package runs inside the egress container with a bare python3: standard library only."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import sandbox_lifecycle.adapters.egress as egress

# -I: no user site, no PYTHONPATH; -S: no site-packages. Only the copied package and the stdlib remain.
CHECK = """
import sys
sys.path.insert(0, sys.argv[1])
from egress.gateway import Gateway
from egress.tokens import issue_token, token_owner
token = issue_token(sys.argv[2], "sbx1")
assert token_owner(sys.argv[2], token) == "sbx1"
Gateway(sys.argv[2])
loaded = sorted(m for m in sys.modules if m.startswith(("sandbox_lifecycle", "e2b", "docker", "httpx")))
print(loaded)
"""


def test_the_egress_package_imports_and_works_with_only_the_standard_library(tmp_path: Path) -> None:
    shutil.copytree(Path(egress.__file__).parent, tmp_path / "pkg" / "egress")
    done = subprocess.run(
        [sys.executable, "-I", "-S", "-c", CHECK, str(tmp_path / "pkg"), str(tmp_path / "state")],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "[]"
