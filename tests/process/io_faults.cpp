// Injected I/O failures (ENOSPC, a disk that fills up mid-write, EIO, a failing fsync, short
// writes, EINTR storms) through the system-call seam, at EVERY call index k of each
// operation, on a real state directory. After each run, with the faults removed:
//   - the operation succeeded, or failed with an error_code and a detail naming the file;
//     a failed write, fsync, rename or link never passes for a success;
//   - a fresh file_store lists every record without error, each the old or the new
//     version, no task that existed before is lost, and no dot-named temp file is left
//     (except when the unlink of that temp file is itself the injected failure: then it is
//     checked to be harmless, i.e. skipped by list);
//   - EINTR and short writes are retried: the operation succeeds.
// The dispatcher runs enqueue, start, process_queue and reap the same way; afterwards more
// passes with agents exiting bring every task to a final state, never above the cap, and no
// task runs twice. (Runs are deterministic: a run that leaves exactly the state of the
// fault-free run has its future, which is driven once; every other state is driven to its
// end.) Each test prints how many faults it injected per operation and kind, as lines
// starting "io_faults:". fsync is on (file_store durable) only where fsync is the fault.
#include <catch2/catch.hpp>

#include <kugetsu/kugetsu.hpp>

#include <algorithm>
#include <cstdlib>
#include <filesystem>
#include <functional>
#include <iostream>
#include <map>
#include <set>
#include <sstream>

#include <dirent.h>

#include "support/faults.hpp"
#include "support/proc.hpp"

using namespace kugetsu;
using kugetsu::test::fault;
using kugetsu::test::fault_hit;
using kugetsu::test::fault_injector;

namespace {

/// A fresh state directory on tmpfs when there is one (fsync is free there), else /tmp.
class state_dir {
public:
    state_dir() {
        std::string tmpl = (::access("/dev/shm", W_OK) == 0 ? "/dev/shm" : "/tmp");
        tmpl += "/kugetsu-io-XXXXXX";
        if (!::mkdtemp(tmpl.data())) std::abort();
        path_ = tmpl;
    }
    ~state_dir() {
        std::error_code ec;
        std::filesystem::remove_all(path_, ec);
    }
    state_dir(const state_dir&) = delete;
    state_dir& operator=(const state_dir&) = delete;
    const std::string& path() const noexcept { return path_; }
    std::string operator/(const std::string& n) const { return path_ + "/" + n; }

private:
    std::string path_;
};

struct mode {
    fault kind;
    bool every;   // a storm over every eligible call, run once
};

const std::vector<mode> all_modes = {
    {fault::enospc, false},    {fault::disk_full, false}, {fault::eio, false},  {fault::fsync_eio, false},
    {fault::short_write, false}, {fault::eintr, false},   {fault::short_write, true}, {fault::eintr, true},
};

std::string mode_name(const mode& m) { return std::string(test::name_of(m.kind)) + (m.every ? " (every call)" : ""); }

/// Runs with an injected fault, per operation and mode, printed by each test case as lines
/// starting "io_faults:".
struct tally {
    std::vector<std::pair<std::string, std::map<std::string, long>>> rows;
    long leftovers = 0;   // runs that left a (harmless) temp file
    long driven = 0;      // dispatcher runs that ended in a state of their own
    std::map<std::string, long>& row(const std::string& op) {
        for (auto& r : rows)
            if (r.first == op) return r.second;
        rows.emplace_back(op, std::map<std::string, long>{});
        return rows.back().second;
    }
    void print(const std::string& title) const {
        std::ostringstream out;
        long total = 0;
        for (auto& [op, m] : rows) {
            out << "io_faults: " << title << ": " << op << ":";
            for (auto& [k, n] : m) {
                out << " " << k << "=" << n;
                total += n;
            }
            out << "\n";
        }
        out << "io_faults: " << title << ": " << total << " runs with an injected fault";
        if (leftovers) out << ", " << leftovers << " left a harmless temp file (its unlink was the fault)";
        if (driven) out << ", " << driven << " left a state of their own, driven to the end";
        out << "\n";
        std::cout << out.str() << std::flush;   // one line per operation: quotable as is
    }
};

std::string dump(const queue_item& it) { return nlohmann::json(it).dump(); }
std::string dump(const session& s) { return nlohmann::json(s).dump(); }

std::vector<std::string> names_in(const std::string& dir) {
    std::vector<std::string> v;
    if (DIR* d = ::opendir(dir.c_str())) {
        while (const dirent* e = ::readdir(d))
            if (std::string_view(e->d_name) != "." && std::string_view(e->d_name) != "..") v.emplace_back(e->d_name);
        ::closedir(d);
    }
    std::sort(v.begin(), v.end());
    return v;
}

/// The file a detail must name for a failed call on `path`: a temp file stands for its record
/// (".a.json.tmp.1.2" -> "a.json"), anything else for itself.
std::string expected_name(const fault_hit& h) {
    std::string b = h.base();
    if (!b.empty() && b.front() == '.')
        if (auto t = b.find(".tmp."); t != std::string::npos) b = b.substr(1, t - 1);
    return b;
}

/// Temp files left in queue/ and sessions/ are errors unless the injected failure was the
/// unlink of that temp file; such a file is harmless if a fresh list skips it, which the
/// caller checks (no record beyond the expected ones). Returns how many were allowed.
long check_no_temp_files(const state_dir& d, const std::optional<fault_hit>& hit) {
    long allowed = 0;
    for (const char* sub : {"queue", "sessions"})
        for (auto& n : names_in(d / sub)) {
            if (n.front() != '.') continue;
            const bool unlink_failed = hit && hit->c == test::call::unlinkat && hit->base() == n;
            INFO("left behind: " << sub << "/" << n);
            CHECK(unlink_failed);
            allowed += unlink_failed;
        }
    return allowed;
}

/// The index never misses a task, whatever call failed: a fresh store finds every pending,
/// notified and running record through its markers alone (items_in_state), before a full
/// listing (which re-creates missing markers) has run.
void check_index(const std::string& home) {
    file_store idx(home, {false, false});
    std::error_code ec;
    std::set<std::string> indexed;
    for (auto st : {task_state::pending, task_state::notified, task_state::running})
        for (auto& it : idx.items_in_state(st, static_cast<std::size_t>(-1), ec)) indexed.insert(it.id);
    INFO("indexed read: " << idx.last_error_detail());
    REQUIRE_FALSE(ec);
    file_store all(home, {false, false});
    for (auto& it : all.list_items(ec)) {
        INFO("task " << it.id << " is " << to_string(it.state));
        if (!is_final(it.state)) CHECK(indexed.count(it.id) == 1);
    }
    REQUIRE_FALSE(ec);
}

// ---- the store ------------------------------------------------------------------------------

queue_item make_item(std::string id, task_state st, int pid = 0) {
    queue_item it;
    it.id = std::move(id);
    it.argv = {"agent", "--work", std::string(300, 'x')};   // a torn write would stop mid-record
    it.state = st;
    it.enqueued_at = it.updated_at = timestamp{std::chrono::seconds(1'800'000'000)};
    if (pid) it.process = {pid, 77, "boot"};
    return it;
}
session make_session(const queue_item& it) {
    return {it.id, role::dev, it.id, it.process, "/ws/" + it.id, it.updated_at};
}

/// Baseline: a pending, b running with a session, c completed.
struct baseline {
    queue_item a = make_item("a", task_state::pending);
    queue_item b = make_item("b", task_state::running, 4242);
    queue_item c = make_item("c", task_state::completed);
    session sb = make_session(b);
    void seed(const std::string& root) const {
        file_store s(root, {false, true});
        std::error_code ec;
        for (auto* it : {&a, &b, &c}) {
            s.put_item(*it, ec);
            REQUIRE_FALSE(ec);
        }
        s.put_session(sb, ec);
        REQUIRE_FALSE(ec);
    }
};

/// What a store operation may leave: for each record, its old and its new version (nullopt:
/// absent). A successful operation must leave the new one.
struct expectation {
    std::map<std::string, std::pair<std::optional<std::string>, std::optional<std::string>>> items, sessions;
};

struct store_op {
    std::string name;
    std::function<void(file_store&, std::error_code&)> run;
    std::function<expectation(const baseline&)> expect;
    /// For read-only operations: whether a success returned the right thing.
    std::function<bool()> result_ok = [] { return true; };
};

expectation unchanged(const baseline& b) {
    expectation e;
    for (auto* it : {&b.a, &b.b, &b.c}) e.items[it->id] = {dump(*it), dump(*it)};
    e.sessions[b.sb.id] = {dump(b.sb), dump(b.sb)};
    return e;
}

const baseline base;
const queue_item new_item = make_item("t-new", task_state::pending);
const queue_item a_v2 = [] {
    auto it = make_item("a", task_state::notified);
    it.attempts = 1;
    it.owner = {9, 9, "boot"};
    it.last_error = std::string(500, 'y');   // a different size: a torn mix would show
    return it;
}();
const session sa = make_session(make_item("a", task_state::running, 5151));

std::vector<store_op> store_ops() {
    std::vector<store_op> v;
    v.push_back({"open", [](file_store& s, std::error_code& ec) { s.open(ec); }, unchanged});
    v.push_back({"create_item", [](file_store& s, std::error_code& ec) { s.create_item(new_item, ec); },
                 [](const baseline& b) {
                     auto e = unchanged(b);
                     e.items["t-new"] = {std::nullopt, dump(new_item)};
                     return e;
                 }});
    v.push_back({"put_item", [](file_store& s, std::error_code& ec) { s.put_item(a_v2, ec); },
                 [](const baseline& b) {
                     auto e = unchanged(b);
                     e.items["a"] = {dump(b.a), dump(a_v2)};
                     return e;
                 }});
    v.push_back({"put_session", [](file_store& s, std::error_code& ec) { s.put_session(sa, ec); },
                 [](const baseline& b) {
                     auto e = unchanged(b);
                     e.sessions["a"] = {std::nullopt, dump(sa)};
                     return e;
                 }});
    v.push_back({"remove_session", [](file_store& s, std::error_code& ec) { s.remove_session("b", ec); },
                 [](const baseline& b) {
                     auto e = unchanged(b);
                     e.sessions["b"] = {dump(b.sb), std::nullopt};
                     return e;
                 }});
    store_op list{"list_items", {}, unchanged};
    auto got = std::make_shared<std::vector<queue_item>>();
    list.run = [got](file_store& s, std::error_code& ec) { *got = s.list_items(ec); };
    list.result_ok = [got] {
        std::vector<std::string> want, have;
        for (auto* it : {&base.a, &base.b, &base.c}) want.push_back(dump(*it));
        for (auto& it : *got) have.push_back(dump(it));
        std::sort(want.begin(), want.end());
        std::sort(have.begin(), have.end());
        return want == have;
    };
    v.push_back(std::move(list));
    return v;
}

/// Checks a record against its allowed versions; `ok` is whether the operation succeeded.
template <class T>
void check_records(const std::vector<T>& have,
                   const std::map<std::string, std::pair<std::optional<std::string>, std::optional<std::string>>>& want,
                   bool ok, const char* what) {
    std::map<std::string, std::string> by_id;
    for (auto& r : have) by_id[r.id] = dump(r);
    for (auto& [id, versions] : want) {
        INFO(what << " " << id);
        const auto& [old_v, new_v] = versions;
        auto f = by_id.find(id);
        const std::optional<std::string> now = f == by_id.end() ? std::nullopt : std::optional<std::string>(f->second);
        if (ok) {
            CHECK(now == new_v);   // a success leaves the new version
        } else {
            CHECK((now == old_v || now == new_v));   // never a mix, never lost
        }
        by_id.erase(id);
    }
    INFO(what << ": records nobody wrote");
    CHECK(by_id.empty());
}

/// One run of `op` with `m` at call k. Returns whether a fault was injected.
bool run_store_op(const store_op& op, const mode& m, long k, tally& t) {
    state_dir d;
    base.seed(d.path());
    const bool durable = m.kind == fault::fsync_eio;
    file_store s(d.path(), {durable, true});
    std::error_code ec;
    if (op.name != "open") {
        s.open(ec);
        REQUIRE_FALSE(ec);
    }
    std::optional<fault_hit> hit;
    bool injected = false;
    {
        fault_injector inj(m.kind, k, m.every);
        op.run(s, ec);
        hit = inj.first();
        injected = inj.hit();
    }
    INFO(op.name << " with " << mode_name(m) << " at call " << k << ": "
                 << (hit ? std::string(test::name_of(hit->c)) + " " + hit->path : std::string("no fault hit")));
    INFO("result: " << (ec ? ec.message() : "success") << "; detail: " << s.last_error_detail());
    if (test::transparent(m.kind)) CHECK_FALSE(ec);
    if (ec) {
        CHECK_FALSE(s.last_error_detail().empty());
        CHECK(s.last_error_detail().find(d.path()) != std::string::npos);
        if (hit && !hit->path.empty()) CHECK(s.last_error_detail().find(expected_name(*hit)) != std::string::npos);
    } else if (hit && !test::transparent(m.kind)) {
        INFO("a failed " << test::name_of(hit->c) << " passed for a success");
        CHECK_FALSE(hit->must_surface());
    }
    if (!ec) CHECK(op.result_ok());
    CHECK(s.quarantined().empty());

    check_index(d.path());
    // With the faults gone, a fresh store sees every record whole.
    file_store fresh(d.path(), {false, false});   // quarantine off: anything unreadable fails here
    std::error_code lec;
    const auto items = fresh.list_items(lec);
    INFO("fresh list_items: " << fresh.last_error_detail());
    REQUIRE_FALSE(lec);
    const auto sessions = fresh.list_sessions(lec);
    INFO("fresh list_sessions: " << fresh.last_error_detail());
    REQUIRE_FALSE(lec);
    const auto want = op.expect(base);
    check_records(items, want.items, !ec, "item");
    check_records(sessions, want.sessions, !ec, "session");
    t.leftovers += check_no_temp_files(d, hit);
    CHECK(names_in(d / "quarantine").empty());
    if (injected) ++t.row(op.name)[mode_name(m)];
    return injected;
}

/// Runs `one(k)` for k = 1, 2, ... until a run injects no fault. Storm modes run once.
template <class F>
void every_k(const mode& m, F one) {
    if (m.every) {
        one(1);
        return;
    }
    for (long k = 1; k < 5000; ++k)
        if (!one(k)) return;
    FAIL("the operation never ran out of calls");
}

} // namespace

TEST_CASE("file_store operations survive a fault at every system call: the old or the new record, never a mix",
          "[io_faults]") {
    tally t;
    for (const auto& op : store_ops())
        for (const auto& m : all_modes) every_k(m, [&](long k) { return run_store_op(op, m, k, t); });
    t.print("file_store");
    // The sweep reached every kind of fault on every writing operation.
    for (const char* op : {"create_item", "put_item", "put_session"})
        for (const auto& m : all_modes) CHECK(t.row(op)[mode_name(m)] > 0);
    CHECK(t.row("remove_session")[mode_name({fault::eio, false})] > 0);
    CHECK(t.row("remove_session")[mode_name({fault::fsync_eio, false})] > 0);
    CHECK(t.row("list_items")[mode_name({fault::eio, false})] > 0);
    CHECK(t.row("list_items")[mode_name({fault::eintr, false})] > 0);
}

// ---- the notifier -----------------------------------------------------------------------------

namespace {

event make_event(const std::string& id, int n) {
    event e;
    e.type = event_type::task_error;
    e.task_id = id;
    e.time = timestamp{std::chrono::seconds(1'800'000'000 + n)};
    e.attempt = n;
    e.reason = std::string(200 + 37 * n, 'r');
    return e;
}

std::vector<std::string> lines_of(const std::string& text) {
    std::vector<std::string> v;
    std::istringstream in(text);
    for (std::string l; std::getline(in, l);) v.push_back(l);
    return v;
}

std::string line_of(const event& e) { return nlohmann::json(e).dump(-1, ' ', false, nlohmann::json::error_handler_t::replace); }

bool run_notify(const mode& m, long k, tally& t) {
    state_dir d;
    const std::string path = d / "events.jsonl";
    {
        jsonl_notifier seed(path);
        seed.notify(make_event("old1", 1));
        seed.notify(make_event("old2", 2));
        REQUIRE(seed.failures() == 0);
    }
    const std::string before = test::slurp(path);
    std::optional<fault_hit> hit;
    bool injected = false;
    std::error_code seen;
    jsonl_notifier n(path, [&](const std::error_code& ec, const event&) { seen = ec; });
    {
        fault_injector inj(m.kind, k, m.every);
        n.notify(make_event("new", 3));
        hit = inj.first();
        injected = inj.hit();
    }
    INFO("notify with " << mode_name(m) << " at call " << k << ": "
                        << (hit ? std::string(test::name_of(hit->c)) + " " + hit->path : std::string("no fault hit")));
    INFO("failures " << n.failures() << "; detail: " << n.last_error_detail());
    const bool failed = n.failures() == 1;
    CHECK(n.failures() <= 1);
    if (test::transparent(m.kind)) CHECK_FALSE(failed);
    if (failed) {
        CHECK(seen);
        CHECK(n.last_error_detail().find(path) != std::string::npos);
    } else if (hit && !test::transparent(m.kind)) {
        CHECK_FALSE(hit->must_surface());
    }
    // Whole lines or nothing: the old lines, then the new one only if it was written.
    const std::string after = test::slurp(path);
    const std::string want_new = before + line_of(make_event("new", 3)) + "\n";
    if (failed) CHECK((after == before || after == want_new));
    else CHECK(after == want_new);
    // The next event, with no fault, starts on its own line.
    n.notify(make_event("next", 4));
    CHECK(n.failures() == (failed ? 1u : 0u));
    const auto lines = lines_of(test::slurp(path));
    for (auto& l : lines) {
        std::error_code pec;
        std::string why;
        CHECK(parse_event(l, pec, why));
    }
    REQUIRE_FALSE(lines.empty());
    CHECK(lines.back() == line_of(make_event("next", 4)));
    if (injected) ++t.row("notify")[mode_name(m)];
    return injected;
}

} // namespace

TEST_CASE("jsonl_notifier under a fault at every system call writes an event whole or not at all", "[io_faults]") {
    tally t;
    for (const auto& m : all_modes) every_k(m, [&](long k) { return run_notify(m, k, t); });
    t.print("jsonl_notifier");
    for (const auto& m : all_modes)
        if (m.kind != fault::fsync_eio) CHECK(t.row("notify")[mode_name(m)] > 0);   // it never fsyncs
}

TEST_CASE("jsonl_notifier: a torn line that cannot be cut off never runs into the next event", "[io_faults]") {
    state_dir d;
    const std::string path = d / "events.jsonl";
    jsonl_notifier n(path);
    n.notify(make_event("old", 1));
    {
        // The disk fills up in the middle of the line, and the ftruncate that would cut the
        // torn part off fails too.
        fault_injector inj(fault::disk_full, 1);
        detail::sys().ftruncate = [](int, off_t) { return errno = EIO, -1; };
        n.notify(make_event("torn", 2));
        CHECK(inj.hit());
    }
    CHECK(n.failures() == 1);
    CHECK(n.last_error_detail().find("torn line") != std::string::npos);
    n.notify(make_event("next", 3));
    const auto lines = lines_of(test::slurp(path));
    REQUIRE(lines.size() == 3);
    CHECK(lines[0] == line_of(make_event("old", 1)));
    CHECK(line_of(make_event("torn", 2)).rfind(lines[1], 0) == 0);   // the torn part, on its own line
    CHECK(lines[1].size() < line_of(make_event("torn", 2)).size());
    CHECK(lines[2] == line_of(make_event("next", 3)));
}

// ---- the dispatcher ---------------------------------------------------------------------------

namespace {

using fault_dispatcher =
    basic_dispatcher<flock_lock, fake_spawner, jsonl_notifier, file_store, manual_clock, null_workspace>;

constexpr int cap = 3;

struct rig {
    state_dir d;
    fake_spawner spawner;
    manual_clock clock;
    fault_dispatcher disp;
    explicit rig(bool durable)
        : disp(flock_lock(d / "lock"), spawner, jsonl_notifier(d / "events.jsonl"), file_store(d.path(), {durable, true}),
               clock, null_workspace{}, dispatcher_options{cap, 3, std::chrono::seconds(1)}) {}

    static task_spec spec(const std::string& id) { return {id, {"agent", "--work"}, role::dev, {}, {}, {}}; }

    /// Every fake process the spawner made, by pid.
    std::map<int, fake_spawner::process> processes() const {
        std::map<int, fake_spawner::process> m;
        for (int pid = 1000;; ++pid) {
            try {
                m.emplace(pid, spawner.get(pid));
            } catch (const std::out_of_range&) {
                return m;
            }
        }
    }
    void exit_running() {
        for (auto& [pid, p] : processes())
            if (p.ran && p.state == process_state::running) spawner.exit(pid, 0);
    }
};

/// Baseline: cap 3; a and b running (a has exited, not yet reaped); c and e pending, so that
/// a pass claims two tasks. Made once by a dispatcher without faults; each run copies
/// the files and replays the spawner.
class dispatcher_baseline {
public:
    dispatcher_baseline() : r_(false) {
        for (auto id : {"a", "b"}) r_.disp.enqueue(rig::spec(id));
        r_.clock.advance(std::chrono::seconds(1));
        const auto rep = r_.disp.process_queue();
        REQUIRE(rep.started == 2);
        for (auto id : {"c", "e"}) r_.disp.enqueue(rig::spec(id));
        r_.spawner.exit(1000, 0);   // a
        now_ = r_.clock.now() + std::chrono::seconds(1);
    }
    void seed(rig& r) const {
        namespace fs = std::filesystem;
        for (auto& e : fs::directory_iterator(r_.d.path()))
            fs::copy(e.path(), r.d / e.path().filename().string(), fs::copy_options::recursive);
        std::error_code ec;
        for (auto id : {"a", "b"}) {
            const auto p = r.spawner.spawn({id, {"agent", "--work"}, ""}, ec);
            REQUIRE_FALSE(ec);
            r.spawner.release(p, ec);
            REQUIRE_FALSE(ec);
        }
        r.spawner.exit(1000, 0);
        r.clock.set(now_);
    }

private:
    rig r_;
    timestamp now_{};
};

struct dispatcher_op {
    std::string name;
    std::function<void(fault_dispatcher&, std::error_code&)> run;
    bool creates_new = false;
};

std::vector<dispatcher_op> dispatcher_ops() {
    return {
        {"enqueue", [](fault_dispatcher& d, std::error_code& ec) { d.enqueue(rig::spec("t-new"), ec); }, true},
        {"start", [](fault_dispatcher& d, std::error_code& ec) { d.start(rig::spec("t-new"), ec); }, true},
        {"process_queue", [](fault_dispatcher& d, std::error_code& ec) { d.process_queue(ec); }},
        {"reap", [](fault_dispatcher& d, std::error_code& ec) { d.reap(ec); }},
    };
}

/// The state a dispatcher's future depends on: the records, and the fake processes. Runs are
/// deterministic (manual clock, fake pids), so two runs in the same state go on the same way.
struct snapshot {
    std::map<std::string, std::string> files;
    std::vector<std::string> procs;
    friend bool operator==(const snapshot&, const snapshot&) = default;
};

snapshot take_snapshot(const rig& r) {
    snapshot s;
    for (const char* sub : {"queue", "sessions"})
        for (auto& n : names_in(r.d / sub))
            if (n.front() != '.') s.files[std::string(sub) + "/" + n] = test::slurp(r.d / sub + "/" + n);
    for (auto& [pid, p] : r.processes())
        s.procs.push_back(std::to_string(pid) + " " + p.request.task_id + " ran=" + std::to_string(p.ran) +
                          " held=" + std::to_string(p.held) + " state=" + std::to_string(static_cast<int>(p.state)));
    return s;
}

/// With the faults gone: passes with agents exiting bring every task to a final state, the
/// cap held, no task ran twice, and nothing is lost or left behind.
void drive_and_check(rig& r, const dispatcher_op& op, const std::error_code& op_ec) {
    check_index(r.d.path());
    std::error_code pec;
    bool all_final = false;
    std::vector<queue_item> items;
    for (int round = 0; round < 8 && !all_final; ++round) {
        r.clock.advance(std::chrono::seconds(1));
        r.disp.process_queue(pec);
        INFO("pass " << round << ": " << r.disp.last_error_detail());
        REQUIRE_FALSE(pec);
        r.exit_running();
        r.disp.reap(pec);
        REQUIRE_FALSE(pec);
        items = r.disp.store().list_items(pec);
        REQUIRE_FALSE(pec);
        all_final = std::all_of(items.begin(), items.end(), [](auto& it) { return is_final(it.state); });
    }
    file_store fresh(r.d.path(), {false, false});
    items = fresh.list_items(pec);
    INFO("fresh list_items: " << fresh.last_error_detail());
    REQUIRE_FALSE(pec);
    std::ostringstream states;
    for (auto& it : items) states << it.id << "=" << to_string(it.state) << "(" << it.last_error << ") ";
    INFO("items: " << states.str());
    CHECK(all_final);
    std::set<std::string> ids;
    for (auto& it : items) ids.insert(it.id);
    for (auto id : {"a", "b", "c", "e"}) CHECK(ids.count(id));   // nothing lost
    if (op.creates_new && !op_ec) CHECK(ids.count("t-new"));
    CHECK(ids.size() <= 5);
    CHECK(r.spawner.peak() <= cap);
    std::map<std::string, int> runs;
    for (auto& [pid, p] : r.processes()) runs[p.request.task_id] += p.ran;
    for (auto& [id, n] : runs) {
        INFO("task " << id << " ran " << n << " times");
        CHECK(n <= 1);
    }
    for (auto& it : items) {
        INFO("task " << it.id << " is " << to_string(it.state) << ": " << it.last_error);
        // Every agent exits 0: a task that ran completed, unless its exit status was consumed
        // by a poll whose record then failed (fake_spawner reports an exit once).
        if (runs[it.id] == 1 && it.state != task_state::completed)
            CHECK(it.last_error.find("unknown") != std::string::npos);
    }
    CHECK(fresh.list_sessions(pec).empty());
    CHECK_FALSE(pec);
}

bool run_dispatcher_op(const dispatcher_baseline& base_state, const dispatcher_op& op, const snapshot& reference,
                       const mode& m, long k, tally& t) {
    rig r(m.kind == fault::fsync_eio);
    base_state.seed(r);
    std::error_code ec;
    std::optional<fault_hit> hit;
    bool injected = false;
    {
        fault_injector inj(m.kind, k, m.every);
        op.run(r.disp, ec);
        hit = inj.first();
        injected = inj.hit();
    }
    INFO(op.name << " with " << mode_name(m) << " at call " << k << ": "
                 << (hit ? std::string(test::name_of(hit->c)) + " " + hit->path : std::string("no fault hit")));
    INFO("result: " << (ec ? ec.message() : "success") << "; detail: " << r.disp.last_error_detail());
    if (test::transparent(m.kind)) CHECK_FALSE(ec);
    if (ec) {
        CHECK_FALSE(r.disp.last_error_detail().empty());
        // A record is named by its directory and name, the lock file by its whole path.
        if (hit && !hit->path.empty())
            CHECK(r.disp.last_error_detail().find(hit->base() == "lock" ? hit->path : expected_name(*hit)) !=
                  std::string::npos);
    }
    const auto snap = take_snapshot(r);
    // Retried faults leave exactly the state of a run without faults.
    if (test::transparent(m.kind)) CHECK(snap == reference);
    // Anywhere else, a state a fault-free run never reaches is driven to its end. (The same
    // state as the fault-free run has the same future, checked once by the reference run.)
    if (snap != reference) {
        drive_and_check(r, op, ec);
        ++t.driven;
    }
    t.leftovers += check_no_temp_files(r.d, hit);
    CHECK(names_in(r.d / "quarantine").empty());
    for (auto& l : lines_of(test::slurp(r.d / "events.jsonl"))) {   // whole lines only
        std::error_code jec;
        std::string why;
        CHECK(parse_event(l, jec, why));
    }
    if (injected) ++t.row(op.name)[mode_name(m)];
    return injected;
}

} // namespace

TEST_CASE("the dispatcher survives a fault at every system call: every task ends once, never above the cap",
          "[io_faults]") {
    tally t;
    const dispatcher_baseline b;
    for (const auto& op : dispatcher_ops()) {
        // The reference: the operation without faults, then driven to its end.
        snapshot reference;
        {
            rig r(false);
            b.seed(r);
            std::error_code ec;
            op.run(r.disp, ec);
            INFO(op.name << " without faults: " << r.disp.last_error_detail());
            REQUIRE_FALSE(ec);
            reference = take_snapshot(r);
            drive_and_check(r, op, ec);
        }
        for (const auto& m : all_modes) every_k(m, [&](long k) { return run_dispatcher_op(b, op, reference, m, k, t); });
    }
    t.print("dispatcher");
    for (const auto& op : dispatcher_ops())
        for (const auto& m : all_modes) CHECK(t.row(op.name)[mode_name(m)] > 0);
}
