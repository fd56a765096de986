#!/usr/bin/env python3
"""bench/perfdoc.py: rewrites the generated parts of docs/performance.md from bench results.

    python3 bench/perfdoc.py DOC OUT_DIR
    python3 bench/perfdoc.py micro BENCHMARK_JSON OUT_DIR [NAME]   # kugetsu-micro-bench's
                                       # --benchmark_out -> OUT_DIR/NAME.md (default micro.md;
                                       # micro-0.1 for kugetsu 0.1's micro-bench)

DOC holds blocks

    <!-- bench:NAME -->
    ...generated...
    <!-- /bench:NAME -->

A block NAME is replaced by OUT_DIR/NAME.md when that file exists (compare.sh writes
compare.md, handoff.sh refill.md, scale.sh scale.md, `perfdoc.py micro` micro.md), and is left
alone otherwise. The block "goals" is rebuilt from the "goals" lists of
OUT_DIR/{compare,refill,scale}.json: one row per goal, with its target, the figure of kugetsu
0.1 when the script measured it ("before"), the measured figure ("after") and the ratio of the
latter to the target; a source with no JSON yet gets a row saying which script to run. The
block "runs" says which run of each script the tables come from (its date, size and whether it
was a --quick run). Everything outside the blocks is kept as written.
"""
import datetime
import json
import os
import re
import sys

SOURCES = [("compare", "bash bench/compare.sh"), ("refill", "bash bench/handoff.sh -c 3"), ("scale", "bash bench/scale.sh")]


def goals_block(out_dir):
    rows = ["| goal | target | before: kugetsu 0.1 | after: this build | ratio to target | met | from |",
            "|---|---|---|---|---:|---|---|"]
    for name, script in SOURCES:
        path = os.path.join(out_dir, name + ".json")
        if not os.path.exists(path):
            rows.append(f"| ({name} goals) | | | not measured yet | | | `{script}` |")
            continue
        with open(path) as f:
            data = json.load(f)
        quick = " (quick run)" if data.get("quick") else ""
        for g in data.get("goals", []):
            met = "yes" if g["met"] else "**no**"
            rows.append(f"| {g['goal']} | {g['target']} | {g.get('before') or 'not measured'} | {g['measured']} | "
                        f"{g['ratio']:.2f} | {met} | `{script}`{quick} |")
    return "\n".join(rows)


def runs_block(out_dir):
    """One line per script: when its results were written and with what size."""
    rows = []
    for name, script in SOURCES + [("breakdown", "bash bench/breakdown.sh"), ("micro-raw", "kugetsu-micro-bench"),
                                   ("micro-0.1-raw", "kugetsu 0.1's kugetsu-micro-bench")]:
        path = os.path.join(out_dir, name + ".json")
        if not os.path.exists(path):
            rows.append(f"- `{script}`: not run yet")
            continue
        with open(path) as f:
            data = json.load(f)
        when = datetime.datetime.fromtimestamp(os.path.getmtime(path)).strftime("%Y-%m-%d %H:%M")
        if name == "compare":
            size = f"-n {data.get('M')} -r {data.get('rounds')}"
        elif name == "refill":
            size = f"-n {data.get('n')} -c {data.get('cap')}"
        elif name == "breakdown":
            size = f"-n {data.get('tasks')}"
            data.setdefault("home", "disk")
        elif name.startswith("micro"):
            bms = data.get("benchmarks", [])
            size = f"{len(bms)} benchmarks"
            data = {"home": data.get("context", {}).get("kugetsu.disk_dir", "?")}
        else:
            size = "--sizes " + ",".join(str(x) for x in data.get("sizes", []))
        quick = ", **--quick**" if data.get("quick") else ""
        rows.append(f"- `{script}`: {when}, {size}{quick}; HOME on {data.get('home', '?')}")
    return "\n".join(rows)


def micro_md(json_path, out_dir, block="micro"):
    """A table of a kugetsu-micro-bench JSON report (Google Benchmark's --benchmark_out)."""
    with open(json_path) as f:
        data = json.load(f)
    ctx = data.get("context", {})
    scale = {"ns": 1, "us": 1e3, "ms": 1e6, "s": 1e9}
    def fmt(ns):
        for unit, div in (("s", 1e9), ("ms", 1e6), ("µs", 1e3)):
            if ns >= div:
                return f"{ns / div:.3g} {unit}"
        return f"{ns:.3g} ns"
    rows = [f"{ctx.get('date', '')}, {ctx.get('num_cpus', '?')} CPUs, load average "
            f"{', '.join(f'{x:.1f}' for x in ctx.get('load_avg', []))}; disk: {ctx.get('kugetsu.disk_dir', '?')}. "
            "Wall time per iteration.", "",
            "| benchmark | time | iterations | on |", "|---|---:|---:|---|"]
    for b in data.get("benchmarks", []):
        if b.get("run_type", "iteration") != "iteration":
            continue
        name = b["name"].replace("/real_time", "")
        if b.get("error_occurred"):
            rows.append(f"| `{name}` | error: {b.get('error_message', '')} | | |")
            continue
        ns = b["real_time"] * scale[b.get("time_unit", "ns")]
        label = b.get("label", "").split(",")[0]
        rows.append(f"| `{name}` | {fmt(ns)} | {b['iterations']} | {label} |")
    with open(os.path.join(out_dir, block + ".md"), "w") as f:
        f.write("\n".join(rows) + "\n")
    print(f"perfdoc: written {out_dir}/{block}.md")


def main():
    if len(sys.argv) in (4, 5) and sys.argv[1] == "micro":
        return micro_md(*sys.argv[2:])
    if len(sys.argv) != 3:
        sys.exit("usage: perfdoc.py DOC OUT_DIR | perfdoc.py micro BENCHMARK_JSON OUT_DIR [NAME]")
    doc, out_dir = sys.argv[1:]
    with open(doc) as f:
        text = f.read()

    def replace(m):
        name = m.group(1)
        if name == "goals":
            body = goals_block(out_dir)
        elif name == "runs":
            body = runs_block(out_dir)
        else:
            path = os.path.join(out_dir, name + ".md")
            if not os.path.exists(path):
                return m.group(0)
            with open(path) as f:
                body = f.read().strip("\n")
        return f"<!-- bench:{name} -->\n{body}\n<!-- /bench:{name} -->"

    new = re.sub(r"<!-- bench:([a-z0-9.-]+) -->\n.*?<!-- /bench:\1 -->", replace, text, flags=re.S)
    if new != text:
        with open(doc, "w") as f:
            f.write(new)
        print(f"perfdoc: updated {doc}")
    else:
        print(f"perfdoc: {doc} unchanged")


if __name__ == "__main__":
    main()
