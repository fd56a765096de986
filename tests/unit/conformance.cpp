// Conformance: one generic test per concept, run against every model of it that needs no
// real process (stores, notifiers, clocks, the fake spawner). Locks and spawners on real
// processes are in tests/process/conformance.cpp; stores under crashes and concurrent
// processes in tests/process/store_units.cpp.
#include <catch2/catch.hpp>

#include <kugetsu/kugetsu.hpp>
#include <kugetsu/store/sqlite_store.hpp>

#include <algorithm>
#include <filesystem>
#include <fstream>
#include <map>
#include <sstream>

#include <sqlite3.h>
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

event ev(event_type t, std::string task, event_reason reason = event_reason::none) {
    event e;
    e.type = t;
    e.task_id = std::move(task);
    e.time = timestamp{std::chrono::seconds(1'800'000'000)};
    e.reason = reason;
    return e;
}

/// A store, and other objects on the same state (a copy of a memory_store shares its state;
/// another sqlite_store opens the same database).
struct memory_fixture {
    memory_store s;
    memory_store& store() { return s; }
    memory_store other() { return s; }
};
struct sqlite_fixture {
    temp_dir d;
    sqlite_store s{d / "state.db"};
    sqlite_store& store() { return s; }
    // A short busy timeout: a unit left open by mistake fails the test instead of hanging it.
    sqlite_store other() {
        sqlite_store::options o;
        o.busy_timeout = 2s;
        return sqlite_store(d / "state.db", o);
    }
};

std::vector<std::string> ids(const std::vector<queue_item>& v) {
    std::vector<std::string> out;
    for (auto& it : v) out.push_back(it.id);
    return out;
}
std::vector<std::uint64_t> seqs(const std::vector<event>& v) {
    std::vector<std::uint64_t> out;
    for (auto& e : v) out.push_back(e.seq);
    return out;
}

/// Every committed event of a store, paging through events_after.
template <class S>
std::vector<event> all_events_of(S& s, std::size_t page = 3) {
    std::vector<event> v;
    std::error_code ec;
    for (;;) {
        auto batch = s.events_after(v.empty() ? 0 : v.back().seq, page, ec);
        REQUIRE_FALSE(ec);
        if (batch.empty()) return v;
        CHECK(batch.size() <= page);
        v.insert(v.end(), batch.begin(), batch.end());
    }
}

} // namespace

// ---- stores: the records ---------------------------------------------------------------------

TEMPLATE_TEST_CASE("store: create_item refuses an existing id and leaves the first record", "[store]",
                   memory_fixture, sqlite_fixture) {
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
                   memory_fixture, sqlite_fixture) {
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
                   memory_fixture, sqlite_fixture) {
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
                   "[store]", memory_fixture, sqlite_fixture) {
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

// ---- stores: the unit of work ----------------------------------------------------------------

TEMPLATE_TEST_CASE("store: the writes of a unit are seen by its object and by nobody else, then all at once on commit",
                   "[store][unit]", memory_fixture, sqlite_fixture) {
    TestType f;
    auto& s = f.store();
    auto o = f.other();
    std::error_code ec;
    s.put_item(item("moved", task_state::pending, 1), ec);   // committed before the unit
    REQUIRE_FALSE(ec);
    CHECK_FALSE(s.in_unit());
    s.begin(ec);
    REQUIRE_FALSE(ec);
    CHECK(s.in_unit());
    CHECK_FALSE(o.in_unit());
    s.create_item(item("a", task_state::pending, 2), ec);
    s.put_item(item("moved", task_state::running, 1), ec);
    s.put_session({"moved", role::dev, "moved", {101, 5, "boot"}, "", timestamp{}}, ec);
    const auto seq = s.append_event(ev(event_type::task_queued, "a"), ec);
    s.put_limits({7, 2, 3s}, ec);
    REQUIRE_FALSE(ec);
    // Its own object sees every write, in every read.
    CHECK(s.get_item("a", ec));
    CHECK(s.get_item("moved", ec)->state == task_state::running);
    CHECK(ids(s.items_in_state(task_state::pending, 10, ec)) == std::vector<std::string>{"a"});
    CHECK(ids(s.items_in_state(task_state::running, 10, ec)) == std::vector<std::string>{"moved"});
    CHECK(ids(s.list_items(ec)) == std::vector<std::string>{"moved", "a"});
    CHECK(s.list_sessions(ec).size() == 1);
    CHECK(s.get_limits(ec) == limits{7, 2, 3s});
    CHECK(seq == 1);
    // Nobody else sees any of it.
    CHECK_FALSE(o.get_item("a", ec));
    CHECK(o.get_item("moved", ec)->state == task_state::pending);
    CHECK(ids(o.items_in_state(task_state::pending, 10, ec)) == std::vector<std::string>{"moved"});
    CHECK(o.items_in_state(task_state::running, 10, ec).empty());
    CHECK(ids(o.list_items(ec)) == std::vector<std::string>{"moved"});
    CHECK(o.list_sessions(ec).empty());
    CHECK(o.events_after(0, 10, ec).empty());
    CHECK_FALSE(o.get_limits(ec));
    REQUIRE_FALSE(ec);
    s.commit(durability::durable, ec);
    REQUIRE_FALSE(ec);
    CHECK_FALSE(s.in_unit());
    // All of it, for everyone.
    CHECK(o.get_item("a", ec));
    CHECK(o.get_item("moved", ec)->state == task_state::running);
    CHECK(o.list_sessions(ec).size() == 1);
    auto evs = o.events_after(0, 10, ec);
    REQUIRE(evs.size() == 1);
    CHECK(evs[0].seq == seq);
    CHECK(evs[0].task_id == "a");
    CHECK(o.get_limits(ec) == limits{7, 2, 3s});
    CHECK_FALSE(ec);
}

TEMPLATE_TEST_CASE("store: a unit rolled back, or whose object is destroyed, leaves none of its writes",
                   "[store][unit]", memory_fixture, sqlite_fixture) {
    TestType f;
    auto& s = f.store();
    std::error_code ec;
    s.put_item(item("kept", task_state::pending, 1), ec);
    s.put_limits({3, 3, 10s}, ec);
    const auto first = s.append_event(ev(event_type::task_queued, "kept"), ec);
    REQUIRE_FALSE(ec);
    auto write_unit = [&](auto& st) {
        st.begin(ec);
        REQUIRE_FALSE(ec);
        st.create_item(item("gone", task_state::pending, 2), ec);
        st.put_item(item("kept", task_state::cancelled, 1), ec);
        st.put_session({"kept", role::dev, "kept", {9, 9, "b"}, "", timestamp{}}, ec);
        st.append_event(ev(event_type::task_error, "kept", event_reason::cancelled), ec);
        st.put_limits({1, 1, 0s}, ec);
        REQUIRE_FALSE(ec);
    };
    auto nothing_changed = [&](auto& st) {
        CHECK(ids(st.list_items(ec)) == std::vector<std::string>{"kept"});
        CHECK(st.get_item("kept", ec)->state == task_state::pending);
        CHECK(st.list_sessions(ec).empty());
        CHECK(seqs(st.events_after(0, 10, ec)) == std::vector<std::uint64_t>{first});
        CHECK(st.get_limits(ec) == limits{3, 3, 10s});
        CHECK_FALSE(ec);
    };
    SECTION("rollback") {
        write_unit(s);
        s.rollback();
        CHECK_FALSE(s.in_unit());
        nothing_changed(s);
        auto o = f.other();
        nothing_changed(o);
        s.rollback();   // none open: nothing
    }
    SECTION("destruction of the object") {
        {
            auto w = f.other();
            write_unit(w);
        }
        nothing_changed(s);
    }
    // The unit is over: another begins at once, and its numbers still grow.
    auto o = f.other();
    o.begin(ec);
    REQUIRE_FALSE(ec);
    const auto next = o.append_event(ev(event_type::task_queued, "x"), ec);
    o.commit(durability::visible, ec);
    REQUIRE_FALSE(ec);
    CHECK(next > first);
    CHECK(seqs(s.events_after(0, 10, ec)) == std::vector<std::uint64_t>{first, next});
}

TEMPLATE_TEST_CASE("store: create_item of an id created earlier in the same unit is a duplicate", "[store][unit]",
                   memory_fixture, sqlite_fixture) {
    TestType f;
    auto& s = f.store();
    std::error_code ec;
    s.put_item(item("old", task_state::pending, 1), ec);
    s.begin(ec);
    s.create_item(item("new", task_state::pending, 2), ec);
    REQUIRE_FALSE(ec);
    s.create_item(item("new", task_state::running, 3), ec);
    CHECK(ec == errc::duplicate_task);
    s.create_item(item("old", task_state::running, 3), ec);
    CHECK(ec == errc::duplicate_task);
    CHECK(s.in_unit());   // a refused write leaves the unit open, with its other writes
    s.commit(durability::durable, ec);
    REQUIRE_FALSE(ec);
    CHECK(s.get_item("new", ec)->state == task_state::pending);
    CHECK(s.get_item("old", ec)->state == task_state::pending);
}

TEMPLATE_TEST_CASE("store: append_event numbers events from 1, growing, and events_after pages through them",
                   "[store][unit]", memory_fixture, sqlite_fixture) {
    TestType f;
    auto& s = f.store();
    std::error_code ec;
    std::vector<std::uint64_t> got;
    auto e = ev(event_type::task_queued, "t0");
    e.seq = 999;   // ignored: the store numbers events
    got.push_back(s.append_event(e, ec));   // a unit of its own
    s.begin(ec);
    for (int i = 1; i <= 5; ++i) got.push_back(s.append_event(ev(event_type::task_dequeued, "t" + std::to_string(i)), ec));
    s.commit(durability::visible, ec);
    s.begin(ec);
    s.append_event(ev(event_type::task_error, "rolled-back"), ec);
    s.rollback();
    got.push_back(s.append_event(ev(event_type::task_completed, "t6"), ec));
    REQUIRE_FALSE(ec);
    CHECK(got.front() == 1);
    CHECK(std::is_sorted(got.begin(), got.end()));
    CHECK(std::adjacent_find(got.begin(), got.end()) == got.end());
    auto all = all_events_of(s, 2);
    CHECK(seqs(all) == got);
    REQUIRE(all.size() == 7);
    CHECK(all[0].task_id == "t0");
    CHECK(all[3].task_id == "t3");
    CHECK(all[6].type == event_type::task_completed);
    CHECK(s.events_after(got.back(), 10, ec).empty());
    CHECK(s.events_after(got[4], 1, ec).front().seq == got[5]);
    auto o = f.other();
    CHECK(seqs(all_events_of(o, 4)) == got);
}

TEMPLATE_TEST_CASE("store: runnable gives pending tasks by priority then age, skips groups, and sees the unit",
                   "[store]", memory_fixture, sqlite_fixture) {
    TestType f;
    auto& s = f.store();
    auto o = f.other();
    std::error_code ec;
    auto with = [](queue_item it, int priority, std::string group) {
        it.priority = priority;
        it.group = std::move(group);
        return it;
    };
    s.put_item(with(item("old-low", task_state::pending, 1), -1, ""), ec);
    s.put_item(with(item("new-high", task_state::pending, 9), 4, "gpu"), ec);
    s.put_item(with(item("b-mid", task_state::pending, 5), 0, "cpu"), ec);
    s.put_item(with(item("a-mid", task_state::pending, 5), 0, ""), ec);
    s.put_item(with(item("run-high", task_state::running, 0), 9, ""), ec);
    s.put_item(with(item("wait-high", task_state::waiting, 0), 9, ""), ec);
    CHECK(ids(s.runnable(10, {}, ec)) == std::vector<std::string>{"new-high", "a-mid", "b-mid", "old-low"});
    CHECK(ids(s.runnable(2, {}, ec)) == std::vector<std::string>{"new-high", "a-mid"});
    CHECK(ids(s.runnable(10, {"gpu", "cpu"}, ec)) == std::vector<std::string>{"a-mid", "old-low"});
    CHECK(ids(s.runnable(10, {""}, ec)) == std::vector<std::string>{"new-high", "b-mid"});
    CHECK(s.runnable(0, {}, ec).empty());
    CHECK(ids(s.items_in_state(task_state::waiting, 10, ec)) == std::vector<std::string>{"wait-high"});
    // In a unit: its own writes count (a claim leaves the list, a new task joins it); others
    // see the committed order until the commit.
    s.begin(ec);
    s.put_item(with(item("new-high", task_state::notified, 9), 4, "gpu"), ec);
    s.put_item(with(item("urgent", task_state::pending, 10), 7, "x"), ec);
    CHECK(ids(s.runnable(3, {}, ec)) == std::vector<std::string>{"urgent", "a-mid", "b-mid"});
    CHECK(ids(o.runnable(1, {}, ec)) == std::vector<std::string>{"new-high"});
    s.commit(durability::durable, ec);
    CHECK(ids(o.runnable(1, {}, ec)) == std::vector<std::string>{"urgent"});
    CHECK_FALSE(ec);
}

TEMPLATE_TEST_CASE("store: the schedule is a default one until put, and is seen by others at commit",
                   "[store][unit]", memory_fixture, sqlite_fixture) {
    TestType f;
    auto& s = f.store();
    auto o = f.other();
    std::error_code ec;
    CHECK(s.get_schedule(ec) == queue_schedule{});
    CHECK_FALSE(ec);
    queue_schedule sc;
    sc.paused = true;
    sc.set_group("gpu", {2, false});
    sc.set_group("docs", {std::nullopt, true});
    s.begin(ec);
    s.put_schedule(sc, ec);
    CHECK(s.get_schedule(ec) == sc);
    CHECK(o.get_schedule(ec) == queue_schedule{});
    s.commit(durability::durable, ec);
    CHECK(o.get_schedule(ec) == sc);
    CHECK(o.get_schedule(ec).group("gpu").cap == 2);
    CHECK(o.get_schedule(ec).holds("docs"));
    CHECK_FALSE(ec);
}

TEMPLATE_TEST_CASE("store: get_limits is empty until put_limits has been committed", "[store][unit]", memory_fixture,
                   sqlite_fixture) {
    TestType f;
    auto& s = f.store();
    auto o = f.other();
    std::error_code ec;
    CHECK_FALSE(s.get_limits(ec));
    CHECK_FALSE(ec);
    s.begin(ec);
    s.put_limits({5, 4, 2s}, ec);
    CHECK(s.get_limits(ec) == limits{5, 4, 2s});
    CHECK_FALSE(o.get_limits(ec));
    s.commit(durability::durable, ec);
    CHECK(o.get_limits(ec) == limits{5, 4, 2s});
    o.put_limits({1, 1, 0s}, ec);   // outside a unit: at once
    CHECK(s.get_limits(ec) == limits{1, 1, 0s});
    CHECK_FALSE(ec);
}

TEMPLATE_TEST_CASE("store: an operation outside a unit is a unit of its own, committed at once", "[store][unit]",
                   memory_fixture, sqlite_fixture) {
    TestType f;
    auto& s = f.store();
    auto o = f.other();
    std::error_code ec;
    s.create_item(item("a", task_state::pending, 1), ec);
    CHECK_FALSE(s.in_unit());
    CHECK(o.get_item("a", ec));
    s.put_item(item("a", task_state::running, 1), ec);
    CHECK(o.get_item("a", ec)->state == task_state::running);
    s.put_session({"a", role::dev, "a", {101, 5, "boot"}, "", timestamp{}}, ec);
    CHECK(o.list_sessions(ec).size() == 1);
    s.remove_session("a", ec);
    CHECK(o.list_sessions(ec).empty());
    const auto n = s.append_event(ev(event_type::task_started, "a"), ec);
    CHECK(seqs(o.events_after(0, 10, ec)) == std::vector<std::uint64_t>{n});
    CHECK_FALSE(s.in_unit());
    // And the other object can open a unit straight away: nothing was left open.
    o.begin(ec);
    CHECK_FALSE(ec);
    o.rollback();
}

// ---- sqlite_store only ---------------------------------------------------------------------

namespace {

/// A second, raw connection to a database, to write what the store never would.
class raw_db {
public:
    explicit raw_db(const std::string& path, int flags = SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE) {
        REQUIRE(sqlite3_open_v2(path.c_str(), &db_, flags, nullptr) == SQLITE_OK);
    }
    ~raw_db() { sqlite3_close_v2(db_); }
    raw_db(const raw_db&) = delete;
    raw_db& operator=(const raw_db&) = delete;
    void exec(const std::string& sql) {
        char* err = nullptr;
        const int rc = sqlite3_exec(db_, sql.c_str(), nullptr, nullptr, &err);
        INFO(sql << ": " << (err ? err : ""));
        sqlite3_free(err);
        REQUIRE(rc == SQLITE_OK);
    }
    std::int64_t count(const std::string& sql) {
        sqlite3_stmt* s = nullptr;
        REQUIRE(sqlite3_prepare_v2(db_, sql.c_str(), -1, &s, nullptr) == SQLITE_OK);
        std::int64_t v = -1;
        if (sqlite3_step(s) == SQLITE_ROW) v = sqlite3_column_int64(s, 0);
        sqlite3_finalize(s);
        return v;
    }

private:
    sqlite3* db_ = nullptr;
};

std::string quoted(const std::string& s) {
    std::string out = "'";
    for (char c : s) {
        if (c == '\'') out += '\'';
        out += c;
    }
    return out + "'";
}

std::string record_of(const queue_item& it) { return nlohmann::json(it).dump(); }

mode_t mode_of(const std::string& path) {
    struct stat st{};
    REQUIRE(::stat(path.c_str(), &st) == 0);
    return st.st_mode & 07777;
}

bool has(const std::string& text, const std::string& part) { return text.find(part) != std::string::npos; }

/// Whether a file still holds exactly these bytes (a bool, so a failure prints no binary).
bool unchanged(const std::string& path, const std::string& bytes) { return kugetsu::test::slurp(path) == bytes; }

} // namespace

TEST_CASE("sqlite_store creates its database, WAL and shared-memory files 0600") {
    temp_dir d;
    ::chmod(d.path().c_str(), 0700);
    const mode_t old_mask = ::umask(022);   // a umask that would leave files 0644
    sqlite_store s(d / "state.db");
    std::error_code ec;
    s.put_item(item("a", task_state::pending, 1), ec);
    ::umask(old_mask);
    REQUIRE_FALSE(ec);
    for (const char* suffix : {"", "-wal", "-shm"}) {
        INFO(suffix);
        CHECK(mode_of(d / ("state.db" + std::string(suffix))) == 0600);
    }
}

TEST_CASE("sqlite_store refuses a directory others may write, naming it, and creates nothing in it") {
    temp_dir d;
    for (mode_t m : {0777, 0770, 0702}) {
        INFO(m);
        REQUIRE(::chmod(d.path().c_str(), m) == 0);
        sqlite_store s(d / "state.db");
        std::error_code ec;
        s.open(ec);
        CHECK(ec == errc::unsafe_state);
        CHECK(has(s.last_error_detail(), d.path()));
        CHECK_FALSE(s.is_open());
        CHECK_FALSE(std::filesystem::exists(d / "state.db"));
    }
    REQUIRE(::chmod(d.path().c_str(), 0700) == 0);
    {   // a database file others may write is refused too
        sqlite_store s(d / "state.db");
        std::error_code ec;
        s.open(ec);
        REQUIRE_FALSE(ec);
    }
    REQUIRE(::chmod((d / "state.db").c_str(), 0666) == 0);
    sqlite_store s(d / "state.db");
    std::error_code ec;
    s.open(ec);
    CHECK(ec == errc::unsafe_state);
    CHECK(has(s.last_error_detail(), d / "state.db"));
}

TEST_CASE("sqlite_store refuses a database of a newer schema version with unsupported_version, naming it") {
    temp_dir d;
    {
        sqlite_store s(d / "state.db");
        s.open();
    }
    {
        raw_db r(d / "state.db");
        r.exec("PRAGMA user_version=" + std::to_string(sqlite_store::schema_version + 1));
    }
    const std::string before = kugetsu::test::slurp(d / "state.db");
    sqlite_store s(d / "state.db");
    std::error_code ec;
    s.open(ec);
    CHECK(ec == errc::unsupported_version);
    CHECK(has(s.last_error_detail(), d / "state.db"));
    CHECK(unchanged(d / "state.db", before));
    CHECK_THROWS_AS(sqlite_store(d / "state.db").open(), kugetsu::error);
}

TEST_CASE("sqlite_store migrates a version-1 database forward, keeping every task, session and event") {
    temp_dir d;
    std::error_code ec;
    {
        sqlite_store s(d / "state.db");
        s.open();
        queue_item it;
        it.id = "old";
        it.argv = {"true"};
        s.create_item(it, ec);
        REQUIRE_FALSE(ec);
        event e;
        e.task_id = "old";
        s.append_event(e, ec);
        REQUIRE_FALSE(ec);
    }
    {
        // Back to version 1's shape: without version 3's columns and index.
        raw_db r(d / "state.db");
        r.exec("DROP INDEX tasks_runnable; ALTER TABLE tasks DROP COLUMN priority; ALTER TABLE tasks DROP COLUMN grp;"
               "PRAGMA user_version=1");
    }
    sqlite_store s(d / "state.db");
    s.open(ec);
    REQUIRE_FALSE(ec);
    {
        raw_db r(d / "state.db");
        CHECK(r.count("PRAGMA user_version") == sqlite_store::schema_version);
        CHECK(r.count("SELECT count(*) FROM pragma_table_info('tasks') WHERE name IN ('priority', 'grp')") == 2);
    }
    CHECK(s.get_item("old", ec));
    CHECK(s.events_after(0, 10, ec).size() == 1);
    CHECK(s.check(ec).ok());
    // The migrated store schedules: a new task with a priority runs before the old one.
    queue_item hi;
    hi.id = "new";
    hi.argv = {"true"};
    hi.priority = 3;
    hi.group = "g";
    s.create_item(hi, ec);
    REQUIRE_FALSE(ec);
    const auto order = s.runnable(10, {}, ec);
    REQUIRE(order.size() == 2);
    CHECK(order[0].id == "new");
    CHECK(s.runnable(10, {"g"}, ec).size() == 1);
}

TEST_CASE("sqlite_store answers store_corrupt for a schedule it cannot read, naming it, and keeps it") {
    temp_dir d;
    std::error_code ec;
    sqlite_store s(d / "state.db");
    s.open();
    {
        raw_db r(d / "state.db");
        r.exec("INSERT INTO meta(key, value) VALUES('schedule', '{\"paused\": 1, \"groups\": {}}')");
    }
    s.get_schedule(ec);
    CHECK(ec == errc::store_corrupt);
    CHECK(has(s.last_error_detail(), "meta \"schedule\""));
    CHECK(has(s.last_error_detail(), "paused"));
    raw_db r(d / "state.db");
    CHECK(r.count("SELECT count(*) FROM meta WHERE key = 'schedule'") == 1);
}

TEST_CASE("sqlite_store refuses a file that is not a SQLite database, or another program's database, and never writes it") {
    temp_dir d;
    const std::string db = d / "state.db";
    SECTION("not a database") {
        std::string text;
        for (int i = 0; i < 200; ++i) text += "these are somebody's notes, not a database\n";
        { std::ofstream(db, std::ios::binary) << text; }
        ::chmod(db.c_str(), 0600);
        sqlite_store s(db);
        std::error_code ec;
        s.put_item(item("a", task_state::pending, 1), ec);
        CHECK(ec == errc::store_corrupt);
        CHECK(has(s.last_error_detail(), db));
        CHECK(unchanged(db, text));
    }
    SECTION("another application's database") {
        {
            raw_db r(db);
            r.exec("PRAGMA application_id=1234; CREATE TABLE notes(x TEXT); INSERT INTO notes VALUES('mine')");
        }
        ::chmod(db.c_str(), 0600);
        const std::string before = kugetsu::test::slurp(db);
        REQUIRE(before.size() > 0);
        sqlite_store s(db);
        std::error_code ec;
        s.open(ec);
        CHECK(ec == errc::store_corrupt);
        CHECK(has(s.last_error_detail(), db));
        CHECK(unchanged(db, before));
        CHECK_FALSE(std::filesystem::exists(db + "-wal"));
    }
    SECTION("a kugetsu schema version with another application id") {
        {
            raw_db r(db);
            r.exec("PRAGMA application_id=42; PRAGMA user_version=1; CREATE TABLE tasks(x)");
        }
        ::chmod(db.c_str(), 0600);
        const std::string before = kugetsu::test::slurp(db);
        sqlite_store s(db);
        std::error_code ec;
        s.open(ec);
        CHECK(ec == errc::store_corrupt);
        CHECK(has(s.last_error_detail(), db));
        CHECK(unchanged(db, before));
    }
}

TEST_CASE("sqlite_store moves a task row that fails validation to quarantine, with a task_error event in the same unit") {
    temp_dir d;
    sqlite_store s(d / "state.db");
    std::error_code ec;
    for (auto [id, sec] : {std::pair{"good-1", 1}, std::pair{"good-2", 2}}) s.put_item(item(id, task_state::pending, sec), ec);
    REQUIRE_FALSE(ec);
    const auto events_before = s.events_after(0, 100, ec).size();
    {
        raw_db r(d / "state.db");
        r.exec("INSERT INTO tasks(id, state, enqueued_us, record) VALUES('bad-json', 0, 3, '{\"version\": 1, \"kind\": \"queue_item\"')");
        r.exec("INSERT INTO tasks(id, state, enqueued_us, record) VALUES('bad-id', 0, 4, " + quoted(record_of(item("someone-else", task_state::pending, 4))) + ")");
        r.exec("INSERT INTO tasks(id, state, enqueued_us, record) VALUES('bad-state', 2, 5, " + quoted(record_of(item("bad-state", task_state::pending, 5))) + ")");
    }
    struct expect {
        std::string id, why;
    };
    const std::vector<expect> bad = {{"bad-json", "JSON"}, {"bad-id", "its id is not its key"},
                                     {"bad-state", "its state disagrees with its column"}};
    SECTION("listed: the other rows are still listed") {
        CHECK(ids(s.list_items(ec)) == std::vector<std::string>{"good-1", "good-2"});
        REQUIRE_FALSE(ec);
    }
    SECTION("read by state inside a unit: moved by that unit when it commits") {
        s.begin(ec);
        CHECK(ids(s.items_in_state(task_state::pending, 10, ec)) == std::vector<std::string>{"good-1", "good-2"});
        CHECK(s.items_in_state(task_state::running, 10, ec).empty());
        CHECK(s.quarantined().empty());   // not until the unit commits
        s.commit(durability::durable, ec);
        REQUIRE_FALSE(ec);
    }
    const auto& q = s.quarantined();
    REQUIRE(q.size() == 3);
    auto evs = s.events_after(0, 100, ec);
    REQUIRE(evs.size() == events_before + 3);
    for (auto& b : bad) {
        INFO(b.id);
        auto r = std::find_if(q.begin(), q.end(), [&](auto& x) { return x.task_id == b.id; });
        REQUIRE(r != q.end());
        CHECK(has(r->why, b.why));
        CHECK(has(r->source, "tasks \"" + b.id + "\""));
        CHECK(has(r->source, d / "state.db"));
        CHECK(has(r->moved_to, "quarantine"));
        REQUIRE(r->event_seq != 0);
        auto e = std::find_if(evs.begin(), evs.end(), [&](auto& x) { return x.seq == r->event_seq; });
        REQUIRE(e != evs.end());
        CHECK(e->type == event_type::task_error);
        CHECK(e->task_id == b.id);
        CHECK(e->reason == event_reason::quarantined);
    }
    auto rows = s.quarantine_rows(ec);
    REQUIRE(rows.size() == 3);
    for (auto& row : rows) CHECK_FALSE(row.why.empty());
    raw_db r(d / "state.db");
    CHECK(r.count("SELECT count(*) FROM tasks") == 2);
    CHECK(r.count("SELECT count(*) FROM quarantine WHERE raw IS NOT NULL AND length(raw) > 0") == 3);
    // Moved once: a fresh object finds nothing more to move.
    sqlite_store again(d / "state.db");
    CHECK(again.list_items(ec).size() == 2);
    CHECK(again.quarantined().empty());
    CHECK(again.events_after(0, 100, ec).size() == events_before + 3);
}

TEST_CASE("sqlite_store with quarantine off answers store_corrupt naming the row, and leaves it") {
    temp_dir d;
    sqlite_store::options off;
    off.quarantine = false;
    sqlite_store s(d / "state.db", off);
    std::error_code ec;
    s.put_item(item("good", task_state::pending, 1), ec);
    REQUIRE_FALSE(ec);
    {
        raw_db r(d / "state.db");
        r.exec("INSERT INTO tasks(id, state, enqueued_us, record) VALUES('bad', 0, 3, '{')");
    }
    s.list_items(ec);
    CHECK(ec == errc::store_corrupt);
    CHECK(has(s.last_error_detail(), "tasks \"bad\""));
    CHECK(has(s.last_error_detail(), d / "state.db"));
    s.get_item("bad", ec);
    CHECK(ec == errc::store_corrupt);
    CHECK(s.get_item("good", ec));
    CHECK_FALSE(ec);
    CHECK(s.quarantined().empty());
    CHECK(s.events_after(0, 10, ec).empty());
    raw_db r(d / "state.db");
    CHECK(r.count("SELECT count(*) FROM tasks WHERE id = 'bad'") == 1);
    CHECK(r.count("SELECT count(*) FROM quarantine") == 0);
}

TEST_CASE("sqlite_store quarantines a bad session row and rebuilds it from its running task, so its agent keeps its slot") {
    temp_dir d;
    sqlite_store s(d / "state.db");
    std::error_code ec;
    auto run = item("t1", task_state::running, 1);
    run.process = {4242, 7, "boot"};
    run.started_at = timestamp{std::chrono::seconds(5)};
    s.put_item(run, ec);
    s.put_session({"t1", role::dev, "t1", run.process, "/w", *run.started_at}, ec);
    s.put_item(item("t2", task_state::completed, 2), ec);
    s.put_session({"t2", role::dev, "t2", {77, 7, "boot"}, "", timestamp{}}, ec);
    REQUIRE_FALSE(ec);
    {
        raw_db r(d / "state.db");
        r.exec("UPDATE sessions SET record = '{\"version\":1' WHERE id = 't1'");   // its agent is still live
        r.exec("UPDATE sessions SET record = '[]' WHERE id = 't2'");               // a finished task: nothing to rebuild
    }
    auto v = s.list_sessions(ec);
    REQUIRE_FALSE(ec);
    REQUIRE(v.size() == 1);
    CHECK(v[0].id == "t1");
    CHECK(v[0].process == run.process);
    CHECK(v[0].started_at == *run.started_at);
    REQUIRE(s.quarantined().size() == 2);
    for (auto& q : s.quarantined()) {
        CHECK(q.task_id.empty());   // a session row: no task_error event
        CHECK(q.event_seq == 0);
        CHECK(has(q.source, "sessions \""));
    }
    CHECK(s.events_after(0, 10, ec).empty());
    // Rebuilt in the database: a fresh object reads it, with nothing more to move.
    sqlite_store again(d / "state.db");
    auto w = again.list_sessions(ec);
    REQUIRE(w.size() == 1);
    CHECK(w[0].process == run.process);
    CHECK(again.quarantined().empty());
    CHECK(again.quarantine_rows(ec).size() == 2);
}

TEST_CASE("sqlite_store check() runs the integrity check and reports every bad row without moving it") {
    temp_dir d;
    sqlite_store s(d / "state.db");
    std::error_code ec;
    s.put_item(item("good", task_state::pending, 1), ec);
    s.put_session({"good", role::dev, "good", {5, 5, "b"}, "", timestamp{}}, ec);
    s.append_event(ev(event_type::task_queued, "good"), ec);
    REQUIRE_FALSE(ec);
    auto r0 = s.check(ec);
    REQUIRE_FALSE(ec);
    CHECK(r0.ok());
    CHECK(r0.tasks == 1);
    CHECK(r0.sessions == 1);
    CHECK(r0.events == 1);
    {
        raw_db r(d / "state.db");
        r.exec("INSERT INTO tasks(id, state, enqueued_us, record) VALUES('bad-task', 0, 3, 'nope')");
        r.exec("INSERT INTO sessions VALUES('bad-session', 'bad-session', '{}')");
        r.exec("INSERT INTO events(task_id, record) VALUES('x', '{\"type\": 7}')");
        // A record that carries its own number: the row's key is its number, so readers refuse it.
        auto numbered = ev(event_type::task_queued, "y");
        numbered.seq = 5;
        r.exec("INSERT INTO events(task_id, record) VALUES('y', " + quoted(nlohmann::json(numbered).dump()) + ")");
    }
    auto r1 = s.check(ec);
    REQUIRE_FALSE(ec);
    CHECK_FALSE(r1.ok());
    CHECK(r1.integrity.empty());
    CHECK(r1.tasks == 2);
    REQUIRE(r1.bad_rows.size() == 4);
    CHECK(has(r1.bad_rows[0], "bad-task"));
    CHECK(has(r1.bad_rows[1], "bad-session"));
    CHECK(has(r1.bad_rows[2], "events"));
    CHECK(has(r1.bad_rows[3], "events"));
    CHECK(r1.quarantined == 0);
    CHECK(s.quarantined().empty());   // check() moves nothing
    // Reads move them; then check() is clean and counts them in the quarantine.
    s.list_items(ec);
    s.list_sessions(ec);
    s.events_after(0, 10, ec);
    REQUIRE_FALSE(ec);
    auto r2 = s.check(ec);
    CHECK(r2.ok());
    CHECK(r2.quarantined == 4);
    auto rows = s.quarantine_rows(ec);
    REQUIRE(rows.size() == 4);
    CHECK(rows[0].task_id == "bad-task");
    CHECK(has(rows[0].source, "tasks \"bad-task\""));
    CHECK(has(rows[1].source, "sessions \"bad-session\""));
    CHECK(has(rows[2].source, "events"));
    CHECK(has(rows[3].source, "events"));
    CHECK(has(rows[3].why, "number"));
}

// ---- notifiers ---------------------------------------------------------------------------

namespace {
std::vector<event> all_events() {
    std::vector<event> v;
    for (auto t : {event_type::task_queued, event_type::task_dequeued, event_type::task_started,
                   event_type::task_completed, event_type::task_error})
        v.push_back({.type = t, .task_id = "t1", .time = timestamp{std::chrono::seconds(1'800'000'000)}, .attempt = 1,
                     .pid = 42, .exit_code = 0, .reason = event_reason::retry});
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
            // The longest line an event makes (a task id of the longest length): still one write each.
            event e{.type = event_type::task_error,
                    .task_id = "writer-" + std::to_string(k) + "-" + std::string(max_task_id_length - 9, 'x'),
                    .time = timestamp{}, .attempt = 1, .pid = 1, .exit_code = 1, .reason = event_reason::exit_code};
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

namespace {

/// The events of a JSONL file, line by line (every line must parse).
std::vector<event> lines_of(const std::string& path) {
    std::vector<event> v;
    std::istringstream in(kugetsu::test::slurp(path));
    for (std::string line; std::getline(in, line);) {
        std::error_code ec;
        std::string why;
        auto e = parse_event(line, ec, why);
        INFO(line);
        REQUIRE(e);
        v.push_back(*e);
    }
    return v;
}

/// A memory_store's outbox as an event_source.
event_source source_of(memory_store& s, std::size_t batch = 4) {
    return [&s, batch](std::uint64_t after, std::error_code& ec) { return s.events_after(after, batch, ec); };
}

void add_events(memory_store& s, int n, const std::string& task = "t") {
    std::error_code ec;
    for (int i = 0; i < n; ++i) s.append_event(ev(event_type::task_queued, task + std::to_string(i)), ec);
    REQUIRE_FALSE(ec);
}

} // namespace

TEST_CASE("jsonl_notifier relay appends the store's events in order from the file's last number, once") {
    temp_dir d;
    const std::string path = d / "events.jsonl";
    memory_store s;
    add_events(s, 6);
    std::error_code ec;
    jsonl_notifier n(path);
    CHECK(n.relay(source_of(s), ec) == 6);   // in batches of 4: two reads
    REQUIRE_FALSE(ec);
    CHECK(seqs(lines_of(path)) == std::vector<std::uint64_t>{1, 2, 3, 4, 5, 6});
    CHECK(n.relay(source_of(s), ec) == 6);   // twice: nothing twice
    CHECK(lines_of(path).size() == 6);
    // Another object (another process) relays from the file's last number, not from its own.
    add_events(s, 3, "u");
    jsonl_notifier other(path);
    CHECK(other.relay(source_of(s), ec) == 9);
    CHECK(n.relay(source_of(s), ec) == 9);   // the file changed since n left it: it reads it again
    auto all = lines_of(path);
    CHECK(seqs(all) == std::vector<std::uint64_t>{1, 2, 3, 4, 5, 6, 7, 8, 9});
    CHECK(all[6].task_id == "u0");
    CHECK_FALSE(ec);
    CHECK(n.failures() == 0);
}

TEST_CASE("jsonl_notifier relay goes on from the highest number in the file, past lines without one") {
    temp_dir d;
    const std::string path = d / "events.jsonl";
    memory_store s;
    add_events(s, 5);
    std::error_code ec;
    {   // numbers 1 to 3, written by an earlier relay, then an unnumbered event
        std::ofstream out(path);
        for (auto& e : s.events_after(0, 3, ec)) out << nlohmann::json(e).dump() << "\n";
        out << nlohmann::json(ev(event_type::task_error, "not-from-a-store")).dump() << "\n";
    }
    ::chmod(path.c_str(), 0600);
    jsonl_notifier n(path);
    CHECK(n.relay(source_of(s), ec) == 5);
    REQUIRE_FALSE(ec);
    auto all = lines_of(path);
    REQUIRE(all.size() == 6);
    CHECK(all[3].seq == 0);
    CHECK(all[4].seq == 4);
    CHECK(all[5].seq == 5);
}

TEST_CASE("jsonl_notifier ignores notify() of a numbered event and appends an unnumbered one") {
    temp_dir d;
    const std::string path = d / "events.jsonl";
    jsonl_notifier n(path);
    auto numbered = ev(event_type::task_started, "a");
    numbered.seq = 12;
    n.notify(numbered);
    CHECK(lines_of(path).empty());
    n.notify(ev(event_type::task_started, "b"));
    auto all = lines_of(path);
    REQUIRE(all.size() == 1);
    CHECK(all[0].task_id == "b");
    CHECK(all[0].seq == 0);
    CHECK(n.failures() == 0);
}

TEST_CASE("jsonl_notifier relay appends to a kugetsu 0.1 file, which has no numbers, from the store's first event") {
    temp_dir d;
    const std::string path = d / "events.jsonl";
    const std::string fixture = std::filesystem::path(__FILE__).parent_path().parent_path() / "fixtures/home-0.1/events.jsonl";
    const std::string old = kugetsu::test::slurp(fixture);
    REQUIRE(old.size() > 0);
    { std::ofstream(path, std::ios::binary) << old; }
    ::chmod(path.c_str(), 0600);
    const auto old_lines = lines_of(path).size();
    memory_store s;
    add_events(s, 3);
    jsonl_notifier n(path);
    std::error_code ec;
    CHECK(n.relay(source_of(s), ec) == 3);
    REQUIRE_FALSE(ec);
    CHECK(kugetsu::test::slurp(path).rfind(old, 0) == 0);   // the old lines stay as they were
    auto all = lines_of(path);
    REQUIRE(all.size() == old_lines + 3);
    for (std::size_t i = 0; i < old_lines; ++i) CHECK(all[i].seq == 0);
    CHECK(all[old_lines].seq == 1);
    CHECK(all.back().seq == 3);
}

TEST_CASE("jsonl_notifier relay that cannot write says why and drops nothing: the next relay appends it all") {
    temp_dir d;
    const std::string dir = d / "sub";
    memory_store s;
    add_events(s, 4);
    jsonl_notifier n(dir + "/events.jsonl");
    std::error_code ec;
    n.relay(source_of(s), ec);
    CHECK(ec);
    CHECK(has(n.last_error_detail(), dir + "/events.jsonl"));
    CHECK(n.failures() == 1);
    std::filesystem::create_directory(dir);
    CHECK(n.relay(source_of(s), ec) == 4);
    CHECK_FALSE(ec);
    CHECK(seqs(lines_of(dir + "/events.jsonl")) == std::vector<std::uint64_t>{1, 2, 3, 4});
}

TEST_CASE("jsonl_notifier relays from four processes at once write each event of a sqlite_store exactly once, in order") {
    temp_dir d;
    {
        sqlite_store s(d / "state.db");
        std::error_code ec;
        s.begin(ec);
        for (int i = 0; i < 300; ++i) s.append_event(ev(event_type::task_queued, "e" + std::to_string(i)), ec);
        s.commit(durability::visible, ec);
        REQUIRE_FALSE(ec);
    }
    kugetsu::test::pipe_pair go;
    std::vector<pid_t> kids;
    for (int k = 0; k < 4; ++k)
        kids.push_back(kugetsu::test::fork_child([&] {
            go.close_write();
            go.wait_eof();   // all start together
            sqlite_store s(d / "state.db");
            jsonl_notifier n(d / "events.jsonl");
            std::error_code ec;
            auto src = [&](std::uint64_t after, std::error_code& e) { return s.events_after(after, 7, e); };
            for (int i = 0; i < 5; ++i) n.relay(src, ec);
            return ec ? 1 : 0;
        }));
    go.close_write();
    for (auto p : kids) CHECK(kugetsu::test::wait_child(p) == 0);
    std::vector<std::uint64_t> want(300);
    for (std::size_t i = 0; i < want.size(); ++i) want[i] = i + 1;
    CHECK(seqs(lines_of(d / "events.jsonl")) == want);
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
    CHECK_FALSE(st.ended_at);   // the fake does not know when a signal ended it
    auto q = sp.spawn({"t2", {"agent"}, ""}, ec);
    sp.abandon(q);
    CHECK(sp.poll(q, ec).state == process_state::never_ran);   // once, as a reaped child
    CHECK(sp.poll(q, ec).state == process_state::gone);
    CHECK_FALSE(sp.get(q.pid).ran);
    CHECK(sp.abandoned() == 1);
    process_ref reused = p;
    reused.start_time += 1;
    CHECK(sp.poll(reused, ec).state == process_state::gone);
    CHECK(sp.poll(sp.self(), ec).state == process_state::running);
}

TEST_CASE("fake_spawner reports an exit with the time it was given, once, to every copy") {
    fake_spawner sp;
    fake_spawner copy = sp;
    std::error_code ec;
    auto p = sp.spawn({"t1", {"agent"}, ""}, ec);
    auto q = sp.spawn({"t2", {"agent"}, ""}, ec);
    sp.release(p, ec);
    sp.release(q, ec);
    const timestamp at{std::chrono::seconds(1'800'000'123)};
    copy.exit(p.pid, 4, at);
    copy.exit(q.pid, 0);
    CHECK(sp.running() == 0);
    auto st = sp.poll(p, ec);
    CHECK(st.state == process_state::exited);
    CHECK(st.exit_code == 4);
    CHECK(st.ended_at == at);
    CHECK_FALSE(sp.poll(q, ec).ended_at);   // no time given: unknown
    CHECK(copy.poll(p, ec).state == process_state::gone);   // reported once, to the copies too
}

TEST_CASE("fake_spawner never_ran ends a held or a released process as one that never ran the program") {
    fake_spawner sp;
    std::error_code ec;
    auto held = sp.spawn({"t1", {"agent"}, ""}, ec);
    auto released = sp.spawn({"t2", {"agent"}, ""}, ec);
    sp.release(released, ec);
    REQUIRE(sp.running() == 1);
    fake_spawner copy = sp;
    copy.never_ran(held.pid);
    copy.never_ran(released.pid);
    CHECK(sp.running() == 0);
    CHECK(sp.pid_of("t2") == 0);
    for (auto& p : {held, released}) {
        auto st = sp.poll(p, ec);
        CHECK(st.state == process_state::never_ran);
        CHECK_FALSE(st.ended_at);
        CHECK(sp.poll(p, ec).state == process_state::gone);   // reported once
        CHECK_FALSE(sp.get(p.pid).ran);
    }
    sp.release(held, ec);
    CHECK(ec == errc::not_held);   // it is over: it cannot be released any more
    CHECK(sp.peak() == 1);
}

TEMPLATE_TEST_CASE("store: prune_events deletes the events of tasks that are gone, but the last, and numbers go on",
                   "[store]", memory_fixture, sqlite_fixture) {
    TestType f;
    auto& s = f.store();
    std::error_code ec;
    s.put_item(item("kept", task_state::completed, 1), ec);
    s.put_item(item("gone", task_state::completed, 2), ec);
    for (const char* t : {"gone", "kept", "gone", "gone"}) s.append_event(ev(event_type::task_queued, t), ec);
    REQUIRE_FALSE(ec);
    s.begin(ec);
    s.remove_item("gone", ec);
    s.prune_events(ec);
    s.commit(durability::durable, ec);
    REQUIRE_FALSE(ec);
    CHECK(seqs(all_events_of(s)) == std::vector<std::uint64_t>{2, 4});   // 4: the last, kept
    CHECK(s.events_after(2, 10, ec).size() == 1);
    CHECK(s.append_event(ev(event_type::task_queued, "kept"), ec) == 5);   // never reused
    s.prune_events(ec);   // outside a unit: a unit of its own; 4 is no longer the last
    CHECK(seqs(all_events_of(s)) == std::vector<std::uint64_t>{2, 5});
    CHECK_FALSE(ec);
}

TEST_CASE("jsonl_notifier compact drops the lines asked for but the last, and other notifiers follow the new file") {
    temp_dir d;
    const std::string path = d / "events.jsonl";
    memory_store s;
    add_events(s, 3, "a");   // a0 a1 a2: seq 1-3
    add_events(s, 2, "b");   // b0 b1: seq 4-5
    std::error_code ec;
    jsonl_notifier n(path);
    jsonl_notifier other(path);   // another process, its file already open
    CHECK(other.relay(source_of(s), ec) == 5);
    CHECK(n.compact([](const event& e) { return e.task_id.rfind("b", 0) == 0 || e.task_id == "a1"; }, ec) == 2);
    REQUIRE_FALSE(ec);
    auto lines = lines_of(path);
    CHECK(seqs(lines) == std::vector<std::uint64_t>{1, 3, 5});   // b1 (5) is the last line: kept
    CHECK_FALSE(std::filesystem::exists(path + ".compact.tmp"));
    // The other notifier appends to the new file, from its last number: nothing twice.
    add_events(s, 1, "c");
    CHECK(other.relay(source_of(s), ec) == 6);
    CHECK(seqs(lines_of(path)) == std::vector<std::uint64_t>{1, 3, 5, 6});
    other.notify(ev(event_type::task_queued, "unnumbered"));
    CHECK(lines_of(path).size() == 5);
    // Nothing to drop: the file is left as it is.
    struct stat before{}, after{};
    ::stat(path.c_str(), &before);
    CHECK(n.compact([](const event&) { return false; }, ec) == 0);
    ::stat(path.c_str(), &after);
    CHECK(after.st_ino == before.st_ino);   // not rewritten
    CHECK(lines_of(path).size() == 5);
    CHECK_FALSE(ec);
}
