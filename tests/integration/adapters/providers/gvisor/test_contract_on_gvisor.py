"""The provider contract suites (lifecycle, files and directories, processes and ports), collected here so
that they run on the gvisor provider (this folder's ``harness``) exactly as they run on docker."""

from pathlib import Path

import pytest

from tests.contract.adapters.providers import test_files_contract as files_contract
from tests.contract.adapters.providers.test_contract import *  # noqa: F403
from tests.contract.adapters.providers.test_files_contract import *  # noqa: F403
from tests.contract.adapters.providers.test_processes_contract import *  # noqa: F403
from tests.support.fixtures.providers import Harness


# The one contract case runsc breaks, kept visible: a FIFO made inside the sandbox lives in gVisor's
# kernel only, never in the host filesystem the engine archives, so a download cannot name it as left
# out. Nothing unsafe is written; strict, so a runsc that fixes it makes this fail until it is removed.
@pytest.mark.xfail(
    strict=True, raises=AssertionError, reason="a FIFO made under runsc is not in the host filesystem"
)
def test_a_hostile_tree_is_neutralised_on_download(harness: Harness, tmp_path: Path) -> None:
    files_contract.test_a_hostile_tree_is_neutralised_on_download(harness, tmp_path)
