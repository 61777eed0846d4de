"""Metrics (Prometheus), structured logs and transfer progress: adapters of core/observe.py.

May import ``core`` and ``events``; imported by providers, snapshot stores and entry points.
"""
