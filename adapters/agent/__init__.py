"""The agent inside a sandbox: how `claude` is run there, the events it streams, and the scripted model.

May import ``core`` and ``events``; runs on the host (the sandbox sees only the agent CLI and its prompt).
"""
