"""Changing what a sandbox may reach while it lives (``SandboxService.set_egress``).

The log is the policy: ``EgressChanged`` records who set which allow-list, when and why (None: back to
the kind's own), and the last one is the sandbox's policy from then on. The order is record, then
apply: an allow-list the log does not show is never in force, and an apply that fails after the record
is made good by calling again with the same list (applying is idempotent) or by the next resume, which
applies the log's policy to the new instance before the resume is recorded (``Kernel._drive_resume``).
A suspended sandbox may be changed too: the change is recorded and takes effect when it resumes.
"""

from __future__ import annotations

from collections.abc import Sequence

from sandbox_lifecycle.core import lifecycle as lc
from sandbox_lifecycle.core import sandbox as sb
from sandbox_lifecycle.core.errors import EgressRefused
from sandbox_lifecycle.core.ids import random_id
from sandbox_lifecycle.core.kernel import Kernel


def set_egress(
    kernel: Kernel, sandbox_id: str, allow: Sequence[str] | None, reason: str, actor: str
) -> sb.Sandbox:
    """Record ``allow`` (None: the kind's allow-list) as the sandbox's policy and put it in force on its
    live instance. EgressRefused, with nothing recorded, when the provider's check refuses an entry."""
    if isinstance(allow, str):
        raise EgressRefused(sandbox_id, "allow is a list of hosts, not one string")
    checked: tuple[str, ...] | None = None
    if allow is not None:
        try:
            checked = kernel.provider.check_egress(list(allow))
        except ValueError as exc:
            raise EgressRefused(sandbox_id, str(exc)) from exc
    _, state = kernel.run(
        sandbox_id, lambda _: sb.SetEgress(allow=checked, actor=actor, reason=reason), random_id()
    )
    # Applied even when nothing new was recorded: a retry after a failed apply puts the log's policy
    # in force. Two callers may apply in the other order than they recorded; so each one, once it has
    # applied, reads the log again and applies what it says now, until that is what it applied: the last
    # apply in time is then the log's latest.
    for _ in range(MAX_APPLIES):
        if state.status not in lc.LIVE or state.provider_ref is None or state.kind is None:
            return state
        kernel.provider.set_egress(state.id, state.provider_ref, state.kind, state.egress_allow)
        now = kernel.load(sandbox_id)
        if (now.egress_allow, now.provider_ref) == (state.egress_allow, state.provider_ref):
            return now
        state = now
    return state


# How many times one call re-applies a policy changed under it before it leaves the rest to that change's
# own caller (who applies and checks after it).
MAX_APPLIES = 5
