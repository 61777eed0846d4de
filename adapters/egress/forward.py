"""A port forwarder: what ``url(port)`` of a Docker sandbox points at.

It runs in a container of its own, on a normal bridge (where the engine publishes its port on the host's
loopback) and on the sandbox's internal network, and copies each connection to the sandbox's address.
The sandbox gets no route out of it: the forwarder only ever connects to that one address and port.
"""

from __future__ import annotations

import socket
import threading

from .proxy import relay

LISTEN_PORT = 18080


def serve(target_host: str, target_port: int, listen_port: int = LISTEN_PORT) -> None:
    server = socket.create_server(("0.0.0.0", listen_port), backlog=128)
    print(f"forwarding :{listen_port} -> {target_host}:{target_port}", flush=True)
    while True:
        client, _ = server.accept()
        threading.Thread(target=_one, args=(client, target_host, target_port), daemon=True).start()


def _one(client: socket.socket, host: str, port: int) -> None:
    with client:
        try:
            upstream = socket.create_connection((host, port), timeout=10)
        except OSError:
            return  # nothing listens there (yet): the client sees the connection close
        with upstream:
            upstream.settimeout(None)
            relay(client, upstream)
