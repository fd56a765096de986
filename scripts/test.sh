#!/usr/bin/env bash
# Installs the dependencies (if missing), configures a preset (default `dev`; `asan` runs the
# same suite under AddressSanitizer + UndefinedBehaviorSanitizer), builds, runs every test.
#   bash scripts/test.sh [PRESET]
# Exits with ctest's status.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
preset=${1:-dev}

bash scripts/setup-debian.sh
cmake --preset "$preset"
cmake --build --preset "$preset" -j2

status=0
ctest --test-dir "build/$preset" --output-on-failure -j2 || status=$?
exit "$status"
