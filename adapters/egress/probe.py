"""The egress point's health check: a request through the proxy's real path, not a side endpoint.

It connects to the proxy's port and asks it to CONNECT to a name that can never be allowed. Answering
means the accept loop is alive, a connection was admitted, its head read and parsed strictly, its source
looked up among the policies, and a refusal written (``403`` with the proxy's own refusal header). A
wedged or dead proxy, or one that no longer accepts, fails it within the timeout. It runs on the host
(to the egress container's bridge address) or inside the container (``python3 -m egress.probe``).
"""

from __future__ import annotations

import socket
import sys
import time

PROBE_HOST = "egress-health-probe.invalid"
_REQUEST = f"CONNECT {PROBE_HOST}:443 HTTP/1.1\r\nHost: {PROBE_HOST}:443\r\n\r\n".encode()


def probe(host: str, port: int, timeout: float = 2.0) -> str | None:
    """None if the proxy at host:port answered as it should within ``timeout``; else why not."""
    deadline = time.monotonic() + timeout
    try:
        with socket.create_connection((host, port), timeout=timeout) as sock:
            sock.sendall(_REQUEST)
            answer = b""
            while b"\r\n\r\n" not in answer and len(answer) < 65536:
                sock.settimeout(max(0.01, deadline - time.monotonic()))
                chunk = sock.recv(4096)
                if not chunk:
                    break
                answer += chunk
    except TimeoutError:
        return f"no answer from the proxy at {host}:{port} within {timeout:g}s"
    except OSError as exc:
        return f"cannot reach the proxy at {host}:{port}: {exc.strerror or type(exc).__name__}"
    status = answer.split(b"\r\n", 1)[0]
    if status.startswith(b"HTTP/1.1 403 ") and b"\r\nx-sandbox-egress: refused\r\n" in answer.lower():
        return None
    return f"the proxy at {host}:{port} answered {status[:80]!r}, not its refusal"


if __name__ == "__main__":
    failed = probe("127.0.0.1", int(sys.argv[1]) if len(sys.argv) > 1 else 3128)
    print(failed or "ok")
    sys.exit(1 if failed else 0)
