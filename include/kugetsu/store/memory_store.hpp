// kugetsu/store/memory_store.hpp: the store kept in memory, for tests and the simulator.
//
// Items are also indexed by state, oldest first, so that items_in_state(st, k) costs
// O(k log n) whatever the size of the queue.
//
// Copies share one state (a handle), so several dispatchers in one process, or a test and
// its dispatcher, see the same queue. Each operation is atomic under an internal mutex; the
// critical section across operations is still the dispatcher's lock.
#pragma once

#include <algorithm>
#include <array>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <set>
#include <string>
#include <string_view>
#include <vector>

#include "../concepts.hpp"

namespace kugetsu {

namespace detail {
/// Oldest first: enqueue time, then id.
inline bool older(const queue_item& a, const queue_item& b) noexcept {
    return a.enqueued_at != b.enqueued_at ? a.enqueued_at < b.enqueued_at : a.id < b.id;
}
} // namespace detail

class memory_store {
public:
    memory_store() : s_(std::make_shared<state>()) {}

    void create_item(const queue_item& it, std::error_code& ec) {
        std::lock_guard g(s_->m);
        ec.clear();
        if (!s_->items.emplace(it.id, it).second) ec = errc::duplicate_task;
        else s_->by_state[index(it.state)].insert(order_key(it));
    }
    void put_item(const queue_item& it, std::error_code& ec) {
        std::lock_guard g(s_->m);
        ec.clear();
        auto [i, fresh] = s_->items.try_emplace(it.id, it);
        if (!fresh) {
            s_->by_state[index(i->second.state)].erase(order_key(i->second));
            i->second = it;
        }
        s_->by_state[index(it.state)].insert(order_key(it));
    }
    std::optional<queue_item> get_item(std::string_view id, std::error_code& ec) const {
        std::lock_guard g(s_->m);
        ec.clear();
        auto i = s_->items.find(id);
        if (i == s_->items.end()) return std::nullopt;
        return i->second;
    }
    std::vector<queue_item> list_items(std::error_code& ec) const {
        std::lock_guard g(s_->m);
        ec.clear();
        std::vector<queue_item> v;
        v.reserve(s_->items.size());
        for (auto& [k, it] : s_->items) v.push_back(it);
        std::sort(v.begin(), v.end(), detail::older);
        return v;
    }
    std::vector<queue_item> items_in_state(task_state st, std::size_t limit, std::error_code& ec) const {
        std::lock_guard g(s_->m);
        ec.clear();
        std::vector<queue_item> v;
        for (const auto& [t, id] : s_->by_state[index(st)]) {   // oldest first
            if (v.size() >= limit) break;
            v.push_back(s_->items.find(id)->second);
        }
        return v;
    }
    void put_session(const session& se, std::error_code& ec) {
        std::lock_guard g(s_->m);
        ec.clear();
        s_->sessions.insert_or_assign(se.id, se);
    }
    void remove_session(std::string_view id, std::error_code& ec) {
        std::lock_guard g(s_->m);
        ec.clear();
        if (auto i = s_->sessions.find(id); i != s_->sessions.end()) s_->sessions.erase(i);
    }
    std::vector<session> list_sessions(std::error_code& ec) const {
        std::lock_guard g(s_->m);
        ec.clear();
        std::vector<session> v;
        for (auto& [k, se] : s_->sessions) v.push_back(se);
        return v;
    }

private:
    /// (enqueued_at, id): the order of detail::older.
    using key = std::pair<timestamp, std::string>;
    static key order_key(const queue_item& it) { return {it.enqueued_at, it.id}; }
    static constexpr std::size_t state_count = static_cast<std::size_t>(task_state::cancelled) + 1;
    static std::size_t index(task_state s) noexcept { return static_cast<std::size_t>(s); }

    struct state {
        mutable std::mutex m;
        std::map<std::string, queue_item, std::less<>> items;
        std::map<std::string, session, std::less<>> sessions;
        /// The ids in each state, oldest first: a pass reads only the few it takes.
        std::array<std::set<key>, state_count> by_state;
    };
    std::shared_ptr<state> s_;
};

static_assert(kugetsu::store<memory_store>);

} // namespace kugetsu
