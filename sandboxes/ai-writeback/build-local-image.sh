#!/usr/bin/env bash
# Build the ai-writeback sandbox image for the Docker provider on this machine: tag $SANDBOX_AI_WRITEBACK_DOCKER_IMAGE
# (default lightdash-ai-writeback:local), FROM the local registry-free Debian base (built first when missing).
# Extra arguments go to `docker build` (e.g. --no-cache). See ../lib/build-local.sh for the env knobs.
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
# shellcheck source-path=SCRIPTDIR source=../lib/build-local.sh
source "$here/../lib/build-local.sh"
# SANDBOX_INSTALL_DBT=0 skips dbt (default 1).
# SANDBOX_INSTALL_LIGHTDASH_CLI=1 installs the Lightdash CLI (default 0 here: its npm package cannot be
# fetched on this build machine; published builds install it, the Dockerfile's default). Without it the
# ai-writeback job validates with `dbt parse`.
lightdash_cli="${SANDBOX_INSTALL_LIGHTDASH_CLI:-0}"
[[ "$lightdash_cli" == 1 ]] || echo "[build-local-image] without the Lightdash CLI (SANDBOX_INSTALL_LIGHTDASH_CLI=1 adds it)" >&2
build_local_image "${SANDBOX_AI_WRITEBACK_DOCKER_IMAGE:-lightdash-ai-writeback:local}" "$here" \
    --build-arg "INSTALL_DBT=${SANDBOX_INSTALL_DBT:-1}" \
    --build-arg "INSTALL_LIGHTDASH_CLI=$lightdash_cli" "$@"
