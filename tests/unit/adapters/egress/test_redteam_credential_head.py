"""Red team, the head the proxy sends to a credentialed origin (inject.request_head), as parsed upstream.

The redaction of answers (inject.Redactor) works on the bytes relayed; it holds only while the origin's
echo of the credential comes back whole and in clear. Request headers the sandbox chooses decide that:
``Accept-Encoding`` (a compressed echo) and ``Range`` / ``If-Range`` (an echo in slices shorter than the
secret). The integration attacks (tests/integration/attacks/test_redteam_credentials.py) show the leak
end to end; these pin the head.
"""

from __future__ import annotations

import pytest

from sandbox_lifecycle.adapters.egress import inject

CREDENTIALS = [("Authorization", "Bearer PLANTED-unit-credential-4a7d2c9e")]


def _sent(headers: list[tuple[bytes, bytes]]) -> dict[bytes, bytes]:
    head = inject.request_head(b"GET", b"/echo", b"HTTP/1.1", headers, "api.test", 443, CREDENTIALS)
    lines = head.split(b"\r\n")[1:-2]
    return {name.lower(): value for name, _, value in (line.partition(b": ") for line in lines)}


def test_a_credentialed_request_asks_for_the_identity_coding_only() -> None:
    sent = _sent([(b"accept-encoding", b"gzip, br")])
    assert sent.get(b"accept-encoding", b"identity") == b"identity"


def test_a_credentialed_request_asks_for_no_byte_range() -> None:
    sent = _sent([(b"range", b"bytes=40-55"), (b"if-range", b"x")])
    assert b"range" not in sent and b"if-range" not in sent


@pytest.mark.parametrize("name", [b"authorization", b"AUTHORIZATION", b"Authorization"])
def test_the_sandbox_s_own_header_of_the_credential_s_name_never_goes_along(name: bytes) -> None:
    head = inject.request_head(
        b"GET", b"/", b"HTTP/1.1", [(name, b"Bearer guessed")], "api.test", 443, CREDENTIALS
    )
    assert b"guessed" not in head and head.count(b"Bearer PLANTED") == 1
    assert head.endswith(b"Host: api.test\r\nConnection: close\r\n\r\n")
