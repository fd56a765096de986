// State-machine tests (rapidcheck's rc::state): random sequences of operations on the store
// and on the dispatcher, each checked against a simple model after every step.
#include <catch2/catch.hpp>
#include <rapidcheck.h>
#include <rapidcheck/catch.h>
#include <rapidcheck/state.h>

#include <kugetsu/kugetsu.hpp>

#include <filesystem>
#include <map>
#include <memory>
#include <set>

#include "support/proc.hpp"

using namespace kugetsu;
using namespace std::chrono_literals;

// ---- the store -----------------------------------------------------------------------------

namespace store_sm {

const std::vector<std::string> ids{"a", "b", "c", "d", "e"};
const std::vector<task_state> states{task_state::pending, task_state::notified, task_state::running,
                                     task_state::completed, task_state::error, task_state::cancelled};

struct record {
    task_state state;
    int enqueued;   // seconds
    int attempts;
};
struct model {
    std::map<std::string, record> items;
    std::set<std::string> sessions;
};

/// The system under test: any store, behind one interface.
struct sut {
    virtual ~sut() = default;
    virtual void create_item(const queue_item&, std::error_code&) = 0;
    virtual void put_item(const queue_item&, std::error_code&) = 0;
    virtual std::optional<queue_item> get_item(const std::string&, std::error_code&) = 0;
    virtual std::vector<queue_item> items_in_state(task_state, std::size_t, std::error_code&) = 0;
    virtual void put_session(const session&, std::error_code&) = 0;
    virtual void remove_session(const std::string&, std::error_code&) = 0;
    virtual std::vector<session> list_sessions(std::error_code&) = 0;
};
template <class S>
struct any_store : sut {
    S s;
    explicit any_store(S st) : s(std::move(st)) {}
    void create_item(const queue_item& it, std::error_code& ec) override { s.create_item(it, ec); }
    void put_item(const queue_item& it, std::error_code& ec) override { s.put_item(it, ec); }
    std::optional<queue_item> get_item(const std::string& id, std::error_code& ec) override { return s.get_item(id, ec); }
    std::vector<queue_item> items_in_state(task_state st, std::size_t n, std::error_code& ec) override {
        return s.items_in_state(st, n, ec);
    }
    void put_session(const session& se, std::error_code& ec) override { s.put_session(se, ec); }
    void remove_session(const std::string& id, std::error_code& ec) override { s.remove_session(id, ec); }
    std::vector<session> list_sessions(std::error_code& ec) override { return s.list_sessions(ec); }
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

using cmd = rc::state::Command<model, sut>;

struct create_item : cmd {
    std::string id = *rc::gen::elementOf(ids);
    task_state st = *rc::gen::elementOf(states);
    int enqueued = *rc::gen::inRange(0, 5);
    void apply(model& m) const override {
        if (!m.items.count(id)) m.items[id] = {st, enqueued, 0};
    }
    void run(const model& m, sut& s) const override {
        std::error_code ec;
        s.create_item(make(id, st, enqueued, 0), ec);
        RC_ASSERT((ec == errc::duplicate_task) == (m.items.count(id) == 1));
        if (!m.items.count(id)) RC_ASSERT(!ec);
    }
    void show(std::ostream& o) const override { o << "create " << id << " " << to_string(st) << " @" << enqueued; }
};

struct put_item : cmd {
    std::string id = *rc::gen::elementOf(ids);
    task_state st = *rc::gen::elementOf(states);
    int enqueued = *rc::gen::inRange(0, 5);
    int attempts = *rc::gen::inRange(0, 4);
    void apply(model& m) const override { m.items[id] = {st, enqueued, attempts}; }
    void run(const model&, sut& s) const override {
        std::error_code ec;
        s.put_item(make(id, st, enqueued, attempts), ec);
        RC_ASSERT(!ec);
    }
    void show(std::ostream& o) const override { o << "put " << id << " " << to_string(st) << " @" << enqueued; }
};

struct get_item : cmd {
    std::string id = *rc::gen::elementOf(ids);
    void run(const model& m, sut& s) const override {
        std::error_code ec;
        auto r = s.get_item(id, ec);
        RC_ASSERT(!ec);
        auto it = m.items.find(id);
        RC_ASSERT(r.has_value() == (it != m.items.end()));
        if (r) {
            RC_ASSERT(r->state == it->second.state);
            RC_ASSERT(r->attempts == it->second.attempts);
        }
    }
    void show(std::ostream& o) const override { o << "get " << id; }
};

struct in_state : cmd {
    task_state st = *rc::gen::elementOf(states);
    std::size_t limit = *rc::gen::inRange<std::size_t>(0, 7);
    void run(const model& m, sut& s) const override {
        std::vector<std::pair<int, std::string>> expect;
        for (auto& [id, r] : m.items)
            if (r.state == st) expect.emplace_back(r.enqueued, id);
        std::sort(expect.begin(), expect.end());
        if (expect.size() > limit) expect.resize(limit);
        std::error_code ec;
        auto got = s.items_in_state(st, limit, ec);
        RC_ASSERT(!ec);
        RC_ASSERT(got.size() == expect.size());
        for (std::size_t i = 0; i < got.size(); ++i) RC_ASSERT(got[i].id == expect[i].second);
    }
    void show(std::ostream& o) const override { o << "items_in_state " << to_string(st) << " " << limit; }
};

struct put_session : cmd {
    std::string id = *rc::gen::elementOf(ids);
    void apply(model& m) const override { m.sessions.insert(id); }
    void run(const model&, sut& s) const override {
        std::error_code ec;
        s.put_session({id, role::dev, id, {2000, 3, "b"}, "", timestamp{}}, ec);
        RC_ASSERT(!ec);
    }
    void show(std::ostream& o) const override { o << "put_session " << id; }
};

struct remove_session : cmd {
    std::string id = *rc::gen::elementOf(ids);
    void apply(model& m) const override { m.sessions.erase(id); }
    void run(const model&, sut& s) const override {
        std::error_code ec;
        s.remove_session(id, ec);
        RC_ASSERT(!ec);
    }
    void show(std::ostream& o) const override { o << "remove_session " << id; }
};

struct list_sessions : cmd {
    void run(const model& m, sut& s) const override {
        std::error_code ec;
        std::set<std::string> got;
        for (auto& se : s.list_sessions(ec)) got.insert(se.id);
        RC_ASSERT(!ec);
        RC_ASSERT(got == m.sessions);
    }
    void show(std::ostream& o) const override { o << "list_sessions"; }
};

} // namespace store_sm

TEST_CASE("store state machine: memory_store behaves like the model") {
    rc::prop("memory_store", [] {
        store_sm::any_store<memory_store> s{memory_store{}};
        rc::state::check(store_sm::model{}, s,
                         rc::state::gen::execOneOfWithArgs<store_sm::create_item, store_sm::put_item, store_sm::get_item,
                                                           store_sm::in_state, store_sm::put_session,
                                                           store_sm::remove_session, store_sm::list_sessions>());
    });
}

TEST_CASE("store state machine: file_store behaves like the model") {
    rc::prop("file_store", [] {
        kugetsu::test::temp_dir d;
        file_store::options o;
        o.durable = false;   // fsync changes nothing the model can see; keep the test fast
        store_sm::any_store<file_store> s{file_store(d.path(), o)};
        rc::state::check(store_sm::model{}, s,
                         rc::state::gen::execOneOfWithArgs<store_sm::create_item, store_sm::put_item, store_sm::get_item,
                                                           store_sm::in_state, store_sm::put_session,
                                                           store_sm::remove_session, store_sm::list_sessions>());
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
};

using cmd = rc::state::Command<model, sut>;

/// After every command: every task's state in the store is the model's, and live agents match.
void compare(const model& m, sut& s) {
    for (auto& [id, st] : m.state) RC_ASSERT(s.state_of(id) == st);
    std::error_code ec;
    RC_ASSERT(static_cast<int>(s.store.list_items(ec).size()) == static_cast<int>(m.state.size()));
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

} // namespace disp_sm

TEST_CASE("dispatcher state machine: enqueue, start, process_queue, exits and cancels match the model") {
    rc::prop("dispatcher", [] {
        disp_sm::sut s;
        rc::state::check(disp_sm::model{}, s,
                         rc::state::gen::execOneOfWithArgs<disp_sm::enqueue, disp_sm::start, disp_sm::process_queue,
                                                           disp_sm::agent_exits, disp_sm::cancel>());
    });
}
