#!/usr/bin/env bash
# bench/breakdown.sh: where a daemon drain's time goes, per task and per pass (issue 12).
#
# Three drains of N `/bin/true` (cap 3, HOME on the normal disk), each in a new HOME filled by
# `kugetsu enqueue` first (not measured):
#   1. untraced: the drain's wall time; the CPU time of the daemon (utime, stime from
#      /proc/PID/stat just before it is stopped), of its children (supervisors and agents, as
#      reaped: cutime + cstime) and its context switches; beside the floor's and xargs's CPU
#      time for N tasks (GNU time)
#   2. with a few tracepoints recorded system-wide (perf record -a: process fork, exec and exit;
#      the daemon's poll, flock, fdatasync, sendto), cut into passes (the cap lock held, on
#      HOME/lock, from its flock(LOCK_EX) to its flock(LOCK_UN)). For each pass that starts
#      agents: the agent end that freed the slot -> its supervisor's exit (it records the end)
#      -> the daemon's wake-up (poll returns) -> the lock -> the first fork -> the fdatasync ->
#      the new agents' exec -> the unlock -> asleep again. Tracepoints cost little, but the
#      figures are still somewhat slower than untraced
#   3. perf record of the daemon alone (no children; DWARF call graphs): the share of its CPU
#      time in each part of the library (inclusive: a function with what it calls)
# perf must be installed (Debian: linux-perf) and allowed (root, or perf_event_paranoid <= 0);
# parts 2 and 3 are skipped with a note otherwise.
#
# Run:   bash bench/breakdown.sh [-n N] [--build-dir DIR] [--cli PATH] [--home-parent DIR]
#                                [--out-dir DIR] [--doc]
#   -n N              tasks per drain (default 1000)
#   --cli PATH        the kugetsu binary to break down (default: the build tree's; kugetsu 0.1's
#                     works too for parts 1 and 2)
#   --build-dir DIR   the CMake build tree (default build/release; configured Release if needed)
#   --home-parent DIR where HOME goes (default /var/tmp)
#   --out-dir DIR     results (default out/): breakdown.md, breakdown.json
#   --doc             also rewrite the generated tables of docs/performance.md
set -euo pipefail
export LC_ALL=C

N=1000
CLI=""
BUILD=""
PARENT=/var/tmp
OUT_DIR=""
DOC=0
while [[ $# -gt 0 ]]; do
    case "$1" in
        -n) N="${2:?}"; shift 2 ;;
        --cli) CLI="${2:?}"; shift 2 ;;
        --build-dir) BUILD="${2:?}"; shift 2 ;;
        --home-parent) PARENT="${2:?}"; shift 2 ;;
        --out-dir) OUT_DIR="${2:?}"; shift 2 ;;
        --doc) DOC=1; shift ;;
        -h|--help) sed -n '2,/^set -euo/p' "$0" | sed 's/^# \{0,1\}//;$d'; exit 0 ;;
        *) echo "breakdown.sh: unknown argument: $1 (try --help)" >&2; exit 64 ;;
    esac
done
[[ "$N" =~ ^[1-9][0-9]*$ ]] || { echo "breakdown.sh: -n needs a whole number" >&2; exit 64; }
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
OUT_DIR="${OUT_DIR:-$ROOT/out}"
[[ "$OUT_DIR" = /* ]] || OUT_DIR="$ROOT/$OUT_DIR"
log() { echo "breakdown.sh: $*" >&2; }
die() { echo "breakdown.sh: FAILED: $*" >&2; exit 1; }

BUILD_ARG="$BUILD"
BUILD="${BUILD:-build/release}"
[[ "$BUILD" = /* ]] || BUILD="$ROOT/$BUILD"
if [[ -z "$BUILD_ARG" ]]; then cmake --preset release >/dev/null
elif [[ ! -f "$BUILD/CMakeCache.txt" ]]; then cmake -S "$ROOT" -B "$BUILD" -DCMAKE_BUILD_TYPE=Release >/dev/null; fi
cmake --build "$BUILD" -j2 --target kugetsu-cli kugetsu-floor >/dev/null
K="${CLI:-$BUILD/cli/kugetsu}"
FLOOR="$BUILD/bench/kugetsu-floor"
[[ -x "$K" ]] || die "no kugetsu at $K"

NOTES=()
PERF=1
if ! command -v perf >/dev/null; then PERF=0; NOTES+=("parts 2 and 3 skipped: perf is not installed (Debian: linux-perf)")
elif ! perf record -q -o /dev/null -e sched:sched_process_exit -a -- true >/dev/null 2>&1; then
    PERF=0; NOTES+=("parts 2 and 3 skipped: perf may not record tracepoints here (root, or kernel.perf_event_paranoid)")
fi

mkdir -p "$OUT_DIR" "$PARENT"
WORK="$(mktemp -d "$PARENT/kugetsu-breakdown.XXXXXX")"
DPID=""
cleanup() { [[ -n "$DPID" ]] && kill -TERM "$DPID" 2>/dev/null; rm -rf "$WORK"; }
trap cleanup EXIT
export MAX_CONCURRENT_AGENTS=3

fill_home() {   # fill_home HOME: N pending /bin/true
    local i
    for ((i = 1; i <= N; i++)); do KUGETSU_HOME="$1" "$K" enqueue --id "t$i" -- /bin/true >/dev/null; done
}

# ---- 1. wall and CPU -----------------------------------------------------------------------
log "1/3: an untraced drain of $N, with the CPU time of the daemon and of its children"
H="$WORK/h1"; fill_home "$H"
t0=$EPOCHREALTIME
KUGETSU_HOME="$H" "$K" daemon -v 2>"$WORK/d1.err" &
DPID=$!
KUGETSU_HOME="$H" "$K" wait >/dev/null
t1=$EPOCHREALTIME
read -r u s cu cs < <(awk '{ print $14, $15, $16, $17 }' "/proc/$DPID/stat")
ctx=$(awk '/ctxt_switches/ { s += $2 } END { print s }' "/proc/$DPID/status")
kill -TERM "$DPID"; wait "$DPID" || true; DPID=""
passes=$(grep -c 'pass:' "$WORK/d1.err" || true)
/usr/bin/time -f "%e %U %S" -o "$WORK/floor.time" "$FLOOR" -j 3 -n "$N" -- /bin/true
/usr/bin/time -f "%e %U %S" -o "$WORK/xargs.time" sh -c "seq $N | xargs -P3 -I{} /bin/true"
echo "$t0 $t1 $u $s $cu $cs $ctx $passes $(getconf CLK_TCK) $(cat "$WORK/floor.time") $(cat "$WORK/xargs.time")" >"$WORK/cpu.txt"

# ---- 2. tracepoints ------------------------------------------------------------------------
if [[ $PERF -eq 1 ]]; then
    log "2/3: a drain of $N with tracepoints recorded (perf record -a)"
    H="$WORK/h2"; fill_home "$H"
    perf record -a -q -o "$WORK/trace.data" -e sched:sched_process_exit,sched:sched_process_exec,sched:sched_process_fork \
        -e syscalls:sys_enter_fdatasync,syscalls:sys_exit_fdatasync,syscalls:sys_enter_poll,syscalls:sys_exit_poll \
        -e syscalls:sys_enter_flock,syscalls:sys_exit_flock,syscalls:sys_enter_sendto 2>"$WORK/perf2.err" &
    PR=$!
    sleep 1
    KUGETSU_HOME="$H" "$K" daemon 2>"$WORK/d2.err" &
    DPID=$!
    KUGETSU_HOME="$H" "$K" wait >/dev/null
    echo "$DPID" >"$WORK/trace.pid"
    kill -TERM "$DPID"; wait "$DPID" || true; DPID=""
    kill -INT "$PR"; wait "$PR" || true
    perf script -i "$WORK/trace.data" -F comm,pid,time,event,trace >"$WORK/trace.txt" 2>/dev/null

    log "3/3: a drain of $N with the daemon's CPU profiled (perf record, DWARF call graphs)"
    H="$WORK/h3"; fill_home "$H"
    KUGETSU_HOME="$H" perf record -q --no-inherit --call-graph dwarf,32768 -o "$WORK/prof.data" -- "$K" daemon 2>"$WORK/d3.err" &
    PR=$!
    KUGETSU_HOME="$H" "$K" wait >/dev/null
    # perf passes the signal on to the daemon, which exits; perf then writes its file
    kill -INT "$PR"; wait "$PR" || true
    for ((i = 0; i < 50; i++)); do pgrep -P "$PR" >/dev/null 2>&1 || break; sleep 0.1; done
    perf report -i "$WORK/prof.data" --children -g none --sort sym 2>/dev/null >"$WORK/prof.txt" || true
else
    : >"$WORK/trace.txt"; echo 0 >"$WORK/trace.pid"; : >"$WORK/prof.txt"
fi

python3 - "$WORK" "$N" "$OUT_DIR" "$K" "${NOTES[@]+"${NOTES[@]}"}" <<'PY'
import bisect, collections, json, os, re, statistics, sys

work, N, out_dir, cli = sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4]
notes = sys.argv[5:]
f = open(os.path.join(work, "cpu.txt")).read().split()
t0, t1, u, s, cu, cs, ctx, passes, tck = (float(x) for x in f[:9])
fl = [float(x) for x in f[9:12]]; xa = [float(x) for x in f[12:15]]
wall = t1 - t0
res = {"tasks": N, "cli": cli, "wall_s": wall, "daemon_cpu_ms_per_task": (u + s) / tck / N * 1e3,
       "daemon_user_ms_per_task": u / tck / N * 1e3, "daemon_sys_ms_per_task": s / tck / N * 1e3,
       "children_cpu_ms_per_task": (cu + cs) / tck / N * 1e3, "ctx_switches_per_task": ctx / N, "passes": passes,
       "floor": {"wall_s": fl[0], "cpu_ms_per_task": (fl[1] + fl[2]) / N * 1e3},
       "xargs": {"wall_s": xa[0], "cpu_ms_per_task": (xa[1] + xa[2]) / N * 1e3}}
md = [f"{N} × `/bin/true`, cap 3, HOME on disk; `{cli}`. One run: read the shares and ratios.", "",
      "#### Wall and CPU per task (untraced drain)", "",
      "| | wall per task | CPU per task |", "|---|---:|---:|",
      f"| C floor (posix_spawn + waitpid) | {fl[0] / N * 1e3:.2f} ms | {res['floor']['cpu_ms_per_task']:.2f} ms (with the agents) |",
      f"| `xargs -P3` | {xa[0] / N * 1e3:.2f} ms | {res['xargs']['cpu_ms_per_task']:.2f} ms (with the agents) |",
      f"| kugetsu daemon drain | {wall / N * 1e3:.2f} ms | daemon {res['daemon_cpu_ms_per_task']:.2f} ms "
      f"(user {res['daemon_user_ms_per_task']:.2f}, system {res['daemon_sys_ms_per_task']:.2f}); supervisors and agents "
      f"{res['children_cpu_ms_per_task']:.2f} ms |", "",
      f"- the daemon: {ctx / N:.1f} context switches per task; {passes} passes that did something ({N / max(passes, 1):.2f} tasks per pass)", ""]

# ---- 2. the passes, from the tracepoints
D = int(open(os.path.join(work, "trace.pid")).read().strip() or 0)
ev = []
for l in open(os.path.join(work, "trace.txt")):
    m = re.match(r"\s*(.+?)\s+(\d+)\s+([\d.]+):\s+(\S+):\s*(.*)", l)
    if m: ev.append((float(m.group(3)) * 1e3, int(m.group(2)), m.group(4), m.group(5)))
ev.sort()
if D and ev:
    sup, agent_of, exit_t, exec_t = set(), {}, {}, {}
    for t, pid, name, rest in ev:
        if name == "sched:sched_process_fork":
            c = int(re.search(r"child_pid=(\d+)", rest).group(1))
            if pid == D: sup.add(c)
            elif pid in sup: agent_of[pid] = c
        elif name == "sched:sched_process_exit": exit_t.setdefault(pid, t)
        elif name == "sched:sched_process_exec": exec_t.setdefault(pid, t)
    passes_t, cur, last_wake, lockfd = [], None, None, None
    for t, pid, name, rest in ev:
        if pid != D: continue
        if name == "syscalls:sys_exit_poll": last_wake = t
        elif name == "syscalls:sys_enter_poll" and passes_t and "asleep" not in passes_t[-1]: passes_t[-1]["asleep"] = t
        elif name == "syscalls:sys_enter_flock":
            fd = int(re.search(r"fd: (0x[0-9a-f]+)", rest).group(1), 16); cmd = int(re.search(r"cmd: (0x[0-9a-f]+)", rest).group(1), 16)
            if cmd == 2 and cur is None and (lockfd is None or fd == lockfd):
                lockfd = fd; cur = {"wake": last_wake, "forks": [], "sync": [], "send": []}
            elif cmd == 8 and fd == lockfd and cur is not None:
                cur["unlock"] = t; passes_t.append(cur); cur = None
        elif name == "syscalls:sys_exit_flock" and cur is not None and "locked" not in cur: cur["locked"] = t
        if cur is None: continue
        if name == "sched:sched_process_fork": cur["forks"].append(int(re.search(r"child_pid=(\d+)", rest).group(1)))
        elif name == "syscalls:sys_enter_fdatasync": cur["sync"].append([t, None])
        elif name == "syscalls:sys_exit_fdatasync" and cur["sync"]: cur["sync"][-1][1] = t
    sup_exits = sorted((exit_t[x], x) for x in sup if x in exit_t)
    ph = collections.OrderedDict((k, []) for k in (
        "an agent's end → its supervisor has recorded it and exited",
        "supervisor's exit → the daemon wakes (inotify; includes the daemon still busy with the previous pass)",
        "wake-up → cap lock held",
        "lock → first fork (BEGIN, limits, reap: sessions, slot files, ends recorded, claims)",
        "first fork → fdatasync (k supervisors forked, then their hellos collected, sessions, WAL writes)",
        "fdatasync (the pass's one durable sync)",
        "fdatasync → the last new agent's exec (k go-aheads sent, then the exec reports read)",
        "last exec → unlock (its exec report, the second commit: running marks)",
        "unlock → asleep again (events relayed to events.jsonl, next_wake)"))
    keys = list(ph)
    refill, ks = [], []
    for p in passes_t:
        if not p["forks"] or p["wake"] is None or not [x for x in p["sync"] if x[1]]: continue
        i = bisect.bisect_right(sup_exits, (p["wake"], 1 << 62)) - 1
        if i < 0: continue
        se, sv = sup_exits[i]
        ae = exit_t.get(agent_of.get(sv))
        s0, s1 = next(x for x in p["sync"] if x[1])
        execs = [exec_t[agent_of[c]] for c in p["forks"] if c in agent_of and agent_of[c] in exec_t]
        if ae is not None: ph[keys[0]].append(se - ae)
        ph[keys[1]].append(p["wake"] - se)
        ph[keys[2]].append(p["locked"] - p["wake"])
        ks.append(len(p["forks"]))
        p["_s0"], p["_s1"], p["_execs"], p["_ae"] = s0, s1, execs, ae
    fork_t = {}   # when the daemon forked each supervisor
    for t, pid, name, rest in ev:
        if pid == D and name == "sched:sched_process_fork":
            fork_t[int(re.search(r"child_pid=(\d+)", rest).group(1))] = t
    for p in passes_t:
        if "_s0" not in p: continue
        f0 = fork_t[p["forks"][0]]
        ph[keys[3]].append(f0 - p["locked"])
        ph[keys[4]].append(p["_s0"] - f0)
        ph[keys[5]].append(p["_s1"] - p["_s0"])
        if p["_execs"]:
            ph[keys[6]].append(max(p["_execs"]) - p["_s1"])
            ph[keys[7]].append(p["unlock"] - max(p["_execs"]))
            if p["_ae"] is not None: refill.append(min(p["_execs"]) - p["_ae"])
        if "asleep" in p: ph[keys[8]].append(p["asleep"] - p["unlock"])
    n_p = len(ks)
    tasks = sum(ks)
    res["passes_traced"] = {"passes": n_p, "agents_per_pass": tasks / max(n_p, 1),
                            "phases": {k: {"median_ms": statistics.median(v), "sum_ms": sum(v)} for k, v in ph.items() if v}}
    md += [f"#### One pass, from the tracepoints ({n_p} passes that start agents, {tasks / max(n_p, 1):.2f} agents each)", "",
           "| step | median per pass | per task (sum / tasks) |", "|---|---:|---:|"]
    for k, v in ph.items():
        if v: md.append(f"| {k} | {statistics.median(v):.3f} ms | {sum(v) / max(tasks, 1):.3f} ms |")
    if refill:
        md.append(f"| **an agent's end → the first new agent's exec** | {statistics.median(refill):.3f} ms | |")
        res["passes_traced"]["end_to_exec_median_ms"] = statistics.median(refill)
    lock_held = sum(sum(ph[k]) for k in keys[3:8])
    md += ["", f"- the cap lock is held {lock_held / 1e3:.2f} s of the traced drain's "
               f"{(ev[-1][0] - ev[0][0]) / 1e3:.2f} s of recording (which includes a second before the daemon)", ""]

# ---- 3. the daemon's CPU by function
prof = open(os.path.join(work, "prof.txt")).read().splitlines()
want = collections.OrderedDict([
    ("kugetsu::basic_dispatcher::reap_locked", "reap (sessions, slot files, ends recorded, claims)"),
    ("kugetsu::fork_spawner::spawn", "spawn: fork a supervisor, wait for its hello (log and slot set-up)"),
    ("_Fork", "  of which fork() itself"),
    ("kugetsu::sqlite_store::put_session", "session writes (the first write after fork: copy-on-write faults)"),
    ("kugetsu::basic_dispatcher::put_item", "task rows written (JSON + SQLite)"),
    ("kugetsu::sqlite_store::commit", "commits (WAL writes, fdatasync, the bell)"),
    ("kugetsu::sqlite_store::sync_wal", "  of which the fdatasync"),
    ("kugetsu::fork_spawner::release", "release: the go-ahead, wait for exec"),
    ("kugetsu::basic_dispatcher::deliver", "events relayed to events.jsonl"),
    ("kugetsu::basic_dispatcher::next_wake", "next_wake (reads every running and claimed task)"),
    ("kugetsu::parse_item", "JSON: parse task records"),
    ("kugetsu::to_json", "JSON: write records and events (each overload)"),
    ("kugetsu::watcher::wait", "waiting machinery (inotify read, pidfds)"),
    ("asm_exc_page_fault", "page faults (mostly copy-on-write after fork)"),
])
found = collections.OrderedDict()
for line in prof:
    m = re.match(r"\s*([\d.]+)%\s+([\d.]+)%\s+\[[.k]\]\s+(.*)", line)
    if not m: continue
    sym = m.group(3)
    while True:   # drop template arguments, innermost first
        t = re.sub(r"<[^<>]*>", "", sym)
        if t == sym: break
        sym = t
    sym = sym.replace("(anonymous namespace)::", "")
    for k in want:
        if sym.startswith(k) and (k not in found or k == "kugetsu::to_json"):
            found[k] = found.get(k, 0.0) + float(m.group(1)) if k == "kugetsu::to_json" else float(m.group(1))
if found:
    res["daemon_cpu_share"] = {want[k]: v for k, v in found.items()}
    md += ["#### The daemon's CPU time by part (perf, inclusive; parts overlap)", "",
           "| part | share of the daemon's CPU | per task |", "|---|---:|---:|"]
    for k, label in want.items():
        if k in found:
            md.append(f"| {label} | {found[k]:.1f} % | {found[k] / 100 * res['daemon_cpu_ms_per_task']:.3f} ms |")
    md.append("")
md += [f"note: {n}" for n in notes]
text = "\n".join(md).rstrip("\n") + "\n"
with open(os.path.join(out_dir, "breakdown.md"), "w") as f: f.write(text)
with open(os.path.join(out_dir, "breakdown.json"), "w") as f: json.dump(res, f, indent=2)
print(text)
print(f"written: {out_dir}/breakdown.md, breakdown.json")
PY

if [[ $DOC -eq 1 ]]; then
    python3 "$ROOT/bench/perfdoc.py" "$ROOT/docs/performance.md" "$OUT_DIR"
fi
