"""The egress point of Docker sandboxes: an HTTP proxy enforcing each sandbox's allow-list, the model-API
gateway, and the port forwarders behind ``url(port)``.

Standard library only, relative imports only: the same files run inside the egress container with the
sandbox image's python3 (the package directory is mounted there read-only and run as ``python3 -m
egress.main``), and on the host, where the provider imports :mod:`.policy` to write the policy files the
proxy reads.
"""
