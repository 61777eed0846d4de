from tests.agent.conftest import host_claude, model

__all__ = ["host_claude", "model"]
