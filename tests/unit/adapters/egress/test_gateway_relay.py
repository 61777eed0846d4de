"""The gateway between a client and a loopback upstream that answers exactly the bytes a test scripts.

The other gateway tests use an upstream built on http.server, which only ever sends well-formed answers;
here the upstream's bytes are the test's, so what the gateway does with an odd answer is pinned. Each
test pins a behaviour a one-line mutant of gateway.py changed unnoticed (docs/testing.md)."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from sandbox_lifecycle.adapters.egress.gateway import Gateway, presented_token
from sandbox_lifecycle.adapters.egress.gateway_http import Request
from sandbox_lifecycle.adapters.egress.policy import policy_document, write_policy
from sandbox_lifecycle.adapters.gateway.state import GatewayState

KEY = "sk-ant-real-key-for-the-relay-tests"
WAIT_S = 10.0


@dataclass
class Upstream:
    """Answers the n-th request on a connection with ``answers[n]`` and records every request's head."""

    answers: list[bytes]
    heads: list[bytes] = field(default_factory=list)
    bodies: list[bytes] = field(default_factory=list)
    connections: int = 0

    async def serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        try:
            while self.answers:
                head = await reader.readuntil(b"\r\n\r\n")
                self.heads.append(head)
                length = 0
                for line in head.split(b"\r\n"):
                    name, _, value = line.partition(b":")
                    if name.lower() == b"content-length":
                        length = int(value)
                self.bodies.append(await reader.readexactly(length))
                writer.write(self.answers.pop(0))
                await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()


Client = Callable[[asyncio.StreamReader, asyncio.StreamWriter, str], Awaitable[bytes]]


def through_gateway(tmp_path: Path, upstream: Upstream, client: Client) -> bytes:
    """Run a gateway for ``upstream`` and let ``client`` talk to it with sandbox sbx1's token."""

    async def main() -> bytes:
        up = await asyncio.start_server(upstream.serve, "127.0.0.1", 0)
        state = GatewayState(tmp_path / "egress")
        state.write_upstream(f"http://127.0.0.1:{up.sockets[0].getsockname()[1]}", KEY)
        token = state.issue("sbx1")
        gateway = Gateway(state.state_dir)
        server = await gateway.start("127.0.0.1", 0)
        try:
            reader, writer = await asyncio.open_connection("127.0.0.1", server.sockets[0].getsockname()[1])
            try:
                return await asyncio.wait_for(client(reader, writer, token), WAIT_S)
            finally:
                writer.close()
        finally:
            await gateway.aclose(server)
            up.close()

    return asyncio.run(main())


def post(token: str, body: bytes = b"{}", extra: str = "") -> bytes:
    return (
        f"POST /v1/messages HTTP/1.1\r\nhost: gw\r\nx-api-key: {token}\r\n"
        f"content-length: {len(body)}\r\n{extra}\r\n"
    ).encode() + body


async def one_call(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, token: str) -> bytes:
    """One request asking to close after it: everything the gateway answers, to its end."""
    writer.write(post(token, extra="connection: close\r\n"))
    return await reader.read()


def test_the_token_comes_from_x_api_key_first_then_a_bearer_of_any_case() -> None:
    def req(*headers: tuple[str, str]) -> Request:
        return Request("POST", "/v1/messages", "HTTP/1.1", list(headers))

    assert presented_token(req(("x-api-key", "a"), ("authorization", "Bearer b"))) == ("a", False)
    assert presented_token(req(("authorization", "bEaReR  b "))) == ("b", True)
    assert presented_token(req(("authorization", "Basic b"))) == (None, False)
    assert presented_token(req(("authorization", "Bearer  "))) == (None, False)
    assert presented_token(req(("x-api-key", ""), ("authorization", "Bearer b"))) == ("b", True)
    assert presented_token(req()) == (None, False)


@pytest.mark.parametrize("status_line", [b"HTTP/1.1 2000 OK", b"HTTP/1.1 20 OK", b"HTTP/1.1 2x0 OK"])
def test_an_answer_with_a_malformed_status_code_is_not_relayed(tmp_path: Path, status_line: bytes) -> None:
    upstream = Upstream([status_line + b"\r\ncontent-length: 2\r\n\r\nok"])
    assert through_gateway(tmp_path, upstream, one_call) == b""


def test_interim_answers_are_skipped_up_to_a_bound(tmp_path: Path) -> None:
    interim = b"HTTP/1.1 100 Continue\r\n\r\n"
    final = b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok"
    answer = through_gateway(tmp_path / "nine", Upstream([interim * 9 + final]), one_call)
    assert answer.startswith(b"HTTP/1.1 200 OK\r\n") and answer.endswith(b"\r\n\r\nok")
    assert b"100 Continue" not in answer
    refused = through_gateway(tmp_path / "ten", Upstream([interim * 10 + final]), one_call)
    assert refused.startswith(b"HTTP/1.1 502 Bad Gateway\r\n")
    # The upstream's fault, not the client's: an api_error naming the upstream.
    error = json.loads(refused.partition(b"\r\n\r\n")[2])["error"]
    assert error["type"] == "api_error" and "could not reach the upstream" in error["message"]


@pytest.mark.parametrize("status", [204, 304])
def test_an_answer_without_a_body_is_relayed_without_one_and_the_connection_goes_on(
    tmp_path: Path, status: int
) -> None:
    upstream = Upstream(
        [f"HTTP/1.1 {status} X\r\n\r\n".encode(), b"HTTP/1.1 200 OK\r\ncontent-length: 1\r\n\r\n!"]
    )

    async def two_calls(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, token: str) -> bytes:
        writer.write(post(token))
        writer.write(post(token, extra="connection: close\r\n"))
        return await reader.read()

    answer = through_gateway(tmp_path, upstream, two_calls)
    first, _, second = answer.partition(b"\r\n\r\n")
    assert first.startswith(f"HTTP/1.1 {status} X".encode()) and b"transfer-encoding" not in first
    assert second.startswith(b"HTTP/1.1 200 OK\r\n") and second.endswith(b"\r\n\r\n!")
    assert upstream.connections == 1  # the upstream connection was pooled and reused


def test_an_answer_by_length_is_relayed_by_length(tmp_path: Path) -> None:
    upstream = Upstream([b"HTTP/1.1 200 OK\r\ncontent-length: 5\r\nx-up: 1\r\n\r\nhello"])
    answer = through_gateway(tmp_path, upstream, one_call)
    head, _, body = answer.partition(b"\r\n\r\n")
    assert b"content-length: 5" in head and b"x-up: 1" in head and b"transfer-encoding" not in head
    assert body == b"hello"


def test_the_upstream_gets_the_body_the_key_once_and_its_own_host(tmp_path: Path) -> None:
    upstream = Upstream([b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\n\r\n"])
    answer = through_gateway(tmp_path, upstream, one_call)
    assert answer.startswith(b"HTTP/1.1 200 OK")
    [head] = upstream.heads
    lines = head.decode().split("\r\n")
    assert lines[0] == "POST /v1/messages HTTP/1.1"
    named = [line.lower().partition(":")[0] for line in lines[1:] if line]
    assert sorted(n for n in named if n in ("host", "x-api-key", "content-length")) == [
        "content-length",
        "host",
        "x-api-key",
    ]
    assert f"x-api-key: {KEY}" in lines and "content-length: 2" in lines
    assert upstream.bodies == [b"{}"]


def test_a_refused_call_names_its_reason_phrase(tmp_path: Path) -> None:
    async def refused(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, token: str) -> bytes:
        writer.write(b"GET /v1/files HTTP/1.1\r\nhost: gw\r\nx-api-key: " + token.encode() + b"\r\n\r\n")
        writer.write(b"GET /v1/models HTTP/1.1\r\nhost: gw\r\nconnection: close\r\n\r\n")
        return await reader.read()

    answer = through_gateway(tmp_path, Upstream([]), refused)
    first, second = answer.split(b"HTTP/1.1 ")[1:]
    assert first.startswith(b"403 Forbidden\r\n") and b"connection: keep-alive" in first
    assert second.startswith(b"401 Unauthorized\r\n")
    body = json.loads(second.partition(b"\r\n\r\n")[2])
    assert body["error"]["type"] == "authentication_error"


@pytest.mark.parametrize("status_line", [b"HTTP/1.1 200 OK", b"HTTP/1.1 200"])
def test_an_answer_cut_short_is_counted_with_its_status_and_what_it_carried(
    tmp_path: Path, status_line: bytes
) -> None:
    upstream = Upstream([status_line + b"\r\ncontent-length: 10\r\n\r\nabc"])  # then the upstream closes
    answer = through_gateway(tmp_path, upstream, one_call)
    assert answer.startswith(b"HTTP/1.1 200 ") and answer.endswith(b"\r\n\r\nabc")
    counters = GatewayState(tmp_path / "egress").counters("sbx1")
    assert counters["status"] == {"200": 1}
    assert (counters["requests"], counters["bytes_in"], counters["bytes_out"]) == (1, 2, 3)


class Swallowing(Upstream):
    """Reads whatever comes until the gateway closes the connection, and never answers."""

    async def serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        while await reader.read(65536):
            pass
        writer.close()


def test_a_streamed_body_with_broken_chunk_framing_is_the_clients_400(tmp_path: Path) -> None:
    size = 1024 * 1024 + 1  # past what is held whole: the chunk streams to the upstream

    async def broken(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, token: str) -> bytes:
        writer.write(
            b"POST /v1/messages HTTP/1.1\r\nhost: gw\r\nx-api-key: %s\r\ntransfer-encoding: chunked\r\n\r\n"
            % token.encode()
        )
        writer.write(b"%x\r\n" % size + b"x" * size + b"XX")  # no CRLF after the chunk's data
        await writer.drain()
        return await reader.read()

    upstream = Swallowing([])
    answer = through_gateway(tmp_path, upstream, broken)
    assert answer.startswith(b"HTTP/1.1 400 Bad Request\r\n"), answer[:200]
    assert json.loads(answer.partition(b"\r\n\r\n")[2])["error"]["type"] == "invalid_request_error"
    assert upstream.connections == 1


def test_a_body_declared_over_64_mib_is_refused_on_its_head(tmp_path: Path) -> None:
    async def too_large(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, token: str) -> bytes:
        over = 64 * 1024 * 1024 + 1
        writer.write(
            b"POST /v1/messages HTTP/1.1\r\nhost: gw\r\nx-api-key: %s\r\ncontent-length: %d\r\n\r\n"
            % (token.encode(), over)
        )
        return await reader.read()

    upstream = Upstream([])
    answer = through_gateway(tmp_path, upstream, too_large)
    assert answer.startswith(b"HTTP/1.1 413 Content Too Large\r\n"), answer[:100]
    assert json.loads(answer.partition(b"\r\n\r\n")[2])["error"]["type"] == "request_too_large"
    assert upstream.connections == 0


def test_one_sandbox_network_holds_64_connections_and_the_65th_is_refused(tmp_path: Path) -> None:
    """docs/gateway.md: at most 64 open at once from one sandbox's network."""
    state_dir = tmp_path / "egress"
    write_policy(str(state_dir), policy_document("here", "data-app", "127.0.0.0/8", [], [], "V"))
    healthz = b"GET /healthz HTTP/1.1\r\nhost: gw\r\n\r\n"

    async def main() -> tuple[bytes, bytes]:
        gateway = Gateway(state_dir)
        server = await gateway.start("127.0.0.1", 0)
        port = server.sockets[0].getsockname()[1]
        held: list[asyncio.StreamWriter] = []
        try:
            for _ in range(63):
                held.append((await asyncio.open_connection("127.0.0.1", port))[1])
            reader, writer = await asyncio.open_connection("127.0.0.1", port)
            held.append(writer)
            writer.write(healthz)  # the 64th is served (and stays open: keep-alive)
            sixty_fourth = await asyncio.wait_for(reader.readuntil(b'{"ok":true}'), WAIT_S)
            reader, writer = await asyncio.open_connection("127.0.0.1", port)
            held.append(writer)
            sixty_fifth = await asyncio.wait_for(reader.read(), WAIT_S)
            return sixty_fourth, sixty_fifth
        finally:
            for writer in held:
                writer.close()
            await gateway.aclose(server)

    sixty_fourth, sixty_fifth = asyncio.run(main())
    assert sixty_fourth.startswith(b"HTTP/1.1 200 OK")
    assert sixty_fifth.startswith(b"HTTP/1.1 503 Service Unavailable")
