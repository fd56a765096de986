#!/usr/bin/env bash
# Scheduling from the command line: --priority orders the queue, groups hold their own caps
# (config group G cap N), --after waits for dependencies and fails with dependency_failed,
# pause/resume (queue-wide and per group), start --wait waits instead of exit 75 (and an
# interrupted one leaves nothing), status --group and the summary line; each new option's
# bad input is refused with 64 or 65 and changes nothing.
source "$(dirname "$0")/lib.sh"

snapshot() { json_get "sorted((t['id'], t['state'], t['attempts']) for t in j['tasks'])"; }
order() {   # the tasks in the order they started
    python3 -c 'import json,sys; print(" ".join(e["task_id"] for e in map(json.loads, open(sys.argv[1])) if e["type"]=="task_started"))' \
        "$KUGETSU_HOME/events.jsonl"
}

expect_rc 0 ku config cap 1

# --priority: higher first, equal in enqueue order; the daemon runs one at a time (cap 1).
for spec in "low:-3" "a:0" "high:5" "b:0" "top:5"; do
    expect_rc 0 ku enqueue --id "${spec%%:*}" --priority "${spec#*:}" -- true
done
expect_rc 0 ku daemon --once
within 10 state_is high completed
for _ in 1 2 3 4; do expect_rc 0 ku daemon --once; ku wait "$(order | awk '{print $NF}')" >/dev/null; done
[ "$(order)" = "high top a b low" ] || fail "started in the order: $(order)"
expect_rc 0 ku status --json
python3 -c 'import json,sys; j=json.load(open(sys.argv[1])); t={x["id"]:x for x in j["tasks"]}; assert t["high"]["priority"]==5 and t["low"]["priority"]==-3 and t["a"]["group"] is None, j' "$T/out" \
    || fail "priorities in status --json: $(cat "$T/out")"

# Bad input for each new option: a clear error, 64 or 65, nothing recorded.
before=$(snapshot)
expect_rc 64 ku enqueue --id x1 --priority high -- true
grep -q -- '--priority "high" is not a whole number in -1000000..1000000' "$T/err" || fail "bad priority said: $(cat "$T/err")"
expect_rc 64 ku enqueue --id x1 --priority 1000001 -- true
expect_rc 65 ku enqueue --id x1 --group 'g/1' -- true
grep -q -- '--group "g/1"' "$T/err" || fail "bad group said: $(cat "$T/err")"
[ "$(wc -l <"$T/err")" -eq 1 ] || fail "two lines: $(cat "$T/err")"
expect_rc 65 ku enqueue --id x1 --after nosuch -- true
grep -q 'no task "nosuch" (named by --after)' "$T/err" || fail "unknown dependency said: $(cat "$T/err")"
expect_rc 65 ku enqueue --id x1 --after x1 -- true
grep -q -- '--after "x1" names the task itself' "$T/err" || fail "self dependency said: $(cat "$T/err")"
expect_rc 65 ku enqueue --id x1 --after '../a' -- true
expect_rc 64 ku config group g1 cap 0
expect_rc 64 ku config group g1 cap many
expect_rc 64 ku config group g1 size 2
expect_rc 64 ku config group -g cap 2
expect_rc 65 ku config group 'a b' cap 2
grep -q 'group "a b": invalid group name' "$T/err" || fail "bad group name said: $(cat "$T/err")"
expect_rc 65 ku pause --group 'a b'
expect_rc 65 ku status --group 'a/b'
expect_rc 64 ku status --state sleeping
[ "$(snapshot)" = "$before" ] || fail "refused input changed the queue: $before -> $(snapshot)"
expect_rc 0 ku config
! grep -q group "$T/out" || fail "a refused config group was recorded: $(cat "$T/out")"

# Groups: gpu has a cap of 1 within HOME's cap of 3; the other tasks take the other slots.
expect_rc 0 ku config cap 3
expect_rc 0 ku config group gpu cap 1
[ "$(cat "$T/out")" = "group gpu cap 1" ] || fail "config group printed: $(cat "$T/out")"
open_fifos
agent=("$PROBE" "$T/counter" --ready "$T/ready" --hold "$T/hold")
for i in 1 2 3; do expect_rc 0 ku enqueue --id "g$i" --group gpu --priority 9 -- "${agent[@]}"; done
expect_rc 0 ku enqueue --id c1 --group cpu -- "${agent[@]}"
expect_rc 0 ku enqueue --id n1 -- "${agent[@]}"
expect_rc 0 ku daemon --once
await_ready 3
[ "$(json_get "sorted(t['id'] for t in j['tasks'] if t['state']=='running')")" = "['c1', 'g1', 'n1']" ] \
    || fail "running: $(json_get "sorted(t['id'] for t in j['tasks'] if t['state']=='running')")"
expect_rc 0 ku status
grep -q '^groups (live/cap): cpu 1/-, gpu 1/1$' "$T/out" || fail "status groups line: $(cat "$T/out")"
grep -q 'GROUP' "$T/out" && grep -q 'PRI' "$T/out" || fail "status columns: $(head -5 "$T/out")"
expect_rc 0 ku status --group gpu --state pending
[ "$(grep -c '^g[23] ' "$T/out")" = 2 ] && ! grep -q '^c1 ' "$T/out" || fail "status --group gpu --state pending: $(cat "$T/out")"
expect_rc 0 ku status --json --group gpu
python3 -c 'import json,sys; j=json.load(open(sys.argv[1])); g=j["groups"]["gpu"]; assert (g["cap"],g["live"],g["pending"],g["paused"])==(1,1,2,False), g; assert [t["id"] for t in j["tasks"]]==["g1","g2","g3"]' "$T/out" \
    || fail "status --json groups: $(cat "$T/out")"
# start obeys the group's cap: exit 75 naming the group, nothing recorded.
expect_rc 75 ku start --id g9 --group gpu -- true
grep -q 'group "gpu" has its cap of 1 live; nothing was started or recorded' "$T/err" || fail "start in a full group said: $(cat "$T/err")"
expect_rc 65 ku status g9

# pause: nothing starts (daemon or start), running agents go on; resume lets them start.
expect_rc 0 ku pause
[ "$(cat "$T/out")" = "queue paused" ] || fail "pause printed: $(cat "$T/out")"
expect_rc 75 ku start --id p1 -- true
grep -q 'the queue is paused (kugetsu resume); nothing was started or recorded' "$T/err" || fail "start while paused said: $(cat "$T/err")"
expect_rc 0 ku status
grep -q 'the queue is PAUSED' "$T/out" || fail "status while paused: $(sed -n 3p "$T/out")"
release_agents
ku wait c1 n1 g1 >/dev/null
expect_rc 0 ku daemon --once
[ "$(json_get "sum(t['state']=='running' for t in j['tasks'])")" = 0 ] || fail "a task started while paused"
expect_rc 0 ku resume
expect_rc 0 ku pause --group gpu
[ "$(cat "$T/out")" = "group gpu paused" ] || fail "pause --group printed: $(cat "$T/out")"
expect_rc 0 ku daemon --once
[ "$(state g2)" = pending ] || fail "g2 started while its group was paused: $(state g2)"
expect_rc 0 ku config
grep -q '^group gpu cap 1 paused$' "$T/out" || fail "config with a paused group: $(cat "$T/out")"
expect_rc 0 ku resume --group gpu
# (the agents now exit at once: the hold FIFO's writer is closed)
expect_rc 0 ku daemon --once
ku wait g2 >/dev/null
expect_rc 0 ku daemon --once
ku wait g3 >/dev/null || fail "g3 did not run after resume"
expect_rc 0 ku config group gpu cap none
[ "$(cat "$T/out")" = "group gpu cap none" ] || fail "config group cap none printed: $(cat "$T/out")"

# --after: waits, runs after its dependencies completed, fails with dependency_failed.
expect_rc 0 ku enqueue --id dep-ok -- sh -c 'sleep 0.2'
expect_rc 0 ku enqueue --id dep-bad -- sh -c 'exit 4'
expect_rc 0 ku enqueue --id child --after dep-ok -- sh -c true --after-the-separator
expect_rc 0 ku enqueue --id orphan --after dep-ok,dep-bad -- true
expect_rc 0 ku enqueue --id grandchild --after orphan -- true
[ "$(state child)" = waiting ] && [ "$(state grandchild)" = waiting ] || fail "child $(state child), grandchild $(state grandchild)"
expect_rc 0 ku status child
grep -q '^    after: dep-ok$' "$T/out" || fail "status of a waiting task: $(cat "$T/out")"
ku_bg daemon
expect_rc 126 ku wait child orphan grandchild   # orphan never started
[ "$(state child)" = completed ] || fail "child ended $(state child)"
for t in orphan grandchild; do
    [ "$(state $t)" = error ] || fail "$t ended $(state $t)"
    [ "$(json_get "next(t['attempts'] for t in j['tasks'] if t['id']=='$t')")" = 0 ] || fail "$t made attempts"
done
[ "$(events_of task_error orphan)" = 1 ] || fail "orphan: $(events_of task_error orphan) task_error events"
grep '"task_id":"orphan"' "$KUGETSU_HOME/events.jsonl" | grep -q '"reason":"dependency_failed"' || fail "no dependency_failed event for orphan"
grep -q 'kugetsu: task orphan: error: dependency_failed: dependency "dep-bad" (error) did not complete' "$T/err" \
    || fail "wait said: $(cat "$T/err")"
python3 - "$KUGETSU_HOME/events.jsonl" <<'PY' || fail "child started before dep-ok ended"
import json, sys
ev = [json.loads(l) for l in open(sys.argv[1])]
end = next(e["seq"] for e in ev if e["task_id"] == "dep-ok" and e["type"] == "task_completed")
start = next(e["seq"] for e in ev if e["task_id"] == "child" and e["type"] == "task_started")
assert start > end, (start, end)
PY

# start --wait: waits for a free slot instead of exit 75, then starts; interrupted, it
# leaves nothing behind.
expect_rc 0 ku config cap 1
expect_rc 0 ku start --id blocker -- sleep 1
expect_rc 0 ku start --wait --id waiter -- true
grep -q '^waiter [0-9]*$' "$T/out" || fail "start --wait printed: $(cat "$T/out")"
[ "$(state blocker)" = completed ] || fail "start --wait started before the slot was free: blocker $(state blocker)"
expect_rc 0 ku start --id blocker2 -- sleep 30
"$KUGETSU" start --wait --id never -- true 3>&- 4>&- 2>"$T/wait.err" &
waiter=$!
sleep 0.5
kill -INT "$waiter"
rc=0; wait "$waiter" || rc=$?
[ "$rc" -eq 130 ] || fail "start --wait interrupted exited $rc: $(cat "$T/wait.err")"
expect_rc 65 ku status never
expect_rc 0 ku cancel blocker2
# --retries: a non-zero exit runs the task again after its backoff (doubling), its runs kept;
# the daemon wakes for the backoff's end by itself.
expect_rc 0 ku config cap 3
before=$(snapshot)
expect_rc 64 ku enqueue --id r0 --retries -1 -- true
expect_rc 64 ku enqueue --id r0 --retries 101 -- true
grep -q -- '--retries "101" is not a whole number in 0..100' "$T/err" || fail "bad --retries said: $(cat "$T/err")"
expect_rc 64 ku enqueue --id r0 --retries 2 --backoff soon -- true
expect_rc 64 ku enqueue --id r0 --backoff 1 -- true
grep -q -- '--backoff needs --retries' "$T/err" || fail "--backoff alone said: $(cat "$T/err")"
expect_rc 64 ku enqueue --id r0 --retries 1 --backoff 90000 -- true
[ "$(snapshot)" = "$before" ] || fail "refused --retries/--backoff changed the queue"
expect_rc 0 ku enqueue --id flaky --retries 3 --backoff 0.2 -- sh -c 'echo x >>"$0"; [ "$(wc -l <"$0")" -ge 3 ]' "$T/flaky.count"
expect_rc 0 ku wait flaky
[ "$(wc -l <"$T/flaky.count")" = 3 ] || fail "flaky ran $(wc -l <"$T/flaky.count") times"
[ "$(json_get "next((t['run'], t['retried'], [r['exit_code'] for r in t['runs']]) for t in j['tasks'] if t['id']=='flaky')")" = "(3, 2, [1, 1])" ] \
    || fail "flaky in status --json: $(json_get "[t for t in j['tasks'] if t['id']=='flaky']")"
[ "$(grep '"task_id":"flaky"' "$KUGETSU_HOME/events.jsonl" | grep -c '"reason":"retry"')" = 2 ] || fail "retry events of flaky"
python3 - "$KUGETSU_HOME/events.jsonl" <<'PY' || fail "the retries did not wait out their backoff (0.2 s, then 0.4 s)"
import json, sys, datetime
ev = [json.loads(l) for l in open(sys.argv[1]) if '"flaky"' in l]
t = lambda e: datetime.datetime.fromisoformat(e["timestamp"].replace("Z", "+00:00")).timestamp()
retry = [t(e) for e in ev if e.get("reason") == "retry"]
starts = [t(e) for e in ev if e["type"] == "task_started"]
assert len(starts) == 3 and starts[1] - retry[0] >= 0.2 and starts[2] - retry[1] >= 0.4, (retry, starts)
PY
expect_rc 0 ku enqueue --id doomed --retries 1 --backoff 0 -- sh -c 'exit 7'
expect_rc 7 ku wait doomed
[ "$(json_get "next((t['state'], t['run'], t['exit_code']) for t in j['tasks'] if t['id']=='doomed')")" = "('error', 2, 7)" ] \
    || fail "doomed: $(json_get "[t for t in j['tasks'] if t['id']=='doomed']")"
# timeline: the SVG read back: one bar per run (retries and all), no lane past the cap, the
# failures and the timeout marked, every bar inside its run's recorded times.
export KUGETSU_HOME="$T/tl"
expect_rc 0 ku config cap 2
expect_rc 0 ku config group solo cap 1
for i in 1 2 3 4 5 6; do
    expect_rc 0 ku enqueue --id "tl$i" --priority $((i % 3)) $([ $((i % 2)) = 0 ] && echo --group solo) -- sh -c "sleep 0.$i; exit $((i == 5))"
done
expect_rc 0 ku enqueue --id tl-slow --timeout 0.3 -- sleep 30
expect_rc 0 ku enqueue --id tl-retry --retries 1 --backoff 0 -- sh -c 'exit 3'
expect_rc 0 ku enqueue --id tl-after --after tl1 -- true
ku_bg daemon
expect_rc 124 ku wait tl-slow
ku wait >/dev/null || true
expect_rc 64 ku timeline
expect_rc 64 ku timeline -o "$T/x.svg" --since yesterday
expect_rc 0 ku timeline -o "$T/tl.svg"
grep -q "^$T/tl.svg: 10 runs$" "$T/out" || fail "timeline said: $(cat "$T/out")"
ku status --json >"$T/tl.json"
python3 - "$T/tl.svg" "$T/tl.json" <<'PY' || fail "the timeline does not match the history"
import json, sys, xml.etree.ElementTree as ET
svg = ET.parse(sys.argv[1]).getroot()
j = json.load(open(sys.argv[2]))
ns = "{http://www.w3.org/2000/svg}"
bars = [r for r in svg.iter(ns + "rect") if r.get("class", "").startswith("run ")]
cap = int(svg.get("data-cap"))
assert cap == j["cap"] == 2, (svg.get("data-cap"), j["cap"])
lanes = {int(b.get("data-lane")) for b in bars}
assert max(lanes) < cap and int(svg.get("data-lanes")) <= cap, lanes   # never past the cap
# every run that started is a bar, and no other
want = set()
for t in j["tasks"]:
    first = t["run"] - len(t["runs"])
    want |= {(t["id"], first + k) for k, r in enumerate(t["runs"]) if r["started_at"]}
    if t["started_at"]:
        want.add((t["id"], t["run"]))
got = {(b.get("data-task"), int(b.get("data-run"))) for b in bars}
assert got == want and len(bars) == len(want), (sorted(got ^ want), len(bars))
kind = {(b.get("data-task"), int(b.get("data-run"))): b.get("class").split()[1] for b in bars}
assert kind[("tl-slow", 1)] == "timeout", kind
assert kind[("tl5", 1)] == "error" and kind[("tl-retry", 1)] == "error" and kind[("tl-retry", 2)] == "error", kind
assert kind[("tl1", 1)] == "completed", kind
marks = [t for t in svg.iter(ns + "text") if t.get("class") == "mark"]
assert len(marks) == sum(k in ("error", "timeout") for k in kind.values()), len(marks)
# two bars of one lane never overlap
by_lane = {}
for b in bars:
    by_lane.setdefault(b.get("data-lane"), []).append((b.get("data-start"), b.get("data-end")))
for spans in by_lane.values():
    spans.sort()
    assert all(a[1] <= b[0] for a, b in zip(spans, spans[1:])), spans
PY
expect_rc 0 ku timeline -o - --since 1h
grep -q '<svg' "$T/out" || fail "timeline -o - wrote no SVG"
echo "scheduling: ok"
