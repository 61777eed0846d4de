"""Signed statements of the log's head (Ed25519), the external anchor ``sandboxctl audit`` uses.

May import ``core.audit`` and ``events``; ``cryptography`` is imported only by the verbs that sign or verify.
"""
