// Injected I/O failures, at EVERY call index k of a scenario, through each component's own
// seam.
//
// THE STORE: SQLite's VFS (tests/support/sqlite_faults.hpp), as SQLite's own test suite does.
// A wrapping VFS gives ENOSPC (SQLITE_FULL), a disk that fills up in the middle of a write and
// stays full, EIO on any file call (the I/O error each method can return) and failing fsyncs
// (xSync); one level down, in the unix VFS's system-call table, 1-byte short writes and storms
// of EINTR, which the unix VFS must absorb; and short writes and EINTR on every call. For each
// kind and every k until a run has no k-th eligible call, a scenario runs on a FRESH
// sqlite_store (a copy of an empty database in /dev/shm when writable: fsyncs are free there)
// opened with that VFS: a dispatcher (fake_spawner, null_workspace, manual_clock, a recording
// notifier, cap 3) enqueues five tasks, starts one directly, runs the queue, lets agents exit,
// reaps, cancels a pending and a running task, runs the queue and reaps again, then closes
// the store (a checkpoint on close is part of the scenario). What was ACCEPTED is recorded: an
// operation that returned without error (the enqueued id, the start that returned started,
// the agents a pass released, the ends of the agents that had ended before a reaping
// operation, a cancel). Then, with the fault removed, a fresh store (the default VFS,
// quarantine off) must find:
//   - every accepted task, none of its accepted changes undone: an accepted start is running
//     (with its session) or final, never back to pending; an accepted end or cancel is final;
//   - nothing half-written: PRAGMA integrity_check and check() ok (every row valid), no row
//     in quarantine, every session names a claimed or running task, every running task has
//     its session, every final task exactly one end event;
//   - the events outbox numbered 1..N without gaps or duplicates, with the event of every
//     accepted change, and every event the notifier was given is in it;
//   - every agent that ran named by a committed session or by the final task it ended.
// During the run, after every operation: no agent stays held (a failed commit abandoned them
// all), and a failed operation returned an error_code whose last_error_detail() names the
// database file (a refusal, unknown_task or invalid_transition, names the task instead).
// Then the same dispatcher, on a default-VFS store (the disk repaired), is driven to the end
// (agents exit, passes until every task is final): no session left, the fake spawner's peak
// never above the cap (over the faulty run and the rest), no task ran twice, no accepted final
// state changed, and no task of which no agent ran ended "exit code unknown". Short writes and
// EINTR must change nothing: the run succeeds and leaves exactly the state of the run without
// faults. Runs are deterministic, so a run that leaves a state already checked (the rows, what
// was accepted, each operation's outcome, the fake processes) is not checked and driven again:
// most faults at different calls of one operation leave the same state.
//
// A FAILED COMMIT THAT IS VISIBLE ALL THE SAME. COMMIT makes the unit visible before
// sqlite_store::sync_wal's fdatasync: if that fails, commit() reports the error ("the commit
// is visible, maybe not durable") for a unit others already read. The dispatcher treats any
// failed commit as failed: it abandons every held agent, so none of them ever runs; their
// sessions are committed all the same, and the next reap gives their tasks back as
// interrupted starts (start_interrupted, the attempt counted), never as agents that ran and
// ended unknown. That is safe: a session whose agent never runs costs a slot until the next
// reap, and never lets an agent run unrecorded. (A disk that fills up half-way through a WAL
// frame never left a whole frame here: a b-tree page keeps its cells at its end.)
//
// CREATION: opening a new database (schema, WAL mode) under the same faults, at every k: it
// fails with an error naming the database, or creates it whole; either way the next open
// completes it.
//
// THE NOTIFIER: jsonl_notifier writes through kugetsu's system-call seam (detail::sys(),
// tests/support/faults.hpp); its cases are kept from the file-store era.
//
// Each test prints how many faults it injected per kind, as lines starting "io_faults:".
#include <catch2/catch.hpp>

#include <kugetsu/kugetsu.hpp>
#include <kugetsu/store/sqlite_store.hpp>

#include <algorithm>
#include <chrono>
#include <cstdlib>
#include <filesystem>
#include <iostream>
#include <map>
#include <optional>
#include <set>
#include <sstream>

#include <sys/stat.h>

#include "support/faults.hpp"
#include "support/proc.hpp"
#include "support/sqlite_faults.hpp"

using namespace kugetsu;
using kugetsu::test::fault;
using kugetsu::test::fault_hit;
using kugetsu::test::fault_injector;
using kugetsu::test::sqlite_fault;
using kugetsu::test::sqlite_fault_injector;

namespace {

/// A fresh private directory on tmpfs when there is one (fsync is free there), else /tmp.
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

/// Counts per row and kind, printed as lines starting "io_faults:".
struct tally {
    std::vector<std::pair<std::string, std::map<std::string, long>>> rows;
    std::map<std::string, long>& row(const std::string& name) {
        for (auto& r : rows)
            if (r.first == name) return r.second;
        rows.emplace_back(name, std::map<std::string, long>{});
        return rows.back().second;
    }
    long get(const std::string& name, const std::string& kind) { return row(name)[kind]; }
    void print(const std::string& title) const {
        std::ostringstream out;
        for (auto& [name, m] : rows) {
            out << "io_faults: " << title << ": " << name << ":";
            for (auto& [k, n] : m) out << " " << k << "=" << n;
            out << "\n";
        }
        std::cout << out.str() << std::flush;   // one line per row: quotable as is
    }
};

} // namespace

// ---- the notifier, through the system-call seam ------------------------------------------------

namespace {

struct mode {
    fault kind;
    bool every;   // a storm over every eligible call, run once
};

const std::vector<mode> all_modes = {
    {fault::enospc, false},      {fault::disk_full, false}, {fault::eio, false},        {fault::fsync_eio, false},
    {fault::short_write, false}, {fault::eintr, false},     {fault::short_write, true}, {fault::eintr, true},
};

std::string mode_name(const mode& m) { return std::string(test::name_of(m.kind)) + (m.every ? " (every call)" : ""); }

/// Runs `one(k)` for k = 1, 2, ... until a run injects no fault. Storm modes run once.
template <class F>
void every_k(bool every, F one) {
    if (every) {
        one(1);
        return;
    }
    for (long k = 1; k < 20000; ++k)
        if (!one(k)) return;
    FAIL("the scenario never ran out of calls");
}

event make_event(const std::string& id, int n) {
    event e;
    e.type = event_type::task_error;
    e.task_id = id;
    e.time = timestamp{std::chrono::seconds(1'800'000'000 + n)};
    e.attempt = n;
    e.pid = 1000 + n;
    e.exit_code = n % 256;
    e.reason = event_reason::exit_code;
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
    for (const auto& m : all_modes) every_k(m.every, [&](long k) { return run_notify(m, k, t); });
    t.print("jsonl_notifier");
    for (const auto& m : all_modes)
        if (m.kind != fault::fsync_eio) CHECK(t.get("notify", mode_name(m)) > 0);   // it never fsyncs
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

TEST_CASE("jsonl_notifier compact under a fault at every system call leaves the file whole: as it was, or compacted",
          "[io_faults]") {
    for (const auto kind : {fault::enospc, fault::disk_full, fault::eio, fault::fsync_eio, fault::short_write, fault::eintr}) {
        for (long k = 1; k <= 12; ++k) {
            state_dir d;
            const std::string path = d / "events.jsonl";
            jsonl_notifier n(path);
            for (int i = 1; i <= 6; ++i) n.notify(make_event(i % 2 ? "gone" : "kept", i));
            const std::string before = test::slurp(path);
            std::error_code ec;
            std::size_t dropped = 0;
            bool hit = false;
            {
                fault_injector inj(kind, k);
                dropped = n.compact([](const event& e) { return e.task_id == "gone"; }, ec);
                hit = inj.hit();
            }
            INFO(test::name_of(kind) << " at call " << k << ": " << (ec ? n.last_error_detail() : "ok"));
            const std::string after = test::slurp(path);
            if (ec) {
                CHECK(after == before);
                CHECK(n.last_error_detail().find(path) != std::string::npos);
            } else {
                CHECK(dropped == 3);
                const auto lines = lines_of(after);
                CHECK(lines.size() == 3);
                for (const auto& l : lines) CHECK(l.find("\"kept\"") != std::string::npos);
            }
            CHECK_FALSE(std::filesystem::exists(path + ".compact.tmp"));
            if (!hit) break;   // past the last system call
        }
    }
}

// ---- the store, through SQLite's VFS ----------------------------------------------------------

namespace {

using fault_dispatcher =
    basic_dispatcher<null_lock, fake_spawner, callback_notifier, sqlite_store, manual_clock, null_workspace>;

constexpr int cap = 3;
const std::vector<std::string> all_ids = {"a", "b", "c", "d", "e", "s"};

struct sqlite_mode {
    sqlite_fault kind;
    bool every;
};

const std::vector<sqlite_mode> sqlite_modes = {
    {sqlite_fault::enospc, false},      {sqlite_fault::disk_full, false}, {sqlite_fault::eio, false},
    {sqlite_fault::fsync, false},       {sqlite_fault::short_write, false}, {sqlite_fault::eintr, false},
    {sqlite_fault::short_write, true},  {sqlite_fault::eintr, true},
};

std::string mode_name(const sqlite_mode& m) {
    return std::string(test::name_of(m.kind)) + (m.every ? " (every call)" : "");
}

sqlite_store_options store_options(bool faults) {
    sqlite_store_options o;
    o.busy_timeout = std::chrono::milliseconds(2000);   // nothing else uses the database: a wait is a bug
    if (faults) o.vfs = sqlite_fault_injector::vfs_name;
    else o.quarantine = false;   // the checks read with quarantine off: anything unreadable fails
    return o;
}

task_spec spec(const std::string& id) { return {id, {"agent", "--work"}, role::dev, {}, {}, {}}; }

/// Every fake process the spawner made, by pid.
std::map<int, fake_spawner::process> processes_of(const fake_spawner& sp) {
    std::map<int, fake_spawner::process> m;
    for (int pid = 1000;; ++pid) {
        try {
            m.emplace(pid, sp.get(pid));
        } catch (const std::out_of_range&) {
            return m;
        }
    }
}

/// The rows a query returns, as text (raw: no JSON is parsed), or why it failed.
std::string raw_rows(sqlite3* db, const char* sql) {
    sqlite3_stmt* s = nullptr;
    if (sqlite3_prepare_v2(db, sql, -1, &s, nullptr) != SQLITE_OK) return std::string("error: ") + sqlite3_errmsg(db);
    std::string out;
    int rc;
    while ((rc = sqlite3_step(s)) == SQLITE_ROW) {
        for (int i = 0; i < sqlite3_column_count(s); ++i) {
            const auto* t = sqlite3_column_text(s, i);
            out += t ? reinterpret_cast<const char*>(t) : "NULL";
            out += '\t';
        }
        out += '\n';
    }
    if (rc != SQLITE_DONE) out += std::string("error: ") + sqlite3_errmsg(db);
    sqlite3_finalize(s);
    return out;
}

/// An empty kugetsu database (the schema only), made once; each run of the dispatcher scenario
/// starts from a copy (copy_database). (Its creation under faults has a test of its own.)
const std::string& template_db() {
    static const state_dir dir;
    static const std::string path = [] {
        const std::string p = dir / "state.db";
        sqlite_store s(p, store_options(false));
        s.open();
        // Everything into the database file, the WAL emptied (whether or not a close would).
        REQUIRE(sqlite3_wal_checkpoint_v2(s.handle(), nullptr, SQLITE_CHECKPOINT_TRUNCATE, nullptr, nullptr) == SQLITE_OK);
        return p;
    }();
    return path;
}

/// A fresh copy of the template at `to` (the database, and its WAL if one is kept), private.
void copy_database(const std::string& to) {
    for (const char* suffix : {"", "-wal"}) {
        const std::string from = template_db() + suffix;
        if (::access(from.c_str(), F_OK) != 0) continue;
        std::filesystem::copy_file(from, to + suffix);
        ::chmod((to + suffix).c_str(), 0600);
    }
}

/// What the faulty run accepted: operations that returned without error.
struct accepted {
    std::set<std::string> enqueued;            ///< enqueue returned the task
    std::set<std::string> started;             ///< start returned started; a pass released its agent
    std::set<std::string> ended;               ///< its agent had ended before a reaping operation
    std::set<std::string> cancelled_pending;   ///< cancel returned it cancelled
    std::set<std::string> cancelled_running;   ///< cancel returned it running, its stop asked for
};

/// Problems found in a run, reported together (one CHECK per run keeps thousands of runs fast).
struct findings {
    std::vector<std::string> v;
    void expect(bool ok, const std::string& what) {
        if (!ok) v.push_back(what);
    }
    std::string dump() const {
        std::string s;
        for (auto& l : v) s += "  " + l + "\n";
        return s;
    }
};

struct run_result {
    /// What the checks and the future of a run depend on: every row (raw), what was accepted,
    /// the outcome of each operation, what the notifier was given and the fake processes.
    /// Runs are deterministic (fresh copies, manual clock, fake pids), so two runs with the
    /// same state have the same checks and the same future: a state already checked (by the
    /// run without faults, or an earlier run) is not checked and driven again.
    std::string state;
    bool checked = false;   ///< a state of its own: checked and driven to the end
    bool injected = false;
    long eligible = 0;      ///< calls the fault applied to
    long changed = 0;
    long failed_ops = 0;
    long interrupted = 0;   ///< tasks given back as interrupted starts (agents abandoned after a commit that was visible)
    std::string first_hit;
    std::map<std::string, long> errors;   ///< the error codes of the operations that failed
    long visible_failed_enqueues = 0;     ///< enqueues that failed, whose task is there all the same
};

std::string states_of(const std::vector<queue_item>& items) {
    std::string s;
    for (auto& it : items) s += it.id + "=" + std::string(to_string(it.state)) + "(" + it.last_error + ") ";
    return s;
}

bool is_end(const event& e) { return e.type == event_type::task_completed || e.type == event_type::task_error; }

/// One run of the dispatcher scenario with the fault `m` at call k (m null: no fault).
class scenario_run {
public:
    explicit scenario_run(findings& f) : f_(f), db_(dir_ / "state.db") { copy_database(db_); }

    /// `checked`: the states already checked (with the tasks they gave back as interrupted
    /// starts), to which this run's is added.
    run_result run(const sqlite_mode* m, long k, std::map<std::string, long>* checked = nullptr) {
        run_result res;
        {
            std::optional<sqlite_fault_injector> inj;
            if (m) inj.emplace(m->kind, k, m->every);
            disp_.emplace(null_lock{}, spawner_, callback_notifier([n = notified_](const event& e) { n->push_back(e); }),
                          sqlite_store(db_, store_options(m != nullptr)), clock_, null_workspace{},
                          dispatcher_options{cap, 3, std::chrono::seconds(1)});
            scenario();
            // Closing is part of the scenario (a last connection may checkpoint the WAL).
            disp_->store() = sqlite_store(db_, store_options(false));
            if (inj) {
                res.injected = inj->hit();
                res.eligible = inj->eligible_calls();
                res.changed = inj->changed();
                res.first_hit = inj->first();
            }
        }   // the injector restores the system calls and unregisters the VFS
        res.failed_ops = failed_ops_;
        res.errors = errors_;
        sqlite_store v(db_, store_options(false));
        std::error_code ec;
        v.open(ec);
        INFO(log_);
        INFO("reopen: " << v.last_error_detail());
        REQUIRE_FALSE(ec);
        // SQLite's own checks, always (a torn page shows here, not in the rows).
        f_.expect(raw_rows(v.handle(), "PRAGMA integrity_check") == "ok\t\n",
                  "integrity_check: " + raw_rows(v.handle(), "PRAGMA integrity_check"));
        f_.expect(raw_rows(v.handle(), "SELECT count(*) FROM quarantine") == "0\t\n", "rows in quarantine");
        res.state = state_of(v);
        if (checked && checked->count(res.state)) {
            res.interrupted = (*checked)[res.state];
            return res;
        }
        // (Counted for the states checked only.)
        check_store(v, res);
        drive_to_end(res);
        res.checked = true;
        if (checked) (*checked)[res.state] = res.interrupted;
        return res;
    }

    const std::string& log() const noexcept { return log_; }

private:
    std::string state_of(sqlite_store& v) {
        std::string s = raw_rows(v.handle(), "SELECT id, state, record FROM tasks ORDER BY id") +
                        raw_rows(v.handle(), "SELECT id, task_id, record FROM sessions ORDER BY id") +
                        raw_rows(v.handle(), "SELECT seq, task_id, record FROM events ORDER BY seq") +
                        raw_rows(v.handle(), "SELECT * FROM limits") + "accepted:";
        for (auto* set : {&acc_.enqueued, &acc_.started, &acc_.ended, &acc_.cancelled_pending, &acc_.cancelled_running}) {
            for (auto& id : *set) s += " " + id;
            s += ";";
        }
        s += "\n" + outcomes_ + "notified:";
        for (auto& e : *notified_) s += " " + std::to_string(e.seq) + std::string(to_string(e.type)) + e.task_id;
        s += "\n";
        for (auto& [pid, p] : processes_of(spawner_))
            s += std::to_string(pid) + " " + p.request.task_id + " ran=" + std::to_string(p.ran) + " held=" +
                 std::to_string(p.held) + " state=" + std::to_string(static_cast<int>(p.state)) +
                 " reaped=" + std::to_string(p.reaped) + " code=" + std::to_string(p.exit_code) + "\n";
        return s;
    }

    /// Runs one operation; records whether it was accepted. `reaps`: it reaps first.
    template <class F>
    bool op(const std::string& name, bool reaps, F&& f) {
        std::set<std::string> ended_before;
        std::set<int> ran_before;
        for (auto& [pid, p] : processes_of(spawner_)) {
            if (p.ran) ran_before.insert(pid);
            if (reaps && p.ran && p.state != process_state::running) ended_before.insert(p.request.task_id);
        }
        std::error_code ec;
        f(ec);
        const std::string detail = disp_->last_error_detail();
        log_ += name + ": " + (ec ? ec.message() + ": " + detail : std::string("ok")) + "\n";
        outcomes_ += name + ": " + (ec ? std::string(ec.category().name()) + " " + std::to_string(ec.value()) : "ok") + "\n";
        // A successful commit released every held agent, a failed one abandoned them all.
        for (auto& [pid, p] : processes_of(spawner_)) f_.expect(!p.held, name + ": agent " + std::to_string(pid) + " left held");
        if (!ec) {
            acc_.ended.insert(ended_before.begin(), ended_before.end());
            for (auto& [pid, p] : processes_of(spawner_))
                if (p.ran && !ran_before.count(pid)) released_.insert(p.request.task_id);
            return true;
        }
        ++failed_ops_;
        ++errors_[ec.message()];
        const bool refusal = ec == errc::unknown_task || ec == errc::invalid_transition;
        if (!refusal) f_.expect(detail.find(db_) != std::string::npos, name + ": the error does not name the database: " + detail);
        return false;
    }

    void exit_agent(const std::string& id, int code) {
        if (const int pid = spawner_.pid_of(id)) spawner_.exit(pid, code);
    }

    void scenario() {
        auto& d = *disp_;
        for (const char* id : {"a", "b", "c", "d", "e"})
            if (op(std::string("enqueue ") + id, false, [&](std::error_code& ec) { d.enqueue(spec(id), ec); }))
                acc_.enqueued.insert(id);
        clock_.advance(std::chrono::seconds(1));
        start_result sr;
        if (op("start s", true, [&](std::error_code& ec) { sr = d.start(spec("s"), ec); }) && sr.status == start_status::started)
            acc_.started.insert("s");
        pass("process_queue 1");   // a, b
        exit_agent("a", 0);
        exit_agent("s", 1);
        clock_.advance(std::chrono::seconds(1));
        op("reap 1", true, [&](std::error_code& ec) { d.reap(ec); });
        queue_item c;
        if (op("cancel c", true, [&](std::error_code& ec) { c = d.cancel("c", ec); }) && c.state == task_state::cancelled)
            acc_.cancelled_pending.insert("c");
        pass("process_queue 2");   // d, e
        clock_.advance(std::chrono::seconds(1));
        queue_item dd;
        if (op("cancel d", true, [&](std::error_code& ec) { dd = d.cancel("d", ec); }) && dd.state == task_state::running)
            acc_.cancelled_running.insert("d");   // SIGTERM sent (the fake agent exits 143)
        exit_agent("b", 0);
        op("reap 2", true, [&](std::error_code& ec) { d.reap(ec); });
    }

    void pass(const std::string& name) {
        released_.clear();
        if (op(name, true, [&](std::error_code& ec) { disp_->process_queue(ec); }))
            acc_.started.insert(released_.begin(), released_.end());
    }

    /// With the fault gone: a fresh store reads what the run left.
    void check_store(sqlite_store& v, run_result& res) {
        std::error_code ec;
        const auto rep = v.check(ec);
        INFO(log_);
        INFO("check: " << v.last_error_detail());
        REQUIRE_FALSE(ec);
        std::string bad;
        for (auto& l : rep.integrity) bad += l + "; ";
        for (auto& l : rep.bad_rows) bad += l + "; ";
        f_.expect(rep.ok(), "check() found: " + bad);
        f_.expect(rep.quarantined == 0, "rows in quarantine");
        // Quarantine off: a row that fails validation is an error here.
        const auto items = v.list_items(ec);
        INFO("read: " << v.last_error_detail());
        REQUIRE_FALSE(ec);
        const auto sessions = v.list_sessions(ec);
        REQUIRE_FALSE(ec);
        const auto events = v.events_after(0, 1u << 20, ec);
        REQUIRE_FALSE(ec);
        check_outbox(items, events);
        std::map<std::string, const queue_item*> by_id;
        for (auto& it : items) by_id[it.id] = &it;
        for (auto& [id, it] : by_id)
            f_.expect(std::find(all_ids.begin(), all_ids.end(), id) != all_ids.end(), "a task nobody wrote: " + id);
        auto has = [&](const std::string& id, event_type t) {
            return std::any_of(events.begin(), events.end(), [&](auto& e) { return e.task_id == id && e.type == t; });
        };
        auto session_of = [&](const queue_item& it) {
            return std::any_of(sessions.begin(), sessions.end(),
                               [&](auto& s) { return s.task_id == it.id && s.process == it.process; });
        };
        // Nothing accepted is lost or undone.
        for (auto& id : acc_.enqueued) {
            f_.expect(by_id.count(id), "accepted enqueue lost: " + id);
            f_.expect(has(id, event_type::task_queued), "no task_queued for accepted " + id);
        }
        for (auto& id : acc_.started) {
            const auto* it = by_id.count(id) ? by_id[id] : nullptr;
            f_.expect(it, "accepted start lost: " + id);
            if (!it) continue;
            f_.expect((it->state == task_state::running && session_of(*it)) || is_final(it->state),
                      "accepted start undone: " + id + " is " + std::string(to_string(it->state)));
            f_.expect(has(id, event_type::task_started), "no task_started for accepted start " + id);
        }
        for (auto& id : acc_.ended)
            f_.expect(by_id.count(id) && is_final(by_id[id]->state), "accepted end undone: " + id);
        for (auto& id : acc_.cancelled_pending)
            f_.expect(by_id.count(id) && by_id[id]->state == task_state::cancelled, "accepted cancel undone: " + id);
        for (auto& id : acc_.cancelled_running)
            f_.expect(by_id.count(id) && (by_id[id]->state == task_state::cancelled ||
                                          (by_id[id]->state == task_state::running && by_id[id]->stop_reason == stop_reason::cancelled)),
                      "accepted cancel of a running task undone: " + id);
        // Nothing half-written: sessions and tasks agree.
        for (auto& s : sessions) {
            const auto* it = by_id.count(s.task_id) ? by_id[s.task_id] : nullptr;
            f_.expect(it && (it->state == task_state::notified || it->state == task_state::running),
                      "session " + s.id + " of a task that is not claimed or running");
            if (it && it->state == task_state::running)
                f_.expect(it->process == s.process, "session " + s.id + " names another process than its task");
        }
        for (auto& it : items)
            if (it.state == task_state::running) f_.expect(session_of(it), "running task without its session: " + it.id);
        // No agent runs without its committed session (or the final task that recorded its end).
        for (auto& [pid, p] : processes_of(spawner_)) {
            if (!p.ran) continue;
            const bool named = std::any_of(sessions.begin(), sessions.end(), [&](auto& s) { return s.process.pid == pid; }) ||
                               std::any_of(items.begin(), items.end(),
                                           [&](auto& it) { return it.process.pid == pid && is_final(it.state); });
            f_.expect(named, "agent " + std::to_string(pid) + " (" + p.request.task_id + ") ran with no committed session");
        }
        for (auto& it : items) checked_states_[it.id] = it.state;
        for (const char* id : {"a", "b", "c", "d", "e"}) res.visible_failed_enqueues += by_id.count(id) && !acc_.enqueued.count(id);
    }

    /// The outbox: numbered 1..N, one end event per final task, and it holds every event the
    /// notifier was given.
    void check_outbox(const std::vector<queue_item>& items, const std::vector<event>& events) {
        for (std::size_t i = 0; i < events.size(); ++i)
            f_.expect(events[i].seq == i + 1, "event " + std::to_string(i + 1) + " has number " + std::to_string(events[i].seq));
        for (auto& it : items) {
            const auto ends = std::count_if(events.begin(), events.end(), [&](auto& e) { return e.task_id == it.id && is_end(e); });
            f_.expect(ends == (is_final(it.state) ? 1 : 0),
                      it.id + " is " + std::string(to_string(it.state)) + " with " + std::to_string(ends) + " end events");
        }
        std::set<std::uint64_t> seen;
        for (auto& e : *notified_) {
            f_.expect(seen.insert(e.seq).second, "event " + std::to_string(e.seq) + " notified twice");
            f_.expect(e.seq >= 1 && e.seq <= events.size() && events[e.seq - 1].type == e.type &&
                          events[e.seq - 1].task_id == e.task_id,
                      "notified event " + std::to_string(e.seq) + " (" + std::string(to_string(e.type)) + " " + e.task_id +
                          ") is not in the outbox");
        }
    }

    /// The same dispatcher, the fault gone (the disk repaired), runs everything to its end.
    void drive_to_end(run_result& res) {
        auto& d = *disp_;
        std::error_code ec;
        std::vector<queue_item> items;
        std::vector<session> sessions;
        bool done = false;
        for (int round = 0; round < 12 && !done; ++round) {
            clock_.advance(std::chrono::seconds(1));
            for (auto& [pid, p] : processes_of(spawner_))
                if (p.ran && p.state == process_state::running) spawner_.exit(pid, 0);
            d.process_queue(ec);
            INFO(log_);
            INFO("pass " << round << ": " << d.last_error_detail());
            REQUIRE_FALSE(ec);
            d.reap(ec);
            REQUIRE_FALSE(ec);
            items = d.store().list_items(ec);
            REQUIRE_FALSE(ec);
            sessions = d.store().list_sessions(ec);
            REQUIRE_FALSE(ec);
            done = sessions.empty() && std::all_of(items.begin(), items.end(), [](auto& it) { return is_final(it.state); });
        }
        f_.expect(done, "not every task is final after the rest was driven: " + states_of(items));
        f_.expect(spawner_.peak() <= cap, "peak " + std::to_string(spawner_.peak()) + " above the cap");
        const auto procs = processes_of(spawner_);
        std::map<std::string, int> runs;
        for (auto& [pid, p] : procs) runs[p.request.task_id] += p.ran;
        for (auto& [id, n] : runs) f_.expect(n <= 1, "task " + id + " ran " + std::to_string(n) + " times");
        std::map<std::string, const queue_item*> by_id;
        for (auto& it : items) by_id[it.id] = &it;
        for (auto* set : {&acc_.enqueued, &acc_.started, &acc_.ended})
            for (auto& id : *set) f_.expect(by_id.count(id), "accepted task lost by the end: " + id);
        for (auto& [id, st] : checked_states_)
            if (is_final(st)) f_.expect(by_id.count(id) && by_id[id]->state == st, "final state of " + id + " changed");
        for (auto* set : {&acc_.cancelled_pending, &acc_.cancelled_running})
            for (auto& id : *set) f_.expect(by_id.count(id) && by_id[id]->state == task_state::cancelled, "not cancelled: " + id);
        for (auto& it : items) {
            res.interrupted += it.last_error.find("start_interrupted") != std::string::npos;
            // An agent that never ran is an interrupted start, never an end nobody knows. (One
            // that ran may end so: the fake reports an exit to one poll, and a reap whose
            // commit failed consumed it.)
            if (it.last_error.find("exit code is unknown") == std::string::npos) continue;
            f_.expect(runs[it.id] > 0, it.id + " ended exit_unknown, but no agent of it ran (" + it.last_error + ")");
        }
        const auto events = d.store().events_after(0, 1u << 20, ec);
        REQUIRE_FALSE(ec);
        check_outbox(items, events);
        if (std::getenv("KUGETSU_IO_FAULTS_STATES")) std::cout << "io_faults: final: " << states_of(items) << "\n";
    }

    findings& f_;
    state_dir dir_;
    std::string db_;
    fake_spawner spawner_;
    manual_clock clock_{timestamp{std::chrono::seconds(1'800'000'000)}};
    std::shared_ptr<std::vector<event>> notified_ = std::make_shared<std::vector<event>>();
    std::optional<fault_dispatcher> disp_;
    accepted acc_;
    std::set<std::string> released_;
    std::map<std::string, task_state> checked_states_;
    long failed_ops_ = 0;
    std::string log_;        // each operation's outcome with its detail, for messages
    std::string outcomes_;   // each operation's outcome as an error code, for the state
    std::map<std::string, long> errors_;
};

} // namespace

TEST_CASE("a pass whose commit is visible but whose fsync fails abandons its held agents, and the next reap gives "
          "their tasks back as interrupted starts",
          "[io_faults]") {
    state_dir d;
    const std::string db = d / "state.db";
    copy_database(db);
    fake_spawner sp;
    sqlite_fault_injector inj(sqlite_fault::fsync, 1'000'000);
    fault_dispatcher disp(null_lock{}, sp, callback_notifier([](const event&) {}), sqlite_store(db, store_options(true)),
                          manual_clock{}, null_workspace{}, dispatcher_options{cap, 3, std::chrono::seconds(1)});
    disp.enqueue(spec("a"));
    disp.enqueue(spec("b"));
    inj.fail_next();   // the pass's one durable commit: its claims and sessions
    std::error_code ec;
    const auto rep = disp.process_queue(ec);
    inj.disarm();
    CHECK(ec == std::error_code(EIO, std::system_category()));
    CHECK(disp.last_error_detail().find(db + "-wal: fdatasync") != std::string::npos);
    CHECK(rep.started == 0);
    CHECK(sp.abandoned() == 2);   // none of them runs
    CHECK(sp.peak() == 0);
    sqlite_store v(db, store_options(false));
    CHECK(v.list_sessions(ec).size() == 2);   // yet the commit is visible
    REQUIRE_FALSE(ec);
    const auto reaped = disp.reap();
    CHECK(reaped.interrupted == 2);
    CHECK(reaped.finished == 0);
    for (const char* id : {"a", "b"}) {
        INFO(id);
        const auto it = v.get_item(id, ec);
        REQUIRE(it);
        CHECK(it->state == task_state::pending);
        CHECK(it->attempts == 1);
        CHECK(it->last_error.rfind("start_interrupted", 0) == 0);
    }
    CHECK(v.list_sessions(ec).empty());
    CHECK(disp.process_queue().started == 2);
    CHECK(v.get_item("a", ec)->attempts == 2);
    CHECK(sp.running() == 2);
}

TEST_CASE("the fault VFS restores the system calls and the VFS list, and changes the same call for the same k",
          "[io_faults]") {
    sqlite3_vfs* unix_vfs = sqlite3_vfs_find(nullptr);
    REQUIRE(unix_vfs);
    const auto before = unix_vfs->xGetSystemCall(unix_vfs, "pwrite64");
    {
        sqlite_fault_injector inj(sqlite_fault::short_write, 2);
        CHECK(sqlite3_vfs_find(sqlite_fault_injector::vfs_name));
        CHECK(sqlite3_vfs_find(nullptr) == unix_vfs);   // never the default
        CHECK(unix_vfs->xGetSystemCall(unix_vfs, "pwrite64") != before);
    }
    CHECK(unix_vfs->xGetSystemCall(unix_vfs, "pwrite64") == before);
    CHECK_FALSE(sqlite3_vfs_find(sqlite_fault_injector::vfs_name));
    // Deterministic: the same k changes the same call, and the run leaves the same state.
    run_result res[2];
    for (auto& r : res) {
        findings fs;
        scenario_run run(fs);
        sqlite_mode m{sqlite_fault::eio, false};
        r = run.run(&m, 40);
        CHECK(fs.v.empty());
    }
    CHECK_FALSE(res[0].first_hit.empty());
    // The paths differ (a fresh directory each): compare the call and the file's name.
    auto tail = [](const std::string& s) { return s.substr(0, s.find(' ')) + s.substr(s.rfind('/')); };
    CHECK(tail(res[0].first_hit) == tail(res[1].first_hit));
    CHECK(res[0].state == res[1].state);
}

namespace {

/// Runs the dispatcher scenario without faults, then with each mode at every k; prints the
/// tally under `title`.
tally sweep(const std::vector<sqlite_mode>& modes, const std::string& title) {
    std::map<std::string, long> checked;
    // The reference: the scenario without faults.
    run_result reference;
    {
        findings f;
        scenario_run r(f);
        reference = r.run(nullptr, 0, &checked);
        INFO(r.log());
        INFO(f.dump());
        REQUIRE(f.v.empty());
        REQUIRE(reference.checked);
        REQUIRE(reference.failed_ops == 0);
    }
    tally t;
    const auto start = std::chrono::steady_clock::now();
    for (const auto& m : modes) {
        const std::string name = mode_name(m);
        const auto mode_start = std::chrono::steady_clock::now();
        auto& runs = t.row("runs with a fault")[name];
        auto& faults = t.row("faults injected")[name];
        auto& failed = t.row("operations that failed")[name];
        auto& own = t.row("runs that left a state of their own, checked and driven to the end")[name];
        auto& interrupted = t.row("tasks given back as interrupted starts")[name];
        every_k(m.every, [&](long k) {
            findings f;
            scenario_run r(f);
            const run_result res = r.run(&m, k, &checked);
            INFO(name << " at call " << k << ": " << (res.first_hit.empty() ? "no call changed" : res.first_hit));
            INFO(r.log());
            INFO(f.dump());
            CHECK(f.v.empty());
            if (test::transparent(m.kind)) {
                CHECK(res.failed_ops == 0);   // absorbed by the unix VFS: the run is the run without faults
                CHECK(res.state == reference.state);
            }
            if (res.injected) {
                ++runs;
                faults += res.changed;
                failed += res.failed_ops;
                own += res.checked;
                interrupted += res.interrupted;
                t.row("failed enqueues visible all the same (states checked)")[name] += res.visible_failed_enqueues;
                for (auto& [e, n] : res.errors) t.row("errors: " + name)[e] += n;
            }
            // On to the next k while the run had a k-th eligible call (one that was not changed,
            // a 1-byte write for a short write, still counts).
            return res.eligible >= k;
        });
        t.row("seconds")[name] =
            static_cast<long>(std::chrono::duration<double>(std::chrono::steady_clock::now() - mode_start).count() + 0.5);
    }
    const auto secs = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
    t.print(title);
    std::cout << "io_faults: " << title << ": " << checked.size() << " distinct states checked, " << secs << " s\n"
              << std::flush;
    for (const auto& m : modes) CHECK(t.get("runs with a fault", mode_name(m)) > 0);
    return t;
}

} // namespace

TEST_CASE("the dispatcher on a sqlite_store with ENOSPC, a disk filling up, EIO or a failed fsync at every SQLite file "
          "call loses nothing accepted, leaves nothing half-written and never exceeds the cap",
          "[io_faults]") {
    auto t = sweep({{sqlite_fault::enospc, false}, {sqlite_fault::disk_full, false}, {sqlite_fault::eio, false},
                    {sqlite_fault::fsync, false}},
                   "dispatcher on sqlite_store");
    for (auto kind : {sqlite_fault::enospc, sqlite_fault::disk_full, sqlite_fault::eio, sqlite_fault::fsync})
        CHECK(t.get("operations that failed", mode_name({kind, false})) > 0);
    // A failed fsync after COMMIT was reached with held agents whose sessions stay committed.
    CHECK(t.get("tasks given back as interrupted starts", mode_name({sqlite_fault::fsync, false})) > 0);
}

TEST_CASE("the dispatcher on a sqlite_store with a short write or an EINTR storm at every system call of the unix VFS "
          "runs exactly as without faults",
          "[io_faults]") {
    sweep({{sqlite_fault::short_write, false}, {sqlite_fault::eintr, false}, {sqlite_fault::short_write, true},
           {sqlite_fault::eintr, true}},
          "dispatcher on sqlite_store, absorbed faults");
}

TEST_CASE("creating a sqlite_store under a fault at every call fails with an error naming the database, or creates it "
          "whole; a failed creation is completed by the next open",
          "[io_faults]") {
    tally t;
    const limits lim{2, 4, std::chrono::seconds(3)};
    for (const auto& m : sqlite_modes) {
        const std::string name = mode_name(m);
        every_k(m.every, [&](long k) {
            state_dir d;
            const std::string db = d / "state.db";
            std::error_code open_ec, limits_ec;
            std::string open_detail, limits_detail;
            long eligible = 0;
            bool injected = false;
            std::string first;
            {
                sqlite_fault_injector inj(m.kind, k, m.every);
                sqlite_store s(db, store_options(true));
                s.open(open_ec);
                open_detail = s.last_error_detail();
                s.put_limits(lim, limits_ec);   // opens again after a failed open
                limits_detail = s.last_error_detail();
                s = sqlite_store(db, store_options(false));   // closed under the fault
                eligible = inj.eligible_calls();
                injected = inj.hit();
                first = inj.first();
            }
            INFO(name << " at call " << k << ": " << (first.empty() ? "no call changed" : first));
            INFO("open: " << (open_ec ? open_detail : "ok") << "; put_limits: " << (limits_ec ? limits_detail : "ok"));
            if (open_ec) CHECK(open_detail.find(db) != std::string::npos);
            if (limits_ec) CHECK(limits_detail.find(db) != std::string::npos);
            if (test::transparent(m.kind)) CHECK_FALSE((open_ec || limits_ec));
            // With the fault gone, the next open completes whatever was left and finds it whole.
            sqlite_store v(db, store_options(false));
            std::error_code ec;
            v.open(ec);
            INFO("reopen: " << v.last_error_detail());
            REQUIRE_FALSE(ec);
            const auto rep = v.check(ec);
            REQUIRE_FALSE(ec);
            CHECK(rep.ok());
            CHECK(raw_rows(v.handle(), "PRAGMA user_version") == std::to_string(sqlite_store::schema_version) + "\t\n");
            const auto got = v.get_limits(ec);
            REQUIRE_FALSE(ec);
            if (!limits_ec) {   // accepted: there
                REQUIRE(got);
                CHECK(got->cap == lim.cap);
                CHECK(got->max_attempts == lim.max_attempts);
            } else if (got) {   // failed: there or not, and whole
                CHECK(got->cap == lim.cap);
            }
            if (injected) {
                ++t.row("runs with a fault")[name];
                t.row("operations that failed")[name] += bool(open_ec) + bool(limits_ec);
            }
            return eligible >= k;
        });
    }
    t.print("sqlite_store creation");
    for (const auto& m : sqlite_modes) CHECK(t.get("runs with a fault", mode_name(m)) > 0);
}

TEST_CASE("sqlite_store: a durable commit whose fsync fails is visible, reported as failed, and names the WAL",
          "[io_faults]") {
    state_dir d;
    const std::string db = d / "state.db";
    std::error_code ec;
    sqlite_store v(db, store_options(false));
    v.open(ec);
    REQUIRE_FALSE(ec);
    queue_item it;
    it.id = "t";
    it.argv = {"agent"};
    it.enqueued_at = it.updated_at = timestamp{std::chrono::seconds(1'800'000'000)};
    {
        sqlite_fault_injector inj(sqlite_fault::fsync, 1);
        sqlite_store w(db, store_options(true));
        w.open(ec);
        REQUIRE_FALSE(ec);
        CHECK_FALSE(inj.hit());   // opening a database that exists syncs nothing
        w.begin(ec);
        REQUIRE_FALSE(ec);
        w.create_item(it, ec);
        REQUIRE_FALSE(ec);
        w.commit(durability::durable, ec);
        CHECK(ec == std::error_code(EIO, std::system_category()));
        CHECK(inj.changed() == 1);
        CHECK(inj.first().find("state.db-wal") != std::string::npos);
        CHECK(w.last_error_detail().find(db + "-wal: fdatasync") != std::string::npos);
        CHECK(w.last_error_detail().find("maybe not durable") != std::string::npos);
        CHECK_FALSE(w.in_unit());
        w = sqlite_store(db, store_options(false));
    }
    CHECK(v.get_item("t", ec));   // visible all the same
}
