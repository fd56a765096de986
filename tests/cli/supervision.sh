#!/usr/bin/env bash
# Agents are supervised to their end: the exit code and the end time are recorded after the
# starter has exited, an agent whose supervisor is SIGKILLed still holds its slot until it
# dies (and keeps its exit code when the daemon started it: it is their subreaper), and a daemon
# killed with SIGKILL and restarted adopts the live agents, never starts a second copy and
# reaps the dead.
source "$(dirname "$0")/lib.sh"
open_fifos

# 1. The starter exits at once; nothing else runs; the end is recorded by the supervisor.
expect_rc 0 ku start --id seven -- sh -c 'sleep 0.2; exit 7'
within 20 state_is seven error
[ "$(json_get "next(t['exit_code'] for t in j['tasks'] if t['id']=='seven')")" -eq 7 ] || fail "exit code not 7"
grep '"task_id":"seven"' "$KUGETSU_HOME/events.jsonl" | grep task_error | grep -q '"exit_code":7' ||
    fail "task_error without exit_code 7"
[ -z "$(ls -A "$KUGETSU_HOME/run")" ] || fail "slot files left: $(ls -A "$KUGETSU_HOME/run")"
[ "$(json_get "len(j['sessions'])")" -eq 0 ] || fail "sessions left"
# finished_at is when the agent ended (its supervisor stamps it), not when the end was recorded.
python3 - "$(status_json)" <<'PY' || fail "finished_at is not the agent's end"
import json, sys, datetime
t = next(t for t in json.loads(sys.argv[1])["tasks"] if t["id"] == "seven")
p = lambda s: datetime.datetime.fromisoformat(s.replace("Z", "+00:00"))
ran = (p(t["finished_at"]) - p(t["started_at"])).total_seconds()
sys.exit(0 if 0.19 <= ran < 1.0 else f"ran {ran} s")
PY

# 2. SIGKILL the supervisor: the agent keeps its slot (counted live) until it dies.
expect_rc 0 ku start --id orphan -- "$PROBE" "$T/counter" --ready "$T/ready" --hold "$T/hold"
read -r _ agent <"$T/out"
await_ready 1
supervisor=$(awk '{print $4}' "/proc/$agent/stat")
kill -KILL "$supervisor"
expect_rc 0 ku config cap 1
[ "$(json_get "j['live']")" -eq 1 ] || fail "the orphaned agent is not counted"
expect_rc 75 ku start --id refused -- true
ku_bg daemon
expect_rc 0 ku enqueue --id next -- true
release_agents
expect_rc 127 ku wait orphan   # its exit code is unknown
[ "$(state orphan)" = error ] || fail "orphan is $(state orphan)"
grep '"task_id":"orphan"' "$KUGETSU_HOME/events.jsonl" | grep -q '"reason":"exit_unknown"' ||
    fail "orphan's end is not exit_unknown"
expect_rc 0 ku wait next   # the daemon saw the slot free without a supervisor to tell it

# 2b. An agent the daemon started, whose supervisor is SIGKILLed: the daemon is its child
#     subreaper, so the agent becomes its child and its exit code is kept.
exec 4<>"$T/hold"
expect_rc 0 ku enqueue --id adopted -- "$PROBE" "$T/counter" --ready "$T/ready" --hold "$T/hold" --exit 9
await_ready 1
agent=$(json_get "next(t['pid'] for t in j['tasks'] if t['id']=='adopted')")
supervisor=$(awk '{print $4}' "/proc/$agent/stat")
kill -KILL "$supervisor"
parent_is() { [ "$(awk '{print $4}' "/proc/$1/stat")" = "$2" ]; }
within 10 parent_is "$agent" "${BACKGROUND[0]}"
release_agents
expect_rc 9 ku wait adopted
[ "$(json_get "next(t['exit_code'] for t in j['tasks'] if t['id']=='adopted')")" -eq 9 ] ||
    fail "the daemon did not keep the exit code of the agent it adopted: $(status_json)"
kill -TERM "${BACKGROUND[@]}"; wait "${BACKGROUND[@]}" || true; BACKGROUND=()

# 3. SIGKILL the daemon while its agents run; a new daemon adopts them.
expect_rc 0 ku config cap 3
rm -f "$T/counter"
exec 4<>"$T/hold"
for i in 1 2 3 4 5; do expect_rc 0 ku enqueue --id "d$i" -- "$PROBE" "$T/counter" --ready "$T/ready" --hold "$T/hold" --record "$T/runs"; done
ku_bg daemon
first=${BACKGROUND[0]}
await_ready 3
kill -KILL "$first"; wait "$first" 2>/dev/null || true; BACKGROUND=()
[ "$(json_get "j['live']")" -eq 3 ] || fail "agents died with their daemon"
ku_bg daemon
ku_bg daemon   # two daemons, even
expect_rc 0 ku daemon --once
[ "$(counter total)" -eq 3 ] || fail "a restarted daemon started a second copy: total $(counter total)"
[ "$(json_get "sum(t['state']=='running' for t in j['tasks'])")" -eq 3 ] || fail "not 3 running"
release_agents
expect_rc 0 ku wait d1 d2 d3 d4 d5
[ "$(counter total)" -eq 5 ] && [ "$(sort "$T/runs" | uniq | wc -l)" -eq 5 ] || fail "runs: $(sort "$T/runs" | tr '\n' ' ')"
[ "$(counter peak)" -le 3 ] || fail "peak $(counter peak)"
kill -TERM "${BACKGROUND[@]}"; wait "${BACKGROUND[@]}" 2>/dev/null || true; BACKGROUND=()

# 4. Many agents ending at once with no daemon: every supervisor's on-exit reap records its
#    end (none mistakes another supervisor for a daemon). Read the records without reaping.
expect_rc 0 ku config cap 16
for i in $(seq 1 16); do expect_rc 0 ku start --id "b$i" -- sh -c 'read x <&5 2>/dev/null; sleep 0.3'; done
all_final_without_reap() {   # `kugetsu events` reads the store and reaps nothing
    [ "$(ku events | grep '"task_id":"b[0-9]*"' | grep -c '"type":"task_completed"')" -eq 16 ]
}
within 30 all_final_without_reap

# 5. A daemon that dies after an agent's supervisor left the end to it: a waiter still sees
#    the end. The daemon is stopped while it sleeps (so it holds no lock but keeps
#    daemon.lock), the agent ends (its supervisor skips its reap, and so does the waiter),
#    then the daemon is killed: its daemon.lock closes, which wakes the waiter.
expect_rc 0 ku config cap 3
ku_bg daemon
daemon=${BACKGROUND[-1]}
asleep() { grep -q '^poll_schedule_timeout' "/proc/$daemon/wchan"; }
within 10 asleep
kill -STOP "$daemon"
expect_rc 0 ku start --id late -- sleep 0.3
timeout 30 "$KUGETSU" wait late 3>&- 4>&- & waiter=$!
slot_free() { for f in "$KUGETSU_HOME"/run/*.slot; do [ -e "$f" ] || continue; flock -n -s "$f" true || return 1; done; }
within 10 slot_free
# With a daemon alive the waiter leaves the reaping to it (it never takes the cap lock then):
# the end stays unrecorded while the daemon is stopped.
sleep 0.5
kill -0 "$waiter" 2>/dev/null || fail "wait returned while the daemon, alive, had not recorded the end"
ku events | grep '"task_id":"late"' | grep -q '"type":"task_started"' || fail "late never started"
! ku events | grep '"task_id":"late"' | grep -q '"type":"task_completed"' || fail "late was recorded by someone else than the daemon"
# (bash may reap the killed daemon at once: the SIGCONT then finds no process, which is fine)
kill -KILL "$daemon"; kill -CONT "$daemon" 2>/dev/null || true; wait "$daemon" 2>/dev/null || true; BACKGROUND=()
rc=0; wait "$waiter" || rc=$?
[ "$rc" -eq 0 ] || fail "wait exited $rc (124: it never saw the end)"
echo ok
