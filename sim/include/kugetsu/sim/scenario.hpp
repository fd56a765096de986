// kugetsu/sim/scenario.hpp: what a simulated run is: the scenario (its tasks, actors, design
// and faults), its result, and the state its actors share. The original design is in
// legacy.hpp, the invariants every run is checked against in invariants.hpp, and the actors'
// bodies and run() in run.hpp.
//
// The six-task race: an enqueuer queues N tasks (6); then a PM agent is started, the queue
// daemon runs, and K starters (3) each start a task of their own, all at the same time; cap
// C (3). With enqueue_first off the enqueues race with the rest too.
//
// Designs. "fixed" runs the real kugetsu::basic_dispatcher. "legacy" is the original shell
// tool's logic, re-created with the same policies, with the four causes of the incident:
//   1. the daemon spawns agents directly, bypassing start and its limit;
//   2. the count of active sessions includes the PM's;
//   3. no lock around "count sessions, create session, spawn";
//   4. the daemon spawns all pending tasks at once, in background jobs.
// The fixed design runs each agent under a supervisor of its own (supervisor_body: the held
// agent, its exit record, the on-exit `kugetsu reap` while no daemon holds daemon.lock), and
// the daemon holds daemon.lock and adopts the agents of killed supervisors it started.
// Each cause can be fixed alone (`fixes`), to see which fixes matter; with all four fixed the
// real dispatcher runs. Two deliberately wrong variants of it exist for the negative tests:
// release_before_commit (held agents released before their sessions commit) and outbox off
// (the old at-most-once event delivery).
//
// Scheduling (`scheduling`, fixed design only): the queued tasks are in groups "a" and "b"
// with caps of their own (1 and 2), have priorities, and some run after others (t4 after t1,
// and every third from t6 on after the one before it); the starters' tasks are in group b; a
// pauser pauses and resumes the queue, then group a. Its invariants are in
// invariants.hpp; each has a deliberately wrong design that must be caught (negative tests):
// a store that hides group caps, hides pauses, gives runnable tasks oldest first, or hides
// dependencies.
#pragma once

#include <array>
#include <climits>
#include <map>
#include <memory>
#include <optional>
#include <set>
#include <string>
#include <vector>

#include <kugetsu/dispatcher.hpp>
#include <kugetsu/serve.hpp>
#include <kugetsu/workspace/null_workspace.hpp>

#include "policies.hpp"
#include "world.hpp"

namespace kugetsu::sim {

struct scenario {
    std::string name = "six-task-race";
    std::array<bool, 4> fixed{true, true, true, true};   ///< causes 1-4 fixed?
    int tasks = 6;
    int cap = 3;
    int starters = 3;
    bool pm = true;
    int max_attempts = 3;
    std::optional<duration> timeout;   ///< per task; needed when agents may hang
    fault_plan faults;
    /// A killed daemon is restarted (as a service manager would) this many times at most;
    /// past that the run goes on without one, and says so (run_result::no_daemon_left): its
    /// unfinished tasks are then stranded, not lost to the dispatcher. Default: always.
    int max_daemon_restarts = INT_MAX;
    bool enqueue_first = true;         ///< queue the tasks before the others start
    /// Events: true, the notifier is a durable one relayed the store's outbox (the design);
    /// false, the old at-most-once delivery, whose events die with a killed process (a
    /// deliberately wrong variant, for the negative tests: design "fixed+at-most-once-events").
    bool outbox = true;
    /// A deliberately wrong variant (negative tests: design "fixed+release-before-commit"): the
    /// commit of the unit that wrote the sessions takes effect only after the held agents
    /// were released.
    bool release_before_commit = false;
    /// Groups, priorities, dependencies and a pauser (see the header); fixed design only.
    bool scheduling = false;
    int group_a_cap = 1, group_b_cap = 2;
    /// Deliberately wrong variants of scheduling (negative tests), see store_shared.
    bool ignore_group_caps = false, ignore_pause = false, wrong_priority = false, ignore_dependencies = false;
    /// A deliberately wrong daemon loop (negative test, design "fixed+edge-triggered-wait"): its
    /// waiter forgets the events of the pass, as a loop that drains after its pass would.
    bool edge_triggered_wait = false;
    /// Fixed design: each agent runs under its own supervisor, a process of its own (as
    /// fork_spawner's): see detail::supervisor_body. Off: the agent is its spawner's child,
    /// which alone gets its exit code (the simulator of earlier releases). The legacy design
    /// never has supervisors (the original tool forked its agents directly).
    bool supervisors = true;
    /// A deliberately wrong supervisor (negative test, design "fixed+unrecorded-exits"): it
    /// never writes the exit record, so every exit code is lost.
    bool supervisor_records = true;
    /// Clients in other processes (fixed design only): `waiters` run `kugetsu wait t<k>`
    /// (k = 1, 2, ...: serve_until over client_waiter, reaping while no daemon runs), and
    /// `cancels` run `kugetsu cancel t<N+1-k>` (the last queued tasks first). Each must return
    /// (invariant hang).
    int waiters = 0;
    int cancels = 0;
    /// `reapers` run `kugetsu reap` once each (a reap pass from a process of its own, under
    /// the cap lock like any other); `restarts` run `kugetsu wait t<k> && kugetsu restart
    /// t<k>`: once t<k> is final it is pending again, with fresh attempts and its last run
    /// kept, and the daemon runs it again. Each must return (invariant hang).
    int reapers = 0;
    int restarts = 0;
    /// A deliberately wrong `wait` (negative test, design "fixed+deaf-wait"): its waiter does
    /// not wake for the store's commits, only for agents' ends, enqueues and deadlines, so a
    /// task recorded final by the daemon may never be seen.
    bool deaf_wait = false;
    /// A deliberately wrong daemon (negative test, design "fixed+unheard-restarts"): a
    /// restart's commit does not wake it (its waiter hears enqueues, not every commit), so
    /// with `--restarts` a task pending again may wait with a slot free.
    bool unheard_restarts = false;

    /// Scheduling: the group, priority and dependencies of queued task t<i>.
    static std::string group_of(int i) { return i % 2 ? "a" : "b"; }
    static int priority_of(int i) { return (i * 7) % 3; }
    static std::vector<std::string> after_of(int i) {
        if (i == 4) return {"t1"};
        if (i >= 6 && i % 3 == 0) return {"t" + std::to_string(i - 1)};
        return {};
    }

    bool all_fixed() const noexcept { return fixed[0] && fixed[1] && fixed[2] && fixed[3]; }
    std::string design() const {
        if (all_fixed()) {
            std::string s = "fixed";
            if (release_before_commit) s += "+release-before-commit";
            if (!outbox) s += "+at-most-once-events";
            if (scheduling) s += "+scheduling";
            if (ignore_group_caps) s += "+ignore-group-caps";
            if (ignore_pause) s += "+ignore-pause";
            if (wrong_priority) s += "+wrong-priority";
            if (ignore_dependencies) s += "+ignore-dependencies";
            if (edge_triggered_wait) s += "+edge-triggered-wait";
            if (deaf_wait) s += "+deaf-wait";
            if (unheard_restarts) s += "+unheard-restarts";
            if (!supervisors) s += "+unsupervised";
            else if (!supervisor_records) s += "+unrecorded-exits";
            return s;
        }
        std::string s = "legacy";
        for (int i = 0; i < 4; ++i)
            if (fixed[static_cast<std::size_t>(i)]) s += "+fix" + std::to_string(i + 1);
        return s;
    }
    static scenario legacy() {
        scenario s;
        s.fixed = {false, false, false, false};
        return s;
    }
};

struct run_result {
    std::string design;
    int cap = 0;
    int peak_live = 0;
    std::vector<violation> violations;
    std::vector<int> schedule;
    std::vector<std::string> ops;        ///< what each step of the schedule did
    std::vector<std::string> actor_names;
    std::vector<int> actor_creators;   ///< by id: the actor whose step added it, or -1
    std::uint64_t steps = 0;
    int lost = 0;
    int duplicates = 0;
    int kills = 0;
    int late_events = 0;                 ///< events only the final relay (after the run) brought
    /// The last daemon was killed and not restarted (scenario::max_daemon_restarts): the
    /// unfinished tasks are `stranded`, not lost (nothing was left to run them).
    bool no_daemon_left = false;
    int stranded = 0;
    bool aborted = false;
    std::vector<trace_entry> trace;
    std::vector<proc> agents;
    std::vector<event> events;
    std::vector<queue_item> items;
    timestamp begin{}, end{};
    bool ok() const noexcept { return violations.empty(); }
};

namespace detail {

/// Everything the actors of one run share.
struct shared {
    shared(world& w_, const scenario& sc_) : w(w_), sc(sc_) {}
    world& w;
    const scenario& sc;
    memory_store store;   // read directly (no unit): the committed state
    std::shared_ptr<store_shared> hashes = std::make_shared<store_shared>();
    std::shared_ptr<event_log> log = std::make_shared<event_log>();
    std::set<std::string> queued;   // the ids given to enqueue()
    std::string pm_task = "pm-1";
    int daemon_restarts = 0;
    int daemon_lock = -1;          // the actor that holds daemon.lock (while it lives)
    bool passed_after_clients = false;   // the daemon's last pass began once every client was done
    bool daemon_present() const { return daemon_lock >= 0 && w.actor_alive(daemon_lock); }
    bool no_daemon_left = false;   // a daemon was killed past max_daemon_restarts
    int peak = 0;
    bool cap_reported = false, dup_reported = false, unrecorded_reported = false;
    bool group_reported = false, dependency_reported = false, paused_reported = false, priority_reported = false;
    std::uint64_t recording_seen = 0;

    sim_store make_store() { return sim_store(w, store, hashes); }
    sim_spawner make_spawner() { return sim_spawner(w, pm_task); }
    sim_notifier make_notifier() { return sim_notifier(w, log); }

    task_spec task(std::string id) const {
        task_spec s;
        s.id = std::move(id);
        s.argv = {"agent", "--task"};
        s.timeout = sc.timeout;
        s.max_attempts = sc.max_attempts;
        if (sc.scheduling) {
            if (s.id.front() == 't') {
                const int i = std::stoi(s.id.substr(1));
                s.group = scenario::group_of(i);
                s.priority = scenario::priority_of(i);
                s.after = scenario::after_of(i);
            } else if (s.id.front() == 's') {
                s.group = "b";
            }
        }
        return s;
    }
    /// Scheduling: the group of a task's agent ("" : none), and its cap (0: none).
    std::string group_of_task(const std::string& id) const { return sc.scheduling ? task(id).group : std::string(); }
    int group_cap(const std::string& g) const {
        return g == "a" ? sc.group_a_cap : g == "b" ? sc.group_b_cap : 0;
    }
    std::set<std::pair<std::string, int>> seen_running;   // agents already checked by `paused`
    int resumers = 0;
    task_spec pm_spec() const {
        task_spec s = task(pm_task);
        s.role = role::pm;
        s.timeout.reset();
        return s;
    }
    /// Every client (enqueuer, starters, PM starter) has finished.
    bool clients_done() const {
        for (std::size_t i = 0; i < w.actor_count(); ++i) {
            const actor& a = w.get(static_cast<int>(i));
            if (a.client && a.status != actor_status::done) return false;
        }
        return true;
    }
};

using fixed_dispatcher = basic_dispatcher<sim_lock, sim_spawner, sim_notifier, sim_store, sim_clock, null_workspace>;

inline fixed_dispatcher make_fixed(shared& s) {
    return fixed_dispatcher(sim_lock(s.w), s.make_spawner(), s.make_notifier(), s.make_store(), sim_clock(s.w),
                            null_workspace{}, dispatcher_options{s.sc.cap, s.sc.max_attempts, std::chrono::seconds(5)});
}

} // namespace detail

} // namespace kugetsu::sim
