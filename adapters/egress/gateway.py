"""The model-API gateway: a sandbox's calls come in with its token, go out with the real key.

A sandbox gets ``ANTHROPIC_BASE_URL`` pointing here and a per-sandbox token (see ``tokens``) as
``ANTHROPIC_API_KEY``. For each request the gateway

* reads the head strictly (``gateway_http``) and decides on the head alone, before reading a byte of the body:
  the token (``x-api-key``, or ``Authorization: Bearer``; unknown, malformed, revoked or used from
  another sandbox's network is a 401 with an Anthropic-shaped JSON error naming why), then the route
  (``routes``: model calls in normal form, or git's smart HTTP), then for git where it may connect
  (``outbound``: the proxy's policy);
* puts the real key from ``upstream.json`` where the token was, strips hop-by-hop headers, and forwards
  to the upstream (HTTPS with certificate verification; plain HTTP only if ``upstream.json`` says so,
  which the backend writes for loopback upstreams only);
* moves bodies piece by piece both ways (``relay``): server-sent events reach the sandbox when the model
  produces them, and a request body is held whole only when small and within its sandbox's share;
* touches ``activity/<sandbox id>`` (a model call is the sandbox's activity) and adds the request to
  ``counters/<sandbox id>.json``, with the tokens a model answer reports (``token_tally``).

Neither the key nor a token is ever logged or put in an error message. HTTP/1.1 only, keep-alive on
both sides (upstream connections are pooled, so a model call does not pay a TLS handshake each time).

Standard library only (see the package docstring).
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import logging
import os
import ssl
from collections.abc import Sequence
from pathlib import Path

from .bodies import Body, ClientBroke, Shares, take_body, upload
from .bookkeeping import count_call, touch_activity
from .gateway_http import (
    MAX_HEAD_BYTES,
    BadRequest,
    Request,
    content_length,
    is_chunked,
    parse_headers,
    parse_request_head,
    read_head,
    split_lines,
)
from .gateway_streams import (
    Pool,
    PoolKey,
    Progress,
    copy_chunked,
    copy_exact,
    copy_redacted,
    copy_until_close,
    discard,
)
from .outbound import Outbound, Refusal
from .policy import Resolver, system_resolver
from .redact import AnswerRefused, Redactor, check_answer, redact
from .routes import GIT_PREFIX, MODEL_CALLS, git_route, model_call
from .token_tally import TokenTally
from .tokens import MALFORMED, check_token
from .upstream import CREDENTIAL_HEADERS, Upstream, connection_tokens, filtered, parse_upstream

log = logging.getLogger("sandbox_lifecycle.egress.gateway")

# The Messages API refuses requests over 32 MB; a larger declared body is refused on the head.
MAX_BODY_BYTES = 64 * 1024 * 1024
# Connections one sandbox's network may hold open at once (a head being read costs up to 64 KiB each),
# and all other sources together: behind `sandboxctl gateway`'s reverse proxy every E2B sandbox arrives
# from one address, so a per-address bound there would be one for the whole deployment.
MAX_CONNECTIONS_PER_SOURCE = 64
MAX_CONNECTIONS_OTHERS = 1024
MAX_INTERIM_RESPONSES = 10
# What a refused request may still send before its connection closes (read and dropped, so the client
# reads the refusal rather than a reset).
DISCARD_BYTES = 1024 * 1024
DISCARD_SECONDS = 1.0
# Never sent with a credential the gateway adds: a compressed echo or a slice of one hides it from the
# redaction of the answer (as inject.DROPPED for the proxy).
UNREADABLE_ASKS = frozenset({"accept-encoding", "range", "if-range"})


def _error_body(kind: str, message: str) -> bytes:
    # The Messages API's error shape, so an SDK or the agent CLI shows the message as it would its own.
    return json.dumps({"type": "error", "error": {"type": kind, "message": message}}).encode()


def presented_token(request: Request) -> tuple[str | None, bool]:
    """The token and whether it came as a bearer token (then the key goes back the same way). The
    scheme is case-insensitive (RFC 9110 11.1); ``x-api-key`` wins when both are sent."""
    key = request.header("x-api-key")
    if key:
        return key, False
    scheme, _, value = (request.header("authorization") or "").partition(" ")
    if scheme.lower() == "bearer" and value.strip():
        return value.strip(), True
    return None, False


class Gateway:
    """Serves the gateway for one deployment's state directory (see the module docstring).

    ``upstream_override`` replaces the URL in ``upstream.json`` (the key still comes from there): tests
    point it at a loopback upstream. ``ssl_context`` replaces the default verifying context;
    ``resolver`` the system's name resolution for the git route (tests).
    """

    def __init__(
        self,
        state_dir: str | os.PathLike[str],
        *,
        upstream_override: str | None = None,
        ssl_context: ssl.SSLContext | None = None,
        connect_timeout: float = 10.0,
        idle_timeout: float = 120.0,
        read_timeout: float = 600.0,
        resolver: Resolver = system_resolver,
    ) -> None:
        self.state_dir = Path(state_dir)
        self._override = upstream_override
        self._ssl = ssl_context or ssl.create_default_context()
        self._connect_timeout = connect_timeout
        self._idle_timeout = idle_timeout
        # How long the upstream may stay silent (before its answer's head, or between two pieces of it)
        # before the call is given up: a long generation without streaming takes minutes.
        self._read_timeout = read_timeout
        self._outbound = Outbound(self.state_dir, resolver)
        self._pool = Pool()
        self._upstream: Upstream | None = None
        self._upstream_stamp: tuple[int, int] | None = None
        # Client connections being served, so closing the gateway ends idle keep-alive ones too.
        self._connections: set[asyncio.Task[None]] = set()
        self._open_per_network: dict[str, int] = {}
        self._shares = Shares()

    async def start(self, host: str, port: int) -> asyncio.Server:
        server = await asyncio.start_server(self._serve, host, port, limit=MAX_HEAD_BYTES)
        log.info("gateway: listening on %s:%d", host, port)
        return server

    def close(self) -> None:
        """Drop pooled upstream connections and cancel the client connections being served."""
        self._pool.close()
        for task in self._connections:
            task.cancel()

    async def aclose(self, server: asyncio.Server) -> None:
        """Stop ``server`` (from :meth:`start`) and wait until every connection of it has ended."""
        server.close()
        self.close()
        await asyncio.gather(*self._connections, return_exceptions=True)
        await server.wait_closed()

    def buffered(self, sandbox_id: str) -> int:
        """Bytes of request bodies the gateway holds whole for the sandbox right now."""
        return self._shares.held(sandbox_id)

    # --- one client connection ---------------------------------------------------------------------------

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        if task is not None:
            self._connections.add(task)
            task.add_done_callback(self._connections.discard)
        peer = writer.get_extra_info("peername")
        source = str(peer[0]) if isinstance(peer, tuple) and peer else None
        network = self._outbound.source_policy(source)
        key = network.sandbox_id if network is not None else ""
        most = MAX_CONNECTIONS_PER_SOURCE if network is not None else MAX_CONNECTIONS_OTHERS
        self._open_per_network[key] = self._open_per_network.get(key, 0) + 1
        try:
            if self._open_per_network[key] > most:
                await self._reply(
                    writer, 503, "overloaded_error", "too many open connections to the gateway", close=True
                )
                return
            for _ in range(100_000):  # bounded keep-alive: a client reconnects after this many requests
                try:
                    head = await asyncio.wait_for(read_head(reader), self._idle_timeout)
                    if head is None:
                        return
                    request = parse_request_head(head)
                except TimeoutError:
                    return
                except BadRequest as e:
                    await self._reply(writer, e.status, "invalid_request_error", e.message, close=True)
                    return
                keep = await self._handle(request, reader, writer, source)
                if not keep or request.wants_close():
                    return
        except (ConnectionError, asyncio.IncompleteReadError):
            return  # the client went away
        finally:
            self._open_per_network[key] -= 1
            if not self._open_per_network[key]:
                del self._open_per_network[key]
            writer.close()
            with contextlib.suppress(Exception):
                await writer.wait_closed()

    async def _reply(
        self, writer: asyncio.StreamWriter, status: int, kind: str, message: str, *, close: bool = False
    ) -> None:
        body = _error_body(kind, message)
        connection = "close" if close else "keep-alive"
        head = (
            f"HTTP/1.1 {status} {_REASONS.get(status, 'Error')}\r\ncontent-type: application/json\r\n"
            f"content-length: {len(body)}\r\nconnection: {connection}\r\n\r\n"
        )
        writer.write(head.encode() + body)
        await writer.drain()

    async def _refuse(
        self,
        request: Request,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        status: int,
        kind: str,
        message: str,
    ) -> bool:
        """Answer a request refused on its head. Its body is never read: the connection closes (after a
        short, bounded drain that keeps nothing) when it has one, and stays open when it has none."""
        await self._reply(writer, status, kind, message, close=request.has_body)
        if not request.has_body:
            return True
        with contextlib.suppress(OSError, RuntimeError):
            writer.write_eof()
        await discard(reader, DISCARD_BYTES, DISCARD_SECONDS)
        return False

    # --- one request -------------------------------------------------------------------------------------

    async def _handle(
        self,
        request: Request,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        source: str | None,
    ) -> bool:
        """Answer one request; False when the client connection cannot carry another."""
        if request.method == "GET" and request.target == "/healthz" and not request.has_body:
            writer.write(b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: 11\r\n\r\n")
            writer.write(b'{"ok":true}')
            await writer.drain()
            return True
        token, bearer = presented_token(request)
        if token is None:
            message = "no gateway token: send the sandbox's ANTHROPIC_API_KEY"
            return await self._refuse(request, reader, writer, 401, "authentication_error", message)
        sandbox_id, why = check_token(self.state_dir, token)
        if sandbox_id is None:
            message = (
                "the gateway token is malformed (it is not a sandbox's ANTHROPIC_API_KEY)"
                if why == MALFORMED
                else "the gateway token is revoked or unknown: its sandbox is suspended, destroyed or "
                "expired, or was resumed with a new token"
            )
            return await self._refuse(
                request, reader, writer, 401, "authentication_error", f"{message} ({why})"
            )
        if not self._outbound.token_fits_network(sandbox_id, source):
            log.warning("gateway: a token of sandbox %s came from another network (%s)", sandbox_id, source)
            message = (
                "the gateway token is not valid from this network: a token works only in its own sandbox"
            )
            return await self._refuse(
                request, reader, writer, 401, "authentication_error", f"{message} (network)"
            )
        if request.length > MAX_BODY_BYTES:
            message = f"the request body is larger than {MAX_BODY_BYTES} bytes"
            return await self._refuse(request, reader, writer, 413, "request_too_large", message)
        if request.target.startswith(GIT_PREFIX):
            return await self._git(request, sandbox_id, reader, writer)
        target = model_call(request.method, request.target)
        if target is None:
            message = (
                f"the gateway forwards model calls only ({', '.join(f'{m} {p}' for m, p in MODEL_CALLS)}, "
                f"paths in normal form); not {request.method} {request.target.split('?', 1)[0]}"
            )
            return await self._refuse(request, reader, writer, 403, "permission_error", message)
        try:
            upstream = self._current_upstream()
        except (OSError, ValueError, KeyError) as e:
            log.error("gateway: upstream.json is unusable: %s", type(e).__name__)
            message = "the gateway has no usable upstream configuration"
            return await self._refuse(request, reader, writer, 503, "api_error", message)
        auth = ("authorization", f"Bearer {upstream.api_key}") if bearer else ("x-api-key", upstream.api_key)
        return await self._call(
            sandbox_id, request, reader, upstream, target, [auth], CREDENTIAL_HEADERS, writer
        )

    async def _call(
        self,
        sandbox_id: str,
        request: Request,
        reader: asyncio.StreamReader,
        upstream: Upstream,
        target: str,
        auth: list[tuple[str, str]],
        drop: frozenset[str],
        writer: asyncio.StreamWriter,
        secrets: Sequence[str] = (),
    ) -> bool:
        """Forward one authenticated call and book it: activity before and after, counters, a log line.
        ``secrets``: values redacted from the answer (a credential the gateway added, the upstream may
        echo)."""
        self._touch(sandbox_id)
        if (request.header("expect") or "").lower() == "100-continue" and request.has_body:
            writer.write(b"HTTP/1.1 100 Continue\r\n\r\n")
            await writer.drain()
        status, sent, keep = 0, 0, True
        uploaded = Progress(self._idle_timeout)
        body = Body()
        try:
            body = await take_body(request, reader, self._shares, sandbox_id, uploaded, self._idle_timeout)
            status, sent, keep = await self._forward(
                request, reader, body, upstream, target, auth, drop, writer, uploaded, secrets
            )
        except BadRequest as e:
            await self._reply(writer, e.status, "invalid_request_error", e.message, close=True)
            status, keep = e.status, False
        except (TimeoutError, asyncio.IncompleteReadError, ClientBroke):
            keep = False  # the client stopped sending its body: nobody to answer
        finally:
            body.settle()
            self._touch(sandbox_id)
            answer = uploaded.answer
            tokens = answer.tally.tokens() if answer is not None and answer.tally is not None else None
            self._count(sandbox_id, uploaded.sent, sent, status, tokens)
            log.info(
                "gateway: sandbox %s %s %s -> %s (%d bytes in, %d out)",
                sandbox_id,
                request.method,
                request.target.split("?", 1)[0],
                status or "no answer",
                uploaded.sent,
                sent,
            )
        return keep

    def _current_upstream(self) -> Upstream:
        """``upstream.json``, read again only when it changed (the backend may rotate the key)."""
        path = self.state_dir / "upstream.json"
        st = path.stat()
        stamp = (st.st_mtime_ns, st.st_size)
        if self._upstream is None or stamp != self._upstream_stamp:
            config = json.loads(path.read_text())
            url = self._override or config["url"]
            self._upstream = parse_upstream(url, str(config["api_key"]))
            self._upstream_stamp = stamp
        return self._upstream

    async def _git(
        self, request: Request, sandbox_id: str, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> bool:
        """``/git/<host>/<repo>/(info/refs|git-upload-pack|git-receive-pack)``: git's smart HTTP to the
        host, where the sandbox's policy lets the egress point connect (``outbound``), with the credential
        granted to this sandbox for it (``git/<sandbox id>.json``, written by the backend). Without a
        grant the request goes as git sent it, its own credentials included."""
        route = git_route(request.method, request.target)
        if route is None:
            message = (
                f"the gateway relays git's smart HTTP only ({GIT_PREFIX}<host>/<repo>/info/refs, "
                f"git-upload-pack, git-receive-pack); not {request.method} {request.target.split('?', 1)[0]}"
            )
            return await self._refuse(request, reader, writer, 403, "permission_error", message)
        name = route.host if route.port == 443 else f"{route.host}:{route.port}"
        grant = self._git_grant(sandbox_id, name)
        # Decided before any connection, on the policy alone: an open and a closed port answer alike.
        where = await asyncio.to_thread(self._outbound.git_target, sandbox_id, route.host, route.port, grant)
        if isinstance(where, Refusal):
            log.info("gateway: sandbox %s git to %s refused: %s", sandbox_id, name, where.reason)
            kind = "permission_error" if where.status == 403 else "api_error"
            return await self._refuse(request, reader, writer, where.status, kind, where.reason)
        upstream = Upstream(where.scheme, where.host, where.port, where.base_path, "", where.address)
        secrets: list[str] = []
        if "token" in grant:
            pair = f"{grant.get('username') or 'x-access-token'}:{grant['token']}".encode()
            basic = base64.b64encode(pair).decode()
            auth = [("authorization", f"Basic {basic}")]
            # The answer goes back redacted (redact.py), so it must come in clear and whole.
            drop, secrets = CREDENTIAL_HEADERS | UNREADABLE_ASKS, [basic, grant["token"]]
        else:
            auth, drop = [], frozenset({"x-api-key"})
        return await self._call(
            sandbox_id, request, reader, upstream, route.target, auth, drop, writer, secrets
        )

    def _git_grant(self, sandbox_id: str, host: str) -> dict[str, str]:
        try:
            grants = json.loads((self.state_dir / "git" / f"{sandbox_id}.json").read_text())
        except (FileNotFoundError, ValueError):
            return {}
        found = grants.get(host) if isinstance(grants, dict) else None
        return {k: str(v) for k, v in found.items()} if isinstance(found, dict) else {}

    async def _forward(
        self,
        request: Request,
        reader: asyncio.StreamReader,
        body: Body,
        upstream: Upstream,
        target: str,
        auth: list[tuple[str, str]],
        drop: frozenset[str],
        client: asyncio.StreamWriter,
        uploaded: Progress,
        secrets: Sequence[str] = (),
    ) -> tuple[int, int, bool]:
        """Send to the upstream and relay its answer; (status, body bytes relayed, client reusable)."""
        headers = filtered(request.headers, drop | {"host", "content-length"})
        lines = [f"{request.method} {upstream.base_path}{target} HTTP/1.1", f"host: {upstream.host_header}"]
        lines += [f"{k}: {v}" for k, v in headers]
        lines += [f"{name}: {value}" for name, value in auth]
        if not body.complete and body.length is None:
            lines.append("transfer-encoding: chunked")
        elif body.length is not None:
            lines.append(f"content-length: {body.length}")
        elif body.data or request.method in ("POST", "PUT", "PATCH"):
            lines.append(f"content-length: {len(body.data)}")
        head = ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")
        try:
            async with asyncio.timeout(self._connect_timeout + self._read_timeout):
                if body.complete:
                    up_reader, up_writer, answer = await self._exchange(upstream, head + body.data)
                else:
                    up_reader, up_writer, answer = await self._stream_up(
                        upstream, head, body, reader, uploaded
                    )
        except (OSError, TimeoutError, asyncio.IncompleteReadError, BadRequest) as e:
            if isinstance(e, BadRequest) and e.status != 502:
                raise  # the client's chunked framing was malformed: a 400 for it
            reason = "timed out" if isinstance(e, TimeoutError) else type(e).__name__
            await self._reply(
                client,
                502,
                "api_error",
                f"the gateway could not reach the upstream at {upstream.host} ({reason})",
                close=not body.complete,
            )
            return 502, 0, body.complete
        body.settle()
        progress = uploaded.answer = Progress(self._read_timeout)
        try:
            async with asyncio.timeout(self._read_timeout) as progress.deadline:
                return await self._relay(
                    request, upstream.key, up_reader, up_writer, answer, client, progress, secrets
                )
        except (OSError, asyncio.IncompleteReadError, asyncio.LimitOverrunError, BadRequest) as e:
            # The answer is cut short (either side went away, or the upstream broke its framing): the
            # client sees a truncated message and its connection ends, the upstream one is not reused.
            up_writer.close()
            log.warning("gateway: relaying the answer from %s broke off: %s", upstream.host, type(e).__name__)
            return self._status_of(answer), progress.sent, False
        except BaseException:
            up_writer.close()
            raise

    @staticmethod
    def _status_of(head: list[bytes]) -> int:
        parts = head[0].split(b" ")
        return int(parts[1]) if len(parts) > 1 and parts[1].isdigit() else 502

    async def _open(self, upstream: Upstream) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        """A fresh connection to the address the upstream names (the one checked, for git)."""
        tls = upstream.scheme == "https"
        return await asyncio.wait_for(
            asyncio.open_connection(
                upstream.address or upstream.host,
                upstream.port,
                ssl=self._ssl if tls else None,
                server_hostname=upstream.host if tls else None,
                limit=MAX_HEAD_BYTES,
            ),
            self._connect_timeout,
        )

    async def _exchange(
        self, upstream: Upstream, payload: bytes
    ) -> tuple[asyncio.StreamReader, asyncio.StreamWriter, list[bytes]]:
        """Send a whole request and read the final response head, on a pooled connection if one is idle.

        A pooled connection the upstream closed meanwhile fails before any answer; the request (held
        whole) is then sent once more on a fresh connection."""
        pooled = self._pool.take(upstream.key)
        if pooled is not None:
            reader, writer = pooled
            try:
                writer.write(payload)
                await writer.drain()
                return reader, writer, await self._answer_head(reader)
            except (OSError, asyncio.IncompleteReadError):
                writer.close()
        reader, writer = await self._open(upstream)
        try:
            writer.write(payload)
            await writer.drain()
            return reader, writer, await self._answer_head(reader)
        except BaseException:
            writer.close()
            raise

    async def _stream_up(
        self,
        upstream: Upstream,
        head: bytes,
        body: Body,
        client: asyncio.StreamReader,
        uploaded: Progress,
    ) -> tuple[asyncio.StreamReader, asyncio.StreamWriter, list[bytes]]:
        """Send a request whose body streams from the client, on a fresh connection (a stale pooled one
        could not be retried: the body is not kept)."""
        reader, writer = await self._open(upstream)
        try:
            writer.write(head)
            try:
                await upload(client, writer, body, uploaded, self._idle_timeout)
            except (asyncio.IncompleteReadError, TimeoutError) as e:
                raise ClientBroke() from e
            await writer.drain()
            return reader, writer, await self._answer_head(reader)
        except BaseException:
            writer.close()
            raise

    @staticmethod
    async def _answer_head(reader: asyncio.StreamReader) -> list[bytes]:
        """The lines of the upstream's final answer head (interim 1xx answers skipped)."""
        for _ in range(MAX_INTERIM_RESPONSES):
            head = await read_head(reader)
            if head is None:
                raise asyncio.IncompleteReadError(b"", None)
            try:
                lines = split_lines(head)
            except BadRequest:
                raise BadRequest(502, "the upstream's answer head is malformed") from None
            status = lines[0].split(b" ")[1:2]
            if not status or not status[0].startswith(b"1"):
                return lines
        raise BadRequest(502, "the upstream sent too many interim responses")

    async def _relay(
        self,
        request: Request,
        key: PoolKey,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        head: list[bytes],
        client: asyncio.StreamWriter,
        progress: Progress,
        secrets: Sequence[str] = (),
    ) -> tuple[int, int, bool]:
        redactor = Redactor(secrets) if secrets else None
        if redactor is not None:
            try:
                check_answer(b"\r\n".join(head))
            except AnswerRefused as refused:
                writer.close()
                message = f"{refused}; an answer to a credentialed git request is relayed only in clear"
                await self._reply(client, 502, "api_error", message, close=False)
                return 502, 0, True
        version, _, rest = head[0].decode("latin-1").partition(" ")
        code_text, _, reason = rest.partition(" ")
        if not code_text.isdigit() or len(code_text) != 3:
            raise BadRequest(502, "the upstream's status line is malformed")
        status = int(code_text)
        upstream_headers = parse_headers(head[1:])
        upstream_keeps = version == "HTTP/1.1" and "close" not in connection_tokens(upstream_headers)
        no_body = request.method == "HEAD" or status in (204, 304)
        chunked = is_chunked(upstream_headers)
        length = None if chunked else content_length(upstream_headers)
        out = filtered(upstream_headers, frozenset())
        if chunked or (length is None and not no_body):
            # Relayed chunk by chunk: a close-delimited answer is re-framed so the client can keep going.
            out = [(k, v) for k, v in out if k.lower() != "content-length"] + [
                ("transfer-encoding", "chunked")
            ]
        response = [f"HTTP/1.1 {status} {reason or _REASONS.get(status, '')}"] + [f"{k}: {v}" for k, v in out]
        sent_head = ("\r\n".join(response) + "\r\n\r\n").encode("latin-1")
        client.write(redact(sent_head, redactor.secrets) if redactor is not None else sent_head)
        await client.drain()
        if request.method == "POST" and request.target.split("?", 1)[0] == "/v1/messages" and not no_body:
            found = dict((k.lower(), v) for k, v in upstream_headers)
            progress.tally = TokenTally(found.get("content-type"), found.get("content-encoding"))
        reusable = upstream_keeps
        if no_body:
            pass
        elif redactor is not None:
            await copy_redacted(reader, client, progress, redactor, chunked=chunked, length=length)
            reusable = reusable and (chunked or length is not None)
        elif chunked:
            await copy_chunked(reader, client, progress)
        elif length is not None:
            await copy_exact(reader, client, length, progress)
        else:
            await copy_until_close(reader, client, progress)
            reusable = False
        if reusable:
            self._pool.give(key, reader, writer)
        else:
            writer.close()
        return status, progress.sent, True

    def _touch(self, sandbox_id: str) -> None:
        touch_activity(self.state_dir, sandbox_id)

    def _count(
        self, sandbox_id: str, bytes_in: int, bytes_out: int, status: int, tokens: tuple[int, int] | None
    ) -> None:
        count_call(self.state_dir, sandbox_id, bytes_in, bytes_out, status, tokens)


_REASONS = {
    200: "OK",
    400: "Bad Request",
    401: "Unauthorized",
    403: "Forbidden",
    413: "Content Too Large",
    431: "Request Header Fields Too Large",
    501: "Not Implemented",
    502: "Bad Gateway",
    503: "Service Unavailable",
}
