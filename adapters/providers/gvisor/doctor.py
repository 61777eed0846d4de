"""The gVisor provider's doctor checks: the Docker provider's (engine, images, egress point) and the
``runsc`` runtime as the engine reports it (registered, its arguments, the binary's version)."""

from __future__ import annotations

from sandbox_lifecycle.adapters.observability.health import Check, CheckFn, Context
from sandbox_lifecycle.adapters.providers.docker import doctor as docker_doctor
from sandbox_lifecycle.adapters.providers.gvisor.runtime import doctor_check


def check_runtime(ctx: Context) -> Check:
    status, detail, fix = doctor_check()
    return Check("runtime", status, detail, fix)


CHECKS: tuple[CheckFn, ...] = (*docker_doctor.CHECKS, check_runtime)
SLOTS: dict[str, CheckFn] = dict(docker_doctor.SLOTS)
