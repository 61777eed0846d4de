"""Prometheus metrics: the core's Observer on prometheus_client, plus collectors read at scrape time.

Mounting them in an application (a backend that already serves /metrics)::

    from prometheus_client import REGISTRY
    from sandbox_lifecycle.adapters.observability.metrics import instrument

    service = sandbox_lifecycle.connect()
    instrument(service, registry=REGISTRY)      # or any CollectorRegistry the app exposes

``sandboxctl scheduler --metrics-port N`` does the same on a registry of its own and serves it.

What is counted where: transitions, provider calls, snapshots, timer lag and orphans are counted by the
process that did them (each replica its own; sum them across replicas). Live sandboxes, the oldest
overdue deadline and the gateway's requests are read from shared state when scraped, so every replica
reports the same values: aggregate them with ``max``, not ``sum``.
"""

from __future__ import annotations

import json
import logging
from collections import Counter as Tally
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Histogram
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from sandbox_lifecycle.core import lifecycle
from sandbox_lifecycle.core.usage import Usage

log = logging.getLogger("sandbox_lifecycle.metrics")

# Provider calls span a file stat (milliseconds) to a snapshot of a large workspace (minutes).
_SECONDS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600)
_BYTES = tuple(float(4**n * 1024) for n in range(1, 12))  # 4 KiB .. 4 GiB
_LAG = (0.01, 0.05, 0.1, 0.5, 1, 2, 5, 10, 30, 60, 300, 900, 3600)


class PrometheusObserver:
    """The core's :class:`~sandbox_lifecycle.core.observe.Observer`, on ``registry``."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self.registry = registry
        self.transitions = Counter(
            "sandbox_transitions",
            "State changes recorded by this process",
            ["from_state", "to_state", "reason"],
            registry=registry,
        )
        self.provider_seconds = Histogram(
            "sandbox_provider_call_seconds",
            "Duration of provider calls",
            ["operation", "outcome"],
            buckets=_SECONDS,
            registry=registry,
        )
        self.snapshot_bytes = Histogram(
            "sandbox_snapshot_bytes",
            "Size of workspace snapshots taken (upload) and restored (download)",
            ["direction"],
            buckets=_BYTES,
            registry=registry,
        )
        self.snapshot_seconds = Histogram(
            "sandbox_snapshot_seconds",
            "Duration of snapshot suspends (upload) and resumes (download)",
            ["direction"],
            buckets=_SECONDS,
            registry=registry,
        )
        self.timer_lag = Histogram(
            "sandbox_timer_lag_seconds",
            "How late a due deadline (idle, retention, lease) was handled",
            ["kind"],
            buckets=_LAG,
            registry=registry,
        )
        self.orphans = Counter(
            "sandbox_orphans_removed",
            "Leftovers the reconciler removed",
            ["what"],
            registry=registry,
        )
        # What sandboxes used, counted when a run's usage is recorded (at its suspend or destroy); a
        # number the provider could not measure adds nothing, so a rate covers the measured runs only.
        self.usage_runs = Counter(
            "sandbox_usage_runs", "Runs whose usage was recorded", ["kind"], registry=registry
        )
        self.usage_cpu = Counter(
            "sandbox_usage_cpu_seconds", "CPU time sandboxes used", ["kind"], registry=registry
        )
        self.usage_memory = Histogram(
            "sandbox_usage_memory_peak_bytes",
            "Peak memory of each recorded run",
            ["kind"],
            buckets=_BYTES,
            registry=registry,
        )
        self.usage_egress = Counter(
            "sandbox_usage_egress_bytes",
            "Bytes through the egress point, into (in) and out of (out) sandboxes",
            ["kind", "direction"],
            registry=registry,
        )
        self.usage_model_requests = Counter(
            "sandbox_usage_model_requests",
            "Calls through the model-API gateway, by the upstream's HTTP status",
            ["kind", "status"],
            registry=registry,
        )
        self.usage_tokens = Counter(
            "sandbox_usage_model_tokens",
            "Tokens the model reported for calls through the gateway (input, output)",
            ["kind", "direction"],
            registry=registry,
        )

    def transition(self, *, kind: str | None, from_state: str, to_state: str, reason: str) -> None:
        self.transitions.labels(from_state, to_state, reason).inc()

    def provider_call(self, operation: str, seconds: float, *, ok: bool) -> None:
        self.provider_seconds.labels(operation, "ok" if ok else "error").observe(seconds)

    def snapshot(self, direction: str, nbytes: int | None, seconds: float) -> None:
        if nbytes is not None:
            self.snapshot_bytes.labels(direction).observe(nbytes)
        self.snapshot_seconds.labels(direction).observe(seconds)

    def timer_fired(self, kind: str, lag_seconds: float) -> None:
        self.timer_lag.labels(kind).observe(lag_seconds)

    def orphan_removed(self, what: str) -> None:
        self.orphans.labels(what).inc()

    def usage(self, *, kind: str | None, usage: Usage) -> None:
        kind = kind or "unknown"
        self.usage_runs.labels(kind).inc()
        if usage.cpu_seconds is not None:
            self.usage_cpu.labels(kind).inc(usage.cpu_seconds)
        if usage.memory_peak_bytes is not None:
            self.usage_memory.labels(kind).observe(usage.memory_peak_bytes)
        for direction, nbytes in (("in", usage.egress_bytes_in), ("out", usage.egress_bytes_out)):
            if nbytes is not None:
                self.usage_egress.labels(kind, direction).inc(nbytes)
        for status, count in (usage.model_statuses or {}).items():
            self.usage_model_requests.labels(kind, status).inc(count)
        for direction, tokens in (("input", usage.model_input_tokens), ("output", usage.model_output_tokens)):
            if tokens is not None:
                self.usage_tokens.labels(kind, direction).inc(tokens)


class LogStateCollector(Collector):
    """Live sandboxes by state and kind, and how overdue the oldest deadline is, from the log's
    projections at scrape time (one query each)."""

    def __init__(self, store: Any, clock: Callable[[], datetime] = lambda: datetime.now(UTC)) -> None:
        self._store = store
        self._clock = clock

    def collect(self) -> Iterator[Metric]:
        live = GaugeMetricFamily(
            "sandbox_live", "Sandboxes not yet expired, by state and kind", labels=["state", "kind"]
        )
        counts = Tally(
            (r.state, r.kind) for r in self._store.list_sandboxes() if r.state != lifecycle.EXPIRED
        )
        for (state, kind), n in sorted(counts.items()):
            live.add_metric([state, kind], n)
        yield live
        due = self._store.next_deadline()
        overdue = max((self._clock() - due).total_seconds(), 0.0) if due is not None else 0.0
        yield GaugeMetricFamily(
            "sandbox_oldest_due_deadline_seconds",
            "How long the oldest deadline has been due and not handled (0: none overdue)",
            value=overdue,
        )


class GatewayCollector(Collector):
    """Model-gateway requests by HTTP status and bytes moved, summed over the per-sandbox counters files
    the gateway writes (``<state dir>/counters/<sandbox_id>.json``). Nothing when the directory is absent."""

    def __init__(self, state_dir: Path) -> None:
        self._counters = Path(state_dir) / "counters"

    def collect(self) -> Iterator[Metric]:
        if not self._counters.is_dir():
            return
        statuses: Tally[str] = Tally()
        moved = {"in": 0, "out": 0}
        for path in sorted(self._counters.glob("*.json")):
            try:
                data = json.loads(path.read_text(encoding="utf-8"))
                for status, n in dict(data.get("status", {})).items():
                    statuses[str(status)] += int(n)
                moved["in"] += int(data.get("bytes_in", 0))
                moved["out"] += int(data.get("bytes_out", 0))
            except (OSError, ValueError, TypeError, AttributeError) as exc:
                # Written by another process while being read, or removed: the next scrape counts it.
                log.debug("skipping gateway counters %s: %s", path.name, exc)
        requests = CounterMetricFamily(
            "sandbox_gateway_requests", "Model-gateway requests by HTTP status", labels=["status"]
        )
        for status, n in sorted(statuses.items()):
            requests.add_metric([status], n)
        yield requests
        nbytes = CounterMetricFamily(
            "sandbox_gateway_bytes", "Bytes through the model gateway", labels=["direction"]
        )
        for direction, n in moved.items():
            nbytes.add_metric([direction], n)
        yield nbytes


def instrument(
    service: Any, registry: CollectorRegistry | None = None, *, gateway_state_dir: Path | None = None
) -> PrometheusObserver:
    """Count ``service``'s work (a SandboxService or an AsyncSandboxService) on ``registry`` (a new
    one unless given; prometheus_client.REGISTRY to share the process's default). Call once, at start-up."""
    sync = getattr(service, "sync", service)
    observer = PrometheusObserver(registry if registry is not None else CollectorRegistry())
    sync.attach_observer(observer)
    observer.registry.register(LogStateCollector(sync.store, lambda: sync.clock()))
    if gateway_state_dir is not None:
        observer.registry.register(GatewayCollector(gateway_state_dir))
    return observer


def serve(registry: CollectorRegistry, port: int, host: str = "127.0.0.1") -> Any:
    """Serve ``registry`` at http://host:port/metrics from a daemon thread; returns the server."""
    # why here: the metrics extra is optional; only a process that serves metrics needs it
    from prometheus_client import start_http_server

    server, _thread = start_http_server(port, addr=host, registry=registry)
    return server
