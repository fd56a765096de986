#!/usr/bin/env bash
# Agents are supervised to their end: the exit code is recorded after the starter has exited,
# an agent whose supervisor is SIGKILLed still holds its slot until it dies, and a daemon
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
[ -z "$(ls -A "$KUGETSU_HOME/sessions")" ] || fail "sessions left"

# 2. SIGKILL the supervisor: the agent keeps its slot (counted live) until it dies.
expect_rc 0 ku start --id orphan -- "$PROBE" "$T/counter" --ready "$T/ready" --hold "$T/hold"
read -r _ agent <"$T/out"
await_ready 1
supervisor=$(awk '{print $4}' "/proc/$agent/stat")
kill -KILL "$supervisor"
export MAX_CONCURRENT_AGENTS=1
[ "$(json_get "j['live']")" -eq 1 ] || fail "the orphaned agent is not counted"
expect_rc 75 ku start --id refused -- true
ku_bg daemon
expect_rc 0 ku enqueue --id next -- true
release_agents
expect_rc 1 ku wait orphan
[ "$(state orphan)" = error ] || fail "orphan is $(state orphan)"
grep '"task_id":"orphan"' "$KUGETSU_HOME/events.jsonl" | grep -q '"reason":"exit_unknown"' ||
    fail "orphan's end is not exit_unknown"
expect_rc 0 ku wait next   # the daemon saw the slot free without a supervisor to tell it
kill -TERM "${BACKGROUND[@]}"; wait "${BACKGROUND[@]}" || true; BACKGROUND=()

# 3. SIGKILL the daemon while its agents run; a new daemon adopts them.
export MAX_CONCURRENT_AGENTS=3
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
export MAX_CONCURRENT_AGENTS=16
for i in $(seq 1 16); do expect_rc 0 ku start --id "b$i" -- sh -c 'read x <&5 2>/dev/null; sleep 0.3'; done
all_final_without_reap() {
    python3 - "$KUGETSU_HOME/queue" <<'PY'
import json, os, sys
d = sys.argv[1]
items = [json.load(open(os.path.join(d, f))) for f in os.listdir(d) if f.startswith("b")]
sys.exit(0 if len(items) == 16 and all(i["state"] == "completed" for i in items) else 1)
PY
}
within 30 all_final_without_reap

# 5. A daemon that dies after an agent's supervisor left the end to it: a waiter still sees
#    the end. The daemon is stopped while it sleeps (so it holds no lock but keeps
#    daemon.lock), the agent ends (its supervisor skips its reap, and so does the waiter),
#    then the daemon is killed: its daemon.lock closes, which wakes the waiter.
export MAX_CONCURRENT_AGENTS=3
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
grep -q '"state": "running"' "$KUGETSU_HOME/queue/late.json" || fail "late was recorded by someone else than the daemon"
kill -KILL "$daemon"; kill -CONT "$daemon"; wait "$daemon" 2>/dev/null || true; BACKGROUND=()
rc=0; wait "$waiter" || rc=$?
[ "$rc" -eq 0 ] || fail "wait exited $rc (124: it never saw the end)"
echo ok
