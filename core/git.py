"""Git inside a sandbox, over the turn's exec: clone, status, branch, add, commit, diff, push.

The same on every provider, because it only runs the sandbox's own ``git``. A token for clone or push:

* where the provider's egress point adds credentials (Docker), the sandbox never sees it. The token is
  given to the egress point for the remote's host (``set_credentials``: ``Authorization: Basic``, recorded
  as ``CredentialsSet`` with the header's name only) for the one git command, which is pointed at
  ``http://<host>/`` (``url.<http>.insteadOf`` from the environment, nothing written to a file) and so
  goes through the proxy, which sends it on over TLS with the header added; then the credential is
  removed again (a second ``CredentialsSet``, with no header). The remote in ``.git/config`` stays the
  public ``https://`` URL.
* elsewhere (E2B, whose egress is E2B's), it is handed to git through the exec's environment and read
  back by a credential helper given with ``-c``, so it is in no argument vector, ``.git/config``, event or
  error message, but a process of the sandbox could read it while that one command runs.

URLs that carry credentials themselves are refused for the same reason.
"""

from __future__ import annotations

import base64
import re
import shlex
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Protocol
from urllib.parse import urlsplit

from sandbox_lifecycle.core.errors import SandboxError
from sandbox_lifecycle.core.ports import ExecResult
from sandbox_lifecycle.events.names import redact_url

# Where the credential helper finds the token: the variable exists only in the environment of the one
# git command that needs it.
TOKEN_VARIABLE = "SANDBOX_GIT_TOKEN"
# `-c credential.helper=` first clears any helper the image or the agent configured (which could log or
# keep what it is given), then ours answers `get` from the environment. Single-quoted printf arguments:
# the token is expanded by the shell git starts, never written into this text.
_CREDENTIAL_ARGS = (
    "-c",
    "credential.helper=",
    "-c",
    "credential.helper=!f() { test \"$1\" = get && printf 'username=%s\\npassword=%s\\n' "
    f'"${{SANDBOX_GIT_USERNAME:-x-access-token}}" "${TOKEN_VARIABLE}"; }}; f',
)
# Git buffers a push's pack up to this before it sends it in chunks, which the egress proxy does not take
# over plain HTTP (411): a push through the egress point is sent whole, with its length, up to this size.
_POST_BUFFER = str(512 * 1024 * 1024)
# Never wait for a person to type a password: a missing or wrong token is an error at once.
_NON_INTERACTIVE = {"GIT_TERMINAL_PROMPT": "0", "GIT_ASKPASS": "/bin/false", "SSH_ASKPASS": "/bin/false"}
_BRANCH_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._/-]{0,199}")


class GitError(SandboxError):
    """A git command in the sandbox failed; carries its exit code and (redacted) error output."""

    def __init__(self, command: str, exit_code: int, stderr: str) -> None:
        self.command = command
        self.exit_code = exit_code
        self.stderr = stderr
        super().__init__(f"`{command}` failed with exit code {exit_code}: {stderr.strip() or '(no output)'}")


class Runner(Protocol):
    """What the helper needs of a turn handle."""

    def exec(
        self,
        command: Sequence[str] | str,
        *,
        timeout: float = ...,
        env: Mapping[str, str] | None = ...,
        cwd: str | None = ...,
    ) -> ExecResult: ...

    @property
    def egress_credentials(self) -> bool: ...

    def set_credentials(self, host: str, headers: Mapping[str, str], *, reason: str = ...) -> None: ...


@dataclass(frozen=True, slots=True)
class Author:
    name: str
    email: str


@dataclass(frozen=True, slots=True)
class Git:
    """Git in one repository directory of a sandbox (``cwd``; the kind's workdir when None)."""

    sandbox: Runner
    cwd: str | None = None
    timeout: float = 300.0

    def at(self, path: str) -> Git:
        """The same helper for another repository directory."""
        return Git(self.sandbox, path, self.timeout)

    # ------------------------------------------------------------------------------------- verbs

    def clone(
        self,
        url: str,
        path: str,
        *,
        branch: str | None = None,
        depth: int | None = None,
        token: str | None = None,
    ) -> Git:
        """Clone ``url`` into ``path`` and return the helper for the new repository."""
        _refuse_embedded_credentials(url)
        args = ["clone", "--quiet"]
        if branch is not None:
            args += ["--branch", _branch(branch)]
        if depth is not None:
            if depth < 1:
                raise ValueError(f"depth must be at least 1, got {depth}")
            args += ["--depth", str(depth)]
        self._git([*args, "--", url, path], token=token, url=url)
        return self.at(path if path.startswith("/") or self.cwd is None else f"{self.cwd}/{path}")

    def status(self) -> str:
        """``git status --porcelain=v1``: one line per changed path, empty when clean."""
        return self._git(["status", "--porcelain=v1"]).stdout

    def current_branch(self) -> str:
        return self._git(["rev-parse", "--abbrev-ref", "HEAD"]).stdout.strip()

    def branch(self, name: str, *, start: str | None = None, checkout: bool = True) -> None:
        """Create branch ``name`` (from ``start``, default HEAD), or switch to it if it exists."""
        name = _branch(name)
        exists = self._git(["rev-parse", "--verify", "--quiet", f"refs/heads/{name}"], check=False)
        if exists.exit_code == 0:
            if checkout:
                self._git(["checkout", "--quiet", name])
            return
        if checkout:
            self._git(["checkout", "--quiet", "-b", name, *([start] if start else [])])
        else:
            self._git(["branch", name, *([start] if start else [])])

    def add(self, paths: Sequence[str] = ()) -> None:
        """Stage ``paths`` (every change, removals included, when empty)."""
        self._git(["add", "--all", "--", *paths] if paths else ["add", "--all"])

    def commit(self, message: str, *, author: Author, allow_empty: bool = False) -> str:
        """Commit what is staged as ``author``; returns the new commit's id."""
        identity = [
            "-c",
            f"user.name={author.name}",
            "-c",
            f"user.email={author.email}",
        ]
        extra = ["--allow-empty"] if allow_empty else []
        # `-m` keeps the message one argument: exec passes an argv without a shell, so nothing in it is
        # interpreted.
        self._git(["commit", "--quiet", "-m", message, *extra], prefix=identity)
        return self._git(["rev-parse", "HEAD"]).stdout.strip()

    def diff(self, base: str | None = None, *, staged: bool = False, stat: bool = False) -> str:
        """The diff of the work tree (or the index with ``staged``) against ``base`` (default HEAD/index)."""
        args = ["diff", "--no-color", "--no-ext-diff"]
        if staged:
            args.append("--cached")
        if stat:
            args.append("--stat")
        if base is not None:
            args.append(base)
        return self._git(args).stdout

    def push(
        self,
        remote: str = "origin",
        branch: str | None = None,
        *,
        token: str | None = None,
        force_with_lease: bool = False,
    ) -> str:
        """Push ``branch`` (default: the current one) to ``remote``, setting its upstream; returns the
        branch name pushed."""
        name = _branch(branch) if branch else self.current_branch()
        args = ["push", "--quiet", "--set-upstream"]
        if force_with_lease:
            args.append("--force-with-lease")
        pushed = [*args, remote, f"HEAD:refs/heads/{name}" if branch is None else name]
        if token is not None and self.sandbox.egress_credentials:
            url = self._git(["remote", "get-url", "--push", remote]).stdout.strip()
            self._git(pushed, token=token, url=url)
        else:
            self._git(pushed, token=token)
        return name

    # ----------------------------------------------------------------------------------- plumbing

    def _git(
        self,
        args: Sequence[str],
        *,
        token: str | None = None,
        url: str | None = None,
        prefix: Sequence[str] = (),
        check: bool = True,
    ) -> ExecResult:
        env = dict(_NON_INTERACTIVE)
        argv = ["git", *prefix]
        if token is not None and not token:
            raise ValueError("an empty token cannot authenticate; pass None for none")
        # A TLS remote gets the token at the egress point, never in the sandbox. A plain http:// remote
        # (an in-house git server without TLS, the demo's) cannot: the egress point adds credentials only
        # to requests it sends on over TLS, so git in the sandbox is given the token as before
        # (docs/network.md, limits).
        if token is not None and self.sandbox.egress_credentials and urlsplit(url or "").scheme == "https":
            host, plain = _through_egress(url or "")
            env.update(
                _config_env(
                    [(f"url.{plain}.insteadOf", f"https://{host}/"), ("http.postBuffer", _POST_BUFFER)]
                )
            )
            basic = base64.b64encode(f"x-access-token:{token}".encode()).decode()
            # Kept under the repository's path: removing it after leaves a credential the backend set
            # for the whole host as it was.
            scope = _scope(host, url or "")
            self.sandbox.set_credentials(scope, {"Authorization": f"Basic {basic}"}, reason=f"git {args[0]}")
            try:
                result = self.sandbox.exec([*argv, *args], timeout=self.timeout, env=env, cwd=self.cwd)
            finally:
                self.sandbox.set_credentials(scope, {}, reason=f"git {args[0]} done")
            return self._checked(args, result, token, check)
        if token is not None:
            env[TOKEN_VARIABLE] = token
            argv += _CREDENTIAL_ARGS
        argv += args
        return self._checked(
            args, self.sandbox.exec(argv, timeout=self.timeout, env=env, cwd=self.cwd), token, check
        )

    @staticmethod
    def _checked(args: Sequence[str], result: ExecResult, token: str | None, check: bool) -> ExecResult:
        if check and result.exit_code != 0:
            shown = shlex.join(["git", *args])
            stderr = result.stderr.replace(token, "***") if token else result.stderr
            raise GitError(shown, result.exit_code, stderr)
        return result


def _through_egress(url: str) -> tuple[str, str]:
    """``(host[:port], http://host[:port]/)`` for an ``https://`` remote: the host the credential is for
    (as set_credentials keeps it), and the plain URL the proxy upgrades to TLS with the credential."""
    parts = urlsplit(url)
    if parts.scheme != "https" or not parts.hostname:
        raise ValueError(
            f"a token is sent only to an https:// remote, through the egress point; not {redact_url(url)!r}"
        )
    host = parts.hostname if parts.port in (None, 443) else f"{parts.hostname}:{parts.port}"
    return host, f"http://{host}/"


def _scope(host: str, url: str) -> str:
    """The credential's key: ``host`` and the remote's repository path (``host/org/repo.git/``), so
    the token goes only with git's smart HTTP under it, never with another request of the sandbox to
    that host; the host alone for a remote at its root."""
    path = urlsplit(url).path.strip("/")
    return f"{host}/{path}/" if path else host


def _config_env(pairs: Sequence[tuple[str, str]]) -> dict[str, str]:
    """Git configuration from the environment (``GIT_CONFIG_COUNT``, git >= 2.31): no file is written."""
    env = {"GIT_CONFIG_COUNT": str(len(pairs))}
    for i, (key, value) in enumerate(pairs):
        env[f"GIT_CONFIG_KEY_{i}"], env[f"GIT_CONFIG_VALUE_{i}"] = key, value
    return env


def _refuse_embedded_credentials(url: str) -> None:
    parts = urlsplit(url)
    if parts.scheme in ("http", "https") and (parts.username or parts.password):
        raise ValueError(
            "the clone URL carries credentials, which git would keep in .git/config; "
            "pass the URL without them and the token as token="
        )


def _branch(name: str) -> str:
    if not _BRANCH_NAME.fullmatch(name) or ".." in name or name.endswith((".lock", "/", ".")):
        raise ValueError(f"{name!r} is not a usable branch name")
    return name
