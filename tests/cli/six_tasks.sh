#!/usr/bin/env bash
# With a PM agent alive and six tasks queued under cap 3, the daemon runs exactly three dev
# agents at the peak (counted by the agents themselves) and completes all six once, writing
# every event.
source "$(dirname "$0")/lib.sh"
open_fifos

# The PM: alive for the whole test, never counted toward the cap.
expect_rc 0 ku start --role pm --id pm -- sleep 300
read -r pm_id pm_pid <"$T/out"
[ "$pm_id" = pm ] && [ "$pm_pid" -gt 0 ] || fail "start --role pm printed '$(cat "$T/out")'"
# A second PM is refused like a full cap.
expect_rc 75 ku start --role pm --id pm2 -- sleep 300

for i in 1 2 3 4 5 6; do
    expect_rc 0 ku enqueue --id "t$i" -- "$PROBE" "$T/counter" --ready "$T/ready" --hold "$T/hold" --record "$T/runs"
    [ "$(cat "$T/out")" = "t$i" ] || fail "enqueue printed '$(cat "$T/out")'"
done
ku_bg daemon

await_ready 3                      # three agents run and hold...
[ "$(counter live)" -eq 3 ] || fail "live agents: $(counter live)"
[ "$(json_get "j['live']")" -eq 3 ] || fail "status says live $(json_get "j['live']")"
[ "$(json_get "j['pm_live']")" -eq 1 ] || fail "the PM is not live"
[ "$(json_get "sum(t['state']=='pending' for t in j['tasks'])")" -eq 3 ] || fail "three tasks should wait"
release_agents                     # ...and once released, the other three run
expect_rc 0 ku wait t1 t2 t3 t4 t5 t6

[ "$(counter peak)" -eq 3 ] || fail "peak of live dev agents: $(counter peak), expected exactly 3"
[ "$(counter total)" -eq 6 ] || fail "agents run: $(counter total), expected 6"
[ "$(sort "$T/runs" | uniq -d | wc -l)" -eq 0 ] || fail "a task ran twice: $(sort "$T/runs" | uniq -d)"
for i in 1 2 3 4 5 6; do
    [ "$(state "t$i")" = completed ] || fail "t$i is $(state "t$i")"
    for e in task_queued task_dequeued task_started task_completed; do
        [ "$(events_of "$e" "t$i")" -eq 1 ] || fail "t$i: $(events_of "$e" "t$i") $e events, expected 1"
    done
done
[ "$(events_of task_error)" -eq 0 ] || fail "unexpected task_error events"
[ "$(events_of task_started pm)" -eq 1 ] || fail "no task_started for the PM"
[ "$(state pm)" = running ] || fail "the PM is $(state pm)"
echo "peak $(counter peak), total $(counter total), events $(wc -l <"$KUGETSU_HOME/events.jsonl")"
