// kugetsu/sim/world.hpp: the deterministic simulator's core: simulated kugetsu processes
// (actors) as fibers on one OS thread (fiber.hpp), a scheduler that decides which actor moves at
// every shared step, a virtual clock, simulated agents, and the shared state they act on.
//
// An actor runs real code (for kugetsu, the real basic_dispatcher template) with policies
// bound to the world (sim/policies.hpp). Every policy call that touches shared state (lock,
// begin and commit of a unit of work, store read or write, spawn, poll, signal, an append to
// the events file) is a choice point: the actor stops there, and the chooser picks which
// ready actor runs next. Between two choice points an actor runs alone, so a schedule (the
// sequence of choices) determines the run completely: the same schedule gives a
// byte-identical trace.
//
// Three locks, each released by the world when its holder dies (as the kernel releases an
// flock or SQLite's POSIX locks): the cap lock (flock on HOME/lock), the store's write lock
// (SQLite's BEGIN IMMEDIATE: one unit of work open at a time) and the events file's lock.
//
// Agents are not coroutines: they are entries in the process table with an end time (drawn
// from the seed, the task and the attempt, so it does not depend on the schedule). An agent
// that would end by itself may also end earlier, at a choice point: each such agent is a
// choice beside the ready actors (agent_choice(pid)) wherever a ready actor's next step
// looks at agents (a poll, a signal, a daemon's check before it sleeps), so an end can land
// in the middle of a pass. Elsewhere an end commutes with every step (nothing else reads it),
// so offering it there would only repeat states. Virtual time moves only when no actor is
// ready: to the next agent end or actor wake-up (then agents end at their drawn times).
//
// Faults: SIGKILL of an actor at a step (it unwinds from its choice point; the locks it held
// are released; its open unit of work is rolled back, so its staged writes are lost; its held
// children exit without running; what it had not yet relayed stays in the store's outbox),
// exec failures, agent crashes and hangs, and PID reuse.
#pragma once

#include <algorithm>
#include <array>
#include <climits>
#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <optional>
#include <set>
#include <string>
#include <string_view>
#include <vector>

#include "fiber.hpp"

#include <kugetsu/json.hpp>
#include <kugetsu/store/memory_store.hpp>
#include <kugetsu/types.hpp>

namespace kugetsu::sim {

/// Thrown inside an actor that is SIGKILLed, to unwind it.
struct killed_signal {};
/// Thrown inside every actor when a run is cut short (exploration reached its prefix).
struct run_aborted {};

inline std::uint64_t mix(std::uint64_t x) noexcept {   // splitmix64 finaliser
    x += 0x9e3779b97f4a7c15ull;
    x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ull;
    x = (x ^ (x >> 27)) * 0x94d049bb133111ebull;
    return x ^ (x >> 31);
}
inline std::uint64_t mix(std::uint64_t h, std::uint64_t v) noexcept { return mix(h ^ mix(v)); }
inline std::uint64_t hash_text(std::string_view s) noexcept {
    std::uint64_t h = 0xcbf29ce484222325ull;
    for (unsigned char c : s) h = (h ^ c) * 0x100000001b3ull;
    return mix(h);
}

/// A deterministic random source (the same on every platform).
class rng {
public:
    explicit rng(std::uint64_t seed) : s_(seed) {}
    std::uint64_t next() noexcept { return mix(s_++); }
    /// Uniform in [0, n).
    std::uint64_t below(std::uint64_t n) noexcept { return n ? next() % n : 0; }
    bool chance(double p) noexcept { return p > 0 && static_cast<double>(next() >> 11) * 0x1p-53 < p; }

private:
    std::uint64_t s_;
};

/// What an actor does at its next step: a fixed name ("store.get", "poll") and, for some, an
/// argument (a pid, a sequence number, a task id, a state). Nothing is formatted while
/// exploring: str() builds the text only when a run is shown, and hash() reads the parts.
struct step_op {
    const char* name = "first step";   ///< a string literal (static storage)
    std::int64_t num = -1;             ///< a pid or a sequence number, or -1
    std::string text;                  ///< a task id or a state, or empty (short: no allocation)

    step_op() = default;
    step_op(const char* n) : name(n) {}   // NOLINT: implicit, so that choice("what") reads plainly
    step_op(const char* n, std::int64_t v) : name(n), num(v) {}
    step_op(const char* n, std::string_view t) : name(n), text(t) {}
    /// A name built at run time (a host's own policy): kept as text.
    explicit step_op(std::string t) : name(""), text(std::move(t)) {}

    std::string str() const {
        std::string s = name;
        if (num >= 0) s += (s.empty() ? "" : " ") + std::to_string(num);
        if (!text.empty()) s += (s.empty() ? "" : " ") + text;
        return s;
    }
    /// Whether the step is `n`, whatever its argument.
    bool is(std::string_view n) const noexcept { return n == name; }
};

enum class actor_status { ready, blocked, done };
enum class wait_kind { none, lock, event, agent };
/// What an actor is: a client command (enqueue, start, pause; the daemon stops once every
/// client is done), a daemon (restarted when killed, as a service manager would; a child
/// subreaper: it adopts the agents of the supervisors it started), or an agent's supervisor.
enum class actor_kind { client, daemon, supervisor };

/// The world's locks. Each blocks while another actor holds it and is released when its
/// holder dies.
enum class lock_kind : int {
    cap,      ///< the critical section's lock (flock on HOME/lock)
    db,       ///< the store's write lock: one unit of work at a time (SQLite's BEGIN IMMEDIATE)
    events,   ///< the events file's lock (jsonl_notifier's flock during a relay)
};
inline constexpr std::size_t lock_kinds = 3;
constexpr std::string_view to_string(lock_kind k) noexcept {
    return k == lock_kind::cap ? "lock" : k == lock_kind::db ? "db" : "events";
}

struct actor {
    int id = 0;
    int creator = -1;              ///< the actor whose step added it (-1: added before the run)
    std::string name;
    std::function<void()> body;
    actor_status status = actor_status::ready;
    wait_kind waiting = wait_kind::none;
    int lock_wanted = -1;          ///< waiting for a lock: which (lock_kind)
    std::optional<timestamp> wake_at;
    bool kill_requested = false;
    bool killed = false;
    actor_kind kind = actor_kind::client;
    bool client = true;            ///< kind == client (starter, enqueuer, PM starter)
    std::uint64_t watched = 0;     ///< waiting for an agent's end: its start time (proc key)
    bool watch_release = false;    ///< ... or only for its release (wait_agent(ref, true))
    std::vector<int> watch_deaths; ///< waiting for an event: actors whose end also wakes it (pidfds)
    std::uint64_t history = 0;     ///< hash of everything it observed
    std::uint64_t seen_events = 0; ///< the world's event count when it last looked
    bool wants_commits = false;    ///< a commit also wakes it from wait_event (a client's wait)
    std::uint64_t seen_commits = 0;   ///< the world's commit count when it last looked
    step_op next_op;
    bool observes_agents = false;  ///< its next step looks at agents (poll, signal, the wait)
    bool lazy = false;             ///< its next step is seen only by steps that look at agents (lazy_choice)
    process_ref self;
    sim::fiber fiber;              ///< its stack (fiber.hpp); started() once it first ran
};

enum class proc_status { held, running, exited, reaped, abandoned };

/// A simulated agent process.
struct proc {
    process_ref ref;
    bool exec_failed = false;        ///< released, and its exec failed: it never ran
    std::string task_id;
    kugetsu::role role = role::dev;
    int spawner = -1;                ///< the actor that spawned it (held: it releases or abandons it)
    int sup = -1;                    ///< its supervisor actor (-1: none, the legacy design)
    int parent = -1;                 ///< the actor that reaps it: its supervisor, else its spawner;
                                     ///< -1 once init has it (an orphan: its exit code is lost)
    bool recorded = false;           ///< its supervisor (or an adopting daemon) wrote its exit record
    bool sup_killed = false;         ///< its supervisor was SIGKILLed
    bool adopted = false;            ///< its exit record was written by the daemon that adopted it
    proc_status status = proc_status::held;
    bool ran = false;                ///< released: the program ran
    std::optional<timestamp> ends_at;  ///< running: when it exits by itself; none: hangs
    int exit_code = 0;               ///< the code it will exit with / exited with
    bool ignore_term = false;
    timestamp started{}, ended{};
    std::uint64_t started_step = 0, ended_step = 0;   ///< the run's step count when it began and ended running
    int attempt = 0;
};

/// One line of the trace.
struct trace_entry {
    std::uint64_t step = 0;
    timestamp time{};
    std::string actor;
    std::string op;
    std::string detail;
};

struct violation {
    std::string kind;      ///< cap, unrecorded, duplicate_start, lost_task, attempts, events, idle_slot
    std::string detail;
    std::uint64_t step = 0;
    timestamp time{};      ///< virtual time when it was seen
};

/// Faults injected into a run.
struct fault_plan {
    double exec_failure = 0;   ///< chance that a release (exec) fails
    double agent_crash = 0;    ///< chance that an agent exits non-zero
    double agent_hang = 0;     ///< chance that an agent never exits by itself
    double kill = 0;           ///< chance, at each step, that the chosen actor is SIGKILLed
    /// Kills per run at most; unset: 3 with a kill chance, else none (kill_budget()).
    std::optional<int> max_kills;
    bool pid_reuse = false;    ///< reuse the pids of reaped processes
    int kill_budget() const noexcept { return max_kills.value_or(kill > 0 ? 3 : 0); }
    bool any() const noexcept { return exec_failure > 0 || agent_crash > 0 || agent_hang > 0 || kill > 0 || pid_reuse; }
};

class world;

/// Picks the next actor at a choice point.
class chooser {
public:
    /// The world being run (set by world::run): a chooser may look at the actors' next_op.
    const world* running = nullptr;
    virtual ~chooser() = default;
    /// ready: the ids of the ready actors, ascending, never empty. Returns one of them.
    virtual int choose(const std::vector<int>& ready, std::uint64_t state_hash) = 0;
    /// Whether the next choose() reads its state_hash (with hashing on; else it gets 0): the
    /// hash of the whole state is computed only for the steps that need it.
    virtual bool wants_state_hash() const { return true; }
    /// Whether the actor just chosen is SIGKILLed there (faults). Schedules record a kill
    /// as -(actor + 1).
    virtual bool kill_here(int /*actor*/) { return false; }
    /// Set by choose() to end the run at this choice point (exploration of a prefix).
    bool stop_run = false;
};

class world {
public:
    explicit world(std::uint64_t seed, fault_plan faults = {}) : seed_(seed), faults_(faults) {}
    world(const world&) = delete;
    world& operator=(const world&) = delete;

    ~world() { unwind_all(); }

    // ---- building a run ------------------------------------------------------------------

    /// Adds an actor. It may be called while running (a background job, a restarted daemon).
    int add_actor(std::string name, std::function<void()> body, actor_kind kind = actor_kind::client) {
        auto a = std::make_unique<actor>();
        a->id = static_cast<int>(actors_.size());
        a->creator = current_;
        a->name = std::move(name);
        a->body = std::move(body);
        a->kind = kind;
        a->client = kind == actor_kind::client;
        a->self = new_ref();
        actors_.push_back(std::move(a));
        if (tracing_) trace(actors_.back()->id, "actor", actors_.back()->name);
        return actors_.back()->id;
    }

    /// Called when an actor is killed: the scenario can restart a daemon.
    std::function<void(const actor&)> on_killed;
    /// Called when an agent is spawned (the caller's step): the scenario can add its
    /// supervisor (set proc::sup and proc::parent to the new actor). Unset: no supervisors.
    std::function<void(proc&)> on_spawn;
    /// Invariants checked after every step; may add violations.
    std::function<void()> check_step;

    // ---- running -------------------------------------------------------------------------

    /// Runs until no actor is ready and no timed event is left, or a limit is hit.
    void run(chooser& ch, std::uint64_t max_steps = 200000) {
        chooser_ = &ch;
        ch.running = this;
        std::vector<int> ready;   // kept across steps: no allocation per step
        while (!stop_) {
            ready.clear();
            if (exclusive_ >= 0) {   // a kill point inside a critical section: it, or its kill
                ready.push_back(exclusive_);
            } else {
                // With atomic critical sections, a lazy step is offered only where another
                // ready step looks at agents, or where nothing else is ready (see lazy_choice).
                bool eager = false, observer = false;
                if (atomic_cs_)
                    for (auto& a : actors_)
                        if (a->status == actor_status::ready && !a->lazy) {
                            eager = true;
                            observer = observer || a->observes_agents;
                        }
                const bool offer_lazy = !atomic_cs_ || observer || !eager;
                for (auto& a : actors_)
                    if (a->status == actor_status::ready && (offer_lazy || !a->lazy)) ready.push_back(a->id);
            }
            if (ready.empty()) {
                if (!advance_time()) {
                    // Quiescent (nothing ready, no time to move to): who is still blocked,
                    // for ever.
                    for (auto& a : actors_)
                        if (a->status == actor_status::blocked) blocked_at_end_.push_back(a->id);
                    break;
                }
                continue;
            }
            // An agent may end at any step, not only when every actor sleeps: each running
            // agent that would end by itself is a choice too (see agent_choice()).
            if (early_ends_ < max_early_ends_ && exclusive_ < 0 &&
                std::any_of(ready.begin(), ready.end(), [&](int id) { return get(id).observes_agents && !get(id).lazy; }))
                for (auto& [k, p] : procs_)
                    if (p.status == proc_status::running && p.ends_at) ready.push_back(agent_choice(p.ref.pid));
            if (step_ >= max_steps) {
                add_violation("step_limit", "no quiescence after " + std::to_string(step_) + " steps");
                break;
            }
            const std::uint64_t h = want_hash_ && ch.wants_state_hash() ? state_hash() : 0;
            const int who = ch.choose(ready, h);
            exclusive_ = -1;
            if (ch.stop_run) stop_ = true;
            if (stop_) break;
            ++step_;
            if (is_agent_choice(who)) {
                if (recording_ops_) step_ops_.emplace_back("agent.exit");
                schedule_.push_back(who);
                if (proc* p = running_agent(who - agent_choice_base)) {
                    ++early_ends_;
                    agent_ended(*p, "chosen");
                    wake_event_waiters();
                }
                if (check_step) check_step();
                continue;
            }
            actor& a = *actors_.at(static_cast<std::size_t>(who));
            if (recording_ops_) step_ops_.push_back(a.next_op);
            if (kills_ < faults_.kill_budget() && ch.kill_here(who)) {
                a.kill_requested = true;
                ++kills_;
                schedule_.push_back(-(who + 1));   // a kill is part of the schedule
            } else {
                schedule_.push_back(who);
            }
            resume(a);
            if (check_step) check_step();
        }
        unwind_all();
    }
    /// The actors still blocked when the run went quiescent (none if it was stopped, or ended
    /// at its step limit): each would wait for ever.
    const std::vector<int>& blocked_at_end() const noexcept { return blocked_at_end_; }

    /// A choice that is not an actor: "the running agent with this pid ends now" (exit code
    /// as drawn for it), recorded in schedules as agent_choice_base + pid.
    static constexpr int agent_choice_base = 1 << 20;
    static constexpr int agent_choice(int pid) noexcept { return agent_choice_base + pid; }
    static constexpr bool is_agent_choice(int c) noexcept { return c >= agent_choice_base; }
    /// How many agents may end by a choice in one run (a bound, as max_kills is, for the
    /// exhaustive search); the others end at their drawn times. Default: no bound. 0: agents
    /// end only when no actor is ready, as in the simulator of earlier releases.
    void set_max_early_ends(int n) noexcept { max_early_ends_ = n; }
    int early_ends() const noexcept { return early_ends_; }

    /// Makes the run stop at the next choice point (exploration: the prefix is done).
    void stop() noexcept { stop_ = true; }
    bool stopped() const noexcept { return stop_; }
    void want_state_hash(bool on) noexcept { want_hash_ = on; }
    /// The state hash keeps what has no future too (see state_hash()): a finished actor's
    /// history, how many events an actor has not seen, a daemon's observations of its last
    /// pass while it waits. The finer state space, to check the coarser one against.
    void set_fine_states(bool on) noexcept { fine_states_ = on; }
    bool fine_states() const noexcept { return fine_states_; }
    /// Whether histories and record hashes are kept (exhaustive search needs them).
    bool hashing() const noexcept { return want_hash_; }

    // ---- for policies: called from inside an actor ----------------------------------------

    int current() const noexcept { return current_; }
    actor& me() { return *actors_.at(static_cast<std::size_t>(current_)); }
    const actor& get(int id) const { return *actors_.at(static_cast<std::size_t>(id)); }
    std::size_t actor_count() const noexcept { return actors_.size(); }

    /// A choice point: the current actor will do `op` when it is chosen next. With atomic
    /// critical sections, the steps of an actor that holds a lock are not choice points (see
    /// set_atomic). If the actor is killed there (or the run is cut short), it unwinds from
    /// here (killed_signal, run_aborted).
    /// `observes_agents`: the step looks at agents (whether one has ended): agents' ends are
    /// choices before it (see agent_choice()).
    void choice(step_op op, bool observes_agents = false) {
        if (choice_nothrow(std::move(op), false, observes_agents)) die();
    }

    /// The same choice point for code that must not throw (it runs inside a noexcept function
    /// or a catch-all, such as a notifier's relay): returns true if the actor dies here. It
    /// must then stop at once and touch nothing shared; it unwinds at its next choice point
    /// or die_if_killed().
    /// `reorderable`: a step whose moment changes no decision of any actor (a relay to the
    /// events file, which only relays and the final check read): with atomic critical
    /// sections it is not a choice point either, so it runs right after the actor's
    /// previous step.
    [[nodiscard]] bool choice_nothrow(step_op op, bool reorderable = false, bool observes_agents = false) {
        me().next_op = std::move(op);
        me().observes_agents = observes_agents;
        me().lazy = false;
        if (atomic_cs_ && (reorderable || holds_any(current_))) {
            if (!kill_points_ || kills_ >= faults_.kill_budget() || unwinding_) return false;
            // A kill point: no other actor runs here (the reduction stands), but the actor
            // may be SIGKILLed before this step, a choice of its own.
            exclusive_ = current_;
        }
        return switch_out_nothrow();
    }

    /// A choice point for a step whose effects only steps that look at agents can see (a
    /// supervisor's exit record: a poll or a daemon's wait sees it, nothing else does), taken
    /// by an actor that holds no lock. With atomic critical sections (exhaustive search) it is
    /// offered only where another ready step looks at agents, or where no other step is
    /// ready: moving it later past steps that cannot see it changes nothing any actor sees, so
    /// no outcome is lost (the reduction test compares outcomes with and without). Its kill
    /// is deferred with it, which is sound when the kill's effects are seen only by those
    /// steps too (a supervisor's: its agent's new parent, seen when a poll meets its end).
    void lazy_choice(step_op op) {
        me().next_op = std::move(op);
        me().observes_agents = false;
        me().lazy = true;
        if (switch_out_nothrow()) die();
    }

    /// Unwinds the current actor now if it was killed at a choice_nothrow() (or the run is
    /// being cut short). Scenarios call it after each operation of a dispatcher.
    void die_if_killed() {
        if (dying()) die();
    }
    /// Whether the current actor is dead, or being unwound.
    bool dying() const { return unwinding_ || (current_ >= 0 && get(current_).killed); }
    /// Whether the world is unwinding the actors at the end of a run (no trace then).
    bool unwinding() const noexcept { return unwinding_; }

    /// Partial-order reduction for exhaustive search: run each critical section without
    /// interruption: an actor that holds a lock (the cap lock, the store's write lock or the
    /// events file's) takes its steps without choice points until it holds none. Sound when
    /// every shared step except a unit of work that creates a record happens under the cap
    /// lock (the fixed design): a unit's writes are invisible until its commit and its reads
    /// see a committed state that no other actor can change while it is open, so a unit
    /// commutes with every step that cannot observe its commit; a relay only appends, in
    /// order, what committed units wrote. Not used with kills (a kill inside a critical
    /// section matters).
    void set_atomic(bool on) noexcept { atomic_cs_ = on; }
    bool atomic() const noexcept { return atomic_cs_; }
    /// With atomic critical sections, kills inside them too: while the run's kill budget
    /// (fault_plan::kill_budget()) lasts, each step an atomic section would take without a choice
    /// point is a kill point, where the only choices are the actor's step and its SIGKILL
    /// there (no other actor moves, so the reduction still holds). The exhaustive search
    /// branches on both, so a kill at any step of any simulated process is explored.
    void set_kill_points(bool on) noexcept { kill_points_ = on; }
    /// Whether the pending choice is a kill point (only the actor, or its kill).
    bool at_kill_point() const noexcept { return exclusive_ >= 0; }
    /// Whether a kill can still be chosen in this run (its budget, fault_plan::kill_budget()).
    bool can_kill() const noexcept { return kills_ < faults_.kill_budget(); }

    /// Forgets what the current actor observed: for an actor at a point of its program where
    /// its future depends on the shared state only (a daemon at the top of its loop).
    void reset_history() {
        if (current_ >= 0) me().history = 0;
    }

    /// How many times a task's agent was spawned (shared, so part of the state).
    int& spawns_of(const std::string& task) { return spawns_[task]; }

    /// Mixes an observation into the current actor's history (for state hashing).
    void observe(std::uint64_t h) {
        if (want_hash_ && current_ >= 0) me().history = mix(me().history, h);
    }

    /// Whether the run keeps its trace and the list of its steps' ops (exploration turns both
    /// off: nothing is formatted then; a kept or replayed run turns them on).
    bool tracing() const noexcept { return tracing_; }
    void set_recording(bool trace, bool ops) noexcept {
        tracing_ = trace;
        recording_ops_ = ops;
    }

    /// Adds a line to the trace, if it is kept. Callers that build `detail` test tracing()
    /// first.
    void trace(int who, std::string op, std::string detail = {}) {
        if (!tracing_) return;
        trace_.push_back({step_, now_, who >= 0 ? get(who).name : std::string("world"), std::move(op), std::move(detail)});
    }

    // locks
    /// Takes lock `k`, after a choice point named `op`; blocks while another actor holds it.
    void acquire(lock_kind k, step_op op) {
        if (!acquire_nothrow(k, std::move(op))) die();
    }
    /// The same for code that must not throw: false if the actor dies first (it holds
    /// nothing new then).
    [[nodiscard]] bool acquire_nothrow(lock_kind k, step_op op, bool reorderable = false) {
        // With atomic critical sections the steps inside one are no choice points, so an
        // agent's end that its polls would see is offered before the cap lock is taken.
        if (choice_nothrow(std::move(op), reorderable, atomic_cs_ && k == lock_kind::cap)) return false;
        int& h = holders_[static_cast<std::size_t>(k)];
        while (h != -1 && h != current_) {
            me().status = actor_status::blocked;
            me().waiting = wait_kind::lock;
            me().lock_wanted = static_cast<int>(k);
            if (switch_out_nothrow()) return false;
        }
        h = current_;
        return true;
    }
    /// Releases lock `k` if the current actor holds it. Not a choice point.
    void release(lock_kind k) noexcept {
        if (holders_[static_cast<std::size_t>(k)] != current_ || current_ < 0) return;
        free_lock(k);
    }
    int holder(lock_kind k) const noexcept { return holders_[static_cast<std::size_t>(k)]; }
    bool holds_any(int id) const noexcept {
        return id >= 0 && std::find(holders_.begin(), holders_.end(), id) != holders_.end();
    }

    // the cap lock
    void lock_acquire() {
        acquire(lock_kind::cap, "lock");
        trace(current_, "lock");
    }
    void lock_release() noexcept {
        if (holder(lock_kind::cap) != current_) return;
        release(lock_kind::cap);
        if (!unwinding_) trace(current_, "unlock");
    }
    int lock_holder() const noexcept { return holder(lock_kind::cap); }

    /// Events are level-triggered, like an eventfd or inotify: an event that happened while
    /// an actor was busy is still there when it next waits. True if one is waiting for it.
    bool has_unseen_event() const { return event_seq_ != get(current_).seen_events; }
    void consume_events() { me().seen_events = event_seq_; }

    /// Blocks the current actor until an agent ends, a task is enqueued, or `deadline`;
    /// returns at once if an event came since it last looked.
    void wait_event(std::optional<timestamp> deadline) {
        if (has_unseen_event()) {
            consume_events();
            return;
        }
        me().status = actor_status::blocked;
        me().waiting = wait_kind::event;
        me().wake_at = deadline;
        if (tracing_) trace(current_, "sleep", deadline ? "until " + format_rfc3339(*deadline) : "until an event");
        switch_out();
        consume_events();
    }
    /// Blocks the current actor until agent `ref` is neither held nor running (it exited, was
    /// abandoned, or its exec failed). Not a choice point: the step that follows is.
    /// `released`: only until it is no longer held.
    void wait_agent(const process_ref& ref, bool released = false) {
        for (;;) {
            const proc* p = find_proc(ref);
            if (!p || (p->status != proc_status::held && (released || p->status != proc_status::running))) return;
            me().status = actor_status::blocked;
            me().waiting = wait_kind::agent;
            me().watched = ref.start_time;
            me().watch_release = released;
            switch_out();
        }
    }
    /// What actor `id`, not started yet, is shown doing at its first step.
    /// `lazy`: that step is a lazy one (lazy_choice).
    void set_first_op(int id, step_op op, bool lazy = false) {
        actor& a = *actors_.at(static_cast<std::size_t>(id));
        a.next_op = std::move(op);
        a.lazy = lazy;
    }
    /// Makes actor `id`, not started yet, wait for agent `ref` as wait_agent() would: its first
    /// step, `op`, is a choice once the agent is neither held nor running (so that an actor
    /// whose first act is to react to an agent's end takes no step before it).
    void start_waiting_for(int id, const process_ref& ref, step_op op, bool lazy = false) {
        set_first_op(id, std::move(op), lazy);
        actor& a = *actors_.at(static_cast<std::size_t>(id));
        const proc* p = find_proc(ref);
        if (!p || (p->status != proc_status::held && p->status != proc_status::running)) return;
        a.status = actor_status::blocked;
        a.waiting = wait_kind::agent;
        a.watched = ref.start_time;
        a.watch_release = false;
    }
    /// An agent left the held or running state: its watchers (wait_agent) become ready.
    /// `released`: it was released and runs (only watchers of its release wake).
    void agent_settled(const proc& p, bool released = false) noexcept {
        for (auto& a : actors_)
            if (a->waiting == wait_kind::agent && a->status == actor_status::blocked && a->watched == p.ref.start_time &&
                (!released || a->watch_release)) {
                a->status = actor_status::ready;
                a->waiting = wait_kind::none;
            }
    }
    /// The actor that adopts the agents of a killed supervisor spawned by `spawner`: the
    /// spawner if it is a live daemon (a child subreaper), else -1 (init).
    int subreaper_for(int spawner) const {
        return actor_alive(spawner) && get(spawner).kind == actor_kind::daemon ? spawner : -1;
    }

    /// A unit of work committed: wakes the actors that wait for commits (wants_commits), as
    /// the store's change signal wakes a `kugetsu wait`. Daemons do not wake on it (they wake
    /// for enqueues and agents' ends: notify_event).
    void notify_commit() {
        ++commit_seq_;
        for (auto& a : actors_)
            if (a->wants_commits && a->waiting == wait_kind::event && a->status == actor_status::blocked) {
                a->status = actor_status::ready;
                a->waiting = wait_kind::none;
                a->wake_at.reset();
            }
    }
    bool has_unseen_commit() const { return commit_seq_ != get(current_).seen_commits; }
    void consume_commits() { me().seen_commits = commit_seq_; }

    /// Wakes every actor waiting for an event.
    void notify_event() {
        ++event_seq_;
        for (auto& a : actors_)
            if (a->waiting == wait_kind::event && a->status == actor_status::blocked) {
                a->status = actor_status::ready;
                a->waiting = wait_kind::none;
                a->wake_at.reset();
            }
    }

    // time
    timestamp now() const noexcept { return now_; }

    // processes
    process_ref new_ref() {
        int pid;
        if (faults_.pid_reuse && !free_pids_.empty()) {
            pid = free_pids_.front();
            free_pids_.erase(free_pids_.begin());
        } else {
            pid = next_pid_++;
        }
        return {pid, ++start_counter_, "sim-boot"};
    }
    std::map<std::uint64_t, proc>& procs() noexcept { return procs_; }   // keyed by start time
    const std::map<std::uint64_t, proc>& procs() const noexcept { return procs_; }
    proc* find_proc(const process_ref& p) {
        auto it = procs_.find(p.start_time);
        if (it == procs_.end() || it->second.ref != p) return nullptr;
        return &it->second;
    }
    const actor* find_actor(const process_ref& p) const {
        for (auto& a : actors_)
            if (a->self == p) return a.get();
        return nullptr;
    }
    /// Status changes of agents go through these, which keep the live count and the number
    /// of times each task's program ran (the per-step invariants read them in O(1)).
    void mark_running(proc& p) {
        p.status = proc_status::running;
        agent_settled(p, /*released=*/true);   // those waiting for its release go on
        p.ran = true;
        p.started_step = step_;
        ++recording_changes_;
        if (p.role == role::dev) ++live_dev_;
        if (++ran_[p.task_id] > 1) twice_ = p.task_id;
    }
    void mark_exited(proc& p) {
        if (p.status == proc_status::running && p.role == role::dev) --live_dev_;
        if (p.status == proc_status::running) p.ended_step = step_;
        p.status = proc_status::exited;
        agent_settled(p);
    }
    /// A held agent exits without running the program (its spawner or supervisor died, or
    /// it was abandoned).
    void mark_abandoned(proc& p) {
        p.status = proc_status::abandoned;
        agent_settled(p);
    }
    int live_dev() const noexcept { return live_dev_; }
    /// Counts the changes that can leave an agent running unrecorded: an agent starts
    /// running, a commit writes sessions (the simulated store calls sessions_committed()).
    std::uint64_t recording_changes() const noexcept { return recording_changes_; }
    void sessions_committed() noexcept { ++recording_changes_; }
    /// The last task whose program ran again (a second agent of it, or a later one), or "".
    const std::string& ran_twice() const noexcept { return twice_; }
    /// Forgets ran_twice() (the per-step check has looked at it).
    void clear_ran_twice() noexcept { twice_.clear(); }
    /// How many agents of `task` ran their program.
    int runs_of(const std::string& task) const {
        const auto it = ran_.find(task);
        return it == ran_.end() ? 0 : it->second;
    }

    /// A process's pid becomes reusable once it has been reaped.
    void reaped(proc& pr) {
        const bool settles = pr.status == proc_status::held || pr.status == proc_status::running;
        pr.status = proc_status::reaped;
        if (settles) agent_settled(pr);
        if (faults_.pid_reuse) free_pids_.push_back(pr.ref.pid);
    }
    bool actor_alive(int id) const { return id >= 0 && !get(id).killed && get(id).status != actor_status::done; }

    // faults and randomness
    const fault_plan& faults() const noexcept { return faults_; }
    std::uint64_t seed() const noexcept { return seed_; }
    /// A draw that depends only on the seed and the key, never on the schedule.
    std::uint64_t draw(std::string_view key) const noexcept { return mix(seed_, hash_text(key)); }
    bool draw_chance(std::string_view key, double p) const noexcept {
        return p > 0 && static_cast<double>(draw(key) >> 11) * 0x1p-53 < p;
    }

    // results
    void add_violation(std::string kind, std::string detail) {
        if (!stop_at_.empty() && (kind == stop_at_ || stop_at_ == "any")) stop_ = true;
        if (violations_.size() < 64) violations_.push_back({std::move(kind), std::move(detail), step_, now_});
    }
    /// Stops the run at the first violation of this kind, or of any with "any" (the
    /// shrinker's replays: what comes after it cannot make that violation earlier). Empty:
    /// run on.
    void stop_at(std::string kind) { stop_at_ = std::move(kind); }
    const std::vector<violation>& violations() const noexcept { return violations_; }
    const std::vector<trace_entry>& trace_log() const noexcept { return trace_; }
    const std::vector<int>& schedule() const noexcept { return schedule_; }
    /// What each step did: the chosen actor's pending operation ("store.list_sessions", ...).
    /// Kept only while recording (set_recording).
    std::vector<std::string> step_ops() const {
        std::vector<std::string> v;
        v.reserve(step_ops_.size());
        for (const auto& o : step_ops_) v.push_back(o.str());
        return v;
    }
    std::uint64_t steps() const noexcept { return step_; }
    int kills() const noexcept { return kills_; }

    /// Global state, for exhaustive search: store, lock, processes, actors, time. Two states
    /// with the same hash are taken to have the same futures. Each actor's own state is its
    /// next step and the hash of what it observed (its history: the program's local data is
    /// on its stack, out of sight). Left out, as they change no future: what a finished actor
    /// saw (it takes no more steps; that it finished, and whether killed, stays), how many
    /// events an actor has missed beyond one, and (run.hpp) a waiting daemon's observations
    /// before its wake plan, which is all serve() keeps across the wait. set_fine_states
    /// keeps them, and a test compares the outcomes of both searches.
    std::uint64_t state_hash() const {
        std::uint64_t h = mix(static_cast<std::uint64_t>(now_.time_since_epoch().count()) ^
                                  (static_cast<std::uint64_t>(early_ends_) << 56) ^ (static_cast<std::uint64_t>(kills_) << 60),
                              static_cast<std::uint64_t>(holders_[0] + 7) | static_cast<std::uint64_t>(holders_[1] + 7) << 16 |
                                  static_cast<std::uint64_t>(holders_[2] + 7) << 32 |
                                  static_cast<std::uint64_t>(exclusive_ + 7) << 48);
        h = mix(h, store_hash);
        h = mix(h, events_hash);
        for (auto& [k, p] : procs_)
            h = mix(h, mix(p.ref.start_time, (static_cast<std::uint64_t>(p.status) << 32) ^ (p.ran ? 1u : 0u) ^
                                                 (p.recorded ? 2u : 0u) ^ (static_cast<std::uint64_t>(p.parent + 1) << 8)));
        for (auto& a : actors_) {
            if (a->status == actor_status::done && !fine_states_) {   // no future: only that it is done
                h = mix(h, a->killed ? 3u : 5u);
                continue;
            }
            // Only whether it has missed an event is read (has_unseen_event()), not how many.
            const std::uint64_t unseen = fine_states_ ? mix(event_seq_ - a->seen_events) : event_seq_ != a->seen_events ? 0x9e3779b97f4a7c15ull : 0u;
            h = mix(h, mix(a->history ^ unseen, op_hash(a->next_op) ^ (static_cast<std::uint64_t>(a->status) << 1) ^
                                           (static_cast<std::uint64_t>(a->waiting) << 4) ^ (a->killed ? 1u << 7 : 0u) ^
                                           (static_cast<std::uint64_t>(a->lock_wanted + 1) << 8) ^ (a->watched << 20) ^
                                           (a->wants_commits && commit_seq_ != a->seen_commits ? 1u << 19 : 0u)));
        }
        return h;
    }

    static std::uint64_t op_hash(const step_op& o) noexcept {
        return mix(hash_text(o.name) ^ static_cast<std::uint64_t>(o.num), hash_text(o.text));
    }

    /// Maintained by the simulated store (its committed state: records, outbox, limits) and
    /// the simulated notifier (the events it holds).
    std::uint64_t store_hash = 0;
    std::uint64_t events_hash = 0;

    static constexpr std::size_t stack_size = stack_pool::size;

private:
    /// An actor's whole life on its own stack. Nothing may escape it (but Boost's own unwind
    /// of a fiber destroyed unfinished, which never happens here: unwind_all() ends them).
    void body_of(actor& a) {
        try {
            a.body();
        } catch (const killed_signal&) {
        } catch (const run_aborted&) {
        } catch (const boost::context::detail::forced_unwind&) {
            throw;
        } catch (const std::exception& e) {
            add_violation("exception", a.name + ": " + e.what());
        } catch (...) {
            add_violation("exception", a.name + ": an exception of an unknown type");
        }
        finished(a);
    }

    void finished(actor& a) {
        a.status = actor_status::done;
        // The kernel releases an flock, and SQLite's POSIX locks, when their holder dies. (Its
        // unit of work was rolled back as it unwound: the store object was destroyed.)
        for (std::size_t k = 0; k < lock_kinds; ++k)
            if (holders_[k] == a.id) free_lock(static_cast<lock_kind>(k));
        for (auto& [k, p] : procs_) {
            // A held agent whose spawner or supervisor died exits without running.
            if ((p.spawner == a.id || p.sup == a.id) && p.status == proc_status::held) {
                mark_abandoned(p);
                if (!unwinding_ && tracing_) trace(a.id, "abandoned", "pid " + std::to_string(p.ref.pid));
            }
            // A supervisor's agent goes to the nearest subreaper (a live daemon that spawned
            // it), or to init, which reaps it at once if it has ended: its code is lost.
            if (p.sup == a.id && a.killed) p.sup_killed = true;
            if (p.sup >= 0 && p.parent == a.id) {
                p.parent = subreaper_for(p.spawner);
                if (p.parent < 0 && p.status == proc_status::exited) reaped(p);
                if (!unwinding_ && tracing_ && p.status != proc_status::reaped)
                    trace(a.id, "orphaned", "pid " + std::to_string(p.ref.pid) + " to " + (p.parent < 0 ? "init" : get(p.parent).name));
            }
        }
        if (!unwinding_) {
            // Its pidfd becomes readable: actors that watch it wake.
            for (auto& b : actors_)
                if (b->waiting == wait_kind::event && b->status == actor_status::blocked &&
                    std::find(b->watch_deaths.begin(), b->watch_deaths.end(), a.id) != b->watch_deaths.end()) {
                    b->status = actor_status::ready;
                    b->waiting = wait_kind::none;
                    b->wake_at.reset();
                }
            trace(a.id, a.killed ? "killed" : "exit");
            if (a.killed && on_killed) on_killed(a);
        }
    }

    void resume(actor& a) {
        current_ = a.id;
        switch_.resume(a.fiber, [this, ap = &a] { body_of(*ap); });
        current_ = -1;
    }

    /// Back to the scheduler; on return, dies if killed or aborted.
    void switch_out() {
        if (switch_out_nothrow()) die();
    }
    /// Back to the scheduler; on return, true if the actor must die (killed or aborted).
    bool switch_out_nothrow() {
        actor& a = me();
        switch_.suspend(a.fiber);
        if (a.kill_requested && !a.killed) {
            a.killed = true;
            if (!unwinding_ && tracing_) trace(a.id, "SIGKILL", "before " + a.next_op.str());
        }
        if (a.waiting == wait_kind::lock && (unwinding_ || a.killed)) {   // dies while it waits
            a.status = actor_status::ready;
            a.waiting = wait_kind::none;
            a.lock_wanted = -1;
        }
        return unwinding_ || a.killed;
    }
    [[noreturn]] void die() {
        if (unwinding_) throw run_aborted{};
        throw killed_signal{};
    }

    void free_lock(lock_kind k) noexcept {
        holders_[static_cast<std::size_t>(k)] = -1;
        for (auto& b : actors_)
            if (b->waiting == wait_kind::lock && b->status == actor_status::blocked && b->lock_wanted == static_cast<int>(k)) {
                b->status = actor_status::ready;
                b->waiting = wait_kind::none;
                b->lock_wanted = -1;
            }
    }

    /// Nothing is ready: move time to the next agent end or wake-up. False if there is none.
    bool advance_time() {
        std::optional<timestamp> next;
        for (auto& [k, p] : procs_)
            if (p.status == proc_status::running && p.ends_at && (!next || *p.ends_at < *next)) next = p.ends_at;
        for (auto& a : actors_)
            if (a->status == actor_status::blocked && a->waiting == wait_kind::event && a->wake_at &&
                (!next || *a->wake_at < *next))
                next = a->wake_at;
        if (!next) return false;
        if (*next > now_) now_ = *next;
        bool ended = false;
        for (auto& [k, p] : procs_)
            if (p.status == proc_status::running && p.ends_at && *p.ends_at <= now_) {
                agent_ended(p, "at its end time");
                ended = true;
            }
        for (auto& a : actors_)
            if (a->status == actor_status::blocked && a->waiting == wait_kind::event &&
                (ended || (a->wake_at && *a->wake_at <= now_))) {
                a->status = actor_status::ready;
                a->waiting = wait_kind::none;
                a->wake_at.reset();
            }
        return true;
    }

    /// A running agent ends now (an event for every waiter).
    void agent_ended(proc& p, const char* why) {
        mark_exited(p);
        p.ended = now_;
        ++event_seq_;
        if (tracing_) trace(-1, "agent_exit", p.task_id + " pid " + std::to_string(p.ref.pid) + " code " + std::to_string(p.exit_code) +
                                        " (" + why + ")");
    }
    void wake_event_waiters() {
        for (auto& a : actors_)
            if (a->status == actor_status::blocked && a->waiting == wait_kind::event) {
                a->status = actor_status::ready;
                a->waiting = wait_kind::none;
                a->wake_at.reset();
            }
    }
    proc* running_agent(int pid) {
        for (auto& [k, p] : procs_)
            if (p.ref.pid == pid && p.status == proc_status::running) return &p;
        return nullptr;
    }

    /// Unwinds every actor that has started and not finished, so their stacks free memory.
    void unwind_all() {
        if (unwinding_) return;
        unwinding_ = true;
        for (auto& a : actors_)
            if (a->status != actor_status::done && a->fiber.started()) resume(*a);
        unwinding_ = false;
    }

    std::uint64_t seed_;
    fault_plan faults_;
    std::vector<std::unique_ptr<actor>> actors_;
    fiber_switch switch_;   ///< the scheduler's side of every actor's switch (fiber.hpp)
    int current_ = -1;
    std::array<int, lock_kinds> holders_{-1, -1, -1};
    timestamp now_{std::chrono::sys_days{std::chrono::year{2026} / std::chrono::January / 1}};
    std::map<std::uint64_t, proc> procs_;
    std::map<std::string, int> spawns_;
    std::map<std::string, int> ran_;
    std::string twice_;
    int live_dev_ = 0;
    std::uint64_t recording_changes_ = 0;
    int max_early_ends_ = INT_MAX;
    int early_ends_ = 0;
    std::vector<int> free_pids_;
    int next_pid_ = 100;
    std::uint64_t start_counter_ = 0;
    std::vector<trace_entry> trace_;
    std::vector<violation> violations_;
    std::vector<int> schedule_;
    std::vector<step_op> step_ops_;
    std::uint64_t step_ = 0;
    std::uint64_t event_seq_ = 0;
    std::uint64_t commit_seq_ = 0;
    std::vector<int> blocked_at_end_;
    int kills_ = 0;
    chooser* chooser_ = nullptr;
    bool stop_ = false;
    std::string stop_at_;
    bool want_hash_ = false;
    bool fine_states_ = false;
    bool unwinding_ = false;
    bool atomic_cs_ = false;
    bool kill_points_ = false;
    int exclusive_ = -1;   ///< the actor at a kill point (the only choice there)
    bool tracing_ = true;
    bool recording_ops_ = true;
};

} // namespace kugetsu::sim
