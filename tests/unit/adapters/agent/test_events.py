"""The stream-json parser against output the real CLI printed (recorded against the scripted model)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from sandbox_lifecycle.adapters.agent import events as ev
from sandbox_lifecycle.adapters.agent.claude_code import AgentError, ModelUnreachable, _Turn
from sandbox_lifecycle.core.ports import ExecResult

FIXTURES = Path(__file__).parent / "fixtures"


def parse_file(name: str) -> list[ev.AgentEvent]:
    out: list[ev.AgentEvent] = []
    for line in (FIXTURES / name).read_text().splitlines():
        out += ev.parse_line(line)
    return out


def test_first_turn_writes_a_file_runs_a_command_and_reports_cost() -> None:
    events = parse_file("turn1_write_and_bash.jsonl")
    kinds = [e.kind for e in events]
    assert kinds == [
        "session_started",
        "assistant_text",
        "tool_use",
        "tool_result",
        "tool_use",
        "tool_result",
        "assistant_text",
        "result",
    ]
    start = events[0]
    assert isinstance(start, ev.SessionStarted)
    assert start.cwd == "/home/sandbox/app" and "Bash" in start.tools and "Write" in start.tools
    write, bash = (e for e in events if isinstance(e, ev.ToolUse))
    assert write.name == "Write" and write.input["file_path"] == "/home/sandbox/app/hello.txt"
    assert bash.name == "Bash" and bash.input["command"] == "cat hello.txt && echo ran-ok"
    results = [e for e in events if isinstance(e, ev.ToolResult)]
    assert results[0].tool_use_id == write.id and results[1].tool_use_id == bash.id
    assert results[1].content == "hello from turn 1\nran-ok" and not results[1].is_error
    result = events[-1]
    assert isinstance(result, ev.Result)
    assert result.status == "success" and not result.is_error
    assert result.text == "Done turn 1." and result.num_turns == 3
    assert result.cost_usd > 0 and result.usage["input_tokens"] > 0
    assert result.session_id == start.session_id


def test_a_continued_turn_keeps_the_session() -> None:
    first = parse_file("turn1_write_and_bash.jsonl")
    second = parse_file("turn2_continue.jsonl")
    assert [e.kind for e in second] == ["session_started", "assistant_text", "result"]
    assert isinstance(second[-1], ev.Result) and second[-1].text == "Turn 2 sees turn 1."
    assert isinstance(first[0], ev.SessionStarted) and isinstance(second[0], ev.SessionStarted)
    assert second[0].session_id == first[0].session_id


def test_a_refused_model_endpoint_gives_retries_then_an_api_error_result() -> None:
    events = parse_file("model_refused.jsonl")
    retries = [e for e in events if isinstance(e, ev.ModelRetry)]
    assert [r.attempt for r in retries] == [1, 2] and retries[0].max_retries == 2
    result = events[-1]
    assert isinstance(result, ev.Result) and result.is_error
    assert result.api_error == "connection_failed" and result.terminal_reason == "api_error"
    turn = _Turn()
    for e in events:
        turn.add(e)
    with pytest.raises(ModelUnreachable, match="ECONNREFUSED"):
        turn.outcome(ExecResult(1, b"", b""))


def test_no_result_line_is_an_error_naming_the_last_stderr_line() -> None:
    turn = _Turn()
    with pytest.raises(AgentError, match="exited 1 without a result: boom") as info:
        turn.outcome(ExecResult(1, b"", b"warming up\nboom\n"))
    assert not isinstance(info.value, ModelUnreachable)


def test_unknown_lines_and_blocks_are_kept_raw() -> None:
    assert ev.parse_line("") == []
    assert ev.parse_line("not json") == [ev.Unknown({"line": "not json"})]
    assert ev.parse_line('{"type": "stream_event", "x": 1}') == [ev.Unknown({"type": "stream_event", "x": 1})]
    odd = {"type": "assistant", "message": {"id": "m", "content": [{"type": "image", "source": {}}]}}
    assert ev.parse_line(json.dumps(odd)) == [
        ev.Unknown({"type": "assistant", "block": {"type": "image", "source": {}}})
    ]
    broken = {"type": "result", "num_turns": "many"}
    assert ev.parse_line(json.dumps(broken)) == [ev.Unknown(broken)]


def test_events_round_trip_through_their_json_form() -> None:
    for event in parse_file("turn1_write_and_bash.jsonl"):
        data = json.loads(json.dumps(event.to_dict()))
        assert ev.event_from_dict(data) == event


def test_the_splitter_rejoins_lines_cut_anywhere_and_bounds_a_huge_one() -> None:
    raw = (FIXTURES / "turn1_write_and_bash.jsonl").read_bytes()
    whole: list[ev.AgentEvent] = []
    ev.LineSplitter(whole.append).feed(raw)
    for size in (1, 7, 4096):
        got: list[ev.AgentEvent] = []
        splitter = ev.LineSplitter(got.append)
        for i in range(0, len(raw), size):
            splitter.feed(raw[i : i + size])
        splitter.close()
        assert got == whole
    got = []
    splitter = ev.LineSplitter(got.append, max_line_bytes=100)
    splitter.feed(b'{"type":"x"}\n' + b"y" * 250 + b'\n{"type":"z"}')
    splitter.close()
    assert got == [
        ev.Unknown({"type": "x"}),
        ev.Unknown({"skipped_line_bytes": 250}),
        ev.Unknown({"type": "z"}),
    ]
