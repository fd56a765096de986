// kugetsu/sim/policies.hpp: the simulated policies: each models a kugetsu concept, and each
// call that touches shared state is a choice point of the world's scheduler.
//
//   sim_lock      an flock-like lock: blocks while held; released when its holder dies
//   sim_store     the real memory_store, every operation a choice point, with SQLite's unit
//                 of work: begin() takes the world's db lock (waiting while another unit is
//                 open), commit() publishes the unit's writes at once, a kill drops them
//   sim_spawner   agents in the world's process table: held, released (exec may fail),
//                 running for a drawn time, zombies until their parent polls them; never_ran
//                 for an agent never released or whose exec failed
//   sim_clock     the world's virtual time
//   sim_notifier  the events file: a durable notifier relayed the store's outbox (or, for
//                 the negative tests, the old at-most-once delivery)
//
// A host project simulates its own policy the same way: call world.choice("what") before
// touching shared state, and world.observe(hash of what it saw) after.
#pragma once

#include <algorithm>
#include <map>
#include <functional>
#include <memory>
#include <string>
#include <utility>
#include <vector>

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

    /// BasicLockable (see concepts.hpp): lock(ec) that throws std::system_error instead.
    void lock() { lock_or_throw(*this); }

private:
    world* w_;
};
static_assert(kugetsu::lock<sim_lock> && kugetsu::basic_lockable<sim_lock>);

/// No lock at all, but still a step, so that schedules look alike in both designs.
class sim_null_lock {
public:
    explicit sim_null_lock(world& w) : w_(&w) {}
    void lock(std::error_code& ec) {
        ec.clear();
        w_->choice("lock (none)");
    }
    void unlock() noexcept {}

    /// BasicLockable (see concepts.hpp): lock(ec) that throws std::system_error instead.
    void lock() { lock_or_throw(*this); }

private:
    world* w_;
};
static_assert(kugetsu::lock<sim_null_lock> && kugetsu::basic_lockable<sim_null_lock>);

/// What the stores of one run share besides the memory_store: the hashes of the committed
/// records (for the state hash), and the deliberately wrong variant of the negative tests.
struct store_shared {
    std::map<std::string, std::uint64_t> hashes;   ///< key ("i:id", "s:id", "e:seq", "l") -> hash
    /// A deliberately wrong design (negative tests only): the commit of a unit that wrote a
    /// session takes effect only at the next begin(), after the held agents were released.
    bool release_before_commit = false;
    /// Deliberately wrong designs (negative tests only), each a store that misleads the real
    /// dispatcher: group caps read as absent, pauses read as lifted, runnable tasks given
    /// oldest first whatever their priority, and dependencies read as completed.
    bool ignore_group_caps = false;
    bool ignore_pause = false;
    bool wrong_priority = false;
    bool ignore_dependencies = false;
    /// A deliberately wrong design ("+unheard-restarts"): a restart's commit does not wake the
    /// daemon, as if its waiter heard only enqueues, not the store's bell.
    bool unheard_restarts = false;
    /// Called with the committing store (its reads see the unit) just before each commit.
    std::function<void(memory_store&)> before_commit;
    /// Check each task write against types.hpp's state table (can_begin, can_follow): a
    /// write it does not allow is a `transition` violation (the fixed design's dispatcher).
    bool check_transitions = false;
};

/// The store: the real memory_store, with SQLite's unit of work modelled in the world.
///
/// begin() takes the world's db lock (a choice point "store.begin"; it blocks while another
/// actor's unit is open, as BEGIN IMMEDIATE waits in its busy handler), so memory_store's own
/// begin() never waits. Reads and writes are choice points; a write inside a unit goes to the
/// unit's private overlay. commit() is a choice point ("store.commit"): the writes become
/// visible at once and the db lock is released. rollback() is not a choice point (it also runs
/// while a killed actor unwinds): the writes are dropped and the lock released. A killed
/// actor's unit is rolled back as it unwinds (its store object is destroyed) and the world
/// releases its db lock. A write outside a unit is a unit of its own: the db lock is taken
/// around it (the legacy design's writes).
///
/// State hashing: the world's store_hash covers the committed state only (records, the
/// outbox, the limits); a unit's staged writes are mixed into the writer's history (its
/// private state), so that states that differ only in staged writes are never merged.
class sim_store {
public:
    sim_store(world& w, memory_store shared, std::shared_ptr<store_shared> sh)
        : w_(&w), s_(std::move(shared)), sh_(std::move(sh)) {}
    sim_store(sim_store&& o) noexcept
        : w_(o.w_), s_(std::move(o.s_)), sh_(std::move(o.sh_)), staged_(std::move(o.staged_)),
          created_(std::exchange(o.created_, false)), wrote_session_(std::exchange(o.wrote_session_, false)),
          holds_db_(std::exchange(o.holds_db_, false)), deferred_(std::exchange(o.deferred_, false)) {}
    sim_store& operator=(sim_store&& o) noexcept {
        if (this != &o) {
            rollback();
            w_ = o.w_;
            s_ = std::move(o.s_);
            sh_ = std::move(o.sh_);
            staged_ = std::move(o.staged_);
            created_ = std::exchange(o.created_, false);
            wrote_session_ = std::exchange(o.wrote_session_, false);
            holds_db_ = std::exchange(o.holds_db_, false);
            deferred_ = std::exchange(o.deferred_, false);
        }
        return *this;
    }
    sim_store(const sim_store&) = delete;
    sim_store& operator=(const sim_store&) = delete;
    ~sim_store() { rollback(); }

    // ---- the unit of work -----------------------------------------------------------------

    void begin(std::error_code& ec) {
        ec.clear();
        if (deferred_) finish_deferred();
        w_->acquire(lock_kind::db, "store.begin");
        holds_db_ = true;
        s_.begin(ec);   // never waits: no other unit is open (the world's db lock is ours)
        staged_.clear();
        created_ = wrote_session_ = false;
        w_->trace(w_->current(), "begin");
    }

    void commit(durability d, std::error_code& ec) {
        ec.clear();
        if (!in_unit()) return;
        w_->choice("store.commit");
        if (sh_ && sh_->before_commit) sh_->before_commit(s_);   // the unit, as it is about to commit
        if (sh_ && sh_->release_before_commit && wrote_session_) {
            deferred_ = true;   // the wrong variant: it answers as if committed
            w_->trace(w_->current(), "commit", "deferred past the release (a deliberately wrong design)");
            return;
        }
        publish(d, ec);
    }

    void rollback() noexcept {
        if (!s_.in_unit() && !holds_db_) return;
        const bool had = !staged_.empty();
        s_.rollback();
        staged_.clear();
        created_ = wrote_session_ = deferred_ = false;
        if (holds_db_) {
            holds_db_ = false;
            w_->release(lock_kind::db);
        }
        if (!w_->unwinding() && w_->current() >= 0)
            try {
                w_->trace(w_->current(), "rollback", had ? "staged writes dropped" : "");
            } catch (...) {
            }
    }

    bool in_unit() const noexcept { return s_.in_unit() && !deferred_; }

    /// A write of `it` that types.hpp's state table does not allow is a violation.
    void check_transition(const queue_item& it) {
        const auto from = s_.state_of(it.id);
        if (from ? can_follow(*from, it.state) : can_begin(it.state)) return;
        w_->add_violation("transition", "task " + it.id + ": " + (from ? std::string(to_string(*from)) : "(new)") +
                                            " -> " + std::string(to_string(it.state)) + " is not in the state table");
    }

    // ---- tasks ----------------------------------------------------------------------------

    void create_item(const queue_item& it, std::error_code& ec) {
        write({"store.create", it.id}, ec, [&] {
            if (sh_ && sh_->check_transitions && !can_begin(it.state))
                w_->add_violation("transition", "task " + it.id + " created " + std::string(to_string(it.state)));
            s_.create_item(it, ec);
            return std::pair{"i:" + it.id, record_hash(it)};
        });
        w_->observe(ec.value());
        if (!ec) wake_daemon();   // a daemon wakes on enqueue
        if (w_->tracing()) w_->trace(w_->current(), "create_item", it.id + (ec ? " (exists)" : ""));
    }
    void put_item(const queue_item& it, std::error_code& ec) {
        bool rerun = false;   // a final task pending again: restart()
        write({"store.put", it.id}, ec, [&] {
            if (sh_ && sh_->check_transitions) check_transition(it);
            const auto from = s_.state_of(it.id);
            rerun = from && is_final(*from) && !is_final(it.state);
            s_.put_item(it, ec);
            return std::pair{"i:" + it.id, record_hash(it)};
        });
        // A daemon wakes for it as for an enqueue (the bell rings at every commit); not in
        // the deliberately wrong "+unheard-restarts".
        if (!ec && rerun && !(sh_ && sh_->unheard_restarts)) wake_daemon();
        if (w_->tracing()) w_->trace(w_->current(), "put_item", it.id + " " + std::string(to_string(it.state)));
    }
    std::optional<queue_item> get_item(std::string_view id, std::error_code& ec) {
        w_->choice({"store.get", id});
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
        // The waiting tasks every reap reads: inside a unit (exclusive, and rolled back if
        // the process dies before its commit) a read is not a step of its own.
        if (!(st == task_state::waiting && in_unit())) w_->choice({"store.items_in_state", to_string(st)});
        auto v = s_.items_in_state(st, limit, ec);
        if (st == task_state::waiting && sh_ && sh_->ignore_dependencies)   // a deliberately wrong design
            for (auto& it : v) it.after.clear();
        w_->observe(v.size());
        for (auto& it : v) w_->observe(record_hash(it));
        return v;
    }

    // ---- sessions -------------------------------------------------------------------------

    void put_session(const session& se, std::error_code& ec) {
        write({"store.put_session", se.id}, ec, [&] {
            s_.put_session(se, ec);
            return std::pair{"s:" + se.id, record_hash(se)};
        });
        if (!ec && in_unit()) wrote_session_ = true;
        if (w_->tracing()) w_->trace(w_->current(), "put_session", se.id + " pid " + std::to_string(se.process.pid));
    }
    void remove_session(std::string_view id, std::error_code& ec) {
        write({"store.remove_session", id}, ec, [&] {
            s_.remove_session(id, ec);
            return std::pair{"s:" + std::string(id), std::uint64_t{0}};
        });
        if (w_->tracing()) w_->trace(w_->current(), "remove_session", std::string(id));
    }
    std::vector<session> list_sessions(std::error_code& ec) {
        w_->choice("store.list_sessions");
        auto v = s_.list_sessions(ec);
        w_->observe(v.size());
        for (auto& se : v) w_->observe(record_hash(se));
        return v;
    }

    // ---- the outbox and the limits --------------------------------------------------------

    std::uint64_t append_event(const event& e, std::error_code& ec) {
        std::uint64_t seq = 0;
        // The number is the store's: known once the write is done (one writer at a time).
        write({"store.append_event", std::string(to_string(e.type)) + " " + e.task_id}, ec, [&] {
            seq = s_.append_event(e, ec);
            event numbered = e;
            numbered.seq = seq;
            return std::pair{"e:" + std::to_string(seq), w_->hashing() ? event_hash(numbered) : 1};
        });
        return seq;
    }
    /// Called by a relay, inside the dispatcher's noexcept delivery: a kill here does not
    /// throw; it returns nothing, and the relay stops (see world::choice_nothrow).
    std::vector<event> events_after(std::uint64_t seq, std::size_t limit, std::error_code& ec) {
        ec.clear();
        if (w_->choice_nothrow({"store.events_after", static_cast<std::int64_t>(seq)})) return {};
        auto v = s_.events_after(seq, limit, ec);
        w_->observe(v.size());
        for (auto& e : v) w_->observe(event_hash(e));
        return v;
    }
    std::optional<limits> get_limits(std::error_code& ec) {
        w_->choice("store.get_limits");
        auto l = s_.get_limits(ec);
        w_->observe(l ? limits_hash(*l) : 1);
        return l;
    }
    void put_limits(const limits& l, std::error_code& ec) {
        write("store.put_limits", ec, [&] {
            s_.put_limits(l, ec);
            return std::pair{std::string("l"), limits_hash(l)};
        });
        if (w_->tracing()) w_->trace(w_->current(), "put_limits", "cap " + std::to_string(l.cap));
    }

    std::vector<queue_item> runnable(std::size_t limit, const std::vector<std::string>& skip, std::error_code& ec) {
        w_->choice("store.runnable");
        auto v = s_.runnable(limit, skip, ec);
        if (sh_ && sh_->wrong_priority) {   // a deliberately wrong design: oldest first
            auto all = s_.runnable(static_cast<std::size_t>(-1), skip, ec);
            std::sort(all.begin(), all.end(), kugetsu::detail::older);
            if (all.size() > limit) all.resize(limit);
            v = std::move(all);
        }
        w_->observe(v.size());
        for (auto& it : v) w_->observe(record_hash(it));
        return v;
    }
    /// Inside a unit, not a step of its own (as items_in_state(waiting)).
    queue_schedule get_schedule(std::error_code& ec) {
        if (!in_unit()) w_->choice("store.get_schedule");
        auto sc = s_.get_schedule(ec);
        if (sh_ && sh_->ignore_group_caps)   // a deliberately wrong design
            for (auto& g : sc.groups) g.second.cap.reset();
        if (sh_ && sh_->ignore_pause) {      // a deliberately wrong design
            sc.paused = false;
            for (auto& g : sc.groups) g.second.paused = false;
        }
        w_->observe(schedule_hash(sc));
        return sc;
    }
    void put_schedule(const queue_schedule& sc, std::error_code& ec) {
        write("store.put_schedule", ec, [&] {
            s_.put_schedule(sc, ec);
            return std::pair{std::string("q"), schedule_hash(sc)};
        });
        if (!ec) wake_daemon();   // a daemon wakes for it (the bell rings at every commit)
        if (w_->tracing()) w_->trace(w_->current(), "put_schedule", std::string(sc.paused ? "paused" : "running") + ", " +
                                                     std::to_string(sc.groups.size()) + " groups");
    }
    static std::uint64_t schedule_hash(const queue_schedule& sc) {
        std::uint64_t h = sc.paused ? 0x9e37 : 0x7f4a;
        for (const auto& [g, p] : sc.groups)
            h = h * 1099511628211ull ^ std::hash<std::string>{}(g) ^ (static_cast<std::uint64_t>(p.cap.value_or(0)) << 1) ^
                (p.paused ? 1u : 0u);
        return h;
    }

    memory_store& inner() noexcept { return s_; }

    /// The hash an event of the outbox contributes to the committed state.
    static std::uint64_t event_hash(const event& e) {
        return mix(mix(e.seq, hash_text(e.task_id)),
                   static_cast<std::uint64_t>(e.type) | static_cast<std::uint64_t>(e.attempt.value_or(0)) << 8 |
                       static_cast<std::uint64_t>(e.exit_code.value_or(-1) + 1) << 24) ^
               mix(0x5eed, static_cast<std::uint64_t>(e.reason));
    }

private:
    static std::uint64_t h(const process_ref& p) { return mix(static_cast<std::uint64_t>(p.pid), p.start_time); }
    static std::uint64_t h(const std::optional<timestamp>& t) {
        return t ? mix(static_cast<std::uint64_t>(t->time_since_epoch().count())) : 3;
    }
    std::uint64_t record_hash(const queue_item& it) const {
        if (!w_->hashing()) return 1;
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
        x = mix(x, static_cast<std::uint64_t>(it.stop_reason));
        return mix(x, hash_text(it.last_error)) | 1;
    }
    std::uint64_t record_hash(const session& se) const {
        if (!w_->hashing()) return 1;
        return mix(mix(hash_text(se.id), hash_text(se.task_id)),
                   mix(h(se.process), static_cast<std::uint64_t>(se.started_at.time_since_epoch().count()) ^
                                          static_cast<std::uint64_t>(se.role))) | 1;
    }
    static std::uint64_t limits_hash(const limits& l) {
        return mix(mix(static_cast<std::uint64_t>(l.cap), static_cast<std::uint64_t>(l.max_attempts)),
                   static_cast<std::uint64_t>(l.kill_grace.count())) | 1;
    }

    /// A write: inside the open unit (staged, and part of the writer's history until the
    /// commit), or a unit of its own, with the db lock taken around it. `f` does it and
    /// returns the record's key and hash (an event's are known once the store numbered it).
    template <class F>
    void write(step_op op, std::error_code& ec, F&& f) {
        const bool own = !s_.in_unit();
        if (own) {
            w_->acquire(lock_kind::db, std::move(op));   // BEGIN IMMEDIATE ... COMMIT, in one step
            holds_db_ = true;
        } else {
            w_->choice(std::move(op));
        }
        auto [key, hash] = f();
        if (own) {
            holds_db_ = false;
            if (!ec) apply(key, hash);
            w_->release(lock_kind::db);
            return;
        }
        if (ec) return;
        w_->observe(mix(hash_text(key), hash));
        staged_.emplace_back(std::move(key), hash);
    }

    /// Commits the open unit: its writes become the committed state, all at once.
    void publish(durability d, std::error_code& ec) {
        s_.commit(d, ec);
        const bool ok = !ec;
        if (ok) {
            for (auto& [k, hh] : staged_) apply(k, hh);
            if (created_) w_->notify_event();   // a daemon wakes on enqueue
            if (!staged_.empty()) w_->notify_commit();   // a client's wait wakes on any change
        }
        const std::size_t n = staged_.size();
        staged_.clear();
        created_ = wrote_session_ = deferred_ = false;
        holds_db_ = false;
        w_->release(lock_kind::db);
        if (w_->tracing()) w_->trace(w_->current(), "commit",
                  ok ? std::to_string(n) + " writes, " + (d == durability::durable ? "durable" : "visible") : "failed");
    }

    /// The wrong variant: the deferred commit happens now, after the releases.
    void finish_deferred() {
        w_->choice("store.commit (deferred)");
        deferred_ = false;
        std::error_code ec;
        publish(durability::durable, ec);
    }

    /// The write wakes the daemon: at the commit of the open unit, or now (a unit of its own).
    void wake_daemon() {
        if (in_unit()) created_ = true;
        else w_->notify_event();
    }

    /// A committed record's hash into the world's store hash.
    void apply(const std::string& key, std::uint64_t hh) {
        if (key.rfind("s:", 0) == 0) w_->sessions_committed();
        if (!w_->hashing() || key.empty()) return;
        auto& old = sh_->hashes[key];
        const std::uint64_t k = hash_text(key);
        if (old) w_->store_hash -= mix(k, old);
        old = hh;
        if (hh) w_->store_hash += mix(k, hh);
    }

    world* w_;
    memory_store s_;
    std::shared_ptr<store_shared> sh_;
    std::vector<std::pair<std::string, std::uint64_t>> staged_;   // this unit's writes: key, hash
    bool created_ = false;         // the unit created a task: a daemon wakes at its commit
    bool wrote_session_ = false;
    bool holds_db_ = false;        // the world's db lock is this object's
    bool deferred_ = false;        // release_before_commit: committed in name only
};
static_assert(kugetsu::store<sim_store>);

class sim_spawner {
public:
    /// `pm_task`: the id of the PM's task (its agent never ends by itself).
    sim_spawner(world& w, std::string pm_task) : w_(&w), pm_task_(std::move(pm_task)) {}

    process_ref spawn(const spawn_request& r, std::error_code& ec) {
        ec.clear();
        w_->choice({"spawn", r.task_id});
        proc p;
        p.ref = w_->new_ref();
        p.task_id = r.task_id;
        p.role = r.task_id == pm_task_ ? role::pm : role::dev;
        p.spawner = p.parent = w_->current();
        p.status = proc_status::held;
        p.attempt = ++w_->spawns_of(r.task_id);
        proc& added = w_->procs()[p.ref.start_time] = p;
        if (w_->on_spawn) w_->on_spawn(added);
        w_->observe(p.ref.start_time);
        if (w_->tracing()) w_->trace(w_->current(), "spawn", r.task_id + " pid " + std::to_string(p.ref.pid) + " (held)");
        return p.ref;
    }

    void release(const process_ref& ref, std::error_code& ec) {
        ec.clear();
        w_->choice({"release", ref.pid});
        proc* p = w_->find_proc(ref);
        if (!p || p->status != proc_status::held || p->spawner != w_->current()) {
            ec = errc::not_held;
            return;
        }
        const std::string key = p->task_id + ":" + std::to_string(p->attempt);
        if (w_->draw_chance("exec:" + key, w_->faults().exec_failure)) {
            p->exec_failed = true;
            w_->reaped(*p);   // the child reported the failure and was reaped
            ec = std::make_error_code(std::errc::no_such_file_or_directory);
            w_->observe(2);
            if (w_->tracing()) w_->trace(w_->current(), "exec_failed", p->task_id + " pid " + std::to_string(ref.pid));
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
        if (w_->tracing()) w_->trace(w_->current(), "exec", p->task_id + " pid " + std::to_string(ref.pid));
    }

    void abandon(const process_ref& ref) noexcept {
        if (proc* p = w_->find_proc(ref); p && p->status == proc_status::held) w_->mark_abandoned(*p);
    }

    process_status poll(const process_ref& ref, std::error_code& ec) {
        ec.clear();
        w_->choice({"poll", ref.pid}, /*observes_agents=*/true);
        process_status st{process_state::gone, -1};
        if (const actor* a = w_->find_actor(ref)) {   // a kugetsu process (the owner of a claim)
            st.state = w_->actor_alive(a->id) ? process_state::running : process_state::gone;
        } else if (proc* p = w_->find_proc(ref)) {
            switch (p->status) {
            case proc_status::held:   // it holds its slot, and has not started: never adopted as started
                st.state = process_state::running;
                st.held = true;
                break;
            case proc_status::running: st.state = process_state::running; break;
            case proc_status::exited:
                if (p->parent == w_->current()) {   // our child: waitpid gives the code
                    st = {process_state::exited, p->exit_code, false, p->ended};
                    if (p->sup >= 0) p->recorded = p->adopted = true;   // an adopted orphan: its exit record
                    w_->reaped(*p);
                } else if (w_->actor_alive(p->parent)) {
                    // Its supervisor holds the slot's lock until it has written the exit
                    // record; or a zombie whose parent (a subreaper) has not reaped it yet.
                    st.state = process_state::running;
                } else {
                    w_->reaped(*p);   // reparented to init, which reaped it
                    st.ran = p->ran;  // its slot says it exec'd
                }
                break;
            case proc_status::reaped:
                if (p->recorded) st = {process_state::exited, p->exit_code, false, p->ended};   // the slot's exit record
                else if (p->exec_failed) st.state = process_state::never_ran;   // known: its exec failed
                else st.ran = p->ran;
                break;
            case proc_status::abandoned: st.state = process_state::never_ran; break;   // held, never released
            }
        }
        w_->observe(mix(static_cast<std::uint64_t>(st.state) | (st.held ? 16u : 0u) | (st.ran ? 32u : 0u),
                        static_cast<std::uint64_t>(st.exit_code + 1)));
        return st;
    }

    void signal(const process_ref& ref, stop_signal sig, std::error_code& ec) {
        ec.clear();
        w_->choice({"signal", ref.pid}, /*observes_agents=*/true);
        proc* p = w_->find_proc(ref);
        if (!p || p->status != proc_status::running) return;
        if (w_->tracing()) w_->trace(w_->current(), sig == stop_signal::kill ? "SIGKILL agent" : "SIGTERM agent", p->task_id);
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

/// What the notifiers of a run hold together (the events file), and how events reach it.
struct event_log {
    std::vector<event> events;                           ///< in the order they were kept
    std::map<std::string, std::vector<event>> by_task;   ///< the same, per task
    std::uint64_t last_seq = 0;                          ///< the highest sequence number held
    /// true: a durable notifier, relayed the store's outbox (the fixed design); false: the
    /// old at-most-once delivery (the dispatcher's notify() only; an event of a process killed
    /// before it sent it is lost), for the negative tests.
    bool outbox = true;
};

/// The events file: a durable_notifier. relay() takes the lock of the file (the world's
/// events lock: concurrent relays deliver no event twice), then takes the store's committed
/// events after the highest sequence number it holds, and keeps each one: every read and
/// every append is a choice point, and a relay killed midway leaves what it appended. The
/// relay runs in the dispatcher's noexcept delivery, so a kill there does not throw: the
/// relay stops, and the actor unwinds at its next step (world::choice_nothrow).
/// notify() of an event with a sequence number does nothing (relay() brings it), unless the
/// log is not an outbox's (at most once: then notify() keeps it, and relay() does nothing).
class sim_notifier {
public:
    sim_notifier(world& w, std::shared_ptr<event_log> log) : w_(&w), log_(std::move(log)) {}
    void notify(const event& e) noexcept {
        if (log_->outbox && e.seq != 0) return;   // relay() brings it
        if (w_->current() >= 0 && w_->me().killed) return;   // died before sending: lost
        keep(e);
    }

    std::uint64_t relay(const event_source& source, std::error_code& ec) {
        ec.clear();
        if (!log_->outbox) return log_->last_seq;
        // Reorderable (see world::choice_nothrow): what a relay appends, and when, changes no
        // decision of any actor, only what the events file holds, which the end of the run
        // checks.
        if (!w_->acquire_nothrow(lock_kind::events, "notifier.relay", /*reorderable=*/true)) return log_->last_seq;
        for (bool more = true; more;) {
            auto batch = source(log_->last_seq, ec);
            if (ec || w_->dying() || batch.empty()) break;
            for (const auto& e : batch) {
                if (w_->choice_nothrow({"notifier.append", static_cast<std::int64_t>(e.seq)})) {
                    more = false;
                    break;
                }
                if (e.seq > log_->last_seq) keep(e);
            }
        }
        w_->release(lock_kind::events);
        return log_->last_seq;
    }

    /// Keeps an event (no choice point): also what a later process's relay does at the end of
    /// a run (run()).
    static void keep(world& w, event_log& log, const event& e) noexcept {
        try {
            log.events.push_back(e);
            log.by_task[e.task_id].push_back(e);
            log.last_seq = std::max(log.last_seq, e.seq);
            w.events_hash += mix(mix(e.seq, hash_text(e.task_id)), mix(log.by_task[e.task_id].size(), static_cast<std::uint64_t>(e.type)));
            if (!w.unwinding() && w.tracing())
                w.trace(w.current(), "event", (e.seq ? "#" + std::to_string(e.seq) + " " : std::string()) +
                                                   std::string(to_string(e.type)) + " " + e.task_id +
                                                   (e.reason == event_reason::none ? "" : " (" + std::string(to_string(e.reason)) + ")"));
        } catch (...) {
        }
    }

private:
    void keep(const event& e) noexcept { keep(*w_, *log_, e); }

    world* w_;
    std::shared_ptr<event_log> log_;
};
static_assert(kugetsu::durable_notifier<sim_notifier>);

} // namespace kugetsu::sim
