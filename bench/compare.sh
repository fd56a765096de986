#!/usr/bin/env bash
# bench/compare.sh: kugetsu beside the tools people use, whole processes, one run (issue 6).
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
#                  end is recorded. Lane i takes tasks i, i+3, i+6, ... (the tasks are alike,
#                  so the lanes stay balanced). A start that exits 75 (no free slot: an end
#                  not yet recorded) is retried at once and counted. Each start call is timed
#                  on its own (bash $EPOCHREALTIME around the call: fork, exec, the call)
#   sem            GNU `sem -j3 --id ID CMD`, one call per task, then `sem --wait`. It costs
#                  ~0.1 s per call, so it runs fewer tasks (--sem-tasks, default M/20, at
#                  least 5) and its figures are per task, scaled to M ("est.")
#
# Per-task overhead over the floor = (wall - floor wall) / M; ratio = wall / floor wall, with
# medians of the same workload. Goals checked (issue 6; reported, never asserted): the daemon's
# drain, durable, no slower than xargs -P3; one `kugetsu start` call under 2 ms.
#
# Run:   bash bench/compare.sh [options]
#   -n M              tasks per workload and runner (default 1000)
#   -r R              rounds (default 3)
#   --quick           -n 50 -r 1: a check that everything runs (CI); figures are not meaningful
#   --sem-tasks K     tasks for sem (default max(5, M/20))
#   --runners LIST    comma-separated subset of: floor,xargs,parallel,tsp,kugetsu-daemon,
#                     kugetsu-start,sem (default: all; floor always runs)
#   --workloads LIST  comma-separated subset of: true,sleep (default both)
#   --tmpfs           kugetsu's HOME and tsp's files under /dev/shm instead of /var/tmp
#   --home-parent DIR where HOME directories and work files go (default /var/tmp)
#   --build-dir DIR   the CMake build tree (default build/release; configured Release if it
#                     has no CMakeCache.txt; only kugetsu-cli and kugetsu-floor are built)
#   --no-install      do not apt-get install missing peers (runners without them are skipped)
#   --timeout S       per runner and round, seconds (default 900)
#   --out-dir DIR     results (default out/): compare.md (the tables), compare.json, compare.tsv
#                     (every timing of every round)
#   --doc             also rewrite the generated tables of docs/performance.md (bench/perfdoc.py)
#   --keep            keep the work directory (HOMEs, tsp output, per-call timings)
# Needs bash 5 ($EPOCHREALTIME), python3, cmake and a C++20 compiler; installs task-spooler and
# parallel from Debian when run as root and they are missing.
set -euo pipefail
export LC_ALL=C   # $EPOCHREALTIME with a '.' decimal point

M=1000
ROUNDS=3
SEM_TASKS=""
RUNNERS_ARG="floor,xargs,parallel,tsp,kugetsu-daemon,kugetsu-start,sem"
WORKLOADS_ARG="true,sleep"
PARENT=/var/tmp
BUILD=""
INSTALL=1
TIMEOUT=900
OUT_DIR=""
DOC=0
KEEP=0
QUICK=0
while [[ $# -gt 0 ]]; do
    case "$1" in
        -n) M="${2:?-n needs a number}"; shift 2 ;;
        -r) ROUNDS="${2:?-r needs a number}"; shift 2 ;;
        --quick) QUICK=1; M=50; ROUNDS=1; shift ;;
        --sem-tasks) SEM_TASKS="${2:?}"; shift 2 ;;
        --runners) RUNNERS_ARG="${2:?}"; shift 2 ;;
        --workloads) WORKLOADS_ARG="${2:?}"; shift 2 ;;
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
for v in M ROUNDS TIMEOUT; do
    [[ "${!v}" =~ ^[1-9][0-9]*$ ]] || { echo "compare.sh: $v must be a whole number >= 1" >&2; exit 64; }
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
    case "$r" in floor|xargs|parallel|tsp|kugetsu-daemon|kugetsu-start|sem) ;; *) die "unknown runner: $r" ;; esac
done
for w in "${WORKLOADS[@]}"; do
    case "$w" in true|sleep) ;; *) die "unknown workload: $w" ;; esac
done
[[ " ${RUNNERS[*]} " == *" floor "* ]] || RUNNERS=(floor "${RUNNERS[@]}")   # the ratios need it

# ---- peers -------------------------------------------------------------------------------
NOTES=()
have_gnu_parallel() { command -v parallel >/dev/null && parallel --version 2>/dev/null | grep -q '^GNU parallel'; }
missing=()
command -v tsp >/dev/null || missing+=(task-spooler)
have_gnu_parallel || missing+=(parallel)
command -v flock >/dev/null || missing+=(util-linux)
command -v timeout >/dev/null || missing+=(coreutils)
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
runnable() {   # runnable RUNNER: 0 if its tool is there
    case "$1" in
        tsp) command -v tsp >/dev/null ;;
        parallel|sem) have_gnu_parallel && command -v sem >/dev/null ;;
        *) return 0 ;;
    esac
}
kept=()
for r in "${RUNNERS[@]}"; do
    if runnable "$r"; then kept+=("$r"); else NOTES+=("$r: skipped, its tool is not installed"); fi
done
RUNNERS=("${kept[@]}")

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
# $EPOCHREALTIME (no process is forked to read the clock).
export K FLOOR WORK RESULTS PARENT M SEM_TASKS
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

check_completed() {   # check_completed HOME N
    KUGETSU_HOME="$1" "$K" status --json | python3 -c '
import json, sys
s = json.load(sys.stdin); n = int(sys.argv[1])
done = sum(t["state"] == "completed" for t in s["tasks"])
total, live = len(s["tasks"]), s["live"]
if done != n or total != n or live != 0:
    sys.exit(f"kugetsu: {done} of {total} tasks completed (expected {n}), {live} live")
' "$2"
}

run_kugetsu_daemon() {
    local home t0 t1 t2 t3 i dpid rc=0
    home="$(new_home)"
    export KUGETSU_HOME="$home" MAX_CONCURRENT_AGENTS=3
    t0=$EPOCHREALTIME
    for ((i = 1; i <= M; i++)); do "$K" enqueue --id "t$i" -- "${CMD[@]}" >/dev/null; done
    t1=$EPOCHREALTIME
    t2=$EPOCHREALTIME
    "$K" daemon 2>"$home.daemon.err" &
    dpid=$!
    echo "$dpid" >>"$WORK/daemons"
    "$K" wait >/dev/null || rc=$?
    t3=$EPOCHREALTIME
    kill -TERM "$dpid" 2>/dev/null || true
    wait "$dpid" || { echo "kugetsu daemon failed: $(cat "$home.daemon.err")" >&2; exit 1; }
    [[ $rc -eq 0 ]] || { echo "kugetsu wait exited $rc" >&2; exit 1; }
    check_completed "$home" "$M"
    record kugetsu-daemon submit "$M" "$(elapsed "$t0" "$t1")"
    record kugetsu-daemon drain "$M" "$(elapsed "$t2" "$t3")"
    [[ -n "${KEEP_HOMES:-}" ]] || rm -rf "$home" "$home.daemon.err"
}

# One lane: tasks LANE, LANE+3, ...: start, then wait for it. Appends "<seconds> <retries>"
# per start call to $1.
start_lane() {
    local calls="$1" lane="$2" i s e rc retries
    for ((i = lane; i <= M; i += 3)); do
        retries=0
        while :; do
            rc=0
            s=$EPOCHREALTIME
            "$K" start --id "s$i" -- "${CMD[@]}" >/dev/null 2>>"$calls.err" || rc=$?
            e=$EPOCHREALTIME
            [[ $rc -eq 0 ]] && break
            [[ $rc -eq 75 && $retries -lt 1000 ]] || { echo "kugetsu start s$i exited $rc: $(tail -n 1 "$calls.err")" >&2; return 1; }
            retries=$((retries + 1))
        done
        echo "${s/,/.} ${e/,/.} $retries" >>"$calls"
        "$K" wait "s$i" >/dev/null || { echo "kugetsu wait s$i failed" >&2; return 1; }
    done
}

run_kugetsu_start() {
    local home t0 t1 calls="$WORK/start-calls.$ROUND.$WL" p1 p2 p3 rc=0
    home="$(new_home)"
    export KUGETSU_HOME="$home" MAX_CONCURRENT_AGENTS=3
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
    check_completed "$home" "$M"
    record kugetsu-start wall "$M" "$(elapsed "$t0" "$t1")"
    # every start call: its own line, phase "call"
    awk -v r="$ROUND" -v w="$WL" '{ printf "%s\t%s\tkugetsu-start\tcall\t%d\t%.6f\n", r, w, $3, $2 - $1 }' "$calls" >>"$RESULTS"
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
    local runner="$1" fn
    case "$runner" in
        floor) fn=run_floor ;; xargs) fn=run_xargs ;; parallel) fn=run_parallel ;; tsp) fn=run_tsp ;;
        kugetsu-daemon) fn=run_kugetsu_daemon ;; kugetsu-start) fn=run_kugetsu_start ;; sem) fn=run_sem ;;
    esac
    local cmd
    case "$2" in true) cmd="/bin/true" ;; sleep) cmd="sleep 0.01" ;; esac
    log "round $3/$ROUNDS, $2: $runner"
    local rc=0
    # In the background, so that a signal to this script is handled at once (bash runs traps
    # only between foreground commands); the cleanup stops it. `timeout` passes the signal on
    # to the runner's whole process group.
    ROUND="$3" WL="$2" timeout --kill-after=10 "$TIMEOUT" \
        bash -c 'set -euo pipefail; read -r -a CMD <<<"$1"; shift; "$@"' _ "$cmd" "$fn" &
    RUNNER_PID=$!
    wait "$RUNNER_PID" || rc=$?
    RUNNER_PID=""
    [[ $rc -eq 0 ]] || die "$runner ($2, round $3) exited $rc$([[ $rc -eq 124 ]] && echo ": timed out after $TIMEOUT s")"
}

# ---- run ---------------------------------------------------------------------------------
T_START=$SECONDS
log "M=$M, rounds=$ROUNDS, sem tasks=$SEM_TASKS, HOME parent $PARENT, build $BUILD ($BUILD_TYPE)"
NR=${#RUNNERS[@]}
for ((round = 1; round <= ROUNDS; round++)); do
    for wl in "${WORKLOADS[@]}"; do
        for ((j = 0; j < NR; j++)); do
            run_one "${RUNNERS[$(((j + round - 1) % NR))]}" "$wl" "$round"
        done
    done
done
log "all runs in $((SECONDS - T_START)) s"

# ---- statistics --------------------------------------------------------------------------
cp "$RESULTS" "$OUT_DIR/compare.tsv"
case "$(stat -f -c %t "$PARENT" 2>/dev/null)" in   # stat's %T says "ext2/ext3" for ext4
    ef53) FS_TYPE=ext4 ;; 1021994) FS_TYPE=tmpfs ;; 58465342) FS_TYPE=xfs ;; 9123683e) FS_TYPE=btrfs ;;
    *) FS_TYPE="$(stat -f -c %T "$PARENT" 2>/dev/null || echo '?')" ;;
esac
python3 - "$OUT_DIR" "$M" "$ROUNDS" "$SEM_TASKS" "$PARENT ($FS_TYPE)" "$QUICK" "$BUILD_TYPE" "${NOTES[@]+"${NOTES[@]}"}" <<'PY'
import collections, json, math, os, statistics, sys

out_dir, M, rounds, sem_tasks, home_fs, quick, build_type = sys.argv[1:8]
M, rounds, sem_tasks, quick = int(M), int(rounds), int(sem_tasks), quick == "1"
notes = sys.argv[8:]
rows = collections.defaultdict(lambda: collections.defaultdict(list))   # (wl, runner) -> phase -> [s]
calls = collections.defaultdict(list)                                    # wl -> [(s, retries)]
calls_by_round = collections.defaultdict(list)                           # (wl, round) -> [s], in order
tasks_of = {}
with open(os.path.join(out_dir, "compare.tsv")) as f:
    for line in f:
        rnd, wl, runner, phase, n, s = line.rstrip("\n").split("\t")
        if phase == "call":
            calls[wl].append((float(s), int(n)))
            calls_by_round[(wl, rnd)].append(float(s))
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
    "kugetsu-start": "**one `kugetsu start` per task** (3 lanes of start + wait)",
    "sem": "GNU `sem -j3`, one call per task",
}
result = {"M": M, "rounds": rounds, "sem_tasks": sem_tasks, "home": home_fs, "build_type": build_type,
          "quick": quick, "workloads": {}, "goals": [], "notes": notes}
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
    if (wl, "kugetsu-daemon") in rows:
        ph = rows[(wl, "kugetsu-daemon")]
        add("kugetsu-daemon:drain", med(ph["drain"]), M)
        add("kugetsu-daemon:total", med([a + b for a, b in zip(ph["submit"], ph["drain"])]), M)
    if (wl, "tsp") in rows:
        add("tsp:total", med(rows[(wl, "tsp")]["total"]), M)
    for r in ("kugetsu-start", "sem"):
        if (wl, r) in rows: add(r, med(rows[(wl, r)]["wall"]), tasks_of[(wl, r)])
    submit = {r: med(rows[(wl, r)]["submit"]) / M * 1e3 for r in ("kugetsu-daemon",) if (wl, r) in rows}
    c = [s for s, _ in calls.get(wl, [])]
    start_calls = None
    if c:
        start_calls = {"calls": len(c), "median_ms": med(c) * 1e3, "p90_ms": q(c, 0.9) * 1e3, "p99_ms": q(c, 0.99) * 1e3,
                       "max_ms": max(c) * 1e3, "retries": sum(n for _, n in calls[wl])}
        # The first and the last tenth of each round's calls: does a start grow with the
        # records already in HOME (each `start` process parses every record)?
        firsts, lasts = [], []
        for (w, _), xs in calls_by_round.items():
            if w == wl and len(xs) >= 10:
                firsts.append(med(xs[:len(xs) // 10])); lasts.append(med(xs[-(len(xs) // 10):]))
        if firsts:
            start_calls["first_tenth_median_ms"] = med(firsts) * 1e3
            start_calls["last_tenth_median_ms"] = med(lasts) * 1e3
    result["workloads"][wl] = {"floor_s": floor, "rows": table, "submit_ms_per_task": submit, "start_calls": start_calls}

    md.append(f"#### {M} × {label[wl]}, cap 3 (median of {rounds} round{'s' if rounds > 1 else ''})\n")
    md.append("| runner | tasks | median wall | per-task overhead over the floor | ratio to the floor |")
    md.append("|---|---:|---:|---:|---:|")
    for t in table:
        wall = f"{t['wall_s']:.3f} s" + (f" (est. {t['wall_for_M_s']:.1f} s for {M})" if t["estimated"] else "")
        ov = "0" if t["runner"] == "floor" else f"{t['overhead_ms']:.2f} ms"
        md.append(f"| {t['name']} | {t['tasks']} | {wall} | {ov} | {t['ratio']:.2f} |")
    md.append("")
    extra = [f"floor: {floor_pt * 1e3:.3f} ms per task ({M / floor:.0f} tasks/s)"]
    if "kugetsu-daemon" in submit: extra.append(f"`kugetsu enqueue`: {submit['kugetsu-daemon']:.2f} ms per call (one process per task, before the daemon runs)")
    if start_calls:
        extra.append(f"one `kugetsu start` call ({start_calls['calls']} calls): median {start_calls['median_ms']:.2f} ms, "
                     f"p90 {start_calls['p90_ms']:.2f} ms, p99 {start_calls['p99_ms']:.2f} ms, max {start_calls['max_ms']:.2f} ms; "
                     f"{start_calls['retries']} retries after exit 75")
        if "first_tenth_median_ms" in start_calls:
            extra.append(f"`kugetsu start` as HOME fills: median {start_calls['first_tenth_median_ms']:.2f} ms over the first "
                         f"tenth of the calls, {start_calls['last_tenth_median_ms']:.2f} ms over the last tenth")
    md.extend(f"- {e}" for e in extra)
    md.append("")

    by = {t["runner"]: t for t in table}
    if "kugetsu-daemon:drain" in by and "xargs" in by:
        r = by["kugetsu-daemon:drain"]["wall_s"] / by["xargs"]["wall_s"]
        result["goals"].append({"goal": f"daemon drain ({label[wl]}, durable) no slower than `xargs -P3`",
                                "target": "≤ 1.0 × xargs", "measured": f"{r:.2f} × xargs "
                                f"({by['kugetsu-daemon:drain']['wall_s']:.2f} s vs {by['xargs']['wall_s']:.2f} s)",
                                "ratio": r, "met": r <= 1.0, "source": "compare"})
    if start_calls and wl == "true":
        r = start_calls["median_ms"] / 2.0
        result["goals"].append({"goal": "one `kugetsu start` call under 2 ms of overhead",
                                "target": "< 2 ms", "measured": f"median {start_calls['median_ms']:.2f} ms per call "
                                f"(p99 {start_calls['p99_ms']:.2f} ms); per task with its `wait`: "
                                f"{by['kugetsu-start']['overhead_ms']:.2f} ms over the floor",
                                "ratio": r, "met": start_calls["median_ms"] < 2.0, "source": "compare"})

head = [f"kugetsu HOME and tsp files: {home_fs}; kugetsu built {build_type}; {rounds} round(s), interleaved; "
        f"sem ran {sem_tasks} tasks (est. = scaled to {M})."]
if quick: head.append("**--quick run: a check that everything runs; the figures mean little.**")
goals_md = ["| goal | target | measured | ratio to target | met |", "|---|---|---|---:|---|"]
for g in result["goals"]:
    goals_md.append(f"| {g['goal']} | {g['target']} | {g['measured']} | {g['ratio']:.2f} | {'yes' if g['met'] else '**no**'} |")
text = "\n".join(head) + "\n\n" + "\n".join(md) + "\n" + "\n".join(goals_md) + "\n"
for n in notes: text += f"\nnote: {n}"
with open(os.path.join(out_dir, "compare.md"), "w") as f: f.write(text.rstrip("\n") + "\n")
with open(os.path.join(out_dir, "compare.json"), "w") as f: json.dump(result, f, indent=2)
print(text)
print(f"written: {out_dir}/compare.md, compare.json, compare.tsv")
PY

if [[ $DOC -eq 1 ]]; then
    python3 "$ROOT/bench/perfdoc.py" "$ROOT/docs/performance.md" "$OUT_DIR"
fi
