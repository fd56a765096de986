// kugetsu/store/memory_store.hpp: the store kept in memory, for tests and the simulator.
//
// It models the whole store concept, the unit of work included, the way sqlite_store
// behaves: begin() makes this object the one writer of the shared state (others wait, as
// with SQLite's BEGIN IMMEDIATE), its writes go to a private overlay that only this object
// reads, and commit() applies the overlay at once. rollback(), the destruction of the object
// or an exception that unwinds it (the simulator's SIGKILL) discards the overlay: a unit cut
// short leaves none of its writes. A write outside a unit is a unit of its own.
//
// Items are also indexed by state, oldest first, so that items_in_state(st, k) costs
// O(k log n) whatever the size of the queue. Events are kept in a vector (the outbox), numbered
// from 1 in commit order (prune_events() leaves gaps; numbers are never reused).
//
// Copies share one state (a handle), so several dispatchers in one process, or a test and
// its dispatcher, see the same queue; a copy never shares the unit of the object it was copied
// from. Threads: each object is used by one thread; begin() blocks (a condition variable)
// while another object's unit is open. A single-threaded host that interleaves units (the
// simulator) must not begin one while another is open: sim_store waits in the simulated
// world first. Not durable: nothing survives the process; durability is ignored.
#pragma once

#include <algorithm>
#include <array>
#include <condition_variable>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <set>
#include <string>
#include <string_view>
#include <tuple>
#include <vector>

#include "../concepts.hpp"

namespace kugetsu {

namespace detail {
/// Oldest first: enqueue time, then id.
inline bool older(const queue_item& a, const queue_item& b) noexcept {
    return a.enqueued_at != b.enqueued_at ? a.enqueued_at < b.enqueued_at : a.id < b.id;
}
/// The order in which runnable tasks are taken: higher priority first, then older.
inline bool runs_before(const queue_item& a, const queue_item& b) noexcept {
    return a.priority != b.priority ? a.priority > b.priority : older(a, b);
}
} // namespace detail

class memory_store {
public:
    memory_store() : s_(std::make_shared<state>()) {}
    memory_store(const memory_store& o) : s_(o.s_) {}
    memory_store& operator=(const memory_store& o) {
        if (this != &o) {
            rollback();
            s_ = o.s_;
        }
        return *this;
    }
    memory_store(memory_store&& o) noexcept : s_(std::move(o.s_)), unit_(std::move(o.unit_)) { o.unit_.reset(); }
    memory_store& operator=(memory_store&& o) noexcept {
        if (this != &o) {
            rollback();
            s_ = std::move(o.s_);
            unit_ = std::move(o.unit_);
            o.unit_.reset();
        }
        return *this;
    }
    ~memory_store() { rollback(); }

    // ---- the unit of work -----------------------------------------------------------------

    void begin(std::error_code& ec) {
        ec.clear();
        std::unique_lock g(s_->m);
        s_->idle.wait(g, [&] { return !s_->writer; });
        s_->writer = true;
        unit_.emplace();
    }

    void commit(durability, std::error_code& ec) {
        ec.clear();
        if (!unit_) return;
        std::lock_guard g(s_->m);
        auto& u = *unit_;
        for (auto& id : u.removed)
            if (auto i = s_->items.find(id); i != s_->items.end()) {
                unindex(i->second);
                s_->items.erase(i);
            }
        for (auto& [id, it] : u.items) {
            auto [i, fresh] = s_->items.try_emplace(id, it);
            if (!fresh) {
                unindex(i->second);
                i->second = it;
            }
            s_->by_state[index(it.state)].insert(order_key(it));
            if (it.state == task_state::pending) s_->runnable.insert(rank_key(it));
        }
        for (auto& [id, se] : u.sessions) {
            if (se) s_->sessions.insert_or_assign(id, *se);
            else if (auto i = s_->sessions.find(id); i != s_->sessions.end()) s_->sessions.erase(i);
        }
        s_->next_seq += u.events.size();
        for (auto& e : u.events) s_->events.push_back(std::move(e));
        if (u.prune_events) prune_committed_events();
        if (u.lim) s_->lim = u.lim;
        if (u.sched) s_->sched = u.sched;
        end_unit();
    }

    void rollback() noexcept {
        if (!unit_ || !s_) return;
        std::lock_guard g(s_->m);
        end_unit();
    }

    bool in_unit() const noexcept { return unit_.has_value(); }

    // ---- tasks ----------------------------------------------------------------------------

    void create_item(const queue_item& it, std::error_code& ec) {
        auto_unit(ec, [&](unit& u) {
            if (u.items.count(it.id) || (s_->items.count(it.id) && !u.removed.count(it.id))) ec = errc::duplicate_task;
            else u.items.insert_or_assign(it.id, it);
        });
    }
    void put_item(const queue_item& it, std::error_code& ec) {
        auto_unit(ec, [&](unit& u) { u.items.insert_or_assign(it.id, it); });
    }
    /// Deletes the task (committed: items removed before the unit's writes are applied).
    void remove_item(std::string_view id, std::error_code& ec) {
        auto_unit(ec, [&](unit& u) {
            if (auto i = u.items.find(id); i != u.items.end()) u.items.erase(i);
            u.removed.emplace(id);
        });
    }
    /// Deletes, at the commit, the events of every task that no longer exists then, except
    /// the last event of all (a relay's position).
    void prune_events(std::error_code& ec) {
        auto_unit(ec, [&](unit& u) { u.prune_events = true; });
    }
    /// The task's state as get_item() would read it (no copy of the item); none if unknown.
    std::optional<task_state> state_of(std::string_view id) const {
        if (unit_) {
            if (auto i = unit_->items.find(id); i != unit_->items.end()) return i->second.state;
            if (unit_->removed.count(id)) return std::nullopt;
        }
        std::lock_guard g(s_->m);
        auto i = s_->items.find(id);
        if (i == s_->items.end()) return std::nullopt;
        return i->second.state;
    }
    std::optional<queue_item> get_item(std::string_view id, std::error_code& ec) const {
        ec.clear();
        if (unit_) {
            if (auto i = unit_->items.find(id); i != unit_->items.end()) return i->second;
            if (unit_->removed.count(id)) return std::nullopt;
        }
        std::lock_guard g(s_->m);
        auto i = s_->items.find(id);
        if (i == s_->items.end()) return std::nullopt;
        return i->second;
    }
    std::vector<queue_item> list_items(std::error_code& ec) const {
        ec.clear();
        std::vector<const queue_item*> seen;   // sorted as pointers, copied once
        std::lock_guard g(s_->m);
        seen.reserve(s_->items.size() + (unit_ ? unit_->items.size() : 0));
        visit_locked([&](const queue_item& it) { seen.push_back(&it); });
        std::sort(seen.begin(), seen.end(), [](const queue_item* a, const queue_item* b) { return detail::older(*a, *b); });
        std::vector<queue_item> v;
        v.reserve(seen.size());
        for (const queue_item* it : seen) v.push_back(*it);
        return v;
    }
    std::vector<queue_item> items_in_state(task_state st, std::size_t limit, std::error_code& ec) const {
        ec.clear();
        std::vector<const queue_item*> seen;
        std::lock_guard g(s_->m);
        for (const auto& [t, id] : s_->by_state[index(st)]) {   // oldest first
            if (seen.size() >= limit) break;
            if (unit_ && (unit_->items.count(id) || unit_->removed.count(id))) continue;   // its unit decides
            seen.push_back(&s_->items.find(id)->second);
        }
        if (unit_) {
            for (auto& [k, it] : unit_->items)
                if (it.state == st) seen.push_back(&it);
            std::sort(seen.begin(), seen.end(), [](const queue_item* a, const queue_item* b) { return detail::older(*a, *b); });
            if (seen.size() > limit) seen.resize(limit);
        }
        std::vector<queue_item> v;
        v.reserve(seen.size());
        for (const queue_item* it : seen) v.push_back(*it);
        return v;
    }
    /// Calls f(item) for each task as this object sees it (its unit's writes included), in no
    /// particular order and without a copy: for a host that only looks (the simulator's
    /// checks). `f` must not call this store (its lock is held).
    template <class F>
    void visit_items(F&& f) const {
        std::lock_guard g(s_->m);
        visit_locked(f);
    }

    /// Pending tasks whose group is not in `skip`, higher priority first, then oldest.
    std::vector<queue_item> runnable(std::size_t limit, const std::vector<std::string>& skip, std::error_code& ec) const {
        ec.clear();
        auto skipped = [&](const std::string& g) { return std::find(skip.begin(), skip.end(), g) != skip.end(); };
        std::vector<queue_item> v;
        {
            std::lock_guard g(s_->m);
            for (const auto& k : s_->runnable) {
                if (v.size() >= limit) break;
                const auto& id = std::get<2>(k);
                if (unit_ && (unit_->items.count(id) || unit_->removed.count(id))) continue;   // its unit decides
                const auto& it = s_->items.find(id)->second;
                if (!skipped(it.group)) v.push_back(it);
            }
        }
        if (unit_) {
            for (auto& [k, it] : unit_->items)
                if (it.state == task_state::pending && !skipped(it.group)) v.push_back(it);
            std::sort(v.begin(), v.end(), detail::runs_before);
            if (v.size() > limit) v.resize(limit);
        }
        return v;
    }

    // ---- sessions -------------------------------------------------------------------------

    void put_session(const session& se, std::error_code& ec) {
        auto_unit(ec, [&](unit& u) { u.sessions.insert_or_assign(se.id, se); });
    }
    void remove_session(std::string_view id, std::error_code& ec) {
        auto_unit(ec, [&](unit& u) { u.sessions.insert_or_assign(std::string(id), std::nullopt); });
    }
    std::vector<session> list_sessions(std::error_code& ec) const {
        ec.clear();
        std::vector<session> v;
        {
            std::lock_guard g(s_->m);
            for (auto& [k, se] : s_->sessions)
                if (!unit_ || !unit_->sessions.count(k)) v.push_back(se);
        }
        if (unit_) {
            for (auto& [k, se] : unit_->sessions)
                if (se) v.push_back(*se);
            std::sort(v.begin(), v.end(), [](auto& a, auto& b) { return a.id < b.id; });
        }
        return v;
    }

    // ---- events and limits ----------------------------------------------------------------

    std::uint64_t append_event(const event& e, std::error_code& ec) {
        std::uint64_t seq = 0;
        auto_unit(ec, [&](unit& u) {
            seq = s_->next_seq + u.events.size();   // one writer at a time: final
            u.events.push_back(e);
            u.events.back().seq = seq;
        });
        return ec ? 0 : seq;
    }
    std::vector<event> events_after(std::uint64_t seq, std::size_t limit, std::error_code& ec) const {
        ec.clear();
        std::lock_guard g(s_->m);
        std::vector<event> v;
        auto i = std::upper_bound(s_->events.begin(), s_->events.end(), seq,
                                  [](std::uint64_t q, const event& e) { return q < e.seq; });
        for (; i != s_->events.end() && v.size() < limit; ++i) v.push_back(*i);
        return v;
    }
    std::optional<limits> get_limits(std::error_code& ec) const {
        ec.clear();
        if (unit_ && unit_->lim) return unit_->lim;
        std::lock_guard g(s_->m);
        return s_->lim;
    }
    void put_limits(const limits& l, std::error_code& ec) {
        auto_unit(ec, [&](unit& u) { u.lim = l; });
    }
    queue_schedule get_schedule(std::error_code& ec) const {
        ec.clear();
        if (unit_ && unit_->sched) return *unit_->sched;
        std::lock_guard g(s_->m);
        return s_->sched.value_or(queue_schedule{});
    }
    void put_schedule(const queue_schedule& sc, std::error_code& ec) {
        auto_unit(ec, [&](unit& u) { u.sched = sc; });
    }

private:
    /// (enqueued_at, id): the order of detail::older.
    using key = std::pair<timestamp, std::string>;
    static key order_key(const queue_item& it) { return {it.enqueued_at, it.id}; }
    /// (-priority, enqueued_at, id): the order of detail::runs_before.
    using rkey = std::tuple<int, timestamp, std::string>;
    static rkey rank_key(const queue_item& it) { return {-it.priority, it.enqueued_at, it.id}; }
    static constexpr std::size_t state_count = static_cast<std::size_t>(task_state::waiting) + 1;

    template <class F>
    void visit_locked(F&& f) const {   // with s_->m held
        for (auto& [k, it] : s_->items)
            if (!unit_ || (!unit_->items.count(k) && !unit_->removed.count(k))) f(it);
        if (unit_)
            for (auto& [k, it] : unit_->items) f(it);
    }

    void unindex(const queue_item& it) {   // with s_->m held
        s_->by_state[index(it.state)].erase(order_key(it));
        if (it.state == task_state::pending) s_->runnable.erase(rank_key(it));
    }
    static std::size_t index(task_state s) noexcept { return static_cast<std::size_t>(s); }

    struct state {
        mutable std::mutex m;
        std::condition_variable idle;   // no unit open
        bool writer = false;            // a unit is open (in some object)
        std::map<std::string, queue_item, std::less<>> items;
        std::map<std::string, session, std::less<>> sessions;
        /// The ids in each state, oldest first: a pass reads only the few it takes.
        std::array<std::set<key>, state_count> by_state;
        std::set<rkey> runnable;        // the pending ones, in the order they are taken
        std::vector<event> events;      // in seq order (pruning leaves gaps)
        std::uint64_t next_seq = 1;
        std::optional<limits> lim;
        std::optional<queue_schedule> sched;
    };

    /// The writes of an open unit, seen only by this object until commit.
    struct unit {
        std::map<std::string, queue_item, std::less<>> items;
        std::set<std::string, std::less<>> removed;   // deleted in the unit (then maybe created again: items)
        std::map<std::string, std::optional<session>, std::less<>> sessions;   // nullopt: removed
        std::vector<event> events;
        // No default member initializers here: std::optional<unit> is declared while
        // memory_store is incomplete, and clang then finds unit not default-constructible.
        // emplace() value-initializes it (prune_events false).
        bool prune_events;
        std::optional<limits> lim;
        std::optional<queue_schedule> sched;
    };

    /// prune_events(), at commit (with s_->m held): every event of a task that is gone, but
    /// the last event.
    void prune_committed_events() {
        if (s_->events.empty()) return;
        const std::uint64_t last = s_->events.back().seq;
        std::erase_if(s_->events, [&](const event& e) { return e.seq != last && !s_->items.count(e.task_id); });
    }

    /// Runs a write in the open unit, or in a unit of its own.
    template <class F>
    void auto_unit(std::error_code& ec, F&& write) {
        ec.clear();
        if (unit_) return write(*unit_);
        begin(ec);
        write(*unit_);
        if (ec) return rollback();
        commit(durability::durable, ec);
    }

    void end_unit() noexcept {   // with s_->m held
        unit_.reset();
        s_->writer = false;
        s_->idle.notify_all();
    }

    std::shared_ptr<state> s_;
    std::optional<unit> unit_;
};

static_assert(kugetsu::store_with_removal<memory_store>);

} // namespace kugetsu
