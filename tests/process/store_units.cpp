// Units of work of sqlite_store under real processes: a process that dies inside a unit leaves
// none of it, concurrent units never lose an update, a dead holder blocks nobody, and the
// import of a kugetsu 0.1 HOME (tests/fixtures/home-0.1) happens once, all of it or nothing.
// Synchronised with pipes only: no sleeps.
#include <catch2/catch.hpp>

#include <kugetsu/home.hpp>
#include <kugetsu/kugetsu.hpp>

#include <chrono>
#include <csignal>
#include <filesystem>
#include <fstream>
#include <functional>
#include <map>
#include <set>
#include <sstream>

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include "support/proc.hpp"

using namespace kugetsu;
using namespace std::chrono_literals;
using kugetsu::test::fork_child;
using kugetsu::test::pipe_pair;
using kugetsu::test::temp_dir;
using kugetsu::test::wait_child;
namespace fs = std::filesystem;

namespace {

queue_item task(std::string id, int second) {
    queue_item it;
    it.id = std::move(id);
    it.argv = {"agent"};
    it.enqueued_at = it.updated_at = timestamp{std::chrono::seconds(1'800'000'000 + second)};
    return it;
}

event ev(event_type t, std::string id, std::optional<int> pid = {}) {
    event e;
    e.type = t;
    e.task_id = std::move(id);
    e.time = timestamp{std::chrono::seconds(1'800'000'000)};
    e.pid = pid;
    return e;
}

/// What a store holds, to compare before and after.
struct snapshot {
    std::vector<std::string> tasks, sessions;
    std::vector<std::uint64_t> events;
    std::optional<limits> lim;
    friend bool operator==(const snapshot&, const snapshot&) = default;
};
std::ostream& operator<<(std::ostream& os, const snapshot& s) {
    os << "tasks:";
    for (auto& t : s.tasks) os << " " << t;
    os << " sessions:";
    for (auto& t : s.sessions) os << " " << t;
    os << " events: " << s.events.size() << " limits: " << (s.lim ? s.lim->cap : -1);
    return os;
}

snapshot snap(const std::string& db) {
    sqlite_store s(db);   // a fresh object: what any other process would read
    std::error_code ec;
    snapshot out;
    for (auto& it : s.list_items(ec)) out.tasks.push_back(it.id);
    for (auto& se : s.list_sessions(ec)) out.sessions.push_back(se.id);
    for (auto& e : s.events_after(0, 100000, ec)) out.events.push_back(e.seq);
    out.lim = s.get_limits(ec);
    REQUIRE_FALSE(ec);
    return out;
}

/// The writes of one unit: 3 tasks, 2 sessions, 4 events and the limits (10 writes).
std::vector<std::function<void(sqlite_store&, std::error_code&)>> unit_writes(const std::string& p) {
    auto t = [p](int n) { return p + "-" + std::to_string(n); };
    auto sess = [t](int n) { return session{t(n), role::dev, t(n), {4000 + n, 7, "boot"}, "", timestamp{}}; };
    return {
        [=](sqlite_store& s, std::error_code& ec) { s.create_item(task(t(1), 1), ec); },
        [=](sqlite_store& s, std::error_code& ec) { s.append_event(ev(event_type::task_queued, t(1)), ec); },
        [=](sqlite_store& s, std::error_code& ec) { s.put_session(sess(1), ec); },
        [=](sqlite_store& s, std::error_code& ec) { s.create_item(task(t(2), 2), ec); },
        [=](sqlite_store& s, std::error_code& ec) { s.append_event(ev(event_type::task_queued, t(2)), ec); },
        [=](sqlite_store& s, std::error_code& ec) { s.put_session(sess(2), ec); },
        [=](sqlite_store& s, std::error_code& ec) { s.create_item(task(t(3), 3), ec); },
        [=](sqlite_store& s, std::error_code& ec) { s.append_event(ev(event_type::task_queued, t(3)), ec); },
        [=](sqlite_store& s, std::error_code& ec) { s.append_event(ev(event_type::task_started, t(3)), ec); },
        [=](sqlite_store& s, std::error_code& ec) { s.put_limits({9, 9, 9s}, ec); },
    };
}

enum class death { exit, sigkill };

[[noreturn]] void die(death how) {
    if (how == death::sigkill) ::kill(::getpid(), SIGKILL);
    ::_exit(0);
}

} // namespace

TEST_CASE("a process that dies between any two statements of a unit leaves none of it; one that dies after commit leaves all") {
    temp_dir d;
    const std::string db = d / "state.db";
    sqlite_store parent(db);
    std::error_code ec;
    parent.put_limits({3, 3, 10s}, ec);
    parent.create_item(task("base", 0), ec);
    parent.append_event(ev(event_type::task_queued, "base"), ec);
    REQUIRE_FALSE(ec);
    const std::size_t n = unit_writes("x").size();
    REQUIRE(n == 10);
    for (death how : {death::exit, death::sigkill}) {
        for (std::size_t k = 0; k <= n; ++k) {
            const std::string prefix = std::string(how == death::exit ? "exit" : "kill") + std::to_string(k);
            INFO(prefix);
            const snapshot before = snap(db);
            const pid_t pid = fork_child([&] {
                sqlite_store s(db);
                std::error_code cec;
                s.begin(cec);
                if (cec) return 1;
                auto writes = unit_writes(prefix);
                for (std::size_t i = 0; i < k; ++i) {
                    writes[i](s, cec);
                    if (cec) return 2;
                }
                die(how);
            });
            CHECK(wait_child(pid) == (how == death::exit ? 0 : 128 + SIGKILL));
            CHECK(snap(db) == before);
            // And the next unit, in another process, commits as if nothing happened.
            parent.begin(ec);
            REQUIRE_FALSE(ec);
            parent.create_item(task("after-" + prefix, 100), ec);
            const auto seq = parent.append_event(ev(event_type::task_queued, "after-" + prefix), ec);
            parent.commit(durability::durable, ec);
            REQUIRE_FALSE(ec);
            const snapshot after = snap(db);
            CHECK(after.tasks.size() == before.tasks.size() + 1);
            CHECK(after.events.back() == seq);
            CHECK(after.lim == limits{3, 3, 10s});
        }
    }
    // Killed right after its commit returned: every write is there.
    const snapshot before = snap(db);
    const pid_t pid = fork_child([&] {
        sqlite_store s(db);
        std::error_code cec;
        s.begin(cec);
        for (auto& w : unit_writes("committed")) {
            if (cec) return 2;
            w(s, cec);
        }
        s.commit(durability::durable, cec);
        if (cec) return 3;
        die(death::sigkill);
    });
    CHECK(wait_child(pid) == 128 + SIGKILL);
    const snapshot after = snap(db);
    CHECK(after.tasks.size() == before.tasks.size() + 3);
    for (auto id : {"committed-1", "committed-2", "committed-3"})
        CHECK(std::count(after.tasks.begin(), after.tasks.end(), id) == 1);
    CHECK(after.sessions == std::vector<std::string>{"committed-1", "committed-2"});
    CHECK(after.events.size() == before.events.size() + 4);
    CHECK(after.lim == limits{9, 9, 9s});
}

TEST_CASE("four processes running 200 units each on one counter lose no update and number their 800 events 1 to 800") {
    temp_dir d;
    const std::string db = d / "state.db";
    {
        sqlite_store s(db);
        auto c = task("counter", 0);
        c.last_error = "0";
        std::error_code ec;
        s.create_item(c, ec);
        REQUIRE_FALSE(ec);
    }
    constexpr int procs = 4, units = 200;
    pipe_pair go;
    std::vector<pid_t> kids;
    for (int p = 0; p < procs; ++p)
        kids.push_back(fork_child([&, p] {
            go.close_write();
            go.wait_eof();   // all begin together
            sqlite_store s(db);
            std::error_code ec;
            for (int i = 0; i < units; ++i) {
                s.begin(ec);
                if (ec) return 1;
                auto c = s.get_item("counter", ec);
                if (ec || !c) return 2;
                const int next = std::stoi(c->last_error) + 1;
                c->last_error = std::to_string(next);
                s.put_item(*c, ec);
                if (ec) return 3;
                s.append_event(ev(event_type::task_started, "p" + std::to_string(p), next), ec);
                if (ec) return 4;
                s.commit(durability::durable, ec);
                if (ec) return 5;
            }
            return 0;
        }));
    go.close_write();
    for (auto k : kids) CHECK(wait_child(k) == 0);
    sqlite_store s(db);
    std::error_code ec;
    CHECK(s.get_item("counter", ec)->last_error == std::to_string(procs * units));
    std::vector<event> all;
    for (;;) {
        auto batch = s.events_after(all.empty() ? 0 : all.back().seq, 128, ec);
        REQUIRE_FALSE(ec);
        if (batch.empty()) break;
        all.insert(all.end(), batch.begin(), batch.end());
    }
    REQUIRE(all.size() == static_cast<std::size_t>(procs * units));
    std::map<std::string, int> per_process;
    bool numbered_in_commit_order = true;
    for (std::size_t i = 0; i < all.size(); ++i) {
        // Event i was appended by the unit that made the counter i: commit order is seq order.
        if (all[i].seq != i + 1 || all[i].pid != static_cast<int>(i + 1)) numbered_in_commit_order = false;
        ++per_process[all[i].task_id];
    }
    CHECK(numbered_in_commit_order);
    CHECK(per_process.size() == static_cast<std::size_t>(procs));
    for (auto& [id, count] : per_process) CHECK(count == units);
}

TEST_CASE("a process killed while it holds a unit open blocks the others no longer than its life") {
    temp_dir d;
    const std::string db = d / "state.db";
    {
        sqlite_store s(db);
        s.open();
    }
    pipe_pair ready;
    const pid_t holder = fork_child([&] {
        ready.close_read();
        sqlite_store s(db);
        std::error_code ec;
        s.begin(ec);
        if (ec) return 1;
        s.create_item(task("never", 1), ec);
        if (ec) return 2;
        ready.put('u');   // the unit is open
        for (;;) ::pause();
    });
    ready.close_write();
    REQUIRE(ready.get() == 'u');
    // While it lives, the unit is its own: another begin waits, then gives up naming the file.
    sqlite_store::options quick;
    quick.busy_timeout = 200ms;
    sqlite_store waiter(db, quick);
    std::error_code ec;
    waiter.begin(ec);
    CHECK(ec == errc::store_busy);
    CHECK(waiter.last_error_detail().find(db) != std::string::npos);
    CHECK_FALSE(waiter.in_unit());
    ::kill(holder, SIGKILL);
    CHECK(wait_child(holder) == 128 + SIGKILL);
    sqlite_store next(db);   // the default busy timeout: 30 s
    const auto t0 = std::chrono::steady_clock::now();
    next.begin(ec);
    const auto waited = std::chrono::steady_clock::now() - t0;
    REQUIRE_FALSE(ec);
    CHECK(waited < 2s);
    CHECK_FALSE(next.get_item("never", ec));
    next.create_item(task("never", 1), ec);   // its id is free: none of the dead unit stayed
    CHECK_FALSE(ec);
    next.commit(durability::durable, ec);
    CHECK_FALSE(ec);
    waiter.begin(ec);   // and the one that gave up can begin now
    CHECK_FALSE(ec);
    waiter.rollback();
}

// ---- the import of a kugetsu 0.1 HOME -----------------------------------------------------------

namespace {

const fs::path fixture_home = fs::path(__FILE__).parent_path().parent_path() / "fixtures" / "home-0.1";

/// Copies the 0.1 fixture to DIR/home with the modes a 0.1 HOME has (git keeps none).
std::string copy_fixture(const temp_dir& d) {
    const std::string home = d / "home";
    fs::copy(fixture_home, home, fs::copy_options::recursive);
    REQUIRE(::chmod(home.c_str(), 0700) == 0);
    for (auto& e : fs::recursive_directory_iterator(home))
        REQUIRE(::chmod(e.path().c_str(), e.is_directory() ? 0700 : 0600) == 0);
    return home;
}

std::vector<std::string> lines_of(const std::string& path) {
    std::vector<std::string> v;
    std::istringstream in(kugetsu::test::slurp(path));
    for (std::string line; std::getline(in, line);)
        if (!line.empty()) v.push_back(line);
    return v;
}

std::map<std::string, queue_item> fixture_tasks() {
    std::map<std::string, queue_item> m;
    for (auto& e : fs::directory_iterator(fixture_home / "queue")) {
        std::error_code ec;
        std::string why;
        auto it = parse_item(kugetsu::test::slurp(e.path()), ec, why);
        INFO(e.path() << ": " << why);
        REQUIRE(it);
        m[it->id] = *it;
    }
    return m;
}

std::size_t files_in(const std::string& dir) {
    return static_cast<std::size_t>(std::distance(fs::directory_iterator(dir), fs::directory_iterator{}));
}

template <class S>
std::vector<event> all_events(S& s) {
    std::error_code ec;
    auto v = s.events_after(0, 100000, ec);
    REQUIRE_FALSE(ec);
    return v;
}

void write_file(const std::string& path, const std::string& text) {
    { std::ofstream(path, std::ios::binary) << text; }
    REQUIRE(::chmod(path.c_str(), 0600) == 0);
}

} // namespace

TEST_CASE("open_home_store imports a kugetsu 0.1 HOME once: every task, session and event, the old files kept aside") {
    temp_dir d;
    const std::string home = copy_fixture(d);
    write_file(home + "/queue/broken.json", "{\"version\": 1");   // unreadable: kept in the quarantine table
    const auto expected = fixture_tasks();
    REQUIRE(expected.size() == 9);
    const auto event_lines = lines_of(fixture_home / "events.jsonl");
    REQUIRE(event_lines.size() == 19);
    std::error_code ec;
    std::string why;
    import_report rep;
    {
        sqlite_store s = open_home_store(home, ec, why, {}, &rep);
        INFO(why);
        REQUIRE_FALSE(ec);
        CHECK(rep.imported);
        CHECK(rep.tasks == 9);
        CHECK(rep.sessions == 2);
        CHECK(rep.events == 19);
        REQUIRE(rep.quarantined.size() == 1);
        CHECK(rep.quarantined[0].find("queue/broken.json") != std::string::npos);
        auto items = s.list_items(ec);
        REQUIRE(items.size() == expected.size());
        for (auto& it : items) {
            INFO(it.id);
            REQUIRE(expected.count(it.id));
            const auto& want = expected.at(it.id);
            CHECK(it.state == want.state);
            CHECK(it.attempts == want.attempts);
            CHECK(it.argv == want.argv);
            CHECK(it.process == want.process);
            CHECK(it.finished_at == want.finished_at);
        }
        CHECK(s.get_item("missing-prog", ec)->state == task_state::error);
        CHECK(s.get_item("missing-prog", ec)->attempts == 3);
        CHECK(s.get_item("pend-1", ec)->state == task_state::pending);
        CHECK(s.get_item("live-1", ec)->state == task_state::running);
        auto sessions = s.list_sessions(ec);
        REQUIRE(sessions.size() == 2);
        CHECK(sessions[0].id == "live-1");
        CHECK(sessions[0].process == expected.at("live-1").process);
        CHECK(sessions[1].id == "pm-agent");
        CHECK(sessions[1].role == role::pm);
        // The events in file order, numbered 1 to 19.
        auto evs = all_events(s);
        REQUIRE(evs.size() == event_lines.size());
        for (std::size_t i = 0; i < evs.size(); ++i) {
            INFO(event_lines[i]);
            std::string ewhy;
            auto want = parse_event(event_lines[i], ec, ewhy);
            REQUIRE(want);
            CHECK(evs[i].seq == i + 1);
            CHECK(evs[i].type == want->type);
            CHECK(evs[i].task_id == want->task_id);
            CHECK(evs[i].time == want->time);
            CHECK(evs[i].reason == want->reason);
        }
        CHECK_FALSE(s.get_meta("imported_from_files", ec).empty());
        auto rows = s.quarantine_rows(ec);
        REQUIRE(rows.size() == 1);
        CHECK(rows[0].source.find("queue/broken.json") != std::string::npos);
    }
    // The old files, renamed and left in place.
    for (auto name : {"queue", "sessions", "pending", "active", "events.jsonl"}) {
        INFO(name);
        CHECK_FALSE(fs::exists(home + "/" + name));
        CHECK(fs::exists(home + "/" + name + ".imported"));
    }
    CHECK(files_in(home + "/queue.imported") == 10);
    CHECK(files_in(home + "/sessions.imported") == 2);
    CHECK(kugetsu::test::slurp(home + "/events.jsonl.imported") == kugetsu::test::slurp(fixture_home / "events.jsonl"));
    CHECK(fs::exists(home + "/quarantine"));   // 0.1's quarantine stays as it is
    // A second open imports nothing again.
    import_report again;
    sqlite_store s = open_home_store(home, ec, why, {}, &again);
    REQUIRE_FALSE(ec);
    CHECK_FALSE(again.imported);
    CHECK(again.renamed.empty());
    CHECK(s.list_items(ec).size() == 9);
    CHECK(all_events(s).size() == 19);
}

TEST_CASE("a 0.1 HOME with a live agent is imported and a dispatcher over it counts that agent against the cap") {
    temp_dir d;
    const std::string home = d / "home";
    REQUIRE(::mkdir(home.c_str(), 0700) == 0);
    REQUIRE(::mkdir((home + "/queue").c_str(), 0700) == 0);
    REQUIRE(::mkdir((home + "/sessions").c_str(), 0700) == 0);
    // The live agent: a real process of ours, written down as kugetsu 0.1 wrote its records.
    const pid_t agent = ::fork();
    REQUIRE(agent >= 0);
    if (agent == 0) {
        ::execl("/bin/sleep", "sleep", "30", static_cast<char*>(nullptr));
        ::_exit(127);
    }
    std::error_code ec;
    auto st = detail::read_proc_stat(agent, ec);
    REQUIRE(st);
    const process_ref ref{agent, st->start_time, detail::boot_id()};
    queue_item it = task("old-agent", 0);
    it.argv = {"sleep", "30"};
    it.state = task_state::running;
    it.attempts = 1;
    it.process = ref;
    it.started_at = it.updated_at;
    const session se{"old-agent", role::dev, "old-agent", ref, "", *it.started_at};
    write_file(home + "/queue/old-agent.json", nlohmann::json(it).dump(2));
    write_file(home + "/sessions/old-agent.json", nlohmann::json(se).dump(2));
    {
        auto disp = open_dispatcher(home, dispatcher_options{2, 3, 1s});
        CHECK(disp.store().get_item("old-agent", ec)->state == task_state::running);
        CHECK(disp.live() == 1);
        auto a = disp.start(task_spec{"new-a", {"/bin/sleep", "30"}});
        CHECK(a.status == start_status::started);
        auto b = disp.start(task_spec{"new-b", {"/bin/sleep", "30"}});
        CHECK(b.status == start_status::no_slot);
        CHECK_FALSE(disp.store().get_item("new-b", ec));
        CHECK(disp.live() == 2);
        // Clean up: stop both agents and record their ends.
        if (a.status == start_status::started) {
            disp.cancel("new-a");
            disp.spawner().wait(a.item.process, ec);
        }
        ::kill(agent, SIGKILL);
        CHECK(wait_child(agent) == 128 + SIGKILL);
        CHECK(disp.live() == 0);
    }
    CHECK(fs::exists(home + "/queue.imported/old-agent.json"));
}

TEST_CASE("an import cut short after its commit, before its renames, is finished by the next open without importing twice") {
    temp_dir d;
    const std::string home = copy_fixture(d);
    std::error_code ec;
    {
        sqlite_store s(home + "/state.db");
        s.open(ec);
        REQUIRE_FALSE(ec);
        auto rep = import_file_home(home, s, ec);
        REQUIRE_FALSE(ec);
        REQUIRE(rep.imported);
    }
    // As if the process died between the commit and the renames of queue/ and sessions/.
    fs::rename(home + "/queue.imported", home + "/queue");
    fs::rename(home + "/sessions.imported", home + "/sessions");
    std::string why;
    import_report rep;
    sqlite_store s = open_home_store(home, ec, why, {}, &rep);
    INFO(why);
    REQUIRE_FALSE(ec);
    CHECK_FALSE(rep.imported);
    CHECK(rep.renamed == std::vector<std::string>{"sessions -> sessions.imported", "queue -> queue.imported"});
    CHECK_FALSE(fs::exists(home + "/queue"));
    CHECK(files_in(home + "/queue.imported") == 9);
    CHECK_FALSE(fs::exists(home + "/queue.imported.2"));
    CHECK(s.list_items(ec).size() == 9);
    CHECK(s.list_sessions(ec).size() == 2);
    CHECK(all_events(s).size() == 19);
}

TEST_CASE("a kugetsu 0.1 daemon holding daemon.lock makes the import fail and change nothing") {
    temp_dir d;
    const std::string home = copy_fixture(d);
    pipe_pair locked, done;
    const pid_t daemon = fork_child([&] {
        locked.close_read();
        done.close_write();
        const int fd = ::open((home + "/daemon.lock").c_str(), O_RDWR | O_CLOEXEC);
        if (fd < 0) return 1;
        struct flock l{};
        l.l_type = F_RDLCK;
        l.l_whence = SEEK_SET;
        if (::fcntl(fd, F_OFD_SETLK, &l) != 0) return 2;
        locked.put('l');
        done.wait_eof();
        return 0;
    });
    locked.close_write();
    done.close_read();
    REQUIRE(locked.get() == 'l');
    std::error_code ec;
    std::string why;
    import_report rep;
    {
        sqlite_store s = open_home_store(home, ec, why, {}, &rep);
        CHECK(ec == errc::invalid_transition);
        CHECK(why.find("daemon") != std::string::npos);
        CHECK_FALSE(rep.imported);
    }
    for (auto name : {"queue", "sessions", "pending", "active", "events.jsonl"}) {
        INFO(name);
        CHECK(fs::exists(home + "/" + name));
        CHECK_FALSE(fs::exists(home + "/" + name + ".imported"));
    }
    {
        sqlite_store s(home + "/state.db");
        CHECK(s.list_items(ec).empty());
        CHECK(s.list_sessions(ec).empty());
        CHECK(all_events(s).empty());
        CHECK(s.get_meta("imported_from_files", ec).empty());
        CHECK_FALSE(ec);
    }
    done.close_write();   // the daemon stops
    CHECK(wait_child(daemon) == 0);
    sqlite_store s = open_home_store(home, ec, why, {}, &rep);
    INFO(why);
    REQUIRE_FALSE(ec);
    CHECK(rep.imported);
    CHECK(s.list_items(ec).size() == 9);
}
