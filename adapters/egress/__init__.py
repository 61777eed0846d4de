"""The egress point: what runs between a sandbox and the outside (proxy, model-API gateway).

Standard library only, relative imports only: the same files run inside the egress container with the
image's bare ``python3``, where ``sandbox_lifecycle`` is not installed.
"""
