"""The egress point's usage counting: tokens read from model answers (token_tally.py), and one run's
counters (bookkeeping.py: start_run, run_usage, forget_run)."""

from __future__ import annotations

import gzip
import json
import zlib
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from sandbox_lifecycle.adapters.egress import bookkeeping as books
from sandbox_lifecycle.adapters.egress.token_tally import MAX_HELD, TokenTally

MESSAGE = {"id": "m", "content": [], "usage": {"input_tokens": 12, "output_tokens": 7}}


def events(*payloads: dict[str, object]) -> bytes:
    return b"".join(b"event: x\ndata: " + json.dumps(p).encode() + b"\n\n" for p in payloads)


STREAM = events(
    {"type": "message_start", "message": {"usage": {"input_tokens": 30, "output_tokens": 1}}},
    {"type": "content_block_delta", "delta": {"text": "hi"}},
    {"type": "message_delta", "usage": {"output_tokens": 5}},
    {"type": "message_delta", "usage": {"output_tokens": 9}},
    {"type": "message_stop"},
)


def tally(body: bytes, content_type: str | None, encoding: str | None = None, piece: int = 0) -> TokenTally:
    found = TokenTally(content_type, encoding)
    step = piece or max(1, len(body))
    for at in range(0, len(body), step):
        found.feed(body[at : at + step])
    return found


@pytest.mark.parametrize("piece", [0, 1, 7])
def test_a_json_answer_reports_its_usage_however_it_is_cut(piece: int) -> None:
    assert tally(json.dumps(MESSAGE).encode(), "application/json", piece=piece).tokens() == (12, 7)


@pytest.mark.parametrize("piece", [0, 1, 5, 64])
def test_a_stream_reports_its_input_and_its_last_output_count(piece: int) -> None:
    found = tally(STREAM, "text/event-stream; charset=utf-8", piece=piece)
    assert found.tokens() == (30, 9)


def test_a_stream_with_crlf_lines() -> None:
    assert tally(STREAM.replace(b"\n", b"\r\n"), "text/event-stream").tokens() == (30, 9)


@pytest.mark.parametrize("encoding", ["gzip", "x-gzip", "deflate"])
def test_compressed_answers_are_read(encoding: str) -> None:
    raw = json.dumps(MESSAGE).encode()
    body = gzip.compress(raw) if "gzip" in encoding else zlib.compress(raw)
    assert tally(body, "application/json", encoding, piece=3).tokens() == (12, 7)
    assert tally(gzip.compress(STREAM), "text/event-stream", "gzip", piece=10).tokens() == (30, 9)


@pytest.mark.parametrize(
    ("body", "content_type", "encoding"),
    [
        (json.dumps(MESSAGE).encode(), "application/json", "br"),  # an encoding it cannot read
        (b"not gzip at all", "application/json", "gzip"),
        (b"{not json", "application/json", None),
        (b"[1, 2]", "application/json", None),
        (json.dumps({"usage": "many"}).encode(), "application/json", None),
        (json.dumps({"usage": {"input_tokens": -1, "output_tokens": True}}).encode(), None, None),
        (json.dumps({"content": []}).encode(), "application/json", None),
        (events({"type": "ping"}) + b"data: {broken\n\ndata: [3]\n\n", "text/event-stream", None),
    ],
)
def test_what_cannot_be_read_is_none(body: bytes, content_type: str, encoding: str | None) -> None:
    assert tally(body, content_type, encoding).tokens() is None


def test_one_known_count_gives_zero_for_the_other() -> None:
    only_input = json.dumps({"usage": {"input_tokens": 4}}).encode()
    assert tally(only_input, "application/json").tokens() == (4, 0)
    only_output = events({"type": "message_delta", "usage": {"output_tokens": 3}})
    assert tally(only_output, "text/event-stream").tokens() == (0, 3)


def test_identity_is_plain() -> None:
    assert tally(json.dumps(MESSAGE).encode(), "application/json", " Identity ").tokens() == (12, 7)


def test_a_body_larger_than_what_it_holds_is_given_up() -> None:
    big = json.dumps({**MESSAGE, "pad": "x" * MAX_HELD}).encode()
    assert tally(big, "application/json", piece=65536).tokens() is None
    line = b"data: " + b"x" * (MAX_HELD + 10)  # one line without its end, too long to hold
    found = tally(line, "text/event-stream", piece=65536)
    found.feed(b"\n" + events({"type": "message_delta", "usage": {"output_tokens": 3}}))
    assert found.tokens() is None


def test_a_large_stream_of_small_events_is_read_whole() -> None:
    filler = events(*[{"type": "content_block_delta", "delta": {"text": "y" * 100}}] * 20000)
    assert len(filler) > MAX_HELD
    assert tally(filler + STREAM, "text/event-stream", piece=65536).tokens() == (30, 9)


@given(st.binary(max_size=2000), st.sampled_from(["application/json", "text/event-stream"]))
def test_any_bytes_give_a_count_pair_or_none_and_never_raise(body: bytes, content_type: str) -> None:
    found = tally(body, content_type, piece=13).tokens()
    assert found is None or (isinstance(found, tuple) and all(n >= 0 for n in found))


# ------------------------------------------------------------------------------------------- bookkeeping


def test_a_run_counts_what_the_counters_grew_by_since_it_started(tmp_path: Path) -> None:
    books.count_call(tmp_path, "s1", 100, 2000, 200, (10, 3))
    books.count_transfer(tmp_path, {"s1": (5000, 60)})
    books.start_run(tmp_path, "s1")
    assert books.run_usage(tmp_path, "s1") == {
        "bytes_in": 0,
        "bytes_out": 0,
        "requests": 0,
        "input_tokens": 0,
        "output_tokens": 0,
        "status": {},
    }
    books.count_call(tmp_path, "s1", 150, 900, 200, (20, 4))
    books.count_call(tmp_path, "s1", 50, 80, 529, None)
    books.count_call(tmp_path, "s1", 1, 0, 0, None)
    books.count_transfer(tmp_path, {"s1": (700, 30), "s2": (1, 1)})
    books.count_transfer(tmp_path, {"s1": (1, 2)})
    assert books.run_usage(tmp_path, "s1") == {
        "bytes_in": 701 + 980,  # into the sandbox: proxy downloads and gateway answers
        "bytes_out": 32 + 201,  # out of it: proxy uploads and gateway requests
        "requests": 3,
        "input_tokens": 20,
        "output_tokens": 4,
        "status": {"200": 1, "529": 1, "none": 1},
    }
    # The counters themselves only grow (metrics read them).
    assert json.loads((tmp_path / "counters" / "s1.json").read_text())["requests"] == 4


def test_requests_without_any_reported_tokens_give_unknown_tokens(tmp_path: Path) -> None:
    books.start_run(tmp_path, "s1")
    books.count_call(tmp_path, "s1", 10, 10, 200, None)
    usage = books.run_usage(tmp_path, "s1")
    assert usage["requests"] == 1 and usage["input_tokens"] is None and usage["output_tokens"] is None


def test_a_run_never_started_counts_everything_and_forget_drops_it(tmp_path: Path) -> None:
    books.count_transfer(tmp_path, {"s1": (9, 4)})
    assert books.run_usage(tmp_path, "s1")["bytes_in"] == 9
    books.start_run(tmp_path, "s1")
    books.forget_run(tmp_path, "s1")
    assert not (tmp_path / "runs" / "s1.json").exists() and not (tmp_path / "transfer" / "s1.json").exists()
    assert books.run_usage(tmp_path, "s1")["bytes_in"] == 0
    books.forget_run(tmp_path, "never-seen")  # nothing to drop is fine


def test_unreadable_files_count_as_empty(tmp_path: Path) -> None:
    for folder in ("counters", "transfer", "runs"):
        (tmp_path / folder).mkdir()
        (tmp_path / folder / "s1.json").write_text("[1]" if folder != "runs" else "{broken")
    assert books.run_usage(tmp_path, "s1")["bytes_in"] == 0
    (tmp_path / "runs" / "s1.json").write_text(json.dumps({"counters": [], "transfer": {"bytes_in": "x"}}))
    assert books.run_usage(tmp_path, "s1")["bytes_in"] == 0
    books.count_transfer(tmp_path, {"s1": (3, 0)})  # a file that is no JSON object is counted afresh
    assert books.read_counts(tmp_path, "s1") == {"counters": {}, "transfer": {"bytes_in": 3, "bytes_out": 0}}


def test_a_counter_that_went_backwards_counts_zero(tmp_path: Path) -> None:
    books.count_transfer(tmp_path, {"s1": (100, 100)})
    books.start_run(tmp_path, "s1")
    (tmp_path / "transfer" / "s1.json").write_text(json.dumps({"bytes_in": 40, "bytes_out": 100}))
    usage = books.run_usage(tmp_path, "s1")
    assert usage["bytes_in"] == 0 and usage["bytes_out"] == 0


def test_counting_into_an_unwritable_place_is_logged_not_raised(tmp_path: Path) -> None:
    (tmp_path / "transfer").write_text("a file where the folder belongs")
    books.count_transfer(tmp_path, {"s1": (1, 1)})
    books.count_call(tmp_path / "transfer", "s1", 1, 1, 200)


def test_a_line_of_exactly_what_it_holds_is_still_read_past() -> None:
    found = TokenTally("text/event-stream", None)
    found.feed(b"x" * MAX_HELD)  # an unfinished line of exactly MAX_HELD bytes: held, not given up
    found.feed(b"\n" + events({"type": "message_delta", "usage": {"output_tokens": 3}}))
    assert found.tokens() == (0, 3)


def test_reported_zeros_are_known_zeros() -> None:
    zeros = json.dumps({"usage": {"input_tokens": 0, "output_tokens": 0}}).encode()
    assert tally(zeros, "application/json").tokens() == (0, 0)


def test_a_json_answer_of_exactly_what_it_holds_is_read() -> None:
    head = json.dumps({**MESSAGE, "pad": ""}).encode()
    body = head.replace(b'"pad": ""', b'"pad": "' + b"p" * (MAX_HELD - len(head)) + b'"')
    assert len(body) == MAX_HELD
    assert tally(body, "application/json", piece=65536).tokens() == (12, 7)


def test_a_data_line_without_a_space_after_the_colon_is_read() -> None:
    body = b'data:{"type": "message_delta", "usage": {"output_tokens": 4}}\n\n'
    assert tally(body, "text/event-stream").tokens() == (0, 4)


def test_the_first_counts_are_exact_and_the_folders_private(tmp_path: Path) -> None:
    books.count_call(tmp_path, "s1", 5, 7, 200, (3, 2))
    assert books.read_counts(tmp_path, "s1")["counters"] == {
        "requests": 1,
        "bytes_in": 5,
        "bytes_out": 7,
        "status": {"200": 1},
        "tokened": 1,
        "input_tokens": 3,
        "output_tokens": 2,
    }
    books.start_run(tmp_path / "nested" / "state", "s1")  # made with its parents
    assert (tmp_path / "nested" / "state" / "runs").stat().st_mode & 0o777 == 0o700
    assert (tmp_path / "counters" / "s1.json").stat().st_mode & 0o777 == 0o600
