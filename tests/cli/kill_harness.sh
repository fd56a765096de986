#!/usr/bin/env bash
# Crash injection on real processes: while M probe tasks (and more if the kills need them) run
# over one HOME (cap 3 and 3 attempts, stored in HOME with `kugetsu config`), SIGKILL N kugetsu
# processes, each caught with work in flight: `kugetsu start` callers and `kugetsu daemon`s
# holding the cap lock, agent supervisors, and the supervisors' on-exit `kugetsu reap` hooks.
# Then stop killing, let a fresh daemon finish the rest, run a final `kugetsu reap`, and check.
# The harness never writes HOME: it reads HOME/state.db through Python's sqlite3 module with a
# read-only connection (mode=ro; WAL mode, so it neither waits for kugetsu nor blocks it).
#   cap        the probe agents (which count themselves under their own flock) never saw more
#              than 3 live at once;
#   lost       every task is in the store's tasks table and final (completed, error,
#              cancelled), there and in `status --json`; no task that nobody submitted; no row
#              in sessions or quarantine; no live agent; `kugetsu wait` returned; with
#              --strict, no file left in HOME/run after the final reap;
#   duplicate  each task's program ran at most once (the probe logs its task id at each run);
#   events     HOME/events.jsonl and `kugetsu events` hold exactly the rows of the store's
#              events table: each seq once, in seq order, the same record (nothing lost, even
#              by a process killed between its commit and its relay: the next relay appends
#              it). And each final task has exactly the events its history implies:
#              task_queued once, first, if `enqueue` created it (none if `start` did); one
#              task_dequeued per attempt the queue took (every attempt but those a start made
#              itself: its first, and a retry after a supervisor was killed before exec);
#              one task_started per run of its program (the probe's log); exactly one end
#              event (task_completed or task_error), last; attempt numbers never go back. So
#              an interrupted attempt leaves nothing but its dequeue.
#   state      each task ended as the kills that touched it allow (below).
#   schedule   groups, priorities and dependencies are in the mix (not with --no-lock): about
#              a third of the tasks are in group g (cap 1; their agents also count themselves
#              in a counter of their own, whose peak must stay at 1); a queued task may have a
#              priority (-2..2) and may run --after a task already created. One that ran did
#              so only after its dependency completed (the agents stamp start and end with one
#              monotonic clock); one whose dependency failed ended error, dependency_failed,
#              with no attempt and no run.
#
#   kill_harness.sh [--kills N] [--tasks M] [--seed S] [--long] [--no-lock] [--strict]
#
# Default: 40 kills over 100 tasks (about 6-20 s here), for CI. --long: 200 kills over 400
# tasks (about 40 s). --seed S replays the plan of a run (every random choice; process timing
# is not seeded); without it a seed is drawn and printed. The last line is the summary: kills
# by kind and by phase (and how many aimed at a held agent hit one, how many frozen processes
# were let go), tasks by end (extra: added to keep kills going), agent runs, peak, agents
# whose exit status the harness reaped, events in the store and in the file, violations by
# kind, leftovers (slot files, sessions), wall time.
# --no-lock (KUGETSU_TEST_NO_LOCK=1: no cap lock, no transactions): shows the check can
# fail. First cap+3 starts meet at the test barrier between counting and spawning, with their
# agents held until all are counted, so the peak exceeds the cap whatever the timing; then the
# run goes on as usual, any start or daemon being a victim (there is no lock to hold). It
# exits 0 only if the harness reports a cap violation (the other checks are reported only).
# A failed run keeps its directory (printed); KUGETSU_KILL_HARNESS_KEEP=DIR copies it to DIR
# after any run (kills.jsonl there says, per kill, the phase and what it cut).
#
# Moments and victims (tests/cli/kill_harness.py; every draw from the seed). Kill i is due
# once floor(0.9*i*M/(N+1)) tasks are final, plus a random 0-100 ms. It draws a kind (start,
# daemon, supervisor, hook), for all but hooks a coin to aim at a held agent, a candidate and
# a delay, then searches in bursts of 20 ms (a look every 0.2 ms) between the workload's
# steps. Candidates are looked at without stopping them: a start or daemon only while
# /proc/locks shows it holding the cap lock (the flock on HOME/lock), aimed only with a
# supervisor child in setup or holding its agent; a supervisor (aimed: in setup or holding its
# agent); a hook. It waits the delay (up to 1 ms for a start or daemon, 20 ms for a
# supervisor, 3 ms for a hook, 0.3 ms aimed), checks the victim's start time through a pidfd
# and freezes it with SIGSTOP: frozen, it keeps the cap lock and its transaction, so what it
# was doing stays as it was. If it has no work in flight (a start or daemon without the lock)
# or, aimed, no held agent, it is let go (SIGCONT) and the search goes on; else SIGKILL. Aimed
# for 1 s, then any phase of the kind; after 2 s (3 s for a hook), any kind with a victim.
#   start, daemon  the harness's own children.
#   supervisor     a process of the kugetsu binary that leads its own session (a supervisor's
#                  first act is setsid(); its agent, in the supervisor's session, never
#                  matches) and whose descriptor 1 is HOME/logs/<task>.log, which names the
#                  task. The harness is a child subreaper, so supervisors are its children or
#                  its commands' children.
#   hook           the same process once the supervisor has exec'd `kugetsu reap`.
# Phases: what the frozen victim held, read from /proc and the store (inferred from locks,
# records and processes at the freeze, not traced to a line of code):
#   the cap lock (its FLOCK WRITE on HOME/lock in /proc/locks), a write transaction (its POSIX
#   write lock on byte 120 of state.db-shm: SQLite's WAL write lock, held from BEGIN IMMEDIATE
#   to COMMIT or ROLLBACK), its claims (tasks `notified` with it as owner in the committed
#   store, and the agents their sessions name), its supervisors and their agents (the slot
#   record read through the supervisor's descriptor 5: kugetsu-held 2, kugetsu-exec 2,
#   kugetsu-noexec 2, kugetsu-exit 2, or a temporary .slot.* before the hello; the agent's
#   comm: kugetsu while held, the probe's once exec'd; a zombie: ended, not reaped), and the
#   system call it is in (/proc/PID/syscall, which a stopped process still shows; kept in
#   kills.jsonl, used only to tell a hook blocked on the lock). After the SIGKILL, every agent
#   it held or had released is watched until it runs the probe (ran) or dies as kugetsu
#   (never ran): an agent told to exec just before the freeze still runs.
#   start, daemon  pass (a transaction, no uncommitted agent: a reap, claims before a spawn),
#                  spawning (a transaction, agents held whose sessions are not committed),
#                  committed (claims committed, every agent still held: after the commit,
#                  its fdatasync included, before any release), releasing (some released,
#                  some held), released (all released, before the next transaction), marking
#                  (in the transaction that marks released agents running), locked (the lock,
#                  no transaction, no claim: between units, e.g. the sync of a commit that
#                  started no agent), unlocked (no lock: never a victim, except with --no-lock).
#                  A daemon is never killed idle.
#   supervisor     setup (no hello yet), held, released (exec record, not yet the probe; or
#                  told to exec just before the freeze), running, ended (the agent a zombie, no
#                  exit record), reaped (the agent reaped by its supervisor, no exit record),
#                  recorded (exit record written), noexec.
#   hook           unlocked (opening the store, or relaying events after its unit), waiting
#                  (blocked on the cap lock), reaping (in its transaction), committed (the lock,
#                  no transaction).
# The workload. Daemons come and go in random phases of 0, 1 or 2 daemons (0.3-2 s; a phase
# with none ends early once nothing runs); while a daemon is sought one is kept running, while
# a hook is sought none (hooks run only while no daemon holds daemon.lock). Tasks are
# submitted at most 4 commands at a time and 8 not final, 3 while a kill is due: a trickle
# that keeps daemons passing and starts and supervisors coming until the kill is made. Once
# all M are submitted, a task is added while kills remain and fewer than 2 are not final. 70%
# by `start` (exit 75: then `enqueue`), 30% by `enqueue`; a killed start is followed by an
# enqueue of the same id (65, already there, is fine). Agents sleep 10-120 ms.
#
# Which end is legitimate after which kills. A kill cuts an attempt that can then never run:
# a supervisor killed in setup, or holding an agent that then never ran; a start or daemon
# killed with a committed claim whose agent never ran (or that has no session). A cut costs
# the task at most one attempt: it goes back to pending (last_error start_interrupted, or
# the spawn or exec failure its caller saw) and is retried. A supervisor killed after its
# agent exec'd (post-exec) leaves an orphan: a daemon above it (a child subreaper) records its
# exit code; if the harness reaps it instead (as init would: an agent of `kugetsu start`, or
# of a daemon gone meanwhile), the code is lost.
#   no cut, no post-exec   completed, exit 0, 1 attempt, ran once. A killed hook loses nothing:
#                          the exit record is in the slot file and the next reap records it.
#   k cuts                 completed, exit 0, at most 1+k attempts, ran once; or, if all 3
#                          attempts were cut (k >= 3), error start_interrupted or
#                          attempts_exhausted without a run: the only legitimate error of a
#                          task that never ran ("never-ran errors" counts them all).
#   post-exec              completed, exit 0 (a daemon recorded it); or error exit_unknown,
#                          ran once, only if the harness reaped the agent (orphans.jsonl) or
#                          the supervisor was killed between reaping it and writing its exit
#                          record (phase reaped).
# Anything else (cancelled, a non-zero exit, a timeout, exit_unknown of a task that never ran
# or whose orphan a daemon adopted) is a violation.
# The final reap: after the fresh daemon, wait until the youngest temporary slot (.slot.* of a
# supervisor killed in setup) is 10.5 s old (a sweep skips younger ones: they may be between
# their creation and their flock), then `kugetsu reap`, whose sweep removes the slot files no
# session names. Slot files and sessions left are reported (--strict: a slot file fails).
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
ku config group g cap 1 >/dev/null || fail "kugetsu config group"
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
