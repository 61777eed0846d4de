"""A real git server for tests: the sample job's ``git http-backend`` server (examples/jobs/git_server.py)
on loopback, which accepts exactly one token as the Basic password, plus a record of every request's
path and Authorization header for the assertions. It serves the bare repositories under ``root``.
"""

from __future__ import annotations

from http.server import BaseHTTPRequestHandler
from pathlib import Path

from examples.jobs.git_server import GitServer


class GitHTTPServer(GitServer):
    def __init__(self, root: Path, token: str) -> None:
        super().__init__(root, token)
        self.requests: list[tuple[str, str | None]] = []

    @property  # type: ignore[override]  # the base URL; the sample server's url() names one repository
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def _serve(self, h: BaseHTTPRequestHandler) -> None:
        self.requests.append((h.path, h.headers.get("Authorization")))
        super()._serve(h)
