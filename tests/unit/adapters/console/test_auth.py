"""The console's gate: read-only methods, loopback without a token, the token in constant time, the
browser's one-time ?token= turned into a cookie that is not the token."""

from __future__ import annotations

import hmac
from typing import Any

import pytest

from sandbox_lifecycle.adapters.console import auth
from sandbox_lifecycle.adapters.console.auth import (
    COOKIE,
    ConsoleGuard,
    check_token,
    is_loopback,
    session_value,
)
from tests.unit.adapters.console.conftest import LOOPBACK, TestClient

TOKEN = "s3cret-console-token-0123456789"


async def _hello(scope: Any, receive: Any, send: Any) -> None:
    await send({"type": "http.response.start", "status": 200, "headers": [(b"content-type", b"text/plain")]})
    await send({"type": "http.response.body", "body": b"hello"})


def guarded(token: str | None, client: tuple[str, int] = LOOPBACK) -> TestClient:
    return TestClient(ConsoleGuard(_hello, token), client=client, follow_redirects=False)


@pytest.mark.parametrize("method", ["POST", "PUT", "DELETE", "PATCH", "OPTIONS"])
def test_every_method_but_get_and_head_is_refused_before_auth(method: str) -> None:
    for client in (guarded(None), guarded(TOKEN)):
        answer = client.request(method, "/")
        assert answer.status_code == 405
        assert answer.headers["allow"] == "GET, HEAD"
        assert answer.text == "the console is read-only"


def test_without_a_token_only_loopback_clients_are_served() -> None:
    assert guarded(None).get("/").text == "hello"
    assert guarded(None, ("::1", 1)).get("/").status_code == 200
    assert guarded(None, ("10.0.0.7", 1)).get("/").status_code == 403
    assert guarded(None, ("192.168.1.2", 1)).get("/").status_code == 403


def test_a_token_is_needed_even_from_loopback() -> None:
    answer = guarded(TOKEN).get("/")
    assert answer.status_code == 401 and answer.headers["www-authenticate"] == "Bearer"
    assert "needs its token" in answer.text and answer.headers["content-length"] == str(len(answer.content))
    assert TOKEN not in answer.text


def test_the_bearer_header_admits_only_the_exact_token() -> None:
    client = guarded(TOKEN, ("10.0.0.7", 1))
    assert client.get("/", headers={"Authorization": f"Bearer {TOKEN}"}).text == "hello"
    assert client.get("/", headers={"Authorization": f"bearer {TOKEN}"}).status_code == 200
    for wrong in (TOKEN[:-1], TOKEN + "x", "", TOKEN.upper()):
        assert client.get("/", headers={"Authorization": f"Bearer {wrong}"}).status_code == 401
    assert client.get("/", headers={"Authorization": f"Basic {TOKEN}"}).status_code == 401


def test_a_query_token_signs_in_once_and_leaves_the_address() -> None:
    client = guarded(TOKEN, ("10.0.0.7", 1))
    answer = client.get("/live?token=" + TOKEN + "&after=3")
    assert answer.status_code == 303
    assert answer.headers["location"] == "/live?after=3"
    cookie = answer.headers["set-cookie"]
    assert cookie.startswith(f"{COOKIE}={session_value(TOKEN)};")
    assert "HttpOnly" in cookie and "SameSite=Strict" in cookie and "Path=/" in cookie
    assert "Secure" not in cookie
    assert TOKEN not in cookie and TOKEN not in answer.text
    # The cookie admits; the token itself as a cookie does not (a cookie is not the token, nor vice versa).
    assert client.get("/").text == "hello"  # the client keeps the cookie it was given

    def with_cookie(value: str) -> int:
        return guarded(TOKEN).get("/", headers={"Cookie": f"{COOKIE}={value}"}).status_code

    assert with_cookie(session_value(TOKEN)) == 200
    assert with_cookie(TOKEN) == 401
    assert with_cookie(session_value(TOKEN + "x")) == 401


def test_a_query_token_over_https_gets_a_secure_cookie() -> None:
    client = TestClient(ConsoleGuard(_hello, TOKEN), base_url="https://console.test", follow_redirects=False)
    assert "; Secure" in client.get("/?token=" + TOKEN).headers["set-cookie"]


def test_a_wrong_query_token_is_refused_without_a_cookie() -> None:
    answer = guarded(TOKEN).get("/?token=nope")
    assert answer.status_code == 401 and "set-cookie" not in answer.headers


def test_a_malformed_cookie_header_is_no_cookie() -> None:
    answer = guarded(TOKEN).get("/", headers={"Cookie": 'sandbox_console="unterminated; ;;=\\'})
    assert answer.status_code == 401


def test_the_token_is_compared_in_constant_time(monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[tuple[bytes, bytes]] = []
    real = hmac.compare_digest

    def spy(a: bytes, b: bytes) -> bool:
        calls.append((a, b))
        return real(a, b)

    monkeypatch.setattr(auth.hmac, "compare_digest", spy)
    guarded(TOKEN).get("/", headers={"Authorization": "Bearer guess"})
    assert calls == [(b"guess", TOKEN.encode())]


def test_every_answer_carries_the_security_headers() -> None:
    for answer in (guarded(None).get("/"), guarded(TOKEN).get("/"), guarded(None).post("/")):
        assert "script-src 'self'" in answer.headers["content-security-policy"]
        assert answer.headers["x-frame-options"] == "DENY"
        assert answer.headers["referrer-policy"] == "no-referrer"
        assert answer.headers["x-content-type-options"] == "nosniff"


def test_short_tokens_are_refused_without_showing_them() -> None:
    assert check_token(None) is None and check_token("") is None
    assert check_token("x" * 16) == "x" * 16
    with pytest.raises(ValueError) as refused:
        check_token("short-secret")
    assert "short-secret" not in str(refused.value)
    with pytest.raises(ValueError):
        ConsoleGuard(_hello, "x" * 15)


@pytest.mark.parametrize(
    ("host", "loopback"),
    [
        ("127.0.0.1", True),
        ("127.9.9.9", True),
        ("::1", True),
        ("[::1]", True),
        ("localhost", True),
        ("0.0.0.0", False),
        ("::", False),
        ("10.1.2.3", False),
        ("example.test", False),
        ("", False),
    ],
)
def test_is_loopback(host: str, loopback: bool) -> None:
    assert is_loopback(host) is loopback


def test_lifespan_and_other_scopes_pass_through() -> None:
    seen: list[str] = []

    async def app(scope: Any, receive: Any, send: Any) -> None:
        seen.append(scope["type"])

    import asyncio

    asyncio.run(ConsoleGuard(app, TOKEN)({"type": "lifespan"}, None, None))  # type: ignore[arg-type]
    assert seen == ["lifespan"]


def test_the_session_cookie_is_the_tokens_hmac_of_a_fixed_label() -> None:
    # Keyed by the token: nobody without the token can make a session, and it changes with the token.
    expected = hmac.new(TOKEN.encode(), b"sandbox-console-session/1", "sha256").hexdigest()
    assert session_value(TOKEN) == expected
    assert session_value(TOKEN + "x") != expected


def test_the_admitted_request_reaches_the_app_whole() -> None:
    async def echo(scope: Any, receive: Any, send: Any) -> None:
        message = await receive()
        body = f"{scope['method']} {scope['path']} {message['type']}".encode()
        await send({"type": "http.response.start", "status": 200, "headers": [(b"x-app", b"1")]})
        await send({"type": "http.response.body", "body": body})

    answer = TestClient(ConsoleGuard(echo, None), client=LOOPBACK).get("/sandboxes/a")
    assert answer.text == "GET /sandboxes/a http.request"
    assert answer.headers["x-app"] == "1" and "content-security-policy" in answer.headers
