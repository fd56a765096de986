#!/usr/bin/env bash
# bench/compare.sh: kugetsu beside the tools people use, and beside kugetsu 0.1, whole
# processes, one run (issues 6 and 12).
#
# M tasks of each workload, cap 3, through each runner, several rounds, interleaved (round
# r runs every runner once per workload, in an order rotated by r, so that the machine's
# load drifts over all of them alike). Medians over rounds, and ratios to the floor.
#
# Workloads:  true   /bin/true                 (the runner's own cost dominates)
#             sleep  sleep 0.01                (a task that takes some time)
# Runners:
#   floor          bench/floor.cpp: a loop of posix_spawn + waitpid keeping 3 alive (ratio 1)
#   xargs          seq M | xargs -P3 -I{} CMD
#   parallel       seq M | parallel -j3 -N0 CMD                  (GNU parallel)
#   tsp            task-spooler, own server (TS_SOCKET), `tsp -S 3`; M `tsp CMD` calls, which
#                  run while the later ones are submitted, then `tsp -w` and until every job
#                  has finished. (Submitting all behind blockers first, as for kugetsu, is not
#                  possible: a queued job holds one of the server's 1000 connections)
#   kugetsu-daemon M `kugetsu enqueue` calls (timed: "submit"; no daemon runs, so nothing
#                  starts), then `kugetsu daemon &` and `kugetsu wait` (all tasks) timed from
#                  the daemon's start until every task is recorded (the "drain"). HOME on the
#                  normal disk (fsyncs are real) unless --tmpfs. Every task must end completed
#   kugetsu-start  one `kugetsu start` per task. `start` has no foreground-wait mode (it
#                  returns once the agent has exec'd), so 3 lanes (bash loops) each run
#                  `kugetsu start --id ID -- CMD` then `kugetsu wait ID`, task after task:
#                  at most 3 agents live, and a lane refills its slot as soon as its agent's
#                  end is recorded. A start that exits 75 (no free slot: an end not yet
#                  recorded) is retried at once and counted. Each start call is timed on its
#                  own (bash $EPOCHREALTIME around the call: fork, exec, the call)
#   kugetsu-0.1-daemon, kugetsu-0.1-start
#                  the same with the kugetsu 0.1 binary (--baseline-cli): the "before" of
#                  issue 12 (the file store: ~9 fsyncs per task). Skipped, with a note, when
#                  there is none (a fresh clone has none: see docs/performance.md)
#   sem            GNU `sem -j3 --id ID CMD`, one call per task, then `sem --wait`. It costs
#                  ~0.1 s per call, so it runs fewer tasks (--sem-tasks, default M/20, at
#                  least 5) and its figures are per task, scaled to M ("est.")
# Every kugetsu HOME is new and empty; the first kugetsu command in it runs with
# MAX_CONCURRENT_AGENTS=3, which creates it with cap 3 (HOME keeps its limits; a later
# command with another value would be refused with exit 64).
#
# After the rounds, not timed with them:
#   fsync count    one more drain of M `/bin/true` (each kugetsu; --strace-tasks) with the
#                  daemon under `strace -f -c` (the daemon, its supervisors and agents): fsync
#                  and fdatasync calls per task and per pass (the daemon's -v lines count the
#                  passes that did something and their commits); and 20 `kugetsu enqueue`
#                  calls under strace. strace is installed from Debian when root and missing
#   one start      --single N times (default 300), each in a fresh HOME made beforehand
#                  (kugetsu config cap 3; for 0.1, kugetsu status): `kugetsu-floor -j 1 -n 1
#                  -- /bin/true` (a process that spawns one program and waits for it), then
#                  `kugetsu start -- /bin/true` (returns once the agent has exec'd), then the
#                  0.1 start, in an order rotated by call; each timed as a whole process.
#                  Overhead = median(start) - median(floor). --rt runs this part at real-time
#                  priority (chrt -f 50, root only) so that the machine's other work blurs it less
#
# Per-task overhead over the floor = (wall - floor wall) / M; ratio = wall / floor wall, with
# medians of the same workload. Goals of issue 12 (reported, never asserted): fsyncs at most
# one per pass; the durable drain of /bin/true at most 1.5 x xargs -P3 and faster than
# task-spooler; the drain of sleep 0.01 at most 1.1 x xargs; one start in an empty HOME at most
# 2 ms more than the floor's spawn.
#
# Run:   bash bench/compare.sh [options]
#   -n M              tasks per workload and runner (default 1000)
#   -r R              rounds (default 3)
#   --quick           -n 50 -r 1 --single 20: a check that everything runs (CI); figures are
#                     not meaningful
#   --sem-tasks K     tasks for sem (default max(5, M/20))
#   --runners LIST    comma-separated subset of: floor,xargs,parallel,tsp,kugetsu-daemon,
#                     kugetsu-start,kugetsu-0.1-daemon,kugetsu-0.1-start,sem (default: all;
#                     floor always runs)
#   --workloads LIST  comma-separated subset of: true,sleep (default both)
#   --baseline-cli P  the kugetsu 0.1 binary (default /work/base/build/release/cli/kugetsu if it
#                     exists; "none": no baseline). How to build one: docs/performance.md
#   --single N        one-start measurements (default 300; 0 skips them)
#   --rt              the one-start measurements at real-time priority (root)
#   --strace-tasks N  tasks of the traced drain (default M; 0 skips the fsync count)
#   --tmpfs           kugetsu's HOME and tsp's files under /dev/shm instead of /var/tmp
#   --home-parent DIR where HOME directories and work files go (default /var/tmp)
#   --build-dir DIR   the CMake build tree (default build/release; configured Release if it
#                     has no CMakeCache.txt; only kugetsu-cli and kugetsu-floor are built)
#   --no-install      do not apt-get install missing peers (runners without them are skipped)
#   --timeout S       per runner and round, seconds (default 900)
#   --out-dir DIR     results (default out/): compare.md (the tables), compare.json, compare.tsv
#                     (every timing of every round), compare-strace-*.txt (strace summaries)
#   --doc             also rewrite the generated tables of docs/performance.md (bench/perfdoc.py)
#   --keep            keep the work directory (HOMEs, tsp output, per-call timings)
# Needs bash 5 ($EPOCHREALTIME), python3, cmake and a C++20 compiler; installs task-spooler,
# parallel and strace from Debian when run as root and they are missing.
set -euo pipefail
export LC_ALL=C   # $EPOCHREALTIME with a '.' decimal point

M=1000
ROUNDS=3
SEM_TASKS=""
RUNNERS_ARG="floor,xargs,parallel,tsp,kugetsu-daemon,kugetsu-start,kugetsu-0.1-daemon,kugetsu-0.1-start,sem"
WORKLOADS_ARG="true,sleep"
PARENT=/var/tmp
BUILD=""
INSTALL=1
TIMEOUT=900
OUT_DIR=""
DOC=0
KEEP=0
QUICK=0
BASELINE_DEFAULT=/work/base/build/release/cli/kugetsu
BASELINE="default"
SINGLE=300
RT=0
STRACE_TASKS=""
while [[ $# -gt 0 ]]; do
    case "$1" in
        -n) M="${2:?-n needs a number}"; shift 2 ;;
        -r) ROUNDS="${2:?-r needs a number}"; shift 2 ;;
        --quick) QUICK=1; M=50; ROUNDS=1; SINGLE=20; shift ;;
        --sem-tasks) SEM_TASKS="${2:?}"; shift 2 ;;
        --runners) RUNNERS_ARG="${2:?}"; shift 2 ;;
        --workloads) WORKLOADS_ARG="${2:?}"; shift 2 ;;
        --baseline-cli) BASELINE="${2:?}"; shift 2 ;;
        --single) SINGLE="${2:?}"; shift 2 ;;
        --rt) RT=1; shift ;;
        --strace-tasks) STRACE_TASKS="${2:?}"; shift 2 ;;
        --tmpfs) PARENT=/dev/shm; shift ;;
        --home-parent) PARENT="${2:?}"; shift 2 ;;
        --build-dir) BUILD="${2:?}"; shift 2 ;;
        --no-install) INSTALL=0; shift ;;
        --timeout) TIMEOUT="${2:?}"; shift 2 ;;
        --out-dir) OUT_DIR="${2:?}"; shift 2 ;;
        --doc) DOC=1; shift ;;
        --keep) KEEP=1; shift ;;
        -h|--help) sed -n '2,/^set -euo/p' "$0" | sed 's/^# \{0,1\}//;$d'; exit 0 ;;
        *) echo "compare.sh: unknown argument: $1 (try --help)" >&2; exit 64 ;;
    esac
done
[[ -n "$STRACE_TASKS" ]] || STRACE_TASKS=$M
for v in M ROUNDS TIMEOUT; do
    [[ "${!v}" =~ ^[1-9][0-9]*$ ]] || { echo "compare.sh: $v must be a whole number >= 1" >&2; exit 64; }
done
for v in SINGLE STRACE_TASKS; do
    [[ "${!v}" =~ ^[0-9]+$ ]] || { echo "compare.sh: $v must be a whole number" >&2; exit 64; }
done
[[ -n "$SEM_TASKS" ]] || SEM_TASKS=$(( M / 20 > 5 ? M / 20 : 5 ))
[[ "$SEM_TASKS" =~ ^[1-9][0-9]*$ ]] || { echo "compare.sh: --sem-tasks must be a whole number >= 1" >&2; exit 64; }
(( BASH_VERSINFO[0] >= 5 )) || { echo "compare.sh: needs bash 5 (EPOCHREALTIME)" >&2; exit 64; }

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
BUILD_ARG="$BUILD"
BUILD="${BUILD:-build/release}"
[[ "$BUILD" = /* ]] || BUILD="$ROOT/$BUILD"
OUT_DIR="${OUT_DIR:-$ROOT/out}"
[[ "$OUT_DIR" = /* ]] || OUT_DIR="$ROOT/$OUT_DIR"

log() { echo "compare.sh: $*" >&2; }
die() { echo "compare.sh: FAILED: $*" >&2; exit 1; }

IFS=, read -r -a RUNNERS <<<"$RUNNERS_ARG"
IFS=, read -r -a WORKLOADS <<<"$WORKLOADS_ARG"
for r in "${RUNNERS[@]}"; do
    case "$r" in floor|xargs|parallel|tsp|kugetsu-daemon|kugetsu-start|kugetsu-0.1-daemon|kugetsu-0.1-start|sem) ;;
        *) die "unknown runner: $r" ;; esac
done
for w in "${WORKLOADS[@]}"; do
    case "$w" in true|sleep) ;; *) die "unknown workload: $w" ;; esac
done
[[ " ${RUNNERS[*]} " == *" floor "* ]] || RUNNERS=(floor "${RUNNERS[@]}")   # the ratios need it

# ---- the baseline: kugetsu 0.1 -------------------------------------------------------------
NOTES=()
case "$BASELINE" in
    none) BASE="" ;;
    default)
        if [[ -x "$BASELINE_DEFAULT" ]]; then BASE="$BASELINE_DEFAULT"; else
            BASE=""
            NOTES+=("kugetsu 0.1: skipped, no baseline binary at $BASELINE_DEFAULT (--baseline-cli PATH; docs/performance.md says how to build one)")
        fi ;;
    *) [[ -x "$BASELINE" ]] || die "--baseline-cli $BASELINE: not an executable"; BASE="$(cd "$(dirname "$BASELINE")" && pwd)/$(basename "$BASELINE")" ;;
esac

# ---- peers -------------------------------------------------------------------------------
have_gnu_parallel() { command -v parallel >/dev/null && parallel --version 2>/dev/null | grep -q '^GNU parallel'; }
missing=()
command -v tsp >/dev/null || missing+=(task-spooler)
have_gnu_parallel || missing+=(parallel)
command -v flock >/dev/null || missing+=(util-linux)
command -v timeout >/dev/null || missing+=(coreutils)
[[ "$STRACE_TASKS" -eq 0 ]] || command -v strace >/dev/null || missing+=(strace)
if [[ ${#missing[@]} -gt 0 ]]; then
    if [[ $INSTALL -eq 1 && $(id -u) -eq 0 ]]; then
        log "installing ${missing[*]}"
        export DEBIAN_FRONTEND=noninteractive
        apt-get update -qq >/dev/null && apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null \
            || log "apt-get install ${missing[*]} failed: the runners that need them are skipped"
    else
        log "missing ${missing[*]} (not installed: $([[ $INSTALL -eq 1 ]] && echo 'not root' || echo '--no-install')); their runners are skipped"
    fi
fi
command -v timeout >/dev/null && command -v flock >/dev/null || die "needs timeout (coreutils) and flock (util-linux)"
if [[ "$STRACE_TASKS" -gt 0 ]] && ! command -v strace >/dev/null; then
    NOTES+=("fsync count: skipped, strace is not installed")
    STRACE_TASKS=0
fi
runnable() {   # runnable RUNNER: 0 if its tool is there
    case "$1" in
        tsp) command -v tsp >/dev/null ;;
        parallel|sem) have_gnu_parallel && command -v sem >/dev/null ;;
        kugetsu-0.1-*) [[ -n "$BASE" ]] ;;
        *) return 0 ;;
    esac
}
kept=()
for r in "${RUNNERS[@]}"; do
    if runnable "$r"; then kept+=("$r")
    elif [[ "$r" != kugetsu-0.1-* ]]; then NOTES+=("$r: skipped, its tool is not installed"); fi
done
RUNNERS=("${kept[@]}")
RT_CMD=()
if [[ $RT -eq 1 ]]; then
    if [[ $(id -u) -eq 0 ]] && command -v chrt >/dev/null; then RT_CMD=(chrt -f 50); else
        NOTES+=("--rt ignored: needs root and chrt"); fi
fi

# ---- build -------------------------------------------------------------------------------
# The default tree is the `release` preset's; another --build-dir is configured Release if it
# has none. A fresh clone first gets its Debian packages (scripts/setup-debian.sh).
[[ -f "$BUILD/CMakeCache.txt" ]] || bash "$ROOT/scripts/setup-debian.sh" >&2
if [[ -z "$BUILD_ARG" ]]; then
    cmake --preset release >/dev/null
elif [[ ! -f "$BUILD/CMakeCache.txt" ]]; then
    log "configuring $BUILD (Release)"
    cmake -S "$ROOT" -B "$BUILD" -DCMAKE_BUILD_TYPE=Release >/dev/null
fi
log "building kugetsu-cli kugetsu-floor in $BUILD"
cmake --build "$BUILD" -j2 --target kugetsu-cli kugetsu-floor >/dev/null
K="$BUILD/cli/kugetsu"
FLOOR="$BUILD/bench/kugetsu-floor"
[[ -x "$K" && -x "$FLOOR" ]] || die "no $K or $FLOOR after the build"
BUILD_TYPE="$(sed -n 's/^CMAKE_BUILD_TYPE:[A-Z]*=//p' "$BUILD/CMakeCache.txt")"
[[ "$BUILD_TYPE" == Release ]] || NOTES+=("kugetsu built as '${BUILD_TYPE:-no build type}', not Release: its figures are not representative")

# ---- work directory and cleanup ----------------------------------------------------------
mkdir -p "$OUT_DIR" "$PARENT"
WORK="$(mktemp -d "$PARENT/kugetsu-compare.XXXXXX")"
RESULTS="$WORK/results.tsv"   # round workload runner phase tasks seconds
: >"$RESULTS"
: >"$WORK/tsp-sockets"
: >"$WORK/daemons"
RUNNER_PID=""
cleanup() {
    local s p
    if [[ -n "$RUNNER_PID" ]]; then
        kill -TERM "$RUNNER_PID" 2>/dev/null || true
        wait "$RUNNER_PID" 2>/dev/null || true
    fi
    while read -r s; do [[ -n "$s" ]] && TS_SOCKET="$s" tsp -K >/dev/null 2>&1 || true; done <"$WORK/tsp-sockets"
    while read -r p; do [[ -n "$p" ]] && kill -TERM "$p" 2>/dev/null || true; done <"$WORK/daemons"
    if [[ $KEEP -eq 1 ]]; then log "kept $WORK"; else rm -rf "$WORK"; fi
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# ---- runners -----------------------------------------------------------------------------
# Each runs in its own `bash -c` under `timeout` (which kills its process group), and
# appends "round workload runner phase tasks seconds" lines to $RESULTS. Times are bash's
# $EPOCHREALTIME (no process is forked to read the clock). The kugetsu runners use $KB (the
# binary) and $RNAME (their name), which run_one sets for the 0.1 runners.
export K BASE FLOOR WORK RESULTS PARENT M SEM_TASKS
record() { printf '%s\t%s\t%s\t%s\t%s\t%s\n' "$ROUND" "$WL" "$1" "$2" "$3" "$4" >>"$RESULTS"; }
elapsed() { python3 -c "import sys; print(f'{float(sys.argv[2]) - float(sys.argv[1]):.6f}')" "$1" "$2"; }

run_floor() {
    local t0 t1
    t0=$EPOCHREALTIME
    "$FLOOR" -j 3 -n "$M" -- "${CMD[@]}"
    t1=$EPOCHREALTIME
    record floor wall "$M" "$(elapsed "$t0" "$t1")"
}

run_xargs() {
    local t0 t1
    t0=$EPOCHREALTIME
    seq "$M" | xargs -P3 -I{} "${CMD[@]}"
    t1=$EPOCHREALTIME
    record xargs wall "$M" "$(elapsed "$t0" "$t1")"
}

run_parallel() {
    local t0 t1 h="$WORK/parallel-home"
    mkdir -p "$h"
    t0=$EPOCHREALTIME
    seq "$M" | HOME="$h" parallel --will-cite -j3 -N0 "${CMD[@]}"
    t1=$EPOCHREALTIME
    record parallel wall "$M" "$(elapsed "$t0" "$t1")"
}

run_tsp() {
    local dir t0 t1 i
    dir="$(mktemp -d "$WORK/tsp.XXXXXX")"
    export TS_SOCKET="$dir/socket" TMPDIR="$dir" TS_MAXFINISHED=$((M + 10)) TS_SLOTS=3
    echo "$TS_SOCKET" >>"$WORK/tsp-sockets"
    trap 'tsp -K >/dev/null 2>&1 || true' EXIT
    tsp -S 3
    # Submitted while the jobs run, as users do: each queued job keeps its `tsp` client (and a
    # connection) alive until it runs, and the server takes at most 1000 connections, so
    # 1000 jobs cannot all wait behind blockers. Jobs keep their output in a file in TMPDIR
    # (tsp's default), as kugetsu keeps a log.
    t0=$EPOCHREALTIME
    for ((i = 1; i <= M; i++)); do tsp "${CMD[@]}" >/dev/null; done
    # Wait for the last job, then for anything still queued or running.
    tsp -w >/dev/null 2>&1 || true
    while tsp -l | awk 'NR > 1 && $2 != "finished" { busy = 1 } END { exit !busy }'; do sleep 0.001; done
    t1=$EPOCHREALTIME
    local done_ok
    done_ok=$(tsp -l | awk 'NR > 1 && $2 == "finished" && $4 == 0' | wc -l)
    [[ "$done_ok" -eq "$M" ]] || { echo "tsp: $done_ok of $M jobs finished with 0" >&2; exit 1; }
    record tsp total "$M" "$(elapsed "$t0" "$t1")"
}

# A fresh HOME for each run (on the filesystem of $PARENT).
new_home() { mktemp -d "$WORK/home.XXXXXX"; }   # inside WORK: removed by the cleanup

check_completed() {   # check_completed KUGETSU HOME N
    KUGETSU_HOME="$2" "$1" status --json | python3 -c '
import json, sys
s = json.load(sys.stdin); n = int(sys.argv[1])
done = sum(t["state"] == "completed" for t in s["tasks"])
total, live = len(s["tasks"]), s["live"]
if done != n or total != n or live != 0:
    sys.exit(f"kugetsu: {done} of {total} tasks completed (expected {n}), {live} live")
' "$3"
}

run_kugetsu_daemon() {
    local kb="${KB:-$K}" rn="${RNAME:-kugetsu-daemon}" home t0 t1 t2 t3 i dpid rc=0
    home="$(new_home)"
    # The first command creates HOME with cap 3; the others must agree (they do).
    export KUGETSU_HOME="$home" MAX_CONCURRENT_AGENTS=3
    t0=$EPOCHREALTIME
    for ((i = 1; i <= M; i++)); do "$kb" enqueue --id "t$i" -- "${CMD[@]}" >/dev/null; done
    t1=$EPOCHREALTIME
    t2=$EPOCHREALTIME
    "$kb" daemon 2>"$home.daemon.err" &
    dpid=$!
    echo "$dpid" >>"$WORK/daemons"
    "$kb" wait >/dev/null || rc=$?
    t3=$EPOCHREALTIME
    kill -TERM "$dpid" 2>/dev/null || true
    wait "$dpid" || { echo "$rn: kugetsu daemon failed: $(cat "$home.daemon.err")" >&2; exit 1; }
    [[ $rc -eq 0 ]] || { echo "$rn: kugetsu wait exited $rc" >&2; exit 1; }
    check_completed "$kb" "$home" "$M"
    record "$rn" submit "$M" "$(elapsed "$t0" "$t1")"
    record "$rn" drain "$M" "$(elapsed "$t2" "$t3")"
    [[ -n "${KEEP_HOMES:-}" ]] || rm -rf "$home" "$home.daemon.err"
}

# One lane: tasks LANE, LANE+3, ...: start, then wait for it. Appends "<seconds> <retries>"
# per start call to $1.
start_lane() {
    local kb="${KB:-$K}" calls="$1" lane="$2" i s e rc retries
    for ((i = lane; i <= M; i += 3)); do
        retries=0
        while :; do
            rc=0
            s=$EPOCHREALTIME
            "$kb" start --id "s$i" -- "${CMD[@]}" >/dev/null 2>>"$calls.err" || rc=$?
            e=$EPOCHREALTIME
            [[ $rc -eq 0 ]] && break
            [[ $rc -eq 75 && $retries -lt 1000 ]] || { echo "kugetsu start s$i exited $rc: $(tail -n 1 "$calls.err")" >&2; return 1; }
            retries=$((retries + 1))
        done
        echo "${s/,/.} ${e/,/.} $retries" >>"$calls"
        "$kb" wait "s$i" >/dev/null || { echo "kugetsu wait s$i failed" >&2; return 1; }
    done
}

run_kugetsu_start() {
    local kb="${KB:-$K}" rn="${RNAME:-kugetsu-start}" home t0 t1 calls p1 p2 p3 rc=0
    calls="$WORK/start-calls.$rn.$ROUND.$WL"
    home="$(new_home)"
    export KUGETSU_HOME="$home" MAX_CONCURRENT_AGENTS=3
    "$kb" reap -q >/dev/null   # creates HOME (cap 3) before the lanes race for it (status would not)
    : >"$calls"
    t0=$EPOCHREALTIME
    start_lane "$calls" 1 & p1=$!
    start_lane "$calls" 2 & p2=$!
    start_lane "$calls" 3 & p3=$!
    wait "$p1" || rc=1
    wait "$p2" || rc=1
    wait "$p3" || rc=1
    t1=$EPOCHREALTIME
    [[ $rc -eq 0 ]] || exit 1
    check_completed "$kb" "$home" "$M"
    record "$rn" wall "$M" "$(elapsed "$t0" "$t1")"
    # every start call: its own line, phase "call"
    awk -v r="$ROUND" -v w="$WL" -v n="$rn" '{ printf "%s\t%s\t%s\tcall\t%d\t%.6f\n", r, w, n, $3, $2 - $1 }' "$calls" >>"$RESULTS"
    rm -rf "$home"
}

run_sem() {
    local h="$WORK/sem-home" id="kugetsu-compare-$$-$ROUND-$WL" t0 t1 i
    mkdir -p "$h"
    export HOME="$h"
    t0=$EPOCHREALTIME
    for ((i = 1; i <= SEM_TASKS; i++)); do sem --will-cite -j3 --id "$id" "${CMD[@]}"; done
    sem --will-cite --wait --id "$id"
    t1=$EPOCHREALTIME
    record sem wall "$SEM_TASKS" "$(elapsed "$t0" "$t1")"
}

export -f record elapsed run_floor run_xargs run_parallel run_tsp new_home check_completed \
    run_kugetsu_daemon start_lane run_kugetsu_start run_sem

run_one() {   # run_one RUNNER WORKLOAD ROUND
    local runner="$1" fn kb="$K"
    case "$runner" in
        floor) fn=run_floor ;; xargs) fn=run_xargs ;; parallel) fn=run_parallel ;; tsp) fn=run_tsp ;;
        kugetsu-daemon) fn=run_kugetsu_daemon ;; kugetsu-start) fn=run_kugetsu_start ;; sem) fn=run_sem ;;
        kugetsu-0.1-daemon) fn=run_kugetsu_daemon; kb="$BASE" ;;
        kugetsu-0.1-start) fn=run_kugetsu_start; kb="$BASE" ;;
    esac
    local cmd
    case "$2" in true) cmd="/bin/true" ;; sleep) cmd="sleep 0.01" ;; esac
    log "round $3/$ROUNDS, $2: $runner"
    local rc=0
    # In the background, so that a signal to this script is handled at once (bash runs traps
    # only between foreground commands); the cleanup stops it. `timeout` passes the signal on
    # to the runner's whole process group.
    ROUND="$3" WL="$2" KB="$kb" RNAME="$runner" timeout --kill-after=10 "$TIMEOUT" \
        bash -c 'set -euo pipefail; read -r -a CMD <<<"$1"; shift; "$@"' _ "$cmd" "$fn" &
    RUNNER_PID=$!
    wait "$RUNNER_PID" || rc=$?
    RUNNER_PID=""
    [[ $rc -eq 0 ]] || die "$runner ($2, round $3) exited $rc$([[ $rc -eq 124 ]] && echo ": timed out after $TIMEOUT s")"
}

# ---- the fsync count: a drain under strace -f -c ------------------------------------------
# strace_drain NAME KUGETSU N: enqueues N /bin/true (not traced), then runs `kugetsu daemon -v`
# under `strace -f -c` until `kugetsu wait` returns; writes $OUT_DIR/compare-strace-NAME.txt
# and a line "strace NAME tasks fsync fdatasync passes commits renames syscalls enqueue_calls
# enqueue_fsyncs" to $RESULTS (round 0). strace blocks fatal signals (-I3 with -o), so the
# daemon (its tracee, strace's child) is signalled, not strace.
strace_drain() {
    local name="$1" kb="$2" n="$3" home sum spid dpid="" i p rc=0
    sum="$OUT_DIR/compare-strace-$name.txt"
    home="$(new_home)"
    log "fsync count: $name, $n tasks, daemon under strace -f -c"
    (
        export KUGETSU_HOME="$home" MAX_CONCURRENT_AGENTS=3
        # 20 enqueue calls, traced, then the rest
        strace -f -c -o "$WORK/strace-enqueue-$name.txt" bash -c \
            'for ((i = 1; i <= 20; i++)); do "$0" enqueue --id "t$i" -- /bin/true >/dev/null; done' "$kb"
        for ((i = 21; i <= n; i++)); do "$kb" enqueue --id "t$i" -- /bin/true >/dev/null; done
        strace -f -c -o "$sum" "$kb" daemon -v 2>"$home.daemon.err" &
        spid=$!
        # strace's child that runs the daemon (strace forks a short-lived probe child first)
        for ((i = 0; i < 200; i++)); do
            for p in $(ps -o pid= --ppid "$spid"); do
                [[ "$(readlink "/proc/$p/exe" 2>/dev/null)" == "$(readlink -f "$kb")" ]] && { dpid="$p"; break; }
            done
            [[ -n "${dpid:-}" ]] && break
            sleep 0.05
        done
        [[ -n "$dpid" ]] || { echo "no traced daemon" >&2; exit 1; }
        echo "$dpid" >>"$WORK/daemons"
        timeout "$TIMEOUT" "$kb" wait >/dev/null || rc=$?
        kill -TERM "$dpid" 2>/dev/null || true
        wait "$spid" || true
        [[ $rc -eq 0 ]] || { echo "$name: kugetsu wait exited $rc under strace" >&2; exit 1; }
        check_completed "$kb" "$home" "$n"
    ) || die "fsync count ($name) failed"
    python3 - "$name" "$n" "$sum" "$home.daemon.err" "$WORK/strace-enqueue-$name.txt" >>"$RESULTS" <<'PY'
import re, sys
name, n, summary, err, enq = sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4], sys.argv[5]
def calls(path):
    c = {}
    for line in open(path):
        f = line.split()
        if len(f) >= 5 and f[-1] != "syscall" and re.match(r"^[\d.]+$", f[0]) and f[3].isdigit():
            c[f[-1]] = int(f[3])
        elif len(f) >= 4 and f[-1] == "total":
            c["total"] = int(f[2])
    return c
c, e = calls(summary), calls(enq)
passes = commits = 0
for line in open(err):
    if "pass:" in line:
        passes += 1
        m = re.search(r"(\d+) commits", line)
        if m: commits += int(m.group(1))
print("0\ttrue\tstrace:{}\tcounts\t{}\t{}".format(name, n, " ".join(str(x) for x in (
    c.get("fsync", 0), c.get("fdatasync", 0), passes, commits, c.get("rename", 0) + c.get("renameat", 0) + c.get("renameat2", 0),
    c.get("total", 0), 20, e.get("fsync", 0) + e.get("fdatasync", 0)))))
PY
    rm -rf "$home" "$home.daemon.err"
}

# ---- one start in an empty HOME -----------------------------------------------------------
# single_starts N: N rounds of: the floor's single spawn, `kugetsu start` and the 0.1 start,
# each in a HOME made just before (not timed), in an order rotated by round; "single" rows.
single_starts() {
    local n="$1" i j who s e h hs=() order
    local names=(floor kugetsu)
    [[ -n "$BASE" ]] && names+=(kugetsu-0.1)
    log "one start in an empty HOME: $n rounds of ${names[*]}$([[ "${RT_CMD_SET:-0}" -gt 0 ]] && echo ', real-time priority')"
    for ((i = 1; i <= n; i++)); do
        h="$(new_home)"; KUGETSU_HOME="$h" MAX_CONCURRENT_AGENTS=3 "$K" config cap 3 >/dev/null
        hs=("$h")
        if [[ -n "$BASE" ]]; then h="$(new_home)"; KUGETSU_HOME="$h" MAX_CONCURRENT_AGENTS=3 "$BASE" status >/dev/null; hs+=("$h"); fi
        for ((j = 0; j < ${#names[@]}; j++)); do
            who="${names[$(((i + j) % ${#names[@]}))]}"
            case "$who" in
                floor) s=$EPOCHREALTIME; "$FLOOR" -j 1 -n 1 -- /bin/true; e=$EPOCHREALTIME ;;
                kugetsu) s=$EPOCHREALTIME; KUGETSU_HOME="${hs[0]}" "$K" start --id one -- /bin/true >/dev/null; e=$EPOCHREALTIME ;;
                kugetsu-0.1) s=$EPOCHREALTIME; KUGETSU_HOME="${hs[1]}" "$BASE" start --id one -- /bin/true >/dev/null; e=$EPOCHREALTIME ;;
            esac
            printf '0\ttrue\tsingle:%s\tcall\t1\t%s\n' "$who" "$(elapsed "$s" "$e")" >>"$RESULTS"
        done
        # Not timed: the agents' ends (their supervisors record them), then the HOMEs go.
        KUGETSU_HOME="${hs[0]}" "$K" wait one >/dev/null || die "kugetsu wait one failed in ${hs[0]}"
        [[ -n "$BASE" ]] && { KUGETSU_HOME="${hs[1]}" "$BASE" wait one >/dev/null || die "kugetsu 0.1 wait one failed"; }
        rm -rf "${hs[@]}"
    done
}
export -f single_starts log die
export RT_CMD_SET="${#RT_CMD[@]}"

# ---- run ---------------------------------------------------------------------------------
T_START=$SECONDS
log "M=$M, rounds=$ROUNDS, sem tasks=$SEM_TASKS, HOME parent $PARENT, build $BUILD ($BUILD_TYPE), baseline ${BASE:-none}"
NR=${#RUNNERS[@]}
for ((round = 1; round <= ROUNDS; round++)); do
    for wl in "${WORKLOADS[@]}"; do
        for ((j = 0; j < NR; j++)); do
            run_one "${RUNNERS[$(((j + round - 1) % NR))]}" "$wl" "$round"
        done
    done
done
if [[ "$STRACE_TASKS" -gt 0 ]]; then
    strace_drain kugetsu "$K" "$STRACE_TASKS"
    [[ -n "$BASE" ]] && strace_drain kugetsu-0.1 "$BASE" "$STRACE_TASKS"
fi
if [[ "$SINGLE" -gt 0 ]]; then
    if [[ ${#RT_CMD[@]} -gt 0 ]]; then
        "${RT_CMD[@]}" bash -c 'single_starts "$1"' _ "$SINGLE"
    else
        single_starts "$SINGLE"
    fi
fi
log "all runs in $((SECONDS - T_START)) s"

# ---- statistics --------------------------------------------------------------------------
cp "$RESULTS" "$OUT_DIR/compare.tsv"
case "$(stat -f -c %t "$PARENT" 2>/dev/null)" in   # stat's %T says "ext2/ext3" for ext4
    ef53) FS_TYPE=ext4 ;; 1021994) FS_TYPE=tmpfs ;; 58465342) FS_TYPE=xfs ;; 9123683e) FS_TYPE=btrfs ;;
    *) FS_TYPE="$(stat -f -c %T "$PARENT" 2>/dev/null || echo '?')" ;;
esac
BASE_DESC="none"
[[ -n "$BASE" ]] && BASE_DESC="$BASE"
python3 - "$OUT_DIR" "$M" "$ROUNDS" "$SEM_TASKS" "$PARENT ($FS_TYPE)" "$QUICK" "$BUILD_TYPE" "$BASE_DESC" \
    "$([[ ${#RT_CMD[@]} -gt 0 ]] && echo 1 || echo 0)" "${NOTES[@]+"${NOTES[@]}"}" <<'PY'
import collections, json, math, os, statistics, sys

out_dir, M, rounds, sem_tasks, home_fs, quick, build_type, baseline, rt = sys.argv[1:10]
M, rounds, sem_tasks, quick, rt = int(M), int(rounds), int(sem_tasks), quick == "1", rt == "1"
notes = sys.argv[10:]
rows = collections.defaultdict(lambda: collections.defaultdict(list))   # (wl, runner) -> phase -> [s]
calls = collections.defaultdict(list)                                    # (wl, runner) -> [(s, retries)]
calls_by_round = collections.defaultdict(list)                           # (wl, runner, round) -> [s], in order
single = collections.defaultdict(list)                                   # who -> [s]
strace = {}                                                              # name -> counts
tasks_of = {}
with open(os.path.join(out_dir, "compare.tsv")) as f:
    for line in f:
        rnd, wl, runner, phase, n, s = line.rstrip("\n").split("\t")
        if runner.startswith("single:"):
            single[runner[7:]].append(float(s))
            continue
        if runner.startswith("strace:"):
            v = [int(x) for x in s.split()]
            keys = ("fsync", "fdatasync", "passes", "commits", "renames", "syscalls", "enqueue_calls", "enqueue_syncs")
            strace[runner[7:]] = dict(zip(keys, v), tasks=int(n))
            continue
        if phase == "call":
            calls[(wl, runner)].append((float(s), int(n)))
            calls_by_round[(wl, runner, rnd)].append(float(s))
            continue
        rows[(wl, runner)][phase].append(float(s))
        tasks_of[(wl, runner)] = int(n)

def med(xs): return statistics.median(xs) if xs else None
def q(xs, p):                    # nearest rank
    xs = sorted(xs); return xs[max(0, math.ceil(p * len(xs)) - 1)] if xs else None

workloads = [w for w in ("true", "sleep") if (w, "floor") in rows]
label = {"true": "`/bin/true`", "sleep": "`sleep 0.01`"}
names = {
    "floor": "C floor (posix_spawn + waitpid)",
    "xargs": "`xargs -P3`",
    "parallel": "GNU `parallel -j3`",
    "tsp:total": "task-spooler `tsp -S 3` (submitted while running)",
    "kugetsu-daemon:drain": "**kugetsu daemon: drain**",
    "kugetsu-daemon:total": "kugetsu: enqueue, then daemon drain (sum)",
    "kugetsu-0.1-daemon:drain": "kugetsu 0.1 daemon: drain (before)",
    "kugetsu-0.1-daemon:total": "kugetsu 0.1: enqueue, then daemon drain (sum, before)",
    "kugetsu-start": "**one `kugetsu start` per task** (3 lanes of start + wait)",
    "kugetsu-0.1-start": "kugetsu 0.1: one `start` per task (before)",
    "sem": "GNU `sem -j3`, one call per task",
}
result = {"M": M, "rounds": rounds, "sem_tasks": sem_tasks, "home": home_fs, "build_type": build_type,
          "baseline": baseline, "quick": quick, "workloads": {}, "goals": [], "notes": notes}
md = []
for wl in workloads:
    floor = med(rows[(wl, "floor")]["wall"])
    floor_pt = floor / M
    table = []
    def add(key, wall, n):
        pt = wall / n
        table.append({"runner": key, "name": names[key], "tasks": n, "wall_s": wall,
                      "wall_for_M_s": pt * M, "estimated": n != M,
                      "per_task_ms": pt * 1e3, "overhead_ms": (pt - floor_pt) * 1e3, "ratio": pt / floor_pt})
    for r in ("floor", "xargs", "parallel"):
        if (wl, r) in rows: add(r, med(rows[(wl, r)]["wall"]), tasks_of[(wl, r)])
    for k in ("kugetsu-daemon", "kugetsu-0.1-daemon"):
        if (wl, k) in rows:
            ph = rows[(wl, k)]
            add(f"{k}:drain", med(ph["drain"]), M)
            add(f"{k}:total", med([a + b for a, b in zip(ph["submit"], ph["drain"])]), M)
    if (wl, "tsp") in rows:
        add("tsp:total", med(rows[(wl, "tsp")]["total"]), M)
    for r in ("kugetsu-start", "kugetsu-0.1-start", "sem"):
        if (wl, r) in rows: add(r, med(rows[(wl, r)]["wall"]), tasks_of[(wl, r)])
    submit = {r: med(rows[(wl, r)]["submit"]) / M * 1e3 for r in ("kugetsu-daemon", "kugetsu-0.1-daemon") if (wl, r) in rows}
    start_calls = {}
    for r in ("kugetsu-start", "kugetsu-0.1-start"):
        c = [s for s, _ in calls.get((wl, r), [])]
        if not c: continue
        sc = {"calls": len(c), "median_ms": med(c) * 1e3, "p90_ms": q(c, 0.9) * 1e3, "p99_ms": q(c, 0.99) * 1e3,
              "max_ms": max(c) * 1e3, "retries": sum(n for _, n in calls[(wl, r)])}
        firsts, lasts = [], []
        for (w, rr, _), xs in calls_by_round.items():
            if w == wl and rr == r and len(xs) >= 10:
                firsts.append(med(xs[:len(xs) // 10])); lasts.append(med(xs[-(len(xs) // 10):]))
        if firsts:
            sc["first_tenth_median_ms"] = med(firsts) * 1e3
            sc["last_tenth_median_ms"] = med(lasts) * 1e3
        start_calls[r] = sc
    result["workloads"][wl] = {"floor_s": floor, "rows": table, "submit_ms_per_task": submit, "start_calls": start_calls}

    md.append(f"#### {M} × {label[wl]}, cap 3 (median of {rounds} round{'s' if rounds > 1 else ''})\n")
    md.append("| runner | tasks | median wall | per-task overhead over the floor | ratio to the floor | ratio to xargs |")
    md.append("|---|---:|---:|---:|---:|---:|")
    xw = next((t["per_task_ms"] for t in table if t["runner"] == "xargs"), None)
    for t in table:
        wall = f"{t['wall_s']:.3f} s" + (f" (est. {t['wall_for_M_s']:.1f} s for {M})" if t["estimated"] else "")
        ov = "0" if t["runner"] == "floor" else f"{t['overhead_ms']:.2f} ms"
        rx = f"{t['per_task_ms'] / xw:.2f}" if xw else "-"
        md.append(f"| {t['name']} | {t['tasks']} | {wall} | {ov} | {t['ratio']:.2f} | {rx} |")
    md.append("")
    extra = [f"floor: {floor_pt * 1e3:.3f} ms per task ({M / floor:.0f} tasks/s)"]
    for r, ms in submit.items():
        who = "`kugetsu enqueue`" if r == "kugetsu-daemon" else "kugetsu 0.1 `enqueue`"
        extra.append(f"{who}: {ms:.2f} ms per call (one process per task, before the daemon runs)")
    for r, sc in start_calls.items():
        who = "`kugetsu start`" if r == "kugetsu-start" else "kugetsu 0.1 `start`"
        extra.append(f"{who} call in the lanes ({sc['calls']} calls, with 2 `wait` processes beside it): median "
                     f"{sc['median_ms']:.2f} ms, p90 {sc['p90_ms']:.2f} ms, p99 {sc['p99_ms']:.2f} ms, max {sc['max_ms']:.2f} ms; "
                     f"{sc['retries']} retries after exit 75"
                     + (f"; median {sc['first_tenth_median_ms']:.2f} ms over the first tenth of the calls, "
                        f"{sc['last_tenth_median_ms']:.2f} ms over the last" if "first_tenth_median_ms" in sc else ""))
    md.extend(f"- {e}" for e in extra)
    md.append("")

    by = {t["runner"]: t for t in table}
    def drain_goal(target, aim):
        if "kugetsu-daemon:drain" not in by or "xargs" not in by: return
        r = by["kugetsu-daemon:drain"]["wall_s"] / by["xargs"]["wall_s"]
        before = None
        if "kugetsu-0.1-daemon:drain" in by:
            b = by["kugetsu-0.1-daemon:drain"]["wall_s"]
            before = f"{b / by['xargs']['wall_s']:.2f} × xargs ({b:.2f} s)"
        result["goals"].append({"goal": f"daemon drain, {M} × {label[wl]}, durable (HOME on {home_fs.split('(')[-1].rstrip(')')})",
                                "target": f"≤ {target} × xargs -P3" + (f" (aim {aim})" if aim else ""),
                                "measured": f"{r:.2f} × xargs ({by['kugetsu-daemon:drain']['wall_s']:.2f} s vs "
                                            f"{by['xargs']['wall_s']:.2f} s)",
                                "before": before, "ratio": r / target, "met": r <= target, "source": "compare"})
    if wl == "true":
        drain_goal(1.5, "1.0")
        if "kugetsu-daemon:drain" in by and "tsp:total" in by:
            r = by["kugetsu-daemon:drain"]["wall_s"] / by["tsp:total"]["wall_s"]
            before = None
            if "kugetsu-0.1-daemon:drain" in by:
                before = f"{by['kugetsu-0.1-daemon:drain']['wall_s'] / by['tsp:total']['wall_s']:.2f} × tsp"
            result["goals"].append({"goal": f"daemon drain, {M} × {label[wl]}, faster than task-spooler",
                                    "target": "< 1 × tsp -S 3", "measured": f"{r:.2f} × tsp ({by['tsp:total']['wall_s']:.2f} s)",
                                    "before": before, "ratio": r, "met": r < 1.0, "source": "compare"})
    else:
        drain_goal(1.1, None)

# fsync count
fs_md = []
if strace:
    fs_md += ["#### fsync calls during a drain (`strace -f -c` of the daemon, its supervisors and agents)", "",
              "| kugetsu | tasks | fsync | fdatasync | per task | passes (that did something) | per pass | commits | renames per task | syscalls per task | fsyncs per `enqueue` call |",
              "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for name in ("kugetsu", "kugetsu-0.1"):
        if name not in strace: continue
        c = strace[name]
        syncs = c["fsync"] + c["fdatasync"]
        per_pass = syncs / c["passes"] if c["passes"] else None
        c["syncs_per_task"], c["syncs_per_pass"] = syncs / c["tasks"], per_pass
        c["enqueue_syncs_per_call"] = c["enqueue_syncs"] / c["enqueue_calls"] if c["enqueue_calls"] else None
        fs_md.append(f"| {'this build' if name == 'kugetsu' else '0.1 (before)'} | {c['tasks']} | {c['fsync']} | {c['fdatasync']} | "
                     f"{syncs / c['tasks']:.2f} | {c['passes']} | {per_pass:.2f} | {c['commits'] or '-'} | "
                     f"{c['renames'] / c['tasks']:.2f} | {c['syscalls'] / c['tasks']:.0f} | "
                     f"{c['enqueue_syncs_per_call']:.2f} |" if per_pass is not None else
                     f"| {name} | {c['tasks']} | {c['fsync']} | {c['fdatasync']} | {syncs / c['tasks']:.2f} | 0 | - | - | - | - | - |")
    fs_md.append("")
    result["fsync"] = strace
    if "kugetsu" in strace and strace["kugetsu"].get("syncs_per_pass") is not None:
        c = strace["kugetsu"]
        b = strace.get("kugetsu-0.1")
        before = (f"{b['syncs_per_task']:.2f} per task, {b['syncs_per_pass']:.2f} per pass"
                  if b and b.get("syncs_per_pass") is not None else None)
        result["goals"].append({"goal": f"fsync + fdatasync calls during a drain of {c['tasks']} × `/bin/true`",
                                "target": "≤ 1 per pass, well under 1 per task",
                                "measured": f"{c['syncs_per_task']:.2f} per task, {c['syncs_per_pass']:.2f} per pass "
                                            f"({c['passes']} passes, {c['commits']} commits)",
                                "before": before, "ratio": c["syncs_per_pass"], "met": c["syncs_per_pass"] <= 1.0 and c["syncs_per_task"] < 1.0,
                                "source": "compare"})

# one start in an empty HOME
st_md = []
if single.get("floor") and single.get("kugetsu"):
    fl = med(single["floor"]) * 1e3
    st_md += [f"#### One `kugetsu start` in an empty HOME ({len(single['kugetsu'])} calls, each in a fresh HOME"
              f"{', real-time priority' if rt else ''})", "",
              "| process | median | p90 | p99 | over the floor (median) |", "|---|---:|---:|---:|---:|"]
    res_single = {}
    for who, name in (("floor", "`kugetsu-floor -j 1 -n 1 -- /bin/true` (spawns one, waits for it)"),
                      ("kugetsu", "**`kugetsu start -- /bin/true`** (returns once the agent has exec'd)"),
                      ("kugetsu-0.1", "kugetsu 0.1 `start -- /bin/true` (before)")):
        xs = single.get(who)
        if not xs: continue
        m_ = med(xs) * 1e3
        res_single[who] = {"calls": len(xs), "median_ms": m_, "p90_ms": q(xs, 0.9) * 1e3, "p99_ms": q(xs, 0.99) * 1e3,
                           "over_floor_ms": m_ - fl}
        st_md.append(f"| {name} | {m_:.2f} ms | {q(xs, 0.9) * 1e3:.2f} ms | {q(xs, 0.99) * 1e3:.2f} ms | "
                     f"{'-' if who == 'floor' else f'{m_ - fl:+.2f} ms'} |")
    st_md.append("")
    result["single_start"] = res_single
    k = res_single["kugetsu"]
    b = res_single.get("kugetsu-0.1")
    result["goals"].append({"goal": "one `kugetsu start` in an empty HOME, beside the floor's single spawn",
                            "target": "≤ floor + 2 ms (median)",
                            "measured": f"floor + {k['over_floor_ms']:.2f} ms ({k['median_ms']:.2f} vs {fl:.2f} ms)",
                            "before": f"floor + {b['over_floor_ms']:.2f} ms ({b['median_ms']:.2f} ms)" if b else None,
                            "ratio": k["over_floor_ms"] / 2.0, "met": k["over_floor_ms"] <= 2.0, "source": "compare"})

head = [f"kugetsu HOME and tsp files: {home_fs}; kugetsu built {build_type}; {rounds} round(s), interleaved; "
        f"sem ran {sem_tasks} tasks (est. = scaled to {M}); kugetsu 0.1 (before): {baseline}."]
if quick: head.append("**--quick run: a check that everything runs; the figures mean little.**")
goals_md = ["| goal | target | before (0.1) | measured | ratio to target | met |", "|---|---|---|---|---:|---|"]
for g in result["goals"]:
    goals_md.append(f"| {g['goal']} | {g['target']} | {g.get('before') or '-'} | {g['measured']} | {g['ratio']:.2f} | "
                    f"{'yes' if g['met'] else '**no**'} |")
text = "\n".join(head) + "\n\n" + "\n".join(md) + "\n" + "\n".join(fs_md + st_md) + "\n" + "\n".join(goals_md) + "\n"
for n in notes: text += f"\nnote: {n}"
with open(os.path.join(out_dir, "compare.md"), "w") as f: f.write(text.rstrip("\n") + "\n")
with open(os.path.join(out_dir, "compare.json"), "w") as f: json.dump(result, f, indent=2)
print(text)
print(f"written: {out_dir}/compare.md, compare.json, compare.tsv")
PY

if [[ $DOC -eq 1 ]]; then
    python3 "$ROOT/bench/perfdoc.py" "$ROOT/docs/performance.md" "$OUT_DIR"
fi
