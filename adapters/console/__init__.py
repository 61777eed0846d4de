"""The read-only web console (`sandboxctl console`, docs/console.md): Fleet, Sandbox, Audit and Live
pages over the log, as an ASGI app a backend can mount. Needs the ``console`` extra (Starlette)."""

from sandbox_lifecycle.adapters.console.app import HeadSource, create_app

__all__ = ["HeadSource", "create_app"]
