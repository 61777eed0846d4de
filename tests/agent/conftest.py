"""The agent CLI for the tests: the one in the sandbox image, and a copy of it on the host.

The host copy lets the whole turn path (the service, a provider, the real CLI, the scripted model) run
before a Docker sandbox can reach a model: the FakeProvider runs commands on the host, in a directory
standing for the sandbox home. The copy is taken out of the image once and kept under the temp dir,
named by the image id, so a rebuilt image is copied again.
"""

from __future__ import annotations

import io
import os
import shutil
import tarfile
import tempfile
from collections.abc import Iterator
from pathlib import Path

import docker
import docker.errors
import pytest

from sandbox_lifecycle.adapters.agent.scripted_model import ScriptedModel

IMAGE = os.environ.get("SANDBOX_DOCKER_IMAGE", "lightdash-sandbox:local")
# Where the image's npm package puts the binary `claude` links to.
IMAGE_CLI = "/usr/local/lib/node_modules/@anthropic-ai/claude-code/bin/claude.exe"


@pytest.fixture(scope="session")
def host_claude() -> str:
    """A host path of the real agent CLI: $PATH's, else a copy out of the sandbox image, else a skip."""
    found = shutil.which("claude")
    if found:
        return found
    try:
        client = docker.from_env()
        image = client.images.get(IMAGE)
    except docker.errors.DockerException as exc:
        pytest.skip(f"no `claude` on PATH and no image {IMAGE} to copy it from ({exc})")
    folder = Path(tempfile.gettempdir()) / f"sandbox-lifecycle-claude-{image.id.split(':')[-1][:16]}"
    target = folder / "claude"
    if not target.exists():
        folder.mkdir(exist_ok=True)
        container = client.containers.create(IMAGE, command=["true"])
        try:
            stream, _ = container.get_archive(IMAGE_CLI)
            with tarfile.open(fileobj=io.BytesIO(b"".join(stream))) as tar:
                member = tar.getmembers()[0]
                source = tar.extractfile(member)
                assert source is not None
                partial = target.with_suffix(".part")
                with open(partial, "wb") as out:
                    shutil.copyfileobj(source, out)
                partial.chmod(0o755)
                partial.rename(target)
        finally:
            container.remove(force=True)
            client.close()
    return str(target)


@pytest.fixture
def model() -> Iterator[ScriptedModel]:
    with ScriptedModel() as server:
        yield server
