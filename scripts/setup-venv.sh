#!/usr/bin/env bash
# Create .venv and install the project with its dev tools. Idempotent; fast when nothing changed.
set -euo pipefail
cd "$(dirname "$0")/.."

if ! command -v python3 >/dev/null 2>&1; then
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq python3 python3-venv python3-pip
fi
if ! python3 -c 'import sys; sys.exit(sys.version_info < (3, 11))'; then
    echo "sandbox-lifecycle needs Python >= 3.11, found $(python3 --version)" >&2
    exit 1
fi
if [ ! -x .venv/bin/python ]; then
    if ! python3 -m venv .venv 2>/dev/null; then
        apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq python3-venv
        rm -rf .venv
        python3 -m venv .venv
    fi
fi
stamp=.venv/.installed-$(sha256sum pyproject.toml | cut -c1-16)
if [ ! -e "$stamp" ]; then
    echo "setup-venv: installing sandbox-lifecycle and its dev tools into .venv" >&2
    # Quiet unless it fails: then the whole pip log is shown.
    if ! { .venv/bin/python -m pip install -q --upgrade pip \
        && .venv/bin/python -m pip install -q -e '.[dev]'; } >.venv/pip.log 2>&1; then
        cat .venv/pip.log >&2
        exit 1
    fi
    rm -f .venv/.installed-*
    touch "$stamp"
fi
