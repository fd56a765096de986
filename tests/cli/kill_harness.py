#!/usr/bin/env python3
# The workload, the SIGKILL injector and the checker behind kill_harness.sh (read its header
# first). Two subcommands:
#
#   kill_harness.py run   DIR HOME KUGETSU PROBE --kills N --tasks M --seed S [--no-lock]
#       Runs M probe tasks over HOME while it SIGKILLs N kugetsu processes, then stops its
#       daemons and returns once every process it started has exited. Writes DIR/ids (the
#       task ids), DIR/kills.jsonl (one line per kill) and DIR/anomalies (unexpected exit
#       statuses of the commands it ran).
#   kill_harness.py check DIR HOME --cap C --max-attempts A --seed S --wait-rc RC --wall W
#                         [--no-lock] [--strict]
#       After a fresh daemon has finished the rest (kill_harness.sh runs it): checks the cap,
#       lost and doubled tasks and the end state of each task against the kills that touched
#       it, prints one summary line and exits 0 (no violation; with --no-lock: a cap
#       violation was seen) or 1.
#
# Every random choice comes from the seed, in three independent streams (workload, daemon
# phases, kills), so that a change in one (a kill finds two victims instead of three) does
# not shift the others. Process timing is not seeded: a seed reproduces the plan, and a run
# that found a bug usually finds it again.
import argparse
import collections
import ctypes
import json
import os
import random
import select
import signal
import subprocess
import sys
import time

KINDS = ("start", "daemon", "supervisor", "hook")
FINAL = ("completed", "error", "cancelled")
EXIT_UNKNOWN = "the agent ended and its exit code is unknown"


def read_stat(pid):
    """(comm, state, ppid, session, start time) of /proc/PID/stat; OSError if gone."""
    with open(f"/proc/{pid}/stat", "rb") as f:
        s = f.read().decode("latin-1")
    r = s.rindex(")")
    fields = s[r + 2:].split()
    # fields[0] is field 3 (state): ppid 4, pgrp 5, session 6, start time 22.
    return s[s.index("(") + 1:r], fields[0], int(fields[1]), int(fields[3]), int(fields[19])


def read_record(home, task):
    """HOME/queue/<task>.json, read without the lock (records are renamed into place); None
    if missing or unreadable."""
    try:
        with open(os.path.join(home, "queue", task + ".json")) as f:
            return json.load(f)
    except (OSError, ValueError):
        return None


def read_queue(home):
    """{task id: record} of HOME/queue."""
    out = {}
    q = os.path.join(home, "queue")
    try:
        names = os.listdir(q)
    except FileNotFoundError:
        return out
    for name in names:
        if name.startswith(".") or not name.endswith(".json"):
            continue
        rec = read_record(home, name[:-5])
        if rec and "id" in rec:
            out[rec["id"]] = rec
    return out


# ---- run ----------------------------------------------------------------------------------

class Child:
    """A kugetsu process started by the driver: start, enqueue or daemon."""

    def __init__(self, kind, task, popen, start_time, after_kill=False):
        self.kind, self.task, self.popen, self.start_time = kind, task, popen, start_time
        self.after_kill = after_kill   # an enqueue that follows a killed start: 65 is fine
        self.killed = False            # SIGKILLed by the harness
        self.stopping = False          # a daemon sent SIGTERM (a phase change, not a kill)


class Driver:
    def __init__(self, a):
        self.a = a
        self.dir, self.home = a.dir, a.home
        self.kugetsu = os.path.realpath(a.kugetsu)
        self.comms = {os.path.basename(self.kugetsu)[:15], "exe"}   # the hook runs /proc/self/exe
        self.logs = os.path.join(self.home, "logs") + "/"
        self.work = random.Random(f"{a.seed}/work")
        self.phase = random.Random(f"{a.seed}/phase")
        self.kill_rng = random.Random(f"{a.seed}/kill")
        self.ids = [f"k{i:04d}" for i in range(1, a.tasks + 1)]
        self.children = []
        self.kills = []
        self.anomalies = []
        self.err = open(os.path.join(self.dir, "commands.err"), "ab")
        self.t0 = time.monotonic()
        self.me = os.getpid()
        # PR_SET_CHILD_SUBREAPER: orphaned supervisors and agents become the driver's
        # children, not init's, so that scan() finds them without reading all of /proc.
        libc = ctypes.CDLL(None, use_errno=True)
        if libc.prctl(36, 1, 0, 0, 0) != 0:
            raise OSError(ctypes.get_errno(), "prctl(PR_SET_CHILD_SUBREAPER)")
        self.env = dict(os.environ)
        self.env.pop("KUGETSU_TEST_BARRIER", None)

    # -- processes

    def launch(self, kind, task, argv, env=None, after_kill=False):
        p = subprocess.Popen([self.kugetsu] + argv, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                             stderr=self.err, env=env or self.env, close_fds=True)
        try:
            start = read_stat(p.pid)[4]
        except OSError:
            start = 0
        c = Child(kind, task, p, start, after_kill)
        self.children.append(c)
        return c

    def agent(self, task_sleep_ms, extra=()):
        d = self.dir
        return ["--", self.a.probe, f"{d}/counter", "--sleep", str(task_sleep_ms),
                "--record-start", f"{d}/runs", "--record", f"{d}/ends", *extra]

    def submit(self, task):
        ms = self.work.randint(10, 120)
        self.sleep_of[task] = ms
        if self.work.random() < 0.7:
            self.launch("start", task, ["start", "--id", task] + self.agent(ms))
        else:
            self.launch("enqueue", task, ["enqueue", "--id", task] + self.agent(ms))

    def reap_children(self):
        self.reap_orphans()
        for c in list(self.children):
            rc = c.popen.poll()
            if rc is None:
                continue
            self.children.remove(c)
            self.ended(c, rc)

    def ended(self, c, rc):
        if c.kind == "start":
            if rc == 0:
                return
            if rc == 75 or c.killed:   # no free slot, or killed: queue it (it may exist: 65)
                self.launch("enqueue", c.task, ["enqueue", "--id", c.task] + self.agent(self.sleep_of[c.task]),
                            after_kill=c.killed)
                return
            if rc == 1:   # every attempt failed: the checker judges the task's end
                return
        elif c.kind == "enqueue":
            if rc == 0 or (rc == 65 and c.after_kill):
                return
        elif c.kind == "daemon":
            # Stopped by SIGTERM: it exits 0, or dies of the signal if it came before the
            # daemon took its signals (slow starts, e.g. under ASan). Either is a clean stop.
            if c.killed or (c.stopping and rc in (0, -signal.SIGTERM)):
                return
        self.anomalies.append(f"{c.kind} {c.task or ''} exited {rc}")

    def live(self, kind):
        return [c for c in self.children if c.kind == kind and not c.killed and not c.stopping
                and c.popen.poll() is None]

    def scan(self):
        """Supervisors and on-exit hooks of this HOME: (kind, task, pid, start time). The
        driver is a child subreaper, so every supervisor is a child of a start or daemon it
        runs or, once that has died, its own: only those few processes are looked at."""
        mine = {c.popen.pid for c in self.children}
        pids = set(self.children_of(self.me))
        for c in self.children:
            pids.update(self.children_of(c.popen.pid))
        found = []
        for pid in pids - mine:
            try:
                comm, state, _ppid, sid, start = read_stat(pid)
                # Supervisors call setsid() first: their session is their own; agents, held
                # before exec, are in their supervisor's session, so they never match.
                if sid != pid or state in "ZX" or comm not in self.comms:
                    continue
                if os.readlink(f"/proc/{pid}/exe") != self.kugetsu:
                    continue
                # Descriptor 1 is the task's log once the supervisor has set itself up; the
                # hook (exec'd by the supervisor) keeps it.
                log = os.readlink(f"/proc/{pid}/fd/1")
                if not (log.startswith(self.logs) and log.endswith(".log")):
                    continue
                with open(f"/proc/{pid}/cmdline", "rb") as f:
                    argv = f.read().split(b"\0")
            except (OSError, ValueError, IndexError):
                continue
            found.append(("hook" if b"reap" in argv else "supervisor", log[len(self.logs):-4], pid, start))
        return sorted(found, key=lambda v: (v[1], v[0]))

    def reap_orphans(self):
        """Reaps the orphans the driver adopted as a subreaper (supervisors whose start or
        daemon died, agents whose supervisor died); never its own commands (Popen does)."""
        mine = {c.popen.pid for c in self.children}
        for pid in self.children_of(self.me):
            if pid in mine:
                continue
            try:
                os.waitpid(pid, os.WNOHANG)
            except ChildProcessError:
                pass

    def candidates(self, kind):
        if kind in ("start", "daemon"):
            return [("child", c) for c in self.live(kind)]
        return [("proc", v) for v in self.scan() if v[0] == kind]

    def owned_by(self, pid, start):
        """Tasks claimed (notified) by the frozen process pid: those whose attempt its death
        may cut."""
        out = []
        for tid in self.open_ids():
            rec = read_record(self.home, tid) or {}
            o = rec.get("owner")
            if rec.get("state") == "notified" and o and o.get("pid") == pid and o.get("start_time") == start:
                out.append(tid)
        return sorted(out)

    def open_ids(self):
        """Tasks submitted (or in the first wave) and not seen final."""
        return [t for t in self.wave + self.ids[:self.submitted] if t not in self.final]

    def children_of(self, pid):
        try:
            with open(f"/proc/{pid}/task/{pid}/children") as f:
                return [int(x) for x in f.read().split()]
        except (OSError, ValueError):
            return []

    def holds_agent(self, sup):
        """The supervisor sup has an agent that is held, not yet exec'd (it still runs kugetsu)."""
        for pid in self.children_of(sup):
            try:
                if read_stat(pid)[0] in self.comms:
                    return True
            except OSError:
                pass
        return False

    def in_spawn(self, kind, cand):
        """The victim is inside an attempt's spawn window: between the fork of the supervisor
        and the agent's exec (for a start or daemon: one of its supervisors holds an agent)."""
        if cand[0] == "child":
            return any(self.holds_agent(s) for s in self.children_of(cand[1].popen.pid))
        return self.holds_agent(cand[1][2])

    def try_kill(self):
        """One step of a due kill; never blocks the workload. The first step draws a kind,
        and for a start, daemon or supervisor whether to aim at the spawn window (an agent
        held before exec: a few milliseconds per attempt). It waits for such a victim for up
        to 1 s, then for any victim of that kind up to 0.5 s (2 s for a hook), then takes
        any kind that has a victim. True once killed."""
        now = time.monotonic()
        if self.seek is None:
            kind = self.kill_rng.choice(KINDS)
            focus = kind != "hook" and self.kill_rng.random() < 0.5
            # Hooks run only while no daemon holds daemon.lock, and live for milliseconds:
            # the daemons are stopped while the harness looks for one.
            self.seek = {"kind": kind, "focus": focus, "focus_until": now + (1.0 if focus else 0),
                         "delay": self.kill_rng.uniform(0, 0.002 if focus else 0.02),
                         "pick": self.kill_rng.random(),
                         "give_up": now + (1.0 if focus else 0) + (2.0 if kind == "hook" else 0.5)}
        sk = self.seek
        kind, pick, delay = sk["kind"], sk["pick"], sk["delay"]
        cands = self.candidates(kind)
        window = "any"
        if now <= sk["focus_until"]:
            cands = [c for c in cands if self.in_spawn(kind, c)]
            window = "spawn"
        elif not cands and now > sk["give_up"]:
            avail = [k for k in KINDS if k != kind and self.candidates(k)]
            if avail:
                kind = avail[int(pick * len(avail))]
                cands = self.candidates(kind)
        if not cands:
            return False
        kind_cand = cands[int(pick * len(cands))]
        time.sleep(delay)   # a random moment in the victim's life
        c = kind_cand[1] if kind_cand[0] == "child" else None
        if c:
            pid, start, task = c.popen.pid, c.start_time, c.task
            if c.popen.poll() is not None:
                return False   # it ended meanwhile: try again
        else:
            _, task, pid, start = kind_cand[1]
        entry = {"i": len(self.kills) + 1, "kind": kind, "wanted": sk["kind"], "aimed": window,
                 "ms": int((time.monotonic() - self.t0) * 1000), "pid": pid, "task": task,
                 "daemons": len(self.live("daemon")), "starts": len(self.live("start"))}
        # The pidfd pins the process: check that it is still the one chosen, freeze it with
        # SIGSTOP (that is the moment of the kill), see what it holds, then SIGKILL it. Frozen,
        # it keeps the cap lock if it has it, so no other process changes what it was doing
        # (a reap adopting its half-started agent) before the harness has looked.
        try:
            fd = os.pidfd_open(pid)
        except OSError:
            return False
        stopped = killed = False
        try:
            st = read_stat(pid)
            if st[4] != start or st[1] in "ZX":
                return False
            signal.pidfd_send_signal(fd, signal.SIGSTOP)
            stopped = True
            deadline = time.monotonic() + 5
            while read_stat(pid)[1] not in "Tt":
                if read_stat(pid)[1] in "ZX" or time.monotonic() > deadline:
                    return False   # it ended meanwhile: try again
                time.sleep(0.0005)
            entry["window"] = "spawn" if self.in_spawn(kind, kind_cand) else "other"
            # A start or daemon cuts the attempts of the tasks it holds claimed (notified).
            entry["owned"] = self.owned_by(pid, start) if c else []
            if c:
                c.killed = True
            signal.pidfd_send_signal(fd, signal.SIGKILL)
            killed = True
        except OSError:
            return False
        finally:
            if stopped and not killed:
                try:
                    signal.pidfd_send_signal(fd, signal.SIGCONT)
                except OSError:
                    pass
            os.close(fd)
        if c:
            c.popen.wait()
        self.kills.append(entry)
        self.seek = None
        return True

    def first_wave(self):
        """--no-lock: cap + 3 starts meet at the barrier between counting and spawning, and
        their agents are held until all are counted: the cap is exceeded whatever the timing."""
        n = self.a.cap + 3
        os.mkfifo(f"{self.dir}/ready")
        os.mkfifo(f"{self.dir}/hold")
        ready = os.open(f"{self.dir}/ready", os.O_RDWR)
        hold = os.open(f"{self.dir}/hold", os.O_RDWR)
        env = dict(self.env, KUGETSU_TEST_BARRIER=f"{self.dir}/barrier:{n}")
        for i in range(n):
            task = f"w{i + 1:02d}"
            self.wave.append(task)
            self.launch("start", task, ["start", "--id", task] +
                        self.agent(0, ["--ready", f"{self.dir}/ready", "--hold", f"{self.dir}/hold"]), env=env)
            self.sleep_of[task] = 0
        got = 0
        deadline = time.monotonic() + 60   # a hang guard only
        starts = list(self.children)
        while got < n and time.monotonic() < deadline:
            if select.select([ready], [], [], 1.0)[0]:
                got += len(os.read(ready, n - got))
            elif all(c.popen.poll() is not None for c in starts) and \
                    got >= sum(c.popen.returncode == 0 for c in starts):
                break   # a start found no slot after all (75): its agent will never be ready
        os.close(hold)   # releases the held agents
        os.close(ready)

    def run(self):
        a = self.a
        self.sleep_of = {}
        self.wave = []
        self.seek = None
        if a.no_lock:
            self.first_wave()
        n, m = a.kills, a.tasks
        # Kill i is due once floor(0.9*i*M/(N+1)) tasks are final, after a random delay: the
        # kills are spread over the run (not its tail, where little is left to kill), and
        # every one of them happens.
        thresholds = [i * m * 9 // (10 * (n + 1)) for i in range(1, n + 1)]
        self.submitted = final = 0
        self.final = set()
        next_submit = next_scan = 0.0
        kill_at = None
        target, phase_end = 1, 0.0
        progress_at, progress = time.monotonic(), -1
        busy = 0
        while True:
            now = time.monotonic()
            self.reap_children()
            if now >= next_scan:
                # Only tasks submitted and not yet final are read: a final state never changes.
                busy = 0
                for t in self.open_ids():
                    rec = read_record(self.home, t)
                    if rec and rec["state"] in FINAL:
                        self.final.add(t)
                    elif rec and rec["state"] in ("notified", "running"):
                        busy += 1
                final = len(self.final) - len(self.final.intersection(self.wave))
                next_scan = now + 0.05
                if final + len(self.kills) != progress:
                    progress, progress_at = final + len(self.kills), now
                elif now - progress_at > a.stall:
                    self.anomalies.append(f"no task ended and no kill for {a.stall} s, with {final} of {m} "
                                          f"final and {len(self.kills)} kills: stopped")
                    break
            # Daemon phases: 0, 1 or 2 daemons for 0.3-2 s. With none, supervisors record ends
            # through their on-exit `kugetsu reap` (the hooks that can be killed).
            # A phase with no daemon ends early once nothing runs: only a daemon can go on.
            if now >= phase_end or (target == 0 and busy == 0 and self.submitted - final >= 8):
                target = self.phase.choice((0, 1, 1, 2))
                phase_end = now + self.phase.uniform(0.3, 2.0)
            if self.seek and self.seek["kind"] == "hook" and now <= self.seek["give_up"]:
                target = 0
            daemons = self.live("daemon")
            if len(daemons) < target:
                self.launch("daemon", None, ["daemon"])
            elif len(daemons) > target:
                daemons[0].stopping = True
                daemons[0].popen.send_signal(signal.SIGTERM)
            # Submissions: at most 4 commands in flight and 8 tasks not final, and none while
            # the kills lag (the next one was due 6 tasks ago; the work must not run out before
            # the kills do), unless a kill looks for a start, supervisor or hook: new work
            # brings those.
            inflight = sum(1 for c in self.children if c.kind in ("start", "enqueue"))
            lagging = len(self.kills) < n and final >= thresholds[len(self.kills)] + 6 and \
                not (self.seek and self.seek["kind"] != "daemon")
            if self.submitted < m and inflight < 4 and self.submitted - final < 8 and not lagging \
                    and now >= next_submit:
                self.submit(self.ids[self.submitted])
                self.submitted += 1
                next_submit = now + self.work.uniform(0, 0.05)
            if len(self.kills) < n and final >= thresholds[len(self.kills)]:
                if kill_at is None:
                    kill_at = now + self.kill_rng.uniform(0, 0.25)
                elif now >= kill_at and self.try_kill():
                    kill_at = None
            if self.submitted == m and len(self.kills) >= n:
                break
            time.sleep(0.005)
        # Let every command finish (the remaining tasks are left to the fresh daemon of the
        # check phase), and stop the daemons.
        for c in self.live("daemon"):
            c.stopping = True
            c.popen.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + 120   # a hang guard only
        while self.children and time.monotonic() < deadline:
            self.reap_children()
            time.sleep(0.01)
        for c in self.children:
            self.anomalies.append(f"{c.kind} {c.task or ''} still running after 120 s: killed")
            c.popen.kill()
            c.popen.wait()
        with open(os.path.join(self.dir, "ids"), "w") as f:
            f.write("".join(t + "\n" for t in self.wave + self.ids))
        with open(os.path.join(self.dir, "kills.jsonl"), "w") as f:
            f.write("".join(json.dumps(k, sort_keys=True) + "\n" for k in self.kills))
        with open(os.path.join(self.dir, "anomalies"), "w") as f:
            f.write("".join(x + "\n" for x in self.anomalies))

    def abort(self):
        for c in self.children:
            if c.popen.poll() is None:
                c.popen.kill()
                c.popen.wait()


def cmd_run(a):
    d = Driver(a)
    try:
        d.run()
    except BaseException:
        d.abort()
        raise
    return 0


# ---- check --------------------------------------------------------------------------------

def read_lines(path):
    try:
        with open(path) as f:
            return [line.rstrip("\n") for line in f if line.strip()]
    except FileNotFoundError:
        return []


def cmd_check(a):
    home, d = a.home, a.dir
    ids = read_lines(f"{d}/ids")
    kills = [json.loads(x) for x in read_lines(f"{d}/kills.jsonl")]
    anomalies = read_lines(f"{d}/anomalies")
    runs = collections.Counter(read_lines(f"{d}/runs"))
    queue = read_queue(home)
    events = []
    for line in read_lines(f"{home}/events.jsonl"):
        try:
            events.append(json.loads(line))
        except ValueError:
            anomalies.append(f"unreadable event line: {line[:80]}")
    try:
        with open(f"{d}/status.json") as f:
            status = json.load(f)
    except (OSError, ValueError) as e:
        status = None
        anomalies.append(f"status --json: {e}")
    try:
        with open(f"{d}/counter") as f:
            live, peak, total = (int(x) for x in f.read().split())
    except (OSError, ValueError):
        live = peak = total = 0

    v = {"cap": [], "lost": [], "duplicate": [], "state": []}
    if peak > a.cap:
        v["cap"].append(f"the agents saw {peak} live at once (cap {a.cap})")

    # Kills that touched each task: its supervisor (or the supervisor's hook), or the start or
    # daemon that held its claim when it died.
    cut = collections.Counter()     # supervisor kills + owner kills: each may cost one attempt
    sup = collections.Counter()
    owner = collections.Counter()
    hook = collections.Counter()
    by_kind = collections.Counter(k["kind"] for k in kills)
    spawn_window = collections.Counter(k["kind"] for k in kills if k.get("window") == "spawn")
    for k in kills:
        if k["kind"] == "supervisor":
            sup[k["task"]] += 1
            cut[k["task"]] += 1
        elif k["kind"] == "hook":
            hook[k["task"]] += 1
        for t in k.get("owned", []):
            owner[t] += 1
            cut[t] += 1

    # Lost: every task exists and is final, in its record and in `status --json`; nothing live.
    if a.wait_rc == 124:
        v["lost"].append("kugetsu wait hung (the hang guard stopped it)")
    st_tasks = {t["id"]: t for t in status["tasks"]} if status else {}
    for t in ids:
        rec = queue.get(t)
        if rec is None:
            v["lost"].append(f"{t}: no record")
        elif rec["state"] not in FINAL:
            v["lost"].append(f"{t}: {rec['state']}")
        elif status is not None and st_tasks.get(t, {}).get("state") != rec["state"]:
            v["lost"].append(f"{t}: status --json says {st_tasks.get(t, {}).get('state')}, the record {rec['state']}")
    if status is not None:
        if status.get("live") != 0 or status.get("pm_live") != 0 or status.get("sessions"):
            v["lost"].append(f"status --json: live {status.get('live')}, sessions {status.get('sessions')}")
        if set(st_tasks) != set(ids):
            v["lost"].append(f"status --json lists {len(st_tasks)} tasks, expected {len(ids)}")
    else:
        v["lost"].append("no status --json")
    sessions = [n for n in os.listdir(f"{home}/sessions") if not n.startswith(".")] \
        if os.path.isdir(f"{home}/sessions") else []
    if sessions:
        v["lost"].append(f"session files left: {sessions}")
    quarantined = os.listdir(f"{home}/quarantine") if os.path.isdir(f"{home}/quarantine") else []
    if quarantined:
        v["lost"].append(f"records quarantined: {quarantined}")
    if live != 0:
        v["lost"].append(f"{live} probe agents still counted live")

    # Duplicates: an agent ran at most once per task; at most one end and one task_completed
    # per task; at most one task_started per attempt.
    for t, n in runs.items():
        if n > 1:
            v["duplicate"].append(f"{t}: its agent ran {n} times")
        if t not in queue:
            v["duplicate"].append(f"{t}: an agent ran for a task that does not exist")
    completed_ev = collections.Counter()
    final_ev = collections.Counter()
    started_ev = collections.Counter()
    for e in events:
        if e["type"] == "task_completed":
            completed_ev[e["task_id"]] += 1
        if e["type"] in ("task_completed", "task_error"):
            final_ev[e["task_id"]] += 1
        if e["type"] == "task_started":
            started_ev[(e["task_id"], e.get("attempt"))] += 1
    for t, n in completed_ev.items():
        if n > 1:
            v["duplicate"].append(f"{t}: {n} task_completed events")
    for t, n in final_ev.items():
        if n > 1:
            v["duplicate"].append(f"{t}: {n} final events")
    for (t, att), n in started_ev.items():
        if n > 1:
            v["duplicate"].append(f"{t}: {n} task_started events for attempt {att}")

    # End states, against the kills that touched each task (see kill_harness.sh).
    ends = collections.Counter()
    for t in ids:
        rec = queue.get(t)
        if rec is None or rec["state"] not in FINAL:
            continue
        r, c, att = runs[t], cut[t], rec["attempts"]
        why = f"{t}: {rec['state']} ({rec['last_error'] or 'exit ' + str(rec['exit_code'])}), attempts {att}, " \
              f"ran {r}, kills: supervisor {sup[t]}, owner {owner[t]}, hook {hook[t]}"
        if att > 1:
            ends["retried"] += 1
        if rec["state"] == "completed":
            ends["completed"] += 1
            if rec["exit_code"] != 0 or r != 1 or att > 1 + c:
                v["state"].append(why)
            if completed_ev[t] == 0:
                ends["completed_event_lost"] += 1
        elif rec["state"] == "error" and rec["last_error"] == EXIT_UNKNOWN:
            ends["exit_unknown"] += 1
            ends["exit_unknown_never_ran"] += r == 0
            # Ran, then its supervisor died: no exit code. Never ran: the start or daemon that
            # had written its session died before letting the agent exec.
            if (r == 1 and sup[t] == 0) or (r == 0 and owner[t] == 0) or r > 1:
                v["state"].append(why)
        elif rec["state"] == "error" and att >= rec["max_attempts"] and rec["exit_code"] is None:
            ends["attempts_exhausted"] += 1
            if c < rec["max_attempts"] or r != 0:
                v["state"].append(why)
        else:
            ends[rec["state"]] += 1
            v["state"].append(why)
        if rec["state"] != "completed" and completed_ev[t]:
            v["state"].append(f"{t}: {rec['state']} after a task_completed event")

    # Leftovers that nothing reads (reported, not violations): slot files whose end was
    # recorded but that were not removed, temporary slot and record files.
    run_dir = f"{home}/run"
    left = os.listdir(run_dir) if os.path.isdir(run_dir) else []
    slots = [n for n in left if not n.startswith(".")]
    slot_tmp = [n for n in left if n.startswith(".")]
    rec_tmp = [n for sub in ("queue", "sessions") if os.path.isdir(f"{home}/{sub}")
               for n in os.listdir(f"{home}/{sub}") if n.startswith(".")]

    if a.strict:
        for n in slots:
            v["lost"].append(f"slot file left: run/{n}")
    nviol = {k: len(x) for k, x in v.items()}
    if a.no_lock:
        verdict = "expected a cap violation: " + ("seen" if nviol["cap"] else "NOT SEEN")
        ok = nviol["cap"] > 0
    else:
        ok = sum(nviol.values()) == 0 and not anomalies
        verdict = "ok" if ok else "FAILED"
    print(f"kill_harness: seed {a.seed}{' (no lock)' if a.no_lock else ''}: "
          f"kills {len(kills)} (start {by_kind['start']}, daemon {by_kind['daemon']}, "
          f"supervisor {by_kind['supervisor']}, hook {by_kind['hook']}; in a spawn window: "
          f"start {spawn_window['start']}, daemon {spawn_window['daemon']}, supervisor {spawn_window['supervisor']}), "
          f"tasks {len(ids)} (completed {ends['completed']}, exit_unknown {ends['exit_unknown']} "
          f"[never ran {ends['exit_unknown_never_ran']}], attempts_exhausted {ends['attempts_exhausted']}, "
          f"retried {ends['retried']}), runs {sum(runs.values())}, "
          f"peak {peak} (cap {a.cap}), violations: cap {nviol['cap']}, lost {nviol['lost']}, "
          f"duplicate {nviol['duplicate']}, state {nviol['state']}; "
          f"left: slot files {len(slots)}, temp files {len(slot_tmp) + len(rec_tmp)}; "
          f"completed events lost {ends['completed_event_lost']}; wall {a.wall} s: {verdict}")
    for k, x in v.items():
        for line in x[:20]:
            print(f"  {k}: {line}", file=sys.stderr)
        if len(x) > 20:
            print(f"  {k}: ... {len(x) - 20} more", file=sys.stderr)
    for line in anomalies[:20]:
        print(f"  anomaly: {line}", file=sys.stderr)
    if slots or slot_tmp or rec_tmp:
        print(f"  left in HOME: {sorted(slots)[:5]} {sorted(slot_tmp)[:5]} {sorted(rec_tmp)[:5]}", file=sys.stderr)
    if not ok:
        print(f"  reproduce with: kill_harness.sh --kills {a.kills} --tasks {a.tasks} --seed {a.seed}"
              f"{' --no-lock' if a.no_lock else ''}", file=sys.stderr)
    return 0 if ok else 1


def main():
    p = argparse.ArgumentParser()
    sub = p.add_subparsers(dest="cmd", required=True)
    r = sub.add_parser("run")
    r.add_argument("dir")
    r.add_argument("home")
    r.add_argument("kugetsu")
    r.add_argument("probe")
    c = sub.add_parser("check")
    c.add_argument("dir")
    c.add_argument("home")
    c.add_argument("--max-attempts", type=int, default=3)
    c.add_argument("--wait-rc", type=int, default=0)
    c.add_argument("--wall", type=int, default=0)
    c.add_argument("--strict", action="store_true", help="a slot file left in HOME/run is a violation")
    for s in (r, c):
        s.add_argument("--kills", type=int, required=True)
        s.add_argument("--tasks", type=int, required=True)
        s.add_argument("--seed", required=True)
        s.add_argument("--cap", type=int, default=3)
        s.add_argument("--no-lock", action="store_true")
    r.add_argument("--stall", type=float, default=120)
    a = p.parse_args()
    return cmd_run(a) if a.cmd == "run" else cmd_check(a)


if __name__ == "__main__":
    sys.exit(main())
