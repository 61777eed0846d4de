"""An HTTP(S) origin for tests that records the headers of every request it got.

``/echo`` answers with the request's headers in its body (what a debugging endpoint or a chatty error
page does), ``/redirect`` with a 302 to ``location``; anything else with ``ok``.
"""

from __future__ import annotations

import contextlib
import http.server
import ssl
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field

from tests.support.tls_ca import ThrowawayCA


@dataclass
class Origin:
    port: int
    seen: list[tuple[str, str, list[tuple[str, str]]]] = field(default_factory=list)  # method, path, headers
    location: str = ""

    def headers(self, name: str) -> list[str]:
        """Every value of header ``name`` the origin received, over all requests."""
        return [v for _, _, hs in self.seen for k, v in hs if k.lower() == name.lower()]


@contextlib.contextmanager
def recording_origin(address: str, ca: ThrowawayCA | None = None) -> Iterator[Origin]:
    """Serve on ``address`` (a free port), over TLS with ``ca``'s server certificate when given."""
    origin = Origin(0)

    class Handler(http.server.BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def _answer(self) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            body = self.rfile.read(length) if length else b""
            origin.seen.append((self.command, self.path, list(self.headers.items())))
            status, extra, data = 200, [], b"ok " + body
            if self.path.startswith("/echo"):
                data = "".join(f"{k}: {v}\n" for k, v in self.headers.items()).encode()
            elif self.path.startswith("/redirect"):
                status, extra, data = 302, [("Location", origin.location)], b""
            self.send_response(status)
            for name, value in extra:
                self.send_header(name, value)
            self.send_header("Content-Length", str(len(data)))
            self.send_header("Connection", "close")
            self.end_headers()
            self.wfile.write(data)

        do_GET = do_POST = _answer

        def log_message(self, *args: object) -> None:
            pass

    server = http.server.ThreadingHTTPServer((address, 0), Handler)
    if ca is not None:
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.load_cert_chain(ca.cert, ca.key)
        server.socket = context.wrap_socket(server.socket, server_side=True)
    origin.port = int(server.server_address[1])
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield origin
    finally:
        server.shutdown()
        server.server_close()
