#!/usr/bin/env bash
# bench/handoff.sh: the HANDOFF LATENCY of `kugetsu daemon` at cap 1, beside baselines.
#
# What it measures: N agents run one at a time (MAX_CONCURRENT_AGENTS=1). Each agent is
# bench/stamp_agent.cpp (target kugetsu-stamp-agent), which appends "<start_ns> <end_ns>
# <label>" to a file: start_ns = CLOCK_MONOTONIC first thing in main, end_ns = just before its
# one write and _exit. After sorting the lines by start_ns, handoff i = start_ns(i+1) -
# end_ns(i): the time from one agent's end to the next agent's first instruction in main,
# i.e. exit + the runner noticing + its bookkeeping + fork/exec + the dynamic loader. With a
# cap of 1 agents never overlap; the script fails loudly if a start precedes the previous end.
#
# Runners, all in the same run so that their ratios are comparable (this machine is noisy):
#   kugetsu (tmpfs)   KUGETSU_HOME under /dev/shm; N tasks enqueued, then `kugetsu daemon`,
#                     `kugetsu wait` for all of them, kill -TERM the daemon
#   kugetsu (disk)    the same with KUGETSU_HOME under /var/tmp (ext4: fsyncs are real)
#   xargs -P1         seq N | xargs -P1 -I{} AGENT FILE {}          (the baseline: ratio 1)
#   tsp -S 1          task-spooler, own TS_SOCKET/TMPDIR, if installed (the queue is filled
#                     behind a blocker job first, so enqueueing does not pace the agents)
#   parallel -j1      GNU parallel, if installed
# The goal for kugetsu is a median handoff under 1 ms.
#
# Run:   bash bench/handoff.sh [-n N] [--install] [--keep]
#   -n N       agents per runner (default 200)
#   --install  apt-get install task-spooler and parallel first (otherwise they are skipped
#              with a note when missing)
#   --keep     keep the state directories and stamp files (default: removed)
# Output: a table on stdout (median, p90, max, the median's ratio to xargs -P1's, and the
# medians of the first and last quarter of the handoffs, to show drift within a run) and
# out/handoff.json (the same, plus min and the agents' own run time). Stamp files are kept in
# out/handoff/<runner>.stamps with --keep. Needs cmake, a C++20 compiler, CLI11, python3.
# The handoff grows with the number of records in KUGETSU_HOME/queue; compare -n 20, -n 200.
set -euo pipefail

N=200
INSTALL=0
KEEP=0
while [[ $# -gt 0 ]]; do
    case "$1" in
        -n) N="${2:?-n needs a number}"; shift 2 ;;
        --install) INSTALL=1; shift ;;
        --keep) KEEP=1; shift ;;
        -h|--help) sed -n '2,/^set -euo/p' "$0" | sed 's/^# \{0,1\}//;$d'; exit 0 ;;
        *) echo "handoff.sh: unknown argument: $1 (try --help)" >&2; exit 64 ;;
    esac
done
[[ "$N" =~ ^[0-9]+$ && "$N" -ge 2 ]] || { echo "handoff.sh: -n needs a whole number >= 2" >&2; exit 64; }

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"

die() { echo "handoff.sh: FAILED: $*" >&2; exit 1; }

# ---- build -------------------------------------------------------------------------------
echo "== building (preset release)" >&2
cmake --preset release >/dev/null
cmake --build --preset release -j2 --target kugetsu-cli kugetsu-stamp-agent >/dev/null
KUGETSU="$ROOT/build/release/cli/kugetsu"
AGENT="$ROOT/build/release/bench/kugetsu-stamp-agent"
[[ -x "$KUGETSU" ]] || die "no kugetsu binary at $KUGETSU"
[[ -x "$AGENT" ]] || die "no stamp agent at $AGENT"

if [[ $INSTALL -eq 1 ]]; then
    echo "== installing task-spooler and parallel" >&2
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq task-spooler parallel >/dev/null
fi

mkdir -p out
WORK="$(mktemp -d /tmp/kugetsu-handoff.XXXXXX)"   # stamp files (tmpfs or not: one write each)
CLEANUP=("$WORK")
DAEMON_PID=""
cleanup() {
    if [[ -n "$DAEMON_PID" ]]; then kill -TERM "$DAEMON_PID" 2>/dev/null || true; wait "$DAEMON_PID" 2>/dev/null || true; fi
    if [[ $KEEP -eq 1 ]]; then
        mkdir -p out/handoff && cp "$WORK"/*.stamps out/handoff/ 2>/dev/null || true
        echo "kept: ${CLEANUP[*]}" >&2
    else
        rm -rf "${CLEANUP[@]}"
    fi
}
trap cleanup EXIT

RUNNERS=()   # "name|stamp file" in the order of the table
NOTES=()

# ---- kugetsu daemon ----------------------------------------------------------------------
# run_kugetsu NAME SLUG PARENT_DIR: a fresh KUGETSU_HOME under PARENT_DIR.
run_kugetsu() {
    local name="$1" slug="$2" parent="$3"
    local home stamps
    home="$(mktemp -d "$parent/kugetsu-handoff-home.XXXXXX")"
    CLEANUP+=("$home")
    stamps="$WORK/$slug.stamps"
    : >"$stamps"
    echo "== $name: KUGETSU_HOME=$home, enqueueing $N tasks" >&2
    export KUGETSU_HOME="$home" MAX_CONCURRENT_AGENTS=1
    local i
    for ((i = 1; i <= N; i++)); do
        "$KUGETSU" enqueue --id "h$i" -- "$AGENT" "$stamps" >/dev/null
    done
    echo "== $name: daemon + wait" >&2
    "$KUGETSU" daemon 2>"$WORK/$slug.daemon.err" &
    DAEMON_PID=$!
    local t0=$SECONDS rc=0
    timeout 300 "$KUGETSU" wait >/dev/null || rc=$?
    kill -TERM "$DAEMON_PID" 2>/dev/null || true   # if it is already gone, wait says why
    local drc=0
    wait "$DAEMON_PID" || drc=$?
    DAEMON_PID=""
    unset KUGETSU_HOME MAX_CONCURRENT_AGENTS
    [[ $rc -eq 0 ]] || die "$name: kugetsu wait exited $rc (124 = timed out); rerun with --keep to inspect $home"
    [[ $drc -eq 0 ]] || die "$name: kugetsu daemon exited $drc: $(cat "$WORK/$slug.daemon.err")"
    echo "   $N agents in $((SECONDS - t0)) s" >&2
    RUNNERS+=("$name|$stamps")
}

# ---- baselines ---------------------------------------------------------------------------
run_xargs() {
    local stamps="$WORK/xargs.stamps"
    : >"$stamps"
    echo "== xargs -P1" >&2
    seq "$N" | xargs -P1 -I{} "$AGENT" "$stamps" "x{}"
    RUNNERS+=("xargs -P1|$stamps")
}

run_tsp() {
    if ! command -v tsp >/dev/null; then
        NOTES+=("tsp -S 1: skipped, task-spooler is not installed (--install installs it)")
        return 0
    fi
    local stamps="$WORK/tsp.stamps" dir
    dir="$(mktemp -d /tmp/kugetsu-handoff-tsp.XXXXXX)"
    CLEANUP+=("$dir")
    : >"$stamps"
    echo "== tsp -S 1" >&2
    (
        export TS_SOCKET="$dir/socket" TMPDIR="$dir" TS_MAXFINISHED=$((N + 10))
        trap 'tsp -K 2>/dev/null || true' EXIT   # this run's server only (its own socket)
        tsp -S 1
        # A blocker holds the only slot while the queue is filled, so that the agents are not
        # paced by the enqueueing processes; it is not an agent, so no handoff is counted.
        tsp sh -c "while [ ! -e '$dir/go' ]; do sleep 0.01; done" >/dev/null
        local i
        for ((i = 1; i <= N; i++)); do tsp "$AGENT" "$stamps" "t$i" >/dev/null; done
        touch "$dir/go"
        timeout 300 tsp -w >/dev/null   # the last job; with one slot, all before it are done
    ) || die "tsp run failed"
    RUNNERS+=("tsp -S 1|$stamps")
}

run_parallel() {
    if ! command -v parallel >/dev/null || ! parallel --version 2>/dev/null | grep -q 'GNU parallel'; then
        NOTES+=("parallel -j1: skipped, GNU parallel is not installed (--install installs it)")
        return 0
    fi
    local stamps="$WORK/parallel.stamps"
    : >"$stamps"
    echo "== parallel -j1" >&2
    seq "$N" | HOME="$WORK" parallel --will-cite -j1 "$AGENT" "$stamps" "p{}"
    RUNNERS+=("parallel -j1|$stamps")
}

# ---- run ---------------------------------------------------------------------------------
run_xargs
run_kugetsu "kugetsu (tmpfs)" kugetsu-tmpfs /dev/shm
run_kugetsu "kugetsu (disk)" kugetsu-disk /var/tmp
run_tsp
run_parallel

# ---- statistics --------------------------------------------------------------------------
# Reads "name|file" pairs from a file; checks every stamp file (N lines, distinct labels, no
# overlap), prints the table and writes out/handoff.json.
printf '%s\n' "${RUNNERS[@]}" >"$WORK/runners"
python3 - "$N" out/handoff.json "$WORK/runners" "${NOTES[@]+"${NOTES[@]}"}" <<'PY'
import json, math, os, sys

n_expected = int(sys.argv[1]); json_path = sys.argv[2]; notes = sys.argv[4:]
with open(sys.argv[3]) as f:
    runners = [l.rstrip("\n").split("|", 1) for l in f if l.strip()]

def fail(msg):
    sys.exit("handoff.sh: FAILED: " + msg)

def quantile(xs, q):                       # nearest rank on sorted xs
    return xs[max(0, math.ceil(q * len(xs)) - 1)]

results = []
for name, path in runners:
    rows = []
    with open(path) as f:
        for ln, line in enumerate(f, 1):
            parts = line.split()
            if len(parts) != 3:
                fail(f"{name}: {path}:{ln}: not '<start_ns> <end_ns> <label>': {line!r}")
            s, e = int(parts[0]), int(parts[1])
            if e < s:
                fail(f"{name}: {path}:{ln}: ends before it starts")
            rows.append((s, e, parts[2]))
    if len(rows) != n_expected:
        fail(f"{name}: {len(rows)} agents wrote a line, expected {n_expected}")
    if len({r[2] for r in rows}) != n_expected:
        fail(f"{name}: duplicate labels: some agent ran twice")
    rows.sort()
    handoffs = []
    for a, b in zip(rows, rows[1:]):
        h = b[0] - a[1]
        if h < 0:
            fail(f"{name}: OVERLAP: {b[2]} started {-h} ns before {a[2]} ended (cap 1 broken?)")
        handoffs.append(h / 1e6)           # ms
    hs = sorted(handoffs)
    q = max(1, len(handoffs) // 4)
    results.append({
        "tool": name, "agents": len(rows), "handoffs": len(hs),
        "median_ms": quantile(hs, 0.5), "p90_ms": quantile(hs, 0.9), "max_ms": hs[-1], "min_ms": hs[0],
        # in queue order: does the handoff grow as the queue directory fills with finished tasks?
        "median_first_quarter_ms": sorted(handoffs[:q])[len(handoffs[:q]) // 2],
        "median_last_quarter_ms": sorted(handoffs[-q:])[len(handoffs[-q:]) // 2],
        "agent_runtime_median_ms": sorted((e - s) / 1e6 for s, e, _ in rows)[len(rows) // 2],
    })

base = next((r for r in results if r["tool"] == "xargs -P1"), None)
for r in results:
    r["ratio_to_xargs"] = r["median_ms"] / base["median_ms"] if base and base["median_ms"] > 0 else None

w = max(len(r["tool"]) for r in results)
print(f"\nhandoff = next agent's start - previous agent's end, N={n_expected} agents, cap 1 (ms)\n")
hdr = f"{'tool':<{w}} | {'median':>8} | {'p90':>8} | {'max':>8} | {'x xargs':>8} | {'1st/4th quarter median':>22}"
print(hdr); print("-" * len(hdr))
for r in results:
    ratio = f"{r['ratio_to_xargs']:.1f}" if r["ratio_to_xargs"] is not None else "-"
    qq = f"{r['median_first_quarter_ms']:.3f} / {r['median_last_quarter_ms']:.3f}"
    print(f"{r['tool']:<{w}} | {r['median_ms']:8.3f} | {r['p90_ms']:8.3f} | {r['max_ms']:8.3f} | {ratio:>8} | {qq:>22}")
for nt in notes:
    print("note: " + nt)
for r in results:
    if r["tool"].startswith("kugetsu"):
        verdict = "meets" if r["median_ms"] < 1.0 else "MISSES"
        print(f"goal (median < 1 ms): {r['tool']} {verdict} it ({r['median_ms']:.3f} ms)")

os.makedirs(os.path.dirname(json_path) or ".", exist_ok=True)
with open(json_path, "w") as f:
    json.dump({"n": n_expected, "cap": 1, "unit": "ms",
               "definition": "start_ns(i+1) - end_ns(i), CLOCK_MONOTONIC, lines sorted by start_ns",
               "results": results, "notes": notes}, f, indent=2)
print(f"\nwritten: {json_path}")
PY
