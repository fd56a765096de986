#!/usr/bin/env python3
# The workload, the SIGKILL injector and the checker behind kill_harness.sh (read its header
# first). Two subcommands:
#
#   kill_harness.py run   DIR HOME KUGETSU PROBE --kills N --tasks M --seed S [--no-lock]
#       Runs at least M probe tasks over HOME while it SIGKILLs N kugetsu processes, each
#       caught with work in flight, then stops its daemons and returns once every command it
#       started, and every orphan it adopted as a subreaper, has exited. Writes DIR/ids (the task ids, extras included), DIR/created.json
#       (which command created each task), DIR/kills.jsonl (one line per kill: victim, phase,
#       what it cut), DIR/orphans.jsonl (agents whose exit status the driver reaped as a
#       subreaper: their exit code is lost to kugetsu), DIR/search.json (how the victims were
#       looked for) and DIR/anomalies (unexpected exit statuses of its commands).
#   kill_harness.py check DIR HOME --cap C --max-attempts A --seed S --wait-rc RC --wall W
#                         [--no-lock] [--strict]
#       After a fresh daemon has finished the rest (kill_harness.sh runs it): reads HOME/state.db
#       read-only, HOME/events.jsonl, DIR/events.cli (`kugetsu events`), DIR/status.json and
#       the probe's logs; checks the cap, lost and doubled tasks, each task's events and its end
#       against the kills that touched it; prints one summary line and exits 0 (no violation;
#       with --no-lock: a cap violation was seen) or 1.
#
# The harness never writes HOME: it reads state.db through its own read-only connection
# (file:...?mode=ro; WAL mode, so a reader never waits for a writer and never blocks one), and
# never opens a file of the database otherwise: closing any descriptor of a file drops the
# process's POSIX locks on it, SQLite's included (so it reads a supervisor's descriptor 5 only
# once it names a slot in HOME/run).
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
import sqlite3
import subprocess
import sys
import time
import urllib.parse

KINDS = ("start", "daemon", "supervisor", "hook")
FINAL = ("completed", "error", "cancelled")
END_EVENTS = ("task_completed", "task_error")
# Phases (see kill_harness.sh): in the order the summary lists them.
CALLER_PHASES = ("pass", "spawning", "committed", "releasing", "released", "marking", "locked", "unlocked")
SUPERVISOR_PHASES = ("setup", "held", "released", "running", "ended", "reaped", "recorded", "noexec")
HOOK_PHASES = ("unlocked", "waiting", "reaping", "committed")
# Phases in which a caller or a supervisor has an agent held before exec (a kill "aimed").
HELD_PHASES = ("spawning", "committed", "releasing", "setup", "held")
SYSCALLS = {0: "read", 1: "write", 7: "poll", 17: "pread64", 18: "pwrite64", 35: "nanosleep", 44: "sendto",
            45: "recvfrom", 56: "clone", 57: "fork", 59: "execve", 61: "wait4", 72: "fcntl", 73: "flock",
            74: "fsync", 75: "fdatasync", 82: "rename", 87: "unlink", 202: "futex", 230: "clock_nanosleep",
            232: "epoll_wait", 247: "waitid", 257: "openat", 263: "unlinkat", 271: "ppoll", 281: "epoll_pwait",
            435: "clone3"}


def read_stat(pid):
    """(comm, state, ppid, session, start time) of /proc/PID/stat; OSError if gone."""
    with open(f"/proc/{pid}/stat", "rb") as f:
        s = f.read().decode("latin-1")
    r = s.rindex(")")
    fields = s[r + 2:].split()
    # fields[0] is field 3 (state): ppid 4, pgrp 5, session 6, start time 22.
    return s[s.index("(") + 1:r], fields[0], int(fields[1]), int(fields[3]), int(fields[19])


def children_of(pid):
    try:
        with open(f"/proc/{pid}/task/{pid}/children") as f:
            return [int(x) for x in f.read().split()]
    except (OSError, ValueError):
        return []


def syscall_of(pid):
    """The system call a (frozen) process is in, by name ("user" if it was running its own
    code): /proc/PID/syscall still names the interrupted call of a stopped process."""
    try:
        with open(f"/proc/{pid}/syscall") as f:
            nr = f.read().split()[0]
    except (OSError, IndexError):
        return "?"
    if nr == "running":
        return "running"
    n = int(nr)
    return "user" if n < 0 else SYSCALLS.get(n, str(n))


def slot_kind(text):
    """The kind of a fork_spawner slot record (its first line): held, exec, noexec, exit, none."""
    line = text.split("\n", 1)[0] if "\n" in text else ""
    if line == "kugetsu-held 2":
        return "held"
    if line == "kugetsu-noexec 2":
        return "noexec"
    if line.startswith("kugetsu-exec 2 "):
        return "exec"
    if line.startswith("kugetsu-exit "):
        return "exit"
    return "none"


def read_head(path):
    try:
        with open(path, "rb") as f:
            return f.read(64).decode("latin-1")
    except OSError:
        return None


class Store:
    """HOME/state.db through a read-only connection (never writes; WAL: never blocks a writer).
    rows() returns None if the database cannot be read now (missing, or busy past timeout)."""

    def __init__(self, home, timeout):
        self.path = os.path.join(home, "state.db")
        self.timeout = timeout
        self.db = None

    def rows(self, sql, args=()):
        for _ in range(2):
            try:
                if self.db is None:
                    if not os.path.exists(self.path):
                        return None
                    uri = "file:" + urllib.parse.quote(self.path) + "?mode=ro"
                    self.db = sqlite3.connect(uri, uri=True, timeout=self.timeout, isolation_level=None)
                return self.db.execute(sql, args).fetchall()
            except sqlite3.Error:
                self.close()
        return None

    def close(self):
        if self.db is not None:
            try:
                self.db.close()
            except sqlite3.Error:
                pass
            self.db = None


def ref_of(rec, key):
    """(pid, start time) of a process reference in a JSON record, or None."""
    p = rec.get(key) if rec else None
    return (p["pid"], p["start_time"]) if p else None


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
        self.probe_comm = os.path.basename(os.path.realpath(a.probe))[:15]
        self.logs = os.path.join(os.path.realpath(self.home), "logs") + "/"
        self.run_dir = os.path.join(os.path.realpath(self.home), "run")
        self.work = random.Random(f"{a.seed}/work")
        self.phase = random.Random(f"{a.seed}/phase")
        self.kill_rng = random.Random(f"{a.seed}/kill")
        self.ids = [f"k{i:04d}" for i in range(1, a.tasks + 1)]
        self.children = []
        self.kills = []
        self.orphans = []
        self.anomalies = []
        self.created = {}
        self.sched = {}        # task -> (start flags, enqueue flags): its group, priority, --after
        self.after = {}        # task -> the task it runs after (if queued with --after)
        self.search = collections.Counter()
        self.store = Store(self.home, timeout=0.05)   # short: a frozen writer must not stall it
        self.err = open(os.path.join(self.dir, "commands.err"), "ab")
        self.t0 = time.monotonic()
        self.me = os.getpid()
        # PR_SET_CHILD_SUBREAPER: orphaned supervisors and agents become the driver's
        # children, not init's, so that scan() finds them without reading all of /proc, and
        # so that the driver sees which agents' exit codes nobody recorded (orphans.jsonl).
        libc = ctypes.CDLL(None, use_errno=True)
        if libc.prctl(36, 1, 0, 0, 0) != 0:
            raise OSError(ctypes.get_errno(), "prctl(PR_SET_CHILD_SUBREAPER)")
        self.env = dict(os.environ)
        self.env.pop("KUGETSU_TEST_BARRIER", None)

    # -- commands

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
                "--record-start", f"{d}/runs", "--record", f"{d}/ends", "--stamp", f"{d}/stamps", *extra]

    def enqueue_argv(self, task):
        start_flags, enqueue_flags = self.sched.get(task, ([], []))
        extra = ["--also", f"{self.dir}/counter-g"] if "--group" in enqueue_flags else []
        return ["enqueue", "--id", task] + enqueue_flags + self.agent(self.sleep_of[task], extra)

    def submit(self, task):
        ms = self.work.randint(10, 120)
        self.sleep_of[task] = ms
        # The schedule in the mix (drawn for every task, used by whichever command creates it):
        # group g, a priority, --after a task that exists (start never takes --after).
        group = self.work.random() < 0.3
        prio = self.work.randint(-2, 2) if self.work.random() < 0.5 else None
        dep = self.work.choice(sorted(self.created)) if self.created and self.work.random() < 0.25 else None
        start_flags = ["--group", "g"] if group and not self.a.no_lock else []
        enqueue_flags = list(start_flags)
        if not self.a.no_lock:
            if prio is not None:
                enqueue_flags += ["--priority", str(prio)]
            if dep is not None:
                enqueue_flags += ["--after", dep]
        self.sched[task] = (start_flags, enqueue_flags)
        extra = ["--also", f"{self.dir}/counter-g"] if start_flags else []
        if self.work.random() < 0.7 and "--after" not in enqueue_flags:
            self.launch("start", task, ["start", "--id", task] + start_flags + self.agent(ms, extra))
        else:
            if "--after" in enqueue_flags:
                self.after[task] = dep
            self.launch("enqueue", task, self.enqueue_argv(task))

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
            if rc in (0, 1):   # started (0), or every attempt failed (1): the checker judges
                self.created[c.task] = "start"
                return
            if rc == 75 or c.killed:   # no free slot, or killed: queue it (it may exist: 65)
                self.launch("enqueue", c.task, self.enqueue_argv(c.task), after_kill=c.killed)
                return
        elif c.kind == "enqueue":
            if rc == 0:
                self.created[c.task] = "enqueue"
                return
            if rc == 65:   # the start had committed it: killed, fine; else an anomaly (below)
                self.created[c.task] = "start"
                if c.after_kill:
                    return
            if rc == 75:   # the store was busy: an anomaly (below), but the task must exist
                self.launch("enqueue", c.task, self.enqueue_argv(c.task), after_kill=c.after_kill)
        elif c.kind == "daemon":
            # Stopped by SIGTERM: it exits 0, or dies of the signal if it came before the
            # daemon took its signals (slow starts, e.g. under ASan). Either is a clean stop.
            if c.killed or (c.stopping and rc in (0, -signal.SIGTERM)):
                return
        self.anomalies.append(f"{c.kind} {c.task or ''} exited {rc}")

    def live(self, kind):
        return [c for c in self.children if c.kind == kind and not c.killed and not c.stopping
                and c.popen.poll() is None]

    def reap_orphans(self):
        """Reaps the orphans the driver adopted as a subreaper: supervisors whose start or
        daemon died, and agents whose supervisor died while no daemon above them was alive to
        adopt them (kugetsu never learns their exit code: each is logged in orphans.jsonl).
        Never its own commands (Popen reaps those)."""
        mine = {c.popen.pid for c in self.children}
        for pid in children_of(self.me):
            if pid in mine:
                continue
            try:
                si = os.waitid(os.P_PID, pid, os.WEXITED | os.WNOHANG | os.WNOWAIT)
                if si is None:
                    continue
                try:
                    comm, _s, _pp, _sid, start = read_stat(pid)   # a zombie's stat is readable
                except OSError:
                    comm, start = "?", 0
                os.waitpid(pid, os.WNOHANG)
                if comm == self.probe_comm:
                    self.orphans.append({"pid": pid, "start": start, "status": si.si_status,
                                         "ms": self.ms()})
            except ChildProcessError:
                pass

    def ms(self):
        return int((time.monotonic() - self.t0) * 1000)

    # -- what processes are doing

    def is_supervisor(self, pid):
        """(kind, task) if pid is a supervisor or an on-exit hook of this HOME, else None. A
        supervisor calls setsid() first, so it leads its own session (its agent, held or
        not, is in the supervisor's session, so never matches), runs the kugetsu binary and
        has HOME/logs/<task>.log as descriptor 1; the hook is the same process after it
        exec'd `kugetsu reap` (argv has reap)."""
        try:
            comm, state, _ppid, sid, start = read_stat(pid)
            if sid != pid or state in "ZX" or comm not in self.comms:
                return None
            if os.readlink(f"/proc/{pid}/exe") != self.kugetsu:
                return None
            log = os.readlink(f"/proc/{pid}/fd/1")
            if not (log.startswith(self.logs) and log.endswith(".log")):
                return None
            with open(f"/proc/{pid}/cmdline", "rb") as f:
                argv = f.read().split(b"\0")
        except (OSError, ValueError, IndexError):
            return None
        return ("hook" if b"reap" in argv else "supervisor", log[len(self.logs):-4], start)

    def scan(self):
        """Supervisors and hooks of this HOME: (kind, task, pid, start time). The driver is a
        child subreaper, so each is a child of a start or daemon it runs or, once that has
        died, its own: only those few processes are looked at."""
        mine = {c.popen.pid for c in self.children}
        pids = set(children_of(self.me))
        for c in self.children:
            pids.update(children_of(c.popen.pid))
        found = []
        for pid in pids - mine:
            v = self.is_supervisor(pid)
            if v:
                found.append((v[0], v[1], pid, v[2]))
        return sorted(found, key=lambda v: (v[1], v[0], v[2]))

    def lock_holders(self):
        """(pid holding HOME/lock, pid holding SQLite's WAL write lock) from /proc/locks: the
        cap lock is an exclusive flock on HOME/lock; a write transaction (BEGIN IMMEDIATE until
        COMMIT or ROLLBACK) holds a POSIX write lock on byte 120 of state.db-shm. Blocked
        requests ("->" lines) are not holders."""
        try:
            lock_ino = os.stat(os.path.join(self.home, "lock")).st_ino
        except OSError:
            lock_ino = None
        try:
            shm_ino = os.stat(os.path.join(self.home, "state.db-shm")).st_ino
        except OSError:
            shm_ino = None
        cap = wal = None
        try:
            with open("/proc/locks") as f:
                lines = f.read().splitlines()
        except OSError:
            return None, None
        for line in lines:
            p = line.split()
            if len(p) < 8 or p[1] == "->":
                continue
            try:
                ino = int(p[5].rsplit(":", 1)[1])
                pid = int(p[4])
            except (ValueError, IndexError):
                continue
            if ino == lock_ino and p[1] == "FLOCK" and p[3] == "WRITE":
                cap = pid
            elif ino == shm_ino and p[1] == "POSIX" and p[3] == "WRITE" and p[6] == "120":
                wal = pid
        return cap, wal

    def supervisor_view(self, sup):
        """What a supervisor is doing: its slot (descriptor 5: a temporary .slot.* before the
        hello, then <agent pid>-<start>.slot) and the slot's record, and its agent child."""
        v = {"pid": sup, "slot": None, "record": None, "agent": None, "agent_comm": None, "agent_state": None}
        try:
            link = os.readlink(f"/proc/{sup}/fd/5")
            # Only a slot in HOME/run is opened: a descriptor of state.db opened and closed
            # here would drop this process's SQLite locks (POSIX locks are per process).
            name = os.path.basename(link)
            if os.path.dirname(link) == self.run_dir and (name.endswith(".slot") or name.startswith(".slot.")):
                v["slot"] = name
        except OSError:
            pass
        if v["slot"]:
            head = read_head(f"/proc/{sup}/fd/5")
            v["record"] = slot_kind(head) if head is not None else None
        kids = children_of(sup)
        if kids:
            try:
                comm, state, _pp, _sid, start = read_stat(kids[0])
                v["agent"], v["agent_comm"], v["agent_state"] = (kids[0], start), comm, state
            except OSError:
                pass
        if v["agent"] is None and v["slot"] and not v["slot"].startswith("."):
            try:   # reaped by its supervisor already: the slot's name says who it was
                pid, start = v["slot"][:-5].split("-")
                v["agent"] = (int(pid), int(start))
            except ValueError:
                pass
        return v

    def supervisor_phase(self, v):
        """setup (no hello yet: the slot is temporary), held (record "held"), released (record
        "exec", the agent not yet the probe), running (the probe alive), ended (the agent a
        zombie, the exit record not written), reaped (the agent reaped by its supervisor, the
        exit record not written: its code is only in the supervisor), recorded (record "exit"),
        noexec."""
        if not v["slot"] or v["slot"].startswith("."):
            return "setup"
        rec = v["record"]
        if rec == "held":
            return "held"
        if rec == "exec":
            if v["agent_comm"] == self.probe_comm and v["agent_state"] not in ("Z", "X"):
                return "running"
            if v["agent_comm"] in self.comms and v["agent_state"] not in ("Z", "X"):
                return "released"
            return "ended" if v["agent_state"] in ("Z", "X") else "reaped"
        if rec == "exit":
            return "recorded"
        if rec == "noexec":
            return "noexec"
        return "setup"

    def held_supervisors(self, pid):
        """The supervisors (children of pid) whose agent is held before exec, or in setup."""
        out = []
        for s in children_of(pid):
            if (self.is_supervisor(s) or ("",))[0] == "supervisor":
                v = self.supervisor_view(s)
                if self.supervisor_phase(v) in ("setup", "held"):
                    out.append(v)
        return out

    def fate(self, agent, wait=1.0):
        """'ran' if the agent (pid, start time) exec'd the probe, 'never' if it died without,
        'unknown' otherwise. Watches its comm: the probe's once it has exec'd (and the probe
        lives at least 10 ms, so a 0.5 ms poll sees it); seen ending as kugetsu, it never ran.
        If it is gone before the first look, its slot record says."""
        pid, start = agent
        end = time.monotonic() + wait
        seen = False
        while True:
            try:
                comm, state, _pp, _sid, st = read_stat(pid)
                if st != start:
                    if seen:
                        return "never"
                    break
                if comm == self.probe_comm:
                    return "ran"
                if state in ("Z", "X"):
                    return "never"
                seen = True
            except OSError:
                if seen:
                    return "never"
                break
            if time.monotonic() > end:
                return "unknown"
            time.sleep(0.0005)
        head = read_head(os.path.join(self.run_dir, f"{pid}-{start}.slot"))
        k = slot_kind(head) if head is not None else None
        if k in ("exec", "exit"):
            return "ran"
        if k in ("held", "noexec"):
            return "never"
        return "unknown"

    def owned_claims(self, pid, start):
        """The claims (tasks `notified` with the process as owner) committed in the store, each
        with the agent its session names: {task: (pid, start) or None}. None if unreadable."""
        rows = self.store.rows("SELECT id, record FROM tasks WHERE json_extract(record, '$.state') = 'notified'")
        srows = self.store.rows("SELECT task_id, record FROM sessions")
        if rows is None or srows is None:
            return None
        sess = {}
        for tid, rec in srows:
            try:
                sess[tid] = ref_of(json.loads(rec), "process")
            except ValueError:
                pass
        out = {}
        for tid, rec in rows:
            try:
                r = json.loads(rec)
            except ValueError:
                continue
            if ref_of(r, "owner") == (pid, start):
                out[tid] = sess.get(tid)
        return out

    # -- candidates (looked at without freezing them) and inspection (frozen)

    def candidates(self, kind, aim):
        """Victims of a kind that look busy now. Start, daemon: the holder of the cap lock
        (any, with --no-lock: there is no lock); aimed: with an agent held or in setup.
        Supervisor: any; aimed: in setup or holding its agent. Hook: any."""
        if kind in ("start", "daemon"):
            live = self.live(kind)
            if self.a.no_lock:
                cands = live
            else:
                cap, _ = self.lock_holders()
                cands = [c for c in live if c.popen.pid == cap]
            if aim:
                cands = [c for c in cands if self.held_supervisors(c.popen.pid)]
            return [("child", c) for c in cands]
        out = []
        for v in self.scan():
            if v[0] != kind:
                continue
            if aim and self.supervisor_phase(self.supervisor_view(v[2])) not in ("setup", "held"):
                continue
            out.append(("proc", v))
        return out

    def inspect_caller(self, pid, start):
        """A frozen start, daemon or hook: its locks, system call, supervisors and committed
        claims."""
        cap, wal = self.lock_holders()
        sups = [self.supervisor_view(s) for s in children_of(pid) if (self.is_supervisor(s) or ("",))[0] == "supervisor"]
        return {"cap_lock": cap == pid, "tx": wal == pid, "syscall": syscall_of(pid),
                "sups": sups, "claims": self.owned_claims(pid, start)}

    def caller_phase(self, kind, view, fates):
        """From what the frozen caller held (see kill_harness.sh). fates: agent -> ran|never."""
        if kind == "hook":
            if view["cap_lock"]:
                return "reaping" if view["tx"] else "committed"
            return "waiting" if view["syscall"] == "flock" else "unlocked"
        if not view["cap_lock"] and not self.a.no_lock:   # --no-lock: there is no lock to hold
            return "unlocked"
        claims = view["claims"] or {}
        ran = sum(1 for a in claims.values() if a and fates.get(tuple(a)) == "ran")
        never = sum(1 for a in claims.values() if a and fates.get(tuple(a)) != "ran")
        committed_agents = {tuple(a) for a in claims.values() if a}
        held_uncommitted = any(self.supervisor_phase(v) in ("setup", "held") and v["agent"]
                               and tuple(v["agent"]) not in committed_agents for v in view["sups"])
        if view["tx"]:
            if ran:
                return "marking"
            return "spawning" if held_uncommitted else "pass"
        if never and ran:
            return "releasing"
        if never:
            return "committed"
        if ran:
            return "released"
        return "locked" if view["cap_lock"] else "unlocked"

    def in_flight(self, kind, phase, aim):
        if aim and phase not in HELD_PHASES:
            return False
        if kind in ("start", "daemon"):
            return self.a.no_lock or phase != "unlocked"
        return True

    # -- the kill

    def freeze(self, fd, pid):
        """SIGSTOP through the pidfd; True once the process is stopped (False if it ended)."""
        signal.pidfd_send_signal(fd, signal.SIGSTOP)
        deadline = time.monotonic() + 2
        while True:
            st = read_stat(pid)[1]
            if st in "Tt":
                return True
            if st in "ZX" or time.monotonic() > deadline:
                return False
            time.sleep(0.0002)

    def try_kill(self):
        """One search step for the due kill; never blocks the workload long. The first step
        draws a kind, for all but hooks whether to aim at an agent held before exec, a choice
        among candidates and a delay. Each step takes a candidate that looks busy, waits the
        delay (a random moment in what it is doing), freezes it with SIGSTOP, and looks at
        what it was doing: if it has no work in flight (or, aimed, no agent held), it is let go
        (SIGCONT) and the search goes on. Aimed for up to 1 s, then any phase of the kind;
        after 2 s (3 s for a hook), any kind with a busy victim. True once killed."""
        now = time.monotonic()
        if self.seek is None:
            kind = self.kill_rng.choice(KINDS)
            aim = kind != "hook" and self.kill_rng.random() < 0.5
            self.seek = {"kind": kind, "aim": aim, "aim_until": now + (1.0 if aim else 0),
                         "give_up": now + (3.0 if kind == "hook" else 2.0),
                         "delay": self.kill_rng.random(), "pick": self.kill_rng.random(), "t0": now}
        sk = self.seek
        kind, pick = sk["kind"], sk["pick"]
        aim = sk["aim"] and now <= sk["aim_until"]
        cands = self.candidates(kind, aim)
        if not cands and now > sk["give_up"]:
            for k in KINDS[KINDS.index(kind) + 1:] + KINDS[:KINDS.index(kind)]:
                cands = self.candidates(k, False)
                if cands:
                    kind = k
                    break
        if not cands:
            return False
        kc = cands[int(pick * len(cands))]
        # A random moment: critical sections last milliseconds, a supervisor lives as long as
        # its agent (10-120 ms).
        span = {"start": 0.001, "daemon": 0.001, "supervisor": 0.02, "hook": 0.003}[kind]
        time.sleep(sk["delay"] * (0.0003 if aim else span))
        c = kc[1] if kc[0] == "child" else None
        if c:
            pid, start, task = c.popen.pid, c.start_time, c.task
            if c.popen.poll() is not None:
                return False
        else:
            _, task, pid, start = kc[1]
        try:
            fd = os.pidfd_open(pid)
        except OSError:
            return False
        stopped = killed = False
        entry = None
        try:
            st = read_stat(pid)
            if st[4] != start or st[1] in "ZX":
                return False
            self.search["freezes"] += 1
            stopped = self.freeze(fd, pid)
            if not stopped:
                return False
            # Frozen: it keeps the cap lock and its transaction if it has them, so nothing
            # another process does changes what it was doing; its held agents stay held (an
            # agent already told to exec may still do so: the fates below decide).
            if kind == "supervisor":
                view = self.supervisor_view(pid)
                phase0 = self.supervisor_phase(view)
                view["parent"] = self.parent_kind(st[2])
                view["syscall"] = syscall_of(pid)
            else:
                view = self.inspect_caller(pid, start)
                phase0 = self.caller_phase(kind, view, {})
            if not self.in_flight(kind, phase0, aim):
                self.search["let_go"] += 1
                return False
            entry = {"i": len(self.kills) + 1, "kind": kind, "wanted": sk["kind"], "aimed": sk["aim"],
                     "ms": self.ms(), "search_ms": int((now - sk["t0"]) * 1000), "pid": pid, "task": task,
                     "daemons": len(self.live("daemon")), "starts": len(self.live("start"))}
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
        self.judge(entry, kind, view)
        self.kills.append(entry)
        self.seek = None
        return True

    def parent_kind(self, ppid):
        for c in self.children:
            if c.popen.pid == ppid:
                return c.kind
        return "harness" if ppid == self.me else str(ppid)

    def judge(self, entry, kind, view):
        """After the kill: what each agent the victim held or had started did (its fate), the
        phase, and which tasks the kill cut. cut: an attempt that can never run (it costs the
        task an attempt). post_exec: an agent that ran and lost its supervisor (its exit code
        is kept only if a daemon adopts it: see orphans.jsonl)."""
        entry["cut"], entry["post_exec"] = [], []
        if kind == "supervisor":
            phase = self.supervisor_phase(view)
            entry["parent"], entry["syscall"] = view["parent"], view["syscall"]
            entry["agent"] = view["agent"]
            if phase == "setup":
                # No hello yet: the caller's spawn() fails, or never releases the agent.
                entry["cut"].append(entry["task"])
                if view["parent"] == "start":
                    entry["start_retry"] = entry["task"]
            elif phase in ("held", "released", "running", "ended", "reaped"):
                f = self.fate(view["agent"]) if view["agent"] else "never"
                entry["fate"] = f
                if f == "ran":
                    if phase in ("setup", "held"):
                        phase = "released"   # it had the go-ahead when the supervisor froze
                    entry["post_exec"].append([entry["task"], view["agent"]])
                elif f == "never":
                    entry["cut"].append(entry["task"])
                    if view["parent"] == "start":
                        entry["start_retry"] = entry["task"]   # the start may try again itself
                else:
                    entry["unknown"] = True
            entry["phase"] = phase
            return
        fates = {}
        agents = set()
        for v in view["sups"]:
            if v["agent"] and self.supervisor_phase(v) in ("setup", "held", "released"):
                agents.add(tuple(v["agent"]))
        claims = view["claims"]
        for a in (claims or {}).values():
            if a:
                agents.add(tuple(a))
        for a in agents:
            fates[a] = self.fate(a)
        entry["syscall"], entry["cap_lock"], entry["tx"] = view["syscall"], view["cap_lock"], view["tx"]
        entry["phase"] = self.caller_phase(kind, view, fates)
        if claims is None:
            entry["unknown"] = True   # the store could not be read while it was frozen
            claims = {}
        entry["claims"] = {t: [list(a), fates.get(tuple(a))] if a else None for t, a in sorted(claims.items())}
        for t, a in sorted(claims.items()):
            if a is None or fates.get(tuple(a)) != "ran":
                entry["cut"].append(t)   # interrupted (never ran) or a claim without session

    # -- the workload

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
                # Only the states are read (json_extract in the query); a final state never changes.
                busy = 0
                rows = self.store.rows("SELECT id, json_extract(record, '$.state') FROM tasks") or []
                for t, state in rows:
                    if state in FINAL:
                        self.final.add(t)
                    elif state in ("notified", "running"):
                        busy += 1
                final = len(self.final) - len(self.final.intersection(self.wave))
                next_scan = now + 0.05
                if final + len(self.kills) != progress:
                    progress, progress_at = final + len(self.kills), now
                elif now - progress_at > a.stall:
                    self.anomalies.append(f"no task ended and no kill for {a.stall} s, with {final} of "
                                          f"{self.submitted} final and {len(self.kills)} kills: stopped")
                    break
            seeking = self.seek["kind"] if self.seek else None
            # Daemon phases: 0, 1 or 2 daemons for 0.3-2 s. With none, supervisors record ends
            # through their on-exit `kugetsu reap` (the hooks that can be killed). A phase
            # with no daemon ends early once nothing runs: only a daemon can go on. A search
            # for a daemon keeps one running; a search for a hook keeps none (hooks run only
            # while no daemon holds daemon.lock) until it gives up on hooks.
            if now >= phase_end or (target == 0 and busy == 0 and self.submitted - final >= 3):
                target = self.phase.choice((0, 1, 1, 2))
                phase_end = now + self.phase.uniform(0.3, 2.0)
            want = target
            if seeking == "daemon":
                want = max(1, target)
            elif seeking == "hook" and now <= self.seek["give_up"]:
                want = 0
            daemons = self.live("daemon")
            if len(daemons) < want:
                self.launch("daemon", None, ["daemon"])
            elif len(daemons) > want:
                daemons[0].stopping = True
                daemons[0].popen.send_signal(signal.SIGTERM)
            # Submissions: at most 4 commands in flight and 8 tasks not final; while a kill is
            # due and not yet made, at most 3 not final (a trickle: the daemons keep passing,
            # supervisors and starts keep coming, and the tasks last until the kills are
            # made). Past M tasks, a task is added only while kills remain and fewer than 2
            # are not final (DIR/ids lists them all; the summary counts them as extra).
            inflight = sum(1 for c in self.children if c.kind in ("start", "enqueue"))
            limit = 3 if kill_at is not None else 8
            if self.submitted >= len(self.ids) and len(self.kills) < n and self.submitted - final < 2:
                self.ids.append(f"k{len(self.ids) + 1:04d}")
            if self.submitted < len(self.ids) and inflight < 4 and self.submitted - final < limit \
                    and now >= next_submit:
                self.submit(self.ids[self.submitted])
                self.submitted += 1
                next_submit = now + self.work.uniform(0, 0.05)
            if len(self.kills) < n and final >= thresholds[len(self.kills)]:
                if kill_at is None:
                    kill_at = now + self.kill_rng.uniform(0, 0.1)
                elif now >= kill_at:
                    # Search in a tight loop for up to 20 ms (critical sections are short),
                    # then let the workload move on.
                    until = time.monotonic() + 0.02
                    while time.monotonic() < until:
                        self.search["steps"] += 1
                        if self.try_kill():
                            kill_at = None
                            break
                        time.sleep(0.0002)
            if self.submitted >= m and len(self.kills) >= n:
                break
            time.sleep(0.002)
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
        # Orphans (supervisors, agents whose supervisor was killed) are the driver's children:
        # wait for them, so that orphans.jsonl lists every agent whose exit status it reaped.
        while children_of(self.me) and time.monotonic() < deadline:
            self.reap_orphans()
            time.sleep(0.005)
        self.write_outputs()

    def write_outputs(self):
        ids = self.wave + self.ids[:self.submitted]
        with open(os.path.join(self.dir, "ids"), "w") as f:
            f.write("".join(t + "\n" for t in ids))
        with open(os.path.join(self.dir, "created.json"), "w") as f:
            json.dump(self.created, f, sort_keys=True)
        with open(os.path.join(self.dir, "after.json"), "w") as f:
            json.dump(self.after, f, sort_keys=True)
        with open(os.path.join(self.dir, "kills.jsonl"), "w") as f:
            f.write("".join(json.dumps(k, sort_keys=True) + "\n" for k in self.kills))
        with open(os.path.join(self.dir, "orphans.jsonl"), "w") as f:
            f.write("".join(json.dumps(o, sort_keys=True) + "\n" for o in self.orphans))
        with open(os.path.join(self.dir, "search.json"), "w") as f:
            json.dump(dict(self.search, planned_tasks=self.a.tasks, submitted=self.submitted), f, sort_keys=True)
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
        d.write_outputs()
        raise
    return 0


# ---- check --------------------------------------------------------------------------------

def read_lines(path):
    try:
        with open(path) as f:
            return [line.rstrip("\n") for line in f if line.strip()]
    except FileNotFoundError:
        return []


def read_json_lines(path, what, bad):
    out = []
    for line in read_lines(path):
        try:
            out.append(json.loads(line))
        except ValueError:
            bad.append(f"{what}: unreadable line: {line[:80]}")
    return out


def same_event(a, b):
    """Two event dicts say the same (seq aside)."""
    return {k: v for k, v in a.items() if k != "seq"} == {k: v for k, v in b.items() if k != "seq"}


def cmd_check(a):
    home, d = a.home, a.dir
    ids = read_lines(f"{d}/ids")
    kills = [json.loads(x) for x in read_lines(f"{d}/kills.jsonl")]
    orphans = [json.loads(x) for x in read_lines(f"{d}/orphans.jsonl")]
    anomalies = read_lines(f"{d}/anomalies")
    try:
        with open(f"{d}/created.json") as f:
            created = json.load(f)
    except (OSError, ValueError):
        created = {}
    try:
        with open(f"{d}/search.json") as f:
            search = json.load(f)
    except (OSError, ValueError):
        search = {}
    runs = collections.Counter(read_lines(f"{d}/runs"))
    try:
        with open(f"{d}/after.json") as f:
            after = json.load(f)
    except (OSError, ValueError):
        after = {}
    stamps = collections.defaultdict(list)   # (task, "start"|"end") -> monotonic ns
    for line in read_lines(f"{d}/stamps"):
        parts = line.split()
        if len(parts) == 3:
            stamps[(parts[0], parts[1])].append(int(parts[2]))
    v = {"cap": [], "lost": [], "duplicate": [], "state": [], "events": [], "schedule": []}

    # The store, read-only.
    store = Store(home, timeout=5)
    tasks, sessions, store_events, quarantined = {}, [], [], 0
    rows = store.rows("SELECT id, record FROM tasks")
    if rows is None:
        v["lost"].append(f"cannot read {store.path}")
        rows = []
    for tid, rec in rows:
        tasks[tid] = json.loads(rec)
    sessions = [tid for (tid,) in store.rows("SELECT task_id FROM sessions") or []]
    for seq, rec in store.rows("SELECT seq, record FROM events ORDER BY seq") or []:
        e = json.loads(rec)
        e["seq"] = seq
        store_events.append(e)
    quarantined = (store.rows("SELECT count(*) FROM quarantine") or [[0]])[0][0]
    store.close()

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

    if peak > a.cap:
        v["cap"].append(f"the agents saw {peak} live at once (cap {a.cap})")
    try:
        with open(f"{d}/counter-g") as f:
            _, group_peak, group_total = (int(x) for x in f.read().split())
    except (OSError, ValueError):
        group_peak = group_total = 0
    if group_peak > 1 and not a.no_lock:
        v["cap"].append(f"the agents of group g saw {group_peak} live at once (its cap 1)")

    # What the kills did to each task (kills.jsonl, written by judge()).
    cut = collections.Counter()        # attempts cut before exec (each costs at most one attempt)
    post = collections.defaultdict(list)   # agents that ran and lost their supervisor
    reaped = collections.Counter()     # supervisors killed between reaping the agent and its record
    retry = collections.Counter()      # cuts the task's own start may have retried itself
    hook = collections.Counter()
    unknown_kills = 0
    by_kind = collections.Counter(k["kind"] for k in kills)
    by_phase = collections.defaultdict(collections.Counter)
    aimed = sum(1 for k in kills if k.get("aimed"))
    aimed_hit = sum(1 for k in kills if k.get("aimed") and k.get("phase") in HELD_PHASES)
    for k in kills:
        by_phase[k["kind"]][k.get("phase", "?")] += 1
        for t in k.get("cut", []):
            cut[t] += 1
        for t, agent in k.get("post_exec", []):
            post[t].append(tuple(agent))
        if k.get("start_retry"):
            retry[k["start_retry"]] += 1
        if k["kind"] == "hook":
            hook[k["task"]] += 1
        if k["kind"] == "supervisor" and k.get("phase") == "reaped":
            reaped[k["task"]] += 1
        unknown_kills += bool(k.get("unknown"))
    orphaned = {(o["pid"], o["start"]) for o in orphans}

    # Lost: every task exists and is final, in the store and in `status --json`; nothing live.
    if a.wait_rc == 124:
        v["lost"].append("kugetsu wait hung (the hang guard stopped it)")
    st_tasks = {t["id"]: t for t in status["tasks"]} if status else {}
    for t in ids:
        rec = tasks.get(t)
        if rec is None:
            v["lost"].append(f"{t}: no record")
        elif rec["state"] not in FINAL:
            v["lost"].append(f"{t}: {rec['state']}")
        elif status is not None and st_tasks.get(t, {}).get("state") != rec["state"]:
            v["lost"].append(f"{t}: status --json says {st_tasks.get(t, {}).get('state')}, the store {rec['state']}")
    if status is not None:
        if status.get("live") != 0 or status.get("pm_live") != 0 or status.get("sessions"):
            v["lost"].append(f"status --json: live {status.get('live')}, sessions {status.get('sessions')}")
        if set(st_tasks) != set(ids):
            v["lost"].append(f"status --json lists {len(st_tasks)} tasks, expected {len(ids)}")
    else:
        v["lost"].append("no status --json")
    if set(tasks) - set(ids):
        v["lost"].append(f"tasks nobody submitted: {sorted(set(tasks) - set(ids))[:5]}")
    if sessions:
        v["lost"].append(f"sessions left in the store: {sessions[:5]}")
    if quarantined:
        v["lost"].append(f"{quarantined} rows quarantined")
    if live != 0:
        v["lost"].append(f"{live} probe agents still counted live")

    # Duplicates: an agent ran at most once per task (the probe logs every run it makes).
    for t, n in runs.items():
        if n > 1:
            v["duplicate"].append(f"{t}: its agent ran {n} times")
        if t not in tasks:
            v["duplicate"].append(f"{t}: an agent ran for a task that does not exist")

    # Events: HOME/events.jsonl and `kugetsu events` hold exactly the store's events, in seq
    # order, each once; then each task has exactly the events its history implies.
    bad = []
    file_events = read_json_lines(f"{home}/events.jsonl", "events.jsonl", bad)
    cli_events = read_json_lines(f"{d}/events.cli", "kugetsu events", bad)
    v["events"] += bad
    by_seq = {e["seq"]: e for e in store_events}
    for name, evs in (("events.jsonl", file_events), ("kugetsu events", cli_events)):
        seqs = [e.get("seq") for e in evs]
        dup = [s for s, n in collections.Counter(seqs).items() if n > 1]
        if dup:
            v["events"].append(f"{name}: seq {dup[:5]} more than once")
        if seqs != sorted(seqs):
            v["events"].append(f"{name}: not in seq order")
        missing = sorted(set(by_seq) - set(seqs))
        extra = sorted(set(seqs) - set(by_seq))
        if missing:
            v["events"].append(f"{name}: {len(missing)} of the store's events missing (seq {missing[:5]})")
        if extra:
            v["events"].append(f"{name}: seq {extra[:5]} not in the store")
        for e in evs:
            s = by_seq.get(e.get("seq"))
            if s is not None and not same_event(e, s):
                v["events"].append(f"{name}: seq {e['seq']} differs from the store: {e} vs {s}")
                break
    per_task = collections.defaultdict(list)
    for e in store_events:
        per_task[e["task_id"]].append(e)

    ends = collections.Counter()
    for t in ids:
        rec = tasks.get(t)
        if rec is None or rec["state"] not in FINAL:
            continue
        evs = per_task.get(t, [])
        att = rec["attempts"]
        r = runs[t]
        types = [e["type"] for e in evs]
        why_ev = f"{t}: events {[(e['type'][5:], e.get('attempt')) for e in evs]}; attempts {att}, ran {r}, " \
                 f"created by {created.get(t)}"
        # task_queued once, first, for a task enqueue created; never for one start created.
        nq = types.count("task_queued")
        if created.get(t) == "enqueue":
            if nq != 1 or types[0] != "task_queued":
                v["events"].append(why_ev + ": expected task_queued once, first")
        elif nq:
            v["events"].append(why_ev + ": task_queued for a task start created")
        # One task_dequeued per attempt the queue took: the others are the start's own (its
        # first, and a retry after a supervisor killed while holding the agent).
        deq = [e.get("attempt") for e in evs if e["type"] == "task_dequeued"]
        silent = set(range(1, att + 1)) - set(deq)
        if len(set(deq)) != len(deq) or any(x is None or not 1 <= x <= att for x in deq):
            v["events"].append(why_ev + ": task_dequeued repeated or beyond the attempts")
        elif created.get(t) == "start" and 1 not in silent:
            v["events"].append(why_ev + ": a dequeue of the attempt start made")
        elif created.get(t) != "start" and 1 in silent:
            v["events"].append(why_ev + ": attempt 1 without its dequeue")
        elif len(silent - {1}) > retry[t]:
            v["events"].append(why_ev + f": {len(silent - {1})} attempts without a dequeue, "
                                        f"{retry[t]} retries by the start possible")
        # One task_started per attempt whose program ran.
        started = [e.get("attempt") for e in evs if e["type"] == "task_started"]
        if len(started) != r or len(set(started)) != len(started):
            v["events"].append(why_ev + f": {len(started)} task_started for {r} runs")
        # Exactly one end, last; attempts never go back; a dequeue precedes its start.
        nend = sum(1 for x in types if x in END_EVENTS)
        if nend != 1 or types[-1] not in END_EVENTS:
            v["events"].append(why_ev + ": expected exactly one end event, last")
        last_att = 0
        for e in evs:
            x = e.get("attempt")
            if x is not None and x < last_att:
                v["events"].append(why_ev + ": attempts out of order")
                break
            last_att = x or last_att
        pos = {(e["type"], e.get("attempt")): i for i, e in enumerate(evs)}
        for x in started:
            if ("task_dequeued", x) in pos and pos[("task_started", x)] < pos[("task_dequeued", x)]:
                v["events"].append(why_ev + f": task_started of attempt {x} before its dequeue")
                break
        end = next((e for e in reversed(evs) if e["type"] in END_EVENTS), None)

        # The end, against the kills that touched the task (see kill_harness.sh).
        reason = end.get("reason", "") if end else ""
        c = cut[t]
        lost_code = any(ag in orphaned for ag in post[t]) or reaped[t] > 0
        why = f"{t}: {rec['state']} ({reason or rec['last_error'] or 'exit ' + str(rec['exit_code'])}), " \
              f"attempts {att}, ran {r}, cuts {c}, post-exec {len(post[t])}" \
              f"{' (exit status lost: reaped by the harness or by the killed supervisor)' if lost_code else ''}, " \
              f"hook kills {hook[t]}"
        if att > 1:
            ends["retried"] += 1
        if rec["state"] == "error" and r == 0:
            ends["never_ran_error"] += 1
        if rec["state"] == "completed":
            ends["completed"] += 1
            if rec["exit_code"] != 0 or r != 1 or not 1 <= att <= 1 + c or (end and end["type"] != "task_completed"):
                v["state"].append(why)
        elif rec["state"] == "error" and reason == "exit_unknown":
            ends["exit_unknown"] += 1
            # Only an agent that ran, whose supervisor was killed after exec, and whose exit
            # status went to the harness (no daemon adopted it) or died with the supervisor
            # (killed between reaping the agent and writing the record).
            if r != 1 or not post[t] or not lost_code:
                v["state"].append(why)
        elif rec["state"] == "error" and reason == "dependency_failed":
            ends["dependency_failed"] += 1
            # Never tried: the task it runs after ended error or cancelled.
            dep = tasks.get(after.get(t, ""), {}).get("state")
            if r != 0 or att != 0 or dep not in ("error", "cancelled"):
                v["schedule"].append(why + f": dependency_failed, its dependency {after.get(t)} is {dep}")
        elif rec["state"] == "error" and reason in ("start_interrupted", "attempts_exhausted"):
            ends[reason] += 1
            # Never ran, every attempt cut before exec.
            if r != 0 or att != rec["max_attempts"] or c < att or rec["exit_code"] is not None:
                v["state"].append(why)
            elif reason == "start_interrupted" and not rec["last_error"].startswith("start_interrupted"):
                v["state"].append(why + ": last_error does not start with start_interrupted")
            else:
                ends["never_ran_error_legit"] += 1
        else:
            ends[rec["state"]] += 1
            v["state"].append(why)

    # Dependencies: a task queued --after another ran only after that one's agent ended, and
    # that one completed (one monotonic clock for every agent's stamps).
    for t, dep in after.items():
        if runs[t] == 0:
            continue
        if tasks.get(dep, {}).get("state") != "completed":
            v["schedule"].append(f"{t}: ran, and {dep}, which it runs after, is {tasks.get(dep, {}).get('state')}")
        elif not stamps[(dep, "end")] or min(stamps[(t, "start")], default=0) <= max(stamps[(dep, "end")]):
            v["schedule"].append(f"{t}: started before {dep}, which it runs after, ended")
    ends["after"] = len(after)

    # Leftovers: slot files in HOME/run after the final reap (temporary ones of supervisors
    # killed during setup included), sessions in the store.
    run_dir = f"{home}/run"
    left = sorted(os.listdir(run_dir)) if os.path.isdir(run_dir) else []
    if a.strict:
        for n in left:
            v["lost"].append(f"slot file left after the final reap: run/{n}")

    nviol = {k: len(x) for k, x in v.items()}
    if a.no_lock:
        verdict = "expected a cap violation: " + ("seen" if nviol["cap"] else "NOT SEEN")
        ok = nviol["cap"] > 0
    else:
        ok = sum(nviol.values()) == 0 and not anomalies
        verdict = "ok" if ok else "FAILED"

    def phases(kind, names):
        cnt = by_phase.get(kind, {})
        parts = [f"{p} {cnt[p]}" for p in names if cnt.get(p)] + \
                [f"{p} {n}" for p, n in sorted(cnt.items()) if p not in names]
        return f"{kind} {by_kind[kind]}" + (f" [{', '.join(parts)}]" if parts else "")
    extra = len([t for t in ids if t.startswith("k")]) - a.tasks
    print(f"kill_harness: seed {a.seed}{' (no lock)' if a.no_lock else ''}: "
          f"kills {len(kills)} ({phases('start', CALLER_PHASES)}; {phases('daemon', CALLER_PHASES)}; "
          f"{phases('supervisor', SUPERVISOR_PHASES)}; {phases('hook', HOOK_PHASES)}; "
          f"aimed at held agents {aimed}, hit {aimed_hit}; victims let go {search.get('let_go', 0)}), "
          f"tasks {len(ids)}{f' ({extra} extra)' if extra > 0 else ''} (completed {ends['completed']}, "
          f"exit_unknown {ends['exit_unknown']}, start_interrupted {ends['start_interrupted']}, "
          f"attempts_exhausted {ends['attempts_exhausted']}, dependency_failed {ends['dependency_failed']}, "
          f"never-ran errors {ends['never_ran_error']} "
          f"[all attempts cut: {ends['never_ran_error_legit']}], retried {ends['retried']}), "
          f"runs {sum(runs.values())}, peak {peak} (cap {a.cap}), group g peak {group_peak} (cap 1, "
          f"{group_total} runs), run after another {ends['after']}, orphans reaped by the harness {len(orphans)}, "
          f"events {len(store_events)} (file {len(file_events)}), "
          f"violations: cap {nviol['cap']}, lost {nviol['lost']}, duplicate {nviol['duplicate']}, "
          f"state {nviol['state']}, events {nviol['events']}, schedule {nviol['schedule']}; "
          f"left: slot files {len(left)}, sessions {len(sessions)}; wall {a.wall} s: {verdict}")
    for k, x in v.items():
        for line in x[:20]:
            print(f"  {k}: {line}", file=sys.stderr)
        if len(x) > 20:
            print(f"  {k}: ... {len(x) - 20} more", file=sys.stderr)
    for line in anomalies[:20]:
        print(f"  anomaly: {line}", file=sys.stderr)
    if unknown_kills:
        print(f"  {unknown_kills} kills whose effect could not be read (the store busy, or an agent's fate unclear)",
              file=sys.stderr)
    if left:
        print(f"  left in HOME/run: {left[:5]}", file=sys.stderr)
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
