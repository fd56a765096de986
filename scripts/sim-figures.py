#!/usr/bin/env python3
"""scripts/sim-figures.py: measures the figures of docs/simulator.md and rewrites them.

    python3 scripts/sim-figures.py KUGETSU_SIM [DOC]     # DOC: docs/simulator.md

Runs `KUGETSU_SIM --design D [ARGS] --schedules 300 --seed 1 --json` (random exploration of
the six-task race) for every design below, and replaces the block

    <!-- sim:designs -->
    ...generated...
    <!-- /sim:designs -->

of DOC with one table row per design: the schedules that broke an invariant, the peak of live
dev agents, and the violations by kind (a schedule may break one invariant more than once).
It also rewrites the block <!-- sim:exhaustive --> (the exhaustive searches: states, complete
schedules, seconds, or the first violation), <!-- sim:shrink --> (for each legacy design, the
shortest counterexample of breadth-first search beside the shrunk ones of depth-first, random
and PCT search) and <!-- sim:speed --> (schedules per second of random and PCT exploration,
on one thread and on every core). Everything outside the blocks is kept as written. Build
kugetsu-sim first (it is build/<preset>/sim/kugetsu-sim), optimised: times are of this build.
"""
import datetime
import json
import re
import subprocess
import sys

DESIGNS = [
    ("legacy", [], "legacy (all four causes)"),
    ("legacy+fix2+fix3+fix4", [], "only cause 1 left"),
    ("legacy+fix1+fix3+fix4", [], "only cause 2 left"),
    ("legacy+fix1+fix2+fix4", [], "only cause 3 left"),
    ("legacy+fix1+fix2+fix3", [], "only cause 4 left"),
    ("legacy+fix2+fix3", [], "causes 1 and 4 left"),
    ("fixed", [], "fixed"),
    ("fixed+edge-triggered-wait", [], "wrong: the daemon loop's waiter forgets what happened during a pass"),
    ("fixed+unrecorded-exits", [], "wrong: the agents' supervisors never write the exit record"),
    ("fixed+unsupervised", [], "fixed, agents without supervisors (the simulator of earlier releases)"),
    ("fixed", ["--waiters", "2", "--cancels", "1"], "fixed, with 2 `kugetsu wait` and a `kugetsu cancel`"),
    ("fixed+deaf-wait", ["--waiters", "2"], "wrong: `kugetsu wait` deaf to the store's commits, 2 waits"),
    ("fixed", ["--reapers", "2", "--restarts", "2"], "fixed, with 2 `kugetsu reap` and 2 `kugetsu wait tK && kugetsu restart tK`"),
    ("fixed+unheard-restarts", ["--restarts", "2"], "wrong: a restart does not wake the daemon, 2 restarts"),
    ("fixed+scheduling", [], "fixed, with groups, priorities, dependencies and a pauser"),
    ("fixed+scheduling+ignore-group-caps", [], "wrong: group caps hidden from the dispatcher"),
    ("fixed+scheduling+ignore-pause", [], "wrong: pauses hidden"),
    ("fixed+scheduling+wrong-priority", [], "wrong: runnable tasks given oldest first"),
    ("fixed+scheduling+ignore-dependencies", [], "wrong: dependencies hidden"),
]
SCHEDULES, SEED = 300, 1
MAX_STATES = 3_000_000   # per exhaustive row: a bound on the script's time (a few minutes a row)


def measure(sim, design, args):
    out = subprocess.run([sim, "--design", design, *args, "--schedules", str(SCHEDULES), "--seed", str(SEED), "--json"],
                         capture_output=True, text=True)
    if out.returncode not in (0, 1):
        sys.exit(f"{sim} --design {design} exited {out.returncode}: {out.stderr.strip()}")
    return json.loads(out.stdout)


EXHAUSTIVE = [
    ("fixed", ["--starters", "0"], "fixed, daemon only"),
    ("fixed", ["--starters", "1"], "fixed, 1 starter"),
    ("fixed", ["--starters", "1", "--fine-states"], "the same, with the finer state (`--fine-states`)"),
    ("fixed", ["--starters", "2"], "fixed, 2 starters"),
    ("fixed", ["--starters", "3"], "fixed, 3 starters"),
    ("fixed", ["--starters", "3", "--early-ends", "0"], "fixed, 3 starters, agents end only at their drawn times"),
    ("fixed", ["--starters", "4", "--early-ends", "0"], "fixed, 4 starters, agents end only at their drawn times"),
    ("fixed", ["--starters", "5", "--early-ends", "0"], "fixed, 5 starters, agents end only at their drawn times"),
    ("fixed", ["--starters", "0", "--kills", "1"], "fixed, daemon only, up to one kill of any simulated process at any step"),
    ("fixed", ["--starters", "0", "--kills", "1", "--early-ends", "0"],
     "fixed, daemon only, up to one kill anywhere, agents end at their drawn times"),
    ("fixed", ["--starters", "0", "--kills", "1", "--early-ends", "0", "--fine-states"],
     "the same, with the finer state (`--fine-states`)"),
    ("fixed", ["--starters", "1", "--kills", "1"], "fixed, 1 starter, up to one kill anywhere"),
    ("fixed", ["--starters", "1", "--kills", "1", "--early-ends", "0"],
     "fixed, 1 starter, up to one kill anywhere, agents end at their drawn times"),
    ("fixed", ["--starters", "2", "--kills", "1", "--early-ends", "0"],
     "fixed, 2 starters, up to one kill anywhere, agents end at their drawn times"),
    ("fixed", ["--starters", "3", "--kills", "1", "--early-ends", "0"],
     "fixed, 3 starters, up to one kill anywhere, agents end at their drawn times"),
    ("fixed+at-most-once-events", ["--starters", "0", "--early-ends", "0", "--kills", "1"],
     "wrong: at-most-once events, daemon only, up to one kill"),
    ("fixed+at-most-once-events", ["--starters", "0", "--early-ends", "0"], "the same without kills"),
    ("fixed", ["--tasks", "2", "--starters", "1", "--no-pm"], "fixed, 2 tasks, 1 starter, no PM"),
    ("fixed", ["--tasks", "2", "--starters", "1", "--no-pm", "--no-reduce"], "the same without the reduction"),
    ("fixed+scheduling", ["--starters", "1", "--early-ends", "0"], "fixed+scheduling, 1 starter and the pauser, agents end at their drawn times"),
    ("fixed+edge-triggered-wait", ["--starters", "1"], "wrong: edge-triggered waiter, 1 starter"),
    ("fixed+edge-triggered-wait", ["--starters", "1", "--early-ends", "0"], "the same, agents end only at their drawn times"),
    ("fixed+unrecorded-exits", ["--starters", "0", "--early-ends", "0"], "wrong: supervisors never write the exit record, daemon only"),
    ("fixed+unsupervised", ["--starters", "3"], "fixed without supervisors (earlier releases), 3 starters"),
    ("fixed", ["--tasks", "2", "--starters", "0", "--no-pm", "--waiters", "1", "--cancels", "1"],
     "fixed, 2 tasks, daemon only, a `kugetsu wait` and a `kugetsu cancel`"),
    ("fixed+deaf-wait", ["--tasks", "2", "--starters", "0", "--no-pm", "--waiters", "1"],
     "wrong: a `kugetsu wait` deaf to commits, 2 tasks, daemon only"),
    ("fixed", ["--tasks", "1", "--starters", "0", "--no-pm", "--restarts", "1"],
     "fixed, 1 task, daemon only, a `kugetsu wait t1 && kugetsu restart t1`"),
    ("fixed", ["--tasks", "1", "--starters", "0", "--no-pm", "--reapers", "1"], "fixed, 1 task, daemon only, a `kugetsu reap`"),
    ("fixed", ["--tasks", "2", "--starters", "0", "--no-pm", "--restarts", "1", "--reapers", "1"],
     "fixed, 2 tasks, daemon only, a restart and a reap"),
    ("fixed+unheard-restarts", ["--tasks", "1", "--starters", "0", "--no-pm", "--restarts", "1"],
     "wrong: a restart does not wake the daemon, 1 task, daemon only"),
    ("legacy", ["--order", "depth-first"], "legacy (all four causes), depth-first"),
    ("legacy+fix2+fix3+fix4", [], "only cause 1 left"),
    ("legacy+fix1+fix3+fix4", [], "only cause 2 left"),
    ("legacy+fix1+fix2+fix4", [], "only cause 3 left"),
    ("legacy+fix2+fix3+fix4", ["--order", "depth-first"], "only cause 1 left, depth-first"),
    ("legacy+fix1+fix3+fix4", ["--order", "depth-first"], "only cause 2 left, depth-first"),
    ("legacy+fix1+fix2+fix4", ["--order", "depth-first"], "only cause 3 left, depth-first"),
]

# Breadth-first search of the whole legacy design (all four causes) on the six-task race
# visits millions of states before its first violation (it was stopped after 11 minutes and
# 5 GB); the comparison for it runs on a smaller race.
SHRINK = [
    ("legacy", ["--tasks", "3", "--starters", "1"], "legacy (all four causes), 3 tasks, 1 starter"),
    ("legacy+fix2+fix3+fix4", [], "only cause 1 left"),
    ("legacy+fix1+fix3+fix4", [], "only cause 2 left"),
    ("legacy+fix1+fix2+fix4", [], "only cause 3 left"),
]


def run_json(sim, args):
    out = subprocess.run([sim, *args, "--json"], capture_output=True, text=True)
    if out.returncode not in (0, 1):
        sys.exit(f"{sim} {' '.join(args)} exited {out.returncode}: {out.stderr.strip()}")
    return json.loads(out.stdout)


def replace_block(text, name, block, doc):
    pattern = re.compile(r"(<!-- sim:" + name + r" -->\n)(?:.*?\n)?(<!-- /sim:" + name + r" -->)", re.S)
    if not pattern.search(text):
        sys.exit(f"{doc}: no <!-- sim:{name} --> block")
    return pattern.sub(lambda m: m.group(1) + block + "\n" + m.group(2), text)


def main():
    if len(sys.argv) not in (2, 3):
        sys.exit(__doc__)
    sim = sys.argv[1]
    doc = sys.argv[2] if len(sys.argv) == 3 else "docs/simulator.md"
    stamp = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    rows = ["| design | `--design` (and flags) | schedules that broke an invariant | peak live dev agents | violations by kind |",
            "|---|---|---|---|---|"]
    for design, args, name in DESIGNS:
        j = measure(sim, design, args)
        kinds = ", ".join(f"{k} {n}" for k, n in sorted(j.get("violations_by_kind", {}).items())) or "none"
        flags = " ".join([design, *args])
        rows.append(f"| {name} | `{flags}` | {j['violations']} / {j['schedules_explored']} | {j['peak_live']} | {kinds} |")
    designs = "\n".join(rows) + (f"\n\n(Generated by `python3 scripts/sim-figures.py` on {stamp}: "
                                 f"`kugetsu-sim --design D --schedules {SCHEDULES} --seed {SEED}`, random exploration "
                                 "of the six-task race: 6 tasks, cap 3, PM, daemon, 3 starters.)")
    ex_rows = ["| search | `kugetsu-sim --explore exhaustive` | states | complete schedules | result | seconds |",
               "|---|---|---|---|---|---|"]
    found = {}
    for design, args, name in EXHAUSTIVE:
        full = ["--design", design, "--explore", "exhaustive", "--seed", str(SEED), "--max-states", str(MAX_STATES), *args]
        j = run_json(sim, full)
        found[(design, tuple(args))] = j
        if j["violations"]:
            c = j["counterexample"]
            result = (f"{c['kind']} (a shortest: {c['steps']} steps)" if c.get("minimal")
                      else f"{c['kind']} (found, shrunk to {c['steps']} steps)")
        else:
            result = "complete, none broken" if j["complete"] else "stopped at --max-states"
        flags = " ".join(f for f in ["--design", design, *args])
        ex_rows.append(f"| {name} | `{flags}` | {j['states_explored']:,} | {j['schedules_explored']:,} | {result} | "
                       f"{j['seconds']:.2f} |")
    threads = max(r["threads"] for r in found.values())
    exhaustive = "\n".join(ex_rows) + (f"\n\n(Generated by `python3 scripts/sim-figures.py` on {stamp}: breadth "
                                       f"first on {threads} threads, depth-first rows on one; default "
                                       f"`--early-ends 1`, `--max-states {MAX_STATES}`.)")
    sh_rows = ["| design | breadth-first: a shortest | depth-first, shrunk | random (1,000), shrunk | PCT (1,000), shrunk |",
               "|---|---|---|---|---|"]
    for design, args, name in SHRINK:
        base = ["--design", design, "--seed", str(SEED), *args]
        bfs = found.get((design, tuple(args))) or run_json(sim, [*base, "--explore", "exhaustive"])
        cells = []
        for extra in (["--explore", "exhaustive", "--order", "depth-first"], ["--schedules", "1000"],
                      ["--explore", "pct", "--schedules", "1000"]):
            j = run_json(sim, [*base, *extra])
            c = j["counterexample"]
            cells.append(f"{c['steps']} ({c['kind']})" if c else "not caught")
        c = bfs["counterexample"]
        sh_rows.append(f"| {name} | {c['steps']} ({c['kind']}) | " + " | ".join(cells) + " |")
    shrink = "\n".join(sh_rows) + (f"\n\n(Generated by `python3 scripts/sim-figures.py` on {stamp}: steps of each "
                                   "counterexample and the invariant it breaks, `--seed 1`.)")
    sp_rows = ["| exploration | threads | schedules | kills | broke an invariant | seconds | schedules/s |",
               "|---|---|---|---|---|---|---|"]
    for label, args in [("random, fixed", ["--schedules", "20000"]),
                        ("random, fixed, `--faults all`", ["--schedules", "20000", "--faults", "all"]),
                        ("pct, fixed", ["--schedules", "20000", "--explore", "pct"]),
                        ("random, legacy", ["--schedules", "3000", "--design", "legacy"]),
                        ("commit kills, fixed (20 bases)", ["--schedules", "20", "--explore", "commit-kills"]),
                        ("commit kills, fixed, `--faults exec=0.3,crash=0.2,pid-reuse`",
                         ["--schedules", "20", "--explore", "commit-kills", "--faults", "exec=0.3,crash=0.2,pid-reuse"])]:
        for threads in ("1", "0"):
            j = run_json(sim, ["--seed", str(SEED), "--threads", threads, *args])
            sp_rows.append(f"| {label} | {j['threads']} | {j['schedules_explored']:,} | {j['kills']:,} | "
                           f"{j['violations']:,} | {j['seconds']:.2f} | "
                           f"{j['schedules_explored'] / max(j['seconds'], 1e-9):,.0f} |")
    speed = "\n".join(sp_rows) + (f"\n\n(Generated by `python3 scripts/sim-figures.py` on {stamp}: "
                                  "`kugetsu-sim --seed 1` with the flags shown and `--threads 1`, then `--threads 0` "
                                  "(one per core), the six-task race.)")
    with open(doc) as f:
        text = f.read()
    text = replace_block(text, "designs", designs, doc)
    text = replace_block(text, "exhaustive", exhaustive, doc)
    text = replace_block(text, "shrink", shrink, doc)
    text = replace_block(text, "speed", speed, doc)
    with open(doc, "w") as f:
        f.write(text)
    print(designs + "\n\n" + exhaustive + "\n\n" + shrink + "\n\n" + speed)


if __name__ == "__main__":
    main()
