#!/usr/bin/env bash
# Crash injection on real processes: while M probe tasks run over one HOME (cap 3), SIGKILL N
# kugetsu processes at random moments: `kugetsu start` callers, `kugetsu daemon`s, agent
# supervisors, and the supervisors' on-exit `kugetsu reap` hooks. Then stop killing, let a
# fresh daemon finish the rest, and check:
#   cap        the probe agents (which count themselves under their own flock) never saw more
#              than MAX_CONCURRENT_AGENTS live at once;
#   lost       every task exists and is final (completed, error, cancelled) in its record and
#              in `status --json`; no session, no live agent; `kugetsu wait` returned;
#   duplicate  each task's agent ran at most once (the probe logs its task id when it starts);
#              at most one task_completed, one final event per task, one task_started per
#              attempt;
#   state      each task ended in a state that the kills that touched it allow (below).
#
#   kill_harness.sh [--kills N] [--tasks M] [--seed S] [--long] [--no-lock] [--strict]
#
# Default: 40 kills over 100 tasks (15-40 s on 2 busy cores), for CI. --long: 200 kills over
# 400 tasks (1.5-4 min). --seed S replays the plan of a run (every random choice; process
# timing is not seeded); without it a seed is drawn and printed. The last line is the
# summary: kills by kind, tasks by end, agent runs, peak, violations by kind, leftovers,
# wall time.
# --no-lock (KUGETSU_TEST_NO_LOCK=1): shows the check can fail. First cap+3 starts meet at
# the test barrier between counting and spawning, with their agents held until all are
# counted, so the peak exceeds the cap whatever the timing; then the run goes on as usual.
# It exits 0 only if the harness reports a cap violation.
# --strict: a slot file left in HOME/run (not a temporary .slot.*) fails too (see the end of
# this comment). A failed run keeps its directory (printed); KUGETSU_KILL_HARNESS_KEEP=DIR
# copies it to DIR after any run.
#
# Moments and victims (tests/cli/kill_harness.py; every draw from the seed). Kill i is due
# once floor(0.9*i*M/(N+1)) tasks are final, plus a random 0-250 ms: the kills are spread
# over the run and all N happen. Then it draws a kind (start, daemon, supervisor, hook) and,
# for all but hooks, a coin: aim at the spawn window (an agent forked and held, not yet
# exec'd: the few milliseconds in which a death cuts an attempt in half). It waits up to 1 s
# for such a victim, then up to 0.5 s for any victim of the kind (2 s for a hook, with the
# daemons stopped meanwhile: hooks run only while no daemon holds daemon.lock), then takes
# any kind that has one. It draws the victim, waits a random 0-20 ms (0-2 ms when aiming),
# freezes it with SIGSTOP (the moment of death: frozen, it keeps the cap lock if it has it,
# so no other process moves on from what it was doing), notes what it holds, and SIGKILLs
# it through a pidfd after checking its start time.
#   start, daemon  the harness's own children. Noted: the tasks left claimed by it (queue
#                  records in `notified` with it as owner).
#   supervisor     a process of the kugetsu binary that leads its own session (a supervisor's
#                  first act is setsid(); the agent it holds before exec is in the
#                  supervisor's session, so never matches) and whose descriptor 1 is
#                  HOME/logs/<task>.log, which names the task. The harness is a child
#                  subreaper, so supervisors are its children or its commands' children.
#   hook           the same, once the supervisor has exec'd `kugetsu reap` (argv has reap).
# Daemons come and go in random phases of 0, 1 or 2 daemons (0.3-2 s; a phase with none ends
# early once nothing runs). Tasks are submitted 4 commands at a time, at most 8 not final,
# and none while the kills lag 6 tasks behind (so the work never runs out first) unless a
# kill looks for a start, supervisor or hook. 70% by `start` (exit 75: then `enqueue`), 30%
# by `enqueue`; a killed start is followed by an enqueue of the same id (65, already there,
# is fine). Agents sleep 10-120 ms.
#
# Which end is legitimate after which kill. "Cut" kills of a task: its supervisor killed, or
# the start or daemon that held its claim when frozen killed. Each cut may cost the task one
# attempt.
#   no cut (maybe its hook killed)  completed, exit 0, 1 attempt, ran once. A killed hook
#                                   loses nothing: the exit record is in the slot file and
#                                   the next reap pass records it.
#   k cuts                          completed with at most 1+k attempts, ran once; or
#                                   error "exit code unknown" (reason exit_unknown): ran once
#                                   and its supervisor was killed after the exec, or never
#                                   ran and its claim's owner died between writing the
#                                   session and letting the agent exec; or
#                                   error after max attempts (attempts_exhausted) if k >= 3,
#                                   never ran.
# Anything else (cancelled, a non-zero exit code, a timeout) is a violation. Events are at
# most once: a process killed between a state change and its event loses the event, so a
# missing task_completed is counted, not failed. Files left behind are reported, not failed:
# nothing reads them. Slot files in HOME/run: a reap pass killed between removing a session
# and its slot file (finish() in dispatcher.hpp removes the session first), or a supervisor
# killed before renaming its slot; temp files in queue/: a writer killed before its rename.
source "$(dirname "$0")/lib.sh"
here=$(cd "$(dirname "$0")" && pwd)

kills=40 tasks=100 seed= no_lock= strict=
while [ $# -gt 0 ]; do
    case $1 in
    --kills) kills=$2; shift 2 ;;
    --tasks) tasks=$2; shift 2 ;;
    --seed) seed=$2; shift 2 ;;
    --long) kills=200 tasks=400; shift ;;
    --no-lock) no_lock=--no-lock; shift ;;
    --strict) strict=--strict; shift ;;
    *) echo "usage: kill_harness.sh [--kills N] [--tasks M] [--seed S] [--long] [--no-lock] [--strict]" >&2; exit 64 ;;
    esac
done
[ -n "$seed" ] || seed=$(od -An -N4 -tu4 /dev/urandom | tr -d ' ')
[ "$tasks" -gt "$kills" ] || fail "--tasks must be more than --kills"
cap=3 attempts=3
echo "kill_harness: seed $seed, $kills kills, $tasks tasks, cap $cap${no_lock:+, no lock}"
began=$SECONDS
# HOME's limits, stored in HOME (the environment sets none: lib.sh unsets them).
ku config cap "$cap" >/dev/null && ku config max-attempts "$attempts" >/dev/null || fail "kugetsu config"
common=(--kills "$kills" --tasks "$tasks" --seed "$seed" --cap "$cap" $no_lock)

# 1. The workload and the kills. Without the lock, state may be lost for good: stop waiting
#    for progress sooner (the test then only looks at the cap).
[ -z "$no_lock" ] || export KUGETSU_TEST_NO_LOCK=1
stall=120; [ -z "$no_lock" ] || stall=15
python3 "$here/kill_harness.py" run "$T" "$KUGETSU_HOME" "$KUGETSU" "$PROBE" "${common[@]}" --stall "$stall" 3>&- 4>&- ||
    fail "the driver failed (seed $seed)"
unset KUGETSU_TEST_NO_LOCK

# 2. No more kills: a fresh daemon runs what is left. The timeout is a hang guard only.
ku_bg daemon
guard=120; [ -z "$no_lock" ] || guard=30
wait_rc=0
mapfile -t ids <"$T/ids"
timeout "$guard" "$KUGETSU" wait "${ids[@]}" 3>&- 4>&- 2>"$T/wait.err" || wait_rc=$?
kill -TERM "${BACKGROUND[@]}"; wait "${BACKGROUND[@]}" 2>/dev/null || true; BACKGROUND=()
# The final reap. Its sweep removes a temporary slot (.slot.*) only once it is 10 s old (a
# younger one may be between its creation and its flock): wait for the youngest to age.
newest=$(find "$KUGETSU_HOME/run" -maxdepth 1 -name '.slot.*' -printf '%T@\n' 2>/dev/null | sort -n | tail -1)
if [ -n "$newest" ]; then
    age=$(python3 -c "import time; print(max(0.0, 10.5 - (time.time() - $newest)))")
    sleep "$age"
fi
ku reap --quiet 2>"$T/reap.err" || true
ku status --json >"$T/status.json" 2>"$T/status.err" || true
ku events >"$T/events.cli" 2>"$T/events.err" || true

# 3. The checks and the summary.
python3 "$here/kill_harness.py" check "$T" "$KUGETSU_HOME" "${common[@]}" \
    --max-attempts "$attempts" --wait-rc "$wait_rc" --wall $((SECONDS - began)) $strict ||
    fail "violations (seed $seed); state kept in $(cp -r "$T" "$T.kept" && echo "$T.kept")"
[ -z "${KUGETSU_KILL_HARNESS_KEEP:-}" ] || cp -r "$T" "$KUGETSU_KILL_HARNESS_KEEP"
