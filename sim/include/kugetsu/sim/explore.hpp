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
#include <chrono>
#include <deque>
#include <map>
#include <optional>
#include <set>
#include <string>
#include <unordered_set>
#include <vector>

#include "scenario.hpp"

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
                frontier_ready = ready;
                frontier_hash = h;
                reached_end = true;
                stop_run = true;
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
    void stop_at_end(bool on) noexcept { stop_mode_ = on; }

    bool reached_end = false;
    bool diverged = false;
    std::vector<int> frontier_ready;
    std::uint64_t frontier_hash = 0;

private:
    std::vector<int> s_;
    std::size_t i_ = 0;
    bool kill_ = false;
    bool stop_mode_ = false;
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
    bool named(const std::string& next) const {
        return next.size() >= op_.size() && next.compare(0, op_.size(), op_) == 0 &&
               (next.size() == op_.size() || next[op_.size()] == ' ');
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
    std::optional<run_result> example;   ///< the run to show: the counterexample, or the first
};

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

/// The schedule of `r` up to violation `v`, as a counterexample.
inline counterexample cut_at(const run_result& r, const violation& v, std::uint64_t seed, bool atomic) {
    counterexample c;
    c.seed = seed;
    const std::size_t len = std::min<std::size_t>(r.schedule.size(), v.step);
    c.schedule.assign(r.schedule.begin(), r.schedule.begin() + static_cast<std::ptrdiff_t>(len));
    c.actors = r.actor_names;
    c.first = v;
    c.atomic_sections = atomic;
    return c;
}

inline void account(exploration& ex, const run_result& r, std::uint64_t seed, bool atomic = false) {
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
        auto c = cut_at(r, v, seed, atomic);
        auto it = ex.shortest_by_kind.find(v.kind);
        if (it == ex.shortest_by_kind.end() || c.schedule.size() < it->second.schedule.size())
            ex.shortest_by_kind[v.kind] = std::move(c);
    }
    auto c = cut_at(r, r.violations.front(), seed, atomic);
    if (!ex.shortest || c.schedule.size() < ex.shortest->schedule.size()) ex.shortest = std::move(c);
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

/// Shortens a counterexample. First the shortest prefix that, run on with the lowest ready
/// actor, still breaks the same invariant; then single steps are dropped while the run
/// still breaks it at an earlier step. Every candidate is a real replay.
/// At most `max_replays` replays: large scenarios get a partly shrunk counterexample.
inline counterexample shrink(const scenario& sc, counterexample c, int passes = 2, int max_replays = 1500) {
    run_options opt;
    opt.keep_trace = false;
    opt.atomic_critical_sections = c.atomic_sections;
    int replays = 0;
    auto attempt = [&](const std::vector<int>& candidate) -> bool {
        if (++replays > max_replays) return false;
        auto r = replay(sc, c.seed, candidate, opt);
        auto same = std::find_if(r.violations.begin(), r.violations.end(),
                                 [&](const violation& v) { return v.kind == c.first.kind; });
        if (same == r.violations.end()) return false;
        const violation v = *same;
        const std::size_t len = std::min<std::size_t>(r.schedule.size(), v.step);
        if (len >= c.schedule.size()) return false;
        c.schedule.assign(r.schedule.begin(), r.schedule.begin() + static_cast<std::ptrdiff_t>(len));
        c.first = v;
        c.actors = r.actor_names;
        return true;
    };
    for (std::size_t cut = 0; cut < c.schedule.size() && replays < max_replays; ++cut)
        if (attempt(std::vector<int>(c.schedule.begin(), c.schedule.begin() + static_cast<std::ptrdiff_t>(cut)))) break;
    for (int pass = 0; pass < passes; ++pass) {
        bool better = false;
        for (std::size_t i = 0; i < c.schedule.size() && replays < max_replays; ++i) {
            auto candidate = c.schedule;
            candidate.erase(candidate.begin() + static_cast<std::ptrdiff_t>(i));
            if (attempt(candidate)) {
                better = true;
                --i;
            }
        }
        if (!better) break;
    }
    return c;
}

inline exploration explore_random(const scenario& sc, std::uint64_t seed, std::uint64_t schedules,
                                  bool pct = false, int depth = 3) {
    exploration ex;
    ex.mode = pct ? "pct" : "random";
    run_options opt;
    opt.keep_trace = false;
    std::uint64_t expected = 200;
    ex.seconds = detail::timed([&] {
        for (std::uint64_t i = 0; i < schedules; ++i) {
            const std::uint64_t cs = mix(seed, i + 1);
            run_result r;
            if (pct) {
                pct_chooser ch(cs, depth, expected, sc.faults.kill);
                r = run(sc, seed, ch, opt);
            } else {
                random_chooser ch(cs, sc.faults.kill);
                r = run(sc, seed, ch, opt);
            }
            expected = std::max<std::uint64_t>(expected / 2 + r.steps / 2, 1);
            detail::account(ex, r, seed);
        }
        if (ex.shortest) ex.shortest = shrink(sc, *ex.shortest);
    });
    return ex;
}

/// For each of `bases` random schedules (seeded from `seed`), and each commit that schedule
/// makes: one run that kills the committing actor just before the commit, and one that kills
/// it at its next step after the commit (commit_kill_chooser). Both runs follow the base
/// schedule up to the kill. Every run is checked against every invariant.
inline exploration explore_commit_kills(const scenario& sc, std::uint64_t seed, std::uint64_t bases) {
    exploration ex;
    ex.mode = "commit-kills";
    run_options opt;
    opt.keep_trace = false;
    scenario s = sc;
    s.faults.max_kills = std::max(s.faults.max_kills, 1);
    ex.seconds = detail::timed([&] {
        for (std::uint64_t b = 0; b < bases; ++b) {
            const std::uint64_t cs = mix(seed, b + 1);
            commit_kill_chooser count(cs, 0, false);
            detail::account(ex, run(s, seed, count, opt), seed);
            for (std::uint64_t n = 1; n <= count.commits(); ++n)
                for (bool after : {false, true}) {
                    commit_kill_chooser ch(cs, n, after);
                    detail::account(ex, run(s, seed, ch, opt), seed);
                }
        }
        if (ex.shortest) ex.shortest = shrink(s, *ex.shortest);
    });
    return ex;
}

/// Depth-first over choice prefixes (each replayed from the start); a state already seen is
/// not expanded again, so each reachable state is visited once. A counterexample found is
/// then shrunk. Stops after `max_states` states (then `complete` is false).
/// With `stop_at_violation`, the search ends at the first violating schedule.
/// `early_ends`: in each schedule, up to this many agents end by a choice (at any step where
/// one is looked at) before their drawn end; the others end at their drawn times. The
/// state space searched is the one within that bound (as with the kill budget).
/// `reduce`: partial-order reduction (atomic critical sections), claimed sound for the fixed
/// designs only (reduction_sound()); for the legacy designs it is never applied.
inline exploration explore_exhaustive(const scenario& sc, std::uint64_t seed, std::uint64_t max_states = 2'000'000,
                                      bool stop_at_violation = true, bool reduce = true, int early_ends = 1) {
    exploration ex;
    ex.mode = "exhaustive";
    reduce = reduce && reduction_sound(sc);
    ex.reduced = reduce;
    run_options opt;
    opt.keep_trace = false;
    opt.state_hash = true;
    opt.atomic_critical_sections = reduce;
    opt.max_early_ends = early_ends;
    ex.seconds = detail::timed([&] {
        std::unordered_set<std::uint64_t> seen;
        std::deque<std::vector<int>> queue;
        queue.emplace_back();
        while (!queue.empty()) {
            std::vector<int> prefix = std::move(queue.back());   // depth first: a deep
            queue.pop_back();                                     // violation is found early
            scripted_chooser ch(prefix);
            ch.stop_at_end(true);
            auto r = run(sc, seed, ch, opt);
            if (!ch.reached_end) {   // the run ended within the prefix: a complete schedule
                detail::account(ex, r, seed, reduce);
                ex.outcomes.insert(detail::outcome_of(r));
                if (stop_at_violation && !r.violations.empty()) {
                    ex.complete = false;
                    break;
                }
                continue;
            }
            if (!r.violations.empty()) {   // broke an invariant on the way: a counterexample
                detail::account(ex, r, seed, reduce);
                if (stop_at_violation) {
                    ex.complete = false;
                    break;
                }
                continue;
            }
            if (!seen.insert(ch.frontier_hash).second) continue;
            ++ex.states;
            if (ex.states >= max_states) {
                ex.complete = false;
                break;
            }
            for (auto it = ch.frontier_ready.rbegin(); it != ch.frontier_ready.rend(); ++it) {
                auto next = prefix;
                next.push_back(*it);
                queue.push_back(std::move(next));
            }
        }
        if (ex.shortest) ex.shortest = shrink(sc, *ex.shortest);
    });
    return ex;
}

} // namespace kugetsu::sim
