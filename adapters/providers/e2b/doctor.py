"""The E2B provider's doctor checks: its templates, and the model gateway when one is configured.

``CHECKS`` run after the provider check; ``SLOTS`` answer the doctor's named slots (see
``entrypoints.cli.doctor``). E2B keeps each sandbox's allow-list itself, so there is no egress point.
"""

from __future__ import annotations

from sandbox_lifecycle.adapters.gateway.checks import check_gateway_at
from sandbox_lifecycle.adapters.observability.health import NOT_CONFIGURED, OK, WARN, Check, CheckFn, Context
from sandbox_lifecycle.adapters.providers.e2b.settings import E2BSettings


def _own(ctx: Context) -> E2BSettings:
    own: E2BSettings = ctx.settings.provider_settings["e2b"]
    return own


def check_templates(ctx: Context) -> Check:
    templates = ", ".join(f"{k}={t}" for k, t in sorted(_own(ctx).templates.items()))
    return Check(
        "templates",
        WARN,
        f"not looked up ({templates}); a missing template fails the first create naming it",
        "build them with the E2B CLI if a create reports the template missing",
    )


def check_egress_point(ctx: Context) -> Check:
    return Check("egress point", OK, "kept by E2B (each sandbox's allow-list is set on create)")


def check_gateway(ctx: Context) -> Check:
    """With SANDBOX_GATEWAY_PUBLIC_URL: the gateway answers there and reads this host's state dir."""
    own = _own(ctx)
    if own.gateway_url is None:
        return Check(
            "gateway",
            NOT_CONFIGURED,
            "off: E2B sandboxes hold ANTHROPIC_API_KEY themselves",
            "set SANDBOX_GATEWAY_PUBLIC_URL and run `sandboxctl gateway` to keep the key out of sandboxes",
        )
    return check_gateway_at(own.gateway_url, own.gateway_state_dir or ctx.settings.egress_state_dir)


CHECKS: tuple[CheckFn, ...] = (check_templates,)
SLOTS: dict[str, CheckFn] = {"egress point": check_egress_point, "gateway": check_gateway}
