"""A plain-HTTP request to a host the sandbox holds credentials for: sent on over TLS, headers added.

The sandbox asks for ``http://api.example.com/...`` through the proxy (its ``HTTP_PROXY``); the proxy
has decided with the sandbox's policy that ``api.example.com:443`` may be reached and connected to the
address it checked. Here the connection becomes TLS (the system's trust store, plus the deployment's
``credentials-ca.pem`` if the backend wrote one; the name is verified), the request goes out in origin
form with the proxy's own ``Host``, without any header the sandbox sent under a credential's name, with
the credential's headers added, and ``Connection: close``. The answer is relayed to the sandbox with
every credential value (and each of its words of 8 characters or more, the token after ``Bearer``)
replaced by as many ``*``: an origin that echoes the request (a debugging endpoint, an error page that
quotes the headers) shows the sandbox stars, not the secret. What this cannot see is an echo it cannot
read as bytes: compressed, encoded otherwise or split by the origin's own transfer coding — the
origin is trusted with the credential, and a service that hands it back transformed gives it away.

The proxy never follows a redirect: a ``Location`` goes back to the sandbox, whose next request is a
new one, to whatever host it names, with that host's credentials or none. A CONNECT tunnel is never
touched: what is inside is TLS the proxy cannot read, so nothing is added there.

Standard library only (see the package docstring).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket
import ssl
from collections.abc import Sequence

CA_FILE = "credentials-ca.pem"
# A word of a value this long or longer is redacted on its own too (``Bearer <token>``: the token).
MIN_WORD = 8
CHUNK = 65536


def upgraded_port(port: int) -> int:
    """The TLS port a plain-HTTP request to ``port`` goes to: 443 for the web's ports, else the same."""
    return 443 if port in (80, 443) else port


class Redactor:
    """Replaces secrets in a byte stream cut anywhere, keeping back only what could begin one."""

    def __init__(self, values: Sequence[str]) -> None:
        found = {v.encode() for v in values}
        found |= {w.encode() for v in values for w in v.split() if len(w) >= MIN_WORD}
        self._secrets = sorted(found, key=len, reverse=True)
        self._keep = max((len(s) for s in self._secrets), default=1) - 1
        self._pending = b""

    def feed(self, data: bytes) -> bytes:
        buffer = self._pending + data
        for secret in self._secrets:
            buffer = buffer.replace(secret, b"*" * len(secret))
        cut = max(0, len(buffer) - self._keep)
        self._pending = buffer[cut:]
        return buffer[:cut]

    def flush(self) -> bytes:
        rest, self._pending = self._pending, b""
        return rest


class TrustStore:
    """The verifying context for credentialed upstreams, rebuilt when the deployment's CA file changes."""

    def __init__(self, state_dir: str) -> None:
        self.ca_file = os.path.join(state_dir, CA_FILE)
        self._stamp: tuple[int, int] | None = None
        self._context: ssl.SSLContext | None = None

    def context(self) -> ssl.SSLContext:
        try:
            st = os.stat(self.ca_file)
            stamp: tuple[int, int] | None = (st.st_mtime_ns, st.st_size)
        except FileNotFoundError:
            stamp = None
        if self._context is None or stamp != self._stamp:
            context = ssl.create_default_context()
            if stamp is not None:
                context.load_verify_locations(cafile=self.ca_file)
            self._context, self._stamp = context, stamp
        return self._context


def request_head(
    method: bytes,
    path: bytes,
    version: bytes,
    sent: list[tuple[bytes, bytes]],
    host: str,
    port: int,
    credentials: Sequence[tuple[str, str]],
) -> bytes:
    """The head sent upstream: the sandbox's end-to-end headers, less any under a credential's name,
    then the credentials, our Host and ``Connection: close``. ``sent`` is already free of hop-by-hop
    and proxy headers (the proxy's filter)."""
    replaced = {name.lower().encode() for name, _ in credentials}
    lines = [method + b" " + path + b" " + version]
    lines += [name + b": " + value for name, value in sent if name.lower() not in replaced]
    lines += [f"{name}: {value}".encode("ascii") for name, value in credentials]
    authority = host if port == 443 else f"{host}:{port}"
    lines += [b"Host: " + authority.encode("idna"), b"Connection: close"]
    return b"\r\n".join(lines) + b"\r\n\r\n"


class UpstreamTLSFailed(Exception):
    """The TLS handshake with the upstream failed (untrusted certificate, wrong name, no TLS there)."""


async def exchange(
    client: socket.socket,
    upstream: socket.socket,
    context: ssl.SSLContext,
    host: str,
    head: bytes,
    body: bytes,
    body_left: int,
    credentials: Sequence[tuple[str, str]],
    idle_s: float,
) -> int:
    """TLS to the upstream over the connected ``upstream``, send the request (``body`` and then
    ``body_left`` more bytes from the client), relay the redacted answer until the upstream closes.
    Returns the bytes relayed. UpstreamTLSFailed before anything was sent."""
    loop = asyncio.get_running_loop()
    try:
        async with asyncio.timeout(idle_s):
            reader, writer = await asyncio.open_connection(
                sock=upstream, ssl=context, server_hostname=host, limit=CHUNK
            )
    except (ssl.SSLError, ssl.CertificateError) as exc:
        raise UpstreamTLSFailed(getattr(exc, "reason", None) or type(exc).__name__) from None
    relayed = 0
    try:
        writer.write(head + body)
        left = body_left
        while left > 0:
            async with asyncio.timeout(idle_s):
                piece = await loop.sock_recv(client, min(CHUNK, left))
            if not piece:
                return 0  # the client left before its body was through: nothing to answer
            writer.write(piece)
            left -= len(piece)
            await writer.drain()
        await writer.drain()
        redactor = Redactor([value for _, value in credentials])
        while True:
            async with asyncio.timeout(idle_s):
                piece = await reader.read(CHUNK)
            out = redactor.feed(piece) if piece else redactor.flush()
            if out:
                await loop.sock_sendall(client, out)
                relayed += len(out)
            if not piece:
                return relayed
    finally:
        writer.close()
        with contextlib.suppress(Exception):
            await writer.wait_closed()
