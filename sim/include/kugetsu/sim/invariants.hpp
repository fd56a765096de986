// kugetsu/sim/invariants.hpp: the checks every simulated run is held to: at each step (the
// world calls check_step), when the daemon goes to sleep (check_idle_slot), and at the end of
// the run (check_events, check_events_exact, check_exit_code; run() in run.hpp calls them).
//
// Invariants (a violation records its kind and the step):
//   cap              live dev agents never exceed the cap, at any step
//   unrecorded       every running agent has a committed session naming it, at any step
//   duplicate_start  no task's program runs twice
//   lost_task        at the end every task is completed, error or cancelled
//   hang             at the end every client (enqueuer, starters, waits, cancels) has
//                    returned: none is blocked for ever (unless no daemon is left; run.hpp)
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
// Scheduling (`scheduling`) adds:
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

#include <algorithm>
#include <array>
#include <map>
#include <set>
#include <string>
#include <string_view>
#include <vector>

#include "scenario.hpp"

namespace kugetsu::sim {

/// Every kind a violation can have: the invariants above, and the run's own failures
/// (transition: a task state change types.hpp forbids; exception: an actor threw; step_limit:
/// the run never came to rest).
inline constexpr std::array<std::string_view, 16> violation_kinds{
    "cap",       "unrecorded", "duplicate_start", "lost_task", "hang",     "attempts",   "events",     "exit_code",
    "idle_slot", "group_cap",  "dependency",      "paused",    "priority", "transition", "exception", "step_limit"};

} // namespace kugetsu::sim

namespace kugetsu::sim::detail {

/// Dev tasks not yet completed, error or cancelled (read directly, not a step).
inline int unfinished(const memory_store& store) {
    int n = 0;
    store.visit_items([&](const queue_item& it) { n += it.role == role::dev && !is_final(it.state); });
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
    // A task's program runs once per run of the task: once, and once more after each
    // restart committed (`--restarts`), never twice in one run.
    if (!s.w.ran_twice().empty() && !s.dup_reported) {
        const std::string id = s.w.ran_twice();
        s.w.clear_ran_twice();
        std::error_code ec;
        const auto it = s.store.get_item(id, ec);
        const int runs = 1 + (it ? it->restarts : 0);
        if (s.w.runs_of(id) > runs) {
            s.dup_reported = true;
            s.w.add_violation("duplicate_start", "task " + id + " ran " + std::to_string(s.w.runs_of(id)) + " times in " +
                                                     std::to_string(runs) + (runs == 1 ? " run" : " runs"));
        }
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
/// agents ran their program (the process table). A task restarted (`--restarts`) has one run
/// per restart more: its events split into runs at each task_queued after the first, one per
/// past run the item keeps (`runs`, oldest first) and the current one. Exactly, in each run:
/// task_queued once, first (every run of a queued task, and every run of a started task but
/// its first; a restart's has reason restarted); one task_dequeued per attempt the queue took,
/// numbered 1..attempts for a run that was queued, k..attempts for a started task's first run
/// (start() made the attempts before k); one end event, last, for a final run (each past run
/// is), none otherwise. Over all runs: one task_started per agent that ran. An attempt that
/// never ran has its task_dequeued (if the queue took it) and no task_started.
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
                                " after " + std::to_string(it.attempts) + " attempts, " +
                                (it.runs.empty() ? std::string() : std::to_string(it.runs.size()) + " runs before, ") +
                                "ran " + std::to_string(ran) + " times; events: " + (got.empty() ? "none" : got);
    // The runs: each begins at a task_queued (a started task's first at its first event).
    std::vector<std::size_t> begins;
    if (!queued || evs.empty() || evs.front().type != event_type::task_queued) begins.push_back(0);
    for (std::size_t i = 0; i < evs.size(); ++i)
        if (evs[i].type == event_type::task_queued) begins.push_back(i);
    const std::size_t runs = it.runs.size() + 1;
    if (queued && (evs.empty() || evs.front().type != event_type::task_queued))
        return "task_queued is not its first event (" + history + ")";
    if (begins.size() != runs)
        return "expected " + std::to_string(runs - (queued ? 0 : 1)) + " task_queued (" + std::to_string(runs) +
               (runs == 1 ? " run" : " runs") + "), got " + std::to_string(begins.size() - (queued ? 0 : 1)) + " (" +
               history + ")";
    int starts = 0;
    for (std::size_t r = 0; r < runs; ++r) {
        const bool current = r + 1 == runs;
        const int attempts = current ? it.attempts : it.runs[r].attempts;
        const bool final = current ? is_final(it.state) : true;
        const bool was_queued = queued || r > 0;
        const std::size_t from = begins[r], to = current ? evs.size() : begins[r + 1];
        const std::string which = runs == 1 ? "" : " in run " + std::to_string(r + 1);
        if (r > 0 && evs[from].reason != event_reason::restarted)
            return "run " + std::to_string(r + 1) + " began with a task_queued not marked restarted (" + history + ")";
        int ends = 0;
        std::vector<int> dequeued;
        for (std::size_t i = from; i < to; ++i) {
            const auto& e = evs[i];
            switch (e.type) {
            case event_type::task_queued: break;
            case event_type::task_dequeued: dequeued.push_back(e.attempt.value_or(0)); break;
            case event_type::task_started: ++starts; break;
            case event_type::task_completed:
            case event_type::task_error:
                ++ends;
                if (i + 1 != to) return "an event after its end event" + which + " (" + history + ")";
                break;
            case event_type::task_removed: return "task_removed, and no scenario removes a task (" + history + ")";
            }
        }
        // One task_dequeued per attempt the queue took: every attempt of a queued run, a
        // started task's attempts after those its start() made.
        const int first = was_queued ? 1 : (dequeued.empty() ? attempts + 1 : dequeued.front());
        bool exact = first >= (was_queued ? 1 : 2) && static_cast<int>(dequeued.size()) == attempts - first + 1;
        for (std::size_t k = 0; exact && k < dequeued.size(); ++k) exact = dequeued[k] == first + static_cast<int>(k);
        if (!exact)
            return "expected one task_dequeued per attempt the queue took" + which + " (attempts " +
                   std::to_string(was_queued ? 1 : 2) + ".." + std::to_string(attempts) + (was_queued ? "" : ", or none") +
                   "), got " + std::to_string(dequeued.size()) + " (" + history + ")";
        if (ends != (final ? 1 : 0))
            return std::string(final ? "expected one end event" : "expected no end event for a task not final") + which +
                   ", got " + std::to_string(ends) + " (" + history + ")";
    }
    if (starts != ran)
        return "expected one task_started per agent that ran (" + std::to_string(ran) + "), got " + std::to_string(starts) +
               " (" + history + ")";
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

} // namespace kugetsu::sim::detail
