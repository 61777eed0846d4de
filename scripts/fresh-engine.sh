#!/usr/bin/env bash
# A Docker engine started fresh for one test run, so that nothing an earlier run (or a long-lived engine)
# left behind can make a run pass: its own data root, exec root, socket and pid file, in a network
# namespace of its own, so it never touches this machine's docker0, iptables rules or containers.
# A first-start engine is also the one a newcomer has (its default bridge reports no Gateway).
#
#   scripts/fresh-engine.sh start NAME   start it, load the sandbox images from the machine's engine,
#                                        print its DOCKER_HOST on stdout
#   scripts/fresh-engine.sh stop NAME    stop it and remove everything it had (idempotent)
#
# Whatever must talk to the engine's containers from this host (the test suite: it serves models and git
# repositories on the bridge address) runs in the same namespace: `nsenter --net=/var/run/netns/NAME`.
# `ip netns exec` will not do: it remounts /sys, which hides the cgroup mounts dockerd needs.
# Run as root on Debian, after scripts/start-docker.sh (which installs dockerd and runsc and builds the images).
#
# gVisor's runsc is registered here as the runtime `runsc` (what SANDBOX_PROVIDER=gvisor runs sandboxes
# under), and only here: registering a runtime takes an engine start, and the machine's long-lived engine
# runs containers this script did not start. `--network=host` is runsc's own flag: its netstack cannot run
# on this kernel, so it uses the network namespace the engine made for the container (still the
# sandbox's internal network behind the egress point, never the host's).
# Env: SANDBOX_DOCKER_IMAGE, SANDBOX_AI_WRITEBACK_DOCKER_IMAGE (the images to load), DOCKER_WAIT_SECONDS.
set -euo pipefail

cmd="${1:-}" name="${2:-}"
if [[ -z "$cmd" || ! "$name" =~ ^[a-z0-9][a-z0-9-]{0,14}$ ]]; then
    echo "usage: $0 start|stop NAME (NAME: up to 15 lower-case letters, digits, '-')" >&2
    exit 2
fi
log() { echo "fresh-engine: $*" >&2; }

netns="$name"
data_root="/var/lib/sandbox-test-engines/$name"
# Short: containerd's sockets live under it, and a unix socket path is at most 108 bytes.
exec_root="/run/sbxe-$name"
socket="$exec_root/docker.sock"
pidfile="$exec_root/dockerd.pid"
logfile="/var/log/sandbox-test-engine-$name.log"
wait_seconds="${DOCKER_WAIT_SECONDS:-60}"

stop() {
    if [[ -s "$pidfile" ]]; then
        local pid
        pid="$(cat "$pidfile")"
        kill "$pid" 2>/dev/null || true
        for _ in $(seq 1 60); do
            kill -0 "$pid" 2>/dev/null || break
            sleep 0.5
        done
        kill -KILL "$pid" 2>/dev/null || true
    fi
    # What a killed engine left mounted under its roots (overlay layers, netns files, shm).
    grep -oE " ($data_root|$exec_root)/[^ ]*" /proc/mounts | sort -r | xargs -r -n1 umount -l 2>/dev/null || true
    rm -rf "$data_root" "$exec_root"
    ip netns del "$netns" 2>/dev/null || true
}

case "$cmd" in
stop)
    stop
    log "stopped engine $name"
    exit 0
    ;;
start) ;;
*)
    echo "usage: $0 start|stop NAME" >&2
    exit 2
    ;;
esac

command -v dockerd >/dev/null || { log "dockerd is missing: run scripts/start-docker.sh first"; exit 1; }
stop  # a same-named engine of a killed run: never build on its remains
start=$SECONDS
ip netns add "$netns"
ip -n "$netns" link set lo up
mkdir -p "$data_root" "$exec_root"
# The machine's daemon.json (what dockerd reads without --config-file), plus the runsc runtime if installed.
config="$exec_root/daemon.json"
RUNSC="$(command -v runsc || true)" python3 - "$config" <<'PY'
import json, os, sys

try:
    with open("/etc/docker/daemon.json") as machine:
        config = json.load(machine)
except FileNotFoundError:
    config = {}
if os.environ["RUNSC"]:
    runtimes = config.setdefault("runtimes", {})
    runtimes["runsc"] = {"path": os.environ["RUNSC"], "runtimeArgs": ["--network=host"]}
with open(sys.argv[1], "w") as out:
    json.dump(config, out)
PY
echo "=== $(date -u +%FT%TZ) fresh engine $name" >>"$logfile"
nsenter --net="/var/run/netns/$netns" setsid dockerd --config-file "$config" \
    --data-root "$data_root" --exec-root "$exec_root" -H "unix://$socket" --pidfile "$pidfile" \
    >>"$logfile" 2>&1 </dev/null &
export DOCKER_HOST="unix://$socket"
for _ in $(seq 1 "$wait_seconds"); do
    docker info >/dev/null 2>&1 && break
    sleep 1
done
if ! docker info >/dev/null 2>&1; then
    tail -n 30 "$logfile" >&2
    log "the engine did not answer within ${wait_seconds}s (log: $logfile)"
    stop
    exit 1
fi
log "engine $name up after $((SECONDS - start))s"

images=("${SANDBOX_DOCKER_IMAGE:-lightdash-sandbox:local}" "${SANDBOX_AI_WRITEBACK_DOCKER_IMAGE:-lightdash-ai-writeback:local}")
loaded=$SECONDS
# From the machine's engine (scripts/start-docker.sh built them there); this namespace has no way out
# to fetch packages, and a rebuild would take minutes.
DOCKER_HOST="${SANDBOX_IMAGE_SOURCE_HOST:-unix:///var/run/docker.sock}" docker save "${images[@]}" | docker load -q >&2
log "images loaded in $((SECONDS - loaded))s"
echo "$DOCKER_HOST"
