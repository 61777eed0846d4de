"""Reading a Docker run's usage from the engine's answers (adapters/providers/docker/metering.py), with
the engine's answers given; the real engine's are in tests/integration/.../docker/test_usage.py."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import docker.errors
import pytest

from sandbox_lifecycle.adapters.egress import bookkeeping as books
from sandbox_lifecycle.adapters.providers.docker import metering

STATS_V1 = {
    "cpu_stats": {"cpu_usage": {"total_usage": 1_500_000_000}},
    "memory_stats": {"usage": 40_000_000, "max_usage": 66_000_000},
}
# cgroup v2: no max_usage
STATS_V2 = {"cpu_stats": {"cpu_usage": {"total_usage": 250_000_000}}, "memory_stats": {"usage": 9}}
INSPECTED = {"State": {"StartedAt": "2026-12-08T00:26:49.566484123Z"}}


class Api:
    def __init__(self, stats: Any = None, fail: bool = False, image: Any = None) -> None:
        self._stats, self._fail, self._image = stats, fail, image
        self.asked: list[tuple[str, bool, bool]] = []

    def stats(self, ref: str, stream: bool, one_shot: bool) -> Any:
        self.asked.append((ref, stream, one_shot))
        if self._fail:
            raise docker.errors.APIError("engine down")
        return self._stats

    def inspect_image(self, image: str) -> Any:
        if self._image is None:
            raise docker.errors.ImageNotFound(image)
        return self._image


def test_cpu_and_peak_memory_from_cgroup_v1_stats() -> None:
    assert metering.cpu_seconds(STATS_V1) == 1.5
    assert metering.memory_peak(STATS_V1) == 66_000_000


def test_cgroup_v2_has_no_peak_and_missing_numbers_are_none() -> None:
    assert metering.cpu_seconds(STATS_V2) == 0.25
    assert metering.memory_peak(STATS_V2) is None
    assert metering.cpu_seconds({}) is None and metering.memory_peak({}) is None
    assert metering.cpu_seconds({"cpu_stats": None}) is None
    assert metering.cpu_seconds({"cpu_stats": {"cpu_usage": {"total_usage": True}}}) is None
    assert metering.memory_peak({"memory_stats": {"max_usage": 0}}) is None
    assert metering.memory_peak({"memory_stats": {"max_usage": "1"}}) is None
    assert metering.cpu_seconds({"cpu_stats": {"cpu_usage": {"total_usage": 0}}}) == 0.0


def test_the_start_is_read_to_the_microsecond() -> None:
    assert metering.started_at(INSPECTED) == datetime(2026, 12, 8, 0, 26, 49, 566484, tzinfo=UTC)
    assert metering.started_at({"State": {"StartedAt": "2026-12-08T00:26:49Z"}}) == datetime(
        2026, 12, 8, 0, 26, 49, tzinfo=UTC
    )
    assert metering.started_at({"State": {"StartedAt": "2026-12-08T01:26:49.5+01:00"}}) == datetime(
        2026, 12, 8, 0, 26, 49, 500000, tzinfo=UTC
    )


@pytest.mark.parametrize(
    "inspected",
    [
        {},
        {"State": None},
        {"State": {"StartedAt": ""}},
        {"State": {"StartedAt": "0001-01-01T00:00:00Z"}},
        {"State": {"StartedAt": "yesterday"}},
    ],
)
def test_no_start_is_none(inspected: dict[str, Any]) -> None:
    assert metering.started_at(inspected) is None


def test_measure_joins_the_engine_and_the_egress_points_numbers(tmp_path: Path) -> None:
    books.start_run(tmp_path, "s1")
    books.count_transfer(tmp_path, {"s1": (100, 20)})
    books.count_call(tmp_path, "s1", 5, 50, 200, (7, 2))
    api = Api(STATS_V1)
    usage = metering.measure(api, str(tmp_path), "s1", "ref1", INSPECTED)
    assert api.asked == [("ref1", False, True)]  # one sample, not a stream
    assert usage.cpu_seconds == 1.5 and usage.memory_peak_bytes == 66_000_000
    assert usage.since == metering.started_at(INSPECTED)
    assert (usage.egress_bytes_in, usage.egress_bytes_out) == (150, 25)
    assert (usage.model_requests, usage.model_input_tokens, usage.model_output_tokens) == (1, 7, 2)
    assert usage.model_statuses == {"200": 1}


@pytest.mark.parametrize("api", [Api(fail=True), Api(None)])
def test_without_the_engines_stats_the_egress_numbers_remain(
    tmp_path: Path, api: Api, caplog: pytest.LogCaptureFixture
) -> None:
    books.count_transfer(tmp_path, {"s1": (3, 4)})
    usage = metering.measure(api, str(tmp_path), "s1", "ref1", {})
    said = "could not read the stats of sandbox s1: APIError" in caplog.text
    assert said == api._fail  # a failure is said; an empty answer is not one
    assert usage.cpu_seconds is None and usage.memory_peak_bytes is None and usage.since is None
    assert usage.egress_bytes_in == 3 and usage.measured


def test_image_version_is_the_images_id() -> None:
    assert metering.image_version(Api(image={"Id": "sha256:abc"}), "img") == "sha256:abc"
    assert metering.image_version(Api(image=None), "img") is None
    assert metering.image_version(Api(image={"Id": ""}), "img") is None
    assert metering.image_version(Api(image={}), "img") is None
    assert metering.image_version(Api(image=["sha256:abc"]), "img") is None
