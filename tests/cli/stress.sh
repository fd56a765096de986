#!/usr/bin/env bash
# 8 concurrent `kugetsu start` callers and 2 daemons over one home, 200 short tasks, cap 3:
# the peak of live agents (recorded by the agents themselves) never exceeds the cap and every
# task completes exactly once. The same with the lock disabled (a test hook) exceeds the cap.
# Groups, dependencies and priorities are in the mix: every fourth task is in group g (cap 1,
# its agents count themselves in a counter of their own too), and every fifth is enqueued
# with a priority, --after the starter's task before it (the agents stamp their start and
# end with one monotonic clock, and no such task starts before its dependency ended).
#   stress.sh [--no-lock]
source "$(dirname "$0")/lib.sh"
no_lock=${1:-}

starters=8 per_starter=25 sleep_ms=20
if [ "$no_lock" = --no-lock ]; then
    # All eight starters meet between counting and spawning in their first start. Their agents
    # live 3 s, so that they overlap however slowly a loaded machine spawns them (with 20 ms,
    # a busy 2-core machine spread the eight spawns over more than 20 ms: peak 3, a flake).
    export KUGETSU_TEST_NO_LOCK=1 KUGETSU_TEST_BARRIER="$T/barrier:$starters"
    per_starter=2 sleep_ms=3000
fi
total=$((starters * per_starter))

[ "$no_lock" = --no-lock ] || expect_rc 0 ku config group g cap 1 >/dev/null
ku_bg daemon
ku_bg daemon

starter() {   # start, or enqueue when no slot is free
    local k=$1 i rc group agent
    for i in $(seq 1 "$per_starter"); do
        rc=0 group=() agent=("$PROBE" "$T/counter" --sleep "$sleep_ms" --record "$T/runs")
        if [ -z "$no_lock" ]; then
            agent+=(--stamp "$T/stamps")
            [ $((i % 4)) -eq 0 ] && group=(--group g) agent+=(--also "$T/counter-g")
            if [ $((i % 5)) -eq 0 ]; then   # queued, after the task before it
                "$KUGETSU" enqueue --id "s$k-$i" "${group[@]}" --priority $((i % 3)) --after "s$k-$((i - 1))" \
                    -- "${agent[@]}" >/dev/null 2>>"$T/starter.$k" || echo "enqueue s$k-$i failed" >>"$T/starter.$k.fail"
                echo "s$k-$i s$k-$((i - 1))" >>"$T/after"
                continue
            fi
        fi
        "$KUGETSU" start --id "s$k-$i" "${group[@]}" -- "${agent[@]}" >/dev/null 2>>"$T/starter.$k" || rc=$?
        if [ "$rc" -eq 75 ]; then
            "$KUGETSU" enqueue --id "s$k-$i" "${group[@]}" -- "${agent[@]}" >/dev/null 2>>"$T/starter.$k" ||
                { echo "enqueue s$k-$i failed" >>"$T/starter.$k.fail"; }
        elif [ "$rc" -ne 0 ]; then
            echo "start s$k-$i exited $rc" >>"$T/starter.$k.fail"
        fi
    done
}
pids=()
for k in $(seq 1 "$starters"); do starter "$k" & pids+=($!); done
wait "${pids[@]}"
if [ -z "$no_lock" ] && ls "$T"/starter.*.fail >/dev/null 2>&1; then fail "$(cat "$T"/starter.*.fail "$T"/starter.[0-9]*)"; fi

if [ "$no_lock" = --no-lock ]; then
    # Without the lock the state itself may be lost or overwritten (a task may never end), so
    # do not wait for the tasks: the eight starts that met at the barrier have run.
    agents_ran() { [ -s "$T/counter" ] && [ "$(counter total)" -ge "$starters" ]; }
    within 60 agents_ran
    peak=$(counter peak)
    echo "without the lock: peak $peak (cap 3), runs $(counter total)"
    [ "$peak" -gt "3" ] || fail "without the lock the peak should exceed the cap"
    exit 0
fi
expect_rc 0 ku wait
peak=$(counter peak)
runs=$(wc -l <"$T/runs")
twice=$(sort "$T/runs" | uniq -d | wc -l)
completed=$(json_get "sum(t['state']=='completed' and t['attempts']==1 for t in j['tasks'])")
echo "tasks $total, runs $runs, ran twice $twice, completed once $completed, peak $peak (cap 3)"
[ "$peak" -le "3" ] || fail "peak $peak exceeds the cap"
[ "$runs" -eq "$total" ] && [ "$twice" -eq 0 ] || fail "runs $runs, duplicates $twice"
[ "$completed" -eq "$total" ] || fail "completed $completed of $total"
[ "$(counter live)" -eq 0 ] || fail "live $(counter live) at the end"
[ "$(events_of task_started)" -eq "$total" ] || fail "task_started events: $(events_of task_started)"
# Group g: its agents' own peak; the dependencies: each waiting task started after its
# dependency's agent ended (one monotonic clock), and all of them ran.
read -r _ gpeak gtotal < <(flock -s "$T/counter-g" cat "$T/counter-g")
deps=$(wc -l <"$T/after")
early=$(python3 - "$T/stamps" "$T/after" <<'PY'
import sys
t = {}
for line in open(sys.argv[1]):
    tid, what, ns = line.split()
    t[(tid, what)] = int(ns)
bad = [a for a, b in (l.split() for l in open(sys.argv[2]))
       if (a, "start") not in t or (b, "end") not in t or t[(a, "start")] <= t[(b, "end")]]
print(len(bad), *bad[:3])
PY
)
echo "group g: peak $gpeak (cap 1), runs $gtotal; tasks run after another: $deps, started too early or not at all: $early"
[ "$gpeak" -le 1 ] || fail "group g peak $gpeak exceeds its cap 1"
[ "$gtotal" -eq $((starters * (per_starter / 4))) ] || fail "group g ran $gtotal tasks"
[ "${early%% *}" -eq 0 ] || fail "tasks started before their dependency ended: $early"
[ "$(events_of task_completed)" -eq "$total" ] || fail "task_completed events: $(events_of task_completed)"
[ "$(events_of task_error)" -eq 0 ] || fail "task_error events: $(events_of task_error)"
