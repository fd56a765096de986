// kugetsu/dispatcher.hpp: basic_dispatcher, the host of the policies, which holds the cap.
//
// basic_dispatcher<Lock, Spawner, Notifier, Store, Clock, Workspace> enqueues tasks, starts
// agents without ever running more than `cap` dev agents at once, runs the queue, and
// records each agent's end. Every decision that depends on the number of live agents is
// taken with the Lock held, in one unit of work of the Store, in this order: reap the dead,
// count the live dev sessions (the PM never counts), write state, spawn. Nothing inside the
// lock waits on an agent.
//
// ONE COMMIT PER PASS. Everything a critical section writes (ends recorded, attempts
// counted, claims, sessions, final states and the events that describe them) goes into the
// store's unit of work and is committed together, with one durable sync, before any held
// agent is released: a pass that starts k agents spawns the k children held before exec,
// writes their sessions, commits once, then releases all k. What the releases teach (the
// agents run: `running`, task_started; an exec failed: the attempt failed) is committed next,
// as `visible` unless it holds a final state. So no agent runs unrecorded, the attempt that
// runs is counted durably before its program can run, and a process that dies at any moment
// leaves a state the next reap repairs. A claim is committed before a workspace that has
// lasting effects is prepared (see workspace_with_effects).
//
// THE LIMITS are the store's (its HOME's): cap, default attempts, kill grace. A dispatcher's
// options only initialise a store that has none; every critical section reads the stored
// ones, so set_limits() from any process applies to every dispatcher at its next pass.
// Lowering the cap kills nothing: no agent starts until fewer than the new cap are live.
//
// EVENTS are written in the unit of the change they report (a transactional outbox), each
// numbered by the store. After the commit and the lock: the Notifier gets the events of this
// object's own units (notify), and a durable_notifier is also relayed the store's outbox from
// where it stands, so it receives every event of every process, again after any crash (at
// least once; the number lets a reader drop copies). A notifier that cannot keep events is
// reported by last_notifier_error(), and the events stay in the store.
//
// Operations (each in two forms: `ec&`, and throwing kugetsu::error):
//   enqueue(spec)      pending (waiting if it runs --after tasks not all completed; error,
//                      dependency_failed, if one of them failed); task_queued, in one unit.
//                      Unknown dependencies and cycles are refused. Takes no lock.
//   start(spec)        a new task now: no free slot (HOME's cap or its group's) ->
//                      start_status::no_slot, paused -> start_status::paused, nothing of it
//                      written; otherwise up to max_attempts attempts in the foreground; if all
//                      fail, the task is error and ec is errc::attempts_exhausted. It does not
//                      wait behind pending tasks (it is run now or not at all).
//   start_item(id)     one attempt at a pending task; no slot -> start_status::no_slot.
//   process_queue()    in one critical section: free = cap - live; take up to `free` runnable
//                      tasks (pending, their group neither paused nor at its cap), higher
//                      priority first, then oldest (task_dequeued), start them, commit once,
//                      release; repeat while failed attempts freed slots. No batch-size
//                      setting. Nothing while the queue is paused.
//   pause/resume(g)    the whole queue, or group g; set_group_cap(g, n): the schedule.
//   reap()             (every operation reaps first) record ended agents (task_completed / task_error with the exit code and
//                      the time the agent ended; task_started first for one that ran but was
//                      never marked running), adopt live agents whose start was interrupted
//                      (not those still held before exec), return to pending the tasks whose
//                      agent never ran (reason start_interrupted), enforce timeouts (SIGTERM
//                      to the process group, SIGKILL after kill_grace), return claims of dead
//                      processes to pending; then settle waiting tasks whose dependencies
//                      ended (pending, or error with reason dependency_failed).
//   cancel(id)         after a reap: pending/notified -> cancelled; running -> stopped like a
//                      timeout, then cancelled once reaped.
//   restart(ids)       finished tasks pending again, fresh attempts, their last runs kept;
//                      task_queued (reason restarted). restart_all(error): every failed one.
//   remove(ids)        pending or finished tasks deleted; task_removed (reason: their state).
//   clean(filter)      finished tasks deleted (by state, by age), with their events; none
//                      that an unfinished task runs after.
//   limits()/set_limits()  the store's limits.
//
// A failed attempt (workspace, spawn or exec failure, or a start interrupted before exec)
// removes its workspace and session and returns the task to pending; after max_attempts it
// is error (task_error, reason attempts_exhausted or start_interrupted).
//
// One dispatcher per thread: an object is not thread-safe. Any number of dispatchers, in any
// number of processes, may share a store if they share the lock.
#pragma once

#include <algorithm>
#include <chrono>
#include <climits>
#include <cstdint>
#include <exception>
#include <functional>
#include <map>
#include <optional>
#include <string>
#include <string_view>
#include <system_error>
#include <utility>
#include <vector>

#include "concepts.hpp"
#include "detail/posix.hpp"
#include "error.hpp"
#include "types.hpp"

namespace kugetsu {

/// The limits a dispatcher gives a store that has none yet (see kugetsu::limits).
using dispatcher_options = limits;

/// Limits a caller insists on (each one set must equal the store's), with the names to give
/// them in the error: a process told MAX_CONCURRENT_AGENTS=2 on a HOME whose cap is 3 must
/// not silently run under 3 (errc::limits_mismatch, see basic_dispatcher::expect_limits).
struct limit_expectations {
    std::optional<int> cap;
    std::optional<int> max_attempts;
    std::optional<duration> kill_grace;
    std::string cap_name = "cap", max_attempts_name = "max_attempts", kill_grace_name = "kill_grace";
};

enum class start_status {
    started,   ///< an agent runs; item.state == running
    no_slot,   ///< the cap (HOME's or the task's group's) is reached: not an error, not an attempt
    paused,    ///< the queue or the task's group is paused: not an error, not an attempt
    failed,    ///< the attempt failed; item is pending again, or error if attempts ran out
};

struct start_result {
    start_status status = start_status::no_slot;
    queue_item item;
    std::string detail;   ///< failed: why
};

struct reap_report {
    int live = 0;        ///< live dev agents
    std::map<std::string, int> group_live;   ///< live dev agents per group ("" : none)
    int pm_live = 0;     ///< live PM agents (0 or 1)
    int finished = 0;    ///< agents whose end was recorded
    int adopted = 0;     ///< live agents whose interrupted start was completed
    int interrupted = 0; ///< agents that never ran (their start was cut short): tasks given back
    int recovered = 0;   ///< notified tasks of dead processes returned to pending
    int signalled = 0;   ///< SIGTERM or SIGKILL sent (timeout, cancel)
};

struct pass_report {
    int live_before = 0;
    int taken = 0;       ///< pending tasks taken (attempts made)
    int started = 0;
    int failed = 0;      ///< failed attempts
    int finished = 0;    ///< agent ends recorded by this pass
    int commits = 0;     ///< units of work committed
};

/// What a process that waits for work (a daemon) must wake for besides changes to the store
/// (basic_dispatcher::next_wake): the earliest deadline of a running agent (its timeout, or the
/// end of the grace after SIGTERM) or of a retry's backoff, and the processes whose death
/// changes a decision: the running agents (a slot frees) and the owners of claims (the claim
/// is recovered). Deadlines are in the dispatcher's clock.
struct wake_plan {
    std::optional<timestamp> deadline;
    std::vector<process_ref> owners;   ///< a claim is recovered when its owner dies
    std::vector<process_ref> agents;   ///< a slot may free when an agent dies
};

template <lock Lock, spawner Spawner, notifier Notifier, store Store, clock Clock, workspace Workspace>
class basic_dispatcher {
public:
    using lock_type = Lock;
    using spawner_type = Spawner;
    using notifier_type = Notifier;
    using store_type = Store;
    using clock_type = Clock;
    using workspace_type = Workspace;

    /// `options`: the limits of a store that has none yet. Throws
    /// kugetsu::error(errc::invalid_limit) if they are out of range.
    basic_dispatcher(Lock lock, Spawner spawner, Notifier notifier, Store store, Clock clock,
                     Workspace workspace, dispatcher_options options = {})
        : lock_(std::move(lock)), spawner_(std::move(spawner)), notifier_(std::move(notifier)),
          store_(std::move(store)), clock_(std::move(clock)), workspace_(std::move(workspace)),
          opt_(options), lim_(options) {
        if (auto ec = opt_.validate()) throw error(ec, "dispatcher options: " + describe_limits_error(opt_));
    }

    basic_dispatcher(basic_dispatcher&&) = default;
    basic_dispatcher& operator=(basic_dispatcher&&) = default;

    // ---- enqueue ------------------------------------------------------------------------

    queue_item enqueue(const task_spec& spec, std::error_code& ec) {
        ec.clear();
        detail_.clear();
        if (check_spec(spec, ec)) return {};
        if (spec.role == role::pm) {
            ec = errc::invalid_transition;
            detail_ = "task \"" + spec.id + "\": a PM agent is started with start(), not queued";
            return {};
        }
        queue_item it;
        {
            unit_scope u(*this);
            open_unit(ec);
            if (!ec) {
                it = make_item(spec);
                if (!it.after.empty()) check_dependencies(it, ec);
                if (!ec) store_.create_item(it, ec);
                if (ec) {
                    if (detail_.empty()) note_failure("enqueue \"" + spec.id + "\"", ec, store_);
                } else {
                    add_event(make_event(event_type::task_queued, it), durability::durable, ec);
                    // Its dependencies may have ended already: it is pending, or failed, at once.
                    if (!ec && it.state == task_state::waiting) settle_waiting(it, ec);
                }
            }
            close_unit(ec);
        }
        deliver();
        return ec ? queue_item{} : it;
    }
    queue_item enqueue(const task_spec& spec) { return throwing([&](auto& ec) { return enqueue(spec, ec); }); }

    // ---- start --------------------------------------------------------------------------

    start_result start(const task_spec& spec, std::error_code& ec) {
        ec.clear();
        detail_.clear();
        if (check_spec(spec, ec)) return {};
        auto result = locked(ec, [&]() -> start_result {
            reap_report rep;
            reap_locked(rep, ec);
            if (ec) return {};
            // A taken id is an error whether or not a slot is free.
            auto taken = [&] {
                auto existing = store_.get_item(spec.id, ec);
                if (ec) return note_failure("start \"" + spec.id + "\"", ec, store_), true;
                if (existing) refuse(errc::duplicate_task, "start \"" + spec.id + "\": a task with this id already exists");
                return bool(existing);
            };
            if (spec.role == role::pm) {
                if (rep.pm_live > 0) {
                    if (taken()) return {};
                    refuse(errc::pm_already_running, "a PM agent is already running");
                    return {};
                }
            } else {
                auto sched = store_.get_schedule(ec);
                if (ec) return note_failure("schedule", ec, store_), start_result{};
                if (sched.holds(spec.group)) {
                    if (taken()) return {};
                    return {start_status::paused, make_item(spec), {}};
                }
                if (rep.live >= lim_.cap || group_full(sched, rep.group_live, spec.group)) {
                    if (taken()) return {};
                    return {start_status::no_slot, make_item(spec), {}};
                }
                if (!spec.after.empty()) {
                    if (taken()) return {};
                    queue_item probe = make_item(spec);
                    const auto dep = dependencies_of(probe, ec);
                    if (ec) return {};
                    if (dep.missing.empty() && dep.failed.empty() && dep.unfinished.empty()) {
                        // all completed: it may start now
                    } else {
                        refuse(dep.missing.empty() ? errc::invalid_transition : errc::unknown_task,
                               "start \"" + spec.id + "\": " + dep.describe() +
                                   (dep.missing.empty() && dep.failed.empty() ? " (enqueue it with --after to wait)" : ""));
                        return {};
                    }
                }
            }
            queue_item it = make_item(spec);
            // Claimed from birth, with its first attempt counted: committed with its session,
            // before the agent may exec. If this process dies before that commit, nothing of
            // the task exists; after it, the reap finds a claim, or a session, of a dead process.
            it.state = task_state::notified;
            it.owner = spawner_.self();
            it.attempts = 1;
            store_.create_item(it, ec);
            if (ec == errc::duplicate_task) {
                ec.clear();
                refuse(errc::duplicate_task, "start \"" + spec.id + "\": a task with this id already exists");
                return {};
            }
            if (ec) return note_failure("start \"" + spec.id + "\"", ec, store_), start_result{};
            need(durability::durable);
            bool counted = true;
            for (;;) {
                start_result r = attempt(it, counted ? attempt_kind::counted : attempt_kind::next, ec);
                counted = false;
                if (ec) {
                    dropped_.push_back(spec.id);   // maybe committed as claimed: the next reap gives it back
                    return r;
                }
                if (r.status == start_status::started) return r;
                it = r.item;
                if (is_final(it.state)) {
                    refuse(errc::attempts_exhausted, detail_);   // recorded: the unit commits
                    return r;
                }
            }
        });
        // Failed, perhaps at its last commit after a checkpoint committed the claim: the next
        // reap gives it up (a claim that is not this process's is left alone).
        if (ec) dropped_.push_back(spec.id);
        return result;
    }
    start_result start(const task_spec& spec) { return throwing([&](auto& ec) { return start(spec, ec); }); }

    start_result start_item(std::string_view id, std::error_code& ec) {
        ec.clear();
        detail_.clear();
        auto result = locked(ec, [&]() -> start_result {
            reap_report rep;
            reap_locked(rep, ec);
            if (ec) return {};
            auto it = store_.get_item(id, ec);
            if (ec) return note_failure("start \"" + std::string(id) + "\"", ec, store_), start_result{};
            if (!it) {
                refuse(errc::unknown_task, "no task \"" + std::string(id) + "\"");
                return {};
            }
            if (it->state != task_state::pending) {
                refuse(errc::invalid_transition,
                       "task \"" + it->id + "\" is " + std::string(to_string(it->state)) + ", not pending" +
                           (it->state == task_state::waiting ? " (it waits for the tasks it runs after)" : ""));
                return {start_status::failed, *it, detail_};
            }
            if (it->role == role::dev) {
                auto sched = store_.get_schedule(ec);
                if (ec) return note_failure("schedule", ec, store_), start_result{};
                if (sched.holds(it->group)) return {start_status::paused, *it, {}};
                if (group_full(sched, rep.group_live, it->group)) return {start_status::no_slot, *it, {}};
            }
            const bool full = it->role == role::pm ? rep.pm_live > 0 : rep.live >= lim_.cap;
            if (full) return {start_status::no_slot, *it, {}};   // not an attempt; it stays pending
            auto r = attempt(*it, attempt_kind::dequeued, ec);
            return r;
        });
        if (ec) dropped_.emplace_back(id);   // as in start()
        return result;
    }
    start_result start_item(std::string_view id) {
        return throwing([&](auto& ec) { return start_item(id, ec); });
    }

    // ---- the queue ----------------------------------------------------------------------

    /// One pass, in one critical section: reap, then take as many pending tasks as there are
    /// free slots, oldest first; claim them, spawn each held, write their sessions, commit
    /// once, release them all. A failed attempt frees its slot for the next task (or for the
    /// same task, while it has attempts left): the pass takes again.
    pass_report process_queue(std::error_code& ec) {
        ec.clear();
        detail_.clear();
        pass_report report;
        const int commits_before = commits_;
        // The tasks this pass claimed. If it fails, even at its last commit, they are perhaps
        // committed as claimed (a checkpoint committed the claims of a batch before a workspace
        // with effects was prepared): the next reap gives them up.
        std::vector<std::string> taken;
        locked(ec, [&] {
            reap_report rep;
            reap_locked(rep, ec);
            if (ec) return 0;
            report.finished = rep.finished;
            report.live_before = rep.live;
            const auto sched = store_.get_schedule(ec);
            if (ec) return note_failure("schedule", ec, store_), 0;
            if (sched.paused) return 0;
            int live = rep.live;
            auto group_live = rep.group_live;
            while (live < lim_.cap) {
                const int free = lim_.cap - live;
                // Taken and claimed (the attempts counted), then started together.
                auto items = take_runnable(static_cast<std::size_t>(free), sched, group_live, taken, ec);
                if (ec) return 0;
                if (items.empty()) break;
                report.taken += static_cast<int>(items.size());
                auto results = attempt_all(items, ec);
                if (ec) return 0;
                for (std::size_t i = 0; i < results.size(); ++i) {
                    if (results[i].status == start_status::started) {
                        ++report.started;
                        ++live;
                    } else {
                        ++report.failed;
                        --group_live[items[i].group];
                    }
                }
            }
            return 0;
        });
        if (ec) dropped_.insert(dropped_.end(), taken.begin(), taken.end());
        report.commits = commits_ - commits_before;
        return report;
    }
    pass_report process_queue() { return throwing([&](auto& ec) { return process_queue(ec); }); }

    reap_report reap(std::error_code& ec) {
        ec.clear();
        detail_.clear();
        return locked(ec, [&] {
            reap_report rep;
            reap_locked(rep, ec);
            return rep;
        });
    }
    reap_report reap() { return throwing([&](auto& ec) { return reap(ec); }); }

    /// Live dev agents, after reaping the dead.
    int live(std::error_code& ec) { return reap(ec).live; }
    int live() { return reap().live; }

    queue_item cancel(std::string_view id, std::error_code& ec) {
        ec.clear();
        detail_.clear();
        return locked(ec, [&]() -> queue_item {
            // Reap first: a task whose running mark failed to be written has a live agent
            // (adopted here) that must be stopped, not forgotten.
            reap_report rep;
            reap_locked(rep, ec);
            if (ec) return {};
            auto it = store_.get_item(id, ec);
            if (ec) return note_failure("cancel \"" + std::string(id) + "\"", ec, store_), queue_item{};
            if (!it) {
                refuse(errc::unknown_task, "no task \"" + std::string(id) + "\"");
                return {};
            }
            if (it->state == task_state::pending || it->state == task_state::notified ||
                it->state == task_state::waiting) {
                it->state = task_state::cancelled;
                it->owner = {};
                it->finished_at = it->updated_at = clock_.now();
                if (!put_item(*it, durability::durable, ec)) return *it;
                auto e = make_event(event_type::task_error, *it);
                e.reason = event_reason::cancelled;
                add_event(std::move(e), durability::durable, ec);
            } else if (it->state == task_state::running) {
                if (it->stop_reason == stop_reason::none) it->stop_reason = stop_reason::cancelled;
                enforce_stop(*it, rep, ec);
            } else {
                refuse(errc::invalid_transition, "task \"" + it->id + "\" is already " + std::string(to_string(it->state)));
            }
            return *it;
        });
    }
    queue_item cancel(std::string_view id) { return throwing([&](auto& ec) { return cancel(id, ec); }); }

    /// Finished tasks (completed, error or cancelled) queued again under the same ids, all in
    /// one unit: each pending, with a fresh attempt budget, enqueued now (behind the tasks
    /// already pending, in the order given), its last run kept in `runs` (the oldest dropped
    /// past max_kept_runs); task_queued, reason "restarted". If one is unknown
    /// (errc::unknown_task) or not finished (errc::task_active), none is restarted and
    /// last_error_detail() names it. Returns the tasks as they are now.
    std::vector<queue_item> restart(const std::vector<std::string>& ids, std::error_code& ec) {
        detail_.clear();
        auto refusal = [](const queue_item& it) {
            return is_final(it.state) ? std::string()
                                      : "task \"" + it.id + "\" is " + std::string(to_string(it.state)) +
                                            ": only a finished task can be restarted";
        };
        return for_tasks("restart", ids, ec, refusal, [&](queue_item& it, std::error_code& e) { requeue(it, e); },
                         [&](std::error_code& e) { resolve_waiting(e); });
    }

    /// Every task in final state `st` (error: `kugetsu retry --failed`) restarted, as
    /// restart() does, oldest first, in one unit. errc::invalid_transition if `st` is not final.
    std::vector<queue_item> restart_all(task_state st, std::error_code& ec) {
        ec.clear();
        detail_.clear();
        if (!is_final(st)) {
            ec = errc::invalid_transition;
            detail_ = "only finished tasks can be restarted, not " + std::string(to_string(st)) + " ones";
            return {};
        }
        return locked(ec, [&]() -> std::vector<queue_item> {
            reap_report rep;
            reap_locked(rep, ec);
            if (ec) return {};
            auto items = store_.items_in_state(st, SIZE_MAX, ec);
            if (ec) return note_failure("tasks " + std::string(to_string(st)), ec, store_), std::vector<queue_item>{};
            for (auto& it : items) {
                requeue(it, ec);
                if (ec) return {};
            }
            resolve_waiting(ec);
            return items;
        });
    }

    std::vector<queue_item> restart_all(task_state st) {
        return throwing([&](auto& ec) { return restart_all(st, ec); });
    }
    std::vector<queue_item> restart(const std::vector<std::string>& ids) {
        return throwing([&](auto& ec) { return restart(ids, ec); });
    }
    queue_item restart(std::string_view id, std::error_code& ec) {
        auto v = restart(std::vector<std::string>{std::string(id)}, ec);
        return v.empty() ? queue_item{} : std::move(v.front());
    }
    queue_item restart(std::string_view id) { return throwing([&](auto& ec) { return restart(id, ec); }); }

    /// Deletes pending or finished tasks, all in one unit (their events stay); task_removed,
    /// reason: the state it had. If one is unknown (errc::unknown_task) or taken or running
    /// (errc::task_active), none is removed. Returns the tasks as they were.
    std::vector<queue_item> remove(const std::vector<std::string>& ids, std::error_code& ec,
                                   const std::function<void(const std::vector<queue_item>&)>& after_commit = {})
        requires store_with_removal<Store>
    {
        std::vector<queue_item> removed;
        if (after_commit) after_commit_ = [&] { after_commit(removed); };
        detail::scope_exit clear_hook([&] { after_commit_ = nullptr; });
        auto refusal = [](const queue_item& it) {
            return it.state != task_state::notified && it.state != task_state::running
                       ? std::string()
                       : "task \"" + it.id + "\" is " + std::string(to_string(it.state)) +
                             ": cancel it first, or wait until it ends";
        };
        for_tasks("remove", ids, ec, refusal, [&](queue_item& it, std::error_code& e) {
            need(durability::durable);
            store_.remove_item(it.id, e);
            if (e) return note_failure("remove \"" + it.id + "\"", e, store_);
            auto ev = make_event(event_type::task_removed, it);
            ev.reason = removed_in(it.state);
            add_event(std::move(ev), durability::durable, e);
            if (!e) removed.push_back(it);   // (for after_commit, which runs before this returns)
        });
        if (ec) removed.clear();
        return removed;
    }

    /// What clean() removes: finished tasks in these states (none named: all three final
    /// states) that finished before `finished_before` (none: whenever).
    struct clean_filter {
        std::vector<task_state> states;
        std::optional<timestamp> finished_before;
    };

    /// Deletes, in one unit, the finished tasks the filter keeps, except those a task not yet
    /// finished runs after (--after), then prunes the outbox: the events of every task that no
    /// longer exists (clean's, and those of tasks removed earlier), but the last event. No
    /// event is written for them. `after_commit(removed)` runs after the commit, still under
    /// the lock (so no agent of this HOME starts meanwhile): the CLI deletes logs there.
    /// errc::invalid_transition if a state named is not final. Returns the tasks removed.
    std::vector<queue_item> clean(const clean_filter& f, std::error_code& ec,
                                  const std::function<void(const std::vector<queue_item>&)>& after_commit = {})
        requires store_with_removal<Store>
    {
        ec.clear();
        std::vector<task_state> states = f.states;
        if (states.empty()) states = {task_state::completed, task_state::error, task_state::cancelled};
        for (auto st : states)
            if (!is_final(st)) {
                ec = errc::invalid_transition;
                detail_ = "clean removes finished tasks only (completed, error, cancelled), not " +
                          std::string(to_string(st)) + " ones";
                return {};
            }
        std::vector<queue_item> removed;
        if (after_commit) after_commit_ = [&] { after_commit(removed); };
        detail::scope_exit clear_hook([&] { after_commit_ = nullptr; });
        constexpr auto all = static_cast<std::size_t>(-1);
        locked(ec, [&]() -> int {
            reap_report rep;
            reap_locked(rep, ec);   // (settles waiting tasks first: those whose dependencies ended)
            if (ec) return 0;
            // Tasks that others not yet finished run after are kept.
            std::vector<std::string> needed;
            for (auto st : {task_state::waiting, task_state::pending, task_state::notified, task_state::running}) {
                for (auto& it : store_.items_in_state(st, all, ec))
                    needed.insert(needed.end(), it.after.begin(), it.after.end());
                if (ec) return note_failure("queue", ec, store_), 0;
            }
            std::sort(needed.begin(), needed.end());
            for (auto st : states) {
                for (auto& it : store_.items_in_state(st, all, ec)) {
                    const timestamp when = it.finished_at.value_or(it.updated_at);
                    if (f.finished_before && when >= *f.finished_before) continue;
                    if (std::binary_search(needed.begin(), needed.end(), it.id)) continue;
                    store_.remove_item(it.id, ec);
                    if (ec) return note_failure("clean \"" + it.id + "\"", ec, store_), 0;
                    removed.push_back(std::move(it));
                }
                if (ec) return note_failure("queue", ec, store_), 0;
            }
            store_.prune_events(ec);
            if (ec) return note_failure("prune events", ec, store_), 0;
            need(durability::durable);
            return 0;
        });
        if (ec) removed.clear();
        return removed;
    }
    std::vector<queue_item> remove(const std::vector<std::string>& ids)
        requires store_with_removal<Store>
    {
        return throwing([&](auto& ec) { return remove(ids, ec); });
    }
    queue_item remove(std::string_view id, std::error_code& ec)
        requires store_with_removal<Store>
    {
        auto v = remove(std::vector<std::string>{std::string(id)}, ec);
        return v.empty() ? queue_item{} : std::move(v.front());
    }
    queue_item remove(std::string_view id)
        requires store_with_removal<Store>
    {
        return throwing([&](auto& ec) { return remove(id, ec); });
    }

    // ---- the schedule ---------------------------------------------------------------------

    /// The store's schedule (pause, group caps), as committed.
    queue_schedule schedule(std::error_code& ec) {
        ec.clear();
        detail_.clear();
        return locked(ec, [&]() -> queue_schedule {
            auto sc = store_.get_schedule(ec);
            if (ec) note_failure("schedule", ec, store_);
            return sc;
        });
    }
    queue_schedule schedule() { return throwing([&](auto& ec) { return schedule(ec); }); }

    /// Pauses the whole queue (group ""), or one group: no dev agent starts while it is
    /// paused (start() says start_status::paused); running agents are left alone.
    queue_schedule pause(const std::string& group, std::error_code& ec) { return set_paused(group, true, ec); }
    queue_schedule pause(const std::string& group = {}) {
        return throwing([&](auto& ec) { return pause(group, ec); });
    }
    queue_schedule resume(const std::string& group, std::error_code& ec) { return set_paused(group, false, ec); }
    queue_schedule resume(const std::string& group = {}) {
        return throwing([&](auto& ec) { return resume(group, ec); });
    }

    /// A group's own cap (1..4096; none: only HOME's applies). Within HOME's cap: all groups
    /// together never run more than it. Lowering it stops nothing.
    queue_schedule set_group_cap(const std::string& group, std::optional<int> cap, std::error_code& ec) {
        detail_.clear();
        if (!valid_group_name(group)) return bad_group(group, ec);
        if (cap && validate_cap(*cap)) {
            ec = errc::invalid_limit;
            detail_ = "group \"" + group + "\": cap must be 1.." + std::to_string(max_cap) + " (got " + std::to_string(*cap) + ")";
            return {};
        }
        return change_schedule([&](queue_schedule& sc) {
            auto p = sc.group(group);
            p.cap = cap;
            sc.set_group(group, p);
        }, ec);
    }
    queue_schedule set_group_cap(const std::string& group, std::optional<int> cap) {
        return throwing([&](auto& ec) { return set_group_cap(group, cap, ec); });
    }

    // ---- limits -------------------------------------------------------------------------

    /// From now on every operation fails with errc::limits_mismatch, changing nothing, while
    /// the store's limits differ from an expectation set here (a store without limits gets
    /// the options, which should then agree). set_limits() is not checked.
    void expect_limits(limit_expectations e) { expect_ = std::move(e); }

    /// The store's limits (written from the options first if it has none).
    kugetsu::limits limits(std::error_code& ec) {
        ec.clear();
        detail_.clear();
        return locked(ec, [&] { return lim_; });
    }
    kugetsu::limits limits() { return throwing([&](auto& ec) { return limits(ec); }); }

    /// Changes the store's limits, under the lock. Lowering the cap stops nothing: no agent
    /// starts until fewer than the new cap are live. errc::invalid_limit if out of range.
    void set_limits(const kugetsu::limits& l, std::error_code& ec) {
        ec.clear();
        detail_.clear();
        if ((ec = l.validate())) {
            detail_ = "limits: " + describe_limits_error(l);
            return;
        }
        setting_limits_ = true;
        detail::scope_exit done([&] { setting_limits_ = false; });
        locked(ec, [&] {
            store_.put_limits(l, ec);
            if (ec) return note_failure("limits", ec, store_), 0;
            need(durability::durable);
            lim_ = l;
            return 0;
        });
    }
    void set_limits(const kugetsu::limits& l) {
        throwing([&](auto& ec) { return set_limits(l, ec), 0; });
    }

    /// Gives the notifier what has been committed since (a durable notifier: the store's
    /// outbox from where it stands). Every operation does this after its lock; call it after
    /// reading the store directly (a read may quarantine a row and commit its event).
    void flush_events() noexcept { deliver(); }

    // ---- waiting ------------------------------------------------------------------------

    using wake_plan = kugetsu::wake_plan;

    /// Reads the committed state, without the lock (a plan is a hint: a change after it wakes
    /// the waiter anyway).
    wake_plan next_wake(std::error_code& ec) {
        ec.clear();
        detail_.clear();
        wake_plan w;
        auto earliest = [&](timestamp t) {
            if (!w.deadline || t < *w.deadline) w.deadline = t;
        };
        constexpr auto all = static_cast<std::size_t>(-1);
        auto l = store_.get_limits(ec);
        if (ec) return note_failure("limits", ec, store_), w;
        const duration grace = l ? l->kill_grace : opt_.kill_grace;
        const auto running = store_.items_in_state(task_state::running, all, ec);
        if (ec) return note_failure("queue", ec, store_), w;
        const auto claimed = store_.items_in_state(task_state::notified, all, ec);
        if (ec) return note_failure("queue", ec, store_), w;
        for (const auto& it : running) {
            w.agents.push_back(it.process);
            if (it.term_sent_at && !it.kill_sent) earliest(*it.term_sent_at + grace);
            else if (!it.term_sent_at && it.stop_reason != stop_reason::none) earliest(it.updated_at);
            else if (!it.term_sent_at && it.timeout && it.started_at) earliest(*it.started_at + *it.timeout);
        }
        const auto waiting = store_.items_in_state(task_state::waiting, all, ec);
        if (ec) return note_failure("queue", ec, store_), w;
        for (const auto& it : waiting)
            if (it.not_before) earliest(*it.not_before);   // a retry becomes runnable
        const process_ref me = spawner_.self();
        for (const auto& it : claimed) {
            if (it.owner && it.owner != me) w.owners.push_back(it.owner);
            // A claim with a session (its agent adopted or interrupted): its agent decides.
            if (it.process) w.agents.push_back(it.process);
        }
        return w;
    }
    wake_plan next_wake() { return throwing([&](auto& ec) { return next_wake(ec); }); }

    // ---- access -------------------------------------------------------------------------

    /// The limits this dispatcher gives a store that has none.
    const dispatcher_options& options() const noexcept { return opt_; }
    /// The limits in force at the last critical section.
    const kugetsu::limits& current_limits() const noexcept { return lim_; }
    Lock& lock_policy() noexcept { return lock_; }
    Spawner& spawner() noexcept { return spawner_; }
    Notifier& notifier() noexcept { return notifier_; }
    Store& store() noexcept { return store_; }
    Clock& clock() noexcept { return clock_; }
    Workspace& workspace() noexcept { return workspace_; }
    /// After a failed operation: what failed, on which task or file, and why. Each operation
    /// clears it first, so it never describes an earlier one.
    const std::string& last_error_detail() const noexcept { return detail_; }
    /// The last failure of the durable notifier's relay ("" after a relay that worked). The
    /// events it could not keep stay in the store; the next relay gives them again.
    const std::string& last_notifier_error() const noexcept { return notifier_detail_; }
    /// Units of work this object committed (for benchmarks and tests).
    int commits() const noexcept { return commits_; }

private:
    // ---- units of work ------------------------------------------------------------------

    /// Rolls back, and abandons held agents, if an exception leaves a unit open (the
    /// simulator's SIGKILL unwinds this way; so does std::bad_alloc).
    struct unit_scope {
        basic_dispatcher& d;
        explicit unit_scope(basic_dispatcher& d_) : d(d_) {}
        unit_scope(const unit_scope&) = delete;
        unit_scope& operator=(const unit_scope&) = delete;
        ~unit_scope() { d.abort_unit(); }
    };

    template <class F>
    auto locked(std::error_code& ec, F&& f) -> decltype(f()) {
        lock_.lock(ec);
        if (ec) {
            detail_ = describe("lock", ec, lock_);   // names the lock file when the lock can
            return {};
        }
        decltype(f()) r{};
        refusal_.clear();
        {
            detail::scope_exit release([&] {
                abort_unit();   // only if an exception left one open
                lock_.unlock();
            });
            open_unit(ec);
            if (!ec) {
                r = f();
                close_unit(ec);
                // Committed and not refused: what must follow the commit under the lock.
                if (!ec && !refusal_ && after_commit_) after_commit_();
            }
        }
        deliver();
        if (!ec && refusal_) {   // the operation was refused; what the unit recorded (a reap) stands
            ec = refusal_;
            detail_ = refusal_detail_;
        }
        return r;
    }

    queue_schedule set_paused(const std::string& group, bool paused, std::error_code& ec) {
        detail_.clear();
        if (!group.empty() && !valid_group_name(group)) return bad_group(group, ec);
        return change_schedule([&](queue_schedule& sc) {
            if (group.empty()) {
                sc.paused = paused;
                return;
            }
            auto p = sc.group(group);
            p.paused = paused;
            sc.set_group(group, p);
        }, ec);
    }

    queue_schedule bad_group(const std::string& group, std::error_code& ec) {
        ec = errc::invalid_group;
        detail_ = "group \"" + group.substr(0, 80) + "\": " + ec.message();
        return {};
    }

    /// restart() and remove(): after a reap, reads every task named; if one is unknown or
    /// `refusal(task)` says why it may not be changed, refuses (nothing of them changed; the
    /// reap stands); else `change`s each, in the same unit. A name given twice counts once.
    template <class R, class F, class Then = void (*)(std::error_code&)>
    std::vector<queue_item> for_tasks(const char* what, const std::vector<std::string>& ids, std::error_code& ec,
                                      R&& refusal, F&& change, Then&& then = [](std::error_code&) {}) {
        ec.clear();
        return locked(ec, [&]() -> std::vector<queue_item> {
            std::vector<queue_item> items;
            reap_report rep;
            reap_locked(rep, ec);   // a task whose agent has just ended is finished
            if (ec) return {};
            for (const auto& id : ids) {
                if (std::any_of(items.begin(), items.end(), [&](const queue_item& o) { return o.id == id; })) continue;
                auto it = store_.get_item(id, ec);
                if (ec) return note_failure(std::string(what) + " \"" + id + "\"", ec, store_), std::vector<queue_item>{};
                if (!it) return refuse(errc::unknown_task, "no task \"" + id + "\""), std::vector<queue_item>{};
                if (auto why = refusal(*it); !why.empty()) return refuse(errc::task_active, std::move(why)), std::vector<queue_item>{};
                items.push_back(std::move(*it));
            }
            for (auto& it : items) {
                change(it, ec);
                if (ec) return {};
            }
            then(ec);
            return items;
        });
    }

    /// restart(): a finished task pending again, its run kept; task_queued (restarted).
    void requeue(queue_item& it, std::error_code& e) {
        next_run(it, it.state);
        it.retried = 0;   // a fresh budget of retries too
        it.not_before.reset();
        // One that runs after others waits for them again (resolve_waiting() decides at once).
        it.state = it.after.empty() ? task_state::pending : task_state::waiting;
        // Distinct and growing, so that tasks restarted together keep the order given.
        it.enqueued_at = it.updated_at = std::max(clock_.now(), last_requeue_ + duration(1));
        last_requeue_ = it.enqueued_at;
        it.last_error.clear();
        if (!put_item(it, durability::durable, e)) return;
        auto ev = make_event(event_type::task_queued, it);
        ev.reason = event_reason::restarted;
        add_event(std::move(ev), durability::durable, e);
    }

    /// Keeps the item's run (ended `how`) in `runs` (the oldest dropped past max_kept_runs)
    /// and clears what belongs to a run: attempts, process, times, exit code. The caller sets
    /// the state, the times and last_error of the next run.
    static void next_run(queue_item& it, task_state how) {
        past_run run;
        run.attempts = it.attempts;
        run.state = how;
        run.process = it.process;
        run.enqueued_at = it.enqueued_at;
        run.started_at = it.started_at;
        run.finished_at = it.finished_at;
        run.exit_code = it.exit_code;
        run.last_error = it.last_error;
        if (it.runs.size() >= max_kept_runs) it.runs.erase(it.runs.begin());
        it.runs.push_back(std::move(run));
        it.restarts = it.restarts < INT_MAX ? it.restarts + 1 : INT_MAX;
        it.attempts = 0;
        it.process = {};
        it.owner = {};
        it.started_at.reset();
        it.finished_at.reset();
        it.term_sent_at.reset();
        it.kill_sent = false;
        it.stop_reason = stop_reason::none;
        it.exit_code.reset();
    }

    /// Refuses the operation without undoing the unit's other writes (the reap before it).
    void refuse(errc e, std::string why) {
        refusal_ = e;
        refusal_detail_ = why;
        detail_ = std::move(why);
    }

    /// Opens a unit and reads the limits in force (writing the options if the store has none).
    void open_unit(std::error_code& ec) {
        store_.begin(ec);
        if (ec) return note_failure("begin", ec, store_);
        unit_durability_ = durability::visible;
        unit_writes_ = false;
        auto l = store_.get_limits(ec);
        if (ec) return note_failure("limits", ec, store_);
        if (!l) {
            store_.put_limits(opt_, ec);
            if (ec) return note_failure("limits", ec, store_);
            need(durability::durable);
            lim_ = opt_;
        } else if (l->validate()) {
            ec = errc::store_corrupt;
            detail_ = "the store's limits are out of range: " + describe_limits_error(*l);
        } else {
            lim_ = *l;
        }
        if (!ec && !setting_limits_) check_expectations(ec);
    }

    void check_expectations(std::error_code& ec) {
        auto seconds = [](duration d) {
            const auto ms = std::chrono::duration_cast<std::chrono::milliseconds>(d).count();
            std::string frac = ms % 1000 ? std::to_string(1000 + ms % 1000).substr(1) : "";
            while (!frac.empty() && frac.back() == '0') frac.pop_back();
            return std::to_string(ms / 1000) + (frac.empty() ? "" : "." + frac) + " s";
        };
        std::string why;
        if (expect_.cap && *expect_.cap != lim_.cap)
            why = expect_.cap_name + "=" + std::to_string(*expect_.cap) + ", but the store's cap is " + std::to_string(lim_.cap);
        else if (expect_.max_attempts && *expect_.max_attempts != lim_.max_attempts)
            why = expect_.max_attempts_name + "=" + std::to_string(*expect_.max_attempts) +
                  ", but the store's default attempts are " + std::to_string(lim_.max_attempts);
        else if (expect_.kill_grace && *expect_.kill_grace != lim_.kill_grace)
            why = expect_.kill_grace_name + "=" + seconds(*expect_.kill_grace) + ", but the store's kill grace is " +
                  seconds(lim_.kill_grace);
        if (why.empty()) return;
        ec = errc::limits_mismatch;
        detail_ = why;
    }

    /// Commits the open unit (durably if any write asked for it): on success its events are
    /// queued for the notifier and the spawner forgets the agents whose ends it recorded;
    /// on failure (or with ec already set) it is rolled back and held agents are abandoned.
    void close_unit(std::error_code& ec) {
        if (ec) return abort_unit();
        if (store_.in_unit()) {   // (a store may have no units: sqlite_store's test option)
            if (!unit_writes_) {
                store_.commit(durability::visible, ec);   // nothing written: nothing to sync
            } else {
                store_.commit(unit_durability_, ec);
                if (!ec) ++commits_;
            }
            if (ec) {
                note_failure("commit", ec, store_);
                return abort_unit();
            }
        }
        for (auto& e : unit_events_) committed_.push_back(std::move(e));
        unit_events_.clear();
        note_quarantined();
        for (auto& p : forget_after_) {
            forget(p);
            std::erase(abandoned_, p);
        }
        forget_after_.clear();
    }

    void abort_unit() noexcept {
        for (auto& h : held_) {
            spawner_.abandon(h.proc);
            // A failed commit may be visible all the same (its fsync failed after COMMIT):
            // then a session names this agent, which never ran. Remembered, so that the reap
            // gives its task back instead of recording an unknown end (the spawner only knows
            // the agent is gone).
            try {
                if (abandoned_.size() >= 1024) abandoned_.erase(abandoned_.begin());
                abandoned_.push_back(h.proc);
            } catch (...) {
            }
        }
        held_.clear();
        unit_events_.clear();
        forget_after_.clear();
        if (store_.in_unit()) store_.rollback();
    }

    /// Marks the open unit as written, and as durable if `d` asks for it.
    void need(durability d) noexcept {
        unit_writes_ = true;
        if (d == durability::durable) unit_durability_ = durability::durable;
    }

    bool put_item(const queue_item& it, durability d, std::error_code& ec) {
        store_.put_item(it, ec);
        if (ec) return note_failure("task \"" + it.id + "\"", ec, store_), false;
        need(d);
        return true;
    }

    void add_event(event e, durability d, std::error_code& ec) {
        const auto seq = store_.append_event(e, ec);
        if (ec) return note_failure("event for \"" + e.task_id + "\"", ec, store_);
        need(d);
        e.seq = seq;
        unit_events_.push_back(std::move(e));
    }

    /// After the lock: the notifier gets this object's committed events; a durable notifier
    /// is relayed the store's outbox. Not while an exception unwinds (a simulated SIGKILL:
    /// a dead process sends nothing).
    void deliver() noexcept {
        if (std::uncaught_exceptions() > 0) {
            committed_.clear();
            return;
        }
        for (const auto& e : committed_) notifier_.notify(e);
        committed_.clear();
        if constexpr (durable_notifier<Notifier>) {
            try {
                std::error_code ec;
                notifier_.relay(
                    [this](std::uint64_t after, std::error_code& rec) { return store_.events_after(after, 512, rec); },
                    ec);
                if (ec) {
                    notifier_detail_ = describe("events", ec, notifier_);
                    ++notifier_failures_;
                } else {
                    notifier_detail_.clear();
                }
            } catch (...) {
                notifier_detail_ = "events: out of memory";
            }
        }
    }

    /// A store that moves unreadable records aside wrote a task_error event for each, in the
    /// unit that moved it: a plain notifier gets it too.
    void note_quarantined() noexcept {
        if constexpr (store_with_quarantine<Store>) {
            try {
                const auto& q = store_.quarantined();
                for (; quarantine_seen_ < q.size(); ++quarantine_seen_) {
                    const auto& r = q[quarantine_seen_];
                    if (r.task_id.empty() || !r.event_seq) continue;
                    event e;
                    e.seq = r.event_seq;
                    e.type = event_type::task_error;
                    e.task_id = r.task_id;
                    e.time = clock_.now();
                    e.reason = event_reason::quarantined;
                    committed_.push_back(std::move(e));
                }
            } catch (...) {   // out of memory: the store still lists them
            }
        }
    }

    // ---- reaping ------------------------------------------------------------------------

    /// Reaps dead sessions, adopts live ones, gives back the tasks of agents that never ran,
    /// enforces stops, recovers orphaned claims.
    void reap_locked(reap_report& rep, std::error_code& ec) {
        auto sessions = store_.list_sessions(ec);
        if (ec) return note_failure("sessions", ec, store_);
        if constexpr (spawner_with_sweep<Spawner>) {
            std::vector<process_ref> refs;
            refs.reserve(sessions.size());
            for (auto& s : sessions) refs.push_back(s.process);
            spawner_.sweep(refs);
        }
        for (auto& s : sessions) {
            std::error_code pec;
            const process_status st = spawner_.poll(s.process, pec);
            auto it = store_.get_item(s.task_id, ec);
            if (ec) return note_failure("session \"" + s.id + "\"", ec, store_);
            if (st.state == process_state::running) {
                ++(s.role == role::dev ? rep.live : rep.pm_live);
                if (s.role == role::dev) ++rep.group_live[it ? it->group : std::string()];
                if (it && !is_final(it->state) && it->state != task_state::running && !st.held) {
                    // Its starter died between committing the session and marking the item.
                    // (Not while its agent is still held: that one never runs, and the reap
                    // after it exits gives the task back.)
                    it->state = task_state::running;
                    it->process = s.process;
                    it->started_at = s.started_at;
                    it->owner = {};
                    it->updated_at = clock_.now();
                    if (!put_item(*it, durability::visible, ec)) return;   // its session is durable
                    ++rep.adopted;
                    add_event(make_event(event_type::task_started, *it), durability::visible, ec);
                    if (ec) return;
                }
                if (it && it->state == task_state::running) {
                    enforce_stop(*it, rep, ec);
                    if (ec) return;
                }
            } else if (st.state == process_state::never_ran ||
                       std::find(abandoned_.begin(), abandoned_.end(), s.process) != abandoned_.end()) {
                interrupted(s, it, ec);
                if (ec) return;
                ++rep.interrupted;
            } else {
                finish(s, it, st, ec);
                if (ec) return;
                ++rep.finished;
            }
        }
        auto claimed = store_.items_in_state(task_state::notified, static_cast<std::size_t>(-1), ec);
        if (ec) return note_failure("queue", ec, store_);
        const process_ref me = spawner_.self();
        std::erase_if(dropped_, [&](const std::string& id) {
            return std::none_of(claimed.begin(), claimed.end(), [&](auto& c) { return c.id == id && c.owner == me; });
        });
        for (auto& it : claimed) {
            if (std::any_of(sessions.begin(), sessions.end(), [&](auto& s) { return s.task_id == it.id; }))
                continue;   // its session's agent decides (above)
            const bool dropped = std::find(dropped_.begin(), dropped_.end(), it.id) != dropped_.end();
            if (it.owner == me && !dropped) continue;
            std::error_code pec;
            if (!dropped && it.owner && spawner_.poll(it.owner, pec).state == process_state::running) continue;
            it.owner = {};
            it.updated_at = clock_.now();
            if (it.attempts >= it.max_attempts || it.role == role::pm) {
                // Its last attempt was cut short; or it is a PM, which is started, never
                // queued: a PM start whose caller died is not retried by a daemon.
                it.state = task_state::error;
                it.finished_at = it.updated_at;
                it.last_error = "attempt " + std::to_string(it.attempts) + " was interrupted: " +
                                (dropped ? "its start failed" : "its starter died");
            } else {
                it.state = task_state::pending;
            }
            if (!put_item(it, settled(it), ec)) return;
            if (it.state == task_state::error) {
                auto e = make_event(event_type::task_error, it);
                e.reason = it.role == role::pm ? event_reason::start_interrupted : event_reason::attempts_exhausted;
                add_event(std::move(e), durability::durable, ec);
                if (ec) return;
            }
            // Not erased from dropped_ here: if this unit fails, the claim must still be given
            // up by the next reap (the erase_if above drops it once it is no longer ours).
            ++rep.recovered;
        }
        // The ends recorded above (here or by any process since) decide waiting tasks.
        resolve_waiting(ec);
    }

    /// Timeout and cancel: SIGTERM to the process group, SIGKILL after the grace period.
    /// The item stays running until its agent has been reaped.
    void enforce_stop(queue_item& it, reap_report& rep, std::error_code& ec) {
        const timestamp now = clock_.now();
        if (it.stop_reason == stop_reason::none && it.timeout && it.started_at && now - *it.started_at >= *it.timeout)
            it.stop_reason = stop_reason::timeout;
        if (it.stop_reason == stop_reason::none) return;
        std::error_code sec;
        if (!it.term_sent_at) {
            spawner_.signal(it.process, stop_signal::terminate, sec);
            it.term_sent_at = now;
        } else if (!it.kill_sent && now - *it.term_sent_at >= lim_.kill_grace) {
            spawner_.signal(it.process, stop_signal::kill, sec);
            it.kill_sent = true;
        } else {
            return;
        }
        ++rep.signalled;
        if (sec) it.last_error = "signal: " + sec.message();
        it.updated_at = now;
        put_item(it, durability::visible, ec);
    }

    /// Records the end of a session's agent: item final (with the time the agent ended),
    /// session removed, workspace removed; the spawner forgets the agent after the commit.
    void finish(const session& s, std::optional<queue_item>& it, const process_status& st, std::error_code& ec) {
        if (it && !is_final(it->state)) {
            auto& item = *it;
            if (item.state != task_state::running && (st.state == process_state::exited || st.ran)) {
                // It ran, but was never marked running: its starter died after releasing it,
                // and it ended before a reap could adopt it. Its start is recorded first.
                // (An end that is gone says nothing of whether it ran unless the spawner
                // knows it did: st.ran. Found by the simulator once agents could end at any
                // step: a starter and the agent's supervisor both killed, the agent ended.)
                item.state = task_state::running;
                item.process = s.process;
                item.started_at = s.started_at;
                item.owner = {};
                add_event(make_event(event_type::task_started, item), durability::durable, ec);
                if (ec) return;
            }
            const timestamp now = clock_.now();
            item.updated_at = now;
            item.finished_at = st.state == process_state::exited && st.ended_at ? *st.ended_at : now;
            item.owner = {};
            if (st.state == process_state::exited) item.exit_code = st.exit_code;
            event e = make_event(event_type::task_error, item);
            e.exit_code = item.exit_code;
            if (item.stop_reason == stop_reason::cancelled) {
                item.state = task_state::cancelled;
                e.reason = event_reason::cancelled;
            } else if (item.stop_reason == stop_reason::timeout || st.timed_out) {
                item.stop_reason = stop_reason::timeout;
                item.state = task_state::error;
                item.last_error = "timeout";
                e.reason = event_reason::timeout;
            } else if (st.state == process_state::exited && st.exit_code == 0) {
                item.state = task_state::completed;
                e.type = event_type::task_completed;
            } else if (st.state == process_state::exited) {
                item.state = task_state::error;
                e.reason = event_reason::exit_code;
                item.last_error = "exited with code " + std::to_string(st.exit_code);
            } else {
                item.state = task_state::error;
                e.reason = event_reason::exit_unknown;
                item.last_error = "the agent ended and its exit code is unknown (its supervisor died, "
                                  "or it ran before a reboot); finished_at is when the end was noticed";
            }
            remove_workspace(item);
            if (item.state == task_state::error && (e.reason == event_reason::exit_code || e.reason == event_reason::timeout) &&
                item.retried < item.retries) {
                // Retried: this run is kept, and the task waits out its backoff (resolve_waiting
                // makes it pending then); task_queued, reason retry, with this run's exit code.
                ++item.retried;
                const std::string why = item.last_error;
                next_run(item, task_state::error);
                item.state = task_state::waiting;
                item.not_before = now + retry_delay(item.backoff, item.retried);
                item.last_error = "run " + std::to_string(item.restarts) + " " + why + "; retry " +
                                  std::to_string(item.retried) + "/" + std::to_string(item.retries);
                e.type = event_type::task_queued;
                e.reason = event_reason::retry;
            }
            if (!put_item(item, durability::durable, ec)) return;
            add_event(std::move(e), durability::durable, ec);
            if (ec) return;
        }
        drop_session(s, ec);
    }

    /// A session whose agent never ran (its starter died or abandoned it while it was held,
    /// or its supervisor died then): the attempt failed, and the task goes back to pending
    /// while it has attempts left, with reason start_interrupted; it never ends exit_unknown.
    void interrupted(const session& s, std::optional<queue_item>& it, std::error_code& ec) {
        if (it && !is_final(it->state) && (it->process == s.process || it->state == task_state::notified)) {
            auto& item = *it;
            remove_workspace(item);
            item.owner = {};
            item.updated_at = clock_.now();
            item.last_error = "start_interrupted: attempt " + std::to_string(item.attempts) +
                              " never ran (its starter or supervisor died while the agent was held)";
            if (item.attempts >= item.max_attempts || item.role == role::pm) {
                item.state = task_state::error;
                item.finished_at = item.updated_at;
            } else {
                item.state = task_state::pending;
            }
            // Durable: a session left behind by a power loss would name a process of the old
            // boot, whose end is unknown, and the task would end exit_unknown.
            if (!put_item(item, durability::durable, ec)) return;
            if (item.state == task_state::error) {
                auto e = make_event(event_type::task_error, item);
                e.reason = event_reason::start_interrupted;
                add_event(std::move(e), durability::durable, ec);
                if (ec) return;
            }
        }
        drop_session(s, ec);
        need(durability::durable);
    }

    void drop_session(const session& s, std::error_code& ec) {
        store_.remove_session(s.id, ec);
        if (ec) return note_failure("session \"" + s.id + "\"", ec, store_);
        need(durability::visible);
        // After the commit: a process that dies between the two leaves a session whose agent
        // is plainly over (the next reap removes it), and a spawner record no session names
        // (the next sweep removes it), never a session without its exit record.
        forget_after_.push_back(s.process);
    }

    /// A final state is durable; a task given back to the queue needs only be visible: if a
    /// power loss undoes that, its claim (durable, with the attempt count) is given back again.
    static durability settled(const queue_item& it) noexcept {
        return is_final(it.state) ? durability::durable : durability::visible;
    }

    /// Spawners that keep a record per agent (fork_spawner's slot files) drop it once the
    /// agent's end is recorded.
    void forget(const process_ref& p) noexcept {
        if constexpr (spawner_with_forget<Spawner>) spawner_.forget(p);
    }

    void remove_workspace(queue_item& it) {
        std::error_code wec;
        workspace_.remove(it, wec);
        if (!wec) return;
        // Kept (uncommitted work) or failed: say so on the item; the task's outcome stands.
        std::string why = "workspace kept: " + wec.message();
        if constexpr (with_error_detail<Workspace>) why += ": " + std::string(workspace_.last_error_detail());
        it.last_error = it.last_error.empty() ? why : it.last_error + "; " + why;
    }

    // ---- attempts -----------------------------------------------------------------------

    enum class attempt_kind {
        next,       ///< count the attempt and claim the task, then make it
        dequeued,   ///< the same, for a pending task a pass takes: task_dequeued
        counted,    ///< the record as created already claims the task and counts this attempt
    };

    /// An agent spawned held, with its session written in the open unit.
    struct held_agent {
        std::size_t index;   ///< into the caller's items
        process_ref proc;
        session s;
    };

    /// Counts the attempt and claims the task (notified, owned by this process).
    void claim(queue_item& it, attempt_kind how, std::error_code& ec) {
        if (how == attempt_kind::counted) return;
        ++it.attempts;
        it.state = task_state::notified;
        it.owner = spawner_.self();
        it.updated_at = clock_.now();
        if (!put_item(it, durability::durable, ec)) return;
        if (how == attempt_kind::dequeued) add_event(make_event(event_type::task_dequeued, it), durability::durable, ec);
    }

    /// One attempt, with a slot known to be free and the lock held.
    start_result attempt(queue_item& it, attempt_kind how, std::error_code& ec) {
        claim(it, how, ec);
        if (ec) return {start_status::failed, it, detail_};
        std::vector<queue_item> one{it};
        auto r = attempt_all(one, ec);
        it = one.front();
        return r.empty() ? start_result{start_status::failed, it, detail_} : r.front();
    }

    /// Attempts for claimed tasks, with a free slot for each and the lock held: prepare each
    /// workspace (after a commit of the claims if one has lasting effects), spawn each agent
    /// held, write the sessions, commit once, release them all, and record what the releases
    /// taught in the next unit. ec: a store error (the pass stops).
    std::vector<start_result> attempt_all(std::vector<queue_item>& items, std::error_code& ec) {
        std::vector<start_result> results(items.size());
        if (std::any_of(items.begin(), items.end(), [&](auto& it) { return has_effects(it); })) {
            // The claims are durable before anything outlives this process.
            checkpoint(ec);
            if (ec) return {};
        }
        // Workspaces first, then every agent spawned held at once (a spawner with spawn_many()
        // forks its supervisors in parallel), then their sessions.
        std::vector<std::size_t> idx;
        std::vector<spawn_request> reqs;
        for (std::size_t i = 0; i < items.size(); ++i) {
            auto& it = items[i];
            std::error_code wec;
            std::string dir = workspace_.prepare(it, wec);
            if (wec) {
                results[i] = attempt_failed(it, describe("workspace", wec, workspace_), ec);
                if (ec) return {};
                continue;
            }
            if (dir.empty()) dir = it.workdir;
            idx.push_back(i);
            reqs.push_back({it.id, it.argv, std::move(dir), it.timeout, lim_.kill_grace});
        }
        std::vector<std::error_code> spawned(reqs.size());
        std::vector<std::string> spawn_why(reqs.size());
        std::vector<process_ref> procs;
        if constexpr (spawner_with_batches<Spawner>) {
            procs = spawner_.spawn_many(reqs, spawned);
            for (std::size_t k = 0; k < reqs.size(); ++k)
                if (spawned[k]) spawn_why[k] = "spawn: " + std::string(spawner_.detail_of(k));
        } else {
            for (std::size_t k = 0; k < reqs.size(); ++k) {
                procs.push_back(spawner_.spawn(reqs[k], spawned[k]));
                if (spawned[k]) spawn_why[k] = describe("spawn", spawned[k], spawner_);
            }
        }
        for (std::size_t k = 0; k < reqs.size(); ++k) {
            if (!spawned[k]) held_.push_back({idx[k], procs[k], session{}});   // abandoned if anything below fails
        }
        for (std::size_t k = 0; k < reqs.size(); ++k) {
            const std::size_t i = idx[k];
            auto& it = items[i];
            if (spawned[k]) {
                if (spawn_why[k] == "spawn: ") spawn_why[k] = describe("spawn", spawned[k], spawner_);
                results[i] = attempt_failed(it, spawn_why[k], ec);
                if (ec) return {};
                continue;
            }
            const session s{session_id_for(it), it.role, it.id, procs[k], reqs[k].working_dir, clock_.now()};
            for (auto& h : held_)
                if (h.proc == procs[k]) h.s = s;
            store_.put_session(s, ec);
            if (ec) return note_failure("session \"" + s.id + "\"", ec, store_), std::vector<start_result>{};
            need(durability::durable);
        }
        if (held_.empty()) return results;
        // The one sync: claims, attempt counts, sessions and the events that describe them.
        // (If it fails, close_unit abandons the held agents: none of them ever runs.)
        close_unit(ec);
        if (ec) return {};
        auto held = std::move(held_);
        held_.clear();
        // Released after the commit, all at once when the spawner can. Whatever they teach
        // goes into the next unit.
        std::vector<std::error_code> released(held.size());
        std::vector<std::string> why(held.size());
        if constexpr (spawner_with_batches<Spawner>) {
            std::vector<process_ref> refs;
            for (auto& h : held) refs.push_back(h.proc);
            spawner_.release_many(refs, released);
            for (std::size_t k = 0; k < held.size(); ++k)
                if (released[k]) why[k] = "exec: " + std::string(spawner_.detail_of(k));
        } else {
            for (std::size_t k = 0; k < held.size(); ++k) {
                spawner_.release(held[k].proc, released[k]);
                if (released[k]) why[k] = describe("exec", released[k], spawner_);
            }
        }
        open_unit(ec);
        if (ec) return {};   // the sessions say what ran: the next reap adopts or gives back
        for (std::size_t k = 0; k < held.size(); ++k) {
            auto& h = held[k];
            auto& it = items[h.index];
            if (released[k]) {
                store_.remove_session(h.s.id, ec);
                if (ec) return note_failure("session \"" + h.s.id + "\"", ec, store_), std::vector<start_result>{};
                need(durability::visible);
                forget_after_.push_back(h.proc);
                results[h.index] = attempt_failed(it, why[k], ec);
                if (ec) return {};
                continue;
            }
            it.state = task_state::running;
            it.process = h.proc;
            it.owner = {};
            it.started_at = h.s.started_at;
            it.term_sent_at.reset();
            it.kill_sent = false;
            it.stop_reason = stop_reason::none;
            it.exit_code.reset();
            it.updated_at = clock_.now();
            // Visible is enough: after a power loss the session (durable) says that this
            // attempt ran, and the first reap records its end. If this is lost to a crash,
            // the next reap adopts the agent.
            if (!put_item(it, durability::visible, ec)) return {};
            add_event(make_event(event_type::task_started, it), durability::visible, ec);
            if (ec) return {};
            results[h.index] = {start_status::started, it, {}};
        }
        return results;
    }

    /// Commits the open unit and opens the next one.
    void checkpoint(std::error_code& ec) {
        close_unit(ec);
        if (!ec) open_unit(ec);
    }

    bool has_effects(const queue_item& it) const noexcept {
        if constexpr (workspace_with_effects<Workspace>) return workspace_.has_effects(it);
        else return true;
    }

    start_result attempt_failed(queue_item& it, std::string why, std::error_code& ec) {
        remove_workspace(it);
        it.last_error = it.last_error.empty() || it.last_error.rfind("workspace kept", 0) != 0
                            ? std::move(why)
                            : std::move(why) + "; " + it.last_error;
        it.owner = {};
        it.updated_at = clock_.now();
        if (it.attempts >= it.max_attempts) {
            it.state = task_state::error;
            it.finished_at = it.updated_at;
        } else if (it.role == role::pm) {
            // A PM is never queued: it stays claimed by the start() that retries it, so that
            // if this process dies the claim is seen as interrupted (reap_locked).
            it.state = task_state::notified;
            it.owner = spawner_.self();
        } else {
            it.state = task_state::pending;
        }
        if (!put_item(it, settled(it), ec)) return {start_status::failed, it, detail_};
        if (it.state == task_state::error) {
            auto e = make_event(event_type::task_error, it);
            e.reason = event_reason::attempts_exhausted;
            add_event(std::move(e), durability::durable, ec);
            if (ec) return {start_status::failed, it, detail_};
        }
        detail_ = "task \"" + it.id + "\" attempt " + std::to_string(it.attempts) + "/" +
                  std::to_string(it.max_attempts) + ": " + it.last_error;
        return {start_status::failed, it, detail_};
    }

    /// True if group g has a cap and `live` agents of it reach it.
    static bool group_full(const queue_schedule& sched, const std::map<std::string, int>& live, const std::string& g) {
        if (g.empty()) return false;
        const auto cap = sched.group(g).cap;
        if (!cap) return false;
        const auto n = live.find(g);
        return n != live.end() && n->second >= *cap;
    }

    /// Takes up to `free` runnable dev tasks (pending; their group neither paused nor at its
    /// cap, counting those taken here), higher priority first, then oldest, and claims each
    /// (task_dequeued). The store skips the groups known to be held or full; a group that
    /// fills up within a batch is skipped from the next fetch on.
    std::vector<queue_item> take_runnable(std::size_t free, const queue_schedule& sched, std::map<std::string, int>& group_live,
                                          std::vector<std::string>& taken, std::error_code& ec) {
        std::vector<queue_item> out;
        while (out.size() < free) {
            std::vector<std::string> skip;
            for (const auto& [g, p] : sched.groups)
                if (p.paused || group_full(sched, group_live, g)) skip.push_back(g);
            const std::size_t want = free - out.size();
            auto batch = store_.runnable(want, skip, ec);
            if (ec) return note_failure("queue", ec, store_), std::vector<queue_item>{};
            bool took = false, passed_over = false;
            for (auto& it : batch) {
                if (out.size() >= free) break;
                if (it.role != role::dev || sched.holds(it.group) || group_full(sched, group_live, it.group)) {
                    passed_over = true;   // (a PM task is never pending; if one were, it is not taken)
                    continue;
                }
                taken.push_back(it.id);
                claim(it, attempt_kind::dequeued, ec);
                if (ec) return {};   // (the next claim's write would clear ec: stop at the first)
                ++group_live[it.group];
                out.push_back(std::move(it));
                took = true;
            }
            // All of them seen (a short batch with none passed over), or nothing more to take.
            if (!took || (batch.size() < want && !passed_over)) break;
        }
        return out;
    }

    // ---- dependencies -------------------------------------------------------------------

    /// What a task's dependencies are now.
    struct dependency_state {
        std::vector<std::string> missing, failed, unfinished;   // quoted names; failed: with their state
        std::string describe() const {
            auto list = [](const std::vector<std::string>& v) {
                std::string s;
                for (std::size_t i = 0; i < v.size() && i < 5; ++i) s += (i ? ", " : "") + v[i];
                if (v.size() > 5) s += " and " + std::to_string(v.size() - 5) + " more";
                return s;
            };
            if (!missing.empty()) return "no task " + list(missing) + " (named by --after)";
            if (!failed.empty()) return "dependency " + list(failed) + " did not complete";
            return "waiting for " + list(unfinished);
        }
    };

    dependency_state dependencies_of(const queue_item& it, std::error_code& ec) {
        dependency_state d;
        for (const auto& id : it.after) {
            auto dep = store_.get_item(id, ec);
            if (ec) return note_failure("dependency \"" + id + "\" of \"" + it.id + "\"", ec, store_), d;
            const std::string name = "\"" + id + "\"";
            if (!dep) d.missing.push_back(name);
            else if (dep->state == task_state::error || dep->state == task_state::cancelled)
                d.failed.push_back(name + " (" + std::string(to_string(dep->state)) + ")");
            else if (dep->state != task_state::completed) d.unfinished.push_back(name);
        }
        return d;
    }

    /// enqueue(): every task named by --after exists, and none of them waits, directly or
    /// not, for this one (a cycle: possible only if this id was removed and is used again).
    void check_dependencies(const queue_item& it, std::error_code& ec) {
        std::vector<std::string> seen, todo = it.after;
        while (!todo.empty()) {
            const std::string id = std::move(todo.back());
            todo.pop_back();
            if (std::find(seen.begin(), seen.end(), id) != seen.end()) continue;
            seen.push_back(id);
            auto dep = store_.get_item(id, ec);
            if (ec) return note_failure("enqueue \"" + it.id + "\"", ec, store_);
            const bool direct = std::find(it.after.begin(), it.after.end(), id) != it.after.end();
            if (!dep) {
                if (!direct) continue;   // removed long ago: that task fails, not this one's check
                ec = errc::unknown_task;
                detail_ = "enqueue \"" + it.id + "\": no task \"" + id + "\" (named by --after)";
                return;
            }
            if (dep->state != task_state::waiting && !direct) continue;   // only waiting tasks can still wait
            for (const auto& next : dep->after) {
                if (next == it.id) {
                    ec = errc::dependency_cycle;
                    detail_ = "enqueue \"" + it.id + "\": \"" + id + "\" already runs after \"" + it.id + "\": a cycle";
                    return;
                }
                todo.push_back(next);
            }
        }
    }

    /// A waiting task whose dependencies all completed becomes pending; one whose dependency
    /// ended in error or was cancelled (or was removed) ends error, reason dependency_failed.
    /// Returns true if it changed.
    bool settle_waiting(queue_item& it, std::error_code& ec) {
        if (it.not_before && clock_.now() < *it.not_before) return false;   // a retry's backoff
        const auto dep = dependencies_of(it, ec);
        if (ec) return false;
        if (!dep.unfinished.empty() && dep.missing.empty() && dep.failed.empty()) return false;
        it.updated_at = clock_.now();
        if (dep.missing.empty() && dep.failed.empty()) {
            it.state = task_state::pending;
            it.not_before.reset();
            // Visible: if it is lost, the next reap decides the same again.
            return put_item(it, durability::visible, ec);
        }
        it.state = task_state::error;
        it.finished_at = it.updated_at;
        it.last_error = "dependency_failed: " + dep.describe();
        if (!put_item(it, durability::durable, ec)) return false;
        auto e = make_event(event_type::task_error, it);
        e.reason = event_reason::dependency_failed;
        add_event(std::move(e), durability::durable, ec);
        return !ec;
    }

    /// Settles every waiting task, again while that changes one (a chain fails at once).
    void resolve_waiting(std::error_code& ec) {
        constexpr auto all = static_cast<std::size_t>(-1);
        for (;;) {
            auto waiting = store_.items_in_state(task_state::waiting, all, ec);
            if (ec) return note_failure("queue", ec, store_);
            bool changed = false;
            for (auto& it : waiting) {
                changed |= settle_waiting(it, ec);
                if (ec) return;
            }
            if (!changed) return;
        }
    }

    // ---- the schedule -------------------------------------------------------------------

    template <class F>
    queue_schedule change_schedule(F&& f, std::error_code& ec) {
        ec.clear();
        return locked(ec, [&]() -> queue_schedule {
            auto sched = store_.get_schedule(ec);
            if (ec) return note_failure("schedule", ec, store_), queue_schedule{};
            f(sched);
            if (auto v = sched.validate()) {
                refuse(static_cast<errc>(v.value()), "schedule: a group name or cap out of range");
                return {};
            }
            store_.put_schedule(sched, ec);
            if (ec) return note_failure("schedule", ec, store_), queue_schedule{};
            need(durability::durable);
            return sched;
        });
    }

    // ---- helpers ------------------------------------------------------------------------

    bool check_spec(const task_spec& spec, std::error_code& ec) {
        ec = validate(spec);
        if (ec) detail_ = "task \"" + spec.id.substr(0, 160) + "\": " + ec.message();
        return bool(ec);
    }

    static std::string describe_limits_error(const kugetsu::limits& l) {
        return "cap must be 1.." + std::to_string(max_cap) + " (got " + std::to_string(l.cap) + "), max_attempts 1.." +
               std::to_string(max_attempts_limit) + " (got " + std::to_string(l.max_attempts) +
               "), kill_grace whole milliseconds up to a year (got " + std::to_string(l.kill_grace.count()) + " us)";
    }

    queue_item make_item(const task_spec& spec) {
        queue_item it;
        it.id = spec.id;
        it.argv = spec.argv;
        it.role = spec.role;
        it.timeout = spec.timeout;
        it.max_attempts = spec.max_attempts.value_or(lim_.max_attempts);
        it.repo = spec.repo;
        it.workdir = spec.workdir;
        it.priority = spec.priority;
        it.group = spec.group;
        it.after = spec.after;
        it.retries = spec.retries;
        it.backoff = spec.backoff;
        it.state = it.after.empty() ? task_state::pending : task_state::waiting;
        it.enqueued_at = it.updated_at = clock_.now();
        return it;
    }

    event make_event(event_type t, const queue_item& it) {
        event e;
        e.type = t;
        e.task_id = it.id;
        e.time = clock_.now();
        if (it.attempts > 0) e.attempt = it.attempts;
        if (it.process) e.pid = it.process.pid;
        return e;
    }

    template <class P>
    static std::string describe(const char* step, const std::error_code& ec, P& policy) {
        std::string s = std::string(step) + ": ";
        if constexpr (with_error_detail<P>) {
            const std::string d(policy.last_error_detail());
            if (!d.empty()) return s + d;
        }
        return s + ec.message();
    }

    template <class P>
    void note_failure(const std::string& what, const std::error_code& ec, P& policy) {
        detail_ = what + ": " + describe("store", ec, policy);
    }

    template <class F>
    auto throwing(F&& f) {
        std::error_code ec;
        auto r = f(ec);
        if (ec) throw error(ec, detail_.empty() ? ec.message() : detail_);
        return r;
    }

    [[no_unique_address]] Lock lock_;
    [[no_unique_address]] Spawner spawner_;
    [[no_unique_address]] Notifier notifier_;
    [[no_unique_address]] Store store_;
    [[no_unique_address]] Clock clock_;
    [[no_unique_address]] Workspace workspace_;
    dispatcher_options opt_;
    kugetsu::limits lim_;
    limit_expectations expect_;
    bool setting_limits_ = false;
    durability unit_durability_ = durability::visible;
    bool unit_writes_ = false;
    std::vector<event> unit_events_;       // appended in the open unit
    std::vector<event> committed_;         // committed, for notify() after the lock
    std::vector<held_agent> held_;         // spawned held in the open unit: abandoned unless committed
    std::vector<process_ref> forget_after_;  // spawner records to drop once the unit commits
    std::vector<process_ref> abandoned_;   // held agents abandoned after a failed commit: they never ran
    std::vector<std::string> dropped_;     // claims this object gave up after an error
    std::size_t quarantine_seen_ = 0;
    int commits_ = 0;
    int notifier_failures_ = 0;
    std::string detail_;
    std::string notifier_detail_;
    std::error_code refusal_;
    std::string refusal_detail_;
    timestamp last_requeue_{};   // restart(): the enqueue time it gave last
    std::function<void()> after_commit_;   // remove(), clean(): runs after the commit, under the lock
};

} // namespace kugetsu
