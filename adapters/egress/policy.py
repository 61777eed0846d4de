"""What a sandbox may reach: allow-list rules, pinned names, address checks, and the policy files.

The provider writes one policy file per sandbox (``<state>/policies/<sandbox id>.json``) before the
sandbox's container exists; the proxy finds the policy of a connection by the address it came from,
which lies in exactly one sandbox network's subnet. A sandbox cannot claim another identity: its
address is set by the engine, and without NET_ADMIN it cannot change it.

Decisions, in order: a raw IP is refused; a host not matched by a rule (name and port) is refused; a
pinned ``host:port`` connects to its pinned address, whatever it is; otherwise the name is resolved once
and the first public address is the one connected to (so a second, rebinding answer is never used);
a name with only loopback, private, link-local, CGNAT, multicast or metadata addresses is refused.
"""

from __future__ import annotations

import contextlib
import ipaddress
import json
import os
import re
import socket
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass

# A host name as the proxy accepts it: lower-case LDH labels (the caller lower-cases).
_HOST = re.compile(
    r"(?=.{1,253}\Z)([a-z0-9_]([a-z0-9_-]{0,61}[a-z0-9_])?)(\.[a-z0-9_]([a-z0-9_-]{0,61}[a-z0-9_])?)*"
)
# Ports a rule without ``:port`` allows: the web's.
DEFAULT_PORTS = (80, 443)
POLICY_DIR = "policies"
# See PolicyBook._reload: how long after a change the folder is read again, and how often meanwhile.
_RACY_WINDOW_NS = 2_000_000_000
_RACY_REREAD_NS = 50_000_000

Resolver = Callable[[str, int], Sequence[str]]


class PolicyError(ValueError):
    """A rule or pin that cannot be parsed."""


@dataclass(frozen=True, slots=True)
class Rule:
    host: str  # "example.com" or "*.example.com"
    port: int | None  # None: DEFAULT_PORTS

    def matches(self, host: str, port: int) -> bool:
        if port not in ((self.port,) if self.port is not None else DEFAULT_PORTS):
            return False
        if self.host.startswith("*."):
            return host.endswith(self.host[1:])  # subdomains only, as E2B and curl's NO_PROXY do
        return host == self.host


@dataclass(frozen=True, slots=True)
class Decision:
    """Where to connect (``address``), or why not (``status`` and ``reason``, for the 403 body)."""

    address: str | None
    status: int = 200
    reason: str = ""


def _split_port(text: str) -> tuple[str, int | None]:
    if text.startswith("["):  # [v6]:port
        host, _, rest = text[1:].partition("]")
        return host, _port(rest[1:]) if rest.startswith(":") else None
    if text.count(":") == 1:
        host, _, port = text.partition(":")
        return host, _port(port)
    return text, None


def _port(text: str) -> int:
    if not text.isdigit() or not 0 < int(text) < 65536:
        raise PolicyError(f"{text!r} is not a port number (1-65535)")
    return int(text)


def normalize_host(host: str) -> str:
    return host.strip().lower().rstrip(".")


def is_raw_ip(host: str) -> bool:
    """Any literal address, including the forms inet_aton takes (``127.1``, ``0x7f.0.0.1``,
    ``2130706433``), which getaddrinfo would quietly turn into an address."""
    try:
        ipaddress.ip_address(host.strip("[]"))
        return True
    except ValueError:
        pass
    try:
        socket.inet_aton(host)
        return True
    except (OSError, ValueError):  # ValueError: a NUL in the text
        return False


def parse_rule(entry: str) -> Rule:
    host, port = _split_port(entry.strip())
    host = normalize_host(host)
    name = host[2:] if host.startswith("*.") else host
    if not _HOST.fullmatch(name):
        raise PolicyError(f"{entry!r} is not a host name, *.domain or host:port")
    return Rule(host, port)


def parse_rules(entries: Iterable[str]) -> tuple[Rule, ...]:
    """Rules of the entries that name hosts; raw IPs and CIDRs (which E2B accepts) are skipped here,
    since the proxy refuses raw IPs whatever the list says."""
    rules = []
    for entry in entries:
        host = _split_port(entry.strip())[0]
        if is_raw_ip(host) or "/" in host:
            continue
        rules.append(parse_rule(entry))
    return tuple(rules)


# Names that are loopback by definition (RFC 6761) or a cloud's metadata service: never worth allowing.
_NEVER = ("localhost", "metadata.google.internal", "metadata", "instance-data")


def check_allow(entries: Iterable[str]) -> tuple[str, ...]:
    """An allow-list a caller sets on a running sandbox, as its entries will be kept (normalized, in
    order, once each), or PolicyError naming the first refused entry. Each entry is parsed as the kinds'
    lists are (:func:`parse_rule`), and stricter: a raw IP or CIDR, which a kind's list may hold for E2B,
    is refused here (sandboxes reach hosts by name), as are loopback and metadata names, ``*``, and a
    wildcard over a whole top-level domain."""
    kept: list[str] = []
    for entry in entries:
        text = str(entry).strip()
        host = normalize_host(_split_port(text)[0]) if text else ""
        if is_raw_ip(host) or "/" in host:
            raise PolicyError(f"{entry!r} is an IP address or a network; allow hosts by name")
        rule = parse_rule(text)
        name = rule.host.removeprefix("*.")
        if name in _NEVER or name.endswith(".localhost"):
            raise PolicyError(f"{entry!r} names a loopback or metadata host, which sandboxes may not reach")
        if rule.host.startswith("*.") and "." not in name:
            raise PolicyError(f"{entry!r} is a wildcard over a whole top-level domain; name a domain")
        form = rule.host if rule.port is None else f"{rule.host}:{rule.port}"
        if form not in kept:
            kept.append(form)
    return tuple(kept)


def parse_pin(entry: str) -> tuple[str, int, str]:
    """``host:port:address`` (curl's --resolve form; an IPv6 address may be bracketed)."""
    host, sep, rest = entry.strip().partition(":")
    port, sep2, address = rest.partition(":")
    if not (sep and sep2 and host and address):
        raise PolicyError(f"{entry!r} is not host:port:address")
    try:
        checked = ipaddress.ip_address(address.strip("[]"))
    except ValueError:
        raise PolicyError(f"{entry!r}: {address!r} is not an IP address") from None
    return normalize_host(host), _port(port), str(checked)


def refused_address(address: str) -> str | None:
    """Why a resolved address may not be reached, or None when it is a public unicast address."""
    ip = ipaddress.ip_address(address)
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    if ip.is_loopback:
        return "a loopback address"
    if ip.is_link_local:
        return "a link-local address (cloud metadata lives there)"
    if ip.is_multicast:
        return "a multicast address"
    if not ip.is_global:  # private, CGNAT, reserved, unspecified, fd00:ec2::254, documentation ranges
        return "a private or reserved address"
    return None


def system_resolver(host: str, port: int) -> list[str]:
    infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, proto=socket.IPPROTO_TCP)
    return [str(info[4][0]) for info in infos]


@dataclass(frozen=True, slots=True)
class Policy:
    sandbox_id: str
    kind: str
    subnet: ipaddress.IPv4Network | ipaddress.IPv6Network
    rules: tuple[Rule, ...]
    pins: dict[tuple[str, int], str]
    # The variable that lists the kind's hosts, named in refusals.
    variable: str

    def decide(self, host: str, port: int, resolver: Resolver = system_resolver) -> Decision:
        host = normalize_host(host)
        where = f"{host}:{port}"
        if is_raw_ip(host):
            return Decision(
                None,
                403,
                f"{host} is a raw IP address; sandboxes reach hosts by name only, and only the "
                f"names listed in {self.variable}",
            )
        if not _HOST.fullmatch(host):
            # A rule matches by suffix: "a b.x.test" or one with a NUL must not reach the resolver as a name.
            return Decision(None, 403, f"{host!r} is not a host name; sandboxes reach hosts by name only")
        if not any(rule.matches(host, port) for rule in self.rules):
            return Decision(
                None,
                403,
                f"{where} is not in the allow-list of {self.kind} sandboxes; to allow it, add "
                f"{host if port in DEFAULT_PORTS else where} to {self.variable}",
            )
        pinned = self.pins.get((host, port))
        if pinned is not None:
            return Decision(pinned)
        try:
            addresses = resolver(host, port)
        except OSError as exc:
            return Decision(None, 502, f"cannot resolve {host}: {exc}")
        why = ""
        for address in addresses:
            why = refused_address(address) or ""
            if not why:
                return Decision(address)
        first = addresses[0] if addresses else "ADDRESS"
        return Decision(
            None,
            403,
            f"{host} resolves to {first}, {why or 'no address'}, which sandboxes may not reach; if it is "
            f"meant, pin it with SANDBOX_EGRESS_RESOLVE={host}:{port}:{first}",
        )


def policy_document(
    sandbox_id: str, kind: str, subnet: str, allow: Sequence[str], resolve: Sequence[str], variable: str
) -> dict[str, object]:
    return {
        "sandbox_id": sandbox_id,
        "kind": kind,
        "subnet": subnet,
        "allow": list(allow),
        "resolve": list(resolve),
        "variable": variable,
    }


def load_policy(document: dict[str, object]) -> Policy:
    allow = document.get("allow") or []
    resolve = document.get("resolve") or []
    assert isinstance(allow, list) and isinstance(resolve, list)
    pins = {}
    for entry in resolve:
        host, port, address = parse_pin(str(entry))
        pins[(host, port)] = address
    return Policy(
        sandbox_id=str(document["sandbox_id"]),
        kind=str(document["kind"]),
        subnet=ipaddress.ip_network(str(document["subnet"])),
        rules=parse_rules(str(e) for e in allow),
        pins=pins,
        variable=str(document.get("variable") or "the allow-list"),
    )


def write_policy(state_dir: str, document: dict[str, object]) -> str:
    """Write a sandbox's policy atomically (the proxy may be reading the directory right now)."""
    folder = os.path.join(state_dir, POLICY_DIR)
    os.makedirs(folder, mode=0o755, exist_ok=True)
    path = os.path.join(folder, f"{document['sandbox_id']}.json")
    temp = f"{path}.{os.getpid()}.{threading.get_ident()}.tmp"
    with open(temp, "w", encoding="utf-8") as file:
        json.dump(document, file)
    os.chmod(temp, 0o644)
    os.replace(temp, path)
    return path


def remove_policy(state_dir: str, sandbox_id: str) -> None:
    with contextlib.suppress(FileNotFoundError):
        os.unlink(os.path.join(state_dir, POLICY_DIR, f"{sandbox_id}.json"))


class PolicyBook:
    """Every sandbox's policy, found by source address; re-read when the directory changes (a write or
    removal replaces a file, which changes the directory's mtime)."""

    def __init__(self, state_dir: str) -> None:
        self.folder = os.path.join(state_dir, POLICY_DIR)
        self._lock = threading.Lock()
        self._seen: int | None = None
        self._read_ns = 0  # when the folder was last read (time.time_ns, the clock mtimes come from)
        self._policies: list[tuple[float, Policy]] = []
        # Bumped on every read that changed what is loaded: the proxy re-checks its open tunnels then.
        self.generation = 0

    def for_source(self, address: str) -> Policy | None:
        ip = ipaddress.ip_address(address)
        if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
            ip = ip.ipv4_mapped
        for force in (False, True):  # a policy written within the mtime's granularity: read once more
            self._reload(force)
            # A subnet freed by a removed sandbox may be reused before the reconciler removed a stale
            # file naming it: the newest file is the live network's.
            found = [(mtime, p) for mtime, p in self._policies if ip in p.subnet]
            if found:
                return max(found, key=lambda pair: pair[0])[1]
        return None

    def _reload(self, force: bool) -> None:
        try:
            stamp = os.stat(self.folder).st_mtime_ns
        except FileNotFoundError:
            stamp = -1
        with self._lock:
            now = time.time_ns()
            # A change within the same tick of the file system's clock as the last read leaves the
            # folder's mtime as it was (racy-git's problem): while the last read is that recent after
            # the stamp, read again, at most every _RACY_REREAD_NS. So a policy rewritten on a live
            # sandbox (set_egress) is in force for the next connection within that, never missed.
            racy = self._read_ns - stamp < _RACY_WINDOW_NS and now - self._read_ns >= _RACY_REREAD_NS
            if stamp == self._seen and not force and not racy:
                return
            loaded: list[tuple[float, Policy]] = []
            names = os.listdir(self.folder) if stamp != -1 else []
            for name in names:
                if not name.endswith(".json"):
                    continue
                path = os.path.join(self.folder, name)
                try:
                    with open(path, encoding="utf-8") as file:
                        loaded.append((os.fstat(file.fileno()).st_mtime, load_policy(json.load(file))))
                except (OSError, ValueError, KeyError, AssertionError) as exc:
                    print(f"egress: ignoring unreadable policy {name}: {exc}", flush=True)
            if [p for _, p in loaded] != [p for _, p in self._policies]:
                self.generation += 1
            self._policies, self._seen, self._read_ns = loaded, stamp, now

    def refresh(self) -> int:
        """Re-read the folder if it changed; the generation (the proxy's watch calls this)."""
        self._reload(False)
        return self.generation
