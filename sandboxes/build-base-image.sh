#!/usr/bin/env bash
# Build the local base image `sandbox-base:bookworm` without any container registry:
# debootstrap a minimal Debian bookworm from the apt mirror this machine already uses, then
# `docker import` the rootfs. The rootfs tarball is cached so a rebuild (e.g. after `docker system prune`)
# takes seconds instead of minutes.
#
# Usage: sudo sandboxes/build-base-image.sh [--force]
# Env:   SANDBOX_BASE_IMAGE (default sandbox-base:bookworm), DEBIAN_MIRROR (default: from /etc/apt),
#        SANDBOX_CACHE_DIR (default /var/cache/sandbox-lifecycle)
set -euo pipefail

IMAGE="${SANDBOX_BASE_IMAGE:-sandbox-base:bookworm}"
SUITE=bookworm
CACHE_DIR="${SANDBOX_CACHE_DIR:-/var/cache/sandbox-lifecycle}"
ROOTFS_TAR="$CACHE_DIR/debian-$SUITE-minbase.tar"
FORCE=0
[[ "${1:-}" == "--force" ]] && FORCE=1

log() { printf '[build-base-image] %s\n' "$*" >&2; }

if [[ $FORCE -eq 0 ]] && docker image inspect "$IMAGE" >/dev/null 2>&1; then
    log "$IMAGE already exists; nothing to do (use --force to rebuild)"
    exit 0
fi

# A Debian archive URL apt is configured with (deb822 `URIs:` or one-line `deb URL suite ...`) whose path
# ends in $1 ("debian" for the main archive debootstrap needs, "debian-security" for updates); third-party
# repositories never match.
apt_mirror() {
    local files=(/etc/apt/sources.list /etc/apt/sources.list.d/*.list /etc/apt/sources.list.d/*.sources)
    cat "${files[@]}" 2>/dev/null \
        | sed -nE 's/^URIs:[[:space:]]+//p; s/^deb[[:space:]]+(\[[^]]*\][[:space:]]+)?([^[:space:]]+)[[:space:]].*/\2/p' \
        | tr ' ' '\n' | grep -E "/$1/?\$" | head -n 1 || true
}

if [[ $FORCE -eq 1 || ! -s "$ROOTFS_TAR" ]]; then
    command -v debootstrap >/dev/null || { apt-get update -q && apt-get install -y -q debootstrap; }
    MIRROR="${DEBIAN_MIRROR:-$(apt_mirror debian)}"
    MIRROR="${MIRROR:-http://deb.debian.org/debian}"
    SECURITY_MIRROR="${DEBIAN_SECURITY_MIRROR:-$(apt_mirror debian-security)}"
    SECURITY_MIRROR="${SECURITY_MIRROR:-http://deb.debian.org/debian-security}"
    mkdir -p "$CACHE_DIR"
    WORK="$(mktemp -d "$CACHE_DIR/rootfs.XXXXXX")"
    # Unmount anything debootstrap left mounted before deleting, or rm would walk into /proc.
    cleanup() {
        grep -o " $WORK/[^ ]*" /proc/mounts | sort -r | xargs -r -n1 umount -l 2>/dev/null || true
        rm -rf "$WORK"
    }
    trap cleanup EXIT
    log "debootstrap --variant=minbase $SUITE from $MIRROR (a few minutes on a cold cache)"
    start=$SECONDS
    debootstrap --variant=minbase --include=ca-certificates "$SUITE" "$WORK/rootfs" "$MIRROR" \
        >"$CACHE_DIR/debootstrap.log" 2>&1 \
        || { tail -n 30 "$CACHE_DIR/debootstrap.log" >&2; log "debootstrap failed (log: $CACHE_DIR/debootstrap.log)"; exit 1; }
    R="$WORK/rootfs"
    # Docker provides these per container; package caches only bloat the image.
    rm -rf "$R"/var/cache/apt/archives/*.deb "$R"/var/lib/apt/lists/* "$R"/etc/hostname "$R"/etc/resolv.conf
    printf 'deb %s %s main\ndeb %s %s-updates main\ndeb %s %s-security main\n' \
        "$MIRROR" "$SUITE" "$MIRROR" "$SUITE" "$SECURITY_MIRROR" "$SUITE" >"$R/etc/apt/sources.list"
    # Keep this image and everything installed on top of it small, the way Debian's -slim images do:
    # no recommends, no docs/man pages/translations (copyright files stay).
    printf 'APT::Install-Recommends "false";\nAPT::Install-Suggests "false";\n' \
        >"$R/etc/apt/apt.conf.d/90sandbox-no-recommends"
    cat >"$R/etc/dpkg/dpkg.cfg.d/90sandbox-slim" <<'SLIM'
path-exclude /usr/share/doc/*
path-include /usr/share/doc/*/copyright
path-exclude /usr/share/man/*
path-exclude /usr/share/info/*
path-exclude /usr/share/lintian/*
path-exclude /usr/share/locale/*
path-include /usr/share/locale/locale.alias
SLIM
    find "$R/usr/share/doc" -mindepth 1 -not -name copyright -not -type d -delete
    rm -rf "$R"/usr/share/man/* "$R"/usr/share/info/* "$R"/usr/share/lintian/*
    find "$R/usr/share/locale" -mindepth 1 -maxdepth 1 -not -name locale.alias -exec rm -rf {} +
    tar --numeric-owner -C "$R" -cf "$ROOTFS_TAR.tmp" .
    mv "$ROOTFS_TAR.tmp" "$ROOTFS_TAR"
    log "rootfs cached at $ROOTFS_TAR after $((SECONDS - start))s"
fi

docker import \
    --change 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
    --change 'ENV LANG=C.UTF-8' \
    --change 'CMD ["/bin/bash"]' \
    "$ROOTFS_TAR" "$IMAGE" >/dev/null
log "imported $IMAGE ($(docker image inspect -f '{{.Size}}' "$IMAGE") bytes)"
