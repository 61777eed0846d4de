"""Sandbox providers: E2B microVMs and local Docker containers, behind core.ports.SandboxProvider."""
