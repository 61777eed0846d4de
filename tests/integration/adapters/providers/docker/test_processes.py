"""No process of an exec outlives it: not after a timeout, not after the command returned.

Each test looks inside the container with `ps` a few seconds after the exec ended (bounded waits), because
the failure being guarded against is a process that keeps running, or keeps re-spawning, after we said
it was gone.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable

import pytest

from sandbox_lifecycle.adapters.providers.docker.provider import DockerProvider
from sandbox_lifecycle.core.errors import ExecTimeout
from sandbox_lifecycle.core.kinds import DATA_APP

pytestmark = pytest.mark.docker

NewId = Callable[[], str]

# Re-forks itself every 0.2 s and exits, so no pid lives long enough for a scan-then-kill to catch it.
HOP = "hop() { sleep 0.2; ( hop ) & exit 0; }; hop\n"


def leftovers(provider: DockerProvider, ref: str, needles: tuple[str, ...]) -> list[str]:
    """Processes in the container whose command line contains one of ``needles`` (ps's own exec and its
    wrapper never contain them: the needles are only in the tested command's arguments)."""
    listing = provider.exec(ref, ["ps", "-eo", "pid=,stat=,args="], timeout=10).stdout
    return [line.strip() for line in listing.splitlines() if any(n in line for n in needles)]


def assert_none_left(
    provider: DockerProvider, ref: str, needles: tuple[str, ...], settle: float = 3.0
) -> float:
    """Every matching process is gone within 5 s, and still none `settle` seconds later (a re-forker
    would be back by then). Returns how long the first part took."""
    started = time.monotonic()
    deadline = started + 5
    while left := leftovers(provider, ref, needles):
        assert time.monotonic() < deadline, f"still running: {left}"
        time.sleep(0.1)
    took = time.monotonic() - started
    time.sleep(settle)
    assert leftovers(provider, ref, needles) == []
    return took


def timed_out(provider: DockerProvider, ref: str, script: str, timeout: float = 2) -> float:
    started = time.monotonic()
    with pytest.raises(ExecTimeout):
        provider.exec(ref, ["bash", "-c", script], timeout=timeout)
    return time.monotonic() - started - timeout


def test_a_re_forking_command_is_gone_after_its_timeout(provider: DockerProvider, new_id: NewId) -> None:
    ref = provider.create(new_id(), DATA_APP)
    provider.write_file(ref, "/home/sandbox/hop.sh", HOP.encode())
    # The hopper's children keep the output open, so the exec runs into its timeout.
    over = timed_out(provider, ref, "bash /home/sandbox/hop.sh; sleep 300")
    assert over < 8, f"the kill took {over:.2f}s"
    took = assert_none_left(provider, ref, ("hop.sh", "sleep 0.2", "sleep 300"))
    print(f"re-forker: ExecTimeout {over:.2f}s after the deadline, none left {took:.2f}s later")


def test_a_re_forking_command_leaves_nothing_whether_or_not_it_times_out(
    provider: DockerProvider, new_id: NewId
) -> None:
    """The reported case, as is: `bash hop.sh` under a 2 s timeout. Its first process exits at once; what it
    leaves keeps re-forking (and, before, kept the exec's output open until the timeout)."""
    ref = provider.create(new_id(), DATA_APP)
    provider.write_file(ref, "/home/sandbox/hop.sh", HOP.encode())
    # And one that hops every 10 ms: faster than a scan that forks a grep per process can follow.
    provider.write_file(ref, "/home/sandbox/hop-fast.sh", HOP.replace("sleep 0.2", "sleep 0.01").encode())
    for script in ("hop.sh", "hop-fast.sh", "hop.sh"):
        # With the wrapper it returns at once (nothing holds the output); without, it times out.
        with contextlib.suppress(ExecTimeout):
            provider.exec(ref, ["bash", f"/home/sandbox/{script}"], timeout=2)
        assert_none_left(provider, ref, ("hop.sh", "hop-fast.sh", "sleep 0.2", "sleep 0.01"), settle=2)


def test_setsid_escapees_are_gone_after_the_timeout(provider: DockerProvider, new_id: NewId) -> None:
    ref = provider.create(new_id(), DATA_APP)
    timed_out(provider, ref, "setsid sleep 311 & setsid -f sleep 312; nohup sleep 313 >/dev/null & sleep 300")
    assert_none_left(provider, ref, ("sleep 31", "sleep 300"), settle=1)


def test_children_ignoring_sigterm_are_gone_after_the_timeout(
    provider: DockerProvider, new_id: NewId
) -> None:
    ref = provider.create(new_id(), DATA_APP)
    script = (
        "( trap '' TERM HUP INT; while :; do sleep 0.1; done; : sigterm-proof ) & trap '' TERM; sleep 300"
    )
    timed_out(provider, ref, script)
    assert_none_left(provider, ref, ("sigterm-proof", "sleep 300"), settle=1)


def test_a_child_that_cleared_its_environment_is_gone_after_the_timeout(
    provider: DockerProvider, new_id: NewId
) -> None:
    # The exec's marker lives in the environment; `env -i` drops it. Its parent still holds it.
    ref = provider.create(new_id(), DATA_APP)
    timed_out(provider, ref, "env -i /bin/sleep 321 & sleep 300")
    assert_none_left(provider, ref, ("sleep 321", "sleep 300"), settle=1)


def test_background_children_of_a_finished_exec_are_killed(provider: DockerProvider, new_id: NewId) -> None:
    """Documented in docs/design-notes.md: when an exec returns, nothing it started keeps running."""
    ref = provider.create(new_id(), DATA_APP)
    started = time.monotonic()
    # The first holds the output stream open, the second detached from it.
    result = provider.exec(
        ref, ["sh", "-c", "sleep 331 & nohup sleep 332 >/dev/null 2>&1 & echo started"], timeout=60
    )
    took = time.monotonic() - started
    assert (result.exit_code, result.stdout) == (0, "started\n")
    assert took < 10, f"the exec returned after {took:.1f}s: it waited for its background child"
    assert_none_left(provider, ref, ("sleep 331", "sleep 332"), settle=1)


def test_a_finished_re_forker_leaves_nothing_and_the_exit_code_passes(
    provider: DockerProvider, new_id: NewId
) -> None:
    ref = provider.create(new_id(), DATA_APP)
    provider.write_file(ref, "/home/sandbox/hop.sh", HOP.encode())
    result = provider.exec(ref, ["bash", "-c", "bash /home/sandbox/hop.sh; exit 7"], timeout=30)
    assert result.exit_code == 7
    assert_none_left(provider, ref, ("hop.sh", "sleep 0.2"))
    # Other execs of the sandbox are not touched by one's cleanup: only its own marker counts.
    assert provider.exec(ref, ["true"], timeout=10).exit_code == 0
