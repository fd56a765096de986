// kugetsu/sim/scenario.hpp: the simulated scenarios, the original ("legacy") design, and
// the invariants every run is checked against.
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
// Invariants (a violation records its kind and the step):
//   cap              live dev agents never exceed the cap, at any step
//   unrecorded       every running agent has a committed session naming it, at any step
//   duplicate_start  no task's program runs twice
//   lost_task        at the end every task is completed, error or cancelled
//   attempts         attempts never exceed max_attempts
//   events           fixed design: after dropping copies (the same seq), each task has exactly
//                    the events its history implies, and the events file holds every event
//                    the store committed; legacy: each task's events form a valid sequence
//   exit_code        supervised agents: a final task's exit code is its last agent's when its
//                    exit record was written or its supervisor lived to write it, and no code
//                    is claimed for one init reaped (check_exit_code)
//   idle_slot        when the daemon goes to sleep, no slot is free while tasks are runnable
//                    (pending, their group neither paused nor at its cap), unless it is to
//                    look again soon at an agent it cannot watch (as the real watcher does)
//
// Scheduling (`scheduling`, fixed design only): the queued tasks are in groups "a" and "b"
// with caps of their own (1 and 2), have priorities, and some run after others (t4 after t1,
// and every third from t6 on after the one before it); the starters' tasks are in group b; a
// pauser pauses and resumes the queue, then group a. More invariants:
//   group_cap        no group's live dev agents exceed its cap, at any step
//   dependency       no agent of a task runs unless every task it runs after has completed
//   paused           no agent begins to run while the committed schedule holds its group
//   priority         at each commit of a unit that took pending tasks (their attempts
//                    counted), no task left pending outranks one taken (higher priority, or
//                    equal and older) that could have had its slot: in the same group, or in
//                    a group neither paused nor at its cap at that commit
// Each has a deliberately wrong design that must be caught (negative tests): a store that
// hides group caps, hides pauses, gives runnable tasks oldest first, or hides dependencies.
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

/// The original design, with each of its four causes switchable.
class legacy_kugetsu {
public:
    explicit legacy_kugetsu(shared& s)
        : s_(s), lock_(s.w), nolock_(s.w), store_(s.make_store()), sp_(s.make_spawner()), n_(s.make_notifier()),
          clock_(s.w) {}

    void enqueue(const task_spec& spec) {
        queue_item it = make_item(spec);
        std::error_code ec;
        store_.create_item(it, ec);
        if (!ec) n_.notify(ev(event_type::task_queued, it));
    }

    /// The old `start`: checks the cap (counting the PM unless fix 2), locked only with fix 3.
    start_status start_new(const task_spec& spec) {
        guard g(*this);
        reap();
        if (spec.role == role::dev && count() >= s_.sc.cap) return start_status::no_slot;
        queue_item it = make_item(spec);
        std::error_code ec;
        store_.create_item(it, ec);
        if (ec) return start_status::failed;
        return launch(it);
    }

    /// `start` of a queued task.
    start_status start_item(const std::string& id) {
        guard g(*this);
        reap();
        std::error_code ec;
        auto it = store_.get_item(id, ec);
        if (!it || (it->state != task_state::pending && it->state != task_state::notified)) return start_status::failed;
        if (count() >= s_.sc.cap) {
            it->state = task_state::pending;
            store_.put_item(*it, ec);
            return start_status::no_slot;
        }
        return launch(*it);
    }

    /// Cause 1: the daemon's own spawn, which never looks at the cap or the lock.
    start_status direct(const std::string& id) {
        std::error_code ec;
        auto it = store_.get_item(id, ec);
        if (!it || (it->state != task_state::pending && it->state != task_state::notified)) return start_status::failed;
        return launch(*it);
    }

    /// One daemon pass: reap, then take the pending tasks (all of them unless fix 4 limits
    /// the pass to the free slots), foreground or in background jobs.
    void daemon_pass() {
        {
            guard g(*this);
            reap();
        }
        std::error_code ec;
        std::vector<queue_item> claimed;
        {
            // The claim (pending -> notified) is a read-modify-write of each queued record.
            // Under the lock (fix 3) it is made on a fresh read; without it, on a read that
            // another process may have changed since, which is part of cause 3 (no lock around
            // the critical section), not a cause of its own.
            guard g(*this);
            std::size_t limit = static_cast<std::size_t>(-1);
            if (s_.sc.fixed[3]) {
                const int free = s_.sc.cap - count();
                limit = free > 0 ? static_cast<std::size_t>(free) : 0;
            }
            for (auto& it : store_.items_in_state(task_state::pending, limit, ec)) {
                it.state = task_state::notified;
                store_.put_item(it, ec);
                n_.notify(ev(event_type::task_dequeued, it));
                claimed.push_back(std::move(it));
            }
        }
        for (auto& it : claimed) {
            const std::string id = it.id;
            if (s_.sc.fixed[3]) {   // foreground, one after another
                if (s_.sc.fixed[0]) start_item(id);
                else direct(id);
            } else {                // cause 4: a background job per task, all at once
                shared* sp = &s_;
                const bool via_start = s_.sc.fixed[0];
                s_.w.add_actor("bg-" + id, [sp, id, via_start] {
                    legacy_kugetsu k(*sp);
                    if (via_start) k.start_item(id);
                    else k.direct(id);
                });
            }
        }
    }

    void reap() {
        std::error_code ec;
        for (auto& se : store_.list_sessions(ec)) {
            const auto st = sp_.poll(se.process, ec);
            if (st.state == process_state::running) continue;
            auto it = store_.get_item(se.task_id, ec);
            if (it && !is_final(it->state)) {
                it->state = st.state == process_state::exited && st.exit_code == 0 ? task_state::completed : task_state::error;
                if (st.state == process_state::exited) it->exit_code = st.exit_code;
                it->finished_at = clock_.now();
                store_.put_item(*it, ec);
                auto e = ev(it->state == task_state::completed ? event_type::task_completed : event_type::task_error, *it);
                e.exit_code = it->exit_code;
                n_.notify(e);
            }
            store_.remove_session(se.id, ec);
        }
    }

private:
    struct guard {
        legacy_kugetsu& k;
        explicit guard(legacy_kugetsu& k_) : k(k_) {
            std::error_code ec;
            if (k.s_.sc.fixed[2]) k.lock_.lock(ec);
            else k.nolock_.lock(ec);
        }
        ~guard() {
            if (k.s_.sc.fixed[2]) k.lock_.unlock();
        }
    };

    /// Active sessions, as the old tool counted them: every session file (fix 2: dev only).
    int count() {
        std::error_code ec;
        int n = 0;
        for (auto& se : store_.list_sessions(ec))
            if (!s_.sc.fixed[1] || se.role == role::dev) ++n;
        return n;
    }

    start_status launch(queue_item& it) {
        std::error_code ec;
        ++it.attempts;
        const auto p = sp_.spawn({it.id, it.argv, ""}, ec);
        store_.put_session({session_id_for(it), it.role, it.id, p, "", clock_.now()}, ec);
        sp_.release(p, ec);
        if (ec) {
            std::error_code rec;
            store_.remove_session(session_id_for(it), rec);
            it.state = it.attempts >= it.max_attempts ? task_state::error : task_state::pending;
            store_.put_item(it, rec);
            if (it.state == task_state::error) {
                auto e = ev(event_type::task_error, it);
                e.reason = event_reason::attempts_exhausted;
                n_.notify(e);
            }
            return start_status::failed;
        }
        it.state = task_state::running;
        it.process = p;
        it.started_at = clock_.now();
        store_.put_item(it, ec);
        n_.notify(ev(event_type::task_started, it));
        return start_status::started;
    }

    queue_item make_item(const task_spec& spec) {
        queue_item it;
        it.id = spec.id;
        it.argv = spec.argv;
        it.role = spec.role;
        it.timeout = spec.timeout;
        it.max_attempts = spec.max_attempts.value_or(3);
        it.enqueued_at = it.updated_at = clock_.now();
        return it;
    }
    event ev(event_type t, const queue_item& it) {
        event e;
        e.type = t;
        e.task_id = it.id;
        e.time = clock_.now();
        if (it.attempts) e.attempt = it.attempts;
        if (it.process) e.pid = it.process.pid;
        return e;
    }

    shared& s_;
    sim_lock lock_;
    sim_null_lock nolock_;
    sim_store store_;
    sim_spawner sp_;
    sim_notifier n_;
    sim_clock clock_;
};

/// Dev tasks not yet completed, error or cancelled (read directly, not a step).
inline int unfinished(memory_store& store) {
    std::error_code ec;
    int n = 0;
    for (auto& it : store.list_items(ec)) n += it.role == role::dev && !is_final(it.state);
    return n;
}

/// Live dev agents of group g as counted_live counts them.
inline int counted_live_in(world& w, int sleeper, const shared& s, const std::string& g);

/// Pending dev tasks that could start now: their group neither paused nor at its cap.
inline int runnable_count(shared& s, int sleeper) {
    std::error_code ec;
    const auto sched = s.store.get_schedule(ec);
    int n = 0;
    for (auto& it : s.store.items_in_state(task_state::pending, static_cast<std::size_t>(-1), ec)) {
        if (it.role != role::dev || sched.holds(it.group)) continue;
        const int gcap = s.group_cap(it.group);
        if (gcap > 0 && counted_live_in(s.w, sleeper, s, it.group) >= gcap) continue;
        ++n;
    }
    return n;
}

/// Live dev agents as kugetsu should count them when `sleeper` goes to sleep: running or
/// held, or exited but not yet reaped by a live parent other than the sleeper.
inline int counted_live(world& w, int sleeper) {
    int n = 0;
    for (auto& [k, p] : w.procs()) {
        if (p.role != role::dev) continue;
        if (p.status == proc_status::held || p.status == proc_status::running) ++n;
        else if (p.status == proc_status::exited && p.parent != sleeper && w.actor_alive(p.parent)) ++n;
    }
    return n;
}

inline int counted_live_in(world& w, int sleeper, const shared& s, const std::string& g) {
    int n = 0;
    for (auto& [k, p] : w.procs()) {
        if (p.role != role::dev || s.group_of_task(p.task_id) != g) continue;
        if (p.status == proc_status::held || p.status == proc_status::running) ++n;
        else if (p.status == proc_status::exited && p.parent != sleeper && w.actor_alive(p.parent)) ++n;
    }
    return n;
}

/// About to sleep: no slot may stay free while tasks are runnable (unless another process is
/// inside the critical section right now, about to take it).
inline void check_idle_slot(shared& s) {
    world& w = s.w;
    const int me = w.current();
    if (w.lock_holder() == -1 && runnable_count(s, me) > 0 && counted_live(w, me) < s.sc.cap) {
        w.add_violation("idle_slot", std::to_string(runnable_count(s, me)) + " runnable, " +
                                         std::to_string(counted_live(w, me)) + " live, cap " + std::to_string(s.sc.cap));
    }
}

/// The daemon's waiter in the simulated world: level-triggered as home_waiter (an event since
/// the last drain ends the wait at once), waking for events (an agent's end, an enqueue, a
/// commit), the plan's deadline (virtual time), and stop at the end of the run. With
/// `edge_triggered` (a deliberately wrong design, "+edge-triggered-wait"), drain() does
/// nothing and wait() forgets what happened before it: the lost wake-up of a loop that
/// drains after its pass instead of before.
struct sim_waiter {
    shared& s;
    bool edge_triggered = false;
    void drain() {
        if (!edge_triggered) s.w.consume_events();
    }
    wake wait(const wake_plan& plan, std::error_code& ec) {
        ec.clear();
        world& w = s.w;
        // The end of the run: every client done, every dev task final, and a pass since the
        // last client ended (it may have left a claim to recover, or an agent to adopt).
        if (s.clients_done() && unfinished(s.store) == 0 && s.passed_after_clients) return wake::stop;
        w.choice("daemon.wait", /*observes_agents=*/true);   // an agent may end just before it looks
        // The owners of claims, watched through pidfds: one already gone wakes it at once.
        w.me().watch_deaths.clear();
        for (const auto& o : plan.owners)
            if (const actor* a = w.find_actor(o)) {
                if (!w.actor_alive(a->id)) return wake::process;
                w.me().watch_deaths.push_back(a->id);
            }
        if (edge_triggered) w.consume_events();
        if (w.has_unseen_event()) return wake::changed;   // something happened during the pass
        // As the watcher: an agent that no pidfd can watch (already ended: a zombie whose
        // parent has not reaped it, or gone) is looked at again after 20 ms, since nothing
        // may announce its reaping. (The watcher doubles that up to 1 s; the simulated one
        // keeps no state between waits, so that its future depends on the shared state only.)
        std::optional<timestamp> deadline = plan.deadline;
        bool recheck = false;
        for (const auto& a : plan.agents) {
            const proc* p = w.find_proc(a);
            if (p && (p->status == proc_status::running || p->status == proc_status::held)) continue;
            const timestamp t = w.now() + std::chrono::milliseconds(20);
            if (!deadline || t < *deadline) deadline = t, recheck = true;
            break;
        }
        // A slot left free while tasks are runnable is a lost wake-up unless the daemon is to
        // look again soon (an agent it cannot watch may have freed it: found by PCT, a zombie
        // counted live by the pass and reaped by init just after it).
        if (!recheck) check_idle_slot(s);
        w.wait_event(deadline);
        if (deadline && w.now() >= *deadline) return recheck ? wake::process : wake::deadline;
        return wake::changed;
    }
};

/// An agent's supervisor (fork_spawner's), from the moment spawn() forked it: it waits for
/// its agent's fate; if the agent ran and ended, it writes the exit record (the slot's lock is
/// held until then, so every poll sees the agent running) and, as `kugetsu reap` does on
/// exit, records the end in the store unless a daemon holds daemon.lock. Killed, it leaves
/// a held agent to exit without running, and a running one to the daemon that spawned it
/// (a subreaper, which records its code when it polls it) or else to init (its code lost).
/// Not simulated: its own timeout signals (the dispatcher's, which it duplicates, are).
///
/// Its steps. With kills left in the run's budget: a first step while its agent is held and
/// one once it runs (kill points), one when the agent has ended (the exit record), then the
/// on-exit check of daemon.lock. Without kills the first step is the record itself (it waits
/// from its fork: nothing shared changes before), and the check is made in the same step: the
/// daemon's presence can then change only at the daemon's stop, at the end of the run, once
/// every dev task is final. With atomic critical sections (the exhaustive search), kills or
/// not, the record is its only step (and lazy: offered where agents are looked at). Its agent
/// is held only inside its spawner's critical section, where no other actor moves; a kill
/// while the agent runs is seen as a kill at the record (the agent goes to the same new
/// parent, and polls see it running until then); and a daemon killed between the record and
/// the check is seen as killed just after it (its successor records the end). Each holds but
/// for a second kill in between, which random and PCT exploration reach.
inline void supervisor_body(shared& s, process_ref agent, bool watching) {
    world& w = s.w;
    if (watching) {   // this was the first step, a kill point while it is held: now its run
        w.wait_agent(agent, /*released=*/true);
        if (const proc* p = w.find_proc(agent); p && p->status == proc_status::running)
            w.lazy_choice({"sup.watch", agent.pid});   // a kill point while it runs
        w.wait_agent(agent);
        const proc* p = w.find_proc(agent);
        if (!p || p->status != proc_status::exited) return;   // never ran: its slot says so
        w.lazy_choice({"sup.record", agent.pid});
    }
    proc* q = w.find_proc(agent);
    if (!q || q->status != proc_status::exited || q->parent != w.current()) return;
    if (s.sc.supervisor_records) q->recorded = true;
    w.reaped(*q);
    w.notify_event();   // the slot's last close: IN_CLOSE_WRITE on run/
    if (w.tracing()) w.trace(w.current(), "exit record", q->task_id + " pid " + std::to_string(agent.pid) + " code " +
                                                       std::to_string(q->exit_code));
    // The on-exit command, `kugetsu reap`, unless a daemon holds daemon.lock.
    if (w.can_kill() && !w.atomic()) w.choice({"sup.on_exit", agent.pid});   // (see above)
    const bool daemon = s.daemon_present();
    w.observe(daemon ? 1 : 2);
    if (daemon) return;
    auto d = make_fixed(s);
    std::error_code ec;
    d.reap(ec);
    w.die_if_killed();
}

inline void daemon_body(shared& s) {
    world& w = s.w;
    if (s.sc.all_fixed()) {
        // daemon.lock, for its whole life (the kernel releases it when it dies).
        w.choice("daemon.lock");
        s.daemon_lock = w.current();
        // The real daemon loop (serve.hpp) over the real dispatcher.
        auto d = make_fixed(s);
        sim_waiter waiter{s, s.sc.edge_triggered_wait};
        struct host {
            world& w;
            shared& s;
            fixed_dispatcher& d;
            // Here the daemon's future depends on the shared state only: nothing it saw in
            // an earlier pass is kept (the dispatcher holds no state between calls).
            void before_pass() {
                w.reset_history();
                s.passed_after_clients = s.clients_done();
                w.observe(s.passed_after_clients ? 3 : 4);
            }
            bool pass(const pass_report&, const std::error_code& ec) {
                w.die_if_killed();   // killed during its relay (which cannot throw)
                if (ec && w.tracing()) w.trace(w.current(), "pass failed", ec.message() + ": " + d.last_error_detail());
                return true;
            }
            void plan_failed(const std::error_code& ec) {
                if (w.tracing()) w.trace(w.current(), "next_wake failed", ec.message() + ": " + d.last_error_detail());
            }
        };
        serve(d, waiter, {}, host{w, s, d});
        return;
    }
    legacy_kugetsu legacy(s);
    for (;;) {
        w.reset_history();
        legacy.daemon_pass();
        if (s.clients_done() && unfinished(s.store) == 0) break;
        if (w.has_unseen_event()) {   // something happened during the pass: pass again
            w.consume_events();
            continue;
        }
        check_idle_slot(s);
        w.wait_event(std::nullopt);   // the old design had no timeouts
    }
}

/// Scheduling's per-step invariants: group caps, dependencies, pauses.
inline void check_schedule_step(shared& s) {
    std::map<std::string, int> live;
    for (const auto& [k, p] : s.w.procs()) {
        if (p.role != role::dev || (p.status != proc_status::held && p.status != proc_status::running)) continue;
        const std::string g = s.group_of_task(p.task_id);
        ++live[g];
        if (p.status != proc_status::running) continue;
        if (!s.dependency_reported) {
            std::error_code ec;
            for (const auto& dep : s.task(p.task_id).after) {
                const auto d = s.store.get_item(dep, ec);
                if (!d || d->state != task_state::completed) {
                    s.dependency_reported = true;
                    s.w.add_violation("dependency", "task " + p.task_id + " runs, and " + dep + ", which it runs after, is " +
                                                        (d ? std::string(to_string(d->state)) : std::string("missing")));
                    break;
                }
            }
        }
        if (!s.paused_reported && s.seen_running.insert({p.task_id, p.ref.pid}).second) {
            std::error_code ec;
            const auto sched = s.store.get_schedule(ec);
            if (sched.holds(g)) {
                s.paused_reported = true;
                s.w.add_violation("paused", "task " + p.task_id + " began to run while " +
                                                (sched.paused ? std::string("the queue") : "group " + g) + " was paused");
            }
        }
    }
    for (const auto& [g, n] : live) {
        const int gcap = s.group_cap(g);
        if (gcap > 0 && n > gcap && !s.group_reported) {
            s.group_reported = true;
            s.w.add_violation("group_cap", std::to_string(n) + " live dev agents in group " + g + ", its cap " +
                                               std::to_string(gcap));
        }
    }
}

/// Scheduling's commit-time invariant: priorities among runnable tasks (see the header).
/// `unit` reads the unit about to commit; s.store, what was committed before it.
inline void check_priorities(shared& s, memory_store& unit) {
    if (s.priority_reported) return;
    std::error_code ec;
    const auto before = s.store.list_items(ec);
    std::map<std::string, queue_item> was;
    for (const auto& it : before) was.emplace(it.id, it);
    std::vector<queue_item> taken, left;
    for (const auto& it : unit.list_items(ec)) {
        const auto w = was.find(it.id);
        if (w == was.end()) continue;
        if (it.attempts > w->second.attempts) {
            if (w->second.state == task_state::pending) taken.push_back(it);
        } else if (it.state == task_state::pending) {
            left.push_back(it);   // pending before, or made pending by this unit (its dependencies completed)
        }
    }
    if (taken.empty() || left.empty()) return;
    const auto sched = unit.get_schedule(ec);
    std::map<std::string, int> live;
    for (const auto& se : unit.list_sessions(ec))
        if (se.role == role::dev) ++live[s.group_of_task(se.task_id)];
    auto has_room = [&](const std::string& g) {
        const int gcap = s.group_cap(g);
        return !sched.holds(g) && (gcap == 0 || live[g] < gcap);
    };
    for (const auto& u : left)
        for (const auto& t : taken)
            if (kugetsu::detail::runs_before(u, t) && !sched.holds(u.group) && (u.group == t.group || has_room(u.group))) {
                s.priority_reported = true;
                s.w.add_violation("priority", "task " + t.id + " (priority " + std::to_string(t.priority) +
                                                  ") was taken while " + u.id + " (priority " + std::to_string(u.priority) +
                                                  ", older or higher) stayed pending and could have run");
                return;
            }
}

/// The per-step invariants: the cap, no agent running unrecorded, no task's program running
/// twice.
inline void check_step(shared& s) {
    if (s.sc.scheduling) check_schedule_step(s);
    const int live = s.w.live_dev();
    s.peak = std::max(s.peak, live);
    if (live > s.sc.cap && !s.cap_reported) {
        s.cap_reported = true;
        s.w.add_violation("cap", std::to_string(live) + " live dev agents, cap " + std::to_string(s.sc.cap));
    }
    if (!s.w.ran_twice().empty() && !s.dup_reported) {
        s.dup_reported = true;
        s.w.add_violation("duplicate_start", "task " + s.w.ran_twice() + " ran twice");
    }
    // Every running agent is counted: a committed session names it (its task and process).
    // Looked at again only after an agent started or a commit wrote sessions.
    if (!s.unrecorded_reported && s.w.recording_changes() != s.recording_seen) {
        s.recording_seen = s.w.recording_changes();
        std::vector<session> committed;
        bool listed = false;
        for (const auto& entry : s.w.procs()) {
            const proc& p = entry.second;
            if (p.status != proc_status::running) continue;
            if (!listed) {
                std::error_code ec;
                committed = s.store.list_sessions(ec);   // no unit: the committed sessions only
                listed = true;
            }
            const bool named = std::any_of(committed.begin(), committed.end(), [&](const session& se) {
                return se.task_id == p.task_id && se.process == p.ref;
            });
            if (!named) {
                s.unrecorded_reported = true;
                s.w.add_violation("unrecorded", std::string(to_string(p.role)) + " agent of task " + p.task_id + " (pid " +
                                                    std::to_string(p.ref.pid) + ") runs with no committed session naming it");
                break;
            }
        }
    }
}

/// The legacy design's events (at most once, with no sequence numbers): queued? dequeued*
/// [started] end?, nothing after the end, at most one start and one end. Without kills,
/// every finished task has its end event.
inline std::string check_events(const std::vector<event>& events, const queue_item& it, bool kills) {
    int stage = 0;   // 0 before start, 1 started, 2 ended
    int starts = 0;
    bool queued_seen = false;
    for (auto& e : events) {
        if (e.task_id != it.id) continue;
        switch (e.type) {
        case event_type::task_queued:
            if (queued_seen || stage != 0) return "task_queued out of place";
            queued_seen = true;
            break;
        case event_type::task_dequeued:
            if (stage != 0) return "task_dequeued after the start or end";
            break;
        case event_type::task_started:
            if (stage != 0 || ++starts > 1) return "task_started twice or after the end";
            stage = 1;
            break;
        case event_type::task_completed:
        case event_type::task_error:
            if (stage == 2) return "a second end event";
            stage = 2;
            break;
        case event_type::task_removed: return "task_removed, and no scenario removes a task";
        }
    }
    if (is_final(it.state) && stage != 2 && !kills) return "no end event";
    return {};
}

/// The events a task's history implies, in the fixed design, with or without kills.
/// `held`: the task's events as the notifier holds them (copies of one seq dropped here);
/// `queued`: the task was created by enqueue(), else by start(); `ran`: how many of its
/// agents ran their program (the process table). Exactly: task_queued once, first (queued
/// tasks only); one task_dequeued per attempt the queue took, numbered 1..attempts for a
/// queued task, k..attempts for a started one (start() made the attempts before k); one
/// task_started per agent that ran; one end event, last, for a final task, none otherwise.
/// An attempt that never ran has its task_dequeued (if the queue took it) and no
/// task_started.
inline std::string check_events_exact(const std::vector<event>& held, const queue_item& it, bool queued, int ran) {
    std::vector<event> evs;
    std::set<std::uint64_t> seen;
    for (const auto& e : held)
        if (e.seq == 0 || seen.insert(e.seq).second) evs.push_back(e);
    std::string got;
    for (const auto& e : evs) {
        got += (got.empty() ? "" : ", ") + std::string(to_string(e.type));
        if (e.attempt) got += "#" + std::to_string(*e.attempt);
        if (e.reason != event_reason::none) got += " (" + std::string(to_string(e.reason)) + ")";
    }
    const std::string history = std::string(queued ? "queued" : "started") + ", " + std::string(to_string(it.state)) +
                                " after " + std::to_string(it.attempts) + " attempts, ran " + std::to_string(ran) +
                                " times; events: " + (got.empty() ? "none" : got);
    int q = 0, starts = 0, ends = 0;
    std::vector<int> dequeued;
    for (std::size_t i = 0; i < evs.size(); ++i) {
        const auto& e = evs[i];
        switch (e.type) {
        case event_type::task_queued:
            ++q;
            if (i != 0) return "task_queued is not its first event (" + history + ")";
            break;
        case event_type::task_dequeued: dequeued.push_back(e.attempt.value_or(0)); break;
        case event_type::task_started: ++starts; break;
        case event_type::task_completed:
        case event_type::task_error:
            ++ends;
            if (i + 1 != evs.size()) return "an event after its end event (" + history + ")";
            break;
        case event_type::task_removed: return "task_removed, and no scenario removes a task (" + history + ")";
        }
    }
    if (q != (queued ? 1 : 0))
        return "expected " + std::to_string(queued ? 1 : 0) + " task_queued, got " + std::to_string(q) + " (" + history + ")";
    // One task_dequeued per attempt the queue took: a queued task's every attempt, a started
    // task's attempts after those its start() made.
    const int first = queued ? 1 : (dequeued.empty() ? it.attempts + 1 : dequeued.front());
    bool exact = first >= (queued ? 1 : 2) && static_cast<int>(dequeued.size()) == it.attempts - first + 1;
    for (std::size_t k = 0; exact && k < dequeued.size(); ++k) exact = dequeued[k] == first + static_cast<int>(k);
    if (!exact)
        return "expected one task_dequeued per attempt the queue took (attempts " + std::to_string(queued ? 1 : 2) + ".." +
               std::to_string(it.attempts) + (queued ? "" : ", or none") + "), got " + std::to_string(dequeued.size()) +
               " (" + history + ")";
    if (starts != ran)
        return "expected one task_started per agent that ran (" + std::to_string(ran) + "), got " + std::to_string(starts) +
               " (" + history + ")";
    if (ends != (is_final(it.state) ? 1 : 0))
        return std::string(is_final(it.state) ? "expected one end event" : "expected no end event for a task not final") +
               ", got " + std::to_string(ends) + " (" + history + ")";
    return {};
}

/// Supervised agents: a final task's exit code is its last agent's, known exactly when it
/// can be: the agent's exit record was written, or its supervisor lived to write it. An
/// agent whose supervisor was killed and that init reaped has no code, and none is claimed.
inline std::string check_exit_code(const world& w, const queue_item& it) {
    if (it.state != task_state::completed && it.state != task_state::error) return {};
    const proc* last = nullptr;
    for (const auto& [k, p] : w.procs())
        if (p.task_id == it.id && (!last || p.attempt > last->attempt)) last = &p;
    if (!last || last->sup < 0 || !last->ran || last->status != proc_status::reaped) return {};
    const bool known = last->recorded || !last->sup_killed;
    const std::string agent = "its agent (attempt " + std::to_string(last->attempt) + ") exited with " +
                              std::to_string(last->exit_code) + (last->recorded ? ", recorded" : ", not recorded");
    if (known && it.exit_code != last->exit_code)
        return agent + ", and the store says " + (it.exit_code ? std::to_string(*it.exit_code) : std::string("no code"));
    if (!known && it.exit_code) return agent + " (its supervisor killed), and the store claims " + std::to_string(*it.exit_code);
    return {};
}

/// A later process's relay (the next `kugetsu` command to run): after the run, the events
/// the store committed that the notifier does not hold yet. Returns how many it brought.
inline int final_relay(world& w, event_log& log, memory_store& store) {
    int n = 0;
    std::error_code ec;
    for (;;) {
        auto batch = store.events_after(log.last_seq, 512, ec);
        if (ec || batch.empty()) return n;
        for (const auto& e : batch) {
            sim_notifier::keep(w, log, e);
            ++n;
        }
    }
}

} // namespace detail

struct run_options {
    bool keep_trace = true;
    /// Keep what each step did (run_result::ops), formatted at the end of the run.
    bool keep_ops = true;
    std::uint64_t max_steps = 200000;
    bool state_hash = false;
    bool atomic_critical_sections = false;
    /// With atomic critical sections: kill points inside them (world::set_kill_points).
    bool kill_points = false;
    /// How many agents may end by a choice, before their drawn end (world::set_max_early_ends).
    int max_early_ends = INT_MAX;
    /// Stop at the first violation of this kind found during the run (world::stop_at); the
    /// run is then aborted, without the checks at its end. Empty: run to the end.
    std::string stop_at = {};
};

/// One run of the scenario under the chooser's schedule.
inline run_result run(const scenario& sc, std::uint64_t seed, chooser& ch, const run_options& opt = {}) {
    world w(seed, sc.faults);
    w.want_state_hash(opt.state_hash);
    w.set_recording(opt.keep_trace, opt.keep_trace || opt.keep_ops);
    w.set_atomic(opt.atomic_critical_sections);
    w.set_kill_points(opt.kill_points);
    w.set_max_early_ends(opt.max_early_ends);
    w.stop_at(opt.stop_at);
    detail::shared s(w, sc);
    s.pm_task = "pm-1";
    s.log->outbox = sc.outbox;
    s.hashes->release_before_commit = sc.release_before_commit;
    s.hashes->ignore_group_caps = sc.ignore_group_caps;
    s.hashes->ignore_pause = sc.ignore_pause;
    s.hashes->wrong_priority = sc.wrong_priority;
    s.hashes->ignore_dependencies = sc.ignore_dependencies;
    s.hashes->check_transitions = sc.all_fixed();
    if (sc.scheduling) {
        s.hashes->before_commit = [&s](memory_store& unit) { detail::check_priorities(s, unit); };
        queue_schedule groups;   // HOME's group caps, set before anything runs
        groups.set_group("a", {sc.group_a_cap, false});
        groups.set_group("b", {sc.group_b_cap, false});
        std::error_code ec;
        s.store.put_schedule(groups, ec);
    }
    run_result r;
    r.design = sc.design();
    r.cap = sc.cap;
    r.begin = w.now();

    const bool fixed = sc.all_fixed();
    // The PM starter, the daemon and the K starters.
    auto start_others = [&s, fixed] {
        world& w = s.w;
        if (s.sc.pm)
            w.add_actor("pm", [&s, fixed] {
                if (fixed) {
                    auto d = detail::make_fixed(s);
                    std::error_code ec;
                    d.start(s.pm_spec(), ec);
                    s.w.die_if_killed();
                } else {
                    detail::legacy_kugetsu(s).start_new(s.pm_spec());
                }
            });
        w.add_actor("daemon", [&s] { detail::daemon_body(s); }, actor_kind::daemon);
        if (s.sc.scheduling && fixed)
            w.add_actor("pauser", [&s] {
                auto d = detail::make_fixed(s);
                std::error_code ec;
                d.pause({}, ec);
                d.resume({}, ec);
                d.pause("a", ec);
                d.resume("a", ec);
                s.w.die_if_killed();
            });
        for (int k = 1; k <= s.sc.starters; ++k)
            w.add_actor("starter-" + std::to_string(k), [&s, fixed, k] {
                const auto spec = s.task("s" + std::to_string(k));
                if (fixed) {
                    auto d = detail::make_fixed(s);
                    std::error_code ec;
                    d.start(spec, ec);
                    s.w.die_if_killed();
                } else {
                    detail::legacy_kugetsu(s).start_new(spec);
                }
            });
    };
    // The enqueuer: the queued tasks. In the six-task race they are queued before anything
    // else runs; with enqueue_first off, enqueues race with everything else.
    w.add_actor("enqueuer", [&s, fixed, start_others] {
        for (int i = 1; i <= s.sc.tasks; ++i) {
            const auto spec = s.task("t" + std::to_string(i));
            s.queued.insert(spec.id);
            if (fixed) {
                auto d = detail::make_fixed(s);
                std::error_code ec;
                d.enqueue(spec, ec);
                s.w.die_if_killed();   // killed during its relay (which cannot throw)
            } else {
                detail::legacy_kugetsu(s).enqueue(spec);
            }
        }
        if (s.sc.enqueue_first) start_others();
    });
    if (!sc.enqueue_first) start_others();
    w.on_killed = [&s, start_others](const actor& a) {
        if (a.name == "enqueuer" && s.sc.enqueue_first) start_others();   // the rest still runs
        // A pauser killed while the queue is paused: someone resumes it (as a user would).
        if ((a.name == "pauser" || a.name.rfind("resumer", 0) == 0) && s.resumers < 8) {
            ++s.resumers;
            s.w.add_actor("resumer-" + std::to_string(s.resumers), [&s] {
                auto d = detail::make_fixed(s);
                std::error_code ec;
                d.resume({}, ec);
                d.resume("a", ec);
                s.w.die_if_killed();
            });
        }
        if (a.kind == actor_kind::daemon) {
            if (s.daemon_restarts < s.sc.max_daemon_restarts) {   // a supervisor restarts it
                ++s.daemon_restarts;
                s.w.add_actor("daemon-" + std::to_string(s.daemon_restarts + 1), [&s] { detail::daemon_body(s); },
                              actor_kind::daemon);
            } else {
                s.no_daemon_left = true;
            }
        }
    };
    if (fixed && sc.supervisors)
        w.on_spawn = [&s](proc& p) {
            const process_ref agent = p.ref;
            const bool watching = s.w.can_kill() && !s.w.atomic();
            p.sup = p.parent = s.w.add_actor("sup-" + p.task_id + "#" + std::to_string(p.attempt),
                                             [&s, agent, watching] { detail::supervisor_body(s, agent, watching); },
                                             actor_kind::supervisor);
            if (watching) s.w.set_first_op(p.sup, {"sup.watch", agent.pid}, /*lazy=*/true);
            else s.w.start_waiting_for(p.sup, agent, {"sup.record", agent.pid}, /*lazy=*/true);
        };
    w.check_step = [&s] { detail::check_step(s); };
    w.run(ch, opt.max_steps);

    r.aborted = w.stopped();
    r.steps = w.steps();
    r.kills = w.kills();
    r.peak_live = s.peak;
    r.schedule = w.schedule();
    r.ops = w.step_ops();
    for (std::size_t i = 0; i < w.actor_count(); ++i) r.actor_names.push_back(w.get(static_cast<int>(i)).name);
    r.violations = w.violations();
    std::error_code ec;
    r.items = s.store.list_items(ec);
    if (!r.aborted) {
        // The next process to relay (any kugetsu command) brings what no process relayed.
        if (fixed && sc.outbox) r.late_events = detail::final_relay(w, *s.log, s.store);
        std::map<std::string, int> ran;
        for (auto& [k, p] : w.procs())
            if (p.ran) ++ran[p.task_id];
        for (auto& [t, n] : ran) r.duplicates += n > 1;
        static const std::vector<event> none;
        for (auto& it : r.items) {
            const auto held = s.log->by_task.find(it.id);
            const auto& evs = held == s.log->by_task.end() ? none : held->second;
            // A run left without a daemon (killed past its restart budget): its unfinished
            // tasks are stranded, with no process left to record them.
            if (fixed && !(s.no_daemon_left && !is_final(it.state))) {   // every task, the PM's too
                const auto n = ran.find(it.id);
                if (auto why = detail::check_events_exact(evs, it, s.queued.count(it.id) > 0, n == ran.end() ? 0 : n->second);
                    !why.empty())
                    w.add_violation("events", "task " + it.id + ": " + why);
            }
            if (it.role != role::dev) continue;
            if (!is_final(it.state)) {
                if (s.no_daemon_left) {
                    ++r.stranded;
                } else {
                    ++r.lost;
                    w.add_violation("lost_task", "task " + it.id + " ended " + std::string(to_string(it.state)));
                }
            }
            if (it.attempts > it.max_attempts)
                w.add_violation("attempts", "task " + it.id + " made " + std::to_string(it.attempts) + " attempts");
            if (!fixed)
                if (auto why = detail::check_events(evs, it, w.kills() > 0); !why.empty())
                    w.add_violation("events", "task " + it.id + ": " + why);
            if (auto why = detail::check_exit_code(w, it); !why.empty()) w.add_violation("exit_code", "task " + it.id + ": " + why);
        }
        if (fixed && sc.outbox) {
            // Nothing committed is lost: the events file holds the whole outbox. And without
            // kills, the processes relayed it all themselves.
            std::set<std::uint64_t> held;
            for (const auto& e : s.log->events) held.insert(e.seq);
            for (const auto& e : s.store.events_after(0, static_cast<std::size_t>(-1), ec))
                if (!held.count(e.seq)) {
                    w.add_violation("events", "event #" + std::to_string(e.seq) + " (" + std::string(to_string(e.type)) +
                                                  " " + e.task_id + ") was committed and never delivered");
                    break;
                }
            if (w.kills() == 0 && r.late_events > 0)
                w.add_violation("events", std::to_string(r.late_events) +
                                              " committed events were relayed by no process of the run (without kills)");
        }
        r.violations = w.violations();
    }
    r.no_daemon_left = s.no_daemon_left;
    r.events = s.log->events;
    for (auto& [k, p] : w.procs())
        if (p.ran) r.agents.push_back(p);
    r.end = w.now();
    if (opt.keep_trace) r.trace = w.trace_log();
    return r;
}

} // namespace kugetsu::sim
