"""Everything that touches the world outside the domain, grouped by role:

- ``providers/``: implementations of ``core.ports.SandboxProvider`` (one folder per provider);
- ``snapshots/``: implementations of ``core.ports.SnapshotStore`` and the workspace archive format;
- ``egress/``: the program that runs inside the egress container (proxy, model-API gateway; stdlib only);
- ``gateway/``: the host side of that gateway (per-sandbox tokens and state);
- ``agent/``: the agent CLI run inside a sandbox, its event stream and the scripted model;
- ``observability/``: metrics, logs, progress reporting; ``audit/``: signed heads of the log;
- ``composition/``: the composition root (settings from the environment, ``bootstrap``);
- ``entrypoints/``: the programs a person or a supervisor starts (``sandboxctl``, scheduler, relay, rebuild).

May import ``core`` and ``events``; ``core`` and ``events`` never import from here.
"""
