// The dispatcher's semantics, on the in-memory store with the fake spawner and a manual clock.
#include <catch2/catch.hpp>

#include <functional>

#include <kugetsu/kugetsu.hpp>
#include <kugetsu/store/sqlite_store.hpp>

#include <sqlite3.h>

#include <algorithm>
#include <filesystem>
#include <fstream>
#include <map>
#include <memory>
#include <set>

#include "support/proc.hpp"
#include "support/recording.hpp"

using namespace kugetsu;
using namespace std::chrono_literals;

namespace {

/// A workspace whose failures a test scripts, and which records what it did (also into an
/// op_log, if given, to order its prepares among the store's writes).
class scripted_workspace {
public:
    struct state {
        int fail_prepares = 0;
        bool effects = false;   // has_effects(): whether a prepare leaves something behind
        std::vector<std::string> prepared, removed;
        std::shared_ptr<kugetsu::test::op_log> log;
    };
    std::shared_ptr<state> s = std::make_shared<state>();

    std::string prepare(const queue_item& it, std::error_code& ec) {
        ec.clear();
        if (s->log) s->log->add("prepare " + it.id);
        if (s->fail_prepares > 0) {
            --s->fail_prepares;
            ec = errc::workspace_failed;
            return {};
        }
        s->prepared.push_back(it.id);
        return "/ws/" + it.id;
    }
    void remove(const queue_item& it, std::error_code& ec) {
        ec.clear();
        s->removed.push_back(it.id);
    }
    bool has_effects(const queue_item&) const noexcept { return s->effects; }
};
static_assert(kugetsu::workspace_with_effects<scripted_workspace>);

using rig_dispatcher = basic_dispatcher<null_lock, fake_spawner, callback_notifier, memory_store, manual_clock,
                                        scripted_workspace>;

struct rig {
    fake_spawner spawner;
    memory_store store;
    manual_clock clock;
    scripted_workspace ws;
    std::shared_ptr<std::vector<event>> events = std::make_shared<std::vector<event>>();
    rig_dispatcher d;

    explicit rig(dispatcher_options o = {})
        : d(null_lock{}, spawner, callback_notifier([ev = events](const event& e) { ev->push_back(e); }), store,
            clock, ws, o) {}

    task_spec spec(std::string id, std::optional<duration> timeout = {}) {
        return task_spec{std::move(id), {"agent", "--work"}, role::dev, timeout, {}, {}};
    }
    queue_item item(const std::string& id) {
        std::error_code ec;
        auto it = store.get_item(id, ec);
        REQUIRE(it);
        return *it;
    }
    int sessions() {
        std::error_code ec;
        return static_cast<int>(store.list_sessions(ec).size());
    }
    std::vector<std::string> types_of(const std::string& id) {
        std::vector<std::string> v;
        for (auto& e : *events)
            if (e.task_id == id) v.emplace_back(to_string(e.type));
        return v;
    }
    const event* last_of(const std::string& id) {
        const event* r = nullptr;
        for (auto& e : *events)
            if (e.task_id == id) r = &e;
        return r;
    }
};

} // namespace

TEST_CASE("enqueue makes a pending item and sends task_queued") {
    rig r;
    auto it = r.d.enqueue(r.spec("t1"));
    CHECK(it.state == task_state::pending);
    CHECK(r.item("t1").state == task_state::pending);
    CHECK(r.types_of("t1") == std::vector<std::string>{"task_queued"});
    CHECK(r.item("t1").max_attempts == 3);
}

TEST_CASE("enqueue refuses a duplicate id, a hostile id and a PM task, and changes nothing") {
    rig r;
    r.d.enqueue(r.spec("t1"));
    std::error_code ec;
    r.d.enqueue(r.spec("t1"), ec);
    CHECK(ec == errc::duplicate_task);
    r.d.enqueue(r.spec("../x"), ec);
    CHECK(ec == errc::invalid_task_id);
    CHECK(r.d.last_error_detail().find("../x") != std::string::npos);
    auto pm = r.spec("pm1");
    pm.role = role::pm;
    r.d.enqueue(pm, ec);
    CHECK(ec == errc::invalid_transition);
    CHECK_THROWS_AS(r.d.enqueue(r.spec("t1")), kugetsu::error);
    std::error_code lec;
    CHECK(r.store.list_items(lec).size() == 1);
    CHECK(r.events->size() == 1);
}

TEST_CASE("last_error_detail() describes the last operation only: each operation clears it first") {
    rig r;
    std::error_code ec;
    r.d.enqueue(r.spec("../x"), ec);
    REQUIRE(ec == errc::invalid_task_id);
    REQUIRE_FALSE(r.d.last_error_detail().empty());
    for (auto op : std::initializer_list<std::function<void()>>{
             [&] { r.d.enqueue(r.spec("t1"), ec); }, [&] { r.d.cancel("t1", ec); },
             [&] { r.d.restart(std::vector<std::string>{"t1"}, ec); }, [&] { r.d.reap(ec); },
             [&] { r.d.process_queue(ec); }, [&] { r.d.schedule(ec); }, [&] { r.d.pause("", ec); },
             [&] { r.d.resume("", ec); }, [&] { r.d.set_group_cap("g", 2, ec); }, [&] { r.d.limits(ec); },
             [&] { r.d.next_wake(ec); }}) {
        r.d.enqueue(r.spec("../y"), ec);   // a failure that leaves a detail
        REQUIRE_FALSE(r.d.last_error_detail().empty());
        op();
        CHECK_FALSE(ec);
        CHECK(r.d.last_error_detail().empty());
    }
}

TEST_CASE("start admits cap dev agents and answers no_slot after, leaving nothing behind") {
    rig r;
    for (auto id : {"a", "b", "c"}) {
        auto res = r.d.start(r.spec(id));
        CHECK(res.status == start_status::started);
        CHECK(res.item.state == task_state::running);
        CHECK(res.item.process.pid > 0);
    }
    auto res = r.d.start(r.spec("d"));
    CHECK(res.status == start_status::no_slot);
    std::error_code ec;
    CHECK_FALSE(r.store.get_item("d", ec));
    CHECK(r.types_of("d").empty());
    CHECK(r.spawner.running() == 3);
    CHECK(r.sessions() == 3);
    CHECK(r.d.live() == 3);
}

TEST_CASE("the cap is configurable, defaults to 3, and a nonsense cap is refused") {
    CHECK(dispatcher_options{}.cap == 3);
    rig one(dispatcher_options{1, 3, 1s});
    CHECK(one.d.start(one.spec("a")).status == start_status::started);
    CHECK(one.d.start(one.spec("b")).status == start_status::no_slot);
    for (int bad : {0, -1, 1 << 20}) {
        dispatcher_options o;
        o.cap = bad;
        CHECK(o.validate() == errc::invalid_limit);
        CHECK_THROWS_AS(rig(o), kugetsu::error);
    }
    dispatcher_options o;
    o.max_attempts = 0;
    CHECK_THROWS_AS(rig(o), kugetsu::error);
}

TEST_CASE("the PM agent never takes a dev slot, and only one PM runs at a time") {
    rig r;
    auto pm = r.spec("pm-1");
    pm.role = role::pm;
    auto p = r.d.start(pm);
    REQUIRE(p.status == start_status::started);
    std::error_code ec;
    auto sessions = r.store.list_sessions(ec);
    REQUIRE(sessions.size() == 1);
    CHECK(sessions[0].id == "pm-agent");
    for (auto id : {"a", "b", "c"}) CHECK(r.d.start(r.spec(id)).status == start_status::started);
    CHECK(r.d.start(r.spec("d")).status == start_status::no_slot);
    CHECK(r.d.live() == 3);
    auto pm2 = r.spec("pm-2");
    pm2.role = role::pm;
    r.d.start(pm2, ec);
    CHECK(ec == errc::pm_already_running);
}

TEST_CASE("dead sessions are reaped before counting and their slots are reused") {
    rig r;
    for (auto id : {"a", "b", "c"}) r.d.start(r.spec(id));
    r.spawner.exit(r.item("b").process.pid, 0);
    auto res = r.d.start(r.spec("d"));
    CHECK(res.status == start_status::started);
    CHECK(r.item("b").state == task_state::completed);
    CHECK(r.item("b").exit_code == 0);
    CHECK(r.last_of("b")->type == event_type::task_completed);
    CHECK(r.last_of("b")->exit_code == 0);
    CHECK(r.sessions() == 3);
    CHECK(r.ws.s->removed == std::vector<std::string>{"b"});
}

TEST_CASE("an agent that exits non-zero makes its task error, with the exit code") {
    rig r;
    r.d.start(r.spec("a"));
    r.spawner.exit(r.item("a").process.pid, 2);
    auto rep = r.d.reap();
    CHECK(rep.finished == 1);
    CHECK(rep.live == 0);
    CHECK(r.item("a").state == task_state::error);
    CHECK(r.item("a").exit_code == 2);
    CHECK(r.last_of("a")->type == event_type::task_error);
    CHECK(r.last_of("a")->exit_code == 2);
    CHECK(r.last_of("a")->reason == event_reason::exit_code);
}

TEST_CASE("an agent that vanishes without an exit code makes its task error, reason exit_unknown") {
    rig r;
    r.d.start(r.spec("a"));
    r.spawner.vanish(r.item("a").process.pid);
    r.d.reap();
    CHECK(r.item("a").state == task_state::error);
    CHECK_FALSE(r.item("a").exit_code);
    CHECK(r.last_of("a")->reason == event_reason::exit_unknown);
}

TEST_CASE("process_queue takes as many pending tasks as there are free slots, oldest first") {
    rig r;
    for (int i = 1; i <= 6; ++i) {
        r.d.enqueue(r.spec("t" + std::to_string(i)));
        r.clock.advance(1ms);
    }
    auto rep = r.d.process_queue();
    CHECK(rep.live_before == 0);
    CHECK(rep.taken == 3);
    CHECK(rep.started == 3);
    for (auto id : {"t1", "t2", "t3"}) CHECK(r.item(id).state == task_state::running);
    for (auto id : {"t4", "t5", "t6"}) CHECK(r.item(id).state == task_state::pending);
    CHECK(r.types_of("t1") == std::vector<std::string>{"task_queued", "task_dequeued", "task_started"});
    CHECK(r.d.process_queue().taken == 0);
    r.spawner.exit(r.item("t2").process.pid, 0);
    rep = r.d.process_queue();
    CHECK(rep.finished == 1);
    CHECK(rep.started == 1);
    CHECK(r.item("t4").state == task_state::running);
    CHECK(r.spawner.peak() == 3);
}

TEST_CASE("there is no batch size: one pass fills every free slot") {
    rig r(dispatcher_options{8, 3, 1s});
    for (int i = 0; i < 20; ++i) r.d.enqueue(r.spec("t" + std::to_string(100 + i)));
    auto rep = r.d.process_queue();
    CHECK(rep.started == 8);
    CHECK(r.spawner.running() == 8);
}

TEST_CASE("a failed spawn removes the workspace, returns the task to pending and is retried") {
    rig r(dispatcher_options{1, 3, 1s});
    r.d.enqueue(r.spec("t1"));
    r.spawner.fail_next_spawns(2);
    auto rep = r.d.process_queue();
    CHECK(rep.failed == 2);
    CHECK(rep.started == 1);
    auto it = r.item("t1");
    CHECK(it.state == task_state::running);
    CHECK(it.attempts == 3);
    CHECK(r.ws.s->removed == std::vector<std::string>{"t1", "t1"});
    CHECK(r.sessions() == 1);
}

TEST_CASE("after max attempts the task is error with reason attempts_exhausted") {
    rig r;
    r.d.enqueue(r.spec("t1"));
    r.spawner.fail_next_spawns(3);
    auto rep = r.d.process_queue();
    CHECK(rep.failed == 3);
    auto it = r.item("t1");
    CHECK(it.state == task_state::error);
    CHECK(it.attempts == 3);
    CHECK(it.last_error.find("spawn") != std::string::npos);
    CHECK(r.last_of("t1")->type == event_type::task_error);
    CHECK(r.last_of("t1")->reason == event_reason::attempts_exhausted);
    CHECK(r.sessions() == 0);
    CHECK(r.ws.s->removed.size() == 3);
    CHECK(r.d.process_queue().taken == 0);
}

TEST_CASE("an exec failure removes the session it wrote and counts as a failed attempt") {
    rig r(dispatcher_options{1, 2, 1s});
    r.d.enqueue(r.spec("t1"));
    r.spawner.fail_next_releases(2);
    r.d.process_queue();
    auto it = r.item("t1");
    CHECK(it.state == task_state::error);
    CHECK(it.attempts == 2);
    CHECK(it.last_error.find("exec") != std::string::npos);
    CHECK(r.sessions() == 0);
    CHECK(r.spawner.running() == 0);
}

TEST_CASE("a workspace failure is a failed attempt too") {
    rig r;
    r.d.enqueue(r.spec("t1"));
    r.ws.s->fail_prepares = 1;
    auto rep = r.d.process_queue();
    CHECK(rep.failed == 1);
    CHECK(rep.started == 1);
    CHECK(r.item("t1").attempts == 2);
    CHECK(r.spawner.requests().size() == 1);
}

TEST_CASE("direct start retries in the foreground and reports exhaustion") {
    rig r;
    r.spawner.fail_next_spawns(6);
    std::error_code ec;
    auto res = r.d.start(r.spec("x"), ec);
    CHECK(ec == errc::attempts_exhausted);
    CHECK_THROWS_AS(r.d.start(r.spec("y")), kugetsu::error);
    CHECK(res.status == start_status::failed);
    CHECK(res.item.state == task_state::error);
    CHECK(res.item.attempts == 3);
    CHECK(r.item("x").state == task_state::error);
}

TEST_CASE("start_item with no free slot answers no_slot: the task stays pending, no attempt used, nothing written") {
    rig r(dispatcher_options{1, 3, 1s});
    r.d.enqueue(r.spec("q"));
    r.d.start(r.spec("other"));   // takes the only slot
    const auto before = r.item("q");
    auto res = r.d.start_item("q");
    CHECK(res.status == start_status::no_slot);
    CHECK(r.item("q").state == task_state::pending);
    CHECK(r.item("q").attempts == 0);
    CHECK(r.item("q").updated_at == before.updated_at);
}

TEST_CASE("a pass leaves no claim behind: each task it took is running, pending again or final") {
    rig r(dispatcher_options{2, 2, 1s});
    for (auto id : {"a", "b", "c", "d"}) r.d.enqueue(r.spec(id));
    // a, b, then a again: a's attempts are used up; each failure freed its slot for the next
    r.spawner.fail_next_releases(3);
    const auto rep = r.d.process_queue();
    CHECK(rep.started == 2);
    CHECK(rep.failed == 3);
    CHECK(rep.taken == 5);
    for (auto id : {"a", "b", "c", "d"}) CHECK(r.item(id).state != task_state::notified);
    CHECK(r.item("a").state == task_state::error);
    CHECK(r.item("b").state == task_state::running);
    CHECK(r.item("c").state == task_state::running);
    CHECK(r.item("d").state == task_state::pending);
}

TEST_CASE("a task is never started twice") {
    rig r;
    r.d.enqueue(r.spec("t1"));
    r.d.process_queue();
    std::error_code ec;
    auto res = r.d.start_item("t1", ec);
    CHECK(ec == errc::invalid_transition);
    CHECK(res.status == start_status::failed);
    CHECK(r.spawner.requests().size() == 1);
    r.d.start_item("nope", ec);
    CHECK(ec == errc::unknown_task);
}

TEST_CASE("a task past its timeout gets SIGTERM, then SIGKILL after the grace, and is error once reaped") {
    rig r(dispatcher_options{3, 3, 5s});
    r.d.start(r.spec("slow", 10s));
    const int pid = r.item("slow").process.pid;
    r.spawner.ignore_term(pid);
    r.clock.advance(9s);
    CHECK(r.d.reap().signalled == 0);
    r.clock.advance(2s);
    auto rep = r.d.reap();
    CHECK(rep.signalled == 1);
    CHECK(r.spawner.get(pid).signals == std::vector<stop_signal>{stop_signal::terminate});
    CHECK(rep.live == 1);   // the slot is freed when the agent is reaped, not when signalled
    CHECK(r.item("slow").state == task_state::running);
    r.clock.advance(3s);
    CHECK(r.d.reap().signalled == 0);
    r.clock.advance(3s);
    rep = r.d.reap();
    CHECK(rep.signalled == 1);
    CHECK(r.spawner.get(pid).signals.back() == stop_signal::kill);
    rep = r.d.reap();
    CHECK(rep.live == 0);
    auto it = r.item("slow");
    CHECK(it.state == task_state::error);
    CHECK(it.last_error == "timeout");
    CHECK(it.exit_code == 137);
    CHECK(r.last_of("slow")->reason == event_reason::timeout);
}

TEST_CASE("a task left notified by a starter that died returns to pending") {
    rig r;
    r.d.enqueue(r.spec("t1"));
    auto it = r.item("t1");
    it.state = task_state::notified;
    it.owner = {999999, 1, "fake-boot"};   // a process the fake does not know: gone
    std::error_code ec;
    r.store.put_item(it, ec);
    auto rep = r.d.reap();
    CHECK(rep.recovered == 1);
    CHECK(r.item("t1").state == task_state::pending);
    CHECK(r.d.process_queue().started == 1);
}

TEST_CASE("a task notified by a live starter is left alone") {
    rig r;
    r.d.enqueue(r.spec("t1"));
    auto it = r.item("t1");
    it.state = task_state::notified;
    it.owner = r.spawner.self();
    r.spawner.set_self({2, 2, "fake-boot"}, true);   // the owner is another live process
    std::error_code ec;
    r.store.put_item(it, ec);
    r.spawner.set_self({1, 1, "fake-boot"}, true);
    CHECK(r.d.reap().recovered == 0);
    CHECK(r.item("t1").state == task_state::notified);
}

TEST_CASE("a live agent whose starter died before marking the task running is adopted, not restarted") {
    rig r;
    r.d.enqueue(r.spec("t1"));
    std::error_code ec;
    // What a starter leaves if it dies right after writing the session: the agent runs.
    auto pr = r.spawner.spawn({"t1", {"agent"}, ""}, ec);
    r.spawner.release(pr, ec);
    r.store.put_session({"t1", role::dev, "t1", pr, "", r.clock.now()}, ec);
    auto rep = r.d.reap();
    CHECK(rep.adopted == 1);
    CHECK(rep.live == 1);
    CHECK(r.item("t1").state == task_state::running);
    CHECK(r.item("t1").process == pr);
    CHECK(r.d.process_queue().started == 0);
    CHECK(r.spawner.requests().size() == 1);
}

TEST_CASE("cancel makes a pending task cancelled and stops a running one") {
    rig r;
    r.d.enqueue(r.spec("p"));
    r.d.start(r.spec("run"));
    CHECK(r.d.cancel("p").state == task_state::cancelled);
    CHECK(r.last_of("p")->reason == event_reason::cancelled);
    r.d.cancel("run");
    const int pid = r.item("run").process.pid;
    CHECK(r.spawner.get(pid).signals == std::vector<stop_signal>{stop_signal::terminate});
    r.d.reap();
    CHECK(r.item("run").state == task_state::cancelled);
    std::error_code ec;
    r.d.cancel("run", ec);
    CHECK(ec == errc::invalid_transition);
    CHECK(r.d.process_queue().taken == 0);
}

TEST_CASE("a notifier that throws never stops dispatching") {
    fake_spawner sp;
    callback_notifier bad([](const event&) { throw std::runtime_error("listener broke"); });
    test_dispatcher d(null_lock{}, sp, bad, memory_store{}, manual_clock{}, null_workspace{});
    d.enqueue({"t1", {"agent"}});
    CHECK(d.process_queue().started == 1);
    CHECK(bad.failures() == 3);
}

TEST_CASE("each task's events form queued, dequeued, started, then one end event") {
    rig r(dispatcher_options{2, 3, 1s});
    for (int i = 0; i < 5; ++i) r.d.enqueue(r.spec("t" + std::to_string(i)));
    for (int round = 0; round < 10; ++round) {
        r.d.process_queue();
        for (int i = 0; i < 5; ++i)
            if (int pid = r.spawner.pid_of("t" + std::to_string(i))) r.spawner.exit(pid, i % 2);
    }
    r.d.reap();
    for (int i = 0; i < 5; ++i) {
        const auto id = "t" + std::to_string(i);
        CHECK(r.types_of(id) == std::vector<std::string>{"task_queued", "task_dequeued", "task_started",
                                                          i % 2 ? "task_error" : "task_completed"});
    }
    CHECK(r.spawner.peak() == 2);
}

TEST_CASE("a task whose last attempt was interrupted by its starter's death ends error, not retried") {
    rig r;
    r.d.enqueue(r.spec("t1"));
    auto it = r.item("t1");
    it.state = task_state::notified;
    it.attempts = it.max_attempts;                 // the starter died during the last attempt
    it.owner = {999999, 1, "fake-boot"};
    std::error_code ec;
    r.store.put_item(it, ec);
    CHECK(r.d.reap().recovered == 1);
    CHECK(r.item("t1").state == task_state::error);
    CHECK(r.item("t1").attempts == 3);
    CHECK(r.last_of("t1")->reason == event_reason::attempts_exhausted);
    CHECK(r.d.process_queue().taken == 0);
    CHECK(r.spawner.requests().empty());
}

TEST_CASE("a PM start interrupted by its caller's death ends error and is never queued") {
    rig r;
    auto pm = r.spec("pm-1");
    pm.role = role::pm;
    r.spawner.fail_next_spawns(1);
    // What an interrupted start leaves: a PM item claimed by a process that is now dead.
    queue_item it;
    it.id = "pm-1";
    it.argv = {"agent"};
    it.role = role::pm;
    it.state = task_state::notified;
    it.attempts = 1;
    it.owner = {999999, 1, "fake-boot"};
    std::error_code ec;
    r.store.create_item(it, ec);
    r.d.enqueue(r.spec("t1"));
    auto rep = r.d.process_queue();
    CHECK(rep.started == 1);
    CHECK(r.item("pm-1").state == task_state::error);
    CHECK(r.last_of("pm-1")->reason == event_reason::start_interrupted);
    CHECK(r.item("t1").state == task_state::running);
}

TEST_CASE("start reports a taken id even when no slot is free") {
    rig r(dispatcher_options{1, 3, 1s});
    r.d.enqueue(r.spec("q"));
    r.d.start(r.spec("busy"));
    std::error_code ec;
    auto res = r.d.start(r.spec("q"), ec);
    CHECK(ec == errc::duplicate_task);
    CHECK(res.status == start_status::no_slot);   // the default: nothing was done
    CHECK(r.item("q").state == task_state::pending);
}

// ---- one unit of work per critical section ---------------------------------------------------

namespace {

using kugetsu::test::op_log;
using rec_store = kugetsu::test::recording_store<memory_store>;
using rec_spawner = kugetsu::test::recording_spawner<fake_spawner>;
static_assert(kugetsu::store<rec_store>);
static_assert(kugetsu::spawner<rec_spawner>);
using rec_dispatcher = basic_dispatcher<null_lock, rec_spawner, callback_notifier, rec_store, manual_clock,
                                        scripted_workspace>;

/// A dispatcher whose store, spawner and workspace write what is done to them into one log.
struct rec_rig {
    std::shared_ptr<op_log> log = std::make_shared<op_log>();
    fake_spawner spawner;
    memory_store store;   // the state the dispatcher's store forwards to (a copy shares it)
    manual_clock clock;
    scripted_workspace ws;
    std::shared_ptr<std::vector<event>> events = std::make_shared<std::vector<event>>();
    rec_dispatcher d;

    explicit rec_rig(dispatcher_options o = {})
        : d(null_lock{}, rec_spawner(spawner, log),
            callback_notifier([ev = events](const event& e) { ev->push_back(e); }), rec_store(store, log), clock,
            (ws.s->log = log, ws), o) {}

    void enqueue(std::initializer_list<const char*> ids) {
        for (auto id : ids) {
            d.enqueue(task_spec{id, {"agent"}, role::dev, {}, {}, {}, {}});
            clock.advance(1ms);
        }
    }
    queue_item item(const std::string& id) {
        std::error_code ec;
        auto it = store.get_item(id, ec);
        REQUIRE(it);
        return *it;
    }
    int at(const std::string& line) const { return log->find(line); }
};

} // namespace

TEST_CASE("a pass that starts k agents commits once durably before releasing them, then once (visible) for what they taught") {
    const int tasks = GENERATE(1, 3, 5);
    rec_rig r(dispatcher_options{3, 3, 1s});
    std::vector<std::string> all = {"a", "b", "c", "d", "e"};
    for (int i = 0; i < tasks; ++i) r.enqueue({all[static_cast<std::size_t>(i)].c_str()});
    const std::vector<std::string> started(all.begin(), all.begin() + std::min(tasks, 3));
    r.log->clear();
    auto rep = r.d.process_queue();
    INFO(r.log->dump());
    CHECK(rep.started == static_cast<int>(started.size()));
    CHECK(rep.commits == 2);
    const auto& L = r.log->lines;
    REQUIRE(r.log->starting("commit").size() == 2);
    const int durable = r.at("commit durable");
    const int visible = r.at("commit visible");
    REQUIRE(durable >= 0);
    REQUIRE(visible > durable);
    CHECK(visible == static_cast<int>(L.size()) - 1);
    // Before the one durable commit: every claim (attempt counted, task_dequeued), every spawn
    // (held) and every session; no release.
    for (auto& id : started) {
        INFO(id);
        const int claim = r.at("put_item " + id + " notified"), spawn = r.at("spawn " + id),
                  sess = r.at("put_session " + id), deq = r.at("append_event task_dequeued " + id);
        CHECK(claim >= 0);
        CHECK(deq >= 0);
        CHECK(claim < spawn);
        CHECK(spawn < sess);
        CHECK(sess < durable);
        CHECK(deq < durable);
    }
    const auto releases = r.log->starting("release");
    REQUIRE(releases.size() == started.size());
    CHECK(releases.front() > durable);
    // Between the two: all the releases, then one unit with the running marks and task_started.
    std::vector<std::string> expected;
    for (auto& id : started) expected.push_back("release " + id);
    expected.push_back("begin");
    for (auto& id : started) {
        expected.push_back("put_item " + id + " running");
        expected.push_back("append_event task_started " + id);
    }
    CHECK(std::vector<std::string>(L.begin() + durable + 1, L.begin() + visible) == expected);
    CHECK(r.spawner.running() == static_cast<int>(started.size()));
    CHECK(r.log->starting("begin").size() == 2);   // the pass's unit, and the one after the releases
}

TEST_CASE("a pass with nothing to do writes nothing and commits nothing") {
    rec_rig r(dispatcher_options{2, 3, 1s});
    r.d.process_queue();   // a fresh store gets its limits: that pass writes them
    r.log->clear();
    int commits = r.d.commits();
    auto rep = r.d.process_queue();
    CHECK(rep.commits == 0);
    CHECK(r.d.commits() == commits);
    CHECK(r.log->writes().empty());
    // Full, with tasks waiting and agents running: still nothing to write.
    r.enqueue({"a", "b", "c"});
    REQUIRE(r.d.process_queue().started == 2);
    r.log->clear();
    commits = r.d.commits();
    rep = r.d.process_queue();
    CHECK(rep.commits == 0);
    CHECK(rep.started == 0);
    CHECK(r.log->writes().empty());
    CHECK(r.d.reap().live == 2);
    CHECK(r.log->writes().empty());
    CHECK(r.log->starting("commit durable").empty());
    CHECK(r.d.commits() == commits);
}

TEST_CASE("a workspace with lasting effects gets the claims committed before it is prepared; null_workspace does not") {
    SECTION("has_effects: one more commit, before any prepare") {
        rec_rig r;
        r.ws.s->effects = true;
        r.enqueue({"a", "b"});
        r.log->clear();
        auto rep = r.d.process_queue();
        INFO(r.log->dump());
        CHECK(rep.started == 2);
        CHECK(rep.commits == 3);
        const int first = r.at("commit durable");
        REQUIRE(first >= 0);
        CHECK(r.at("put_item a notified") < first);
        CHECK(r.at("put_item b notified") < first);
        CHECK(r.at("prepare a") > first);
        CHECK(r.at("spawn a") > first);
        const int second = r.log->find("commit durable", static_cast<std::size_t>(first) + 1);
        CHECK(second > r.at("put_session b"));
        REQUIRE(r.log->starting("release").size() == 2);
        CHECK(r.log->starting("release").front() > second);
    }
    SECTION("no effects: the claims go with the sessions, in the one durable commit") {
        rec_rig r;
        r.enqueue({"a", "b"});
        r.log->clear();
        auto rep = r.d.process_queue();
        CHECK(rep.commits == 2);
        CHECK(r.at("prepare a") < r.at("commit durable"));
        CHECK(r.at("prepare b") < r.at("commit durable"));
    }
    SECTION("null_workspace") {
        fake_spawner sp;
        test_dispatcher d(null_lock{}, sp, callback_notifier([](const event&) {}), memory_store{}, manual_clock{},
                          null_workspace{});
        d.enqueue({"a", {"agent"}});
        d.enqueue({"b", {"agent"}});
        CHECK(d.process_queue().commits == 2);
    }
}

TEST_CASE("what a pass writes is invisible to another store object until its commit, which comes before any release") {
    rec_rig r;
    r.enqueue({"a", "b", "c"});
    memory_store other = r.store;   // another object on the same state
    int spawns_seen = 0, releases_seen = 0;
    r.log->watch = [&](const std::string& line) {
        std::error_code ec;
        if (line.rfind("spawn ", 0) == 0) {
            ++spawns_seen;
            for (auto id : {"a", "b", "c"}) {
                auto it = other.get_item(id, ec);
                CHECK(it->state == task_state::pending);
                CHECK(it->attempts == 0);
            }
            CHECK(other.list_sessions(ec).empty());
            CHECK(other.events_after(3, 10, ec).empty());   // only the three task_queued
        } else if (line.rfind("release ", 0) == 0) {
            ++releases_seen;
            for (auto id : {"a", "b", "c"}) {
                auto it = other.get_item(id, ec);
                CHECK(it->state == task_state::notified);
                CHECK(it->attempts == 1);
            }
            CHECK(other.list_sessions(ec).size() == 3);
        }
    };
    CHECK(r.d.process_queue().started == 3);
    r.log->watch = nullptr;
    CHECK(spawns_seen == 3);
    CHECK(releases_seen == 3);
    std::error_code ec;
    CHECK(other.get_item("b", ec)->state == task_state::running);
}

TEST_CASE("a pass whose commit fails abandons every held agent: none runs and nothing of the pass is kept") {
    rec_rig r;
    r.enqueue({"a", "b", "c"});
    r.log->fail_commits = 1;
    std::error_code ec;
    auto rep = r.d.process_queue(ec);
    INFO(r.log->dump());
    CHECK(ec == std::error_code(EIO, std::system_category()));
    CHECK(r.d.last_error_detail().find("commit") != std::string::npos);
    CHECK(rep.started == 0);
    CHECK(r.spawner.abandoned() == 3);
    CHECK(r.spawner.running() == 0);
    CHECK(r.spawner.peak() == 0);
    CHECK(r.log->starting("release").empty());
    CHECK(r.log->starting("abandon").size() == 3);
    for (auto id : {"a", "b", "c"}) {
        INFO(id);
        CHECK(r.item(id).state == task_state::pending);
        CHECK(r.item(id).attempts == 0);
    }
    CHECK(r.store.list_sessions(ec).empty());
    CHECK(r.events->size() == 3);   // the three task_queued; nothing of the pass was told
    CHECK(r.store.events_after(0, 100, ec).size() == 3);
    // The next pass starts them, each with its first attempt.
    rep = r.d.process_queue();
    CHECK(rep.started == 3);
    for (auto id : {"a", "b", "c"}) CHECK(r.item(id).attempts == 1);
    CHECK(r.spawner.running() == 3);
}

TEST_CASE("an agent that never ran gives its task back with start_interrupted, its attempt counted, and ends it on the last") {
    rig r(dispatcher_options{3, 3, 1s});
    r.d.enqueue(r.spec("t1"));
    for (int attempt = 1; attempt <= 3; ++attempt) {
        INFO("attempt " << attempt);
        REQUIRE(r.d.process_queue().started == 1);
        const int pid = r.spawner.pid_of("t1");
        REQUIRE(pid);
        r.spawner.never_ran(pid);   // its starter died after the commit, before the release
        auto rep = r.d.reap();
        CHECK(rep.interrupted == 1);
        CHECK(rep.finished == 0);
        CHECK(rep.live == 0);
        auto it = r.item("t1");
        CHECK(it.attempts == attempt);
        CHECK(it.last_error.rfind("start_interrupted", 0) == 0);
        CHECK(r.sessions() == 0);
        CHECK(it.state == (attempt < 3 ? task_state::pending : task_state::error));
    }
    auto it = r.item("t1");
    CHECK(it.finished_at);
    CHECK_FALSE(it.exit_code);
    REQUIRE(r.last_of("t1"));
    CHECK(r.last_of("t1")->type == event_type::task_error);
    CHECK(r.last_of("t1")->reason == event_reason::start_interrupted);
    for (auto& e : *r.events) CHECK(e.reason != event_reason::exit_unknown);
    CHECK(r.d.process_queue().taken == 0);
    CHECK(r.spawner.requests().size() == 3);
}

TEST_CASE("an agent that never ran after its running mark was lost (the task still claimed) is given back too") {
    rec_rig r;
    r.enqueue({"a"});
    r.log->pass_commits = 1;   // the durable commit works, the visible one after the release fails
    r.log->fail_commits = 1;
    std::error_code ec;
    r.d.process_queue(ec);
    CHECK(ec);
    REQUIRE(r.item("a").state == task_state::notified);   // its session is committed, its mark is not
    REQUIRE(r.store.list_sessions(ec).size() == 1);
    const int pid = r.spawner.pid_of("a");   // released: its program runs, as far as the fake knows
    REQUIRE(pid);
    r.spawner.never_ran(pid);
    auto rep = r.d.reap();
    CHECK(rep.interrupted == 1);
    CHECK(rep.adopted == 0);
    auto it = r.item("a");
    CHECK(it.state == task_state::pending);
    CHECK(it.attempts == 1);
    CHECK(it.last_error.rfind("start_interrupted", 0) == 0);
    CHECK_FALSE(it.owner);
    CHECK(r.store.list_sessions(ec).empty());
    CHECK(r.d.process_queue().started == 1);
    CHECK(r.item("a").attempts == 2);
}

TEST_CASE("finished_at is when the agent ended, as the spawner says, not when its end was reaped") {
    rig r;
    r.d.start(r.spec("a"));
    r.d.start(r.spec("b"));
    r.clock.advance(5s);
    const timestamp ended = r.clock.now();
    r.spawner.exit(r.item("a").process.pid, 0, ended);
    r.spawner.exit(r.item("b").process.pid, 1);   // the spawner does not know when
    r.clock.advance(7s);
    const timestamp reaped = r.clock.now();
    CHECK(r.d.reap().finished == 2);
    CHECK(r.item("a").finished_at == ended);
    CHECK(r.item("a").updated_at == reaped);
    CHECK(r.item("b").finished_at == reaped);
    CHECK(r.item("a").state == task_state::completed);
}

TEST_CASE("the limits are the store's: a dispatcher with other options follows them, and set_limits reaches every dispatcher") {
    fake_spawner sp;
    memory_store st;
    manual_clock clock;
    auto spec = [](std::string id) { return task_spec{std::move(id), {"agent"}, role::dev, {}, {}, {}, {}}; };
    test_dispatcher d1(null_lock{}, sp, callback_notifier([](const event&) {}), st, clock, null_workspace{},
                       dispatcher_options{2, 3, 1s});
    d1.reap();   // the first critical section on the store gives it d1's options
    test_dispatcher d2(null_lock{}, sp, callback_notifier([](const event&) {}), st, clock, null_workspace{},
                       dispatcher_options{5, 7, 2s});
    CHECK(d2.limits() == limits{2, 3, 1s});
    CHECK(d2.enqueue(spec("q")).max_attempts == 3);   // the store's default attempts, not d2's 7
    clock.advance(1ms);
    CHECK(d2.start(spec("a")).status == start_status::started);
    CHECK(d2.start(spec("b")).status == start_status::started);
    CHECK(d2.start(spec("c")).status == start_status::no_slot);
    std::error_code ec;
    CHECK(st.get_limits(ec) == limits{2, 3, 1s});

    d1.set_limits({4, 3, 1s});
    CHECK(d2.current_limits().cap == 2);   // until its next critical section
    for (auto id : {"p1", "p2", "p3"}) {
        d1.enqueue(spec(id));
        clock.advance(1ms);
    }
    auto rep = d2.process_queue();
    CHECK(d2.current_limits().cap == 4);
    CHECK(rep.started == 2);   // q and p1: 4 live
    CHECK(sp.running() == 4);

    SECTION("lowering the cap below the live count starts nothing and kills nothing until agents end") {
        d2.set_limits({1, 3, 1s});
        rep = d1.process_queue();
        CHECK(rep.started == 0);
        CHECK(rep.live_before == 4);
        CHECK(sp.running() == 4);
        for (int pid = 1000; pid < 1004; ++pid) CHECK(sp.get(pid).signals.empty());
        int ended = 0;
        for (const char* id : {"a", "b", "q"}) {
            sp.exit(sp.pid_of(id), 0);
            ++ended;
            rep = d1.process_queue();
            CHECK(rep.finished == 1);
            CHECK(rep.started == 0);   // 4 - ended live, still not below 1
        }
        sp.exit(sp.pid_of("p1"), 0);
        rep = d2.process_queue();
        CHECK(rep.started == 1);
        CHECK(sp.running() == 1);
        CHECK(sp.peak() == 4);
    }
}

TEST_CASE("expect_limits with a cap that differs from the store's fails every operation with limits_mismatch, changing nothing") {
    rec_rig r(dispatcher_options{3, 3, 1s});
    r.enqueue({"p"});
    r.d.start(task_spec{"run", {"agent"}});
    const int pid = r.spawner.pid_of("run");
    r.spawner.exit(pid, 0);   // an end a reap would record: it must stay unrecorded
    limit_expectations e;
    e.cap = 2;
    e.cap_name = "MAX_CONCURRENT_AGENTS";
    r.d.expect_limits(e);
    r.log->clear();
    const auto events_before = r.events->size();
    std::error_code ec;
    auto mismatch = [&](const char* what) {
        INFO(what);
        CHECK(ec == errc::limits_mismatch);
        CHECK(r.d.last_error_detail().find("MAX_CONCURRENT_AGENTS=2") != std::string::npos);
        CHECK(r.d.last_error_detail().find("3") != std::string::npos);
        ec.clear();
    };
    r.d.enqueue(task_spec{"new", {"agent"}}, ec);
    mismatch("enqueue");
    r.d.start(task_spec{"new2", {"agent"}}, ec);
    mismatch("start");
    r.d.start_item("p", ec);
    mismatch("start_item");
    r.d.process_queue(ec);
    mismatch("process_queue");
    r.d.reap(ec);
    mismatch("reap");
    r.d.cancel("p", ec);
    mismatch("cancel");
    r.d.limits(ec);
    mismatch("limits");
    CHECK_THROWS_AS(r.d.process_queue(), kugetsu::error);
    CHECK(r.log->writes().empty());
    CHECK(r.log->starting("spawn").empty());
    CHECK(r.log->starting("commit durable").empty());
    CHECK(r.events->size() == events_before);
    CHECK(r.item("p").state == task_state::pending);
    CHECK(r.item("run").state == task_state::running);
    CHECK_FALSE(r.store.get_item("new", ec));
    // set_limits is not checked: once the store agrees, the operations work again.
    r.d.set_limits({2, 3, 1s});
    CHECK(r.d.reap().finished == 1);
    CHECK(r.d.process_queue().started == 1);
}

TEST_CASE("events are numbered 1, 2, 3... in commit order and each reaches its dispatcher's notifier once, after the commit") {
    memory_store other;
    auto seen = std::make_shared<std::vector<event>>();
    int committed_when_told = 0;
    fake_spawner sp;
    memory_store st;
    other = st;
    test_dispatcher d(null_lock{}, sp, callback_notifier([&](const event& e) {
                          seen->push_back(e);
                          std::error_code ec;
                          auto in_store = other.events_after(e.seq - 1, 1, ec);
                          if (!in_store.empty() && in_store[0].seq == e.seq && in_store[0].task_id == e.task_id) ++committed_when_told;
                      }),
                      st, manual_clock{}, null_workspace{}, dispatcher_options{2, 2, 1s});
    for (auto id : {"a", "b", "c"}) d.enqueue({id, {"agent"}});
    d.process_queue();
    sp.exit(sp.pid_of("a"), 0);
    d.process_queue();
    d.cancel("b");
    d.reap();
    sp.fail_next_releases(2);
    d.enqueue({"x", {"agent"}});
    d.process_queue();
    std::error_code ec;
    auto stored = other.events_after(0, 1000, ec);
    REQUIRE(seen->size() >= 12);
    CHECK(committed_when_told == static_cast<int>(seen->size()));
    std::vector<std::uint64_t> want(seen->size());
    for (std::size_t i = 0; i < want.size(); ++i) want[i] = i + 1;
    std::vector<std::uint64_t> got;
    for (auto& e : *seen) got.push_back(e.seq);
    CHECK(got == want);
    REQUIRE(stored.size() == seen->size());
    for (std::size_t i = 0; i < stored.size(); ++i) {
        CHECK(stored[i].seq == (*seen)[i].seq);
        CHECK(stored[i].type == (*seen)[i].type);
        CHECK(stored[i].task_id == (*seen)[i].task_id);
        CHECK(stored[i].reason == (*seen)[i].reason);
    }
}

namespace {

/// A model of the durable_notifier concept: a list of kept events (shared, like the events
/// file every process appends to); relay() takes the source's events after the highest number
/// it holds. `drop` makes one object keep nothing (a process killed between its commit and
/// its delivery).
struct kept_events {
    std::vector<event> kept;
    int own_notifications = 0;   // notify() calls with a numbered event (ignored)
};
class model_durable_notifier {
public:
    model_durable_notifier(std::shared_ptr<kept_events> k, bool drop = false) : k_(std::move(k)), drop_(drop) {}
    void notify(const event& e) noexcept {
        if (e.seq) ++k_->own_notifications;
        else k_->kept.push_back(e);
    }
    std::uint64_t relay(const event_source& source, std::error_code& ec) noexcept {
        ec.clear();
        if (drop_) return last();
        for (;;) {
            auto batch = source(last(), ec);
            if (ec || batch.empty()) break;
            for (auto& e : batch) k_->kept.push_back(e);
        }
        return last();
    }

private:
    std::uint64_t last() const {
        for (auto i = k_->kept.rbegin(); i != k_->kept.rend(); ++i)
            if (i->seq) return i->seq;
        return 0;
    }
    std::shared_ptr<kept_events> k_;
    bool drop_;
};
static_assert(kugetsu::durable_notifier<model_durable_notifier>);

using durable_dispatcher = basic_dispatcher<null_lock, fake_spawner, model_durable_notifier, memory_store, manual_clock,
                                            null_workspace>;

std::vector<std::uint64_t> seqs_of(const std::vector<event>& v) {
    std::vector<std::uint64_t> out;
    for (auto& e : v) out.push_back(e.seq);
    return out;
}

} // namespace

TEST_CASE("a durable notifier receives every dispatcher's events once, in order, and those of one that died before delivering") {
    fake_spawner sp;
    memory_store st;
    manual_clock clock;
    auto kept = std::make_shared<kept_events>();
    auto make = [&](bool drop) {
        return durable_dispatcher(null_lock{}, sp, model_durable_notifier(kept, drop), st, clock, null_workspace{},
                                  dispatcher_options{3, 3, 1s});
    };
    auto a = make(false);
    auto b = make(false);
    auto committed = [&] {
        std::error_code ec;
        return st.events_after(0, 1000, ec);
    };
    auto in_order_once = [&] {
        std::vector<std::uint64_t> want(committed().size());
        for (std::size_t i = 0; i < want.size(); ++i) want[i] = i + 1;
        CHECK(seqs_of(kept->kept) == want);
    };
    a.enqueue({"a1", {"agent"}});
    in_order_once();
    b.enqueue({"b1", {"agent"}});
    in_order_once();
    CHECK(kept->kept.size() == 2);   // b's relay did not give a's event again
    b.process_queue();               // starts a1 and b1
    in_order_once();
    sp.exit(sp.pid_of("a1"), 0);
    a.reap();
    in_order_once();
    CHECK(kept->kept.size() == committed().size());
    const auto before = kept->kept.size();
    {
        auto dying = make(true);   // commits, then dies before its delivery
        dying.enqueue({"d1", {"agent"}});
        dying.start({"d2", {"agent"}});
        CHECK(kept->kept.size() == before);
    }
    CHECK(committed().size() > before);
    b.reap();   // nothing of its own to say: it relays what the dead one committed
    in_order_once();
    std::vector<std::string> late;
    for (std::size_t i = before; i < kept->kept.size(); ++i)
        late.push_back(std::string(to_string(kept->kept[i].type)) + " " + kept->kept[i].task_id);
    CHECK(late == std::vector<std::string>{"task_queued d1", "task_started d2"});
    CHECK(kept->own_notifications > 0);   // notify() of numbered events kept nothing twice
    a.reap();
    in_order_once();
}

TEST_CASE("over sqlite_store, a corrupt task row is quarantined with a task_error event and every other task runs") {
    kugetsu::test::temp_dir home;
    fake_spawner sp;
    auto events = std::make_shared<std::vector<event>>();
    basic_dispatcher d(null_lock{}, sp, callback_notifier([events](const event& e) { events->push_back(e); }),
                       sqlite_store(home / "state.db"), manual_clock{}, null_workspace{}, dispatcher_options{2, 3, 1s});
    for (auto id : {"a", "b", "c", "d"}) d.enqueue(task_spec{id, {"agent"}, role::dev, {}, {}, {}, {}});
    auto corrupt = [&](const char* id) {
        sqlite3* db = nullptr;
        REQUIRE(sqlite3_open_v2((home / "state.db").c_str(), &db, SQLITE_OPEN_READWRITE, nullptr) == SQLITE_OK);
        const std::string sql = "UPDATE tasks SET record = '{\"version\": 1' WHERE id = '" + std::string(id) + "'";
        CHECK(sqlite3_exec(db, sql.c_str(), nullptr, nullptr, nullptr) == SQLITE_OK);
        CHECK(sqlite3_changes(db) == 1);
        sqlite3_close_v2(db);
    };
    corrupt("b");
    d.process_queue();
    CHECK(sp.requests().size() == 2);   // a and c; b was moved aside
    // A running agent whose task row goes bad keeps its slot: its session still counts.
    corrupt("a");
    d.process_queue();
    CHECK(sp.requests().size() == 2);
    std::error_code ec;
    CHECK(d.reap(ec).live == 2);
    sp.exit(sp.pid_of("a"), 0);
    sp.exit(sp.pid_of("c"), 0);
    d.process_queue();
    REQUIRE(sp.requests().size() == 3);
    CHECK(sp.requests()[2].task_id == "d");
    sp.exit(sp.pid_of("d"), 0);
    d.reap();
    auto& q = d.store().quarantined();
    REQUIRE(q.size() == 2);
    CHECK(q[0].task_id == "b");
    CHECK(q[1].task_id == "a");
    std::vector<std::uint64_t> told;
    for (auto& e : *events)
        if (e.type == event_type::task_error && e.reason == event_reason::quarantined) told.push_back(e.seq);
    CHECK(told == std::vector<std::uint64_t>{q[0].event_seq, q[1].event_seq});
    CHECK(d.store().get_item("c", ec)->state == task_state::completed);
    CHECK(d.store().get_item("d", ec)->state == task_state::completed);
    CHECK_FALSE(d.store().get_item("a", ec));
    CHECK(d.store().list_sessions(ec).empty());
    CHECK(d.store().quarantine_rows(ec).size() == 2);
}

// ---- restart, retry, remove (issue 13) -----------------------------------------------------

TEST_CASE("restart runs a finished task again under its id: fresh attempts, behind the pending tasks, its last run kept") {
    rig r(dispatcher_options{1, 3, 1s});
    r.d.start(r.spec("done"));
    const int first_pid = r.item("done").process.pid;
    r.clock.advance(1s);
    r.spawner.exit(first_pid, 0);
    r.d.reap();
    REQUIRE(r.item("done").state == task_state::completed);
    r.clock.advance(1s);
    r.d.enqueue(r.spec("waiting"));
    r.clock.advance(1s);
    const auto before = r.item("done");
    const auto it = r.d.restart("done");
    CHECK(it.state == task_state::pending);
    CHECK(it.attempts == 0);
    CHECK(it.restarts == 1);
    CHECK_FALSE(it.exit_code);
    CHECK_FALSE(it.started_at);
    CHECK_FALSE(it.finished_at);
    CHECK_FALSE(it.process);
    REQUIRE(it.runs.size() == 1);
    CHECK(it.runs[0].state == task_state::completed);
    CHECK(it.runs[0].attempts == 1);
    CHECK(it.runs[0].exit_code == 0);
    CHECK(it.runs[0].process.pid == first_pid);
    CHECK(it.runs[0].started_at == before.started_at);
    CHECK(it.runs[0].finished_at == before.finished_at);
    CHECK(it.runs[0].enqueued_at == before.enqueued_at);
    CHECK(it.enqueued_at > r.item("waiting").enqueued_at);
    CHECK(r.item("done") == it);
    CHECK(r.last_of("done")->type == event_type::task_queued);
    CHECK(r.last_of("done")->reason == event_reason::restarted);
    // cap 1: the task that was waiting goes first, then the restarted one.
    CHECK(r.d.process_queue().taken == 1);
    CHECK(r.item("waiting").state == task_state::running);
    r.spawner.exit(r.item("waiting").process.pid, 0);
    CHECK(r.d.process_queue().taken == 1);
    CHECK(r.item("done").state == task_state::running);
    CHECK(r.item("done").process.pid != first_pid);
    r.spawner.exit(r.item("done").process.pid, 3);
    r.d.reap();
    CHECK(r.item("done").state == task_state::error);
    CHECK(r.item("done").exit_code == 3);
    CHECK(r.item("done").runs.size() == 1);   // the run that ended is the item itself
    CHECK(r.types_of("done") == std::vector<std::string>{"task_started", "task_completed", "task_queued", "task_dequeued",
                                                         "task_started", "task_error"});
}

TEST_CASE("restart takes error and cancelled tasks too, and refuses the others, all or none") {
    rig r;
    r.d.enqueue(r.spec("cancelled"));
    r.d.cancel("cancelled");
    r.d.start(r.spec("failed"));
    r.spawner.exit(r.item("failed").process.pid, 1);
    r.d.start(r.spec("running"));
    r.d.enqueue(r.spec("pending"));
    r.d.reap();
    const auto events_before = r.events->size();
    std::error_code ec;
    for (const char* busy : {"running", "pending"}) {
        INFO(busy);
        auto got = r.d.restart(std::vector<std::string>{"cancelled", busy, "failed"}, ec);
        CHECK(ec == errc::task_active);
        CHECK(got.empty());
        CHECK_THAT(r.d.last_error_detail(), Catch::Contains(busy));
        CHECK(r.item("cancelled").state == task_state::cancelled);
        CHECK(r.item("failed").state == task_state::error);
        CHECK(r.item("cancelled").restarts == 0);
    }
    r.d.restart(std::vector<std::string>{"cancelled", "nosuch"}, ec);
    CHECK(ec == errc::unknown_task);
    CHECK_THAT(r.d.last_error_detail(), Catch::Contains("nosuch"));
    CHECK(r.item("cancelled").state == task_state::cancelled);
    CHECK(r.events->size() == events_before);
    // Given twice, restarted once; in the order given.
    auto got = r.d.restart(std::vector<std::string>{"failed", "cancelled", "failed"}, ec);
    REQUIRE_FALSE(ec);
    REQUIRE(got.size() == 2);
    CHECK(got[0].id == "failed");
    CHECK(got[1].id == "cancelled");
    CHECK(got[0].enqueued_at < got[1].enqueued_at);
    CHECK(r.item("failed").state == task_state::pending);
    CHECK(r.item("failed").runs.at(0).exit_code == 1);
    CHECK(r.item("cancelled").runs.at(0).state == task_state::cancelled);
    CHECK(r.events->size() == events_before + 2);
}

TEST_CASE("restart_all(error) restarts every failed task and nothing else; a state that is not final is refused") {
    rig r(dispatcher_options{4, 3, 1s});
    for (auto id : {"e1", "ok", "e2"}) r.d.start(r.spec(id));
    r.spawner.exit(r.item("e1").process.pid, 1);
    r.spawner.exit(r.item("ok").process.pid, 0);
    r.spawner.exit(r.item("e2").process.pid, 9);
    r.d.enqueue(r.spec("p"));
    auto got = r.d.restart_all(task_state::error);
    REQUIRE(got.size() == 2);
    CHECK(r.item("e1").state == task_state::pending);
    CHECK(r.item("e2").state == task_state::pending);
    CHECK(r.item("ok").state == task_state::completed);
    CHECK(r.item("p").restarts == 0);
    CHECK(r.d.restart_all(task_state::error).empty());
    std::error_code ec;
    r.d.restart_all(task_state::pending, ec);
    CHECK(ec == errc::invalid_transition);
}

TEST_CASE("a task restarted past max_kept_runs keeps the last runs and counts them all") {
    rig r;
    r.d.enqueue(r.spec("t"));
    const int n = static_cast<int>(max_kept_runs) + 5;
    for (int i = 0; i < n; ++i) {
        r.clock.advance(1s);
        r.d.cancel("t");
        r.d.restart("t");
    }
    const auto it = r.item("t");
    CHECK(it.restarts == n);
    REQUIRE(it.runs.size() == max_kept_runs);
    CHECK(it.runs.front().enqueued_at > r.clock.now() - std::chrono::seconds(n));   // the oldest dropped
    CHECK(it.runs.back().state == task_state::cancelled);
}

TEST_CASE("remove deletes pending and finished tasks with task_removed, refuses running ones, all or none; the id is free again") {
    rig r;
    r.d.enqueue(r.spec("p"));
    r.d.start(r.spec("done"));
    r.spawner.exit(r.item("done").process.pid, 0);
    r.d.start(r.spec("run"));
    std::error_code ec;
    auto got = r.d.remove(std::vector<std::string>{"p", "run"}, ec);
    CHECK(ec == errc::task_active);
    CHECK_THAT(r.d.last_error_detail(), Catch::Contains("\"run\" is running"));
    CHECK(got.empty());
    CHECK(r.item("p").state == task_state::pending);
    r.d.remove(std::vector<std::string>{"p", "ghost"}, ec);
    CHECK(ec == errc::unknown_task);
    CHECK(r.item("p").state == task_state::pending);
    got = r.d.remove(std::vector<std::string>{"p", "done"}, ec);
    REQUIRE_FALSE(ec);
    REQUIRE(got.size() == 2);
    CHECK(got[1].state == task_state::completed);   // as it was
    CHECK_FALSE(r.store.get_item("p", ec));
    CHECK_FALSE(r.store.get_item("done", ec));
    CHECK(r.last_of("p")->type == event_type::task_removed);
    CHECK(r.last_of("p")->reason == event_reason::pending);
    CHECK(r.last_of("done")->reason == event_reason::completed);
    CHECK(r.store.list_items(ec).size() == 1);
    CHECK(r.d.process_queue().taken == 0);   // the removed pending task never runs
    r.d.enqueue(r.spec("p"));                // a new task, with nothing of the old one
    CHECK(r.item("p").restarts == 0);
    CHECK(r.d.process_queue().taken == 1);
}

TEST_CASE("memory_store: a task removed in an open unit is gone for that unit only, and a rollback keeps it") {
    memory_store a;
    memory_store b = a;   // copies share the state, not the unit
    std::error_code ec;
    queue_item it;
    it.id = "x";
    it.argv = {"true"};
    a.create_item(it, ec);
    a.begin(ec);
    a.remove_item("x", ec);
    CHECK_FALSE(a.get_item("x", ec));
    CHECK(a.items_in_state(task_state::pending, 10, ec).empty());
    CHECK(b.get_item("x", ec));
    a.rollback();
    CHECK(a.get_item("x", ec));
    a.begin(ec);
    a.remove_item("x", ec);
    a.create_item(it, ec);   // the id is free in the unit
    CHECK_FALSE(ec);
    a.remove_item("x", ec);
    a.commit(durability::durable, ec);
    CHECK_FALSE(b.get_item("x", ec));
    CHECK(b.items_in_state(task_state::pending, 10, ec).empty());
    CHECK(b.list_items(ec).empty());
}

TEST_CASE("over sqlite_store, restart keeps its runs in the record and remove deletes the row") {
    kugetsu::test::temp_dir home;
    fake_spawner sp;
    basic_dispatcher d(null_lock{}, sp, null_notifier{}, sqlite_store(home / "state.db"), manual_clock{},
                       null_workspace{}, dispatcher_options{2, 3, 1s});
    d.start(task_spec{"a", {"agent"}, role::dev, {}, {}, {}, {}});
    std::error_code ec;
    const int pid = d.store().get_item("a", ec)->process.pid;
    sp.exit(pid, 4);
    d.restart("a");
    {
        sqlite_store other(home / "state.db");
        auto it = other.get_item("a", ec);
        REQUIRE_FALSE(ec);
        REQUIRE(it);
        CHECK(it->state == task_state::pending);
        CHECK(it->restarts == 1);
        REQUIRE(it->runs.size() == 1);
        CHECK(it->runs[0].exit_code == 4);
        CHECK(it->runs[0].process.pid == pid);
        CHECK(it->runs[0].state == task_state::error);
    }
    d.remove("a");
    sqlite_store other(home / "state.db");
    CHECK_FALSE(other.get_item("a", ec));
    CHECK_FALSE(ec);
    const auto evs = other.events_after(0, 100, ec);
    REQUIRE_FALSE(evs.empty());
    CHECK(evs.back().type == event_type::task_removed);
    CHECK(evs.back().reason == event_reason::pending);
}

// ---- scheduling: priorities, groups, dependencies, pause ---------------------------------------

namespace {
task_spec sched_spec(std::string id, int priority = 0, std::string group = {}, std::vector<std::string> after = {}) {
    task_spec s{std::move(id), {"agent"}, role::dev, {}, {}, {}};
    s.priority = priority;
    s.group = std::move(group);
    s.after = std::move(after);
    return s;
}
std::vector<std::string> running_ids(rig& r) {
    std::error_code ec;
    std::vector<std::string> v;
    for (auto& it : r.store.items_in_state(task_state::running, SIZE_MAX, ec)) v.push_back(it.id);
    std::sort(v.begin(), v.end());
    return v;
}
} // namespace

TEST_CASE("a pass takes higher priorities first, and equal priorities in enqueue order") {
    rig r(dispatcher_options{2, 3, 1s});
    r.d.enqueue(sched_spec("low", -5));
    r.clock.advance(1ms);
    r.d.enqueue(sched_spec("mid1", 0));
    r.clock.advance(1ms);
    r.d.enqueue(sched_spec("high", 7));
    r.clock.advance(1ms);
    r.d.enqueue(sched_spec("mid2", 0));
    CHECK(r.d.process_queue().started == 2);
    CHECK(running_ids(r) == std::vector<std::string>{"high", "mid1"});
    r.spawner.exit(r.spawner.pid_of("high"), 0);
    r.d.process_queue();
    CHECK(running_ids(r) == std::vector<std::string>{"mid1", "mid2"});
    CHECK(r.item("low").state == task_state::pending);
}

TEST_CASE("a group's cap holds within HOME's cap, and other groups take the slots it leaves") {
    rig r(dispatcher_options{3, 3, 1s});
    r.d.set_group_cap("gpu", 1);
    for (auto id : {"g1", "g2", "g3"}) r.d.enqueue(sched_spec(id, 10, "gpu"));
    r.d.enqueue(sched_spec("c1", 0, "cpu"));
    r.d.enqueue(sched_spec("n1"));
    r.d.enqueue(sched_spec("n2"));
    const auto rep = r.d.process_queue();
    CHECK(rep.started == 3);
    CHECK(running_ids(r) == std::vector<std::string>{"c1", "g1", "n1"});
    CHECK(r.d.reap().group_live.at("gpu") == 1);
    // start() obeys the group's cap too, and says no_slot without recording anything
    r.spawner.exit(r.spawner.pid_of("n1"), 0);
    CHECK(r.d.start(sched_spec("g9", 0, "gpu")).status == start_status::no_slot);
    std::error_code ec;
    CHECK_FALSE(r.store.get_item("g9", ec));
    // a cap of none lifts it; an out-of-range cap or a bad name changes nothing
    r.d.set_group_cap("gpu", 0, ec);
    CHECK(ec == errc::invalid_limit);
    r.d.set_group_cap("-x", 1, ec);
    CHECK(ec == errc::invalid_group);
    CHECK(r.d.schedule().group("gpu").cap == 1);
    r.d.set_group_cap("gpu", std::nullopt);
    CHECK(r.d.schedule().groups.empty());
    r.d.process_queue();
    CHECK(running_ids(r) == std::vector<std::string>{"c1", "g1", "g2"});
}

TEST_CASE("pause stops new starts, queue-wide or for a group, and leaves running agents alone") {
    rig r(dispatcher_options{3, 3, 1s});
    r.d.enqueue(sched_spec("a1", 0, "a"));
    r.d.process_queue();
    r.d.pause();
    r.d.enqueue(sched_spec("a2", 0, "a"));
    r.d.enqueue(sched_spec("b1", 0, "b"));
    CHECK(r.d.process_queue().taken == 0);
    CHECK(r.d.start(sched_spec("x")).status == start_status::paused);
    CHECK(running_ids(r) == std::vector<std::string>{"a1"});   // still running
    r.d.resume();
    r.d.pause("a");
    CHECK(r.d.start(sched_spec("a3", 0, "a")).status == start_status::paused);
    r.d.process_queue();
    CHECK(running_ids(r) == std::vector<std::string>{"a1", "b1"});
    r.d.resume("a");
    CHECK(r.d.schedule() == queue_schedule{});
    r.d.process_queue();
    CHECK(running_ids(r) == std::vector<std::string>{"a1", "a2", "b1"});
}

TEST_CASE("dependencies: a task waits for its dependencies, runs once all completed, fails when one fails") {
    rig r(dispatcher_options{3, 3, 1s});
    r.d.enqueue(sched_spec("build"));
    r.d.enqueue(sched_spec("lint"));
    CHECK(r.d.enqueue(sched_spec("test", 0, {}, {"build", "lint"})).state == task_state::waiting);
    CHECK(r.d.enqueue(sched_spec("deploy", 9, {}, {"test"})).state == task_state::waiting);
    r.d.process_queue();
    CHECK(running_ids(r) == std::vector<std::string>{"build", "lint"});
    r.spawner.exit(r.spawner.pid_of("build"), 0);
    r.d.process_queue();
    CHECK(r.item("test").state == task_state::waiting);
    r.spawner.exit(r.spawner.pid_of("lint"), 0);
    r.d.process_queue();
    CHECK(running_ids(r) == std::vector<std::string>{"test"});
    CHECK(r.item("deploy").state == task_state::waiting);
    r.spawner.exit(r.spawner.pid_of("test"), 3);
    r.d.reap();
    const auto deploy = r.item("deploy");
    CHECK(deploy.state == task_state::error);
    CHECK(deploy.attempts == 0);
    CHECK(deploy.last_error.find("\"test\" (error)") != std::string::npos);
    REQUIRE(r.last_of("deploy"));
    CHECK(r.last_of("deploy")->reason == event_reason::dependency_failed);
    // start_item refuses a waiting task; a task enqueued after a completed one is pending at once
    r.d.enqueue(sched_spec("w", 0, {}, {"deploy"}));
    CHECK(r.item("w").state == task_state::error);   // its dependency already failed
    CHECK(r.d.enqueue(sched_spec("ok", 0, {}, {"build"})).state == task_state::pending);
}

TEST_CASE("dependencies: unknown tasks and cycles are refused at enqueue, and nothing changes") {
    rig r;
    std::error_code ec;
    r.d.enqueue(sched_spec("a", 0, {}, {"nope"}), ec);
    CHECK(ec == errc::unknown_task);
    CHECK(r.d.last_error_detail().find("\"nope\"") != std::string::npos);
    r.d.enqueue(sched_spec("self", 0, {}, {"self"}), ec);
    CHECK(ec == errc::dependency_cycle);
    // a cycle through a removed id used again: b waits for a; a is removed and enqueued after b
    r.d.enqueue(sched_spec("x"));
    r.d.enqueue(sched_spec("a", 0, {}, {"x"}));
    r.d.enqueue(sched_spec("b", 0, {}, {"a"}));
    r.d.remove(std::vector<std::string>{"a"});
    r.d.enqueue(sched_spec("a", 0, {}, {"b"}), ec);
    CHECK(ec == errc::dependency_cycle);
    CHECK(r.d.last_error_detail().find("cycle") != std::string::npos);
    std::error_code lec;
    CHECK(r.store.list_items(lec).size() == 2);
    // the task whose dependency was removed fails at the next reap, naming it
    r.d.reap();
    CHECK(r.item("b").state == task_state::error);
    CHECK(r.item("b").last_error.find("no task \"a\"") != std::string::npos);
    // bad fields are refused by validate()
    CHECK(validate(sched_spec("p", max_priority + 1)) == errc::invalid_limit);
    CHECK(validate(sched_spec("p", 0, "-g")) == errc::invalid_group);
    CHECK(validate(sched_spec("p", 0, {}, {"a", "a"})) == errc::invalid_task_id);
}

TEST_CASE("restart of a failed chain runs it again in order, and cancel ends a waiting task") {
    rig r(dispatcher_options{3, 3, 1s});
    r.d.enqueue(sched_spec("one"));
    r.d.enqueue(sched_spec("two", 0, {}, {"one"}));
    r.d.enqueue(sched_spec("three", 0, {}, {"two"}));
    r.d.process_queue();
    r.spawner.exit(r.spawner.pid_of("one"), 1);
    r.d.reap();
    CHECK(r.item("two").state == task_state::error);
    CHECK(r.item("three").state == task_state::error);   // a chain fails at once
    r.d.restart(std::vector<std::string>{"three", "two", "one"});   // any order
    CHECK(r.item("one").state == task_state::pending);
    CHECK(r.item("two").state == task_state::waiting);
    CHECK(r.item("three").state == task_state::waiting);
    r.d.cancel("three");
    CHECK(r.item("three").state == task_state::cancelled);
}

TEST_CASE("retries: a non-zero exit or a timeout runs the task again after its backoff, its runs kept") {
    rig r(dispatcher_options{3, 3, 1s});
    auto spec = sched_spec("flaky");
    spec.retries = 2;
    spec.backoff = 2s;
    spec.timeout = 60s;
    r.d.enqueue(spec);
    r.d.process_queue();
    r.spawner.exit(r.spawner.pid_of("flaky"), 3);
    r.d.reap();
    auto it = r.item("flaky");
    CHECK(it.state == task_state::waiting);
    CHECK(it.retried == 1);
    CHECK(it.restarts == 1);
    REQUIRE(it.runs.size() == 1);
    CHECK(it.runs[0].exit_code == 3);
    CHECK(it.runs[0].state == task_state::error);
    CHECK(it.attempts == 0);
    CHECK(it.last_error == "run 1 exited with code 3; retry 1/2");
    REQUIRE(it.not_before);
    CHECK(r.d.next_wake().deadline == it.not_before);   // a daemon wakes for it
    REQUIRE(r.last_of("flaky"));
    CHECK(r.last_of("flaky")->type == event_type::task_queued);
    CHECK(r.last_of("flaky")->reason == event_reason::retry);
    CHECK(r.last_of("flaky")->exit_code == 3);
    // not before its backoff (2 s)
    r.clock.advance(1999ms);
    CHECK(r.d.process_queue().taken == 0);
    r.clock.advance(1ms);
    CHECK(r.d.process_queue().started == 1);
    // the second failure is a timeout: retried again, after 4 s
    r.clock.advance(61s);
    r.d.reap();   // SIGTERM: the fake agent ends of it
    r.d.reap();
    it = r.item("flaky");
    CHECK(it.state == task_state::waiting);
    CHECK(it.retried == 2);
    CHECK(*it.not_before - r.clock.now() == 4s);
    r.clock.advance(4s);
    r.d.process_queue();
    r.spawner.exit(r.spawner.pid_of("flaky"), 1);
    r.d.reap();
    it = r.item("flaky");
    CHECK(it.state == task_state::error);   // retries spent: it ends
    CHECK(it.runs.size() == 2);
    CHECK(r.last_of("flaky")->type == event_type::task_error);
    // restart gives a fresh budget of retries
    r.d.restart(std::vector<std::string>{"flaky"});
    CHECK(r.item("flaky").retried == 0);
    CHECK(r.item("flaky").restarts == 3);
    // bad values are refused
    auto bad = sched_spec("b");
    bad.retries = max_retries + 1;
    CHECK(validate(bad) == errc::invalid_limit);
    bad.retries = 1;
    bad.backoff = 1500us;
    CHECK(validate(bad) == errc::invalid_limit);
    CHECK(retry_delay(std::nullopt, 1) == 1s);
    CHECK(retry_delay(std::nullopt, 3) == 4s);
    CHECK(retry_delay(10min, 5) == 1h);
    CHECK(retry_delay(2h, 3) == 2h);   // a base above an hour is kept, not doubled
}

TEST_CASE("clean deletes finished tasks by state and age with their events, never one an unfinished task needs") {
    rig r(dispatcher_options{3, 3, 1s});
    r.d.enqueue(sched_spec("old-ok"));
    r.d.enqueue(sched_spec("old-bad"));
    r.d.enqueue(sched_spec("needed"));
    r.d.process_queue();
    r.spawner.exit(r.spawner.pid_of("old-ok"), 0);
    r.spawner.exit(r.spawner.pid_of("old-bad"), 1);
    r.d.reap();
    r.d.enqueue(sched_spec("waiter", 0, {}, {"needed", "old-ok"}));   // old-ok completed, needed runs
    r.clock.advance(2h);
    r.d.enqueue(sched_spec("new"));
    r.d.process_queue();
    r.spawner.exit(r.spawner.pid_of("new"), 0);
    r.d.reap();
    std::error_code ec;
    // A state that is not final is refused.
    r.d.clean({{task_state::running}, std::nullopt}, ec);
    CHECK(ec == errc::invalid_transition);
    // Older than an hour, errors only: old-bad.
    std::vector<std::string> seen_after_commit;
    auto removed = r.d.clean({{task_state::error}, r.clock.now() - 1h}, ec, [&](const std::vector<queue_item>& v) {
        for (auto& it : v) seen_after_commit.push_back(it.id);
    });
    REQUIRE_FALSE(ec);
    REQUIRE(removed.size() == 1);
    CHECK(removed[0].id == "old-bad");
    CHECK(seen_after_commit == std::vector<std::string>{"old-bad"});
    // Everything finished: "new" goes; old-ok stays, a waiting task runs after it.
    removed = r.d.clean({}, ec);
    REQUIRE(removed.size() == 1);
    CHECK(removed[0].id == "new");
    CHECK(r.item("old-ok").state == task_state::completed);
    // The outbox: no event of a task that is gone, but the last.
    std::uint64_t last = 0;
    for (auto& e : r.store.events_after(0, SIZE_MAX, ec)) last = e.seq;
    for (auto& e : r.store.events_after(0, SIZE_MAX, ec))
        if (e.seq != last) CHECK((e.task_id != "old-bad" && e.task_id != "new"));
    r.spawner.exit(r.spawner.pid_of("needed"), 0);
    r.d.process_queue();   // waiter runs now
    r.spawner.exit(r.spawner.pid_of("waiter"), 0);
    r.d.reap();
    CHECK(r.d.clean({}, ec).size() == 3);
    std::error_code lec;
    CHECK(r.store.list_items(lec).empty());
}

TEST_CASE("sqlite_store's last_error_detail() describes its last operation only") {
    kugetsu::test::temp_dir home;
    sqlite_store s(home / "state.db");
    std::error_code ec;
    queue_item it;
    it.id = "a";
    it.argv = {"agent"};
    s.begin(ec);
    s.create_item(it, ec);
    s.commit(durability::durable, ec);
    REQUIRE_FALSE(ec);
    s.begin(ec);
    s.create_item(it, ec);   // a duplicate: refused, with a detail naming it
    CHECK(ec);
    CHECK(s.last_error_detail().find("\"a\" already exists") != std::string::npos);
    s.rollback();
    CHECK(s.get_item("a", ec));
    CHECK_FALSE(ec);
    CHECK(s.last_error_detail().empty());
}
