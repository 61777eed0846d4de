# shellcheck shell=bash
# Shared by sandboxes/*/build-local-image.sh (sourced, not run): build a kind's image FROM the local
# registry-free base, building that base first when it is missing.
#
# build_local_image TAG CONTEXT_DIR [extra docker build args...]
# Env: SANDBOX_BASE_IMAGE (default sandbox-base:bookworm),
#      SANDBOX_INSTALL_AGENT_CLI (1 = install the agent CLI, the default; 0 = skip),
#      SANDBOX_BUILD_CA_FILE (PEM file of extra CAs trusted only during the build; default: the CAs added
#      locally under /usr/local/share/ca-certificates, which is where a TLS-intercepting proxy's CA lives).

build_local_image() {
    local tag="$1" context="$2"
    shift 2
    local here base ca_file ca_pem=""
    here="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
    base="${SANDBOX_BASE_IMAGE:-sandbox-base:bookworm}"

    if ! docker image inspect "$base" >/dev/null 2>&1; then
        SANDBOX_BASE_IMAGE="$base" "$here/build-base-image.sh"
    fi

    ca_file="${SANDBOX_BUILD_CA_FILE:-}"
    if [[ -n "$ca_file" ]]; then
        ca_pem="$(cat "$ca_file")"
    elif compgen -G '/usr/local/share/ca-certificates/*.crt' >/dev/null; then
        ca_pem="$(cat /usr/local/share/ca-certificates/*.crt)"
    fi

    # RUN steps fetch packages. An engine started without its bridge (see scripts/start-docker.sh) can
    # only give them the host's network.
    local network=()
    docker network inspect bridge >/dev/null 2>&1 || network=(--network host)

    local start=$SECONDS
    echo "[build-local-image] building $tag FROM $base" >&2
    # The legacy builder: it needs no buildx plugin (absent from Debian's docker.io) and builds against
    # the local image store, where the imported base lives.
    DOCKER_BUILDKIT=0 docker build \
        --build-arg "BASE_IMAGE=$base" \
        --build-arg "INSTALL_AGENT_CLI=${SANDBOX_INSTALL_AGENT_CLI:-1}" \
        --build-arg "BUILD_CA_CERTS=$ca_pem" \
        "${network[@]}" --tag "$tag" "$@" "$context"
    echo "[build-local-image] built $tag in $((SECONDS - start))s" \
        "($(docker image inspect -f '{{.Size}}' "$tag") bytes)" >&2
}
