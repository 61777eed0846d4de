"""The domain: the sandbox's state machine, the one writer that drives it, and the ports it needs.

What lives here: the transition table and the decider (``lifecycle``, ``sandbox``), the service that
writes every change as an event (``service``, ``async_service`` and the helpers they sit on), the ports
a provider, snapshot store, clock and observer implement (``ports``), errors, capacity, pools and timers.

May import: the standard library, ``transitions`` and ``sandbox_lifecycle.events``. Never
``sandbox_lifecycle.adapters``: adapters implement the ports; ``composition`` wires them in.
"""
