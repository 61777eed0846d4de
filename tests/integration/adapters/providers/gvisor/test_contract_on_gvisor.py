"""The provider contract suites (lifecycle, files and directories, processes and ports), collected here so
that they run on the gvisor provider (this folder's ``harness``) exactly as they run on docker."""

from tests.providers.test_contract import *  # noqa: F403
from tests.providers.test_files_contract import *  # noqa: F403
from tests.providers.test_processes_contract import *  # noqa: F403
