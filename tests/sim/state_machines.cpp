// State-machine tests (rapidcheck's rc::state): random sequences of operations on the store
// and on the dispatcher, each checked against a simple model after every step; and the state
// table of types.hpp (can_follow), which the dispatcher machine and the simulator check.
#include <catch2/catch.hpp>
#include <rapidcheck.h>
#include <rapidcheck/catch.h>
#include <rapidcheck/state.h>

#include <kugetsu/kugetsu.hpp>
#include <kugetsu/sim/explore.hpp>
#include <kugetsu/store/sqlite_store.hpp>

#include <filesystem>
#include <map>
#include <memory>
#include <set>

#include "support/proc.hpp"

using namespace kugetsu;
using namespace std::chrono_literals;

// ---- the store -----------------------------------------------------------------------------
//
// The model of a unit of work: the committed state, and while a unit is open, the unit's view
// (the committed state with the unit's writes). Reads through the store see the unit's view;
// reads through a second object on the same state (another connection) see the committed
// state only; commit makes the view the committed state, rollback drops it. A write outside
// a unit is committed at once. The outbox numbers events 1, 2, ... in commit order.

namespace store_sm {

const std::vector<std::string> ids{"a", "b", "c", "d", "e"};
const std::vector<task_state> states{task_state::pending, task_state::notified, task_state::running,
                                     task_state::completed, task_state::error, task_state::cancelled};
const std::vector<event_type> event_types{event_type::task_queued, event_type::task_dequeued, event_type::task_started,
                                          event_type::task_completed, event_type::task_error, event_type::task_removed};

struct record {
    task_state state;
    int enqueued;   // seconds
    int attempts;
};
struct state {
    std::map<std::string, record> items;
    std::set<std::string> sessions;
    std::vector<std::pair<event_type, std::string>> events;   // events[i] has seq i + 1
    std::optional<int> cap;
};
struct model {
    state committed;
    std::optional<state> unit;   // open: the unit's view
    const state& view() const { return unit ? *unit : committed; }
    state& target() { return unit ? *unit : committed; }
};

/// The system under test: any store, behind one interface, with a second object on the same
/// state (`other`) that never opens a unit.
struct sut {
    virtual ~sut() = default;
    virtual void begin(std::error_code&) = 0;
    virtual void commit(durability, std::error_code&) = 0;
    virtual void rollback() = 0;
    virtual bool in_unit() const = 0;
    virtual void create_item(const queue_item&, std::error_code&) = 0;
    virtual void put_item(const queue_item&, std::error_code&) = 0;
    virtual std::optional<queue_item> get_item(const std::string&, std::error_code&, bool other) = 0;
    virtual std::vector<queue_item> items_in_state(task_state, std::size_t, std::error_code&, bool other) = 0;
    virtual void put_session(const session&, std::error_code&) = 0;
    virtual void remove_session(const std::string&, std::error_code&) = 0;
    virtual std::vector<session> list_sessions(std::error_code&, bool other) = 0;
    virtual std::uint64_t append_event(const event&, std::error_code&) = 0;
    virtual std::vector<event> events_after(std::uint64_t, std::size_t, std::error_code&, bool other) = 0;
    virtual std::optional<limits> get_limits(std::error_code&, bool other) = 0;
    virtual void put_limits(const limits&, std::error_code&) = 0;
};
template <class S>
struct any_store : sut {
    S s, o;
    any_store(S st, S other) : s(std::move(st)), o(std::move(other)) {}
    S& pick(bool other) { return other ? o : s; }
    void begin(std::error_code& ec) override { s.begin(ec); }
    void commit(durability d, std::error_code& ec) override { s.commit(d, ec); }
    void rollback() override { s.rollback(); }
    bool in_unit() const override { return s.in_unit(); }
    void create_item(const queue_item& it, std::error_code& ec) override { s.create_item(it, ec); }
    void put_item(const queue_item& it, std::error_code& ec) override { s.put_item(it, ec); }
    std::optional<queue_item> get_item(const std::string& id, std::error_code& ec, bool other) override {
        return pick(other).get_item(id, ec);
    }
    std::vector<queue_item> items_in_state(task_state st, std::size_t n, std::error_code& ec, bool other) override {
        return pick(other).items_in_state(st, n, ec);
    }
    void put_session(const session& se, std::error_code& ec) override { s.put_session(se, ec); }
    void remove_session(const std::string& id, std::error_code& ec) override { s.remove_session(id, ec); }
    std::vector<session> list_sessions(std::error_code& ec, bool other) override { return pick(other).list_sessions(ec); }
    std::uint64_t append_event(const event& e, std::error_code& ec) override { return s.append_event(e, ec); }
    std::vector<event> events_after(std::uint64_t seq, std::size_t n, std::error_code& ec, bool other) override {
        return pick(other).events_after(seq, n, ec);
    }
    std::optional<limits> get_limits(std::error_code& ec, bool other) override { return pick(other).get_limits(ec); }
    void put_limits(const limits& l, std::error_code& ec) override { s.put_limits(l, ec); }
};

queue_item make(const std::string& id, task_state st, int enqueued, int attempts) {
    queue_item it;
    it.id = id;
    it.argv = {"agent"};
    it.state = st;
    it.attempts = attempts;
    it.enqueued_at = it.updated_at = timestamp{std::chrono::seconds(1'800'000'000 + enqueued)};
    if (st == task_state::running) it.process = {1000, 1, "b"};
    return it;
}

/// Everything `st` says, read through the store (other = false) or the second object.
void compare(const state& st, sut& s, bool other) {
    std::error_code ec;
    for (const auto& id : ids) {
        const auto r = s.get_item(id, ec, other);
        RC_ASSERT(!ec);
        const auto it = st.items.find(id);
        RC_ASSERT(r.has_value() == (it != st.items.end()));
        if (r) {
            RC_ASSERT(r->state == it->second.state);
            RC_ASSERT(r->attempts == it->second.attempts);
        }
    }
    std::set<std::string> sessions;
    for (auto& se : s.list_sessions(ec, other)) sessions.insert(se.id);
    RC_ASSERT(!ec);
    RC_ASSERT(sessions == st.sessions);
    const auto l = s.get_limits(ec, other);
    RC_ASSERT(!ec);
    RC_ASSERT(l.has_value() == st.cap.has_value());
    if (l) RC_ASSERT(l->cap == *st.cap);
}

using cmd = rc::state::Command<model, sut>;

struct begin : cmd {
    void checkPreconditions(const model& m) const override { RC_PRE(!m.unit); }
    void apply(model& m) const override { m.unit = m.committed; }
    void run(const model&, sut& s) const override {
        std::error_code ec;
        s.begin(ec);
        RC_ASSERT(!ec);
        RC_ASSERT(s.in_unit());
    }
    void show(std::ostream& o) const override { o << "begin"; }
};

struct commit : cmd {
    bool durable = *rc::gen::arbitrary<bool>();
    void apply(model& m) const override {
        if (m.unit) m.committed = *m.unit;
        m.unit.reset();
    }
    void run(const model& m, sut& s) const override {
        std::error_code ec;
        s.commit(durable ? durability::durable : durability::visible, ec);
        RC_ASSERT(!ec);
        RC_ASSERT(!s.in_unit());
        model after = m;
        apply(after);
        compare(after.committed, s, true);   // the other object sees all of it at once
    }
    void show(std::ostream& o) const override { o << "commit " << (durable ? "durable" : "visible"); }
};

struct rollback : cmd {
    void apply(model& m) const override { m.unit.reset(); }
    void run(const model& m, sut& s) const override {
        s.rollback();
        RC_ASSERT(!s.in_unit());
        compare(m.committed, s, false);   // none of the unit's writes stay
    }
    void show(std::ostream& o) const override { o << "rollback"; }
};

struct create_item : cmd {
    std::string id = *rc::gen::elementOf(ids);
    task_state st = *rc::gen::elementOf(states);
    int enqueued = *rc::gen::inRange(0, 5);
    void apply(model& m) const override {
        if (!m.view().items.count(id)) m.target().items[id] = {st, enqueued, 0};
    }
    void run(const model& m, sut& s) const override {
        std::error_code ec;
        s.create_item(make(id, st, enqueued, 0), ec);
        RC_ASSERT((ec == errc::duplicate_task) == (m.view().items.count(id) == 1));
        if (!m.view().items.count(id)) RC_ASSERT(!ec);
    }
    void show(std::ostream& o) const override { o << "create " << id << " " << to_string(st) << " @" << enqueued; }
};

struct put_item : cmd {
    std::string id = *rc::gen::elementOf(ids);
    task_state st = *rc::gen::elementOf(states);
    int enqueued = *rc::gen::inRange(0, 5);
    int attempts = *rc::gen::inRange(0, 4);
    void apply(model& m) const override { m.target().items[id] = {st, enqueued, attempts}; }
    void run(const model&, sut& s) const override {
        std::error_code ec;
        s.put_item(make(id, st, enqueued, attempts), ec);
        RC_ASSERT(!ec);
    }
    void show(std::ostream& o) const override { o << "put " << id << " " << to_string(st) << " @" << enqueued; }
};

struct in_state : cmd {
    task_state st = *rc::gen::elementOf(states);
    std::size_t limit = *rc::gen::inRange<std::size_t>(0, 7);
    bool other = *rc::gen::arbitrary<bool>();
    void run(const model& m, sut& s) const override {
        const state& v = other ? m.committed : m.view();
        std::vector<std::pair<int, std::string>> expect;
        for (auto& [id, r] : v.items)
            if (r.state == st) expect.emplace_back(r.enqueued, id);
        std::sort(expect.begin(), expect.end());
        if (expect.size() > limit) expect.resize(limit);
        std::error_code ec;
        auto got = s.items_in_state(st, limit, ec, other);
        RC_ASSERT(!ec);
        RC_ASSERT(got.size() == expect.size());
        for (std::size_t i = 0; i < got.size(); ++i) RC_ASSERT(got[i].id == expect[i].second);
    }
    void show(std::ostream& o) const override {
        o << "items_in_state " << to_string(st) << " " << limit << (other ? " (other object)" : "");
    }
};

struct put_session : cmd {
    std::string id = *rc::gen::elementOf(ids);
    void apply(model& m) const override { m.target().sessions.insert(id); }
    void run(const model&, sut& s) const override {
        std::error_code ec;
        s.put_session({id, role::dev, id, {2000, 3, "b"}, "", timestamp{}}, ec);
        RC_ASSERT(!ec);
    }
    void show(std::ostream& o) const override { o << "put_session " << id; }
};

struct remove_session : cmd {
    std::string id = *rc::gen::elementOf(ids);
    void apply(model& m) const override { m.target().sessions.erase(id); }
    void run(const model&, sut& s) const override {
        std::error_code ec;
        s.remove_session(id, ec);
        RC_ASSERT(!ec);
    }
    void show(std::ostream& o) const override { o << "remove_session " << id; }
};

struct append_event : cmd {
    event_type type = *rc::gen::elementOf(event_types);
    std::string id = *rc::gen::elementOf(ids);
    void apply(model& m) const override { m.target().events.emplace_back(type, id); }
    void run(const model& m, sut& s) const override {
        event e;
        e.seq = 99;   // ignored: the store numbers it
        e.type = type;
        e.task_id = id;
        e.time = timestamp{std::chrono::seconds(1'800'000'000)};
        e.attempt = 1;
        std::error_code ec;
        const auto seq = s.append_event(e, ec);
        RC_ASSERT(!ec);
        RC_ASSERT(seq == m.view().events.size() + 1);
    }
    void show(std::ostream& o) const override { o << "append_event " << to_string(type) << " " << id; }
};

struct events_after : cmd {
    std::uint64_t after = *rc::gen::inRange<std::uint64_t>(0, 6);
    std::size_t limit = *rc::gen::inRange<std::size_t>(1, 5);
    bool other = *rc::gen::arbitrary<bool>();
    // The outbox is read outside units (a relay after the commit). Inside one, the concept
    // promises nothing of the unit's own events (sqlite_store shows them, memory_store not).
    void checkPreconditions(const model& m) const override { RC_PRE(other || !m.unit); }
    void run(const model& m, sut& s) const override {
        // Committed events only: another object never sees a unit's events before its commit.
        const auto& all = m.committed.events;
        std::error_code ec;
        const auto got = s.events_after(after, limit, ec, other);
        RC_ASSERT(!ec);
        const std::size_t from = std::min<std::size_t>(after, all.size());
        RC_ASSERT(got.size() == std::min(limit, all.size() - from));
        for (std::size_t i = 0; i < got.size(); ++i) {
            RC_ASSERT(got[i].seq == from + i + 1);
            RC_ASSERT(got[i].type == all[from + i].first);
            RC_ASSERT(got[i].task_id == all[from + i].second);
        }
    }
    void show(std::ostream& o) const override { o << "events_after " << after << " " << limit << (other ? " (other object)" : ""); }
};

struct put_limits : cmd {
    int cap = *rc::gen::inRange(1, 9);
    void apply(model& m) const override { m.target().cap = cap; }
    void run(const model&, sut& s) const override {
        std::error_code ec;
        s.put_limits({cap, 3, 10s}, ec);
        RC_ASSERT(!ec);
    }
    void show(std::ostream& o) const override { o << "put_limits cap " << cap; }
};

struct read_all : cmd {
    bool other = *rc::gen::arbitrary<bool>();
    void run(const model& m, sut& s) const override { compare(other ? m.committed : m.view(), s, other); }
    void show(std::ostream& o) const override { o << "read everything" << (other ? " (other object)" : ""); }
};

template <class S>
void check(S main, S other) {
    any_store<S> s{std::move(main), std::move(other)};
    rc::state::check(model{}, s,
                     rc::state::gen::execOneOfWithArgs<begin, commit, rollback, create_item, put_item, in_state, put_session,
                                                       remove_session, append_event, events_after, put_limits, read_all>());
}

} // namespace store_sm

TEST_CASE("store state machine: memory_store's units of work behave like the model") {
    rc::prop("memory_store", [] {
        memory_store shared;
        store_sm::check(memory_store(shared), memory_store(shared));
    });
}

TEST_CASE("store state machine: sqlite_store's units of work behave like the model") {
    rc::prop("sqlite_store", [] {
        kugetsu::test::temp_dir d;
        sqlite_store main(d / "state.db"), other(d / "state.db");
        std::error_code ec;
        main.open(ec);
        RC_ASSERT(!ec);
        other.open(ec);
        RC_ASSERT(!ec);
        store_sm::check(std::move(main), std::move(other));
    });
}

// ---- the dispatcher ------------------------------------------------------------------------

namespace disp_sm {

const std::vector<std::string> ids{"t1", "t2", "t3", "t4", "t5", "t6"};

struct model {
    int cap = 2;
    std::map<std::string, task_state> state;
    std::vector<std::string> order;   // enqueue order
    int live() const {
        int n = 0;
        for (auto& [id, st] : state) n += st == task_state::running;
        return n;
    }
};

struct sut {
    fake_spawner spawner;
    memory_store store;
    manual_clock clock;
    test_dispatcher d{null_lock{}, spawner, callback_notifier([](const event&) {}), store, clock, null_workspace{},
                      dispatcher_options{2, 3, 1s}};
    task_state state_of(const std::string& id) {
        std::error_code ec;
        auto it = store.get_item(id, ec);
        return it ? it->state : task_state::pending;
    }
    std::map<std::string, task_state> seen;   // each task's state after the last command
};

using cmd = rc::state::Command<model, sut>;

/// Whether types.hpp's state table goes from `from` (none: a new task) to `to` in at most two
/// writes: what one command may do to a task (a start claims it, then marks it running).
bool table_path(std::optional<task_state> from, task_state to) {
    for (auto mid : all_task_states)
        if ((from ? can_follow(*from, mid) : can_begin(mid)) && (mid == to || can_follow(mid, to))) return true;
    return false;
}

/// After every command: every task's state in the store is the model's, and live agents match;
/// and each task went from its state after the last command to its state now along the state
/// table (at most two of its transitions: the simulator checks every single write).
void compare(const model& m, sut& s) {
    for (auto& [id, st] : m.state) RC_ASSERT(s.state_of(id) == st);
    std::error_code ec;
    const auto items = s.store.list_items(ec);
    for (const auto& it : items) {
        const auto was = s.seen.find(it.id);
        RC_ASSERT(table_path(was == s.seen.end() ? std::nullopt : std::optional(was->second), it.state));
        s.seen[it.id] = it.state;
    }
    RC_ASSERT(static_cast<int>(items.size()) == static_cast<int>(m.state.size()));
    RC_ASSERT(s.spawner.running() == m.live());
    RC_ASSERT(s.spawner.running() <= m.cap);
}

struct enqueue : cmd {
    std::string id = *rc::gen::elementOf(ids);
    void apply(model& m) const override {
        if (!m.state.count(id)) {
            m.state[id] = task_state::pending;
            m.order.push_back(id);
        }
    }
    void run(const model& m, sut& s) const override {
        model after = m;
        apply(after);
        std::error_code ec;
        s.clock.advance(1ms);
        s.d.enqueue({id, {"agent"}}, ec);
        RC_ASSERT((ec == errc::duplicate_task) == (m.state.count(id) == 1));
        compare(after, s);
    }
    void show(std::ostream& o) const override { o << "enqueue " << id; }
};

struct start : cmd {
    std::string id = *rc::gen::elementOf(ids);
    void apply(model& m) const override {
        if (!m.state.count(id) && m.live() < m.cap) {
            m.state[id] = task_state::running;
            m.order.push_back(id);
        }
    }
    void run(const model& m, sut& s) const override {
        model after = m;
        apply(after);
        std::error_code ec;
        s.clock.advance(1ms);
        auto r = s.d.start({id, {"agent"}}, ec);
        if (m.state.count(id)) RC_ASSERT(ec == errc::duplicate_task);
        else if (m.live() >= m.cap) RC_ASSERT(r.status == start_status::no_slot);
        else RC_ASSERT(r.status == start_status::started);
        compare(after, s);
    }
    void show(std::ostream& o) const override { o << "start " << id; }
};

struct process_queue : cmd {
    void apply(model& m) const override {
        int free = m.cap - m.live();
        for (auto& id : m.order)
            if (free > 0 && m.state[id] == task_state::pending) {
                m.state[id] = task_state::running;
                --free;
            }
    }
    void run(const model& m, sut& s) const override {
        model after = m;
        apply(after);
        s.d.process_queue();
        compare(after, s);
    }
    void show(std::ostream& o) const override { o << "process_queue"; }
};

struct agent_exits : cmd {
    std::size_t which = *rc::gen::inRange<std::size_t>(0, 6);
    int code = *rc::gen::element(0, 0, 1, 2);
    std::string victim(const model& m) const {
        std::vector<std::string> running;
        for (auto& [id, st] : m.state)
            if (st == task_state::running) running.push_back(id);
        return running.empty() ? std::string() : running[which % running.size()];
    }
    void checkPreconditions(const model& m) const override { RC_PRE(!victim(m).empty()); }
    void apply(model& m) const override {
        m.state[victim(m)] = code == 0 ? task_state::completed : task_state::error;
    }
    void run(const model& m, sut& s) const override {
        model after = m;
        apply(after);
        const int pid = s.spawner.pid_of(victim(m));
        RC_ASSERT(pid > 0);
        s.spawner.exit(pid, code);
        s.d.reap();
        compare(after, s);
    }
    void show(std::ostream& o) const override { o << "agent_exits #" << which << " code " << code; }
};

struct cancel : cmd {
    std::string id = *rc::gen::elementOf(ids);
    void apply(model& m) const override {
        auto it = m.state.find(id);
        if (it != m.state.end() && (it->second == task_state::pending || it->second == task_state::running))
            it->second = task_state::cancelled;
    }
    void run(const model& m, sut& s) const override {
        model after = m;
        apply(after);
        std::error_code ec;
        s.d.cancel(id, ec);
        auto it = m.state.find(id);
        if (it == m.state.end()) RC_ASSERT(ec == errc::unknown_task);
        else if (is_final(it->second)) RC_ASSERT(ec == errc::invalid_transition);
        else RC_ASSERT(!ec);
        s.d.reap();   // a running task ends (SIGTERM) and is reaped as cancelled
        compare(after, s);
    }
    void show(std::ostream& o) const override { o << "cancel " << id; }
};

struct restart : cmd {
    std::string id = *rc::gen::elementOf(ids);
    void apply(model& m) const override {
        auto it = m.state.find(id);
        if (it == m.state.end() || !is_final(it->second)) return;
        it->second = task_state::pending;   // enqueued now: behind every task already queued
        std::erase(m.order, id);
        m.order.push_back(id);
    }
    void run(const model& m, sut& s) const override {
        model after = m;
        apply(after);
        std::error_code ec;
        s.clock.advance(1ms);
        s.d.restart(std::string_view(id), ec);
        auto it = m.state.find(id);
        if (it == m.state.end()) RC_ASSERT(ec == errc::unknown_task);
        else if (!is_final(it->second)) RC_ASSERT(ec == errc::task_active);
        else RC_ASSERT(!ec);
        compare(after, s);
    }
    void show(std::ostream& o) const override { o << "restart " << id; }
};

} // namespace disp_sm

TEST_CASE("dispatcher state machine: enqueue, start, process_queue, exits, cancels and restarts match the model, "
          "each state change one the state table allows") {
    rc::prop("dispatcher", [] {
        disp_sm::sut s;
        rc::state::check(disp_sm::model{}, s,
                         rc::state::gen::execOneOfWithArgs<disp_sm::enqueue, disp_sm::start, disp_sm::process_queue,
                                                           disp_sm::agent_exits, disp_sm::cancel, disp_sm::restart>());
    });
}

TEST_CASE("the state table: the simulator flags a write it does not allow (negative), and allows what it lists") {
    STATIC_REQUIRE(can_follow(task_state::running, task_state::completed));
    STATIC_REQUIRE(can_follow(task_state::error, task_state::pending));   // restart
    STATIC_REQUIRE_FALSE(can_follow(task_state::completed, task_state::running));
    STATIC_REQUIRE_FALSE(can_follow(task_state::pending, task_state::running));   // never without a claim
    STATIC_REQUIRE_FALSE(can_begin(task_state::running));
    CHECK(disp_sm::table_path(std::nullopt, task_state::running));   // start: claimed, then running
    CHECK_FALSE(disp_sm::table_path(task_state::completed, task_state::running));
    auto writes = [](bool check, std::vector<task_state> states) {
        sim::world w(1);
        auto shared = std::make_shared<sim::store_shared>();
        shared->check_transitions = check;
        memory_store mem;
        w.add_actor("writer", [&] {
            sim::sim_store st(w, mem, shared);
            std::error_code ec;
            queue_item it;
            it.id = "t1";
            it.state = states.front();
            st.create_item(it, ec);
            for (std::size_t i = 1; i < states.size(); ++i) {
                it.state = states[i];
                st.put_item(it, ec);
            }
        });
        sim::random_chooser ch(1, 0);
        w.run(ch);
        std::vector<std::string> kinds;
        for (const auto& v : w.violations()) kinds.push_back(v.kind + ": " + v.detail);
        return kinds;
    };
    using enum task_state;
    CHECK(writes(true, {pending, notified, running, completed, pending, notified, running, waiting, pending, cancelled})
              .empty());
    const auto bad = writes(true, {pending, notified, running, completed, running});
    REQUIRE(bad.size() == 1u);
    CHECK(bad[0] == "transition: task t1: completed -> running is not in the state table");
    CHECK(writes(true, {running}).size() == 1u);   // created running
    CHECK(writes(false, {pending, notified, running, completed, running}).empty());   // the check off (legacy)
}
