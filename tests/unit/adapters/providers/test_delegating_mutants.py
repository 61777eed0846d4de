"""``DelegatingCalls`` forwards every data-plane call to the part that does it, with every argument in
its place and the part's answer unchanged (docs/testing.md, "Mutation scores, 2026-12-08")."""

from __future__ import annotations

from typing import Any

import pytest

from sandbox_lifecycle.adapters.providers.delegating import DelegatingCalls


class _Recorder:
    """A part that records each call and answers with a value naming it."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, tuple[Any, ...], dict[str, Any]]] = []

    def __getattr__(self, method: str) -> Any:
        def record(*args: Any, **kwargs: Any) -> Any:
            self.calls.append((method, args, kwargs))
            return f"answer of {method}"

        return record


class _Provider(DelegatingCalls):
    def __init__(self) -> None:
        self._exec = _Recorder()  # type: ignore[assignment]
        self._files = _Recorder()  # type: ignore[assignment]
        self._processes = _Recorder()  # type: ignore[assignment]


FILES = [
    ("write_file", ("ref", "path", b"data"), "write_file", None),
    ("read_file", ("ref", "path"), "read_file", "answer of read_file"),
    ("write_files", ("ref", {"a": b"1"}), "write_files", None),
    ("remove", ("ref", "path"), "remove", None),
    ("list_dir", ("ref", "path"), "list_dir", "answer of list_dir"),
    ("exists", ("ref", "path"), "exists", "answer of exists"),
    ("upload_dir", ("ref", "local", "remote"), "upload_dir", "answer of upload_dir"),
    ("download_dir", ("ref", "remote", "local"), "download_dir", "answer of download_dir"),
]
PROCESSES = [
    ("processes", ("ref",), "processes", "answer of processes"),
    ("process_output", ("ref", "pid"), "process_output", "answer of process_output"),
    ("wait_process", ("ref", "pid", 7.5), "wait_process", "answer of wait_process"),
    ("kill_process", ("ref", "pid"), "kill_process", None),
    ("last_activity", ("ref",), "last_activity", "answer of last_activity"),
]


@pytest.mark.parametrize(("method", "args", "part_method", "answer"), FILES)
def test_file_calls_go_to_the_files_part_unchanged(
    method: str, args: tuple[Any, ...], part_method: str, answer: object
) -> None:
    provider = _Provider()
    assert getattr(provider, method)(*args) == answer
    assert provider._files.calls == [(part_method, args, {})]  # type: ignore[attr-defined]


@pytest.mark.parametrize(("method", "args", "part_method", "answer"), PROCESSES)
def test_process_calls_go_to_the_processes_part_unchanged(
    method: str, args: tuple[Any, ...], part_method: str, answer: object
) -> None:
    provider = _Provider()
    assert getattr(provider, method)(*args) == answer
    assert provider._processes.calls == [(part_method, args, {})]  # type: ignore[attr-defined]


def test_start_passes_the_command_env_and_cwd() -> None:
    provider = _Provider()
    assert provider.start("ref", ["ls"], env={"A": "1"}, cwd="/w") == "answer of start"
    assert provider._processes.calls == [  # type: ignore[attr-defined]
        ("start", ("ref", ["ls"]), {"env": {"A": "1"}, "cwd": "/w"})
    ]
    provider = _Provider()
    provider.start("ref", ["ls"])
    assert provider._processes.calls == [  # type: ignore[attr-defined]
        ("start", ("ref", ["ls"]), {"env": None, "cwd": None})
    ]


def test_exec_passes_every_option_in_its_place_and_defaults_to_none() -> None:
    def out(_: bytes) -> None: ...

    def err(_: bytes) -> None: ...

    provider = _Provider()
    result = provider.exec(
        "ref", ["ls"], timeout=3.0, env={"A": "1"}, cwd="/w", on_stdout=out, on_stderr=err, max_output_bytes=9
    )
    assert result == "answer of run"
    assert provider._exec.calls == [  # type: ignore[attr-defined]
        (
            "run",
            ("ref", ["ls"]),
            {
                "timeout": 3.0,
                "env": {"A": "1"},
                "cwd": "/w",
                "on_stdout": out,
                "on_stderr": err,
                "max_output_bytes": 9,
            },
        )
    ]
    provider = _Provider()
    provider.exec("ref", ["ls"], timeout=3.0)
    assert provider._exec.calls == [  # type: ignore[attr-defined]
        (
            "run",
            ("ref", ["ls"]),
            {
                "timeout": 3.0,
                "env": None,
                "cwd": None,
                "on_stdout": None,
                "on_stderr": None,
                "max_output_bytes": None,
            },
        )
    ]
