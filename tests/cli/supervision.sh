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
echo ok
