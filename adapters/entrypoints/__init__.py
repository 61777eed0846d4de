"""Programs a person or a supervisor starts: ``sandboxctl`` (``cli/``), the timer scheduler, the webhook
relay and the read-model rebuild.

Each builds its service through ``composition`` and holds no domain rules of its own. Nothing else in the
project imports from here.
"""
