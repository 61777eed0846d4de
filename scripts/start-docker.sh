#!/usr/bin/env bash
# Make a Docker engine answer on this machine and make sure the local sandbox images exist, idempotently.
# Run as root on Debian. A no-op (beyond three quick checks) when that, and runsc, is already there.
#
# Installs Debian's docker.io when dockerd is missing, and Debian's runsc (gVisor, which
# SANDBOX_PROVIDER=gvisor runs sandboxes under) when runsc is missing; starts the engine with systemd where
# systemd runs, otherwise as a background dockerd logging to $DOCKERD_LOG. runsc is installed here, not
# registered: registering a runtime takes an engine restart, and this engine may run containers this
# script did not start; scripts/fresh-engine.sh registers it in the engines it starts. Images are built
# by the sandboxes/ scripts, from a local debootstrapped base: no container registry is needed.
#
# Env: DOCKERD_LOG (default /var/log/sandbox-dockerd.log), DOCKER_WAIT_SECONDS (default 60),
#      SANDBOX_DOCKER_IMAGE, SANDBOX_AI_WRITEBACK_DOCKER_IMAGE (the tags to ensure), SANDBOX_SKIP_IMAGES=1.
set -euo pipefail
cd "$(dirname "$0")/.."

LOG="${DOCKERD_LOG:-/var/log/sandbox-dockerd.log}"
WAIT_SECONDS="${DOCKER_WAIT_SECONDS:-60}"

log() { echo "start-docker: $*" >&2; }

engine_answers() { docker info >/dev/null 2>&1; }

wait_for_engine() {
    local pid="${1:-}"
    for _ in $(seq 1 "$WAIT_SECONDS"); do
        engine_answers && return 0
        # A dockerd that already exited will not come up: stop waiting for it.
        if [[ -n "$pid" ]] && ! kill -0 "$pid" 2>/dev/null; then
            return 1
        fi
        sleep 1
    done
    return 1
}

# Start dockerd with the given flags in the background; succeed once the engine answers. On failure the
# dockerd we started is stopped, so the next attempt does not trip over its pid file or sockets.
start_dockerd() {
    log "starting dockerd${*:+ $*} (log: $LOG)"
    echo "=== $(date -u +%FT%TZ) dockerd $*" >>"$LOG"
    setsid nohup dockerd "$@" >>"$LOG" 2>&1 </dev/null &
    local pid=$!
    if wait_for_engine "$pid"; then
        return 0
    fi
    kill "$pid" 2>/dev/null || true
    for _ in $(seq 1 20); do
        kill -0 "$pid" 2>/dev/null || break
        sleep 0.5
    done
    kill -KILL "$pid" 2>/dev/null || true
    return 1
}

if engine_answers; then
    log "the Docker engine already answers"
else
    if [[ $EUID -ne 0 ]]; then
        log "the Docker engine does not answer and starting it needs root: run this as root"
        exit 1
    fi
    if ! command -v dockerd >/dev/null 2>&1; then
        log "installing docker.io"
        export DEBIAN_FRONTEND=noninteractive
        apt-get update -qq >&2
        apt-get install -y -qq docker.io >&2
    fi
    if [[ -d /run/systemd/system ]]; then
        log "starting docker with systemd"
        systemctl start docker
        wait_for_engine || { log "docker did not answer within ${WAIT_SECONDS}s; see journalctl -u docker"; exit 1; }
    # The defaults (overlay2, iptables NAT, docker0 bridge) work on this VM kind. The fallback is for a
    # more restricted kernel (no overlayfs or netfilter): vfs storage and no bridge. Sandboxes use
    # network_mode=none and never need the bridge; image builds then use the host network instead.
    elif ! start_dockerd && ! start_dockerd --storage-driver=vfs --iptables=false --ip6tables=false --bridge=none
    then
        tail -n 30 "$LOG" >&2 || true
        log "dockerd did not answer within ${WAIT_SECONDS}s with either flag set; its log is $LOG"
        exit 1
    fi
fi

if ! command -v runsc >/dev/null 2>&1; then
    if [[ $EUID -eq 0 ]]; then
        log "installing runsc (gVisor)"
        export DEBIAN_FRONTEND=noninteractive
        apt-get update -qq >&2
        apt-get install -y -qq runsc >&2
    else
        log "runsc (gVisor) is missing and installing it needs root: the gvisor tests will skip"
    fi
fi

if [[ "${SANDBOX_SKIP_IMAGES:-0}" == 1 ]]; then
    exit 0
fi
ensure_image() {
    local tag="$1" script="$2"
    if docker image inspect "$tag" >/dev/null 2>&1; then
        log "image $tag present"
    else
        log "image $tag missing: building it with $script"
        "$script"
    fi
}
ensure_image "${SANDBOX_DOCKER_IMAGE:-lightdash-sandbox:local}" sandboxes/data-apps/build-local-image.sh
ensure_image "${SANDBOX_AI_WRITEBACK_DOCKER_IMAGE:-lightdash-ai-writeback:local}" \
    sandboxes/ai-writeback/build-local-image.sh
