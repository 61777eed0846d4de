"""Per-sandbox home filesystems with a hard size (``disk_limit_mb``): a sparse file holding ext4, on a
loop device.

The engine mounts it (a ``local`` volume of type ext4 on the device), so the limit holds whatever the
sandbox does, costs no RAM, and takes only the blocks actually written on the host disk. The engine's
``local`` driver cannot attach a loop device itself (``o=loop`` is a mount(8) option, not the kernel's),
so this module attaches it: it needs root on the engine's host, which the Docker socket already amounts
to. Files are named ``<sandbox id>.<nonce>.img`` in a directory of the deployment, so a sandbox's disks are
found, and released, by its id alone: after a suspend, a destroy, or a crash that left a disk without its
container.
"""

from __future__ import annotations

import os
import re
import shlex
from contextlib import suppress
from dataclasses import dataclass

from sandbox_lifecycle.adapters.providers.docker.containers import SANDBOX_GID, SANDBOX_UID
from sandbox_lifecycle.core.errors import ProviderError
from sandbox_lifecycle.core.ids import random_id

# Where the per-sandbox disk images live on the engine's host (one subdirectory per deployment).
DEFAULT_DISK_DIR = "/var/lib/sandbox-lifecycle/disks"
# A sandbox id as a file name as is; anything else (never made by the service) is hashed.
_FILE_SAFE = re.compile(r"[A-Za-z0-9_-]{1,64}")
_DISK_TOOL_TIMEOUT_S = 30.0


@dataclass(frozen=True, slots=True)
class Disk:
    """The size-limited filesystem of one sandbox's home: a sparse file on a loop device."""

    image: str  # the sparse file holding the filesystem
    link: str  # our name for its loop device, what the container's volume mounts


class Disks:
    """The disks of one deployment, in ``root``; a ``limit_mb`` of 0 makes none."""

    def __init__(self, root: str, limit_mb: int) -> None:
        self.root = root
        self.limit_bytes = limit_mb * 1024**2

    def make(self, sandbox_id: str) -> Disk | None:
        if not self.limit_bytes:
            return None
        image = os.path.join(self.root, f"{_file_name(sandbox_id)}.{random_id()[:12]}.img")
        for attempt in range(3):  # release_all removes the directory once it is empty
            os.makedirs(self.root, mode=0o700, exist_ok=True)
            try:
                with open(image, "xb") as file:
                    file.truncate(self.limit_bytes)  # sparse: host blocks are taken only as written
                break
            except FileNotFoundError:
                if attempt == 2:
                    raise
        try:
            # No reserved blocks (nobody but the sandbox user writes here); root owned by the sandbox user;
            # lazy init keeps a 10 GiB filesystem at ~4 MB and ~0.1 s to make.
            extended = f"root_owner={SANDBOX_UID}:{SANDBOX_GID},lazy_itable_init=1,lazy_journal_init=1"
            _run_tool("mkfs.ext4", "-q", "-F", "-m", "0", "-E", extended + ",nodiscard", image)
            # The engine seeds a new volume from the image's home only when it is empty.
            _run_tool("debugfs", "-w", "-R", "rmdir lost+found", image)
            device = _run_tool("losetup", "--find", "--show", "--", image).strip()
            os.symlink(device, image.removesuffix(".img") + ".dev")
        except BaseException:
            self.release(image)
            raise
        return Disk(image=image, link=image.removesuffix(".img") + ".dev")

    def attached(self, image: str) -> bool:
        """Whether our link still names a loop device backed by this very file."""
        try:
            device = os.readlink(image.removesuffix(".img") + ".dev")
            with open(f"/sys/block/{os.path.basename(device)}/loop/backing_file") as backing:
                return backing.read().strip() == image
        except OSError:
            return False

    def release(self, image: str) -> None:
        """Detach and delete one disk. The link goes first: from then on nothing can mount the device."""
        with suppress(FileNotFoundError):
            os.unlink(image.removesuffix(".img") + ".dev")
        if os.path.exists(image):
            for device in _run_tool("losetup", "--noheadings", "--output", "NAME", "-j", image).split():
                # A device still mounted (a container the engine has not let go of yet) is detached by
                # the kernel once unmounted; the file's blocks are freed then.
                with suppress(ProviderError):
                    _run_tool("losetup", "-d", device)
            with suppress(FileNotFoundError):
                os.unlink(image)

    def release_all(self, sandbox_id: str) -> None:
        if not os.path.isdir(self.root):
            return
        prefix = _file_name(sandbox_id) + "."
        for name in os.listdir(self.root):
            if name.startswith(prefix) and name.endswith(".img"):
                self.release(os.path.join(self.root, name))
        # A deployment that holds no disk leaves no directory behind (ENOTEMPTY while it does).
        with suppress(OSError):
            os.rmdir(self.root)


def _file_name(sandbox_id: str) -> str:
    if _FILE_SAFE.fullmatch(sandbox_id):
        return sandbox_id
    import hashlib  # why: ~2 ms on every exec's start otherwise; only ids the service never makes need it

    return "h" + hashlib.sha256(sandbox_id.encode()).hexdigest()[:32]


def _run_tool(*argv: str) -> str:
    import shutil  # why: with subprocess ~4 ms on every exec's start otherwise; only disk limits run tools
    import subprocess

    if shutil.which(argv[0]) is None:
        error = ProviderError(
            f"{argv[0]} is not installed: a disk limit needs e2fsprogs and util-linux, and root, on the "
            "Docker host; install them, or set SANDBOX_DISK_LIMIT_MB=0 to run without a disk limit"
        )
        error.retryable = False
        raise error
    try:
        done = subprocess.run(argv, capture_output=True, text=True, timeout=_DISK_TOOL_TIMEOUT_S, check=False)
    except subprocess.TimeoutExpired as exc:
        raise ProviderError(f"{argv[0]} did not finish within {_DISK_TOOL_TIMEOUT_S:g}s") from exc
    if done.returncode != 0:
        error = ProviderError(
            f"{shlex.join(argv)} failed ({done.stderr.strip() or done.returncode}); a disk limit needs "
            "root on the Docker host (loop devices), or set SANDBOX_DISK_LIMIT_MB=0 to run without one"
        )
        error.retryable = False
        raise error
    return done.stdout
