"""Which requests the gateway forwards, read from the request target, standard library only.

Paths are taken only in normal form and never rewritten: a segment is letters, digits and ``._~-``, never
``.`` or ``..``, never empty, with no percent-escape and no ``;`` parameter. An upstream (or a proxy in
front of it) that resolves ``/v1/models/..``, decodes ``%2e%2e%2f`` or cuts ``..;`` would otherwise turn
an allowed model call into a call elsewhere with the real key; a refused path reaches nothing.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

# What a sandbox may do with the key: call the model. The key can do more (files, batches, admin
# endpoints that list what the rest of the organisation stored); none of that is forwarded.
MODEL_CALLS = (
    ("POST", "/v1/messages"),
    ("POST", "/v1/messages/count_tokens"),
    ("GET", "/v1/models"),
    ("GET", "/v1/models/*"),
)
GIT_PREFIX = "/git/"

_SEGMENT = re.compile(r"[A-Za-z0-9._~-]{1,255}")
_MODEL_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,127}")
# A model call's query (``?beta=true``, ``?limit=20&after_id=...``): names, values, ``&`` and ``=``.
_QUERY = re.compile(r"(?:[A-Za-z0-9._~,:-]|%[0-9A-Fa-f]{2})+(?:=(?:[A-Za-z0-9._~,:-]|%[0-9A-Fa-f]{2})*)?")
# A git host as a name, optionally with a port; whether the egress point may reach it is the policy's call.
_GIT_HOST = re.compile(r"([A-Za-z0-9]([A-Za-z0-9.-]{0,252}))(?::([0-9]{1,5}))?")
_GIT_SERVICES = ("service=git-upload-pack", "service=git-receive-pack")
_GIT_ENDPOINTS = ("info/refs", "git-upload-pack", "git-receive-pack")
MAX_GIT_SEGMENTS = 32


def normal_segments(path: str) -> list[str] | None:
    """The segments of an absolute path already in normal form, or None (see the module docstring)."""
    if not path.startswith("/"):
        return None
    segments = path[1:].split("/")
    # Dots alone ("." "..", and "..." which some servers also resolve) are never a name.
    if not all(_SEGMENT.fullmatch(s) and s.strip(".") for s in segments):
        return None
    return segments


def _query_ok(query: str) -> bool:
    return all(_QUERY.fullmatch(part) for part in query.split("&"))


def model_call(method: str, target: str) -> str | None:
    """The target to forward when the request is one of MODEL_CALLS in normal form, else None."""
    path, has_query, query = target.partition("?")
    if has_query and not _query_ok(query):
        return None
    segments = normal_segments(path)
    if segments is None:
        return None
    for allowed_method, allowed in MODEL_CALLS:
        if method != allowed_method:
            continue
        pattern = allowed[1:].split("/")
        if len(pattern) != len(segments):
            continue
        if all(
            p == s or (p == "*" and _MODEL_ID.fullmatch(s)) for p, s in zip(pattern, segments, strict=True)
        ):
            return target
    return None


@dataclass(frozen=True, slots=True)
class GitRoute:
    host: str  # lower case, no trailing dot
    port: int  # 443 unless the route names one
    target: str  # path and query on the git host


def git_route(method: str, target: str) -> GitRoute | None:
    """A smart-HTTP git request under GIT_PREFIX (``/git/<host>[:port]/<repo>/<endpoint>``), or None."""
    if not target.startswith(GIT_PREFIX):
        return None
    authority, sep, rest = target[len(GIT_PREFIX) :].partition("/")
    found = _GIT_HOST.fullmatch(authority)
    path, has_query, query = ("/" + rest).partition("?")
    segments = normal_segments(path)
    if not sep or found is None or segments is None or not 2 <= len(segments) <= MAX_GIT_SEGMENTS:
        return None
    port = int(found.group(3)) if found.group(3) else 443
    if not 0 < port < 65536:
        return None
    endpoint = "/".join(segments[-2:]) if segments[-2:] == ["info", "refs"] else segments[-1]
    if endpoint not in _GIT_ENDPOINTS or len(segments) - endpoint.count("/") < 2:
        return None
    if endpoint == "info/refs":
        ok = method == "GET" and has_query and query in _GIT_SERVICES
    else:
        ok = method == "POST" and not has_query
    host = found.group(1).lower().rstrip(".")
    return GitRoute(host, port, "/" + rest) if ok and host else None


def parse_git_route(method: str, target: str) -> tuple[str, str] | None:
    """``(host[:port], path with query)`` of a git route, or None (the older form of :func:`git_route`)."""
    route = git_route(method, target)
    if route is None:
        return None
    host = route.host if route.port == 443 else f"{route.host}:{route.port}"
    return host, route.target
