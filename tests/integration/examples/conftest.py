from tests.support.fixtures.agent import host_claude, model

__all__ = ["host_claude", "model"]
