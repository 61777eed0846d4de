"""The E2B provider: a Firecracker microVM per sandbox, paused natively on suspend.

``PROVIDER`` is its registry entry (see ``adapters.providers.registry``): chosen by
``SANDBOX_PROVIDER=e2b`` (the default). This module and ``settings`` stay stdlib-only, for every command
imports them; the e2b SDK loads with ``provider`` when one is built.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from sandbox_lifecycle.adapters.composition.environ import EnvReader, Shared
from sandbox_lifecycle.adapters.providers.e2b.settings import E2BSettings, e2b_settings
from sandbox_lifecycle.adapters.providers.registry import Host, ProviderEntry

if TYPE_CHECKING:
    from sandbox_lifecycle.core.ports import SandboxProvider


class E2BEntry(ProviderEntry[E2BSettings]):
    name = "e2b"
    extra = "e2b"
    library = "e2b"
    label = "E2B"
    unreachable_fix = "set E2B_API_KEY to a valid key (https://e2b.dev/dashboard?tab=keys); check E2B_API_URL"
    native_snapshots = "kept by E2B (native pause)"
    doctor = "doctor"

    def parse(self, reader: EnvReader, shared: Shared) -> E2BSettings:
        return e2b_settings(reader, shared.idle_timeout, shared.deployment)

    def require(self, own: E2BSettings) -> None:
        own.require_key()

    def build(self, own: E2BSettings, host: Host) -> SandboxProvider:
        # Here, not at the top: the provider brings the e2b SDK (1.1 s measured), which every command would
        # pay for by importing this registry entry; the gateway's state comes with it.
        from sandbox_lifecycle.adapters.gateway.prepare import prepare_or_refuse
        from sandbox_lifecycle.adapters.providers.e2b.provider import E2BProvider

        if own.gateway_url:
            # Before any sandbox is handed a token the gateway would forward with.
            shared = host.shared
            prepare_or_refuse(shared.egress_state_dir, shared.anthropic_base_url, shared.anthropic_api_key)

        return E2BProvider(own, deployment=host.deployment)

    def secrets(self, own: E2BSettings) -> tuple[str, ...]:
        return (own.api_key, *own.sandbox_envs.values())

    def describe(self, own: E2BSettings) -> dict[str, str]:
        return {"e2b_model_gateway": own.gateway_url or "off (E2B sandboxes hold ANTHROPIC_API_KEY)"}


PROVIDER = E2BEntry()
