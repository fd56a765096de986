#!/usr/bin/env bash
# Six concurrent `kugetsu start` calls under cap 3 admit three and refuse three with exit 75,
# leaving nothing behind for the refused. With the lock disabled (a test hook) and all six
# meeting between count and spawn, six are admitted: the check can fail.
source "$(dirname "$0")/lib.sh"
open_fifos

race() {   # starts six concurrent callers; prints their exit codes, one per line
    local pids=() i
    for i in 1 2 3 4 5 6; do
        ( rc=0; ku start --id "s$i" -- "$PROBE" "$T/counter" --ready "$T/ready" --hold "$T/hold" \
              >/dev/null 2>"$T/err.$i" || rc=$?; echo "$rc" >"$T/rc.$i" ) 3>&- 4>&- &
        pids+=($!)
    done
    wait "${pids[@]}"
    cat "$T"/rc.*
}

codes=$(race | sort | tr '\n' ' ')
[ "$codes" = "0 0 0 75 75 75 " ] || fail "exit codes: $codes (expected three 0 and three 75)"
await_ready 3
[ "$(counter live)" -eq 3 ] || fail "live agents: $(counter live)"
[ "$(json_get "len(j['tasks'])")" -eq 3 ] || fail "refused starts left tasks behind: $(status_json)"
[ "$(ku events | grep -c task_started)" -eq 3 ] || fail "refused starts left events behind: $(ku events)"
grep -l 'no free slot' "$T"/err.* | wc -l | grep -qx 3 || fail "the refused did not say 'no free slot'"
release_agents
expect_rc 0 ku wait
[ "$(counter peak)" -eq 3 ] || fail "peak $(counter peak)"

# The negative: no lock, and a barrier that lets all six count before any spawns.
rm -rf "$KUGETSU_HOME" "$T"/rc.* "$T/counter"
exec 4<>"$T/hold"
export KUGETSU_TEST_NO_LOCK=1 KUGETSU_TEST_BARRIER="$T/barrier:6"
codes=$(race | sort | tr '\n' ' ')
[ "$codes" = "0 0 0 0 0 0 " ] || fail "without the lock: exit codes $codes (expected six admitted)"
await_ready 6
peak=$(counter peak)
[ "$peak" -gt 3 ] || fail "without the lock the peak should exceed the cap; it is $peak"
release_agents
expect_rc 0 ku wait
echo "with the lock: peak 3; without: peak $peak"
