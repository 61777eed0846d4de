"""Run inside a sandbox image with no network: a Messages-API stand-in, the gateway, and the real
``claude`` CLI talking to its model through the gateway, all on the container's own loopback.

Usage (by tests/**/test_gateway_agent_cli.py): ``python3 agent_in_container.py EGRESS_PARENT_DIR``, where
``EGRESS_PARENT_DIR/egress`` is the gateway package; prints one JSON line describing what happened.
Standard library only (the image's python3), like the gateway itself.
"""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import tempfile
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

sys.path.insert(0, sys.argv[1])

from egress.gateway import Gateway
from egress.tokens import issue_token

REAL_KEY = "sk-ant-api03-REAL-key-seen-only-by-the-upstream"
ANSWER = "PONG-through-the-gateway"
seen: list[dict[str, Any]] = []


def event(name: str, data: dict[str, Any]) -> bytes:
    return f"event: {name}\ndata: {json.dumps(data)}\n\n".encode()


class Upstream(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    disable_nagle_algorithm = True

    def log_message(self, format: str, *args: Any) -> None:
        pass

    def do_GET(self) -> None:
        seen.append({"path": self.path, "real_key": self.headers.get("x-api-key") == REAL_KEY})
        self._json({"data": []})

    def do_POST(self) -> None:
        request = json.loads(self.rfile.read(int(self.headers.get("content-length", "0"))) or b"{}")
        seen.append({"path": self.path, "real_key": self.headers.get("x-api-key") == REAL_KEY})
        model = request.get("model", "claude")
        usage = {"input_tokens": 1, "output_tokens": 1}
        message = {
            "id": "msg_1",
            "type": "message",
            "role": "assistant",
            "model": model,
            "stop_sequence": None,
        }
        if not request.get("stream"):
            text = {"type": "text", "text": ANSWER}
            self._json({**message, "content": [text], "stop_reason": "end_turn", "usage": usage})
            return
        self.send_response(200)
        self.send_header("content-type", "text/event-stream")
        self.send_header("transfer-encoding", "chunked")
        self.end_headers()
        for name, data in (
            (
                "message_start",
                {"type": "message_start", "message": {**message, "content": [], "usage": usage}},
            ),
            (
                "content_block_start",
                {"type": "content_block_start", "index": 0, "content_block": {"type": "text", "text": ""}},
            ),
            (
                "content_block_delta",
                {"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": ANSWER}},
            ),
            ("content_block_stop", {"type": "content_block_stop", "index": 0}),
            (
                "message_delta",
                {"type": "message_delta", "delta": {"stop_reason": "end_turn"}, "usage": usage},
            ),
            ("message_stop", {"type": "message_stop"}),
        ):
            chunk = event(name, data)
            self.wfile.write(b"%x\r\n%s\r\n" % (len(chunk), chunk))
            self.wfile.flush()
        self.wfile.write(b"0\r\n\r\n")
        self.wfile.flush()

    def _json(self, body: dict[str, Any]) -> None:
        raw = json.dumps(body).encode()
        self.send_response(200)
        self.send_header("content-type", "application/json")
        self.send_header("content-length", str(len(raw)))
        self.end_headers()
        self.wfile.write(raw)


def main() -> None:
    upstream = ThreadingHTTPServer(("127.0.0.1", 0), Upstream)
    upstream.daemon_threads = True
    threading.Thread(target=upstream.serve_forever, daemon=True).start()
    state = Path(tempfile.mkdtemp())
    (state / "upstream.json").write_text(
        json.dumps({"url": f"http://127.0.0.1:{upstream.server_address[1]}", "api_key": REAL_KEY})
    )
    token = issue_token(state, "agent1")
    loop = asyncio.new_event_loop()
    threading.Thread(target=loop.run_forever, daemon=True).start()
    server = asyncio.run_coroutine_threadsafe(Gateway(state).start("127.0.0.1", 0), loop).result(10)
    port = server.sockets[0].getsockname()[1]
    env = {
        "PATH": "/usr/local/bin:/usr/bin:/bin",
        "HOME": tempfile.mkdtemp(),
        "ANTHROPIC_BASE_URL": f"http://127.0.0.1:{port}",
        "ANTHROPIC_API_KEY": token,
        "CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC": "1",
        "DISABLE_TELEMETRY": "1",
        "DISABLE_AUTOUPDATER": "1",
    }
    done = subprocess.run(
        ["claude", "-p", "say pong", "--output-format", "text"],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    counters = json.loads((state / "counters" / "agent1.json").read_text())
    print(
        json.dumps(
            {
                "rc": done.returncode,
                "stdout": done.stdout,
                "stderr": done.stderr[-2000:],
                "seen": seen,
                "counters": counters,
                "token_prefix": token[:10],
            }
        )
    )


if __name__ == "__main__":
    main()
