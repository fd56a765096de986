// kugetsu/dispatcher.hpp: basic_dispatcher, the host of the policies, which holds the cap.
//
// basic_dispatcher<Lock, Spawner, Notifier, Store, Clock, Workspace> enqueues tasks, starts
// agents without ever running more than `cap` dev agents at once, runs the queue, and
// records each agent's end. Every decision that depends on the number of live agents is
// taken with the Lock held, in this order: reap the dead, count the live dev sessions (the
// PM never counts), write state, spawn. Nothing inside the lock waits on an agent. Events go
// to the Notifier after the lock is released.
//
// Operations (each in two forms: `ec&`, and throwing kugetsu::error):
//   enqueue(spec)      pending; task_queued. Takes no lock: creating a record is atomic.
//   start(spec)        a new task now: no free slot -> start_status::no_slot, nothing written;
//                      otherwise up to max_attempts attempts in the foreground; if all fail,
//                      the task is error and ec is errc::attempts_exhausted.
//   start_item(id)     one attempt at a pending task; no slot -> start_status::no_slot, the
//                      task stays pending, no attempt used, nothing written.
//   process_queue()    in one critical section: free = cap - live; take up to `free` pending
//                      tasks, oldest first, and make an attempt for each (task_dequeued once
//                      it is counted), one after another; repeat while failed attempts freed
//                      slots. No batch-size setting.
//   reap()             record ended agents (task_completed / task_error with the exit code),
//                      adopt live agents whose start was interrupted, enforce timeouts (SIGTERM
//                      to the process group, SIGKILL after kill_grace), return tasks left
//                      notified by a dead process to pending.
//   cancel(id)         after a reap: pending/notified -> cancelled; running -> stopped like a timeout, then
//                      cancelled once reaped.
//
// A failed attempt (workspace or spawn failure) removes its workspace and session and
// returns the task to pending; after max_attempts it is error (task_error, reason
// attempts_exhausted). A session is written before its agent may exec (see the spawner
// concept), so an agent never runs without being counted, even if the dispatcher dies.
//
// A store that moves unreadable records aside (file_store's quarantine) is drained at the
// end of each locked operation: each queue record moved becomes a task_error event with
// reason "quarantined", and the other tasks go on.
//
// One dispatcher per thread: an object is not thread-safe. Any number of dispatchers, in any
// number of processes, may share a store if they share the lock.
#pragma once

#include <algorithm>
#include <chrono>
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

struct dispatcher_options {
    int cap = 3;                                        ///< live dev agents at most (1..4096)
    int max_attempts = 3;                               ///< default for tasks that name none
    duration kill_grace = std::chrono::seconds(10);     ///< SIGTERM -> SIGKILL delay

    /// errc::invalid_limit if a value is out of range.
    std::error_code validate() const noexcept {
        if (auto ec = validate_cap(cap)) return ec;
        if (auto ec = validate_attempts(max_attempts)) return ec;
        if (kill_grace.count() < 0 || kill_grace > max_timeout) return errc::invalid_limit;
        return {};
    }
};

enum class start_status {
    started,   ///< an agent runs; item.state == running
    no_slot,   ///< the cap is reached: not an error, not an attempt
    failed,    ///< the attempt failed; item is pending again, or error if attempts ran out
};

struct start_result {
    start_status status = start_status::no_slot;
    queue_item item;
    std::string detail;   ///< failed: why
};

struct reap_report {
    int live = 0;        ///< live dev agents
    int pm_live = 0;     ///< live PM agents (0 or 1)
    int finished = 0;    ///< agents whose end was recorded
    int adopted = 0;     ///< live agents whose interrupted start was completed
    int recovered = 0;   ///< notified tasks of dead processes returned to pending
    int signalled = 0;   ///< SIGTERM or SIGKILL sent (timeout, cancel)
};

struct pass_report {
    int live_before = 0;
    int taken = 0;       ///< pending tasks taken (attempts made)
    int started = 0;
    int failed = 0;      ///< failed attempts
    int finished = 0;    ///< agent ends recorded by this pass
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

    /// Throws kugetsu::error(errc::invalid_limit) if the options are out of range.
    basic_dispatcher(Lock lock, Spawner spawner, Notifier notifier, Store store, Clock clock,
                     Workspace workspace, dispatcher_options options = {})
        : lock_(std::move(lock)), spawner_(std::move(spawner)), notifier_(std::move(notifier)),
          store_(std::move(store)), clock_(std::move(clock)), workspace_(std::move(workspace)),
          opt_(options) {
        if (auto ec = opt_.validate())
            throw error(ec, "dispatcher options: cap must be 1.." + std::to_string(max_cap) + " (got " +
                                std::to_string(opt_.cap) + "), max_attempts 1.." +
                                std::to_string(max_attempts_limit) + " (got " +
                                std::to_string(opt_.max_attempts) + ")");
    }

    basic_dispatcher(basic_dispatcher&&) = default;
    basic_dispatcher& operator=(basic_dispatcher&&) = default;

    // ---- enqueue ------------------------------------------------------------------------

    queue_item enqueue(const task_spec& spec, std::error_code& ec) {
        ec.clear();
        if (check_spec(spec, ec)) return {};
        if (spec.role == role::pm) {
            ec = errc::invalid_transition;
            detail_ = "task \"" + spec.id + "\": a PM agent is started with start(), not queued";
            return {};
        }
        queue_item it = make_item(spec);
        store_.create_item(it, ec);
        if (ec) {
            note_failure("enqueue \"" + spec.id + "\"", ec, store_);
            return {};
        }
        notifier_.notify(make_event(event_type::task_queued, it));
        return it;
    }
    queue_item enqueue(const task_spec& spec) { return throwing([&](auto& ec) { return enqueue(spec, ec); }); }

    // ---- start --------------------------------------------------------------------------

    start_result start(const task_spec& spec, std::error_code& ec) {
        ec.clear();
        if (check_spec(spec, ec)) return {};
        return locked(ec, [&]() -> start_result {
            reap_report rep;
            reap_locked(rep, ec);
            if (ec) return {};
            // A taken id is an error whether or not a slot is free. With a slot, create_item
            // below says so; without one, look it up (off the path that starts an agent).
            auto taken = [&] {
                if (auto existing = store_.get_item(spec.id, ec); !ec && existing) ec = errc::duplicate_task;
                if (ec) note_failure("start \"" + spec.id + "\"", ec, store_);
                return bool(ec);
            };
            if (spec.role == role::pm) {
                if (rep.pm_live > 0) {
                    if (taken()) return {};
                    ec = errc::pm_already_running;
                    detail_ = "a PM agent is already running";
                    return {};
                }
            } else if (rep.live >= opt_.cap) {
                if (taken()) return {};
                return {start_status::no_slot, make_item(spec), {}};
            }
            queue_item it = make_item(spec);
            // Claimed from birth, with its first attempt counted (one durable write, not two):
            // if this process dies before the attempt ends, reap_locked() sees a claim of a
            // dead owner (a PM start is then not retried).
            it.state = task_state::notified;
            it.owner = spawner_.self();
            it.attempts = 1;
            store_.create_item(it, ec);
            if (ec) {
                note_failure("start \"" + spec.id + "\"", ec, store_);
                dropped_.push_back(spec.id);   // the record may exist (a failed directory fsync)
                return {};
            }
            start_result r = attempt_locked(it, ec, attempt::counted);
            while (!ec && r.status == start_status::failed && !is_final(r.item.state)) r = attempt_locked(it, ec);
            if (ec) dropped_.push_back(spec.id);   // still claimed, maybe: released by the next reap
            if (!ec && r.status == start_status::failed) ec = errc::attempts_exhausted;
            return r;
        });
    }
    start_result start(const task_spec& spec) { return throwing([&](auto& ec) { return start(spec, ec); }); }

    start_result start_item(std::string_view id, std::error_code& ec) {
        ec.clear();
        return locked(ec, [&]() -> start_result {
            reap_report rep;
            reap_locked(rep, ec);
            if (ec) return {};
            auto it = store_.get_item(id, ec);
            if (ec) return note_failure("start \"" + std::string(id) + "\"", ec, store_), start_result{};
            if (!it) {
                ec = errc::unknown_task;
                detail_ = "no task \"" + std::string(id) + "\"";
                return {};
            }
            // Claims are made and settled under the lock, and the reap above has returned those
            // of dead processes: a task not pending is another caller's, or done.
            if (it->state != task_state::pending) {
                ec = errc::invalid_transition;
                detail_ = "task \"" + it->id + "\" is " + std::string(to_string(it->state)) + ", not pending";
                return {start_status::failed, *it, detail_};
            }
            const bool full = it->role == role::pm ? rep.pm_live > 0 : rep.live >= opt_.cap;
            if (full) return {start_status::no_slot, *it, {}};   // not an attempt; it stays pending
            auto r = attempt_locked(*it, ec);
            if (ec) dropped_.push_back(it->id);   // as in start(): never stranded while this process lives
            return r;
        });
    }
    start_result start_item(std::string_view id) {
        return throwing([&](auto& ec) { return start_item(id, ec); });
    }

    // ---- the queue ----------------------------------------------------------------------

    /// One pass, in one critical section: reap, then take as many pending tasks as there are
    /// free slots, oldest first, and start each in the foreground, one after another. A failed
    /// attempt frees its slot for the next task (or for the same task, while it has attempts
    /// left). Nothing is claimed ahead of its attempt, so no claim waits for a later start.
    pass_report process_queue(std::error_code& ec) {
        ec.clear();
        pass_report report;
        locked(ec, [&] {
            reap_report rep;
            reap_locked(rep, ec);
            if (ec) return 0;
            report.finished = rep.finished;
            report.live_before = rep.live;
            int live = rep.live;
            while (live < opt_.cap) {
                const int free = opt_.cap - live;
                // Only dev tasks take slots; a PM task is never pending (see reap_locked), but
                // if one were, it must not use up the `free` tasks fetched.
                std::size_t want = static_cast<std::size_t>(free);
                std::vector<queue_item> items;
                for (;;) {
                    items = store_.items_in_state(task_state::pending, want, ec);
                    if (ec) return note_failure("queue", ec, store_), 0;
                    const auto dev = static_cast<std::size_t>(
                        std::count_if(items.begin(), items.end(), [](auto& i) { return i.role == role::dev; }));
                    if (dev >= static_cast<std::size_t>(free) || items.size() < want) break;
                    want += static_cast<std::size_t>(free) - dev;
                }
                bool tried = false;
                for (auto& it : items) {
                    if (it.role != role::dev) continue;   // never queued (see reap_locked)
                    if (live >= opt_.cap) break;
                    tried = true;
                    ++report.taken;
                    const auto r = attempt_locked(it, ec, attempt::dequeued);
                    if (ec) {   // a state or I/O error: stop the pass
                        dropped_.push_back(it.id);   // perhaps claimed: the next reap gives it up
                        return 0;
                    }
                    if (r.status == start_status::started) {
                        ++report.started;
                        ++live;
                    } else {
                        ++report.failed;
                    }
                }
                if (!tried) break;   // nothing pending
            }
            return 0;
        });
        return report;
    }
    pass_report process_queue() { return throwing([&](auto& ec) { return process_queue(ec); }); }

public:
    reap_report reap(std::error_code& ec) {
        ec.clear();
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
        return locked(ec, [&]() -> queue_item {
            // Reap first: a task whose running mark failed to be written has a live agent
            // (adopted here) that must be stopped, not forgotten.
            reap_report rep;
            reap_locked(rep, ec);
            if (ec) return {};
            auto it = store_.get_item(id, ec);
            if (ec) return note_failure("cancel \"" + std::string(id) + "\"", ec, store_), queue_item{};
            if (!it) {
                ec = errc::unknown_task;
                detail_ = "no task \"" + std::string(id) + "\"";
                return {};
            }
            if (it->state == task_state::pending || it->state == task_state::notified) {
                it->state = task_state::cancelled;
                it->owner = {};
                it->finished_at = it->updated_at = clock_.now();
                store_.put_item(*it, ec);
                if (ec) return note_failure("task \"" + it->id + "\"", ec, store_), *it;
                auto e = make_event(event_type::task_error, *it);
                e.reason = "cancelled";
                events_.push_back(std::move(e));
            } else if (it->state == task_state::running) {
                if (it->stop_reason.empty()) it->stop_reason = "cancelled";
                enforce_stop(*it, rep, ec);
            } else {
                ec = errc::invalid_transition;
                detail_ = "task \"" + it->id + "\" is already " + std::string(to_string(it->state));
            }
            return *it;
        });
    }
    queue_item cancel(std::string_view id) { return throwing([&](auto& ec) { return cancel(id, ec); }); }

    /// What a process that waits for work (a daemon) must wake for besides changes to the
    /// store: the earliest deadline of a running agent (its timeout, or the end of the grace
    /// after SIGTERM), and the processes whose death changes a decision: the running agents
    /// (a slot frees) and the owners of claims (the claim is recovered).
    struct wake_plan {
        std::optional<timestamp> deadline;
        std::vector<process_ref> owners;   ///< a claim is recovered when its owner dies
        std::vector<process_ref> agents;   ///< a slot may free when an agent dies
    };

    wake_plan next_wake(std::error_code& ec) {
        ec.clear();
        return locked(ec, [&] {
            wake_plan w;
            auto earliest = [&](timestamp t) {
                if (!w.deadline || t < *w.deadline) w.deadline = t;
            };
            constexpr auto all = static_cast<std::size_t>(-1);
            const auto running = store_.items_in_state(task_state::running, all, ec);
            if (ec) return note_failure("queue", ec, store_), w;
            const auto claimed = store_.items_in_state(task_state::notified, all, ec);
            if (ec) return note_failure("queue", ec, store_), w;
            for (const auto& it : running) {
                w.agents.push_back(it.process);
                if (it.term_sent_at && !it.kill_sent) earliest(*it.term_sent_at + opt_.kill_grace);
                else if (!it.term_sent_at && !it.stop_reason.empty()) earliest(it.updated_at);
                else if (!it.term_sent_at && it.timeout && it.started_at) earliest(*it.started_at + *it.timeout);
            }
            const process_ref me = spawner_.self();
            for (const auto& it : claimed)
                if (it.owner && it.owner != me) w.owners.push_back(it.owner);
            return w;
        });
    }
    wake_plan next_wake() { return throwing([&](auto& ec) { return next_wake(ec); }); }

    // ---- access -------------------------------------------------------------------------

    const dispatcher_options& options() const noexcept { return opt_; }
    Lock& lock_policy() noexcept { return lock_; }
    Spawner& spawner() noexcept { return spawner_; }
    Notifier& notifier() noexcept { return notifier_; }
    Store& store() noexcept { return store_; }
    Clock& clock() noexcept { return clock_; }
    Workspace& workspace() noexcept { return workspace_; }
    /// After a failed operation: what failed, on which task or file, and why.
    const std::string& last_error_detail() const noexcept { return detail_; }

private:
    // ---- the critical section -----------------------------------------------------------

    template <class F>
    auto locked(std::error_code& ec, F&& f) -> decltype(f()) {
        lock_.lock(ec);
        if (ec) {
            detail_ = describe("lock", ec, lock_);   // names the lock file when the lock can
            return {};
        }
        detail::scope_exit release([&] {
            note_quarantined();
            lock_.unlock();
            flush_events();
        });
        return f();
    }

    /// A store that moves unreadable records aside (file_store) lists them; each queue
    /// record moved is reported as task_error, reason "quarantined".
    void note_quarantined() noexcept try {
        if constexpr (requires { store_.quarantined(); }) {
            const auto& q = store_.quarantined();
            for (; quarantine_seen_ < q.size(); ++quarantine_seen_) {
                if (q[quarantine_seen_].task_id.empty()) continue;
                event e;
                e.type = event_type::task_error;
                e.task_id = q[quarantine_seen_].task_id;
                e.time = clock_.now();
                e.reason = "quarantined";
                events_.push_back(std::move(e));
            }
        }
    } catch (...) {   // out of memory: the store still lists them
    }

    void flush_events() noexcept {
        for (const auto& e : events_) notifier_.notify(e);
        events_.clear();
    }

    /// Reaps dead sessions, adopts live ones, enforces stops, recovers orphaned claims.
    void reap_locked(reap_report& rep, std::error_code& ec) {
        auto sessions = store_.list_sessions(ec);
        if (ec) return note_failure("sessions", ec, store_);
        for (auto& s : sessions) {
            std::error_code pec;
            const process_status st = spawner_.poll(s.process, pec);
            auto it = store_.get_item(s.task_id, ec);
            if (ec) return note_failure("session \"" + s.id + "\"", ec, store_);
            if (st.state == process_state::running) {
                ++(s.role == role::dev ? rep.live : rep.pm_live);
                if (it && !is_final(it->state) && it->state != task_state::running) {
                    // Its starter died between writing the session and marking the item.
                    it->state = task_state::running;
                    it->process = s.process;
                    it->started_at = s.started_at;
                    it->owner = {};
                    it->updated_at = clock_.now();
                    put_item(*it, durability::visible, ec);   // its session is durable
                    if (ec) return note_failure("task \"" + it->id + "\"", ec, store_);
                    ++rep.adopted;
                    events_.push_back(make_event(event_type::task_started, *it));
                }
                if (it && it->state == task_state::running) {
                    enforce_stop(*it, rep, ec);
                    if (ec) return;
                }
            } else {
                finish(s, it, st, ec);
                if (ec) return;
                ++rep.finished;
            }
        }
        auto claimed = store_.items_in_state(task_state::notified, static_cast<std::size_t>(-1), ec);
        if (ec) return note_failure("queue", ec, store_);
        const process_ref me = spawner_.self();
        // Claims this object gave up after an error are recovered like those of a dead owner;
        // forget the ones that are no longer its claims.
        std::erase_if(dropped_, [&](const std::string& id) {
            return std::none_of(claimed.begin(), claimed.end(), [&](auto& c) { return c.id == id && c.owner == me; });
        });
        for (auto& it : claimed) {
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
            put_item(it, settled(it), ec);
            if (ec) return note_failure("task \"" + it.id + "\"", ec, store_);   // a dropped claim: tried again next time
            if (it.state == task_state::error) {   // an event only for what was recorded
                auto e = make_event(event_type::task_error, it);
                e.reason = it.role == role::pm ? "start_interrupted" : "attempts_exhausted";
                events_.push_back(std::move(e));
            }
            std::erase(dropped_, it.id);
            ++rep.recovered;
        }
    }

    /// Timeout and cancel: SIGTERM to the process group, SIGKILL after the grace period.
    /// The item stays running until its agent has been reaped.
    void enforce_stop(queue_item& it, reap_report& rep, std::error_code& ec) {
        const timestamp now = clock_.now();
        if (it.stop_reason.empty() && it.timeout && it.started_at && now - *it.started_at >= *it.timeout)
            it.stop_reason = "timeout";
        if (it.stop_reason.empty()) return;
        std::error_code sec;
        if (!it.term_sent_at) {
            spawner_.signal(it.process, stop_signal::terminate, sec);
            it.term_sent_at = now;
        } else if (!it.kill_sent && now - *it.term_sent_at >= opt_.kill_grace) {
            spawner_.signal(it.process, stop_signal::kill, sec);
            it.kill_sent = true;
        } else {
            return;
        }
        ++rep.signalled;
        if (sec) it.last_error = "signal: " + sec.message();
        it.updated_at = now;
        put_item(it, durability::visible, ec);
        if (ec) note_failure("task \"" + it.id + "\"", ec, store_);
    }

    /// Records the end of a session's agent: item final, session removed, workspace removed.
    void finish(const session& s, std::optional<queue_item>& it, const process_status& st, std::error_code& ec) {
        if (it && !is_final(it->state)) {
            auto& item = *it;
            const timestamp now = clock_.now();
            item.finished_at = item.updated_at = now;
            item.owner = {};
            if (st.state == process_state::exited) item.exit_code = st.exit_code;
            event e = make_event(event_type::task_error, item);
            e.exit_code = item.exit_code;
            if (item.stop_reason == "cancelled") {
                item.state = task_state::cancelled;
                e.reason = "cancelled";
            } else if (item.stop_reason == "timeout" || st.timed_out) {
                item.stop_reason = "timeout";
                item.state = task_state::error;
                item.last_error = e.reason = "timeout";
            } else if (st.state == process_state::exited && st.exit_code == 0) {
                item.state = task_state::completed;
                e.type = event_type::task_completed;
            } else if (st.state == process_state::exited) {
                item.state = task_state::error;
                e.reason = "exit_code";
                item.last_error = "exited with code " + std::to_string(st.exit_code);
            } else {
                item.state = task_state::error;
                e.reason = "exit_unknown";
                item.last_error = "the agent ended and its exit code is unknown";
            }
            store_.put_item(item, ec);
            if (ec) return note_failure("task \"" + item.id + "\"", ec, store_);
            events_.push_back(std::move(e));
        }
        // The spawner's record goes first: a process that dies between the two leaves a
        // session whose agent is plainly gone (the next reap removes it), never a record
        // that nothing refers to.
        forget(s.process);
        remove_session(s.id, durability::visible, ec);
        if (ec) return note_failure("session \"" + s.id + "\"", ec, store_);
        if (it) remove_workspace(*it, ec);
    }

    /// A final state is durable; a task given back to the queue needs only be visible: if a
    /// power loss undoes that, its claim (durable, with the attempt count) is given back again.
    static durability settled(const queue_item& it) noexcept {
        return is_final(it.state) ? durability::durable : durability::visible;
    }
    /// Writes through the store's durability levels when it has them (store_with_durability).
    void put_item(const queue_item& it, durability d, std::error_code& ec) {
        if constexpr (store_with_durability<Store>) store_.put_item(it, ec, d);
        else store_.put_item(it, ec);
    }
    void remove_session(std::string_view id, durability d, std::error_code& ec) {
        if constexpr (store_with_durability<Store>) store_.remove_session(id, ec, d);
        else store_.remove_session(id, ec);
    }

    /// Spawners that keep a record per agent (fork_spawner's slot files) drop it once the
    /// agent's end is recorded.
    void forget(const process_ref& p) noexcept {
        if constexpr (requires { spawner_.forget(p); }) spawner_.forget(p);
    }

    void remove_workspace(queue_item& it, std::error_code& ec) {
        std::error_code wec;
        workspace_.remove(it, wec);
        if (!wec) return;
        // Kept (uncommitted work) or failed: say so on the item; the task's outcome stands.
        std::string why = "workspace kept: " + wec.message();
        if constexpr (requires { workspace_.last_error_detail(); }) why += ": " + std::string(workspace_.last_error_detail());
        it.last_error = it.last_error.empty() ? why : it.last_error + "; " + why;
        store_.put_item(it, ec);
        if (ec) note_failure("task \"" + it.id + "\"", ec, store_);
    }

    enum class attempt {
        next,       ///< count the attempt (a durable write), then make it
        dequeued,   ///< the same, for a pending task a pass takes: task_dequeued once counted
        counted,    ///< the record as created already claims the task and counts this attempt
    };

    /// One attempt, with a slot known to be free and the lock held.
    start_result attempt_locked(queue_item& it, std::error_code& ec, attempt how = attempt::next) {
        if (how != attempt::counted) {
            // Count the attempt durably before any side effect, so a crash loop still ends.
            ++it.attempts;
            it.state = task_state::notified;
            it.owner = spawner_.self();
            it.updated_at = clock_.now();
            store_.put_item(it, ec);
            if (ec) return note_failure("task \"" + it.id + "\"", ec, store_), start_result{start_status::failed, it, detail_};
            if (how == attempt::dequeued) events_.push_back(make_event(event_type::task_dequeued, it));
        }

        std::error_code wec;
        std::string dir = workspace_.prepare(it, wec);
        if (wec) return attempt_failed(it, describe("workspace", wec, workspace_), ec);
        if (dir.empty()) dir = it.workdir;

        std::error_code sec;
        const process_ref proc = spawner_.spawn({it.id, it.argv, dir, it.timeout, opt_.kill_grace}, sec);
        if (sec) return attempt_failed(it, describe("spawn", sec, spawner_), ec);

        const session s{session_id_for(it), it.role, it.id, proc, dir, clock_.now()};
        store_.put_session(s, ec);
        if (ec) {
            spawner_.abandon(proc);
            note_failure("session \"" + s.id + "\"", ec, store_);
            std::error_code ignored;
            return attempt_failed(it, detail_, ignored);
        }
        spawner_.release(proc, sec);
        if (sec) {
            std::error_code rec;
            store_.remove_session(s.id, rec);
            forget(proc);
            return attempt_failed(it, describe("exec", sec, spawner_), ec);
        }
        it.state = task_state::running;
        it.process = proc;
        it.owner = {};
        it.started_at = s.started_at;
        it.term_sent_at.reset();
        it.kill_sent = false;
        it.stop_reason.clear();
        it.exit_code.reset();
        it.updated_at = clock_.now();
        // Visible is enough: after a power loss the session (durable) says that this attempt
        // ran, and the first reap records its end. If this fails, the next reap adopts it.
        put_item(it, durability::visible, ec);
        if (ec) note_failure("task \"" + it.id + "\"", ec, store_);
        else events_.push_back(make_event(event_type::task_started, it));
        return {start_status::started, it, {}};
    }

    start_result attempt_failed(queue_item& it, std::string why, std::error_code& ec) {
        std::error_code wec;
        remove_workspace(it, wec);
        it.last_error = std::move(why);
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
        put_item(it, settled(it), ec);
        if (ec) {
            note_failure("task \"" + it.id + "\"", ec, store_);
        } else if (it.state == task_state::error) {   // an event only for what was recorded
            auto e = make_event(event_type::task_error, it);
            e.reason = "attempts_exhausted";
            events_.push_back(std::move(e));
        }
        detail_ = "task \"" + it.id + "\" attempt " + std::to_string(it.attempts) + "/" +
                  std::to_string(it.max_attempts) + ": " + it.last_error;
        return {start_status::failed, it, detail_};
    }

    // ---- helpers ------------------------------------------------------------------------

    bool check_spec(const task_spec& spec, std::error_code& ec) {
        ec = validate(spec);
        if (ec) detail_ = "task \"" + spec.id.substr(0, 160) + "\": " + ec.message();
        return bool(ec);
    }

    queue_item make_item(const task_spec& spec) {
        queue_item it;
        it.id = spec.id;
        it.argv = spec.argv;
        it.role = spec.role;
        it.timeout = spec.timeout;
        it.max_attempts = spec.max_attempts.value_or(opt_.max_attempts);
        it.repo = spec.repo;
        it.workdir = spec.workdir;
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
        if constexpr (requires { policy.last_error_detail(); }) {
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
    std::vector<event> events_;
    std::vector<std::string> dropped_;   // claims this object gave up after an error
    std::size_t quarantine_seen_ = 0;
    std::string detail_;
};

} // namespace kugetsu
