#!/usr/bin/env bash
# Install Debian's Chromium for the console's browser tests (tests/integration/adapters/console), idempotently.
# Run as root on Debian. Playwright drives this browser (executable_path=/usr/bin/chromium): the tests never
# run `playwright install`, which would download a browser build from outside the distribution.
set -euo pipefail

if [ -x /usr/bin/chromium ]; then
    exit 0
fi
echo "install-chromium: installing chromium" >&2
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq >&2
apt-get install -y -qq chromium >&2
