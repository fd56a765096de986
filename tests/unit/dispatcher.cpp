// The dispatcher's semantics, on the in-memory store with the fake spawner and a manual clock.
#include <catch2/catch.hpp>

#include <kugetsu/kugetsu.hpp>

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
    CHECK(r.last_of("a")->reason == "exit_code");
}

TEST_CASE("an agent that vanishes without an exit code makes its task error, reason exit_unknown") {
    rig r;
    r.d.start(r.spec("a"));
    r.spawner.vanish(r.item("a").process.pid);
    r.d.reap();
    CHECK(r.item("a").state == task_state::error);
    CHECK_FALSE(r.item("a").exit_code);
    CHECK(r.last_of("a")->reason == "exit_unknown");
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
    CHECK(r.last_of("t1")->reason == "attempts_exhausted");
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
    CHECK(r.last_of("slow")->reason == "timeout");
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
    CHECK(r.last_of("p")->reason == "cancelled");
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
    CHECK(r.last_of("t1")->reason == "attempts_exhausted");
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
    CHECK(r.last_of("pm-1")->reason == "start_interrupted");
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
