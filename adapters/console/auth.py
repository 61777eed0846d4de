"""Who may read the console, and that nobody can change anything through it.

``ConsoleGuard`` wraps the console's ASGI app:

* Only GET and HEAD pass; every other method is answered 405 before anything else runs, so no route,
  present or future, can change a sandbox through the console.
* Without a token (``SANDBOX_CONSOLE_TOKEN`` unset) only loopback clients are served: the CLI refuses to
  bind elsewhere without one, and a backend that mounts the app on a public port without one gets 403s,
  not an open console.
* With a token, a request shows it as ``Authorization: Bearer TOKEN`` (scripts) or as the session cookie
  (browsers). A browser gets the cookie once, from ``?token=TOKEN``: the answer is a redirect to the same
  address without the token, so it leaves the address bar, the history and the Referer. The cookie holds
  an HMAC of the token, not the token: a copied cookie is not the token a script could reuse elsewhere,
  and changing the token ends every session. It is HttpOnly (page scripts never see it) and
  SameSite=Strict (another site cannot make the browser send it). Every comparison is constant-time
  (``hmac.compare_digest``).
* The token is never logged: the CLI turns uvicorn's access log off (its lines carry the query string)
  and scrubs the variable from every message it prints.
"""

from __future__ import annotations

import hashlib
import hmac
import ipaddress
from collections.abc import Awaitable, Callable, MutableMapping
from http.cookies import SimpleCookie
from typing import Any
from urllib.parse import parse_qsl, urlencode

TOKEN_ENV = "SANDBOX_CONSOLE_TOKEN"
COOKIE = "sandbox_console"
# A token shorter than this is refused: it would be guessable by anyone who can reach the port.
MIN_TOKEN_LENGTH = 16
READ_METHODS = frozenset({"GET", "HEAD"})

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

# Sent with every answer: no inline script or style runs (a value that escaped escaping still could not
# run), nothing is loaded from elsewhere, no other site frames the console, no Referer leaves it.
SECURITY_HEADERS: tuple[tuple[bytes, bytes], ...] = (
    (
        b"content-security-policy",
        b"default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; connect-src 'self'; "
        b"base-uri 'self'; form-action 'self'; frame-ancestors 'none'",
    ),
    (b"x-content-type-options", b"nosniff"),
    (b"x-frame-options", b"DENY"),
    (b"referrer-policy", b"no-referrer"),
    (b"cache-control", b"no-store"),
)


def is_loopback(host: str) -> bool:
    """Whether ``host`` (an address, or ``localhost``) is this machine only."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def check_token(token: str | None) -> str | None:
    """``token`` if usable, None when unset or empty; ValueError for one too short to be a secret (the
    message never shows it)."""
    if not token:
        return None
    if len(token) < MIN_TOKEN_LENGTH:
        raise ValueError(
            f"{TOKEN_ENV} is too short (value not shown): use at least {MIN_TOKEN_LENGTH} characters"
        )
    return token


def session_value(token: str) -> str:
    """The cookie's value for ``token``: an HMAC of it, never the token itself."""
    return hmac.new(token.encode(), b"sandbox-console-session/1", hashlib.sha256).hexdigest()


def same(given: str, expected: str) -> bool:
    """Constant-time equality of two texts (compare_digest on their UTF-8 bytes)."""
    return hmac.compare_digest(given.encode(), expected.encode())


def _header(scope: Scope, name: bytes) -> str:
    for key, value in scope.get("headers", []):
        if key.lower() == name:
            return bytes(value).decode("latin-1")
    return ""


def _bearer(scope: Scope) -> str | None:
    scheme, _, value = _header(scope, b"authorization").partition(" ")
    return value.strip() if scheme.lower() == "bearer" and value.strip() else None


def _cookie(scope: Scope) -> str | None:
    jar: SimpleCookie = SimpleCookie()
    try:
        jar.load(_header(scope, b"cookie"))
    except Exception:  # a malformed Cookie header is as good as none
        return None
    morsel = jar.get(COOKIE)
    return morsel.value if morsel is not None else None


async def _answer(
    send: Send, status: int, text: str, headers: list[tuple[bytes, bytes]] | None = None
) -> None:
    body = text.encode()
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [
                (b"content-type", b"text/plain; charset=utf-8"),
                (b"content-length", str(len(body)).encode()),
                *(headers or []),
                *SECURITY_HEADERS,
            ],
        }
    )
    await send({"type": "http.response.body", "body": body})


class ConsoleGuard:
    """The read-only, token-or-loopback gate in front of the console's app (see the module's doc)."""

    def __init__(self, app: ASGIApp, token: str | None) -> None:
        self.app = app
        self.token = check_token(token)
        self.session = session_value(self.token) if self.token else None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        if scope["method"] not in READ_METHODS:
            await _answer(send, 405, "the console is read-only", [(b"allow", b"GET, HEAD")])
            return
        verdict = self._admit(scope)
        if verdict == "redirect":
            await self._set_cookie(scope, send)
            return
        if verdict != "ok":
            status = 403 if verdict == "loopback" else 401
            text = (
                "the console serves loopback clients only without SANDBOX_CONSOLE_TOKEN"
                if verdict == "loopback"
                else "this console needs its token (Authorization: Bearer, or open it once with ?token=)"
            )
            await _answer(send, status, text, [(b"www-authenticate", b"Bearer")] if status == 401 else None)
            return

        async def secured(message: Message) -> None:
            if message["type"] == "http.response.start":
                message["headers"] = [*message.get("headers", []), *SECURITY_HEADERS]
            await send(message)

        await self.app(scope, receive, secured)

    def _admit(self, scope: Scope) -> str:
        """ok, redirect (a valid ?token=), loopback (refused: not loopback and no token), or denied."""
        if self.token is None or self.session is None:
            client = scope.get("client")
            return "ok" if client and is_loopback(str(client[0])) else "loopback"
        offered = dict(parse_qsl(scope.get("query_string", b"").decode("latin-1"))).get("token")
        if offered is not None:
            return "redirect" if same(offered, self.token) else "denied"
        bearer = _bearer(scope)
        if bearer is not None and same(bearer, self.token):
            return "ok"
        cookie = _cookie(scope)
        if cookie is not None and same(cookie, self.session):
            return "ok"
        return "denied"

    async def _set_cookie(self, scope: Scope, send: Send) -> None:
        """The same address without ``token``, and the session cookie."""
        kept = [
            (k, v) for k, v in parse_qsl(scope.get("query_string", b"").decode("latin-1")) if k != "token"
        ]
        # The full path (a mounted app's scope path includes its mount point, as Starlette sets it).
        location = scope.get("path") or "/"
        if kept:
            location += "?" + urlencode(kept)
        secure = "; Secure" if scope.get("scheme") == "https" else ""
        cookie = f"{COOKIE}={self.session}; Path=/; HttpOnly; SameSite=Strict{secure}"
        await _answer(
            send, 303, "signed in", [(b"location", location.encode()), (b"set-cookie", cookie.encode())]
        )
