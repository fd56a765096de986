#!/usr/bin/env bash
# Installs the dependencies (if missing), configures a preset (default `dev`; `asan` runs the
# same suite under AddressSanitizer + UndefinedBehaviorSanitizer, but for the tests labelled
# `heavy`), builds, runs the tests.
#   bash scripts/test.sh [PRESET]
# Exits with ctest's status.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
preset=${1:-dev}

bash scripts/setup-debian.sh
cmake --preset "$preset"
cmake --build --preset "$preset" -j2

# Under the sanitizers (several times slower) the tests labelled `heavy` (the simulator's
# largest exhaustive searches) are left out: the dev suite runs them, and the smaller searches
# exercise the same code under ASan + UBSan.
skip=()
[ "$preset" = asan ] && skip=(-LE heavy)
status=0
ctest --test-dir "build/$preset" --output-on-failure -j2 "${skip[@]}" || status=$?
exit "$status"
