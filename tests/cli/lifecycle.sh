#!/usr/bin/env bash
# restart, retry --failed, remove: finished tasks run again under their ids with their
# history kept; tasks are removed with their logs; running tasks and bad ids are refused
# with exit 64/65 and nothing changed.
source "$(dirname "$0")/lib.sh"

# A snapshot of what a refusal must not change: every task's id, state, run and attempts.
snapshot() { json_get "sorted((t['id'], t['state'], t['run'], t['attempts']) for t in j['tasks'])"; }

expect_rc 0 ku start --id ok -- sh -c 'echo run-ok'
expect_rc 0 ku start --id bad -- sh -c 'echo run-bad; exit 3'
expect_rc 3 ku wait ok bad   # bad exited 3: its status
[ "$(state ok)" = completed ] && [ "$(state bad)" = error ] || fail "ok $(state ok), bad $(state bad)"
expect_rc 0 ku enqueue --id queued -- true
expect_rc 0 ku config cap 1
expect_rc 0 ku start --id busy -- sleep 60

# restart: a running or pending task refuses the whole call (64), naming it; nothing changes.
before=$(snapshot)
expect_rc 64 ku restart ok busy
grep -q '"busy" is running' "$T/err" || fail "restart of a running task said: $(cat "$T/err")"
expect_rc 64 ku restart queued
grep -q '"queued" is pending' "$T/err" || fail "restart of a pending task said: $(cat "$T/err")"
expect_rc 65 ku restart ok nosuch
grep -q 'no task "nosuch"' "$T/err" || fail "restart of an unknown task said: $(cat "$T/err")"
expect_rc 65 ku restart ok 'a/b'
grep -q '"a/b" is not a task id' "$T/err" || fail "restart of a bad id said: $(cat "$T/err")"
expect_rc 65 ku restart "$(printf 'x\ny')"
[ "$(wc -l <"$T/err")" -eq 1 ] || fail "an id with a newline broke the message over lines: $(cat "$T/err")"
[ "$(snapshot)" = "$before" ] || fail "a refused restart changed: $before -> $(snapshot)"
expect_rc 64 ku retry
grep -q -- '--failed' "$T/err" || fail "retry without --failed said: $(cat "$T/err")"

# restart ok: pending again as run 2, with run 1 in status --json; it runs again.
expect_rc 0 ku restart ok
[ "$(cat "$T/out")" = "ok pending (run 2)" ] || fail "restart printed: $(cat "$T/out")"
[ "$(json_get "next(t['run'] for t in j['tasks'] if t['id']=='ok')")" = 2 ] || fail "run number"
[ "$(json_get "[(r['state'], r['exit_code'], r['attempts']) for t in j['tasks'] if t['id']=='ok' for r in t['runs']]")" = "[('completed', 0, 1)]" ] \
    || fail "runs of ok: $(json_get "[t['runs'] for t in j['tasks'] if t['id']=='ok']")"
[ "$(events_of task_queued ok)" = 1 ] || fail "ok was queued $(events_of task_queued ok) times before its restart"
ku events | grep '"task_id":"ok"' | grep -q '"reason":"restarted"' || fail "no task_queued (restarted) event"
expect_rc 0 ku cancel busy
expect_rc 0 ku config cap 3
expect_rc 0 ku daemon --once
expect_rc 0 ku wait ok queued
expect_rc 0 ku logs ok
[ "$(grep -c run-ok "$T/out")" -eq 2 ] || fail "the log of ok does not hold both runs: $(cat "$T/out")"

# retry --failed: every task in error, and only those; its exit code goes with run 1.
expect_rc 0 ku retry --failed
[ "$(cat "$T/out")" = "bad pending (run 2)" ] || fail "retry printed: $(cat "$T/out")"
[ "$(state ok)" = completed ] || fail "retry touched ok: $(state ok)"
[ "$(json_get "[r['exit_code'] for t in j['tasks'] if t['id']=='bad' for r in t['runs']]")" = "[3]" ] || fail "runs of bad"
expect_rc 0 ku daemon --once
expect_rc 3 ku wait bad
expect_rc 0 ku restart bad ok   # all or none, and both at once
expect_rc 0 ku retry --failed   # nothing failed now
grep -q 'no task in state error' "$T/err" || fail "retry with nothing to do said: $(cat "$T/err")"

# remove: pending and finished tasks and their logs; a running one refuses the whole call.
expect_rc 0 ku start --id live -- sleep 60
expect_rc 0 ku daemon --once
expect_rc 3 ku wait ok bad
before=$(snapshot)
expect_rc 64 ku remove queued live
grep -q '"live" is running' "$T/err" || fail "remove of a running task said: $(cat "$T/err")"
[ "$(snapshot)" = "$before" ] || fail "a refused remove changed: $before -> $(snapshot)"
[ -e "$KUGETSU_HOME/logs/queued.log" ] || fail "a refused remove deleted a log"
expect_rc 0 ku remove queued busy
printf 'queued removed (was completed)\nbusy removed (was cancelled)\n' | cmp -s - "$T/out" || fail "remove printed: $(cat "$T/out")"
[ ! -e "$KUGETSU_HOME/logs/queued.log" ] || fail "the log of a removed task is still there"
json_get "[t['id'] for t in j['tasks']]" | grep -q "'queued'" && fail "queued is still listed"
[ "$(events_of task_removed queued)" = 1 ] || fail "no task_removed event for queued"
expect_rc 65 ku remove queued
# The id is free again: a new task, run 1.
expect_rc 0 ku enqueue --id queued -- true
[ "$(json_get "next(t['run'] for t in j['tasks'] if t['id']=='queued')")" = 1 ] || fail "a new task took the old runs"

# Ids that start with '-' are refused for new tasks, with the reason, whatever the spelling.
for spelling in --id=-x "--id -x"; do
    # shellcheck disable=SC2086
    expect_rc 65 ku enqueue $spelling -- true
    grep -q "nor with '-' for a new task" "$T/err" || fail "enqueue $spelling said: $(cat "$T/err")"
done
expect_rc 65 ku start --id -y -- true
expect_rc 65 ku remove -- -x
grep -q 'no task "-x"' "$T/err" || fail "remove -- -x said: $(cat "$T/err")"

# wait: the status of the first task (in the order given) that did not complete: its exit
# code, 124 timeout, 125 cancelled, 126 never started, 127 exit code unknown; --json gives all.
export KUGETSU_HOME="$T/w"
expect_rc 0 ku config cap 5
expect_rc 0 ku start --id w-ok -- true
expect_rc 0 ku start --id w-five -- sh -c 'exit 5'
expect_rc 0 ku start --id w-slow --timeout 0.2 -- sleep 30
expect_rc 1 ku start --id w-nope -- /no/such/program
expect_rc 0 ku enqueue --id w-cancel -- true
expect_rc 0 ku cancel w-cancel
expect_rc 0 ku wait w-ok
expect_rc 5 ku wait w-ok w-five w-slow
expect_rc 124 ku wait w-slow w-five
expect_rc 125 ku wait w-cancel
expect_rc 126 ku wait w-nope w-ok
grep -q '^kugetsu: task w-nope: error: .*(status 126)$' "$T/err" || fail "wait said: $(cat "$T/err")"
expect_rc 5 ku wait --json w-ok w-five w-slow w-cancel w-nope
python3 - "$T/out" <<'PY' || fail "wait --json: $(cat "$T/out")"
import json, sys
j = json.load(open(sys.argv[1]))
assert j["status"] == 5, j
got = [(t["id"], t["state"], t["exit_code"], t["status"]) for t in j["tasks"]]
assert got[:2] == [("w-ok", "completed", 0, 0), ("w-five", "error", 5, 5)], got
assert got[2][0] == "w-slow" and got[2][3] == 124, got
assert got[3] == ("w-cancel", "cancelled", None, 125), got
assert got[4] == ("w-nope", "error", None, 126), got
PY
[ ! -s "$T/err" ] || fail "wait --json also wrote to stderr: $(cat "$T/err")"

# clean: finished tasks go with their logs and their lines of events.jsonl (and their events
# in the store), by state and by age; running tasks, pending ones and a task that a waiting
# one runs after stay; bad input is refused with 64 and nothing deleted.
export KUGETSU_HOME="$T/c"
expect_rc 0 ku config cap 3
expect_rc 0 ku start --id c-ok -- echo out
expect_rc 0 ku start --id c-bad -- sh -c 'echo err; exit 2'
expect_rc 2 ku wait c-ok c-bad
expect_rc 0 ku start --id c-run -- sleep 60
expect_rc 0 ku start --id c-dep -- true
expect_rc 0 ku wait c-dep
expect_rc 0 ku enqueue --id c-waits --after c-dep,c-run -- true
expect_rc 0 ku enqueue --id c-queued -- true
before=$(snapshot)
expect_rc 64 ku clean --state running
grep -q 'clean removes finished tasks only' "$T/err" || fail "clean --state running said: $(cat "$T/err")"
expect_rc 64 ku clean --older-than 3x
grep -q -- '--older-than "3x" is not a duration' "$T/err" || fail "clean --older-than 3x said: $(cat "$T/err")"
expect_rc 0 ku clean --older-than 1h
[ "$(cat "$T/out")" = "0 tasks deleted, 0 logs, 0 lines of events.jsonl" ] || fail "clean --older-than 1h: $(cat "$T/out")"
[ "$(snapshot)" = "$before" ] || fail "a clean that matched nothing changed the queue"
expect_rc 0 ku clean --state error
[ "$(cat "$T/out")" = "1 task deleted, 1 log, 2 lines of events.jsonl" ] || fail "clean --state error: $(cat "$T/out")"
[ ! -e "$KUGETSU_HOME/logs/c-bad.log" ] && [ -e "$KUGETSU_HOME/logs/c-ok.log" ] || fail "logs after clean --state error"
expect_rc 0 ku clean --json
python3 -c 'import json,sys; j=json.load(open(sys.argv[1])); assert j["removed"]==["c-ok"] and j["logs_deleted"]==1, j' "$T/out" \
    || fail "clean --json: $(cat "$T/out")"
[ "$(json_get "sorted(t['id'] for t in j['tasks'])")" = "['c-dep', 'c-queued', 'c-run', 'c-waits']" ] \
    || fail "clean kept: $(json_get "sorted(t['id'] for t in j['tasks'])")"
! grep -q '"task_id":"c-ok"\|"task_id":"c-bad"' <(head -n -1 "$KUGETSU_HOME/events.jsonl") || fail "events.jsonl keeps lines of cleaned tasks"
[ "$(sqlite3 "$KUGETSU_HOME/state.db" "select count(*) from events where task_id in ('c-ok','c-bad') and seq < (select max(seq) from events)")" = 0 ] \
    || fail "the store keeps events of cleaned tasks"
ku events >"$T/ev.cli"
cmp -s "$T/ev.cli" "$KUGETSU_HOME/events.jsonl" || fail "kugetsu events and events.jsonl differ after clean"
# a daemon started before the clean appends to the compacted file
expect_rc 0 ku cancel c-run
expect_rc 0 ku daemon --once
# c-queued's end is recorded by its supervisor's reaper, which relays after its commit: wait
# for the end, then relay once more (under the events file's lock) before comparing.
expect_rc 0 ku wait c-queued
expect_rc 0 ku reap -q
[ "$(tail -1 "$KUGETSU_HOME/events.jsonl" | python3 -c 'import json,sys; print(json.load(sys.stdin)["seq"])')" = \
  "$(sqlite3 "$KUGETSU_HOME/state.db" 'select max(seq) from events')" ] || fail "events.jsonl did not go on after clean"
# A quarantined record: whichever command finds it first writes its task_error event (once),
# and status shows the task as quarantined, naming where its bytes are, until remove.
for first in "daemon --once" "status" "wait q-bad" "status --json q-bad"; do
    export KUGETSU_HOME="$T/q-$RANDOM"
    expect_rc 0 ku enqueue --id q-ok -- true
    expect_rc 0 ku enqueue --id q-bad -- true
    sqlite3 "$KUGETSU_HOME/state.db" "update tasks set record = '{broken' where id = 'q-bad'"
    # shellcheck disable=SC2086
    ku $first >/dev/null 2>"$T/first.err" || true
    grep -q 'tasks "q-bad": not valid JSON; kept in' "$T/first.err" || fail "$first said: $(cat "$T/first.err")"
    expect_rc 0 ku status
    grep -Eq '^q-bad +- +quarantined$' "$T/out" || fail "status after $first: $(cat "$T/out")"
    grep -q "kept in $KUGETSU_HOME/state.db, table quarantine, row 1: not valid JSON" "$T/out" || fail "status after $first: $(cat "$T/out")"
    grep -q '^tasks: .*, 1 quarantined$' "$T/out" || fail "summary after $first: $(sed -n 3p "$T/out")"
    [ "$(events_of task_error q-bad)" = 1 ] || fail "after $first: $(events_of task_error q-bad) task_error events for q-bad"
    grep '"task_id":"q-bad"' "$KUGETSU_HOME/events.jsonl" | grep -q '"reason":"quarantined"' || fail "no quarantined event after $first"
    expect_rc 65 ku wait q-bad
    grep -q 'table quarantine, row 1' "$T/err" || fail "wait of a quarantined task said: $(cat "$T/err")"
    expect_rc 0 ku status --state quarantined --json
    [ "$(python3 -c 'import json,sys; j=json.load(open(sys.argv[1])); print([(t["id"], t["state"], t["quarantine"]["row"]) for t in j["tasks"]], j["counts"]["quarantined"])' "$T/out")" = "[('q-bad', 'quarantined', 1)] 1" ] \
        || fail "status --state quarantined --json: $(cat "$T/out")"
done
expect_rc 0 ku remove q-bad
[ "$(cat "$T/out")" = "q-bad removed (was quarantined)" ] || fail "remove of a quarantined task said: $(cat "$T/out")"
expect_rc 0 ku status
! grep -q 'q-bad' "$T/out" || fail "status still shows q-bad after remove"
[ "$(sqlite3 "$KUGETSU_HOME/state.db" "select count(*) from quarantine where task_id = 'q-bad'")" = 0 ] || fail "quarantine rows left"
echo ok
