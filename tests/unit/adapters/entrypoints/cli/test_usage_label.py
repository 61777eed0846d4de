"""A recorded run's usage in `sandboxctl history` (row_values.event_label): one short line, and a number
not measured shown as ``?``, never as 0."""

from __future__ import annotations

from types import SimpleNamespace

from sandbox_lifecycle.adapters.entrypoints.cli.row_values import event_label


def test_a_run_in_one_line() -> None:
    data = {
        "cpu_seconds": 1.314,
        "memory_peak_bytes": 67_321_856,
        "egress_bytes_in": 3_145_852,
        "egress_bytes_out": 125,
        "model_requests": 3,
        "model_input_tokens": 194,
        "model_output_tokens": 17,
    }
    entry = SimpleNamespace(type="UsageRecorded", data=data)
    assert event_label(entry) == "UsageRecorded cpu=1.31s mem=67.3MB in=3.1MB out=125B model=3 tok=194/17"


def test_unknowns_are_question_marks_and_zeros_stay_zeros() -> None:
    entry = SimpleNamespace(
        type="UsageRecorded", data={"cpu_seconds": 0.0, "egress_bytes_in": 1500, "egress_bytes_out": 999}
    )
    assert event_label(entry) == "UsageRecorded cpu=0.00s mem=? in=1.5kB out=999B model=? tok=?/?"
    zero = SimpleNamespace(type="UsageRecorded", data={"model_requests": 0, "egress_bytes_in": 0})
    assert event_label(zero) == "UsageRecorded cpu=? mem=? in=0B out=? model=0 tok=?/?"
