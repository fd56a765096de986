#!/usr/bin/env bash
# A task whose command cannot start is tried three times, then marked error (through start
# and through the daemon); a task past its timeout is stopped and marked error, also when
# no kugetsu process but its supervisor is left, and with SIGKILL when it ignores SIGTERM.
source "$(dirname "$0")/lib.sh"

# start: three attempts in the foreground, then exit 1 and the task is error.
expect_rc 1 ku start --id nope -- /nonexistent/agent
grep -q 'attempt 3/3' "$T/err" || fail "start did not say which attempt failed: $(cat "$T/err")"
[ "$(state nope)" = error ] || fail "nope is $(state nope)"
[ "$(json_get "next(t['attempts'] for t in j['tasks'] if t['id']=='nope')")" -eq 3 ] || fail "attempts != 3"
[ "$(events_of task_error nope)" -eq 1 ] || fail "no task_error for nope"
grep '"task_id":"nope"' "$KUGETSU_HOME/events.jsonl" | grep -q '"reason":"attempts_exhausted"' ||
    fail "task_error of nope lacks reason attempts_exhausted"

# Each failed attempt is written in the task's log too, and says that a retry cannot help.
expect_rc 0 ku logs nope
[ "$(grep -c '^kugetsu: exec "/nonexistent/agent": No such file or directory (a retry fails the same way until that is fixed)$' "$T/out")" -eq 3 ] ||
    fail "the log of nope: $(cat "$T/out")"
json_get "next(t['last_error'] for t in j['tasks'] if t['id']=='nope')" | grep -q 'a retry fails the same way' ||
    fail "last_error of nope: $(json_get "next(t['last_error'] for t in j['tasks'] if t['id']=='nope')")"
# A program that is not on PATH: found out before the fork, and written in the log the same way.
expect_rc 1 ku start --id nopath -- kugetsu-no-such-program --flag
expect_rc 0 ku logs nopath
[ "$(grep -c '^kugetsu: cannot run "kugetsu-no-such-program": No such file or directory (a retry' "$T/out")" -eq 3 ] ||
    fail "the log of nopath: $(cat "$T/out")"

# The daemon: the same, and the failed attempts return the task to pending in between.
printf 'not a program\n' >"$T/script"; chmod 0644 "$T/script"
expect_rc 0 ku enqueue --id noexec -- "$T/script"
expect_rc 0 ku daemon --once
[ "$(state noexec)" = error ] || fail "noexec is $(state noexec)"
[ "$(json_get "next(t['attempts'] for t in j['tasks'] if t['id']=='noexec')")" -eq 3 ] || fail "attempts != 3"
[ "$(events_of task_dequeued noexec)" -eq 3 ] || fail "expected 3 task_dequeued for noexec"
json_get "next(t['last_error'] for t in j['tasks'] if t['id']=='noexec')" | grep -q 'Permission denied' ||
    fail "last_error does not say why"
expect_rc 0 ku logs noexec
[ "$(grep -c "^kugetsu: exec \"$T/script\": Permission denied" "$T/out")" -eq 3 ] || fail "the log of noexec: $(cat "$T/out")"

# Timeouts, enforced by the supervisor: `start` returns at once, no daemon runs.
expect_rc 0 ku config kill-grace 0.2   # HOME keeps its limits: changed for every process
expect_rc 0 ku start --id slow --timeout 0.3 -- sleep 60
expect_rc 0 ku start --id stubborn --timeout 0.3 -- sh -c 'trap "" TERM; sleep 60 & wait; sleep 60'
within 20 state_is slow error
within 20 state_is stubborn error
[ "$(json_get "next(t['exit_code'] for t in j['tasks'] if t['id']=='slow')")" -eq 143 ] || fail "slow: not SIGTERM"
[ "$(json_get "next(t['exit_code'] for t in j['tasks'] if t['id']=='stubborn')")" -eq 137 ] || fail "stubborn: not SIGKILL"
for id in slow stubborn; do
    grep "\"task_id\":\"$id\"" "$KUGETSU_HOME/events.jsonl" | grep task_error | grep -q '"reason":"timeout"' ||
        fail "$id: no task_error with reason timeout"
done
[ "$(json_get "j['live']")" -eq 0 ] || fail "slots not freed"
echo ok
