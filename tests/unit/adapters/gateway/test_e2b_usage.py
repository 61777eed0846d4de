"""An E2B sandbox's usage: its model calls through the gateway, counted per run; the rest is not measured
(None), and the kind's template names its image version. Through the real e2b SDK against the loopback
fake of E2B, with the real gateway (as in test_e2b_gateway.py)."""

from __future__ import annotations

from sandbox_lifecycle.adapters.providers.e2b.provider import E2BProvider, E2BSettings
from sandbox_lifecycle.core.ports import SnapshotInfo
from tests.support.fixtures.e2b import fake_env
from tests.unit.adapters.gateway.test_e2b_gateway import World, model_call, world  # noqa: F401


def test_model_calls_are_counted_per_run_and_the_rest_is_unknown(world: World) -> None:  # noqa: F811
    ref = world.provider.create("sbx1", "data-app")
    assert "event: message_stop" in model_call(world, ref)
    assert "event: message_stop" in model_call(world, ref)
    usage = world.provider.usage("sbx1", ref)
    assert usage is not None
    assert usage.model_requests == 2 and usage.model_statuses == {"200": 2}
    # The fake upstream's answers report no usage: tokens unknown, not 0.
    assert usage.model_input_tokens is None and usage.model_output_tokens is None
    assert usage.cpu_seconds is None and usage.memory_peak_bytes is None
    assert usage.egress_bytes_in is None and usage.egress_bytes_out is None

    snapshot = world.provider.suspend("sbx1", ref, "data-app", "unused")
    ref = world.provider.resume("sbx1", "data-app", SnapshotInfo(snapshot.key, None, None))
    fresh = world.provider.usage("sbx1", ref)
    assert fresh is not None and fresh.model_requests == 0 and fresh.model_statuses == {}
    assert fresh.model_input_tokens == 0  # no call this run: nothing used, known
    world.provider.destroy("sbx1", ref)


def test_without_the_gateway_nothing_is_measured_and_the_template_is_the_version(world: World) -> None:  # noqa: F811
    plain = E2BProvider(E2BSettings.from_env(fake_env(world.fake)))
    ref = plain.create("sbx2", "data-app")
    assert plain.usage("sbx2", ref) is None
    plain.destroy("sbx2", ref)
    settings = E2BSettings.from_env(fake_env(world.fake))
    assert plain.image_version("data-app") == settings.templates["data-app"]
    assert plain.image_version("no-such-kind") is None
