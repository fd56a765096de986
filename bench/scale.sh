#!/usr/bin/env bash
# bench/scale.sh: kugetsu against queue size (issue 6, item 4).
#
# 1. Enqueue: one `kugetsu enqueue` process per task, timed call by call on a sample (into an
#    empty HOME, and again into the HOME holding the largest queue); the library's enqueue()
#    (bench/fill.cpp), durable and not. 100,000 CLI calls would take minutes, so the 100,000
#    figure for the CLI is the sample's per-call median × 100,000 (marked "est.").
# 2. Pass cost against queue size: one HOME, 3 agents (`sleep`) holding every slot of cap 3,
#    then filled with pending tasks up to each size (default 10, 1,000, 10,000, 100,000;
#    through the library, not fsynced, to save time). At each size:
#      - `kugetsu daemon --once`: a new process and one pass that starts nothing (the cap is
#        full): opens HOME, parses every record (a fresh process has no parse cache), reaps
#      - `kugetsu start` of one more task: exits 75 (no slot), after the same reap; this is
#        what every `start`, `status` and `wait` pays
#      - `kugetsu enqueue` (a few calls): takes no lock and lists nothing
#      - a long-running `kugetsu daemon`: its RSS (VmHWM, VmRSS from /proc) once it is idle
#        after its first pass, and the CPU time (utime + stime, clock ticks) of the passes
#        that W `kugetsu enqueue` calls wake it for, one at a time
#    and, from kugetsu-micro-bench (same sizes, a warm dispatcher, no process cost), a
#    process_queue() pass that finds no slot, a whole daemon wake-up (process_queue() +
#    next_wake()), and a pass that starts one task (durable).
# 3. The daemon's memory at the largest size: VmHWM above, and `/usr/bin/time -v kugetsu daemon
#    --once` (maximum resident set size).
# Goal checked (reported, never asserted): a daemon pass at 100,000 pending costs no more than
# twice a pass at 10 (warm, micro-benchmark: process_queue() + next_wake()).
#
# Run:   bash bench/scale.sh [options]
#   --sizes LIST      ascending pending-queue sizes (default 10,1000,10000,100000)
#   --sample S        CLI enqueue calls timed into an empty HOME (default 1000)
#   -r R              timed repetitions of each command per size (default 3)
#   -w W              daemon wake-ups per size (default 5)
#   --quick           --sizes 10,1000 --sample 50 -r 1 -w 2: a check that it runs
#   --fill-durable    fsync the filled records too (much slower: ~1 ms per record on ext4)
#   --home-parent DIR where HOME goes (default /var/tmp, the normal disk)
#   --build-dir DIR   the CMake build tree (default build/release; configured Release if it
#                     has no CMakeCache.txt)
#   --no-micro        skip kugetsu-micro-bench
#   --out-dir DIR     results (default out/): scale.md, scale.json, scale.tsv, scale-micro.json
#                     (kugetsu-micro-bench's report)
#   --doc             also rewrite the generated tables of docs/performance.md
#   --keep            keep the HOMEs
# Needs bash 5, python3, cmake, a C++20 compiler, CLI11, Google Benchmark, GNU time (optional).
set -euo pipefail
export LC_ALL=C

SIZES_ARG="10,1000,10000,100000"
SAMPLE=1000
REPS=3
WAKES=5
FILL_DURABLE=0
PARENT=/var/tmp
BUILD=""
MICRO=1
MIN_TIME=0.3
OUT_DIR=""
DOC=0
KEEP=0
QUICK=0
while [[ $# -gt 0 ]]; do
    case "$1" in
        --sizes) SIZES_ARG="${2:?}"; shift 2 ;;
        --sample) SAMPLE="${2:?}"; shift 2 ;;
        -r) REPS="${2:?}"; shift 2 ;;
        -w) WAKES="${2:?}"; shift 2 ;;
        --quick) QUICK=1; SIZES_ARG="10,1000"; SAMPLE=50; REPS=1; WAKES=2; MIN_TIME=0.01; shift ;;
        --fill-durable) FILL_DURABLE=1; shift ;;
        --home-parent) PARENT="${2:?}"; shift 2 ;;
        --build-dir) BUILD="${2:?}"; shift 2 ;;
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
for v in SAMPLE REPS WAKES; do
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
TSV="$WORK/scale.tsv"   # size  what  value  unit
: >"$TSV"
AGENT_PIDS=()
SUPERVISOR_PIDS=()
DAEMON_PID=""
HOME_DIR="$WORK/home"
# Stops the blocker agents. Their supervisors then record the ends (an on-exit `kugetsu reap`,
# which reads every record): HOME goes first, so that those reaps find nothing to read, and
# the supervisors are waited for, so that none recreates HOME after WORK is removed.
stop_blockers() {
    local p i
    [[ $KEEP -eq 1 ]] || rm -rf "$HOME_DIR"
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

put() { printf '%s\t%s\t%s\t%s\n' "$1" "$2" "$3" "$4" >>"$TSV"; }
# timed SIZE WHAT EXPECTED_STATUS CMD...: runs CMD once, records its wall time (s). No
# `timeout` around it: that would add a process to what is measured.
timed() {
    local size="$1" what="$2" want="$3" s e rc=0
    shift 3
    s=$EPOCHREALTIME
    "$@" >/dev/null 2>"$WORK/last.err" || rc=$?
    e=$EPOCHREALTIME
    [[ $rc -eq $want ]] || die "$what at $size: '$*' exited $rc (expected $want): $(tail -n 2 "$WORK/last.err")"
    put "$size" "$what" "$(python3 -c 'import sys; print(float(sys.argv[2]) - float(sys.argv[1]))' "$s" "$e")" s
}

# ---- 1. enqueue into an empty HOME -------------------------------------------------------
export MAX_CONCURRENT_AGENTS=3
E_HOME="$WORK/enqueue-home"
log "enqueue: $SAMPLE CLI calls into an empty HOME"
calls="$WORK/enqueue-calls"
: >"$calls"
for ((i = 1; i <= SAMPLE; i++)); do
    s=$EPOCHREALTIME
    "$K" --home "$E_HOME" enqueue --id "c$i" -- /bin/true >/dev/null
    e=$EPOCHREALTIME
    echo "$s $e" >>"$calls"
done
awk '{ printf "0\tcli_enqueue_call\t%.6f\ts\n", $2 - $1 }' "$calls" >>"$TSV"
for d in 0 1; do
    h="$WORK/fill-home-$d"
    line="$("$FILL" "$h" "$SAMPLE" $([[ $d -eq 1 ]] && echo --durable) -- /bin/true)"
    put 0 "lib_enqueue_durable_$d" "$(sed 's/.*us_per_task=\([0-9.]*\).*/\1/' <<<"$line")" us
    rm -rf "$h"
done
rm -rf "$E_HOME"

# ---- 2. one HOME, cap full, growing queue ------------------------------------------------
export KUGETSU_HOME="$HOME_DIR"
log "HOME $HOME_DIR: 3 agents hold the 3 slots"
for b in 1 2 3; do
    out="$("$K" start --id "blocker$b" -- sleep 3600)"
    AGENT_PIDS+=("${out##* }")
    SUPERVISOR_PIDS+=("$(awk '{ print $4 }' "/proc/${out##* }/stat")")
done

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

have=0
wake_id=0
for n in "${SIZES[@]}"; do
    log "filling to $n pending"
    line="$("$FILL" "$HOME_DIR" $((n - have)) --from $((have + 1)) $([[ $FILL_DURABLE -eq 1 ]] && echo --durable) -- /bin/true)"
    put "$n" fill_us_per_task "$(sed 's/.*us_per_task=\([0-9.]*\).*/\1/' <<<"$line")" us
    have=$n
    # Pending tasks the CLI adds below (enqueue samples, wake-ups) are not counted: a few dozen.
    log "$n pending: kugetsu daemon --once, start (75), enqueue ×$REPS"
    for ((r = 1; r <= REPS; r++)); do
        timed "$n" cli_daemon_once 0 "$K" daemon --once
        timed "$n" cli_start_no_slot 75 "$K" start --id "x$n-$r" -- /bin/true
        timed "$n" cli_enqueue 0 "$K" enqueue --id "y$n-$r" -- /bin/true
    done
    log "$n pending: a running daemon, $WAKES wake-ups"
    s=$EPOCHREALTIME
    "$K" daemon 2>"$WORK/daemon.err" &
    DAEMON_PID=$!
    settle "$DAEMON_PID"
    e=$EPOCHREALTIME
    put "$n" daemon_first_pass_and_settle "$(python3 -c 'import sys; print(float(sys.argv[2]) - float(sys.argv[1]) - 0.5)' "$s" "$e")" s
    put "$n" daemon_first_pass_cpu "$(python3 -c "print($(cpu_ticks "$DAEMON_PID") / $TICK)")" s
    put "$n" daemon_vmhwm_kib "$(proc_field "$DAEMON_PID" VmHWM | tr -dc 0-9)" KiB
    c0="$(cpu_ticks "$DAEMON_PID")"
    for ((w = 1; w <= WAKES; w++)); do
        wake_id=$((wake_id + 1))
        "$K" enqueue --id "w$wake_id" -- /bin/true >/dev/null
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

# ---- 3. memory of a one-pass process, and the CLI enqueue at the largest size -------------
if [[ -x /usr/bin/time ]]; then
    /usr/bin/time -v "$K" daemon --once 2>"$WORK/time.txt" >/dev/null || die "daemon --once under time: $(tail -n 3 "$WORK/time.txt")"
    put "$have" once_maxrss_kib "$(sed -n 's/.*Maximum resident set size (kbytes): //p' "$WORK/time.txt")" KiB
fi
n_big=$(( SAMPLE < 200 ? SAMPLE : 200 ))
log "$n_big CLI enqueue calls into the HOME of $have pending"
: >"$calls"
for ((i = 1; i <= n_big; i++)); do
    s=$EPOCHREALTIME
    "$K" enqueue --id "z$i" -- /bin/true >/dev/null
    e=$EPOCHREALTIME
    echo "$s $e" >>"$calls"
done
awk -v n="$have" '{ printf "%s\tcli_enqueue_call_big\t%.6f\ts\n", n, $2 - $1 }' "$calls" >>"$TSV"

stop_blockers

# ---- 4. the warm pass: kugetsu-micro-bench -------------------------------------------------
MICRO_JSON="$WORK/micro.json"
if [[ $MICRO -eq 1 ]]; then
    log "kugetsu-micro-bench: passes at $SIZES_ARG pending"
    "$MICRO_BIN" --sizes="$SIZES_ARG" --dir="$WORK" --tmpfs_dir= --benchmark_min_time="$MIN_TIME" \
        --benchmark_filter='BM_process_queue_pass_no_slot/|BM_daemon_wake_no_slot|BM_process_queue_pass_start_one/.*durable:1|BM_process_queue_pass_memory' \
        --benchmark_format=console --benchmark_out="$MICRO_JSON" --benchmark_out_format=json >&2
else
    echo '{"benchmarks": []}' >"$MICRO_JSON"
fi

# ---- report ------------------------------------------------------------------------------
cp "$TSV" "$OUT_DIR/scale.tsv"
cp "$MICRO_JSON" "$OUT_DIR/scale-micro.json"
case "$(stat -f -c %t "$PARENT" 2>/dev/null)" in   # stat's %T says "ext2/ext3" for ext4
    ef53) FS_TYPE=ext4 ;; 1021994) FS_TYPE=tmpfs ;; 58465342) FS_TYPE=xfs ;; 9123683e) FS_TYPE=btrfs ;;
    *) FS_TYPE="$(stat -f -c %T "$PARENT" 2>/dev/null || echo '?')" ;;
esac
python3 - "$OUT_DIR" "$MICRO_JSON" "$SIZES_ARG" "$SAMPLE" "$PARENT ($FS_TYPE)" "$QUICK" "$BUILD_TYPE" "$FILL_DURABLE" <<'PY'
import collections, json, math, os, statistics, sys

out_dir, micro_json, sizes, sample, home_fs, quick, build_type, fill_durable = sys.argv[1:9]
sizes = [int(x) for x in sizes.split(",")]
quick, sample = quick == "1", int(sample)
v = collections.defaultdict(list)
with open(os.path.join(out_dir, "scale.tsv")) as f:
    for line in f:
        size, what, value, unit = line.rstrip("\n").split("\t")
        v[(int(size), what)].append(float(value))
def med(key): return statistics.median(v[key]) if v.get(key) else None
def q(xs, p): xs = sorted(xs); return xs[max(0, math.ceil(p * len(xs)) - 1)]

micro = {}
with open(micro_json) as f:
    for b in json.load(f).get("benchmarks", []):
        if b.get("run_type", "iteration") != "iteration" or b.get("error_occurred"):
            continue
        mult = {"ns": 1e-6, "us": 1e-3, "ms": 1.0, "s": 1e3}[b.get("time_unit", "ns")]
        micro[b["name"].replace("/real_time", "")] = b["real_time"] * mult   # ms

def m(name, n, extra=""):
    return micro.get(f"{name}/pending:{n}{extra}")

def ms(x): return "-" if x is None else (f"{x:.3f} ms" if x < 10 else f"{x:.0f} ms" if x < 10000 else f"{x / 1e3:.1f} s")
def mib(kib): return "-" if kib is None else f"{kib / 1024:.1f} MiB"

res = {"sizes": sizes, "home": home_fs, "build_type": build_type, "quick": quick, "goals": [], "per_size": {}}
cli = v[(0, "cli_enqueue_call")]
big = sizes[-1]
cli_big = v.get((big, "cli_enqueue_call_big"), [])
enq = {"cli_call_median_ms": statistics.median(cli) * 1e3, "cli_call_p99_ms": q(cli, 0.99) * 1e3,
       "cli_call_median_ms_at_largest": statistics.median(cli_big) * 1e3 if cli_big else None,
       "lib_us_durable": med((0, "lib_enqueue_durable_1")), "lib_us_not_durable": med((0, "lib_enqueue_durable_0"))}
res["enqueue"] = enq
md = [f"HOME on {home_fs}; kugetsu built {build_type}. Fill records {'fsynced' if fill_durable == '1' else 'not fsynced'}.",
      ("**--quick run: a check that it runs; the figures mean little.**\n" if quick else ""),
      "#### Enqueue", "",
      "| how | per task | 100,000 tasks |", "|---|---:|---:|",
      f"| `kugetsu enqueue`, one process per task, empty HOME ({len(cli)} calls) | median {enq['cli_call_median_ms']:.2f} ms, "
      f"p99 {enq['cli_call_p99_ms']:.2f} ms | est. {enq['cli_call_median_ms'] * 100:.0f} s |"]
if cli_big:
    md.append(f"| `kugetsu enqueue` into the HOME of {big:,} pending ({len(cli_big)} calls) | median "
              f"{enq['cli_call_median_ms_at_largest']:.2f} ms | est. {enq['cli_call_median_ms_at_largest'] * 100:.0f} s |")
for d, name in ((1, "durable"), (0, "not fsynced")):
    us = enq["lib_us_durable" if d else "lib_us_not_durable"]
    md.append(f"| library `enqueue()`, {name} (`kugetsu-bench-fill`) | {us:.1f} µs | {us * 0.1:.1f} s |")
fills = [(n, med((n, "fill_us_per_task"))) for n in sizes]
md.append("")
md += ["#### A pass against queue size (cap 3 full: 3 agents live, N pending; nothing starts)", "",
       "| pending | warm pass: `process_queue()` | warm daemon wake: + `next_wake()` | warm pass that starts one (durable) | "
       "`kugetsu daemon --once` (process) | `kugetsu start` → 75 (process) | `kugetsu enqueue` (process) | "
       "running daemon: CPU per wake | daemon RSS (VmHWM) |",
       "|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
for n in sizes:
    row = {"pass_ms": m("BM_process_queue_pass_no_slot", n), "wake_ms": m("BM_daemon_wake_no_slot", n),
           "start_one_ms": m("BM_process_queue_pass_start_one", n, "/durable:1"),
           "memory_pass_ms": m("BM_process_queue_pass_memory", n, "/start_one:0"),
           "memory_start_one_ms": m("BM_process_queue_pass_memory", n, "/start_one:1"),
           "cli_daemon_once_ms": (med((n, "cli_daemon_once")) or 0) * 1e3,
           "cli_start_no_slot_ms": (med((n, "cli_start_no_slot")) or 0) * 1e3,
           "cli_enqueue_ms": (med((n, "cli_enqueue")) or 0) * 1e3,
           "daemon_cpu_per_wake_ms": (med((n, "daemon_cpu_per_wake")) or 0) * 1e3,
           "daemon_first_pass_cpu_s": med((n, "daemon_first_pass_cpu")),
           "daemon_vmhwm_kib": med((n, "daemon_vmhwm_after_kib")), "daemon_vmrss_kib": med((n, "daemon_vmrss_kib")),
           "fill_us_per_task": med((n, "fill_us_per_task"))}
    res["per_size"][n] = row
    cpu = row["daemon_cpu_per_wake_ms"]
    cpu_s = f"< {1000 / 100 / max(1, len(v[(n, 'daemon_cpu_per_wake')])):.0f} ms (tick)" if cpu == 0 else ms(cpu)
    md.append(f"| {n:,} | {ms(row['pass_ms'])} | {ms(row['wake_ms'])} | {ms(row['start_one_ms'])} | "
              f"{ms(row['cli_daemon_once_ms'])} | {ms(row['cli_start_no_slot_ms'])} | {ms(row['cli_enqueue_ms'])} | "
              f"{cpu_s} | {mib(row['daemon_vmhwm_kib'])} |")
md.append("")
notes = ["warm = one dispatcher across passes, records parsed once (kugetsu-micro-bench, no process cost); "
         "the `kugetsu` columns are whole processes, which read only the records their pass needs (median of the repetitions)"]
if v.get((big, "once_maxrss_kib")):
    notes.append(f"`kugetsu daemon --once` at {big:,} pending: maximum RSS {mib(v[(big, 'once_maxrss_kib')][0])} (GNU time)")
mem = [(n, res["per_size"][n]["memory_pass_ms"]) for n in sizes if res["per_size"][n]["memory_pass_ms"] is not None]
if mem:
    notes.append("the same passes over memory_store (no filesystem): " +
                 ", ".join(f"{n:,}: {ms(x)} / {ms(res['per_size'][n]['memory_start_one_ms'])}" for n, x in mem) +
                 " (no slot / starts one)")
# growth: the ratio from the smallest to the largest size, and the exponent k of cost ~ N^k
# over the last step (between the two largest sizes), where a constant part no longer hides it
lo, hi = sizes[0], sizes[-1]
for key, name in (("wake_ms", "warm daemon wake"), ("pass_ms", "warm pass"), ("start_one_ms", "warm pass that starts one"),
                  ("cli_daemon_once_ms", "`kugetsu daemon --once`"), ("cli_start_no_slot_ms", "`kugetsu start` → 75")):
    a, b = res["per_size"][lo][key], res["per_size"][hi][key]
    if not (a and b and hi > lo):
        continue
    text = f"{name}: × {b / a:.0f} from {lo:,} to {hi:,} pending"
    if len(sizes) > 2:
        n1 = sizes[-2]
        c = res["per_size"][n1][key]
        if c:
            k = math.log(b / c) / math.log(hi / n1)
            text += f"; from {n1:,} to {hi:,}: × {b / c:.1f}, i.e. N^{k:.2f} (1 = linear, 0 = flat)"
    notes.append(text)
md += [f"- {n}" for n in notes]
if fills:
    md.append(f"- filling through the library: " + ", ".join(f"{us:.0f} µs" for _, us in fills if us) + " per record")

a, b = res["per_size"][lo]["wake_ms"], res["per_size"][hi]["wake_ms"]
if a and b:
    r = b / a
    res["goals"].append({"goal": f"a daemon pass at {hi:,} pending ≤ 2 × a pass at {lo:,}", "target": "≤ 2 ×",
                         "measured": f"{ms(b)} vs {ms(a)} (warm wake: process_queue() + next_wake())",
                         "ratio": r / 2.0, "met": r <= 2.0, "source": "scale"})
res["notes"] = notes
md.append("")
md += ["| goal | target | measured | ratio to target | met |", "|---|---|---|---:|---|"]
for g in res["goals"]:
    md.append(f"| {g['goal']} | {g['target']} | {g['measured']} | {g['ratio']:.2f} | {'yes' if g['met'] else '**no**'} |")
text = "\n".join(l for l in md) + "\n"
with open(os.path.join(out_dir, "scale.md"), "w") as f: f.write(text)
with open(os.path.join(out_dir, "scale.json"), "w") as f: json.dump(res, f, indent=2)
print(text)
print(f"written: {out_dir}/scale.md, scale.json, scale.tsv")
PY

if [[ $DOC -eq 1 ]]; then
    python3 "$ROOT/bench/perfdoc.py" "$ROOT/docs/performance.md" "$OUT_DIR"
fi
