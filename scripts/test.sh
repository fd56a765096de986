#!/usr/bin/env bash
# Installs the dependencies (if missing), configures the `dev` preset, builds, runs every test.
# Exits with ctest's status.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

bash scripts/setup-debian.sh
cmake --preset dev
cmake --build --preset dev -j2

status=0
ctest --test-dir build/dev --output-on-failure -j2 || status=$?
exit "$status"
