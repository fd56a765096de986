// kugetsu/sim/policies.hpp: the simulated policies: each models a kugetsu concept, and each
// call that touches shared state is a choice point of the world's scheduler.
//
//   sim_lock      an flock-like lock: blocks while held; released when its holder dies
//   sim_store     the real memory_store, every operation a choice point, hashed for search
//   sim_spawner   agents in the world's process table: held, released (exec may fail),
//                 running for a drawn time, zombies until their parent polls them
//   sim_clock     the world's virtual time
//   sim_notifier  records events; those of a process killed before sending are lost
//
// A host project simulates its own policy the same way: call world.choice("what") before
// touching shared state, and world.observe(hash of what it saw) after.
#pragma once

#include <string>
#include <utility>

#include <kugetsu/concepts.hpp>
#include <kugetsu/json.hpp>
#include <kugetsu/store/memory_store.hpp>

#include "world.hpp"

namespace kugetsu::sim {

class sim_lock {
public:
    explicit sim_lock(world& w) : w_(&w) {}
    void lock(std::error_code& ec) {
        ec.clear();
        w_->lock_acquire();
    }
    void unlock() noexcept { w_->lock_release(); }

private:
    world* w_;
};
static_assert(kugetsu::lock<sim_lock>);

/// No lock at all, but still a step, so that schedules look alike in both designs.
class sim_null_lock {
public:
    explicit sim_null_lock(world& w) : w_(&w) {}
    void lock(std::error_code& ec) {
        ec.clear();
        w_->choice("lock (none)");
    }
    void unlock() noexcept {}

private:
    world* w_;
};
static_assert(kugetsu::lock<sim_null_lock>);

class sim_store {
public:
    sim_store(world& w, memory_store shared, std::shared_ptr<std::map<std::string, std::uint64_t>> hashes)
        : w_(&w), s_(std::move(shared)), hashes_(std::move(hashes)) {}

    void create_item(const queue_item& it, std::error_code& ec) {
        w_->choice("store.create " + it.id);
        s_.create_item(it, ec);
        w_->observe(ec.value());
        if (!ec) {
            rehash("i:" + it.id, record_hash(it));
            w_->notify_event();   // a daemon wakes on enqueue
        }
        w_->trace(w_->current(), "create_item", it.id + (ec ? " (exists)" : ""));
    }
    void put_item(const queue_item& it, std::error_code& ec) {
        w_->choice("store.put " + it.id);
        s_.put_item(it, ec);
        rehash("i:" + it.id, record_hash(it));
        w_->trace(w_->current(), "put_item", it.id + " " + std::string(to_string(it.state)));
    }
    std::optional<queue_item> get_item(std::string_view id, std::error_code& ec) {
        w_->choice("store.get " + std::string(id));
        auto r = s_.get_item(id, ec);
        w_->observe(r ? record_hash(*r) : 1);
        return r;
    }
    std::vector<queue_item> list_items(std::error_code& ec) {
        w_->choice("store.list_items");
        auto v = s_.list_items(ec);
        for (auto& it : v) w_->observe(record_hash(it));
        return v;
    }
    std::vector<queue_item> items_in_state(task_state st, std::size_t limit, std::error_code& ec) {
        w_->choice("store.items_in_state " + std::string(to_string(st)));
        auto v = s_.items_in_state(st, limit, ec);
        w_->observe(v.size());
        for (auto& it : v) w_->observe(record_hash(it));
        return v;
    }
    void put_session(const session& se, std::error_code& ec) {
        w_->choice("store.put_session " + se.id);
        s_.put_session(se, ec);
        rehash("s:" + se.id, record_hash(se));
        w_->trace(w_->current(), "put_session", se.id + " pid " + std::to_string(se.process.pid));
    }
    void remove_session(std::string_view id, std::error_code& ec) {
        w_->choice("store.remove_session " + std::string(id));
        s_.remove_session(id, ec);
        rehash("s:" + std::string(id), 0);
        w_->trace(w_->current(), "remove_session", std::string(id));
    }
    std::vector<session> list_sessions(std::error_code& ec) {
        w_->choice("store.list_sessions");
        auto v = s_.list_sessions(ec);
        w_->observe(v.size());
        for (auto& se : v) w_->observe(record_hash(se));
        return v;
    }

    memory_store& inner() noexcept { return s_; }

private:
    static std::uint64_t h(const process_ref& p) { return mix(static_cast<std::uint64_t>(p.pid), p.start_time); }
    static std::uint64_t h(const std::optional<timestamp>& t) {
        return t ? mix(static_cast<std::uint64_t>(t->time_since_epoch().count())) : 3;
    }
    std::uint64_t record_hash(const queue_item& it) const {
        if (!w_->hashing()) return 0;
        std::uint64_t x = hash_text(it.id);
        for (const auto& a : it.argv) x = mix(x, hash_text(a));
        x = mix(x, static_cast<std::uint64_t>(it.state) | static_cast<std::uint64_t>(it.role) << 8 |
                       static_cast<std::uint64_t>(it.attempts) << 16 | static_cast<std::uint64_t>(it.max_attempts) << 24 |
                       static_cast<std::uint64_t>(it.kill_sent) << 32);
        x = mix(x, h(it.process));
        x = mix(x, h(it.owner));
        x = mix(x, h(it.started_at));
        x = mix(x, h(it.finished_at));
        x = mix(x, h(it.term_sent_at));
        x = mix(x, it.exit_code ? static_cast<std::uint64_t>(*it.exit_code) + 1 : 0);
        x = mix(x, static_cast<std::uint64_t>(it.enqueued_at.time_since_epoch().count()));
        x = mix(x, static_cast<std::uint64_t>(it.updated_at.time_since_epoch().count()));
        x = mix(x, hash_text(it.stop_reason));
        return mix(x, hash_text(it.last_error));
    }
    std::uint64_t record_hash(const session& se) const {
        if (!w_->hashing()) return 0;
        return mix(mix(hash_text(se.id), hash_text(se.task_id)),
                   mix(h(se.process), static_cast<std::uint64_t>(se.started_at.time_since_epoch().count()) ^
                                          static_cast<std::uint64_t>(se.role)));
    }
    void rehash(const std::string& key, std::uint64_t h) {
        if (!w_->hashing()) return;
        auto& old = (*hashes_)[key];
        const std::uint64_t k = hash_text(key);
        if (old) w_->store_hash -= mix(k, old);
        old = h;
        if (h) w_->store_hash += mix(k, h);
    }

    world* w_;
    memory_store s_;
    std::shared_ptr<std::map<std::string, std::uint64_t>> hashes_;
};
static_assert(kugetsu::store<sim_store>);

class sim_spawner {
public:
    /// `pm_task`: the id of the PM's task (its agent never ends by itself).
    sim_spawner(world& w, std::string pm_task) : w_(&w), pm_task_(std::move(pm_task)) {}

    process_ref spawn(const spawn_request& r, std::error_code& ec) {
        ec.clear();
        w_->choice("spawn " + r.task_id);
        proc p;
        p.ref = w_->new_ref();
        p.task_id = r.task_id;
        p.role = r.task_id == pm_task_ ? role::pm : role::dev;
        p.parent = w_->current();
        p.status = proc_status::held;
        p.attempt = ++w_->spawns_of(r.task_id);
        w_->procs()[p.ref.start_time] = p;
        w_->observe(p.ref.start_time);
        w_->trace(w_->current(), "spawn", r.task_id + " pid " + std::to_string(p.ref.pid) + " (held)");
        return p.ref;
    }

    void release(const process_ref& ref, std::error_code& ec) {
        ec.clear();
        w_->choice("release " + std::to_string(ref.pid));
        proc* p = w_->find_proc(ref);
        if (!p || p->status != proc_status::held || p->parent != w_->current()) {
            ec = errc::not_held;
            return;
        }
        const std::string key = p->task_id + ":" + std::to_string(p->attempt);
        if (w_->draw_chance("exec:" + key, w_->faults().exec_failure)) {
            w_->reaped(*p);   // the child reported the failure and was reaped
            ec = std::make_error_code(std::errc::no_such_file_or_directory);
            w_->observe(2);
            w_->trace(w_->current(), "exec_failed", p->task_id + " pid " + std::to_string(ref.pid));
            return;
        }
        w_->mark_running(*p);
        p->started = w_->now();
        if (p->role == role::pm || w_->draw_chance("hang:" + key, w_->faults().agent_hang)) {
            p->ends_at.reset();
        } else {
            const auto secs = 1 + static_cast<int>(w_->draw("duration:" + key) % 9);
            p->ends_at = w_->now() + std::chrono::seconds(secs);
        }
        p->exit_code = w_->draw_chance("crash:" + key, w_->faults().agent_crash) ? 1 : 0;
        w_->observe(1);
        w_->trace(w_->current(), "exec", p->task_id + " pid " + std::to_string(ref.pid));
    }

    void abandon(const process_ref& ref) noexcept {
        if (proc* p = w_->find_proc(ref); p && p->status == proc_status::held) p->status = proc_status::abandoned;
    }

    process_status poll(const process_ref& ref, std::error_code& ec) {
        ec.clear();
        w_->choice("poll " + std::to_string(ref.pid));
        process_status st{process_state::gone, -1};
        if (const actor* a = w_->find_actor(ref)) {   // a kugetsu process (the owner of a claim)
            st.state = w_->actor_alive(a->id) ? process_state::running : process_state::gone;
        } else if (proc* p = w_->find_proc(ref)) {
            switch (p->status) {
            case proc_status::held:
            case proc_status::running: st.state = process_state::running; break;
            case proc_status::exited:
                if (p->parent == w_->current()) {   // our child: waitpid gives the code
                    st = {process_state::exited, p->exit_code};
                    w_->reaped(*p);
                } else if (w_->actor_alive(p->parent)) {
                    st.state = process_state::running;   // a zombie: its parent has not reaped it
                } else {
                    w_->reaped(*p);   // reparented to init, which reaped it
                }
                break;
            case proc_status::reaped:
            case proc_status::abandoned: break;
            }
        }
        w_->observe(mix(static_cast<std::uint64_t>(st.state), static_cast<std::uint64_t>(st.exit_code + 1)));
        return st;
    }

    void signal(const process_ref& ref, stop_signal sig, std::error_code& ec) {
        ec.clear();
        w_->choice("signal " + std::to_string(ref.pid));
        proc* p = w_->find_proc(ref);
        if (!p || p->status != proc_status::running) return;
        w_->trace(w_->current(), sig == stop_signal::kill ? "SIGKILL agent" : "SIGTERM agent", p->task_id);
        if (sig == stop_signal::kill || !p->ignore_term) {
            w_->mark_exited(*p);
            p->exit_code = sig == stop_signal::kill ? 137 : 143;
            p->ended = w_->now();
            w_->notify_event();
        }
    }

    process_ref self() { return w_->me().self; }

private:
    world* w_;
    std::string pm_task_;
};
static_assert(kugetsu::spawner<sim_spawner>);

class sim_clock {
public:
    explicit sim_clock(world& w) : w_(&w) {}
    timestamp now() {
        const timestamp t = w_->now();
        w_->observe(static_cast<std::uint64_t>(t.time_since_epoch().count()));
        return t;
    }

private:
    world* w_;
};
static_assert(kugetsu::clock<sim_clock>);

/// Where the events of a run go (shared by every actor's notifier).
struct event_log {
    std::vector<event> events;
    std::map<std::string, std::uint64_t> per_task;   // events so far per task
};

class sim_notifier {
public:
    sim_notifier(world& w, std::shared_ptr<event_log> log) : w_(&w), log_(std::move(log)) {}
    void notify(const event& e) noexcept {
        if (w_->current() >= 0 && w_->me().killed) return;   // died before sending: lost
        try {
            log_->events.push_back(e);
            const std::uint64_t n = ++log_->per_task[e.task_id];
            w_->events_hash += mix(hash_text(e.task_id), mix(n, static_cast<std::uint64_t>(e.type)));
            w_->trace(w_->current(), "event", std::string(to_string(e.type)) + " " + e.task_id +
                                                  (e.reason.empty() ? "" : " (" + e.reason + ")"));
        } catch (...) {
        }
    }

private:
    world* w_;
    std::shared_ptr<event_log> log_;
};
static_assert(kugetsu::notifier<sim_notifier>);

} // namespace kugetsu::sim
