// kugetsu/sim/legacy.hpp: the original shell tool's design, re-created with the simulated
// policies (legacy_kugetsu), each of the four causes of the incident switchable
// (scenario::fixed):
//   1. the daemon spawns agents directly, bypassing start and its limit;
//   2. the count of active sessions includes the PM's;
//   3. no lock around "count sessions, create session, spawn";
//   4. the daemon spawns all pending tasks at once, in background jobs.
// With all four fixed, run() runs the real dispatcher instead (scenario.hpp).
#pragma once

#include <map>
#include <optional>
#include <set>
#include <string>
#include <vector>

#include "scenario.hpp"

namespace kugetsu::sim::detail {

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

} // namespace kugetsu::sim::detail
