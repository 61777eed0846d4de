"""What a client needs to reach a port of a sandbox: the URL and, where the provider guards its ports
with a token (E2B with public traffic off), the headers to send. See docs/providers.md, "Ports".

``SandboxService.url`` keeps returning the URL alone (its callers print it or open it); ``preview``
returns the URL and its headers. The header values are secrets: they are never in a repr, the event
log or a log line, and only the CLI verb that is explicitly asked (``sandboxctl url --show-token``)
prints them.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import field
from typing import TYPE_CHECKING, Any, Protocol

from sandbox_lifecycle.core.errors import Unsupported
from sandbox_lifecycle.core.ports import ProviderCapabilities
from sandbox_lifecycle.events.values import FieldValues, value_class

if TYPE_CHECKING:
    from sandbox_lifecycle.core.kernel import Kernel


@value_class
class Preview(FieldValues):
    """A port's URL and the headers every request to it must carry (empty: the URL alone reaches it)."""

    url: str
    # Secret values (a traffic access token): left out of the repr, so a log of the object shows none.
    headers: Mapping[str, str] = field(default_factory=dict, repr=False)


class _PreviewProvider(Protocol):
    name: str

    def url(self, ref: str, port: int) -> str: ...


def preview_of(provider: _PreviewProvider, ref: str, port: int) -> Preview:
    """The provider's own ``preview`` where it has one (E2B); otherwise its URL needs no header (Docker's
    loopback forwarder, the fake), so the preview is the URL alone."""
    own: Callable[[str, int], Preview] | None = getattr(provider, "preview", None)
    return own(ref, port) if own is not None else Preview(provider.url(ref, port))


class PreviewCalls:
    """``url`` and ``preview`` of SandboxService (it inherits them), kept beside the preview's value type."""

    kernel: Kernel
    _on_live: Callable[..., Any]

    def url(self, sandbox_id: str, port: int) -> str:
        """A URL on which this host reaches a server listening on ``port`` in the sandbox; Unsupported
        on a provider without ports."""
        provider = self.kernel.provider
        url: str = self._on_port(sandbox_id, port, "url", lambda ref: provider.url(ref, port))
        return url

    def preview(self, sandbox_id: str, port: int) -> Preview:
        """The URL of ``port`` in the sandbox and the headers a request to it needs (see the module)."""
        provider = self.kernel.provider
        preview: Preview = self._on_port(
            sandbox_id, port, "preview", lambda ref: preview_of(provider, ref, port)
        )
        return preview

    def _on_port(self, sandbox_id: str, port: int, verb: str, call: Callable[[str], Any]) -> Any:
        capabilities: ProviderCapabilities = self.kernel.capabilities
        if not capabilities.ports:
            raise Unsupported(self.kernel.provider.name, f"reaching a port in the sandbox ({verb})")
        if not 0 < port < 65536:
            raise ValueError(f"port must be 1-65535, got {port!r}")
        return self._on_live(sandbox_id, call)
