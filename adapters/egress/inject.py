"""A plain-HTTP request to a host the sandbox holds credentials for: sent on over TLS, headers added.

The sandbox asks for ``http://api.example.com/...`` through the proxy (its ``HTTP_PROXY``); the proxy
has decided with the sandbox's policy that ``api.example.com:443`` may be reached and connected to the
address it checked. Here the connection becomes TLS (the system's trust store, plus the deployment's
``credentials-ca.pem`` if the backend wrote one; the name is verified), the request goes out in origin
form with the proxy's own ``Host``, without any header the sandbox sent under a credential's name, with
the credential's headers added, and ``Connection: close``. The answer is relayed to the sandbox with
every credential value (and each of its words of 8 characters or more, the token after ``Bearer``)
replaced by as many ``*`` (redact.py): an origin that echoes the request (a debugging endpoint, an error
page that quotes the headers) shows the sandbox stars, not the secret. So that every echo is read whole
and in clear, the sandbox's ``Accept-Encoding``, ``Range`` and ``If-Range`` never go along (the request
asks for ``Accept-Encoding: identity``), an answer with a content coding other than identity, a
transfer coding other than chunked or a 206 is refused (502, nothing of it relayed), and a chunked
answer is de-chunked, redacted and re-framed. What this cannot see is an echo transformed otherwise
(base64 in a JSON field, reversed) — the origin is trusted with the credential, and a service that
hands it back transformed gives it away.

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
from collections.abc import Awaitable, Callable, Sequence

from .redact import AnswerRefused, Redactor, check_answer, redact

CA_FILE = "credentials-ca.pem"
CHUNK = 65536
# Request headers the sandbox may not choose for a credentialed request: a coding or a slice of the
# answer the redaction could not read whole (a compressed echo, an echo in pieces shorter than a secret).
DROPPED = frozenset({b"accept-encoding", b"range", b"if-range"})


def upgraded_port(port: int) -> int:
    """The TLS port a plain-HTTP request to ``port`` goes to: 443 for the web's ports, else the same."""
    return 443 if port in (80, 443) else port


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
    """The head sent upstream: the sandbox's end-to-end headers, less any under a credential's name and
    its ``Accept-Encoding``, ``Range`` and ``If-Range`` (:data:`DROPPED`), then the credentials,
    ``Accept-Encoding: identity``, our Host and ``Connection: close``. ``sent`` is already free of
    hop-by-hop and proxy headers (the proxy's filter)."""
    replaced = {name.lower().encode() for name, _ in credentials} | DROPPED
    lines = [method + b" " + path + b" " + version]
    lines += [name + b": " + value for name, value in sent if name.lower() not in replaced]
    lines += [f"{name}: {value}".encode("ascii") for name, value in credentials]
    lines += [b"Accept-Encoding: identity"]
    authority = host if port == 443 else f"{host}:{port}"
    lines += [b"Host: " + authority.encode("idna"), b"Connection: close"]
    return b"\r\n".join(lines) + b"\r\n\r\n"


class UpstreamTLSFailed(Exception):
    """The TLS handshake with the upstream failed (untrusted certificate, wrong name, no TLS there)."""


async def _answer_head(reader: asyncio.StreamReader, idle_s: float) -> bytes:
    try:
        async with asyncio.timeout(idle_s):
            return await reader.readuntil(b"\r\n\r\n")
    except asyncio.LimitOverrunError:
        raise AnswerRefused("the upstream's answer head is too large") from None
    except asyncio.IncompleteReadError:
        raise AnswerRefused("the upstream closed before its answer head was through") from None


async def _relay_chunked(
    reader: asyncio.StreamReader,
    send: Callable[[bytes], Awaitable[int]],
    redactor: Redactor,
    idle_s: float,
) -> int:
    """De-chunk the answer's body, redact it, re-frame it: a secret split by the origin's chunk-size
    lines is seen whole, and only a carry-over window of the longest secret is held back. Malformed
    framing or an early end: what was redacted is sent, then the end. Returns the bytes sent."""
    sent = 0
    with contextlib.suppress(ValueError, asyncio.IncompleteReadError, asyncio.LimitOverrunError):
        while size := int((await asyncio.wait_for(reader.readuntil(b"\r\n"), idle_s)).split(b";")[0], 16):
            while size > 0:
                piece = await asyncio.wait_for(reader.readexactly(min(size, CHUNK)), idle_s)
                size -= len(piece)
                if out := redactor.feed(piece):
                    sent += await send(b"%x\r\n%s\r\n" % (len(out), out))
            if await asyncio.wait_for(reader.readexactly(2), idle_s) != b"\r\n":
                break
    if rest := redactor.flush():
        sent += await send(b"%x\r\n%s\r\n" % (len(rest), rest))
    trailers = b""
    with contextlib.suppress(asyncio.IncompleteReadError, asyncio.LimitOverrunError):
        for _ in range(100):  # bounded: at most this many trailer fields
            line = await asyncio.wait_for(reader.readuntil(b"\r\n"), idle_s)
            if line == b"\r\n":
                break
            trailers += line
    return sent + await send(b"0\r\n" + redact(trailers, redactor.secrets) + b"\r\n")


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

        async def send(out: bytes) -> int:
            await loop.sock_sendall(client, out)
            return len(out)

        for _ in range(10):  # interim (1xx) answers go along, redacted, before the final one
            answer_head = await _answer_head(reader, idle_s)
            chunked = check_answer(answer_head[:-4])
            relayed += await send(redact(answer_head, redactor.secrets))
            if answer_head[9:10] != b"1" or answer_head[9:12] == b"101":
                break
        if chunked:
            return relayed + await _relay_chunked(reader, send, redactor, idle_s)
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
