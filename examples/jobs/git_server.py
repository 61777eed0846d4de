"""A git server the job runs on the backend host: ``git http-backend`` behind HTTP Basic authentication.

It serves the bare repositories under ``root`` and accepts exactly one token, as the password (any user
name), so the sandbox clones and pushes with the token the job hands ``sbx.git`` and nothing else.
``publish(src, name)`` turns a directory (the sample dbt project) into a bare repository with one commit
on ``main``. Run it alone::

    python -m examples.jobs.git_server --publish examples/dbt_project --token T --port 8418
"""

from __future__ import annotations

import argparse
import base64
import contextlib
import hmac
import os
import shutil
import subprocess
import tempfile
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

_AUTHOR = {
    "GIT_AUTHOR_NAME": "Sample Project",
    "GIT_AUTHOR_EMAIL": "samples@example.invalid",
    "GIT_COMMITTER_NAME": "Sample Project",
    "GIT_COMMITTER_EMAIL": "samples@example.invalid",
}


def _git(*args: str, cwd: Path | None = None) -> str:
    env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": tempfile.gettempdir(), **_AUTHOR}
    return subprocess.run(
        ["git", *args], cwd=cwd, env=env, check=True, capture_output=True, text=True, timeout=60
    ).stdout


class GitServer:
    def __init__(self, root: Path, token: str, *, host: str = "127.0.0.1", port: int = 0) -> None:
        self.root = root
        self.token = token
        self.pushes: list[str] = []
        server = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, format: str, *args: Any) -> None:
                pass

            def do_GET(self) -> None:
                server._serve(self)

            def do_POST(self) -> None:
                server._serve(self)

        self._httpd = ThreadingHTTPServer((host, port), Handler)
        self._httpd.daemon_threads = True
        self._thread = threading.Thread(target=self._httpd.serve_forever, name="git-server", daemon=True)

    @property
    def port(self) -> int:
        return int(self._httpd.server_address[1])

    def url(self, name: str, host: str | None = None) -> str:
        """The clone URL of repository ``name`` (``host`` as the sandbox must name this machine)."""
        return f"http://{host or str(self._httpd.server_address[0])}:{self.port}/{name}.git"

    def start(self) -> GitServer:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._httpd.shutdown()
        self._httpd.server_close()
        self._thread.join(5)

    def __enter__(self) -> GitServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def publish(self, src: Path, name: str) -> Path:
        """A bare repository ``name`` holding ``src`` as one commit on ``main`` (replacing any before)."""
        bare = self.root / f"{name}.git"
        shutil.rmtree(bare, ignore_errors=True)
        with tempfile.TemporaryDirectory() as work:
            tree = Path(work) / name
            shutil.copytree(src, tree, ignore=shutil.ignore_patterns("target", "dbt_packages", "logs"))
            _git("init", "--quiet", "--initial-branch=main", cwd=tree)
            _git("add", "--all", cwd=tree)
            _git("commit", "--quiet", "-m", f"{name}: the sample project", cwd=tree)
            _git("clone", "--quiet", "--bare", str(tree), str(bare))
        # Pushes over HTTP need the repository to accept them.
        _git("config", "http.receivepack", "true", cwd=bare)
        return bare

    def diff(self, name: str, base: str, branch: str) -> str:
        """What ``branch`` changes against ``base``, read from the pushed repository itself."""
        return _git("diff", "--no-color", f"{base}...{branch}", cwd=self.root / f"{name}.git")

    def log(self, name: str, branch: str) -> list[str]:
        return _git("log", "--format=%s", branch, cwd=self.root / f"{name}.git").splitlines()

    def _authorised(self, header: str | None) -> bool:
        if not header or not header.startswith("Basic "):
            return False
        try:
            _, _, password = base64.b64decode(header[6:]).decode().partition(":")
        except ValueError:
            return False
        return hmac.compare_digest(password.encode(), self.token.encode())

    def _serve(self, h: BaseHTTPRequestHandler) -> None:
        if not self._authorised(h.headers.get("Authorization")):
            h.send_response(401)
            h.send_header("WWW-Authenticate", 'Basic realm="sample git"')
            h.send_header("Content-Length", "0")
            h.end_headers()
            return
        parts = urlsplit(h.path)
        length = int(h.headers.get("Content-Length") or 0)
        body = h.rfile.read(length) if length else b""
        if parts.path.endswith("/git-receive-pack"):
            self.pushes.append(parts.path)
        env = {
            "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
            "GIT_PROJECT_ROOT": str(self.root),
            "GIT_HTTP_EXPORT_ALL": "1",
            "REQUEST_METHOD": h.command,
            "PATH_INFO": parts.path,
            "QUERY_STRING": parts.query,
            "CONTENT_TYPE": h.headers.get("Content-Type", ""),
            "CONTENT_LENGTH": str(len(body)),
            "REMOTE_USER": "agent",
            "REMOTE_ADDR": str(h.client_address[0]),
        }
        if h.headers.get("Content-Encoding"):
            env["HTTP_CONTENT_ENCODING"] = h.headers["Content-Encoding"]
        if h.headers.get("Git-Protocol"):
            env["GIT_PROTOCOL"] = h.headers["Git-Protocol"]
        out = subprocess.run(
            ["git", "http-backend"], input=body, env=env, capture_output=True, timeout=120, check=False
        ).stdout
        sep = b"\r\n\r\n" if b"\r\n\r\n" in out else b"\n\n"
        head, _, payload = out.partition(sep)
        status = 200
        headers: list[tuple[str, str]] = []
        for line in head.decode("latin-1").splitlines():
            name, _, value = line.partition(":")
            if name.lower() == "status":
                status = int(value.strip().split()[0])
            elif name:
                headers.append((name, value.strip()))
        h.send_response(status)
        for name, value in headers:
            h.send_header(name, value)
        h.send_header("Content-Length", str(len(payload)))
        h.end_headers()
        h.wfile.write(payload)


def main() -> int:
    parser = argparse.ArgumentParser(description="Serve bare git repositories over HTTP with one token.")
    parser.add_argument("--root", type=Path, help="where the bare repositories live (default: a temp dir)")
    parser.add_argument("--publish", type=Path, action="append", default=[], help="a directory to serve")
    parser.add_argument("--token", required=True)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8418)
    args = parser.parse_args()
    root = args.root or Path(tempfile.mkdtemp(prefix="git-server-"))
    server = GitServer(root, args.token, host=args.host, port=args.port)
    for src in args.publish:
        server.publish(src, src.name)
        print(f"serving {server.url(src.name)}", flush=True)
    with contextlib.suppress(KeyboardInterrupt):
        server._httpd.serve_forever()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
