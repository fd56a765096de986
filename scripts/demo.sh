#!/usr/bin/env bash
# The README's main job: the six-task race, side by side in the original ("legacy") design
# and the fixed one, in the deterministic simulator; then six real tasks under cap 3.
#
# 1. kugetsu-sim runs the race (6 tasks, cap 3, a PM agent, the queue daemon, 3 concurrent
#    starters) in both designs over the same seeded schedules and writes, for each, a summary
#    (JSON), a trace (JSON lines) and a timeline (SVG) into out/: the legacy timeline shows
#    more than three agents alive at once; the fixed one never does.
# 2. The fixed design's race is then checked exhaustively: every state reachable with one agent
#    ending at any step where agents are looked at (the others at their drawn times), no kill.
# 3. The same on real processes, through the `kugetsu` command: a PM agent, six queued tasks,
#    cap 3, `kugetsu daemon`. Each agent (tests/helpers/probe_agent.cpp) counts itself in a
#    file it locks, independently of kugetsu; the script prints the peak of live dev agents
#    (3), `kugetsu status` and the event log.
#
# Installs the dependencies (if missing) and builds with the `release` preset. Exits 0 when
# the legacy design was caught, the fixed design broke nothing, and the real peak was 3.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

bash scripts/setup-debian.sh
# The probe agent is a test helper: asked for even if this tree was configured without tests.
cmake --preset release -DKUGETSU_BUILD_TESTS=ON >/dev/null
cmake --build --preset release -j2 --target kugetsu-sim kugetsu-cli kugetsu-probe-agent

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
echo "== the fixed design, every state reachable with one agent ending by choice (daemon, PM, 3 starters; half a minute on 2 cores) =="
"$sim" --scenario six-task-race --design fixed --explore exhaustive --json > out/fixed-exhaustive.json || status=1
cat out/fixed-exhaustive.json
echo

echo "timelines: out/legacy.svg out/fixed.svg; traces and summaries in out/"
echo
echo "== a PM agent and six real tasks, cap 3, through the kugetsu command =="
kugetsu=$PWD/build/release/cli/kugetsu
probe=$PWD/build/release/tests/kugetsu-probe-agent
work=$(mktemp -d "${TMPDIR:-/tmp}/kugetsu-demo.XXXXXX")
export KUGETSU_HOME=$work/home MAX_CONCURRENT_AGENTS=3
daemon=
finish() { [ -z "$daemon" ] || kill -TERM "$daemon" 2>/dev/null; "$kugetsu" cancel pm >/dev/null 2>&1; rm -rf "$work"; }
trap finish EXIT
echo "\$ kugetsu start --role pm --id pm -- sleep 600"
"$kugetsu" start --role pm --id pm -- sleep 600
for i in 1 2 3 4 5 6; do
    "$kugetsu" enqueue --id "task-$i" -- "$probe" "$work/counter" --sleep 500 >/dev/null
done
echo "\$ kugetsu enqueue --id task-N -- probe-agent COUNTER --sleep 500     (N = 1..6)"
"$kugetsu" daemon & daemon=$!
echo "\$ kugetsu daemon &; kugetsu wait task-1 ... task-6"
"$kugetsu" wait task-1 task-2 task-3 task-4 task-5 task-6 || status=1
read -r live peak total <"$work/counter"
echo "peak of live dev agents, as the agents counted: $peak (cap 3); agents run: $total; live now: $live"
[ "$peak" -eq 3 ] && [ "$total" -eq 6 ] || status=1
echo "\$ kugetsu status"
"$kugetsu" status
echo "\$ kugetsu events"
"$kugetsu" events
exit "$status"
