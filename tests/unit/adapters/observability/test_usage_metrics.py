"""Recorded usage in Prometheus (adapters/observability/metrics.py): what was measured is added, what
was not adds nothing (never a made-up 0)."""

from __future__ import annotations

from prometheus_client import CollectorRegistry

from sandbox_lifecycle.adapters.observability.metrics import PrometheusObserver
from sandbox_lifecycle.core.usage import Usage


def test_each_measured_number_is_added_under_its_kind() -> None:
    registry = CollectorRegistry()
    observer = PrometheusObserver(registry)
    full = Usage(
        cpu_seconds=1.5,
        memory_peak_bytes=60_000_000,
        egress_bytes_in=1000,
        egress_bytes_out=20,
        model_requests=3,
        model_input_tokens=30,
        model_output_tokens=9,
        model_statuses={"200": 2, "529": 1},
    )
    observer.usage(kind="data-app", usage=full)
    observer.usage(kind="data-app", usage=full)
    value = registry.get_sample_value
    assert value("sandbox_usage_runs_total", {"kind": "data-app"}) == 2
    assert value("sandbox_usage_cpu_seconds_total", {"kind": "data-app"}) == 3.0
    assert value("sandbox_usage_memory_peak_bytes_count", {"kind": "data-app"}) == 2
    assert value("sandbox_usage_memory_peak_bytes_sum", {"kind": "data-app"}) == 120_000_000
    assert value("sandbox_usage_egress_bytes_total", {"kind": "data-app", "direction": "in"}) == 2000
    assert value("sandbox_usage_egress_bytes_total", {"kind": "data-app", "direction": "out"}) == 40
    assert value("sandbox_usage_model_requests_total", {"kind": "data-app", "status": "200"}) == 4
    assert value("sandbox_usage_model_requests_total", {"kind": "data-app", "status": "529"}) == 2
    assert value("sandbox_usage_model_tokens_total", {"kind": "data-app", "direction": "input"}) == 60
    assert value("sandbox_usage_model_tokens_total", {"kind": "data-app", "direction": "output"}) == 18


def test_unknown_numbers_add_nothing() -> None:
    registry = CollectorRegistry()
    PrometheusObserver(registry).usage(kind=None, usage=Usage(cpu_seconds=0.25))
    value = registry.get_sample_value
    assert value("sandbox_usage_runs_total", {"kind": "unknown"}) == 1
    assert value("sandbox_usage_cpu_seconds_total", {"kind": "unknown"}) == 0.25
    assert value("sandbox_usage_memory_peak_bytes_count", {"kind": "unknown"}) is None
    assert value("sandbox_usage_egress_bytes_total", {"kind": "unknown", "direction": "in"}) is None
    assert value("sandbox_usage_model_tokens_total", {"kind": "unknown", "direction": "input"}) is None
