// Conformance: one generic test per concept, run against every model of it that needs no
// real process (stores, notifiers, clocks, workspaces without git). Locks and spawners on
// real processes are in tests/process/conformance.cpp.
#include <catch2/catch.hpp>

#include <kugetsu/kugetsu.hpp>

#include <algorithm>
#include <filesystem>
#include <fstream>
#include <map>
#include <sstream>

#include <sys/stat.h>

#include "support/proc.hpp"

using namespace kugetsu;
using namespace std::chrono_literals;
using kugetsu::test::temp_dir;

namespace {

queue_item item(std::string id, task_state st, int enqueued_second) {
    queue_item it;
    it.id = std::move(id);
    it.argv = {"agent"};
    it.state = st;
    it.enqueued_at = it.updated_at = timestamp{std::chrono::seconds(1'800'000'000 + enqueued_second)};
    if (st == task_state::running) it.process = {100 + enqueued_second, 5, "boot"};
    return it;
}

struct memory_fixture {
    memory_store s;
    memory_store& store() { return s; }
};
struct file_fixture {
    temp_dir d;
    file_store s{d.path()};
    file_store& store() { return s; }
};

std::vector<std::string> ids(const std::vector<queue_item>& v) {
    std::vector<std::string> out;
    for (auto& it : v) out.push_back(it.id);
    return out;
}

} // namespace

TEMPLATE_TEST_CASE("store: create_item refuses an existing id and leaves the first record", "[store]",
                   memory_fixture, file_fixture) {
    TestType f;
    auto& s = f.store();
    std::error_code ec;
    s.create_item(item("a", task_state::pending, 1), ec);
    REQUIRE_FALSE(ec);
    auto other = item("a", task_state::running, 2);
    s.create_item(other, ec);
    CHECK(ec == errc::duplicate_task);
    auto got = s.get_item("a", ec);
    REQUIRE(got);
    CHECK(got->state == task_state::pending);
}

TEMPLATE_TEST_CASE("store: put_item replaces, get_item of an unknown id is empty without error", "[store]",
                   memory_fixture, file_fixture) {
    TestType f;
    auto& s = f.store();
    std::error_code ec;
    s.put_item(item("a", task_state::pending, 1), ec);
    auto r = item("a", task_state::running, 1);
    r.attempts = 1;
    r.last_error = "x";
    s.put_item(r, ec);
    REQUIRE_FALSE(ec);
    auto got = s.get_item("a", ec);
    REQUIRE(got);
    CHECK(got->state == task_state::running);
    CHECK(got->process == r.process);
    CHECK(got->last_error == "x");
    CHECK_FALSE(s.get_item("zzz", ec));
    CHECK_FALSE(ec);
}

TEMPLATE_TEST_CASE("store: items_in_state gives that state only, oldest first, at most the limit", "[store]",
                   memory_fixture, file_fixture) {
    TestType f;
    auto& s = f.store();
    std::error_code ec;
    s.put_item(item("late", task_state::pending, 9), ec);
    s.put_item(item("early", task_state::pending, 1), ec);
    s.put_item(item("run", task_state::running, 0), ec);
    s.put_item(item("b-tie", task_state::pending, 5), ec);
    s.put_item(item("a-tie", task_state::pending, 5), ec);
    CHECK(ids(s.items_in_state(task_state::pending, 10, ec)) ==
          std::vector<std::string>{"early", "a-tie", "b-tie", "late"});
    CHECK(ids(s.items_in_state(task_state::pending, 2, ec)) == std::vector<std::string>{"early", "a-tie"});
    CHECK(s.items_in_state(task_state::pending, 0, ec).empty());
    CHECK(ids(s.items_in_state(task_state::running, 10, ec)) == std::vector<std::string>{"run"});
    CHECK(s.items_in_state(task_state::error, 10, ec).empty());
    CHECK(ids(s.list_items(ec)) == std::vector<std::string>{"run", "early", "a-tie", "b-tie", "late"});
    CHECK_FALSE(ec);
}

TEMPLATE_TEST_CASE("store: sessions are put, listed and removed; removing a missing one is not an error",
                   "[store]", memory_fixture, file_fixture) {
    TestType f;
    auto& s = f.store();
    std::error_code ec;
    s.put_session({"t1", role::dev, "t1", {11, 1, "b"}, "/w", timestamp{}}, ec);
    s.put_session({"pm-agent", role::pm, "pm-1", {12, 1, "b"}, "", timestamp{}}, ec);
    REQUIRE_FALSE(ec);
    auto v = s.list_sessions(ec);
    REQUIRE(v.size() == 2);
    int pm = 0;
    for (auto& se : v) pm += se.role == role::pm;
    CHECK(pm == 1);
    s.remove_session("t1", ec);
    CHECK_FALSE(ec);
    s.remove_session("t1", ec);
    CHECK_FALSE(ec);
    v = s.list_sessions(ec);
    REQUIRE(v.size() == 1);
    CHECK(v[0].id == "pm-agent");
}

TEST_CASE("file_store keeps the PM's session as sessions/pm-agent.json, in 0700 directories and 0600 files") {
    file_fixture f;
    std::error_code ec;
    f.s.put_session({"pm-agent", role::pm, "pm-1", {12, 1, "b"}, "", timestamp{}}, ec);
    f.s.put_item(item("a", task_state::pending, 1), ec);
    namespace fs = std::filesystem;
    CHECK(fs::exists(f.d / "sessions/pm-agent.json"));
    CHECK(fs::status(f.d.path()).permissions() == fs::perms::owner_all);
    CHECK(fs::status(f.d / "queue").permissions() == fs::perms::owner_all);
    CHECK(fs::status(f.d / "queue/a.json").permissions() == (fs::perms::owner_read | fs::perms::owner_write));
    for (auto& e : fs::directory_iterator(f.d / "queue")) CHECK(e.path().filename().string()[0] != '.');
}

TEST_CASE("with quarantine off, file_store names a corrupt record, keeps it, and the listing fails rather than skip it") {
    temp_dir d;
    file_store s(d.path(), {.durable = false, .quarantine = false});
    std::error_code ec;
    s.put_item(item("good", task_state::pending, 1), ec);
    {
        std::ofstream bad(d / "queue/bad.json");
        bad << "{\"version\":1, \"kind\":\"queue_item\", \"id\": \"bad\"";   // truncated
    }
    auto v = s.list_items(ec);
    CHECK(ec == errc::store_corrupt);
    CHECK(s.last_error_detail().find("queue/bad.json") != std::string::npos);
    CHECK(s.last_error_detail().find("not valid JSON") != std::string::npos);
    CHECK(std::filesystem::exists(d / "queue/bad.json"));
    CHECK(s.get_item("good", ec));
    CHECK_FALSE(ec);
    s.get_item("bad", ec);
    CHECK(ec == errc::store_corrupt);
    CHECK(s.quarantined().empty());
    CHECK_FALSE(std::filesystem::exists(d / "quarantine"));
}

namespace {
/// The files in DIR, by name.
std::vector<std::string> names_in(const std::filesystem::path& dir) {
    std::vector<std::string> v;
    if (std::filesystem::exists(dir))
        for (auto& e : std::filesystem::directory_iterator(dir)) v.push_back(e.path().filename().string());
    std::sort(v.begin(), v.end());
    return v;
}
} // namespace

TEST_CASE("file_store moves every kind of unreadable record to quarantine/, names it, and lists the rest") {
    namespace fs = std::filesystem;
    file_fixture f;
    std::error_code ec;
    f.s.put_item(item("good", task_state::pending, 1), ec);
    std::string good_text = kugetsu::test::slurp(f.d / "queue/good.json");
    const std::string huge(2u << 20, ' ');
    struct bad_case {
        std::string name, text, why;
    };
    const std::vector<bad_case> cases = {
        {"truncated.json", good_text.substr(0, good_text.size() / 2), "not valid JSON"},
        {"empty.json", "", "not valid JSON"},
        {"huge.json", "{" + huge + "}", "larger than 1 MiB"},
        {"wrongtype.json", R"({"version":1,"kind":"queue_item","id":"wrongtype","argv":5})", "argv"},
        {"future.json", R"({"version":99,"kind":"queue_item","id":"future"})", "version"},
        {"notjson.json", "\x01\x02garbage\xff", "not valid JSON"},
        {"other.json", good_text, "does not match its file name"},
        {"notes.txt", "hello", "not a record name"},
    };
    for (auto& c : cases) std::ofstream(f.d / ("queue/" + c.name), std::ios::binary) << c.text;
    fs::create_symlink("/etc/passwd", f.d / "queue/link.json");
    REQUIRE(::mkfifo((f.d / "queue/fifo.json").c_str(), 0600) == 0);   // must not hang the open
    fs::create_directory(f.d / "queue/dir.json");

    auto v = f.s.list_items(ec);
    REQUIRE_FALSE(ec);
    REQUIRE(v.size() == 1);
    CHECK(v[0].id == "good");
    CHECK(names_in(f.d / "queue") == std::vector<std::string>{"good.json"});

    // Every one moved, none deleted: the quarantine holds each file with its bytes.
    const auto& q = f.s.quarantined();
    REQUIRE(q.size() == cases.size() + 3);
    CHECK(names_in(f.d / "quarantine").size() == cases.size() + 3);
    CHECK(fs::status(f.d / "quarantine").permissions() == fs::perms::owner_all);
    for (auto& c : cases) {
        INFO(c.name);
        auto r = std::find_if(q.begin(), q.end(), [&](auto& x) { return x.path == f.d / ("queue/" + c.name); });
        REQUIRE(r != q.end());
        CHECK(r->why.find(c.why) != std::string::npos);
        CHECK(r->moved_to.rfind(f.d / "quarantine/queue.", 0) == 0);
        CHECK(kugetsu::test::slurp(r->moved_to) == c.text);
        CHECK(r->task_id == (c.name == "notes.txt" ? "" : c.name.substr(0, c.name.size() - 5)));
        CHECK_FALSE(r->session);
    }
    for (auto& [name, why] : std::vector<std::pair<std::string, std::string>>{
             {"link.json", "symbolic link"}, {"fifo.json", "not a regular file"}, {"dir.json", "not a regular file"}}) {
        INFO(name);
        auto r = std::find_if(q.begin(), q.end(), [&](auto& x) { return x.path == f.d / ("queue/" + name); });
        REQUIRE(r != q.end());
        CHECK(r->why.find(why) != std::string::npos);
    }
    CHECK(fs::is_symlink(std::find_if(q.begin(), q.end(), [](auto& x) { return x.path.ends_with("/link.json"); })->moved_to));
    CHECK(kugetsu::test::slurp("/etc/passwd").size() > 0);   // the link was moved, not its target

    // get_item on a corrupt record: moved too, and then there is no such task.
    std::ofstream(f.d / "queue/late.json") << "{";
    CHECK_FALSE(f.s.get_item("late", ec));
    CHECK_FALSE(ec);
    CHECK(f.s.quarantined().back().task_id == "late");
    CHECK_FALSE(fs::exists(f.d / "queue/late.json"));
    // A fresh store sees only the good record, and quarantines nothing more.
    file_store again(f.d.path());
    CHECK(ids(again.list_items(ec)) == std::vector<std::string>{"good"});
    CHECK(again.quarantined().empty());
}

TEST_CASE("a corrupt session of a running task is quarantined and rebuilt from the task, so its agent keeps its slot") {
    file_fixture f;
    std::error_code ec;
    auto run = item("t1", task_state::running, 1);
    run.process = {4242, 7, "boot"};
    run.started_at = timestamp{std::chrono::seconds(5)};
    f.s.put_item(run, ec);
    f.s.put_session({"t1", role::dev, "t1", run.process, "/w", *run.started_at}, ec);
    f.s.put_item(item("t2", task_state::completed, 2), ec);
    REQUIRE_FALSE(ec);
    std::ofstream(f.d / "sessions/t1.json") << "{\"version\":1";      // its agent is still live
    std::ofstream(f.d / "sessions/t2.json") << "[]";                  // a finished task: nothing to rebuild
    auto v = f.s.list_sessions(ec);
    REQUIRE_FALSE(ec);
    REQUIRE(v.size() == 1);
    CHECK(v[0].id == "t1");
    CHECK(v[0].process == run.process);
    CHECK(v[0].started_at == *run.started_at);
    CHECK(f.s.quarantined().size() == 2);
    CHECK(f.s.quarantined()[0].session);
    CHECK(f.s.quarantined()[0].task_id.empty());
    // Rebuilt on disk: a fresh store reads it, with nothing more to quarantine.
    file_store again(f.d.path());
    auto w = again.list_sessions(ec);
    REQUIRE(w.size() == 1);
    CHECK(w[0].process == run.process);
    CHECK(again.quarantined().empty());
    CHECK(names_in(f.d / "quarantine").size() == 2);
}

TEST_CASE("file_store refuses a record whose id is not its file name, when quarantine is off") {
    temp_dir d;
    file_store s(d.path(), {.durable = false, .quarantine = false});
    std::error_code ec;
    s.put_item(item("a", task_state::pending, 1), ec);
    std::filesystem::copy_file(d / "queue/a.json", d / "queue/b.json");
    s.get_item("b", ec);
    CHECK(ec == errc::store_corrupt);
    CHECK(s.last_error_detail().find("does not match") != std::string::npos);
    std::filesystem::remove(d / "queue/b.json");
    std::ofstream(d / "queue/notes.txt") << "hello";
    s.list_items(ec);
    CHECK(ec == errc::store_corrupt);
    CHECK(s.last_error_detail().find("notes.txt") != std::string::npos);
    CHECK(std::filesystem::exists(d / "queue/notes.txt"));
}

TEST_CASE("file_store never follows a symlink planted in the state directory") {
    file_fixture f;
    temp_dir outside;
    const std::string target = outside / "victim.json";
    std::ofstream(target) << "precious";
    std::error_code ec;
    f.s.open(ec);
    std::filesystem::create_symlink(target, f.d / "queue/t1.json");
    CHECK_FALSE(f.s.get_item("t1", ec));   // moved to quarantine, not followed
    CHECK_FALSE(ec);
    REQUIRE(f.s.quarantined().size() == 1);
    CHECK(std::filesystem::is_symlink(f.s.quarantined()[0].moved_to));
    CHECK(kugetsu::test::slurp(target) == "precious");
    std::filesystem::create_symlink(target, f.d / "queue/t1.json");
    f.s.put_item(item("t1", task_state::pending, 1), ec);
    CHECK_FALSE(ec);   // rename replaced the link itself
    CHECK(kugetsu::test::slurp(target) == "precious");
    CHECK_FALSE(std::filesystem::is_symlink(f.d / "queue/t1.json"));
    // A symlinked directory is refused too.
    temp_dir g;
    std::filesystem::create_directories(outside / "q");
    std::filesystem::create_directory_symlink(outside / "q", g / "queue");
    file_store s2(g.path());
    s2.put_item(item("t2", task_state::pending, 1), ec);
    CHECK(ec);
    CHECK_FALSE(std::filesystem::exists(outside / "q/t2.json"));
}

TEST_CASE("file_store refuses a state directory or record that others may write or another user owns") {
    namespace fs = std::filesystem;
    std::error_code ec;
    {   // the state directory itself
        temp_dir d;
        ::chmod(d.path().c_str(), 0777);
        file_store s(d.path());
        s.open(ec);
        CHECK(ec == errc::unsafe_state);
        CHECK(s.last_error_detail().find(d.path()) != std::string::npos);
    }
    {   // a subdirectory, then a session record
        file_fixture f;
        f.s.put_session({"t1", role::dev, "t1", {12, 1, "b"}, "", timestamp{}}, ec);
        REQUIRE_FALSE(ec);
        ::chmod((f.d / "sessions/t1.json").c_str(), 0622);
        f.s.list_sessions(ec);
        CHECK(ec == errc::unsafe_state);
        CHECK(f.s.last_error_detail().find("sessions/t1.json") != std::string::npos);
        CHECK(fs::exists(f.d / "sessions/t1.json"));   // refused, never removed
        ::chmod((f.d / "queue").c_str(), 0770);
        file_store again(f.d.path());
        again.open(ec);
        CHECK(ec == errc::unsafe_state);
        CHECK(again.last_error_detail().find("queue") != std::string::npos);
    }
    if (::geteuid() == 0) {   // only root can give a directory away
        temp_dir d;
        REQUIRE(::chown(d.path().c_str(), 65534, 65534) == 0);
        file_store s(d.path());
        s.open(ec);
        CHECK(ec == errc::unsafe_state);
    }
}

TEST_CASE("file_store refuses ids that are not file-name safe") {
    file_fixture f;
    std::error_code ec;
    f.s.get_item("../etc/passwd", ec);
    CHECK(ec == errc::invalid_task_id);
    auto it = item("x", task_state::pending, 1);
    it.id = "../x";
    f.s.put_item(it, ec);
    CHECK(ec == errc::invalid_task_id);
}

// ---- notifiers ---------------------------------------------------------------------------

namespace {
std::vector<event> all_events() {
    std::vector<event> v;
    for (auto t : {event_type::task_queued, event_type::task_dequeued, event_type::task_started,
                   event_type::task_completed, event_type::task_error})
        v.push_back({t, "t1", timestamp{std::chrono::seconds(1'800'000'000)}, 1, 42, 0, "r"});
    return v;
}
} // namespace

TEST_CASE("notifiers: every model takes every event type without throwing") {
    temp_dir d;
    auto got = std::make_shared<std::vector<std::string>>();
    null_notifier n0;
    callback_notifier n1([got](const event& e) { got->emplace_back(to_string(e.type)); });
    jsonl_notifier n2(d / "events.jsonl");
    multi_notifier n3{callback_notifier([got](const event&) { got->push_back("first"); }),
                      callback_notifier([got](const event&) { got->push_back("second"); })};
    for (auto& e : all_events()) {
        n0.notify(e);
        n1.notify(e);
        n2.notify(e);
        n3.notify(e);
    }
    CHECK(got->size() == 15);
    CHECK((*got)[0] == "task_queued");   // per event: the callback, then the two in order
    CHECK((*got)[1] == "first");
    CHECK((*got)[2] == "second");
    CHECK((*got)[3] == "task_dequeued");
    std::istringstream in(kugetsu::test::slurp(d / "events.jsonl"));
    int lines = 0;
    for (std::string line; std::getline(in, line); ++lines) {
        std::error_code ec;
        std::string why;
        CHECK(parse_event(line, ec, why));
    }
    CHECK(lines == 5);
    CHECK(n2.failures() == 0);
}

TEST_CASE("jsonl_notifier counts a failed write and reports it, never throwing") {
    std::error_code seen;
    jsonl_notifier n("/nonexistent-dir/events.jsonl", [&](const std::error_code& ec, const event&) { seen = ec; });
    n.notify(all_events()[0]);
    CHECK(n.failures() == 1);
    CHECK(seen == std::errc::no_such_file_or_directory);
}

TEST_CASE("jsonl_notifier lines from concurrent processes never interleave") {
    temp_dir d;
    std::vector<pid_t> kids;
    for (int k = 0; k < 4; ++k)
        kids.push_back(kugetsu::test::fork_child([&, k] {
            jsonl_notifier n(d / "events.jsonl");
            event e{event_type::task_error, "writer-" + std::to_string(k), timestamp{}, 1, 1, 1,
                    std::string(2000, 'x')};   // long lines: still one write each
            for (int i = 0; i < 300; ++i) n.notify(e);
            return static_cast<int>(n.failures());
        }));
    for (auto p : kids) CHECK(kugetsu::test::wait_child(p) == 0);
    std::istringstream in(kugetsu::test::slurp(d / "events.jsonl"));
    int lines = 0;
    for (std::string line; std::getline(in, line); ++lines) {
        std::error_code ec;
        std::string why;
        REQUIRE(parse_event(line, ec, why));
    }
    CHECK(lines == 1200);
}

// ---- clocks ------------------------------------------------------------------------------

TEST_CASE("clocks: manual_clock moves only when told, and its copies share one time") {
    manual_clock c;
    const auto t0 = c.now();
    CHECK(c.now() == t0);
    manual_clock copy = c;
    copy.advance(1500ms);
    CHECK(c.now() - t0 == 1500ms);
    c.set(timestamp{});
    CHECK(copy.now() == timestamp{});
}

TEST_CASE("clocks: system_clock tells the wall time in microseconds") {
    system_clock c;
    const auto before = std::chrono::system_clock::now();
    const auto t = c.now();
    const auto after = std::chrono::system_clock::now();
    CHECK(t >= std::chrono::floor<std::chrono::microseconds>(before));
    CHECK(t <= after);
}

// ---- the fake spawner, against the spawner contract ----------------------------------------

TEST_CASE("fake_spawner follows the spawner contract: held, released, polled, signalled") {
    fake_spawner sp;
    std::error_code ec;
    auto p = sp.spawn({"t1", {"agent"}, ""}, ec);
    REQUIRE(p);
    CHECK(sp.poll(p, ec).state == process_state::running);
    CHECK(sp.running() == 0);   // held: not yet running the program
    sp.release(p, ec);
    CHECK_FALSE(ec);
    CHECK(sp.running() == 1);
    sp.release(p, ec);
    CHECK(ec == errc::not_held);
    sp.signal(p, stop_signal::terminate, ec);
    auto st = sp.poll(p, ec);
    CHECK(st.state == process_state::exited);
    CHECK(st.exit_code == 143);
    auto q = sp.spawn({"t2", {"agent"}, ""}, ec);
    sp.abandon(q);
    CHECK(sp.poll(q, ec).state == process_state::gone);
    CHECK_FALSE(sp.get(q.pid).ran);
    process_ref reused = p;
    reused.start_time += 1;
    CHECK(sp.poll(reused, ec).state == process_state::gone);
    CHECK(sp.poll(sp.self(), ec).state == process_state::running);
}
