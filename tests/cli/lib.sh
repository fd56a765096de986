# Shared by the command-line tests: a fresh state directory, the binaries, FIFOs to hold
# agents, checks that say what was expected. Sourced; needs KUGETSU (the kugetsu binary)
# and PROBE (kugetsu-probe-agent) in the environment (tests/CMakeLists.txt sets them).
set -euo pipefail

: "${KUGETSU:?path of the kugetsu binary}" "${PROBE:?path of kugetsu-probe-agent}"
T=$(mktemp -d "${TMPDIR:-/tmp}/kugetsu-cli.XXXXXX")
export KUGETSU_HOME="$T/home"
# HOME keeps its own limits (cap 3 by default): a test changes them with `ku config`, never
# through the environment, which must agree with HOME's.
unset MAX_CONCURRENT_AGENTS KUGETSU_TEST_NO_LOCK KUGETSU_TEST_BARRIER KUGETSU_MAX_ATTEMPTS KUGETSU_KILL_GRACE
# Under AddressSanitizer, LeakSanitizer checks every kugetsu process for leaks as it exits, by
# stopping it with ptrace, and that stop sporadically never completes (google/sanitizers#777).
# Seen in CI twice, in scheduling.sh: a `kugetsu daemon` given SIGTERM stayed in state R for
# more than 20 s while LeakSanitizer's tracer, its child, waited on it in wait4(__WALL). These
# tests run hundreds of processes that exit so: here leaks are not checked (the unit, process
# and simulator tests check them). Without ASan the option does nothing.
export ASAN_OPTIONS="${ASAN_OPTIONS:+$ASAN_OPTIONS:}detect_leaks=0"
BACKGROUND=()
TEST_PID=$$
# Every test ends with a diagnostic well before ctest's timeout (300 s): `ku wait` gives up
# after WAIT_LIMIT seconds naming the tasks not yet final, and a watchdog stops the whole test
# after DEADLINE seconds, printing what still runs.
WAIT_LIMIT=${KUGETSU_TEST_WAIT_LIMIT:-120}
DEADLINE=${KUGETSU_TEST_DEADLINE:-240}

# test_pids: every process of this test: those whose environment names its directory ($T),
# however far they are from this shell (daemons, supervisors, agents, reapers).
test_pids() {
    local p
    for p in /proc/[0-9]*; do
        p=${p#/proc/}
        [ "$p" = "$TEST_PID" ] || [ "$p" = "$BASHPID" ] && continue
        tr '\0' '\n' <"/proc/$p/environ" 2>/dev/null | grep -qx "KUGETSU_HOME=$T.*" && echo "$p"
    done
    return 0
}

# diagnose: what the test's processes are doing (state, wait channel, kernel stack, syscall).
diagnose() {
    local p
    {
        echo "--- the test's processes:"
        ps -o pid,ppid,pgid,stat,wchan:24,etime,args -p "$(test_pids | paste -sd, -)" 2>/dev/null || true
        for p in $(test_pids); do
            echo "--- $p: $(tr '\0' ' ' <"/proc/$p/cmdline" 2>/dev/null)"
            echo "    syscall: $(cat "/proc/$p/syscall" 2>/dev/null)"
            sed 's/^/    /' "/proc/$p/stack" 2>/dev/null || true
        done
    } >&2
}

# alive PID: the process exists and has not exited (a zombie has).
alive() { [ -e "/proc/$1" ] && ! grep -q '^State:[[:space:]]*Z' "/proc/$1/status" 2>/dev/null; }

( trap - EXIT
  sleep "$DEADLINE" </dev/null >/dev/null 2>&1 &
  sleeper=$!
  trap 'kill "$sleeper" 2>/dev/null; exit 0' TERM
  wait "$sleeper"
  echo "FAIL: still running after ${DEADLINE}s; stopping it" >&2
  diagnose
  for p in $(test_pids); do kill -KILL "$p" 2>/dev/null; done
  kill -TERM "$TEST_PID" ) 3>&- 4>&- &
WATCHDOG=$!
trap 'fail "stopped by the watchdog after ${DEADLINE}s"' TERM

cleanup() {
    local rc=$?
    set +e
    trap - TERM
    kill -TERM "$WATCHDOG" 2>/dev/null
    for p in "${BACKGROUND[@]}"; do kill -TERM "$p" 2>/dev/null; kill -CONT "$p" 2>/dev/null; done
    exec 3>&- 4>&-   # release held agents
    # Stop the agents still running (their process groups), then remove the directory.
    if [ -e "$KUGETSU_HOME/state.db" ]; then
        for pid in $("$KUGETSU" status --json 2>/dev/null | python3 -c \
                'import json,sys; [print(t["pid"]) for t in json.load(sys.stdin)["tasks"] if t["state"]=="running"]' 2>/dev/null); do
            kill -KILL -- "-$pid" 2>/dev/null
        done
    fi
    # Every background process of the test ends within 20 s of SIGTERM; one that does not is
    # a bug (a daemon that ignores SIGTERM): said, shown and killed, never waited for forever.
    local end=$((SECONDS + 20)) p
    for p in "${BACKGROUND[@]}" $(jobs -p); do
        [ "$p" = "$WATCHDOG" ] && continue
        while alive "$p"; do
            if [ "$SECONDS" -ge "$end" ]; then
                echo "FAIL: process $p ($(tr '\0' ' ' <"/proc/$p/cmdline" 2>/dev/null)) did not exit within 20 s of SIGTERM" >&2
                diagnose
                kill -KILL "$p" 2>/dev/null
                rc=1
                break
            fi
            sleep 0.05
        done
    done
    wait 2>/dev/null
    # Agents and supervisors that were just killed may still be writing into $T.
    for _ in 1 2 3 4 5; do rm -rf "$T" 2>/dev/null && break; sleep 0.2; done
    exit "$rc"
}
trap cleanup EXIT

fail() { echo "FAIL: $*" >&2; exit 1; }

# kugetsu, never inheriting the test's FIFO descriptors 3 and 4 (a daemon holding the hold
# FIFO's write end would keep every agent waiting).
# `ku wait` gives up after WAIT_LIMIT seconds (exit 75, naming the tasks not final) unless the
# test gives its own --timeout.
ku() {
    if [ "${1:-}" = wait ] && [[ " $* " != *" --timeout "* ]]; then
        "$KUGETSU" wait --timeout "$WAIT_LIMIT" "${@:2}" 3>&- 4>&-
    else
        "$KUGETSU" "$@" 3>&- 4>&-
    fi
}
# The same in the background, remembered for cleanup. Not through a function: the subshell
# that runs a backgrounded function would keep descriptors 3 and 4.
ku_bg() { "$KUGETSU" "$@" 3>&- 4>&- & BACKGROUND+=($!); }

# expect_rc N CMD...: runs CMD (stdout to $T/out, stderr to $T/err), fails unless it exits N.
expect_rc() {
    local want=$1; shift
    local rc=0
    "$@" >"$T/out" 2>"$T/err" 3>&- 4>&- || rc=$?
    [ "$rc" -eq "$want" ] || fail "$* exited $rc, expected $want; stderr: $(cat "$T/err")"
}

# FIFOs: agents started with --ready $T/ready --hold $T/hold write one byte to `ready` once
# counted, then block until release_agents.
open_fifos() {
    mkfifo "$T/ready" "$T/hold"
    exec 3<>"$T/ready" 4<>"$T/hold"
}
await_ready() { dd bs=1 count="$1" status=none <&3 >/dev/null; }   # one byte at a time: none lost
release_agents() { exec 4>&-; }

# counter FIELD: the probe agents' own count: live, peak or total.
counter() {
    local live peak total
    # Under the agents' own lock: they rewrite the file in place.
    read -r live peak total < <(flock -s "$T/counter" cat "$T/counter")
    case $1 in live) echo "$live" ;; peak) echo "$peak" ;; total) echo "$total" ;; esac
}

# json_get EXPR: evaluates a Python expression over `kugetsu status --json` (bound to j).
status_json() { ku status --json; }
json_get() { status_json | python3 -c "import json,sys; j=json.load(sys.stdin); print($1)"; }

# state ID: a task's state.
state() { json_get "next(t['state'] for t in j['tasks'] if t['id']=='$1')"; }

# events_of TYPE [ID]: how many events of TYPE (for task ID) are in the event log; the file
# (relayed from the store) and `kugetsu events` (read from it) must agree.
events_of() {
    ku events >"$T/events.store"
    python3 - "$KUGETSU_HOME/events.jsonl" "$T/events.store" "$1" "${2:-}" <<'PY'
import json, sys
path, store, typ, tid = sys.argv[1:5]
def count(p):
    n, seqs = 0, []
    for line in open(p):
        e = json.loads(line)
        seqs.append(e["seq"])
        if e["type"] == typ and (not tid or e["task_id"] == tid):
            n += 1
    return n, seqs
n_file, s_file = count(path)
n_store, s_store = count(store)
if s_file != s_store:
    sys.exit(f"events.jsonl holds seqs {s_file}, the store {s_store}")
print(n_file)
PY
}

# within SECONDS CMD...: retries CMD (every 20 ms) until it succeeds; fails after SECONDS.
# Only for conditions that another process makes true asynchronously.
within() {
    local limit=$1; shift
    local end=$((SECONDS + limit))
    until "$@" >/dev/null 2>&1; do
        [ "$SECONDS" -lt "$end" ] || fail "still not true after ${limit}s: $*"
        sleep 0.02
    done
}

# state_is ID STATE: for `within`, which must re-evaluate each time.
state_is() { [ "$(state "$1")" = "$2" ]; }
