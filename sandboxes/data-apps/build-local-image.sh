#!/usr/bin/env bash
# Build the data-apps sandbox image for the Docker provider on this machine: tag $SANDBOX_DOCKER_IMAGE
# (default lightdash-sandbox:local), FROM the local registry-free Debian base (built first when missing).
# Extra arguments go to `docker build` (e.g. --no-cache). See ../lib/build-local.sh for the env knobs.
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
# shellcheck source-path=SCRIPTDIR source=../lib/build-local.sh
source "$here/../lib/build-local.sh"
build_local_image "${SANDBOX_DOCKER_IMAGE:-lightdash-sandbox:local}" "$here" "$@"
