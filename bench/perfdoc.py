#!/usr/bin/env python3
"""bench/perfdoc.py: rewrites the generated parts of docs/performance.md from bench results.

    python3 bench/perfdoc.py DOC OUT_DIR
    python3 bench/perfdoc.py micro BENCHMARK_JSON OUT_DIR   # kugetsu-micro-bench's
                                                           # --benchmark_out -> OUT_DIR/micro.md

DOC holds blocks

    <!-- bench:NAME -->
    ...generated...
    <!-- /bench:NAME -->

A block NAME is replaced by OUT_DIR/NAME.md when that file exists (compare.sh writes
compare.md, handoff.sh refill.md, scale.sh scale.md), and is left alone otherwise. The block
"goals" is rebuilt from the "goals" lists of OUT_DIR/{compare,refill,scale}.json: one row per
goal, with its target, the measured figure and the ratio to the target; a source with no JSON
yet gets a row saying which script to run. Everything outside the blocks is kept as written.
"""
import json
import os
import re
import sys

SOURCES = [("compare", "bash bench/compare.sh"), ("refill", "bash bench/handoff.sh -c 3"), ("scale", "bash bench/scale.sh")]


def goals_block(out_dir):
    rows = ["| goal | target | measured | ratio to target | met | from |", "|---|---|---|---:|---|---|"]
    for name, script in SOURCES:
        path = os.path.join(out_dir, name + ".json")
        if not os.path.exists(path):
            rows.append(f"| ({name} goals) | | not measured yet | | | `{script}` |")
            continue
        with open(path) as f:
            data = json.load(f)
        quick = " (quick run)" if data.get("quick") else ""
        for g in data.get("goals", []):
            met = "yes" if g["met"] else "**no**"
            rows.append(f"| {g['goal']} | {g['target']} | {g['measured']} | {g['ratio']:.2f} | {met} | `{script}`{quick} |")
    return "\n".join(rows)


def micro_md(json_path, out_dir):
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
    with open(os.path.join(out_dir, "micro.md"), "w") as f:
        f.write("\n".join(rows) + "\n")
    print(f"perfdoc: written {out_dir}/micro.md")


def main():
    if len(sys.argv) == 4 and sys.argv[1] == "micro":
        return micro_md(sys.argv[2], sys.argv[3])
    if len(sys.argv) != 3:
        sys.exit("usage: perfdoc.py DOC OUT_DIR | perfdoc.py micro BENCHMARK_JSON OUT_DIR")
    doc, out_dir = sys.argv[1:]
    with open(doc) as f:
        text = f.read()

    def replace(m):
        name = m.group(1)
        if name == "goals":
            body = goals_block(out_dir)
        else:
            path = os.path.join(out_dir, name + ".md")
            if not os.path.exists(path):
                return m.group(0)
            with open(path) as f:
                body = f.read().strip("\n")
        return f"<!-- bench:{name} -->\n{body}\n<!-- /bench:{name} -->"

    new = re.sub(r"<!-- bench:([a-z-]+) -->\n.*?<!-- /bench:\1 -->", replace, text, flags=re.S)
    if new != text:
        with open(doc, "w") as f:
            f.write(new)
        print(f"perfdoc: updated {doc}")
    else:
        print(f"perfdoc: {doc} unchanged")


if __name__ == "__main__":
    main()
