#!/usr/bin/env bash
# bench/scale.sh: kugetsu against queue size (issue 6, item 4; issue 12), beside kugetsu 0.1.
#
# 1. Enqueue: one `kugetsu enqueue` process per task, timed call by call on a sample (into an
#    empty HOME, and again into the HOME holding the largest queue); the library's enqueue()
#    (bench/fill.cpp): one unit of work per task (what `kugetsu enqueue` does), and 1,000 tasks
#    per unit. 100,000 CLI calls would take minutes, so the 100,000 figure for the CLI is the
#    sample's per-call median × 100,000 (marked "est.").
# 2. Pass cost against queue size: one HOME, 3 agents (`sleep`) holding every slot of cap 3,
#    then filled with pending tasks up to each size (default 10, 1,000, 10,000, 100,000;
#    through the library, kugetsu-bench-fill, 1,000 tasks per unit of work). At each size:
#      - `kugetsu daemon --once`: a new process and one pass that starts nothing (the cap is
#        full): opens HOME/state.db, reaps (the 3 sessions and their tasks)
#      - `kugetsu start` of one more task: exits 75 (no slot), after the same reap; this is
#        what every `start` pays
#      - `kugetsu enqueue` (a few calls): takes no lock
#      - a long-running `kugetsu daemon`: its RSS (VmHWM, VmRSS from /proc) once it is idle
#        after its first pass, and the CPU time (utime + stime, clock ticks) of the passes
#        that W `kugetsu enqueue` calls wake it for, one at a time
#    and, from kugetsu-micro-bench (same sizes, a warm dispatcher, no process cost), a
#    process_queue() pass that finds no slot, a whole daemon wake-up (process_queue() +
#    next_wake()), and a pass that starts one task (durable).
# 3. The daemon's memory at the largest size: VmHWM above, and `/usr/bin/time -v kugetsu daemon
#    --once` (maximum resident set size).
# 4. The same 1 and 2 with kugetsu 0.1 (the "before" of issue 12), when --baseline-cli names
#    its binary (default /work/base/build/release/cli/kugetsu if it exists): its `enqueue`
#    calls, and, if its build tree (--baseline-build, default the tree of that binary) has
#    kugetsu-bench-fill and kugetsu-micro-bench, its passes and daemon against queue size.
# Every HOME is new; its first command runs with MAX_CONCURRENT_AGENTS=3 (cap 3, kept by HOME).
# Goals (issue 12; reported, never asserted): a daemon pass at 100,000 pending costs at most 2
# times a pass at 10 (warm wake: process_queue() + next_wake()); the daemon's RSS at 100,000
# pending under 16 MiB; `kugetsu enqueue` under 2 ms per call.
#
# Run:   bash bench/scale.sh [options]
#   --sizes LIST      ascending pending-queue sizes (default 10,1000,10000,100000)
#   --sample S        CLI enqueue calls timed into an empty HOME (default 1000)
#   -r R              timed repetitions of each command per size (default 3)
#   -w W              daemon wake-ups per size (default 5)
#   --quick           --sizes 10,1000 --sample 50 -r 1 -w 2: a check that it runs
#   --fill-batch K    tasks per unit of work when filling (default 1000; 1 = as `kugetsu
#                     enqueue`, one durable commit each: ~1 ms per task on ext4)
#   --home-parent DIR where HOME goes (default /var/tmp, the normal disk)
#   --build-dir DIR   the CMake build tree (default build/release; configured Release if it
#                     has no CMakeCache.txt)
#   --baseline-cli P  the kugetsu 0.1 binary ("none": no baseline)
#   --baseline-build DIR  the 0.1 build tree with bench/kugetsu-bench-fill and
#                     bench/kugetsu-micro-bench (default: two levels above --baseline-cli)
#   --no-micro        skip kugetsu-micro-bench
#   --out-dir DIR     results (default out/): scale.md, scale.json, scale.tsv, scale-micro.json
#                     (kugetsu-micro-bench's report), scale-micro-0.1.json
#   --doc             also rewrite the generated tables of docs/performance.md
#   --keep            keep the HOMEs
# Needs bash 5, python3, cmake, a C++20 compiler, CLI11, Google Benchmark, GNU time (optional).
set -euo pipefail
export LC_ALL=C

SIZES_ARG="10,1000,10000,100000"
SAMPLE=1000
REPS=3
WAKES=5
FILL_BATCH=1000
PARENT=/var/tmp
BUILD=""
MICRO=1
MIN_TIME=0.3
OUT_DIR=""
DOC=0
KEEP=0
QUICK=0
BASELINE_DEFAULT=/work/base/build/release/cli/kugetsu
BASELINE=default
BASE_BUILD=""
while [[ $# -gt 0 ]]; do
    case "$1" in
        --sizes) SIZES_ARG="${2:?}"; shift 2 ;;
        --sample) SAMPLE="${2:?}"; shift 2 ;;
        -r) REPS="${2:?}"; shift 2 ;;
        -w) WAKES="${2:?}"; shift 2 ;;
        --quick) QUICK=1; SIZES_ARG="10,1000"; SAMPLE=50; REPS=1; WAKES=2; MIN_TIME=0.01; shift ;;
        --fill-batch) FILL_BATCH="${2:?}"; shift 2 ;;
        --fill-durable) FILL_BATCH=1; shift ;;   # the option of issue 6's version
        --home-parent) PARENT="${2:?}"; shift 2 ;;
        --build-dir) BUILD="${2:?}"; shift 2 ;;
        --baseline-cli) BASELINE="${2:?}"; shift 2 ;;
        --baseline-build) BASE_BUILD="${2:?}"; shift 2 ;;
        --no-micro) MICRO=0; shift ;;
        --out-dir) OUT_DIR="${2:?}"; shift 2 ;;
        --doc) DOC=1; shift ;;
        --keep) KEEP=1; shift ;;
        -h|--help) sed -n '2,/^set -euo/p' "$0" | sed 's/^# \{0,1\}//;$d'; exit 0 ;;
        *) echo "scale.sh: unknown argument: $1 (try --help)" >&2; exit 64 ;;
    esac
done
IFS=, read -r -a SIZES <<<"$SIZES_ARG"
prev=0
for n in "${SIZES[@]}"; do
    [[ "$n" =~ ^[1-9][0-9]*$ && "$n" -gt "$prev" ]] || { echo "scale.sh: --sizes must be ascending whole numbers" >&2; exit 64; }
    prev=$n
done
for v in SAMPLE REPS WAKES FILL_BATCH; do
    [[ "${!v}" =~ ^[1-9][0-9]*$ ]] || { echo "scale.sh: $v must be a whole number >= 1" >&2; exit 64; }
done
(( BASH_VERSINFO[0] >= 5 )) || { echo "scale.sh: needs bash 5 (EPOCHREALTIME)" >&2; exit 64; }

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
BUILD_ARG="$BUILD"
BUILD="${BUILD:-build/release}"
[[ "$BUILD" = /* ]] || BUILD="$ROOT/$BUILD"
OUT_DIR="${OUT_DIR:-$ROOT/out}"
[[ "$OUT_DIR" = /* ]] || OUT_DIR="$ROOT/$OUT_DIR"
log() { echo "scale.sh: $*" >&2; }
die() { echo "scale.sh: FAILED: $*" >&2; exit 1; }

# ---- the baseline: kugetsu 0.1 -------------------------------------------------------------
NOTES=()
case "$BASELINE" in
    none) BASE="" ;;
    default)
        if [[ -x "$BASELINE_DEFAULT" ]]; then BASE="$BASELINE_DEFAULT"; else
            BASE=""
            NOTES+=("kugetsu 0.1: skipped, no baseline binary at $BASELINE_DEFAULT (--baseline-cli PATH)")
        fi ;;
    *) [[ -x "$BASELINE" ]] || die "--baseline-cli $BASELINE: not an executable"; BASE="$BASELINE" ;;
esac
BASE_FILL=""
BASE_MICRO=""
if [[ -n "$BASE" ]]; then
    BASE_BUILD="${BASE_BUILD:-$(cd "$(dirname "$BASE")/.." && pwd)}"
    [[ -x "$BASE_BUILD/bench/kugetsu-bench-fill" ]] && BASE_FILL="$BASE_BUILD/bench/kugetsu-bench-fill"
    [[ -x "$BASE_BUILD/bench/kugetsu-micro-bench" ]] && BASE_MICRO="$BASE_BUILD/bench/kugetsu-micro-bench"
    [[ -n "$BASE_FILL" ]] || NOTES+=("kugetsu 0.1 against queue size: skipped, no kugetsu-bench-fill in $BASE_BUILD/bench (--baseline-build DIR)")
    [[ -n "$BASE_MICRO" || $MICRO -eq 0 ]] || NOTES+=("kugetsu 0.1 warm passes: skipped, no kugetsu-micro-bench in $BASE_BUILD/bench")
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
targets=(kugetsu-cli kugetsu-bench-fill)
[[ $MICRO -eq 1 ]] && targets+=(kugetsu-micro-bench)
log "building ${targets[*]} in $BUILD"
cmake --build "$BUILD" -j2 --target "${targets[@]}" >/dev/null
K="$BUILD/cli/kugetsu"
FILL="$BUILD/bench/kugetsu-bench-fill"
MICRO_BIN="$BUILD/bench/kugetsu-micro-bench"
BUILD_TYPE="$(sed -n 's/^CMAKE_BUILD_TYPE:[A-Z]*=//p' "$BUILD/CMakeCache.txt")"

# ---- work directory and cleanup ----------------------------------------------------------
mkdir -p "$OUT_DIR" "$PARENT"
WORK="$(mktemp -d "$PARENT/kugetsu-scale.XXXXXX")"
TSV="$WORK/scale.tsv"   # size  what  value  unit   (what: "b:..." for kugetsu 0.1)
: >"$TSV"
AGENT_PIDS=()
SUPERVISOR_PIDS=()
DAEMON_PID=""
HOME_DIR=""
# Stops the blocker agents. Their supervisors then record the ends (an on-exit `kugetsu reap`):
# HOME goes first, so that those reaps find nothing to read, and the supervisors are waited
# for, so that none writes into HOME after WORK is removed.
stop_blockers() {
    local p i
    [[ $KEEP -eq 1 || -z "$HOME_DIR" ]] || rm -rf "$HOME_DIR"
    for p in "${AGENT_PIDS[@]+"${AGENT_PIDS[@]}"}"; do kill -TERM "$p" 2>/dev/null || true; done
    for ((i = 0; i < 100; i++)); do
        local alive=0
        for p in "${SUPERVISOR_PIDS[@]+"${SUPERVISOR_PIDS[@]}"}"; do kill -0 "$p" 2>/dev/null && alive=1; done
        [[ $alive -eq 0 ]] && break
        sleep 0.1
    done
    AGENT_PIDS=()
    SUPERVISOR_PIDS=()
}
cleanup() {
    [[ -n "$DAEMON_PID" ]] && kill -TERM "$DAEMON_PID" 2>/dev/null || true
    stop_blockers
    if [[ $KEEP -eq 1 ]]; then log "kept $WORK"; else rm -rf "$WORK"; fi
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

PFX=""   # "b:" while measuring kugetsu 0.1
put() { printf '%s\t%s%s\t%s\t%s\n' "$1" "$PFX" "$2" "$3" "$4" >>"$TSV"; }
# timed SIZE WHAT EXPECTED_STATUS CMD...: runs CMD once, records its wall time (s). No
# `timeout` around it: that would add a process to what is measured.
timed() {
    local size="$1" what="$2" want="$3" s e rc=0
    shift 3
    s=$EPOCHREALTIME
    "$@" >/dev/null 2>"$WORK/last.err" || rc=$?
    e=$EPOCHREALTIME
    [[ $rc -eq $want ]] || die "$PFX$what at $size: '$*' exited $rc (expected $want): $(tail -n 2 "$WORK/last.err")"
    put "$size" "$what" "$(python3 -c 'import sys; print(float(sys.argv[2]) - float(sys.argv[1]))' "$s" "$e")" s
}
# fill KUGETSU_FILL HOME COUNT FROM: COUNT pending /bin/true tasks q<FROM>...; prints us per task.
fill() {
    local bin="$1" home="$2" count="$3" from="$4" line
    if [[ -z "$PFX" ]]; then
        line="$("$bin" "$home" "$count" --from "$from" --batch "$FILL_BATCH" -- /bin/true)"
    else   # kugetsu 0.1's fill: not fsynced (its records are written one file each)
        line="$("$bin" "$home" "$count" --from "$from" -- /bin/true)"
    fi
    sed 's/.*us_per_task=\([0-9.]*\).*/\1/' <<<"$line"
}

export MAX_CONCURRENT_AGENTS=3

# ---- 1. enqueue into an empty HOME -------------------------------------------------------
cli_enqueue_sample() {   # cli_enqueue_sample KUGETSU
    local kb="$1" h="$WORK/enqueue-home" calls="$WORK/enqueue-calls" i s e
    log "${PFX:+kugetsu 0.1: }enqueue: $SAMPLE CLI calls into an empty HOME"
    : >"$calls"
    for ((i = 1; i <= SAMPLE; i++)); do
        s=$EPOCHREALTIME
        "$kb" --home "$h" enqueue --id "c$i" -- /bin/true >/dev/null
        e=$EPOCHREALTIME
        echo "$s $e" >>"$calls"
    done
    awk -v p="$PFX" '{ printf "0\t%scli_enqueue_call\t%.6f\ts\n", p, $2 - $1 }' "$calls" >>"$TSV"
    rm -rf "$h"
}
cli_enqueue_sample "$K"
for b in 1 1000; do
    h="$WORK/fill-home-$b"
    us="$("$FILL" "$h" "$SAMPLE" --batch "$b" -- /bin/true | sed 's/.*us_per_task=\([0-9.]*\).*/\1/')"
    put 0 "lib_enqueue_batch_$b" "$us" us
    rm -rf "$h"
done

# ---- 2. one HOME, cap full, growing queue ------------------------------------------------
proc_field() { awk -v k="$2:" '$1 == k { print $2 }' "/proc/$1/status" 2>/dev/null; }
cpu_ticks() { awk '{ print $14 + $15 }' "/proc/$1/stat" 2>/dev/null; }
# Waits until the process's CPU time has not moved for 0.5 s (it sleeps in poll()).
settle() {
    local pid="$1" last=-1 now same=0 tries=0
    while (( same < 5 )); do
        sleep 0.1
        now="$(cpu_ticks "$pid")" || die "the daemon died: $(cat "$WORK/daemon.err")"
        [[ -n "$now" ]] || die "the daemon died: $(cat "$WORK/daemon.err")"
        if [[ "$now" == "$last" ]]; then same=$((same + 1)); else same=0; fi
        last="$now"
        tries=$((tries + 1))
        (( tries < 6000 )) || die "the daemon never went idle"
    done
}
TICK="$(getconf CLK_TCK)"

# sizes KUGETSU FILL: the measurements of section 2 (and 3) in a new HOME.
sizes() {
    local kb="$1" fb="$2" have=0 wake_id=0 n r w s e c0 c1 out b i calls
    HOME_DIR="$WORK/home${PFX:+-0.1}"
    export KUGETSU_HOME="$HOME_DIR"
    log "${PFX:+kugetsu 0.1: }HOME $HOME_DIR: 3 agents hold the 3 slots"
    for b in 1 2 3; do
        out="$("$kb" start --id "blocker$b" -- sleep 3600)"
        AGENT_PIDS+=("${out##* }")
        SUPERVISOR_PIDS+=("$(awk '{ print $4 }' "/proc/${out##* }/stat")")
    done
    for n in "${SIZES[@]}"; do
        log "${PFX:+kugetsu 0.1: }filling to $n pending"
        put "$n" fill_us_per_task "$(fill "$fb" "$HOME_DIR" $((n - have)) $((have + 1)))" us
        have=$n
        # Pending tasks the CLI adds below (enqueue samples, wake-ups) are not counted: a few dozen.
        log "$n pending: kugetsu daemon --once, start (75), enqueue ×$REPS"
        for ((r = 1; r <= REPS; r++)); do
            timed "$n" cli_daemon_once 0 "$kb" daemon --once
            timed "$n" cli_start_no_slot 75 "$kb" start --id "x$n-$r" -- /bin/true
            timed "$n" cli_enqueue 0 "$kb" enqueue --id "y$n-$r" -- /bin/true
        done
        log "$n pending: a running daemon, $WAKES wake-ups"
        s=$EPOCHREALTIME
        "$kb" daemon 2>"$WORK/daemon.err" &
        DAEMON_PID=$!
        settle "$DAEMON_PID"
        e=$EPOCHREALTIME
        put "$n" daemon_first_pass_and_settle "$(python3 -c 'import sys; print(float(sys.argv[2]) - float(sys.argv[1]) - 0.5)' "$s" "$e")" s
        put "$n" daemon_first_pass_cpu "$(python3 -c "print($(cpu_ticks "$DAEMON_PID") / $TICK)")" s
        put "$n" daemon_vmhwm_kib "$(proc_field "$DAEMON_PID" VmHWM | tr -dc 0-9)" KiB
        c0="$(cpu_ticks "$DAEMON_PID")"
        for ((w = 1; w <= WAKES; w++)); do
            wake_id=$((wake_id + 1))
            "$kb" enqueue --id "w$wake_id" -- /bin/true >/dev/null
            settle "$DAEMON_PID"
        done
        c1="$(cpu_ticks "$DAEMON_PID")"
        put "$n" daemon_cpu_per_wake "$(python3 -c "print(($c1 - $c0) / $TICK / $WAKES)")" s
        put "$n" daemon_vmrss_kib "$(proc_field "$DAEMON_PID" VmRSS | tr -dc 0-9)" KiB
        put "$n" daemon_vmhwm_after_kib "$(proc_field "$DAEMON_PID" VmHWM | tr -dc 0-9)" KiB
        kill -TERM "$DAEMON_PID"
        wait "$DAEMON_PID" || die "the daemon exited badly: $(cat "$WORK/daemon.err")"
        DAEMON_PID=""
    done
    # 3. memory of a one-pass process, and the CLI enqueue at the largest size
    if [[ -x /usr/bin/time ]]; then
        /usr/bin/time -v "$kb" daemon --once 2>"$WORK/time.txt" >/dev/null || die "daemon --once under time: $(tail -n 3 "$WORK/time.txt")"
        put "$have" once_maxrss_kib "$(sed -n 's/.*Maximum resident set size (kbytes): //p' "$WORK/time.txt")" KiB
    fi
    local n_big=$(( SAMPLE < 200 ? SAMPLE : 200 ))
    log "$n_big CLI enqueue calls into the HOME of $have pending"
    calls="$WORK/enqueue-calls"
    : >"$calls"
    for ((i = 1; i <= n_big; i++)); do
        s=$EPOCHREALTIME
        "$kb" enqueue --id "z$i" -- /bin/true >/dev/null
        e=$EPOCHREALTIME
        echo "$s $e" >>"$calls"
    done
    awk -v n="$have" -v p="$PFX" '{ printf "%s\t%scli_enqueue_call_big\t%.6f\ts\n", n, p, $2 - $1 }' "$calls" >>"$TSV"
    stop_blockers
    unset KUGETSU_HOME
}
sizes "$K" "$FILL"

# ---- 4. the warm pass: kugetsu-micro-bench -------------------------------------------------
MICRO_JSON="$WORK/micro.json"
MICRO_JSON_BASE="$WORK/micro-0.1.json"
echo '{"benchmarks": []}' >"$MICRO_JSON_BASE"
if [[ $MICRO -eq 1 ]]; then
    log "kugetsu-micro-bench: passes at $SIZES_ARG pending"
    "$MICRO_BIN" --sizes="$SIZES_ARG" --dir="$WORK" --tmpfs_dir= --benchmark_min_time="$MIN_TIME" \
        --benchmark_filter='BM_process_queue_pass_no_slot/|BM_daemon_wake_no_slot|BM_process_queue_pass_start_one/pending:[0-9]+/relay:0|BM_process_queue_pass_memory' \
        --benchmark_format=console --benchmark_out="$MICRO_JSON" --benchmark_out_format=json >&2
else
    echo '{"benchmarks": []}' >"$MICRO_JSON"
fi

# ---- 5. the same with kugetsu 0.1 ------------------------------------------------------------
if [[ -n "$BASE" ]]; then
    PFX="b:"
    cli_enqueue_sample "$BASE"
    [[ -n "$BASE_FILL" ]] && sizes "$BASE" "$BASE_FILL"
    if [[ $MICRO -eq 1 && -n "$BASE_MICRO" ]]; then
        log "kugetsu 0.1 micro-bench: passes at $SIZES_ARG pending"
        "$BASE_MICRO" --sizes="$SIZES_ARG" --dir="$WORK" --tmpfs_dir= --benchmark_min_time="$MIN_TIME" \
            --benchmark_filter='BM_process_queue_pass_no_slot/|BM_daemon_wake_no_slot' \
            --benchmark_format=console --benchmark_out="$MICRO_JSON_BASE" --benchmark_out_format=json >&2
    fi
    PFX=""
fi

# ---- report ------------------------------------------------------------------------------
cp "$TSV" "$OUT_DIR/scale.tsv"
cp "$MICRO_JSON" "$OUT_DIR/scale-micro.json"
cp "$MICRO_JSON_BASE" "$OUT_DIR/scale-micro-0.1.json"
case "$(stat -f -c %t "$PARENT" 2>/dev/null)" in   # stat's %T says "ext2/ext3" for ext4
    ef53) FS_TYPE=ext4 ;; 1021994) FS_TYPE=tmpfs ;; 58465342) FS_TYPE=xfs ;; 9123683e) FS_TYPE=btrfs ;;
    *) FS_TYPE="$(stat -f -c %T "$PARENT" 2>/dev/null || echo '?')" ;;
esac
python3 - "$OUT_DIR" "$MICRO_JSON" "$MICRO_JSON_BASE" "$SIZES_ARG" "$SAMPLE" "$PARENT ($FS_TYPE)" "$QUICK" "$BUILD_TYPE" \
    "$FILL_BATCH" "${BASE:-none}" "${NOTES[@]+"${NOTES[@]}"}" <<'PY'
import collections, json, math, os, statistics, sys

out_dir, micro_json, micro_base_json, sizes, sample, home_fs, quick, build_type, fill_batch, baseline = sys.argv[1:11]
notes_in = sys.argv[11:]
sizes = [int(x) for x in sizes.split(",")]
quick, sample = quick == "1", int(sample)
v = collections.defaultdict(list)
with open(os.path.join(out_dir, "scale.tsv")) as f:
    for line in f:
        size, what, value, unit = line.rstrip("\n").split("\t")
        v[(int(size), what)].append(float(value))
def med(key): return statistics.median(v[key]) if v.get(key) else None
def q(xs, p): xs = sorted(xs); return xs[max(0, math.ceil(p * len(xs)) - 1)]

def load_micro(path):
    out = {}
    with open(path) as f:
        for b in json.load(f).get("benchmarks", []):
            if b.get("run_type", "iteration") != "iteration" or b.get("error_occurred"):
                continue
            mult = {"ns": 1e-6, "us": 1e-3, "ms": 1.0, "s": 1e3}[b.get("time_unit", "ns")]
            out[b["name"].replace("/real_time", "")] = b["real_time"] * mult   # ms
    return out
micro, micro_b = load_micro(micro_json), load_micro(micro_base_json)

def m(name, n, extra="", src=None):
    return (src if src is not None else micro).get(f"{name}/pending:{n}{extra}")

def ms(x): return "-" if x is None else (f"{x:.3f} ms" if x < 10 else f"{x:.0f} ms" if x < 10000 else f"{x / 1e3:.1f} s")
def mib(kib): return "-" if kib is None else f"{kib / 1024:.1f} MiB"

res = {"sizes": sizes, "home": home_fs, "build_type": build_type, "quick": quick, "baseline": baseline, "goals": [],
       "per_size": {}, "per_size_0.1": {}}
big = sizes[-1]
def enqueue_figures(p):
    cli = v.get((0, p + "cli_enqueue_call"), [])
    cli_big = v.get((big, p + "cli_enqueue_call_big"), [])
    if not cli: return None
    return {"cli_call_median_ms": statistics.median(cli) * 1e3, "cli_call_p99_ms": q(cli, 0.99) * 1e3, "calls": len(cli),
            "cli_call_median_ms_at_largest": statistics.median(cli_big) * 1e3 if cli_big else None, "calls_at_largest": len(cli_big)}
enq, enq_b = enqueue_figures(""), enqueue_figures("b:")
enq["lib_us_batch_1"], enq["lib_us_batch_1000"] = med((0, "lib_enqueue_batch_1")), med((0, "lib_enqueue_batch_1000"))
res["enqueue"], res["enqueue_0.1"] = enq, enq_b
md = [f"HOME on {home_fs}; kugetsu built {build_type}; filled through the library, {fill_batch} tasks per unit of work; "
      f"kugetsu 0.1 (before): {baseline}.",
      ("**--quick run: a check that it runs; the figures mean little.**\n" if quick else ""),
      "#### Enqueue", "",
      "| how | per task | 100,000 tasks |", "|---|---:|---:|"]
for e, who in ((enq, "`kugetsu enqueue`"), (enq_b, "kugetsu 0.1 `enqueue` (before)")):
    if not e: continue
    md.append(f"| {who}, one process per task, empty HOME ({e['calls']} calls) | median {e['cli_call_median_ms']:.2f} ms, "
              f"p99 {e['cli_call_p99_ms']:.2f} ms | est. {e['cli_call_median_ms'] * 100:.0f} s |")
    if e["cli_call_median_ms_at_largest"] is not None:
        md.append(f"| {who} into the HOME of {big:,} pending ({e['calls_at_largest']} calls) | median "
                  f"{e['cli_call_median_ms_at_largest']:.2f} ms | est. {e['cli_call_median_ms_at_largest'] * 100:.0f} s |")
for b, name in ((1, "one unit of work (one durable commit) per task, as `kugetsu enqueue`"), (1000, "1,000 tasks per unit of work")):
    us = enq[f"lib_us_batch_{b}"]
    if us is not None:
        md.append(f"| library `enqueue()`, {name} (`kugetsu-bench-fill`) | {us:.1f} µs | {us * 0.1:.1f} s |")
md.append("")

def size_rows(p, src):
    out = {}
    for n in sizes:
        if not v.get((n, p + "cli_daemon_once")) and not m("BM_daemon_wake_no_slot", n, src=src):
            continue
        out[n] = {"pass_ms": m("BM_process_queue_pass_no_slot", n, src=src), "wake_ms": m("BM_daemon_wake_no_slot", n, src=src),
                  "start_one_ms": m("BM_process_queue_pass_start_one", n, "/relay:0", src=src) if not p else None,
                  "memory_pass_ms": m("BM_process_queue_pass_memory", n, "/start_one:0", src=src) if not p else None,
                  "memory_start_one_ms": m("BM_process_queue_pass_memory", n, "/start_one:1", src=src) if not p else None,
                  "cli_daemon_once_ms": (med((n, p + "cli_daemon_once")) or 0) * 1e3 or None,
                  "cli_start_no_slot_ms": (med((n, p + "cli_start_no_slot")) or 0) * 1e3 or None,
                  "cli_enqueue_ms": (med((n, p + "cli_enqueue")) or 0) * 1e3 or None,
                  "daemon_cpu_per_wake_ms": (med((n, p + "daemon_cpu_per_wake")) or 0) * 1e3,
                  "wakes_measured": len(v.get((n, p + "daemon_cpu_per_wake"), [])),
                  "daemon_first_pass_cpu_s": med((n, p + "daemon_first_pass_cpu")),
                  "daemon_vmhwm_kib": med((n, p + "daemon_vmhwm_after_kib")), "daemon_vmrss_kib": med((n, p + "daemon_vmrss_kib")),
                  "fill_us_per_task": med((n, p + "fill_us_per_task"))}
    return out
res["per_size"], res["per_size_0.1"] = size_rows("", micro), size_rows("b:", micro_b)
md += ["#### A pass against queue size (cap 3 full: 3 agents live, N pending; nothing starts)", "",
       "| kugetsu | pending | warm pass: `process_queue()` | warm daemon wake: + `next_wake()` | warm pass that starts one (durable) | "
       "`kugetsu daemon --once` (process) | `kugetsu start` → 75 (process) | `kugetsu enqueue` (process) | "
       "running daemon: CPU per wake | daemon RSS (VmHWM) |",
       "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
for who, rows in (("this build", res["per_size"]), ("0.1 (before)", res["per_size_0.1"])):
    for n, row in rows.items():
        cpu = row["daemon_cpu_per_wake_ms"]
        cpu_s = "-" if not row["wakes_measured"] else (f"< {1000 / 100:.0f} ms (tick)" if cpu == 0 else ms(cpu))
        md.append(f"| {who} | {n:,} | {ms(row['pass_ms'])} | {ms(row['wake_ms'])} | {ms(row['start_one_ms'])} | "
                  f"{ms(row['cli_daemon_once_ms'])} | {ms(row['cli_start_no_slot_ms'])} | {ms(row['cli_enqueue_ms'])} | "
                  f"{cpu_s} | {mib(row['daemon_vmhwm_kib'])} |")
md.append("")
notes = ["warm = one dispatcher across passes, one connection, statements prepared (kugetsu-micro-bench, no process cost); "
         "the `kugetsu` columns are whole processes (median of the repetitions)"]
for p, who in (("", "`kugetsu daemon --once`"), ("b:", "kugetsu 0.1 `daemon --once`")):
    if v.get((big, p + "once_maxrss_kib")):
        notes.append(f"{who} at {big:,} pending: maximum RSS {mib(v[(big, p + 'once_maxrss_kib')][0])} (GNU time)")
mem = [(n, r["memory_pass_ms"]) for n, r in res["per_size"].items() if r["memory_pass_ms"] is not None]
if mem:
    notes.append("the same passes over memory_store (no SQLite): " +
                 ", ".join(f"{n:,}: {ms(x)} / {ms(res['per_size'][n]['memory_start_one_ms'])}" for n, x in mem) +
                 " (no slot / starts one)")
# growth: the ratio from the smallest to the largest size, and the exponent k of cost ~ N^k
# over the last step (between the two largest sizes), where a constant part no longer hides it
lo, hi = sizes[0], sizes[-1]
for who, rows in (("", res["per_size"]), ("kugetsu 0.1: ", res["per_size_0.1"])):
    if lo not in rows or hi not in rows: continue
    for key, name in (("wake_ms", "warm daemon wake"), ("pass_ms", "warm pass"), ("start_one_ms", "warm pass that starts one"),
                      ("cli_daemon_once_ms", "`kugetsu daemon --once`"), ("cli_start_no_slot_ms", "`kugetsu start` → 75")):
        a, b = rows[lo][key], rows[hi][key]
        if not (a and b and hi > lo):
            continue
        text = f"{who}{name}: × {b / a:.1f} from {lo:,} to {hi:,} pending"
        if len(sizes) > 2 and sizes[-2] in rows and rows[sizes[-2]][key]:
            n1 = sizes[-2]; c = rows[n1][key]
            k = math.log(b / c) / math.log(hi / n1)
            text += f"; from {n1:,} to {hi:,}: × {b / c:.1f}, i.e. N^{k:.2f} (1 = linear, 0 = flat)"
        notes.append(text)
fills = [(n, r["fill_us_per_task"]) for n, r in res["per_size"].items()]
if fills:
    notes.append("filling through the library: " + ", ".join(f"{us:.0f} µs" for _, us in fills if us) + " per task")
notes += notes_in
md += [f"- {n}" for n in notes]

# goals
rows, rows_b = res["per_size"], res["per_size_0.1"]
if lo in rows and hi in rows and rows[lo]["wake_ms"] and rows[hi]["wake_ms"]:
    a, b = rows[lo]["wake_ms"], rows[hi]["wake_ms"]
    r = b / a
    before = None
    if lo in rows_b and hi in rows_b and rows_b[lo]["wake_ms"] and rows_b[hi]["wake_ms"]:
        before = f"× {rows_b[hi]['wake_ms'] / rows_b[lo]['wake_ms']:.2f} ({ms(rows_b[hi]['wake_ms'])} vs {ms(rows_b[lo]['wake_ms'])})"
    res["goals"].append({"goal": f"a daemon pass at {hi:,} pending vs a pass at {lo:,} (warm wake: process_queue() + next_wake())",
                         "target": "≤ 2 ×", "measured": f"× {r:.2f} ({ms(b)} vs {ms(a)})", "before": before,
                         "ratio": r / 2.0, "met": r <= 2.0, "source": "scale"})
if hi in rows and rows[hi]["daemon_vmhwm_kib"]:
    x = rows[hi]["daemon_vmhwm_kib"]
    xb = rows_b.get(hi, {}).get("daemon_vmhwm_kib")
    res["goals"].append({"goal": f"daemon RSS (VmHWM) with {hi:,} pending", "target": "< 16 MiB", "measured": mib(x),
                         "before": mib(xb) if xb else None, "ratio": x / 1024 / 16, "met": x < 16 * 1024, "source": "scale"})
if enq:
    x = enq["cli_call_median_ms"]
    extra = f", {enq['cli_call_median_ms_at_largest']:.2f} ms into {big:,} pending" if enq["cli_call_median_ms_at_largest"] else ""
    before = None
    if enq_b:
        before = f"{enq_b['cli_call_median_ms']:.2f} ms" + (f", {enq_b['cli_call_median_ms_at_largest']:.2f} ms into {big:,}"
                                                              if enq_b["cli_call_median_ms_at_largest"] else "")
    res["goals"].append({"goal": "`kugetsu enqueue`, one process per call (median, empty HOME, no daemon running)", "target": "< 2 ms",
                         "measured": f"{x:.2f} ms{extra}", "before": before, "ratio": x / 2.0, "met": x < 2.0, "source": "scale"})
res["notes"] = notes
md.append("")
md += ["| goal | target | before (0.1) | measured | ratio to target | met |", "|---|---|---|---|---:|---|"]
for g in res["goals"]:
    md.append(f"| {g['goal']} | {g['target']} | {g.get('before') or '-'} | {g['measured']} | {g['ratio']:.2f} | "
              f"{'yes' if g['met'] else '**no**'} |")
text = "\n".join(l for l in md) + "\n"
with open(os.path.join(out_dir, "scale.md"), "w") as f: f.write(text)
with open(os.path.join(out_dir, "scale.json"), "w") as f: json.dump(res, f, indent=2)
print(text)
print(f"written: {out_dir}/scale.md, scale.json, scale.tsv")
PY

if [[ $DOC -eq 1 ]]; then
    python3 "$ROOT/bench/perfdoc.py" "$ROOT/docs/performance.md" "$OUT_DIR"
fi
