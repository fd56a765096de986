// kugetsu/sim/explore.hpp: exploring schedules: random (seeded), PCT (priority-based, with a
// bug-depth parameter), exhaustive (depth-first over choice prefixes, every reachable state
// once, by state hashing), commit kills (the committing actor killed just before and just
// after each commit of a schedule), replay, and shrinking a counterexample to a short
// schedule.
//
// A schedule is the list of choices made at each step: an actor id, a kill recorded as
// -(id + 1), or an agent's end recorded as world::agent_choice(pid). Replaying (seed,
// schedule) reproduces a run exactly, trace byte for byte.
#pragma once

#include <algorithm>
#include <atomic>
#include <chrono>
#include <exception>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <set>
#include <string>
#include <system_error>
#include <thread>
#include <unordered_set>
#include <vector>

#include "run.hpp"

namespace kugetsu::sim {

/// The chance, at a step where agents are running, that the step is an agent's end (one of
/// them, uniformly) rather than an actor's move: an agent then lives 16 steps on average
/// per agent running, long enough to overlap with passes and starts.
inline constexpr double agent_end_chance = 1.0 / 16;

/// A random choice among `ready` (actors first, then agent ends): an agent's end with
/// agent_end_chance if there is one, else an actor, uniformly.
inline int random_choice(rng& g, const std::vector<int>& ready) {
    const auto agents = static_cast<std::size_t>(
        std::count_if(ready.begin(), ready.end(), [](int c) { return world::is_agent_choice(c); }));
    const std::size_t actors = ready.size() - agents;
    if (agents && (actors == 0 || g.chance(agent_end_chance))) return ready[actors + static_cast<std::size_t>(g.below(agents))];
    return ready[static_cast<std::size_t>(g.below(actors))];
}

/// Random among the ready actors and agent ends (random_choice); kills with the fault plan's
/// chance.
class random_chooser : public chooser {
public:
    random_chooser(std::uint64_t seed, double kill_chance) : rng_(seed), kill_(kill_chance) {}
    int choose(const std::vector<int>& ready, std::uint64_t) override { return random_choice(rng_, ready); }
    bool kill_here(int) override { return rng_.chance(kill_); }

private:
    rng rng_;
    double kill_;
};

/// PCT (Burckhardt et al., ASPLOS 2010): random distinct priorities, and depth-1 change
/// points at random steps where the running actor drops to the lowest priorities. Always runs
/// the highest-priority ready actor. Finds a bug of depth d with probability >= 1/(n k^(d-1)).
/// An agent's end is a thread of one step: it gets a priority of its own when it first can
/// happen, and happens when it is the highest.
class pct_chooser : public chooser {
public:
    pct_chooser(std::uint64_t seed, int depth, std::uint64_t expected_steps, double kill_chance)
        : rng_(seed), kill_(kill_chance), depth_(depth) {
        for (int i = 1; i < depth; ++i) change_points_.push_back(1 + rng_.below(std::max<std::uint64_t>(expected_steps, 1)));
    }
    int choose(const std::vector<int>& ready, std::uint64_t) override {
        ++step_;
        for (int id : ready)
            if (!prio_.count(id)) prio_[id] = static_cast<std::int64_t>(depth_ + rng_.below(1u << 20)) + 1;
        int best = ready.front();
        for (int id : ready)
            if (prio_[id] > prio_[best]) best = id;
        for (std::size_t i = 0; i < change_points_.size(); ++i)
            if (change_points_[i] == step_) prio_[best] = static_cast<std::int64_t>(i) + 1 - depth_;
        return best;
    }
    bool kill_here(int) override { return rng_.chance(kill_); }

private:
    rng rng_;
    double kill_;
    int depth_;
    std::uint64_t step_ = 0;
    std::vector<std::uint64_t> change_points_;
    std::map<int, std::int64_t> prio_;
};

/// Follows a schedule; past its end, either stops the run (exploration) or runs the lowest
/// ready actor (replay of a prefix).
class scripted_chooser : public chooser {
public:
    explicit scripted_chooser(std::vector<int> schedule) : s_(std::move(schedule)) {}
    int choose(const std::vector<int>& ready, std::uint64_t h) override {
        if (i_ >= s_.size()) {
            if (stop_mode_) {
                // A state past the schedule's end: the schedule's own, then (extended) those
                // of its first choice, that one's first choice, ...
                points.push_back({ready, h, running && running->can_kill(), clean()});
                // Past the last, or once an invariant is broken (the run is then this one's).
                if (points.size() > extend_ || !points.back().clean) stop_run = true;
                return ready.front();
            }
            kill_ = false;
            return ready.front();
        }
        const int e = s_[i_++];
        kill_ = e < 0;
        const int who = e < 0 ? -e - 1 : e;
        for (int id : ready)
            if (id == who) return who;
        diverged = true;   // the schedule does not fit this run: fall back
        kill_ = false;
        return ready.front();
    }
    bool kill_here(int) override { return kill_; }
    bool wants_state_hash() const override { return stop_mode_ && i_ >= s_.size(); }   // the points only
    void stop_at_end(bool on) noexcept { stop_mode_ = on; }
    /// With stop_at_end: a state is clean (a frontier) unless this invariant was broken on
    /// the way (empty: any).
    void only_kind(std::string kind) { kind_ = std::move(kind); }
    /// With stop_at_end: past the schedule's end, take the first ready choice up to `n`
    /// times, recording each state reached (points): the runs of the schedule extended by
    /// one first choice, two, ..., n, for the price of one.
    void extend_by_first_choices(std::size_t n) noexcept { extend_ = n; }

    /// A state reached past the schedule's end (stop_at_end).
    struct point {
        std::vector<int> ready;
        std::uint64_t hash = 0;
        bool can_kill = false;   ///< a kill is still in the run's budget there
        bool clean = false;      ///< no invariant was broken when it was reached
    };
    std::vector<point> points;
    bool diverged = false;

private:
    bool clean() const {
        if (!running) return true;
        const auto& v = running->violations();
        return kind_.empty() ? v.empty() : std::none_of(v.begin(), v.end(), [&](const violation& x) { return x.kind == kind_; });
    }

    std::vector<int> s_;
    std::size_t i_ = 0;
    bool kill_ = false;
    bool stop_mode_ = false;
    std::size_t extend_ = 0;
    std::string kind_;
};

/// Random schedules (seeded) in which the actor that takes the `target`-th step named `op`
/// (counting the run's steps whose op is `op`, or `op` then a space and more, such as
/// "notifier.append 7", from 1) is SIGKILLed just before it (at that
/// step: it never happens) or, with `after`, at its own next step (it happened; what follows
/// it does not). target 0: no kill; count() then says how many such steps the schedule had.
class op_kill_chooser : public chooser {
public:
    op_kill_chooser(std::string op, std::uint64_t seed, std::uint64_t target, bool after)
        : op_(std::move(op)), rng_(seed), target_(target), after_(after) {}
    int choose(const std::vector<int>& ready, std::uint64_t) override {
        const int who = random_choice(rng_, ready);
        kill_ = false;
        if (world::is_agent_choice(who)) return who;
        if (who == victim_) {   // its first step after that one
            kill_ = true;
            victim_ = -1;
        } else if (running && named(running->get(who).next_op) && ++seen_ == target_) {
            if (after_) victim_ = who;
            else kill_ = true;
        }
        return who;
    }
    bool kill_here(int) override { return kill_; }
    std::uint64_t count() const noexcept { return seen_; }

private:
    bool named(const step_op& next) const {
        const std::string_view n = next.name;
        return n.size() >= op_.size() && n.compare(0, op_.size(), op_) == 0 && (n.size() == op_.size() || n[op_.size()] == ' ');
    }

    std::string op_;
    rng rng_;
    std::uint64_t target_;
    bool after_;
    std::uint64_t seen_ = 0;
    int victim_ = -1;
    bool kill_ = false;
};

/// Kills the actor that makes the `target`-th commit of the run ("store.commit"), just before
/// it (the unit's writes are lost) or, with `after`, at its next step (the unit committed;
/// what follows, such as releasing the held agents, does not happen).
class commit_kill_chooser : public op_kill_chooser {
public:
    commit_kill_chooser(std::uint64_t seed, std::uint64_t target, bool after)
        : op_kill_chooser("store.commit", seed, target, after) {}
    std::uint64_t commits() const noexcept { return count(); }
};

struct counterexample {
    std::uint64_t seed = 0;
    std::vector<int> schedule;           ///< up to and including the violating step
    std::vector<std::string> actors;     ///< actor names, by id
    violation first;
    bool atomic_sections = false;        ///< found with atomic critical sections: replay so
    /// Found with kill points inside atomic sections (world::set_kill_points) and this kill
    /// budget: replay so.
    int kill_points = 0;
    /// Which run of the exploration found it, in the exploration's own order (the schedule
    /// index; exhaustive: the position in breadth-first order). Of two counterexamples of the
    /// same length the earlier run's is kept, so results do not depend on the thread count.
    std::uint64_t run = 0;
    /// Exhaustive (breadth-first) search: no schedule that breaks an invariant is shorter
    /// (within the search's bounds), so it was not shrunk.
    bool minimal = false;
    /// Shrunk, then no schedule made of at most its own steps (each actor's, each kill's,
    /// each agent's end's count) breaks the invariant it was shrunk for (its own, or any)
    /// sooner: shrink()'s last search.
    bool shortest_of_its_steps = false;
};

struct exploration {
    std::string mode;
    std::uint64_t schedules = 0;         ///< complete runs explored
    std::uint64_t states = 0;            ///< distinct states (exhaustive)
    std::uint64_t violating = 0;         ///< runs that broke an invariant
    int peak_live = 0;
    std::uint64_t lost_tasks = 0;
    std::uint64_t duplicate_starts = 0;
    std::uint64_t kills = 0;             ///< SIGKILLs of kugetsu processes, summed over the schedules
    /// Runs whose last daemon was killed past the restart budget (their unfinished tasks
    /// stranded, not counted as lost), and those tasks summed.
    std::uint64_t runs_without_daemon = 0, stranded_tasks = 0;
    std::map<std::string, std::uint64_t> by_kind;
    std::optional<counterexample> shortest;
    std::map<std::string, counterexample> shortest_by_kind;
    bool complete = true;                ///< exhaustive: the whole state space was covered
    bool reduced = false;                ///< exhaustive: with partial-order reduction
    /// exhaustive: the terminal outcome of every complete schedule, as text (outcome_of()).
    std::set<std::string> outcomes;
    double seconds = 0;
    unsigned threads = 1;                ///< worker threads it ran on (results do not depend on it)
    std::optional<run_result> example;   ///< the run to show: the counterexample, or the first
};

/// How many worker threads an exploration runs on: `requested`, or one per core for 0.
inline unsigned worker_count(unsigned requested) noexcept {
    if (requested) return requested;
    const unsigned n = std::thread::hardware_concurrency();
    return n ? n : 1;
}

namespace detail {

/// A run's terminal outcome, without times: each task's final state, attempts, exit code and
/// runs, and the order in which the events file says tasks started and ended. What the
/// reduction must not change.
inline std::string outcome_of(const run_result& r) {
    std::map<std::string, int> ran;
    for (const auto& p : r.agents) ++ran[p.task_id];
    std::string s;
    for (const auto& it : r.items)
        s += it.id + "=" + std::string(to_string(it.state)) + "/" + std::to_string(it.attempts) + "/" +
             (it.exit_code ? std::to_string(*it.exit_code) : "-") + "/" + std::to_string(ran[it.id]) + " ";
    s += "|";
    std::set<std::uint64_t> seen;   // a copy of an event (the same seq) says nothing new
    for (const auto& e : r.events)
        if (seen.insert(e.seq).second && (e.type == event_type::task_started || e.type == event_type::task_completed || e.type == event_type::task_error))
            s += " " + std::string(to_string(e.type)).substr(5) + ":" + e.task_id;
    return s;
}

/// What a run of one prefix found: the state at the prefix's end and its choices, or a run
/// that ended (or broke an invariant) within it.
struct probe {
    bool frontier = false;          ///< stopped at the prefix's end, no invariant broken
    std::uint64_t hash = 0;
    std::vector<int> ready;
    std::unique_ptr<run_result> run;   ///< complete, or broke an invariant on the way (a pointer:
                                       ///< a level keeps many probes, few of them runs)
};

/// A frontier's choices: the ready ones, then (with a kill in the budget) each actor's kill.
inline std::vector<int> frontier_choices(std::vector<int> ready, bool can_kill) {
    if (can_kill) {   // each actor may also be SIGKILLed there
        const std::size_t n = ready.size();
        for (std::size_t i = 0; i < n; ++i)
            if (!world::is_agent_choice(ready[i])) ready.push_back(-(ready[i] + 1));
    }
    return ready;
}

/// The probes of `prefix` and of its extensions by first choices (up to `extend` of them),
/// from one run, in that order: [0] the prefix's, [k] that of the prefix and k first choices
/// (ready.front() each time), as long as the states before were frontiers.
inline std::vector<probe> run_prefix(const scenario& sc, std::uint64_t seed, const std::vector<int>& prefix,
                                     const run_options& opt, std::size_t extend = 0) {
    scripted_chooser ch(prefix);
    ch.stop_at_end(true);
    ch.only_kind(opt.stop_at);
    ch.extend_by_first_choices(extend);
    auto r = run(sc, seed, ch, opt);
    std::vector<probe> out;
    out.reserve(ch.points.size() + 1);
    for (auto& pt : ch.points) {
        if (!pt.clean) break;   // the run's (below)
        probe& p = out.emplace_back();
        p.frontier = true;
        p.hash = pt.hash;
        p.ready = frontier_choices(std::move(pt.ready), pt.can_kill);
    }
    // The run is that of the first state that is not a frontier: one where an invariant was
    // broken, or the end of the run within the last first choice (or within the prefix).
    if (out.size() == ch.points.size() && out.size() > extend && !out.empty()) return out;
    out.emplace_back().run = std::make_unique<run_result>(std::move(r));
    return out;
}

/// Whether counterexample `a` is kept over `b`: shorter, or as short and found by an earlier
/// run.
inline bool preferred(const counterexample& a, const counterexample& b) noexcept {
    return a.schedule.size() != b.schedule.size() ? a.schedule.size() < b.schedule.size() : a.run < b.run;
}

/// The schedule of `r` up to violation `v`, as a counterexample.
inline counterexample cut_at(const run_result& r, const violation& v, std::uint64_t seed, bool atomic, std::uint64_t run = 0) {
    counterexample c;
    c.seed = seed;
    const std::size_t len = std::min<std::size_t>(r.schedule.size(), v.step);
    c.schedule.assign(r.schedule.begin(), r.schedule.begin() + static_cast<std::ptrdiff_t>(len));
    c.actors = r.actor_names;
    c.first = v;
    c.atomic_sections = atomic;
    c.run = run;
    return c;
}

/// Adds run number `run` (see counterexample::run) to the exploration's totals.
inline void account(exploration& ex, const run_result& r, std::uint64_t seed, bool atomic = false, std::uint64_t run = 0) {
    ++ex.schedules;
    ex.peak_live = std::max(ex.peak_live, r.peak_live);
    ex.lost_tasks += static_cast<std::uint64_t>(r.lost);
    ex.duplicate_starts += static_cast<std::uint64_t>(r.duplicates);
    ex.kills += static_cast<std::uint64_t>(r.kills);
    ex.runs_without_daemon += r.no_daemon_left ? 1u : 0u;
    ex.stranded_tasks += static_cast<std::uint64_t>(r.stranded);
    if (r.violations.empty()) return;
    ++ex.violating;
    for (auto& v : r.violations) {
        ++ex.by_kind[v.kind];
        auto c = cut_at(r, v, seed, atomic, run);
        auto it = ex.shortest_by_kind.find(v.kind);
        if (it == ex.shortest_by_kind.end() || preferred(c, it->second)) ex.shortest_by_kind[v.kind] = std::move(c);
    }
    auto c = cut_at(r, r.violations.front(), seed, atomic, run);
    if (!ex.shortest || preferred(c, *ex.shortest)) ex.shortest = std::move(c);
}

/// Adds a worker's totals to the exploration's (the order of merging changes nothing).
inline void merge(exploration& into, exploration&& part) {
    into.schedules += part.schedules;
    into.violating += part.violating;
    into.peak_live = std::max(into.peak_live, part.peak_live);
    into.lost_tasks += part.lost_tasks;
    into.duplicate_starts += part.duplicate_starts;
    into.kills += part.kills;
    into.runs_without_daemon += part.runs_without_daemon;
    into.stranded_tasks += part.stranded_tasks;
    for (auto& [k, n] : part.by_kind) into.by_kind[k] += n;
    for (auto& [k, c] : part.shortest_by_kind) {
        auto it = into.shortest_by_kind.find(k);
        if (it == into.shortest_by_kind.end() || preferred(c, it->second)) into.shortest_by_kind[k] = std::move(c);
    }
    if (part.shortest && (!into.shortest || preferred(*part.shortest, *into.shortest))) into.shortest = std::move(part.shortest);
}

/// Calls f(worker, i) for every i in [0, n), on up to `threads` threads (the calling one
/// among them). Indices are handed out in ascending chunks, so each worker sees its own in
/// ascending order. If a thread cannot be created, the others do its share. Rethrows the
/// first exception a call threw (the other workers stop at their next chunk).
template <class F>
void parallel_for(std::uint64_t n, unsigned threads, std::uint64_t chunk, F&& f) {
    threads = static_cast<unsigned>(std::min<std::uint64_t>(std::max(threads, 1u), std::max<std::uint64_t>(n, 1)));
    if (threads == 1) {
        for (std::uint64_t i = 0; i < n; ++i) f(0u, i);
        return;
    }
    std::atomic<std::uint64_t> next{0};
    std::atomic<bool> failed{false};
    std::exception_ptr error;
    std::mutex error_mutex;
    auto work = [&](unsigned worker) {
        try {
            while (!failed.load(std::memory_order_relaxed)) {
                const std::uint64_t begin = next.fetch_add(chunk, std::memory_order_relaxed);
                if (begin >= n) return;
                for (std::uint64_t i = begin; i < std::min(begin + chunk, n); ++i) f(worker, i);
            }
        } catch (...) {
            std::lock_guard lock(error_mutex);
            if (!error) error = std::current_exception();
            failed = true;
        }
    };
    std::vector<std::thread> pool;
    pool.reserve(threads - 1);
    for (unsigned t = 1; t < threads; ++t) {
        try {
            pool.emplace_back(work, t);
        } catch (const std::system_error&) {   // no more threads: fewer workers
            break;
        }
    }
    work(0u);
    for (auto& t : pool) t.join();
    if (error) std::rethrow_exception(error);
}

template <class F>
double timed(F&& f) {
    const auto t0 = std::chrono::steady_clock::now();
    f();
    return std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
}

} // namespace detail

/// Whether partial-order reduction is claimed sound for the design (see docs/simulator.md,
/// Exploration): the fixed designs, whose shared steps are all under the cap lock except an
/// enqueue's unit. Not the legacy ones: their store writes are not units, and most of them
/// have no lock (with and without the reduction their outcome sets differ).
inline bool reduction_sound(const scenario& sc) noexcept { return sc.all_fixed(); }

/// Replays (seed, schedule); past the schedule's end the lowest ready actor runs.
inline run_result replay(const scenario& sc, std::uint64_t seed, const std::vector<int>& schedule,
                         const run_options& opt = {}) {
    scripted_chooser ch(schedule);
    return run(sc, seed, ch, opt);
}

/// The order of an exhaustive search.
enum class search_order {
    /// Level by level, the runs of a level on every core: the first counterexample found is
    /// a shortest one. Every state at a lesser depth is visited first, so a deep violation in
    /// a large state space (the legacy designs) takes long to reach.
    breadth_first,
    /// Depth first, on one thread: a deep violation is found early; the counterexample found
    /// is then shrunk (not necessarily to a shortest one).
    depth_first,
};

struct exhaustive_options {
    std::uint64_t max_states = 2'000'000;   ///< stop after this many states (then incomplete)
    bool stop_at_violation = true;          ///< end at the first violating schedule
    /// Partial-order reduction (atomic critical sections), claimed sound for the fixed
    /// designs only (reduction_sound()); for the legacy designs it is never applied.
    bool reduce = true;
    /// In each schedule, up to this many agents end by a choice (at any step where one is
    /// looked at) before their drawn end; the others end at their drawn times. The state
    /// space searched is the one within that bound (as with the kill budget).
    int early_ends = 1;
    search_order order = search_order::breadth_first;
    unsigned threads = 0;                   ///< breadth first: worker threads (0: one per core)
    /// Up to this many SIGKILLs per schedule, each of any actor at any step (with the
    /// reduction, at every step inside a critical section too: world::set_kill_points). The
    /// scenario's own kill budget is replaced by it.
    int kills = 0;
    /// The finer state hash (world::set_fine_states): more states; a test checks that the
    /// outcomes are the same on small configurations.
    bool fine_states = false;
    /// Only this invariant's violations count (empty: any): a path that breaks another one
    /// goes on, and the counterexample is a shortest one of this kind (breadth first).
    std::string kind = {};
    /// Only the schedules made of at most these steps: each choice (an actor's step, a kill
    /// -(id+1), an agent's end) at most its count here; empty: no bound. States then also
    /// differ by the counts left. The shrinker's last search (shrink()).
    std::map<int, int> steps = {};
};

inline exploration explore_exhaustive(const scenario& scenario_in, std::uint64_t seed, const exhaustive_options& o = {});


struct shrink_options {
    /// Keep the invariant the counterexample breaks; false: a schedule that breaks any
    /// invariant sooner is shorter (the explorers' overall counterexample).
    bool same_kind = true;
    int passes = 50;                     ///< of the local moves, while one helps
    int max_replays = 10000;             ///< of the local moves
    /// The last search's (over the schedules made of at most the counterexample's own
    /// steps) bound; 0: no such search.
    std::uint64_t max_states = 50'000;
    /// Nor for a counterexample longer than this: such a search seldom ends within
    /// max_states (a 387- and a 433-step hang of the six-task race did not), and costs
    /// seconds to tens of seconds for nothing.
    std::size_t max_searched_steps = 200;
};

/// Shortens a counterexample, keeping the invariant it breaks (or, without `same_kind`, to
/// one that breaks any invariant sooner). First the shortest prefix that, run on with the
/// lowest ready actor, still breaks it; then local moves, pass after pass while one helps:
/// one actor's steps given to another, single steps dropped, neighbours swapped, a block of
/// one actor's consecutive steps moved earlier, one step moved later, pairs of steps
/// dropped. A move is kept if the run breaks the invariant at an earlier step; once none
/// helps, also if it breaks it at the same step with a schedule that is lexicographically
/// smaller (lower actor ids first: a way across a plateau that cannot cycle). Every
/// candidate is a real replay, at most `max_replays` of them. Last, a breadth-first search
/// (explore_exhaustive with `steps` and `kind`) of every schedule made of at most the
/// counterexample's own steps, up to `max_states` states: if it ends, the counterexample is
/// the shortest of those (shortest_of_its_steps); not for one longer than
/// `max_searched_steps`. That is not the shortest of all schedules
/// (the breadth-first search's, `minimal`): one that needs a step the counterexample lacks
/// is not searched.
inline counterexample shrink(const scenario& sc, counterexample c, const shrink_options& so = {}) {
    const std::string kind = so.same_kind ? c.first.kind : std::string();
    run_options opt;
    opt.keep_trace = false;
    opt.keep_ops = false;
    opt.atomic_critical_sections = c.atomic_sections;
    opt.kill_points = c.kill_points > 0;
    opt.stop_at = so.same_kind ? kind : "any";   // a replay ends where it breaks the invariant
    int replays = 1;
    std::vector<int> creators = replay(sc, c.seed, c.schedule, opt).actor_creators;   // the current run's
    bool sideways = false;
    auto attempt = [&](const std::vector<int>& candidate) -> bool {
        if (++replays > so.max_replays) return false;
        auto r = replay(sc, c.seed, candidate, opt);
        auto same = std::find_if(r.violations.begin(), r.violations.end(),
                                 [&](const violation& v) { return kind.empty() || v.kind == kind; });
        if (same == r.violations.end()) return false;
        const violation v = *same;
        const std::size_t len = std::min<std::size_t>(r.schedule.size(), v.step);
        if (len > c.schedule.size()) return false;
        const auto end = r.schedule.begin() + static_cast<std::ptrdiff_t>(len);
        if (len == c.schedule.size() && (!sideways ||
            !std::lexicographical_compare(r.schedule.begin(), end, c.schedule.begin(), c.schedule.end())))
            return false;
        c.schedule.assign(r.schedule.begin(), end);
        c.first = v;
        c.actors = r.actor_names;
        creators = r.actor_creators;
        return true;
    };
    for (std::size_t cut = 0; cut < c.schedule.size() && replays < so.max_replays; ++cut)
        if (attempt(std::vector<int>(c.schedule.begin(), c.schedule.begin() + static_cast<std::ptrdiff_t>(cut)))) break;
    for (int pass = 0; pass < so.passes; ++pass) {
        bool better = false;
        // One actor's steps (and kills) given to another, and those of the actors it added
        // (its background jobs, its agents' supervisors) to the other's, in order: the same
        // race run by an actor whose own steps are fewer (a PM start instead of a dev one).
        const int actors = static_cast<int>(c.actors.size());
        for (int a = 0; a < actors && replays < so.max_replays; ++a)
            for (int b = 0; b < actors && replays < so.max_replays; ++b) {
                if (a == b || std::find(c.schedule.begin(), c.schedule.end(), a) == c.schedule.end()) continue;
                std::map<int, int> to;
                auto pair = [&](auto&& self, int x, int y) -> void {
                    if (!to.emplace(x, y).second) return;
                    std::vector<int> xs, ys;
                    for (int k = 0; k < static_cast<int>(creators.size()); ++k) {
                        if (creators[static_cast<std::size_t>(k)] == x) xs.push_back(k);
                        if (creators[static_cast<std::size_t>(k)] == y) ys.push_back(k);
                    }
                    for (std::size_t k = 0; k < std::min(xs.size(), ys.size()); ++k) self(self, xs[k], ys[k]);
                };
                pair(pair, a, b);
                std::set<int> targets;
                for (const auto& [x, y] : to) targets.insert(y);
                // The other's own steps kept, or dropped (it takes over the role).
                for (bool drop_own : {false, true}) {
                    std::vector<int> candidate;
                    for (int e : c.schedule) {
                        const int who = e < 0 ? -e - 1 : e;
                        if (auto it = to.find(who); it != to.end()) candidate.push_back(e < 0 ? -(it->second + 1) : it->second);
                        else if (!drop_own || !targets.count(who)) candidate.push_back(e);
                    }
                    if (replays < so.max_replays && attempt(candidate)) {
                        better = true;
                        break;
                    }
                }
            }
        for (std::size_t i = 0; i < c.schedule.size() && replays < so.max_replays; ++i) {
            auto candidate = c.schedule;
            candidate.erase(candidate.begin() + static_cast<std::ptrdiff_t>(i));
            if (attempt(candidate)) {
                better = true;
                --i;
            }
        }
        // What dropping one step cannot reach: two steps dropped together (a step that only
        // matters with another), and two neighbours swapped (the same steps, in an order
        // that breaks the invariant sooner).
        for (std::size_t i = 0; i + 1 < c.schedule.size() && replays < so.max_replays; ++i) {
            auto candidate = c.schedule;
            std::swap(candidate[i], candidate[i + 1]);
            if (attempt(candidate)) better = true;
        }
        // A block of one actor's consecutive steps moved earlier, past other actors' steps:
        // the same steps, interleaved so that the invariant breaks sooner (the swap of
        // neighbours moves one step by one place only).
        for (std::size_t i = 1; i < c.schedule.size() && replays < so.max_replays; ++i) {
            std::size_t run = 1;
            while (i + run < c.schedule.size() && c.schedule[i + run] == c.schedule[i]) ++run;
            for (std::size_t k = 1; k <= run && replays < so.max_replays; ++k)
                for (std::size_t j = 0; j < i && replays < so.max_replays; ++j) {
                    if (c.schedule[j] == c.schedule[i]) continue;   // the same as a move from j on
                    auto candidate = c.schedule;
                    std::rotate(candidate.begin() + static_cast<std::ptrdiff_t>(j), candidate.begin() + static_cast<std::ptrdiff_t>(i),
                                candidate.begin() + static_cast<std::ptrdiff_t>(i + k));
                    if (attempt(candidate)) {
                        better = true;
                        k = run + 1;   // the schedule changed: look again at i
                        break;
                    }
                }
        }
        // And one step moved later, past others.
        for (std::size_t i = 0; i + 1 < c.schedule.size() && replays < so.max_replays; ++i)
            for (std::size_t j = i + 2; j <= c.schedule.size() && replays < so.max_replays; ++j) {
                if (c.schedule[j - 1] == c.schedule[i]) continue;
                auto candidate = c.schedule;
                std::rotate(candidate.begin() + static_cast<std::ptrdiff_t>(i), candidate.begin() + static_cast<std::ptrdiff_t>(i + 1),
                            candidate.begin() + static_cast<std::ptrdiff_t>(j));
                if (attempt(candidate)) {
                    better = true;
                    break;
                }
            }
        for (std::size_t i = 0; i < c.schedule.size() && replays < so.max_replays; ++i)
            for (std::size_t j = i + 1; j < c.schedule.size() && replays < so.max_replays; ++j) {
                auto candidate = c.schedule;
                candidate.erase(candidate.begin() + static_cast<std::ptrdiff_t>(j));
                candidate.erase(candidate.begin() + static_cast<std::ptrdiff_t>(i));
                if (attempt(candidate)) {
                    better = true;
                    j = i;   // the schedule changed: look again from i
                }
            }
        if (!better) {
            if (sideways) break;
            sideways = true;
        }
    }
    if (so.max_states == 0 || c.schedule.size() > so.max_searched_steps) return c;
    exhaustive_options o;
    o.max_states = so.max_states;
    o.reduce = c.atomic_sections;
    o.kind = kind;
    o.early_ends = 0;
    for (int e : c.schedule) {
        ++o.steps[e];
        o.kills += e < 0 ? 1 : 0;
        o.early_ends += world::is_agent_choice(e) ? 1 : 0;
    }
    o.kills = std::max(o.kills, c.kill_points);   // its kill points, if it was found with them
    const auto ex = explore_exhaustive(sc, c.seed, o);
    if (!ex.shortest) return c;   // stopped at max_states
    c.schedule = ex.shortest->schedule;
    c.first = ex.shortest->first;
    c.actors = ex.shortest->actors;
    c.kill_points = ex.shortest->kill_points;
    c.shortest_of_its_steps = true;
    return c;
}

/// The run length PCT draws its change points over: the steps of the run that always takes
/// the lowest ready actor.
inline std::uint64_t pct_expected_steps(const scenario& sc, std::uint64_t seed) {
    run_options opt;
    opt.keep_trace = false;
    opt.keep_ops = false;
    scripted_chooser lowest({});
    return std::max<std::uint64_t>(run(sc, seed, lowest, opt).steps, 1);
}

/// Random or PCT schedules: schedule i (from 0) is drawn from mix(seed, i + 1), so a schedule
/// does not depend on the others, and the schedules are split across `threads` worker
/// threads (0: one per core) with the same results as on one. PCT draws its change points
/// over the length of one run that always takes the lowest ready actor.
inline exploration explore_random(const scenario& sc, std::uint64_t seed, std::uint64_t schedules,
                                  bool pct = false, int depth = 3, unsigned threads = 0) {
    exploration ex;
    ex.mode = pct ? "pct" : "random";
    ex.threads = worker_count(threads);
    run_options opt;
    opt.keep_trace = false;
    opt.keep_ops = false;
    ex.seconds = detail::timed([&] {
        const std::uint64_t expected = pct ? pct_expected_steps(sc, seed) : 0;
        std::vector<exploration> parts(ex.threads);
        detail::parallel_for(schedules, ex.threads, 16, [&](unsigned worker, std::uint64_t i) {
            const std::uint64_t cs = mix(seed, i + 1);
            run_result r;
            if (pct) {
                pct_chooser ch(cs, depth, expected, sc.faults.kill);
                r = run(sc, seed, ch, opt);
            } else {
                random_chooser ch(cs, sc.faults.kill);
                r = run(sc, seed, ch, opt);
            }
            detail::account(parts[worker], r, seed, false, i);
        });
        for (auto& p : parts) detail::merge(ex, std::move(p));
        if (ex.shortest) ex.shortest = shrink(sc, *ex.shortest, {.same_kind = false});
    });
    return ex;
}

/// For each of `bases` random schedules (seeded from `seed`), and each commit that schedule
/// makes: one run that kills the committing actor just before the commit, and one that kills
/// it at its next step after the commit (commit_kill_chooser). Both runs follow the base
/// schedule up to the kill. Every run is checked against every invariant.
inline exploration explore_commit_kills(const scenario& sc, std::uint64_t seed, std::uint64_t bases, unsigned threads = 0) {
    exploration ex;
    ex.mode = "commit-kills";
    ex.threads = worker_count(threads);
    run_options opt;
    opt.keep_trace = false;
    opt.keep_ops = false;
    scenario s = sc;
    s.faults.max_kills = std::max(s.faults.kill_budget(), 1);
    ex.seconds = detail::timed([&] {
        std::vector<exploration> parts(ex.threads);
        detail::parallel_for(bases, ex.threads, 1, [&](unsigned worker, std::uint64_t b) {
            // Runs are numbered base by base, in the order one thread would make them.
            const std::uint64_t cs = mix(seed, b + 1), first = b << 32;
            commit_kill_chooser count(cs, 0, false);
            detail::account(parts[worker], run(s, seed, count, opt), seed, false, first);
            for (std::uint64_t n = 1; n <= count.commits(); ++n)
                for (bool after : {false, true}) {
                    commit_kill_chooser ch(cs, n, after);
                    detail::account(parts[worker], run(s, seed, ch, opt), seed, false, first + 2 * n - 1 + (after ? 1 : 0));
                }
        });
        for (auto& p : parts) detail::merge(ex, std::move(p));
        if (ex.shortest) ex.shortest = shrink(s, *ex.shortest, {.same_kind = false});
    });
    return ex;
}

namespace detail {

/// A probe that is not a frontier: accounts its run; true if the search stops there.
inline bool account_probe(exploration& ex, const probe& p, std::uint64_t seed, bool reduce, std::uint64_t order,
                          bool stop_at_violation, const std::string& kind) {
    account(ex, *p.run, seed, reduce, order);
    if (!p.run->aborted) ex.outcomes.insert(outcome_of(*p.run));   // a complete schedule
    const auto& v = p.run->violations;
    if (stop_at_violation && (kind.empty() ? !v.empty() : std::any_of(v.begin(), v.end(), [&](const violation& x) { return x.kind == kind; }))) {
        ex.complete = false;
        return true;
    }
    return false;
}

} // namespace detail

/// Every state reachable within the bounds (early_ends, kills), each visited once (by state
/// hashing, world::state_hash), over choice prefixes; each run starts from the beginning and
/// covers its prefix and up to 16 extensions of it by first choices; see search_order.
/// Breadth first, a level's runs are split across threads and then, in the level's order, a
/// state already seen is not expanded again: each state is visited at its least depth, and
/// the first counterexample is a shortest one (marked `minimal`, not shrunk), of those the
/// first in the order of the choices (actor ids, then agents' ends). Its results do not
/// depend on the thread count. Depth first, the counterexample found is shrunk.
/// With `stop_at_violation`, the search ends at the first violating schedule (breadth first:
/// at the end of its level's first one, in order).
inline exploration explore_exhaustive(const scenario& scenario_in, std::uint64_t seed, const exhaustive_options& o) {
    scenario sc = scenario_in;
    sc.faults.max_kills = std::max(o.kills, 0);
    exploration ex;
    ex.mode = "exhaustive";
    const bool breadth = o.order == search_order::breadth_first;
    ex.threads = breadth ? worker_count(o.threads) : 1;
    const bool reduce = o.reduce && reduction_sound(sc);
    ex.reduced = reduce;
    run_options opt;
    opt.keep_trace = false;
    opt.keep_ops = false;
    opt.state_hash = true;
    opt.fine_states = o.fine_states;
    opt.atomic_critical_sections = reduce;
    opt.kill_points = reduce && o.kills > 0;
    opt.max_early_ends = o.early_ends;
    opt.stop_at = o.kind;   // a run ends where it breaks that invariant
    ex.seconds = detail::timed([&] {
        std::unordered_set<std::uint64_t> seen;
        std::uint64_t order = 0;
        auto finish = [&] {
            if (opt.kill_points) {   // their schedules replay only with the kill points
                if (ex.shortest) ex.shortest->kill_points = o.kills;
                for (auto& [k, c] : ex.shortest_by_kind) c.kill_points = o.kills;
            }
            if (!o.kind.empty()) {   // that kind's, not that of another found on the way
                const auto it = ex.shortest_by_kind.find(o.kind);
                ex.shortest = it == ex.shortest_by_kind.end() ? std::nullopt : std::optional(it->second);
            }
        };
        // A new frontier state: false if the search stops (max_states).
        // With a step budget (o.steps), `prefix` is the state's own, and the state is also
        // what is left of the budget, and its choices those still in it.
        auto expand = [&](const detail::probe& p, const std::vector<int>& prefix, auto&& push) {
            std::uint64_t h = p.hash;
            std::vector<int> ready;
            if (!o.steps.empty()) {
                std::map<int, int> used;
                for (int e : prefix) ++used[e];
                for (const auto& [e, n] : o.steps) h = mix(h, static_cast<std::uint64_t>(used[e]));
                for (int e : p.ready)
                    if (auto it = o.steps.find(e); it != o.steps.end() && used[e] < it->second) ready.push_back(e);
            }
            if (!seen.insert(h).second) return true;
            if (++ex.states >= o.max_states) {
                ex.complete = false;
                return false;
            }
            push(prefix, o.steps.empty() ? p.ready : ready);
            return true;
        };
        if (!breadth) {
            std::vector<std::vector<int>> stack(1);
            auto push = [&](const std::vector<int>& prefix, const std::vector<int>& ready) {
                for (auto it = ready.rbegin(); it != ready.rend(); ++it) {   // the lowest choice first
                    auto next = prefix;
                    next.push_back(*it);
                    stack.push_back(std::move(next));
                }
            };
            while (!stack.empty()) {
                const std::vector<int> prefix = std::move(stack.back());
                stack.pop_back();
                const auto p = std::move(detail::run_prefix(sc, seed, prefix, opt).front());
                ++order;
                if (!p.frontier) {
                    if (detail::account_probe(ex, p, seed, reduce, order, o.stop_at_violation, o.kind)) break;
                } else if (!expand(p, prefix, push)) {
                    break;
                }
            }
            finish();
            if (ex.shortest) ex.shortest = shrink(sc, *ex.shortest, {.same_kind = !o.kind.empty()});
            return;
        }
        // The prefixes form a tree: each node is (parent, choice), and a level is a list of
        // nodes, so a level of a million prefixes takes a few megabytes, not one vector each.
        struct node {
            std::uint64_t parent;
            int choice;
        };
        std::vector<node> tree{{0, 0}};   // the root: the empty prefix
        auto prefix_of = [&tree](std::uint64_t n) {
            std::vector<int> p;
            for (; n != 0; n = tree[n].parent) p.push_back(tree[n].choice);
            std::reverse(p.begin(), p.end());
            return p;
        };
        // Each run of a prefix goes on along first choices (run_prefix's `extend`), so a
        // node reached by first choices from a node that was run already has its probe:
        // known[i] holds the probes of node i of the level and of its first descendants,
        // deepest first (node i's at the back; an empty vector allocates nothing).
        // (Not with a step budget: the first choice may be out of it.)
        const std::size_t extend = o.steps.empty() ? 16 : 0;
        std::vector<std::uint64_t> level{0}, next;
        std::vector<std::vector<detail::probe>> known(1), next_known;
        std::uint64_t parent = 0;
        std::vector<detail::probe>* firsts = nullptr;   // the first descendants of the node expanded
        auto push = [&](const std::vector<int>&, const std::vector<int>& ready) {
            for (std::size_t k = 0; k < ready.size(); ++k) {
                next.push_back(tree.size());
                tree.push_back({parent, ready[k]});
                next_known.emplace_back();
                if (k == 0 && firsts) next_known.back() = std::move(*firsts);
            }
        };
        bool stop = false;
        while (!level.empty() && !stop) {
            detail::parallel_for(level.size(), ex.threads, 8, [&](unsigned, std::uint64_t i) {
                if (known[i].empty()) {
                    known[i] = detail::run_prefix(sc, seed, prefix_of(level[i]), opt, extend);
                    std::reverse(known[i].begin(), known[i].end());
                }
            });
            next.clear();
            next_known.clear();
            for (std::size_t i = 0; i < level.size() && !stop; ++i) {
                ++order;
                parent = level[i];
                detail::probe p = std::move(known[i].back());
                known[i].pop_back();
                firsts = &known[i];
                if (!p.frontier) stop = detail::account_probe(ex, p, seed, reduce, order, o.stop_at_violation, o.kind);
                else stop = !expand(p, o.steps.empty() ? std::vector<int>{} : prefix_of(parent), push);
                std::vector<detail::probe>().swap(known[i]);
            }
            firsts = nullptr;
            level.swap(next);
            known.swap(next_known);
        }
        finish();
        if (ex.shortest) ex.shortest->minimal = true;
    });
    return ex;
}

} // namespace kugetsu::sim
