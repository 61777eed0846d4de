"""Background processes kept as files in the sandbox: one layout and the bash scripts that keep it,
shared by the Docker and E2B providers.

Each process started with ``SandboxProvider.start`` gets a directory ``<root>/<id>/`` holding ``argv``
(its command, NUL-separated), ``argc``, ``cwd``, ``stdout`` and ``stderr`` (everything it printed) and, once
it ended, ``exit`` (its status; 137 when it was killed). A supervising bash runs the command with its output
going to those files, so the output survives the backend process that started it and can be read, listed
and waited for by any later call. Ids start with the start time in milliseconds (hex), so sorting them
sorts the processes by age.

Only bash builtins and coreutils run here: both templates and both Docker images have them.
"""

from __future__ import annotations

import os
import time
from datetime import UTC, datetime

from sandbox_lifecycle.core.ports import ProcessInfo

# Exit status recorded for a process killed by kill_process (128 + SIGKILL), as a shell reports it.
KILLED_STATUS = 137

# $1: the process directory, then the command. Records the command, runs it with its output in files and
# records its status, unless a kill recorded one first.
SUPERVISE = r"""
d=$1; shift
mkdir -p -- "$d" && printf '%s\0' "$@" >"$d/argv" && echo "$#" >"$d/argc" && pwd >"$d/cwd" || exit 125
"$@" >"$d/stdout" 2>"$d/stderr" </dev/null
rc=$?
[ -e "$d/exit" ] || echo "$rc" >"$d/exit"
exit "$rc"
"""

# $1: the supervise script, $2: the process directory, then the command. Writes the directory before it
# returns (so a listing right after start sees the process), then leaves the supervisor running detached
# from the caller with no descriptor of the caller's open: the call returns at once.
LAUNCH = r"""
s=$1; d=$2; shift 2
mkdir -p -- "$d" && printf '%s\0' "$@" >"$d/argv" && echo "$#" >"$d/argc" && pwd >"$d/cwd" || exit 125
bash -c "$s" supervise "$d" "$@" </dev/null >/dev/null 2>&1 &
exit 0
"""

# $1: the root. For each process, oldest first: id, status ("-" while running), cwd, argc, then the
# argv items, all NUL-terminated.
LIST = r"""
cd -- "$1" 2>/dev/null || exit 0
for d in */; do
  d=${d%/}
  [[ -f $d/argc ]] || continue
  e=-; [[ -f $d/exit ]] && read -r e <"$d/exit"
  read -r c <"$d/cwd"; read -r n <"$d/argc"
  printf '%s\0%s\0%s\0%s\0' "$d" "${e:--}" "$c" "$n"
  cat -- "$d/argv"
done
"""

# $1: the process directory, $2: at most this many bytes of each stream (the newest). Prints the two
# sizes on a line, then that many bytes of stdout and of stderr. Exit 3: no such process.
OUTPUT = r"""
cd -- "$1" 2>/dev/null && [[ -f argc ]] || exit 3
o=$(wc -c <stdout 2>/dev/null) || o=0; e=$(wc -c <stderr 2>/dev/null) || e=0
((o > $2)) && o=$2; ((e > $2)) && e=$2
printf '%s %s\n' "$o" "$e"
((o)) && tail -c "$o" stdout; ((e)) && tail -c "$e" stderr
exit 0
"""

# $1: the process directory, $2: how many tenths of a second to wait. Prints the status once there.
# Exit 3: no such process; 4: still running.
WAIT = r"""
[[ -f $1/argc ]] || exit 3
for ((i = 0; i <= $2; i++)); do
  [[ -f $1/exit ]] && { cat -- "$1/exit"; exit 0; }
  sleep 0.1
done
exit 4
"""

# $1: the process directory. Records the killed status unless the process recorded its own first.
MARK_KILLED = rf"""
[[ -f $1/argc ]] || exit 3
[[ -e $1/exit ]] || echo {KILLED_STATUS} >"$1/exit"
"""

# $1: the root. The newest modification time (epoch seconds, fractional) of any process's output.
LAST_OUTPUT = r"""
[[ -d $1 ]] || exit 0
find "$1" -mindepth 2 -maxdepth 2 \( -name stdout -o -name stderr \) -printf '%T@\n' 2>/dev/null \
  | sort -n | tail -n 1
"""


def new_process_id() -> str:
    """Hex milliseconds since the epoch, then 4 random hex digits: unique, and sorted by start time.

    os.urandom is what secrets.token_hex reads; importing secrets (hmac, random) would cost every exec
    about 5 ms, since the provider loads this module with it."""
    return f"{time.time_ns() // 1_000_000:011x}{os.urandom(2).hex()}"


def valid_process_id(pid: str) -> bool:
    """Ids become path segments in the sandbox: only ones this module could have made are accepted."""
    return 1 <= len(pid) <= 32 and all(c in "0123456789abcdef" for c in pid)


def parse_listing(raw: bytes) -> list[ProcessInfo]:
    """Parse LIST's output."""
    tokens = raw.split(b"\0")
    found: list[ProcessInfo] = []
    i = 0
    while i + 4 <= len(tokens) - 1:
        pid, status, cwd, argc = (t.decode("utf-8", "replace") for t in tokens[i : i + 4])
        try:
            n = int(argc)
        except ValueError:
            break
        argv = tuple(t.decode("utf-8", "replace") for t in tokens[i + 4 : i + 4 + n])
        i += 4 + n
        code = int(status) if status.lstrip("-").isdigit() and status != "-" else None
        found.append(ProcessInfo(pid, argv, cwd, running=status == "-", exit_code=code))
    return found


def parse_output(raw: bytes) -> tuple[bytes, bytes]:
    """Parse OUTPUT's output."""
    head, _, rest = raw.partition(b"\n")
    sizes = head.split()
    out_n, err_n = (int(sizes[0]), int(sizes[1])) if len(sizes) == 2 else (0, 0)
    return rest[:out_n], rest[out_n : out_n + err_n]


def parse_last_output(raw: bytes) -> datetime | None:
    """Parse LAST_OUTPUT's output."""
    text = raw.decode("ascii", "replace").strip()
    try:
        return datetime.fromtimestamp(float(text), UTC) if text else None
    except ValueError:
        return None
