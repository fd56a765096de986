#!/usr/bin/env bash
# The README's main job: the six-task race, side by side in the original ("legacy") design
# and the fixed one, in the deterministic simulator; then six real tasks under cap 3.
#
# 1. kugetsu-sim runs the race (6 tasks, cap 3, a PM agent, the queue daemon, 3 concurrent
#    starters) in both designs over the same seeded schedules and writes, for each, a summary
#    (JSON), a trace (JSON lines) and a timeline (SVG) into out/: the legacy timeline shows
#    more than three agents alive at once; the fixed one never does.
# 2. The fixed design's race is then checked exhaustively: every reachable state.
# 3. examples/01_six_tasks.cpp dispatches six real processes with cap 3; the agents count
#    themselves and print the peak (3).
#
# Installs the dependencies (if missing) and builds with the `release` preset. Exits 0 when
# the legacy design was caught, the fixed design broke nothing, and the real peak was 3.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

bash scripts/setup-debian.sh
cmake --preset release >/dev/null
cmake --build --preset release -j2 --target kugetsu-sim kugetsu-example-01_six_tasks

sim=build/release/sim/kugetsu-sim
mkdir -p out
status=0

echo "== the six-task race, original design =="
if "$sim" --scenario six-task-race --design legacy --seed 1 \
        --svg out/legacy.svg --trace out/legacy.jsonl; then
    echo "UNEXPECTED: the legacy design broke no invariant"; status=1
fi
"$sim" --scenario six-task-race --design legacy --seed 1 --json > out/legacy.json || true

echo
echo "== the six-task race, fixed design (same seed, same schedules) =="
"$sim" --scenario six-task-race --design fixed --seed 1 \
    --svg out/fixed.svg --trace out/fixed.jsonl || status=1
"$sim" --scenario six-task-race --design fixed --seed 1 --json > out/fixed.json || status=1

echo
echo "== the fixed design, every reachable state (daemon, PM and 3 starters) =="
"$sim" --scenario six-task-race --design fixed --explore exhaustive --json > out/fixed-exhaustive.json || status=1
cat out/fixed-exhaustive.json
echo

echo "timelines: out/legacy.svg out/fixed.svg; traces and summaries in out/"
echo
echo "== six real tasks, cap 3 =="
build/release/examples/kugetsu-example-01_six_tasks || status=1
exit "$status"
