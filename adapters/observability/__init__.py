"""Metrics (Prometheus) and structured logs: adapters of core/observe.py."""
