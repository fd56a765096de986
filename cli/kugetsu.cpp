// kugetsu: the command-line tool. Enqueue tasks, start agents under the cap, run the queue
// daemon, watch it. Built on the library's public API (and plain POSIX); docs/cli.md is its
// manual.
//
//   kugetsu [--home DIR] enqueue [--id ID] [--timeout S] [--worktree REPO] [--group G] [--priority N]
//                                [--after ID...] [--retries N [--backoff S]] -- CMD [ARG...]
//   kugetsu [--home DIR] start [--id ID] [--role dev|pm] [--timeout S] [--worktree REPO] [--group G]
//                              [--wait] -- CMD...
//   kugetsu [--home DIR] pause|resume [--group G]
//   kugetsu [--home DIR] daemon [--once] [--verbose]
//   kugetsu [--home DIR] status [--json] [--state S] [--group G] [ID...]
//   kugetsu [--home DIR] wait [ID...]
//   kugetsu [--home DIR] cancel ID [--no-wait]
//   kugetsu [--home DIR] logs ID [--follow]
//   kugetsu [--home DIR] events [--follow] [--since SEQ]
//   kugetsu [--home DIR] reap [--quiet]
//   kugetsu [--home DIR] config [cap N | max-attempts N | kill-grace S | group G cap N|none]
//   kugetsu [--home DIR] check
//
// Exit status (sysexits.h): 0 success; 1 the task failed (start: every attempt failed);
// wait: the first unfinished task's status (its exit code; 124 timeout, 125 cancelled, 126
// never started, 127 exit code unknown); 64 usage (also: a limit in the environment that
// differs from HOME's); 65 bad data (an invalid id, a corrupt state file, an unknown task);
// 74 I/O error; 75 no free slot (start: the cap is reached, the queue or group is paused, or
// a PM is already running); 77 the state directory or a file in it belongs to another user or
// is writable by others; 70 internal error; 128+N: wait, start --wait, cancel or logs -f
// interrupted by signal N (events -f exits 0 when interrupted).
#include <algorithm>
#include <array>
#include <cerrno>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <iostream>
#include <optional>
#include <set>
#include <sstream>
#include <string>
#include <string_view>
#include <vector>

#include <dirent.h>
#include <fcntl.h>
#include <sys/file.h>
#include <sys/prctl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <CLI/CLI.hpp>
#include <kugetsu/home.hpp>
#include <kugetsu/kugetsu.hpp>
#include <kugetsu/timeline.hpp>
#include <kugetsu/watcher.hpp>
#include <range/v3/view/filter.hpp>
#include <range/v3/view/transform.hpp>
#include <range/v3/view/zip.hpp>

#include "format.hpp"
#include "options.hpp"

namespace {

using namespace kugetsu;
using cli::globals;
using cli::task_flags;

// sysexits.h
constexpr int ex_ok = 0, ex_failed = 1, ex_usage = 64, ex_dataerr = 65, ex_noinput = 66, ex_software = 70,
              ex_ioerr = 74, ex_tempfail = 75, ex_noperm = 77;

/// A read-only command (status, wait, logs, events, check, config without a setting) given a
/// HOME that does not exist: exit 66, and no HOME is created.
struct no_home : std::runtime_error {
    using std::runtime_error::runtime_error;
};

/// Read-only commands call this first: they never create HOME.
void require_home(const std::string& home) {
    struct stat st{};
    if (::lstat(home.c_str(), &st) != 0) {
        if (errno != ENOENT) return;   // the open says what is wrong
        throw no_home(home + ": no such state directory (nothing was ever queued there; check --home or KUGETSU_HOME)");
    }
    if (!S_ISDIR(st.st_mode)) return;  // (a link, a file: the open refuses it, naming it)
    // A HOME without its database: nothing was queued there, unless it is a kugetsu 0.1 HOME
    // (its files are imported by the open). Read-only commands create no database either.
    const home_layout h{home};
    for (const char* name : {"state.db", "queue", "pending", "active", "sessions"})
        if (::lstat((home + "/" + name).c_str(), &st) == 0 || errno != ENOENT) return;
    throw no_home(home + ": no state database (state.db) in this directory: nothing was ever queued there "
                         "(check --home or KUGETSU_HOME)");
}

/// The process's exit code for an error.
int exit_code_for(const std::error_code& ec) {
    if (ec.category() == kugetsu::category()) {
        switch (static_cast<errc>(ec.value())) {
        case errc::invalid_limit:
        case errc::task_active:
        case errc::limits_mismatch: return ex_usage;
        case errc::invalid_task_id:
        case errc::invalid_argv:
        case errc::invalid_record:
        case errc::unsupported_version:
        case errc::reserved_task_id:
        case errc::invalid_group:
        case errc::dependency_cycle:
        case errc::duplicate_task:
        case errc::unknown_task:
        case errc::invalid_transition:
        case errc::store_corrupt: return ex_dataerr;
        case errc::pm_already_running: return ex_tempfail;
        case errc::lock_failed: return ex_ioerr;
        case errc::workspace_failed:
        case errc::spawn_failed:
        case errc::attempts_exhausted: return ex_failed;
        case errc::not_held: return ex_software;
        case errc::unsafe_state: return ex_noperm;
        case errc::store_busy: return ex_tempfail;
        }
        return ex_software;
    }
    return ex_ioerr;   // errno from the system: the filesystem, fork, inotify
}

// ---- the quarantine --------------------------------------------------------------------------
// The store moves a row that fails validation to its quarantine table and goes on; this
// process says so on stderr, once per row, as soon as it can.

const sqlite_store* quarantine_store = nullptr;
std::size_t quarantine_seen = 0;

void warn_quarantined() {
    if (!quarantine_store) return;
    const auto& q = quarantine_store->quarantined();
    for (; quarantine_seen < q.size(); ++quarantine_seen)
        std::cerr << "kugetsu: " << q[quarantine_seen].source << ": " << q[quarantine_seen].why << "; kept in "
                  << q[quarantine_seen].moved_to << "\n";
}

/// Watches one dispatcher's store while it lives (declare it right after the dispatcher).
struct quarantine_guard {
    explicit quarantine_guard(const sqlite_store& s) {
        quarantine_store = &s;
        quarantine_seen = s.quarantined().size();
    }
    quarantine_guard(const quarantine_guard&) = delete;
    quarantine_guard& operator=(const quarantine_guard&) = delete;
    ~quarantine_guard() {
        warn_quarantined();
        quarantine_store = nullptr;
    }
};

int report(const std::error_code& ec, const std::string& detail) {
    warn_quarantined();
    std::cerr << "kugetsu: " << (detail.empty() ? ec.message() : detail);
    if (ec == errc::limits_mismatch)
        std::cerr << " (HOME keeps its limits: unset the variable, or change HOME's with `kugetsu config`)";
    std::cerr << "\n";
    return exit_code_for(ec);
}

/// "no task ID", and where its record went if it was quarantined.
std::string no_task(sqlite_store& store, const std::string& id) {
    std::string msg = "no task \"" + id + "\"";
    std::error_code ec;
    for (const auto& q : store.quarantine_rows(ec))
        if (q.task_id == id)
            msg += "; its record failed validation (" + q.why + ") and is kept in " + store.path() +
                   ", table quarantine, row " + std::to_string(q.n);
    return msg;
}

/// An id from the command line as it may be quoted in a message: at most 160 bytes, control
/// characters and bytes past ASCII as \xHH, so the message stays on one line.
std::string shown_id(std::string_view id) { return cli::shown(id); }

/// The first id that is not a task id, as an error (exit 65); 0 if all are.
int check_ids(const std::vector<std::string>& ids) {
    for (const auto& id : ids)
        if (!valid_task_id(id))
            return report(errc::invalid_task_id, "\"" + shown_id(id) + "\" is not a task id (1-128 of [A-Za-z0-9._-], "
                                                 "not starting with '.')");
    return ex_ok;
}

// ---- test hooks ---------------------------------------------------------------------------
// KUGETSU_TEST_NO_LOCK=1 disables the critical-section lock and the store's transactions
// (each statement commits alone); KUGETSU_TEST_BARRIER=PATH:N makes
// every start wait, between counting the live agents and spawning, until N processes have
// arrived. Together they reproduce the original race on real processes (tests/cli). Never
// set them otherwise: kugetsu says so on stderr whenever one is active.

/// flock_lock, or nothing at all under KUGETSU_TEST_NO_LOCK.
class cli_lock {
public:
    cli_lock(std::string path, bool enabled) : real_(std::move(path)), enabled_(enabled) {}
    void lock(std::error_code& ec) noexcept {
        if (enabled_) real_.lock(ec);
        else ec.clear();
    }
    void unlock() noexcept {
        if (enabled_) real_.unlock();
    }
    /// Names the lock file and what failed.
    const std::string& last_error_detail() const noexcept { return real_.last_error_detail(); }

private:
    flock_lock real_;
    bool enabled_;
};

/// git worktrees for tasks with a repo; under KUGETSU_TEST_BARRIER, a barrier first.
class cli_workspace {
public:
    cli_workspace(std::string root, std::string barrier) : git_(std::move(root)), barrier_(std::move(barrier)) {}
    std::string prepare(const queue_item& it, std::error_code& ec) {
        if (!barrier_.empty()) wait_barrier();
        return git_.prepare(it, ec);
    }
    void remove(const queue_item& it, std::error_code& ec) { git_.remove(it, ec); }
    bool has_effects(const queue_item& it) const noexcept { return git_.has_effects(it); }
    std::string_view last_error_detail() const noexcept { return git_.last_error_detail(); }

private:
    void wait_barrier() {
        const auto colon = barrier_.rfind(':');
        const std::string path = barrier_.substr(0, colon);
        const long n = colon == std::string::npos ? 1 : std::atol(barrier_.c_str() + colon + 1);
        const int fd = ::open(path.c_str(), O_RDWR | O_CREAT | O_CLOEXEC | O_NOFOLLOW, 0600);
        if (fd < 0) return;
        auto bump = [&](long add) {
            ::flock(fd, LOCK_EX);
            char buf[32] = {};
            const ssize_t r = ::pread(fd, buf, sizeof buf - 1, 0);
            long v = r > 0 ? std::atol(buf) : 0;
            v += add;
            const std::string s = std::to_string(v);
            if (add && ::ftruncate(fd, 0) == 0) ::pwrite(fd, s.data(), s.size(), 0);
            ::flock(fd, LOCK_UN);
            return v;
        };
        bump(1);
        // Test-only: a bounded wait (10 s) so that a test can never hang on it.
        for (int i = 0; i < 10000 && bump(0) < n; ++i) ::usleep(1000);
        ::close(fd);
    }

    git_worktree_workspace git_;
    std::string barrier_;
};

using cli_dispatcher = basic_dispatcher<cli_lock, fork_spawner, jsonl_notifier, sqlite_store, system_clock, cli_workspace>;

// ---- configuration --------------------------------------------------------------------------

/// load_globals (options.hpp) over the process environment; warns about the test hooks and
/// does not pass them on, nor the limits: agents and the supervisors' on-exit reaper run
/// without them (HOME has its own limits, and a reaper must not refuse to record an end
/// because HOME's cap changed since).
globals load_globals(const std::string& home_flag) {
    globals g = cli::load_globals(home_flag, [](const char* name) -> const char* { return std::getenv(name); });
    if (!g.lock_enabled) std::cerr << "kugetsu: warning: KUGETSU_TEST_NO_LOCK=1: the cap is NOT enforced (test hook)\n";
    if (!g.barrier.empty()) std::cerr << "kugetsu: warning: KUGETSU_TEST_BARRIER is set (test hook)\n";
    for (const char* v : {"KUGETSU_TEST_NO_LOCK", "KUGETSU_TEST_BARRIER", "MAX_CONCURRENT_AGENTS", "KUGETSU_MAX_ATTEMPTS",
                          "KUGETSU_KILL_GRACE"})
        ::unsetenv(v);
    return g;
}

/// The dispatcher over HOME (created, or imported from kugetsu 0.1, on first use). With
/// `expect`, every operation refuses (exit 64) while HOME's limits differ from those the
/// environment names.
cli_dispatcher open_home(const globals& g, bool expect = true) {
    const home_layout h{g.home};
    std::error_code ec;
    std::string why;
    import_report imported;
    sqlite_store::options so;
    so.units = g.lock_enabled;   // KUGETSU_TEST_NO_LOCK: no critical section at all (a negative test)
    sqlite_store store = open_home_store(g.home, ec, why, so, &imported);
    if (ec) throw error(ec, why);
    if (imported.imported) {
        std::cerr << "kugetsu: imported " << g.home << " (kugetsu 0.1 files): " << imported.tasks << " tasks, "
                  << imported.sessions << " sessions, " << imported.events << " events";
        if (!imported.quarantined.empty()) std::cerr << ", " << imported.quarantined.size() << " unreadable records kept in the quarantine table";
        std::cerr << "; the old files are kept as *.imported\n";
        for (auto& q : imported.quarantined) std::cerr << "kugetsu: import: " << q << "\n";
    }
    fork_spawner spawner(h.logs(), h.run());
    // Unsafe log or run directories are refused up front, before anything is recorded (every
    // spawn would refuse them, attempt after attempt).
    if (!spawner.check_dirs(ec)) throw error(ec, spawner.last_error_detail());
    // The supervisor of each agent records its end at once through `kugetsu reap`, unless a
    // daemon (which holds daemon.lock) is there to do it.
    spawner.set_on_exit({"/proc/self/exe", "--home", g.home, "reap", "--quiet"}, h.daemon_lock());
    cli_dispatcher d(cli_lock(h.lock(), g.lock_enabled), std::move(spawner), jsonl_notifier(h.events()), std::move(store),
                     system_clock{}, cli_workspace(h.worktrees(), g.barrier), g.opt);
    if (expect) d.expect_limits(g.expect);
    return d;
}

/// Says so on stderr when the events file could not be written (the events stay in the
/// store: `kugetsu events` shows them, and the next relay appends them).
void warn_notifier(const cli_dispatcher& d) {
    if (!d.last_notifier_error().empty())
        std::cerr << "kugetsu: warning: " << d.last_notifier_error()
                  << " (the events are kept in the database and appended later; `kugetsu events` shows them)\n";
}

std::string seconds_text(duration d) {
    const auto ms = std::chrono::duration_cast<std::chrono::milliseconds>(d).count();
    std::string s = std::to_string(ms / 1000);
    if (ms % 1000) {
        std::string frac = std::to_string(1000 + ms % 1000).substr(1);
        while (!frac.empty() && frac.back() == '0') frac.pop_back();
        s += "." + frac;
    }
    return s;
}

// ---- output ---------------------------------------------------------------------------------

nlohmann::json opt_time_json(const std::optional<timestamp>& t) {
    return t ? nlohmann::json(format_rfc3339(*t)) : nlohmann::json(nullptr);
}

/// A task in status --json: its current run, then "run" (its number, 1 for a task never
/// restarted) and "runs": the earlier runs that are kept, oldest first.
nlohmann::json task_json(const queue_item& it) {
    auto runs = nlohmann::json::array();
    for (const auto& r : it.runs)
        runs.push_back({{"state", to_string(r.state)},
                        {"attempts", r.attempts},
                        {"pid", r.process ? nlohmann::json(r.process.pid) : nlohmann::json(nullptr)},
                        {"exit_code", r.exit_code ? nlohmann::json(*r.exit_code) : nlohmann::json(nullptr)},
                        {"enqueued_at", format_rfc3339(r.enqueued_at)},
                        {"started_at", opt_time_json(r.started_at)},
                        {"finished_at", opt_time_json(r.finished_at)},
                        {"last_error", r.last_error}});
    return {{"id", it.id},
            {"run", static_cast<std::int64_t>(it.restarts) + 1},
            {"runs", std::move(runs)},
            {"role", to_string(it.role)},
            {"state", to_string(it.state)},
            {"attempts", it.attempts},
            {"max_attempts", it.max_attempts},
            {"pid", it.process ? nlohmann::json(it.process.pid) : nlohmann::json(nullptr)},
            {"exit_code", it.exit_code ? nlohmann::json(*it.exit_code) : nlohmann::json(nullptr)},
            {"argv", it.argv},
            {"priority", it.priority},
            {"group", it.group.empty() ? nlohmann::json(nullptr) : nlohmann::json(it.group)},
            {"after", it.after},
            {"retries", it.retries},
            {"retried", it.retried},
            {"not_before", opt_time_json(it.not_before)},
            {"enqueued_at", format_rfc3339(it.enqueued_at)},
            {"started_at", it.started_at ? nlohmann::json(format_rfc3339(*it.started_at)) : nlohmann::json(nullptr)},
            {"finished_at", it.finished_at ? nlohmann::json(format_rfc3339(*it.finished_at)) : nlohmann::json(nullptr)},
            {"last_error", it.last_error}};
}

nlohmann::json session_json(const session& s) {
    return {{"id", s.id},
            {"role", to_string(s.role)},
            {"task_id", s.task_id},
            {"pid", s.process.pid},
            {"workspace", s.workspace},
            {"started_at", format_rfc3339(s.started_at)}};
}

/// --json: the command prints one JSON object on stdout instead of its text (docs/cli.md
/// gives each command's schema).
bool json_out = false;

void print_json(const nlohmann::json& j) {
    std::cout << j.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace) << "\n";
}

/// The schedule as `config --json`, `pause --json` and `resume --json` give it.
nlohmann::json schedule_json(const queue_schedule& sc) {
    nlohmann::json groups = nlohmann::json::object();
    for (const auto& [name, p] : sc.groups)
        groups[name] = {{"cap", p.cap ? nlohmann::json(*p.cap) : nlohmann::json(nullptr)}, {"paused", p.paused}};
    return {{"paused", sc.paused}, {"groups", std::move(groups)}};
}

// ---- commands -------------------------------------------------------------------------------

int cmd_enqueue(const globals& g, const task_flags& f) {
    auto d = open_home(g);
    quarantine_guard watch_quarantine(d.store());
    std::error_code ec;
    const auto it = d.enqueue(f.spec(), ec);
    if (ec) return report(ec, d.last_error_detail());
    warn_notifier(d);
    if (json_out) print_json(task_json(it));
    else std::cout << it.id << "\n";
    return ex_ok;
}

int cmd_daemon(const globals& g, bool once, bool verbose) {
    auto d = open_home(g);
    quarantine_guard watch_quarantine(d.store());
    const home_layout h{g.home};
    home_waiter::options wo;
    if (!once) {
        // The child subreaper of the agents it starts: an agent whose supervisor is killed
        // becomes this daemon's child, which records its exit code itself.
        if (::prctl(PR_SET_CHILD_SUBREAPER, 1) == 0) d.spawner().adopt_orphans(true);
        wo.signals = {SIGTERM, SIGINT, SIGHUP, SIGCHLD};
    }
    home_waiter w(h, wo);
    // Supervisors leave the reaping to daemons while this is held.
    daemon_presence presence;
    if (auto ec = presence.hold(h.daemon_lock())) return report(ec, presence.detail());
    if (verbose) std::cerr << "kugetsu daemon: pid " << ::getpid() << ", home " << g.home << "\n";
    struct host {
        cli_dispatcher& d;
        bool once, verbose;
        int status = ex_ok;
        bool pass(const pass_report& rep, const std::error_code& ec) {
            warn_quarantined();
            if (ec) {
                // Reported; a long-running daemon goes on (the next change may fix it).
                status = report(ec, d.last_error_detail());
                if (once || ec == errc::limits_mismatch) return false;
            } else if (verbose && (rep.started || rep.finished || rep.failed)) {
                std::cerr << "kugetsu daemon: pass: " << rep.finished << " ended, " << rep.started << " started, "
                          << rep.failed << " failed attempts, " << rep.commits << " commits\n";
            }
            warn_notifier(d);
            return true;
        }
        void plan_failed(const std::error_code& ec) { report(ec, d.last_error_detail()); }
    } hooks{d, once, verbose};
    const auto end = serve(d, w, {.once = once}, hooks);
    if (end.why == serve_end::reason::stop && verbose)
        std::cerr << "kugetsu daemon: " << ::strsignal(w.last_signal()) << ": exiting; agents run on\n";
    return end.why == serve_end::reason::stop ? ex_ok : hooks.status;
}

int cmd_reap(const globals& g, bool quiet) {
    auto d = open_home(g);
    quarantine_guard watch_quarantine(d.store());
    std::error_code ec;
    const auto rep = d.reap(ec);
    if (ec) return report(ec, d.last_error_detail());
    if (json_out)
        print_json({{"ended", rep.finished}, {"adopted", rep.adopted}, {"recovered", rep.recovered},
                    {"interrupted", rep.interrupted}, {"signalled", rep.signalled}, {"live", rep.live},
                    {"pm_live", rep.pm_live}});
    else if (!quiet)
        std::cout << rep.finished << " ended, " << rep.adopted << " adopted, " << rep.recovered << " recovered, "
                  << rep.live << " live\n";
    return ex_ok;
}

int cmd_status(const globals& g, bool json, const std::vector<std::string>& ids, const std::vector<std::string>& states,
               const std::vector<std::string>& groups) {
    // The filters first: a bad one is a usage error whatever HOME holds.
    std::vector<task_state> wanted_states;
    bool want_quarantined = states.empty();
    for (const auto& name : states) {
        if (name == "quarantined") {
            want_quarantined = true;
            continue;
        }
        auto st = parse_task_state(name);
        if (!st)
            throw cli::usage_error("--state \"" + shown_id(name) + "\" is not a state (waiting, pending, notified, running, "
                                                                  "completed, error, cancelled, quarantined)");
        wanted_states.push_back(*st);
    }
    for (const auto& gname : groups)
        if (!valid_group_name(gname))
            return report(errc::invalid_group, "--group \"" + shown_id(gname) + "\": " + make_error_code(errc::invalid_group).message());
    if (int bad = check_ids(ids)) return bad;
    require_home(g.home);
    auto d = open_home(g);
    quarantine_guard watch_quarantine(d.store());
    std::error_code ec;
    const auto rep = d.reap(ec);
    if (ec) return report(ec, d.last_error_detail());
    const auto lim = d.current_limits();
    const auto sessions = d.store().list_sessions(ec);
    if (ec) return report(ec, "sessions: " + std::string(d.store().last_error_detail()));
    const auto all = d.store().list_items(ec);
    if (ec) return report(ec, "queue: " + std::string(d.store().last_error_detail()));
    const auto quarantined = d.store().quarantine_rows(ec);
    if (ec) return report(ec, "quarantine: " + std::string(d.store().last_error_detail()));
    const auto sched = d.store().get_schedule(ec);
    if (ec) return report(ec, d.store().last_error_detail());
    d.flush_events();   // a row quarantined by these reads: its event goes out now
    // Tasks whose record was quarantined (and that no record of the same id replaced): shown
    // as such until `kugetsu remove` deletes what was kept of them.
    std::vector<sqlite_store::quarantine_row> q_tasks;
    for (const auto& q : quarantined)
        if (!q.task_id.empty() && q.source.find(": tasks \"") != std::string::npos &&
            std::none_of(all.begin(), all.end(), [&](const queue_item& it) { return it.id == q.task_id; }) &&
            std::none_of(q_tasks.begin(), q_tasks.end(), [&](const auto& o) { return o.task_id == q.task_id; }))
            q_tasks.push_back(q);
    const std::size_t quarantined_tasks = q_tasks.size();   // all of them, whatever the filters
    for (const auto& id : ids)
        if (std::none_of(all.begin(), all.end(), [&](const queue_item& it) { return it.id == id; }) &&
            std::none_of(q_tasks.begin(), q_tasks.end(), [&](const auto& q) { return q.task_id == id; }))
            return report(errc::unknown_task, no_task(d.store(), id));
    std::erase_if(q_tasks, [&](const auto& q) {
        return !want_quarantined || (!ids.empty() && std::find(ids.begin(), ids.end(), q.task_id) == ids.end()) ||
               !groups.empty();
    });
    auto quarantine_json = [&](const sqlite_store::quarantine_row& q) {
        queue_item none;
        none.id = q.task_id;
        auto j = task_json(none);
        for (auto& [k, v] : j.items())
            if (k != "id" && k != "runs" && k != "after" && !v.is_null()) v = nullptr;
        j["state"] = "quarantined";
        j["quarantine"] = {{"database", d.store().path()}, {"table", "quarantine"}, {"row", q.n}, {"why", q.why},
                           {"at", format_rfc3339(q.at)}};
        return j;
    };
    // The counts are of every task; the list, of those the filters keep.
    std::array<std::size_t, std::size(all_task_states)> counts{};
    for (const auto& it : all) ++counts[static_cast<std::size_t>(it.state)];
    std::vector<queue_item> items;
    for (const auto& it : all)
        if ((ids.empty() || std::find(ids.begin(), ids.end(), it.id) != ids.end()) &&
            (states.empty() || std::find(wanted_states.begin(), wanted_states.end(), it.state) != wanted_states.end()) &&
            (groups.empty() || std::find(groups.begin(), groups.end(), it.group) != groups.end()))
            items.push_back(it);
    const auto& state_order = all_task_states;
    // The groups: those with a policy, those of a task, and those asked for.
    std::vector<std::string> group_names;
    for (const auto& [name, p] : sched.groups) group_names.push_back(name);
    for (const auto& it : all)
        if (!it.group.empty()) group_names.push_back(it.group);
    for (const auto& gname : groups) group_names.push_back(gname);
    std::sort(group_names.begin(), group_names.end());
    group_names.erase(std::unique(group_names.begin(), group_names.end()), group_names.end());
    auto live_in = [&](const std::string& gname) {
        const auto n = rep.group_live.find(gname);
        return n == rep.group_live.end() ? 0 : n->second;
    };
    if (json) {
        nlohmann::json j = {{"cap", lim.cap},
                            {"max_attempts", lim.max_attempts},
                            {"kill_grace_ms", std::chrono::duration_cast<std::chrono::milliseconds>(lim.kill_grace).count()},
                            {"live", rep.live},
                            {"pm_live", rep.pm_live},
                            {"quarantined", quarantined.size()},
                            {"paused", sched.paused},
                            {"groups", nlohmann::json::object()},
                            {"counts", nlohmann::json::object()},
                            {"sessions", nlohmann::json::array()},
                            {"tasks", nlohmann::json::array()}};
        for (auto st : state_order) j["counts"][std::string(to_string(st))] = counts[static_cast<std::size_t>(st)];
        j["counts"]["quarantined"] = quarantined_tasks;
        for (const auto& gname : group_names) {
            const auto p = sched.group(gname);
            std::size_t pending = 0;
            for (const auto& it : all) pending += it.group == gname && it.state == task_state::pending;
            j["groups"][gname] = {{"cap", p.cap ? nlohmann::json(*p.cap) : nlohmann::json(nullptr)},
                                  {"paused", p.paused},
                                  {"live", live_in(gname)},
                                  {"pending", pending}};
        }
        for (auto& s : sessions) j["sessions"].push_back(session_json(s));
        for (auto& it : items) j["tasks"].push_back(task_json(it));
        for (auto& q : q_tasks) j["tasks"].push_back(quarantine_json(q));
        std::cout << j.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace) << "\n";
        return ex_ok;
    }
    std::printf("home %s\ncap %d (max attempts %d, kill grace %s s): %d dev agent%s live, PM %s\n", g.home.c_str(),
                lim.cap, lim.max_attempts, seconds_text(lim.kill_grace).c_str(), rep.live, rep.live == 1 ? "" : "s",
                rep.pm_live ? "live" : "not running");
    const auto count_of = [&](task_state st) { return counts[static_cast<std::size_t>(st)]; };
    std::string summary = cli::joined(
        state_order |
            ranges::views::filter([&](task_state st) { return count_of(st) || st == task_state::pending || st == task_state::running; }) |
            ranges::views::transform([&](task_state st) { return std::to_string(count_of(st)) + " " + std::string(to_string(st)); }),
        ", ");
    if (quarantined_tasks) summary += ", " + std::to_string(quarantined_tasks) + " quarantined";
    std::printf("tasks: %s%s\n", summary.c_str(), sched.paused ? "; the queue is PAUSED (kugetsu resume)" : "");
    if (!group_names.empty()) {
        const std::string line = cli::joined(group_names | ranges::views::transform([&](const std::string& gname) {
                                                 const auto p = sched.group(gname);
                                                 return gname + " " + std::to_string(live_in(gname)) + "/" +
                                                        (p.cap ? std::to_string(*p.cap) : std::string("-")) +
                                                        (p.paused ? " paused" : "");
                                             }),
                                             ", ");
        std::printf("groups (live/cap): %s\n", line.c_str());
    }
    if (!quarantined.empty())
        std::printf("%zu record%s kept in the quarantine table (kugetsu check lists them)\n", quarantined.size(),
                    quarantined.size() == 1 ? "" : "s");
    if (items.empty() && q_tasks.empty()) {
        std::printf(all.empty() ? "no tasks\n" : "no task matches\n");
        return ex_ok;
    }
    // Columns: the ids as wide as the widest (at most 32), the command gets what the terminal
    // leaves (all of it when not on a terminal), the state coloured on a terminal.
    const std::size_t width = cli::terminal_width(std::getenv("COLUMNS"));
    const bool colour = cli::use_colour(std::getenv("NO_COLOR"));
    std::size_t id_w = 4;
    for (const auto& it : items) id_w = std::max(id_w, std::min<std::size_t>(cli::text_width(it.id), 32));
    for (const auto& q : q_tasks) id_w = std::max(id_w, std::min<std::size_t>(cli::text_width(q.task_id), 32));
    const auto now = std::chrono::time_point_cast<std::chrono::microseconds>(std::chrono::system_clock::now());
    // GROUP and PRI only when a task listed has one.
    std::size_t group_w = 0;
    bool with_priority = false;
    for (const auto& it : items) {
        if (!it.group.empty()) group_w = std::max(group_w, std::min<std::size_t>(std::max<std::size_t>(it.group.size(), 5), 16));
        with_priority = with_priority || it.priority != 0;
    }
    const std::string tail = " ROLE STATE     RUN ATTEMPTS PID      EXIT AGE     TIME    " +
                             (group_w ? cli::pad("GROUP", group_w) + " " : std::string()) +
                             (with_priority ? std::string("PRI     ") : std::string());
    // A narrow terminal narrows the ids first (to 8), so that the command keeps 10 columns.
    if (width && id_w + tail.size() + 10 > width) id_w = std::max<std::size_t>(8, width > tail.size() + 10 ? width - tail.size() - 10 : 0);
    const std::string head = cli::pad("TASK", id_w) + tail;
    const std::size_t cmd_w = width == 0 ? 0 : width >= head.size() + 10 ? width - head.size() : 10;
    std::printf("%sCOMMAND\n", head.c_str());
    for (const auto& it : items) {
        char attempts[24], run[16];
        std::snprintf(attempts, sizeof attempts, "%d/%d", it.attempts, it.max_attempts);
        std::snprintf(run, sizeof run, "%lld", static_cast<long long>(it.restarts) + 1);
        const std::string age = cli::human_duration(now - it.enqueued_at);
        std::string took = "-";
        if (it.started_at) took = cli::human_duration((it.finished_at ? *it.finished_at : now) - *it.started_at);
        const std::string state(to_string(it.state));
        const char* c = colour ? cli::state_colour(it.state) : "";
        std::string line = cli::pad(cli::fit(it.id, id_w), id_w) + " " + cli::pad(to_string(it.role), 4) + " " +
                           (*c ? std::string(c) + cli::pad(state, 9) + "\033[0m" : cli::pad(state, 9)) + " " +
                           cli::pad(run, 3) + " " + cli::pad(attempts, 8) + " " +
                           cli::pad(it.process ? std::to_string(it.process.pid) : "-", 8) + " " +
                           cli::pad(it.exit_code ? std::to_string(*it.exit_code) : "-", 4) + " " + cli::pad(age, 7) + " " +
                           cli::pad(took, 7) + " " +
                           (group_w ? cli::pad(cli::fit(it.group.empty() ? "-" : it.group, group_w), group_w) + " " : std::string()) +
                           (with_priority ? cli::pad(std::to_string(it.priority), 7) + " " : std::string()) +
                           cli::fit(cli::shell_join(it.argv), cmd_w);
        std::printf("%s\n", line.c_str());
        if (!it.last_error.empty() && it.state == task_state::error)
            std::printf("    %s\n", cli::fit(it.last_error, width > 4 ? width - 4 : 0).c_str());
        else if (!it.last_error.empty() && !is_final(it.state))
            std::printf("    last error: %s\n", cli::fit(it.last_error, width > 16 ? width - 16 : 0).c_str());
        if (it.state == task_state::waiting && it.not_before && *it.not_before > now)
            std::printf("    retry in %s\n", cli::human_duration(*it.not_before - now).c_str());
        else if (it.state == task_state::waiting) {
            std::printf("    after: %s\n", cli::fit(cli::joined(it.after, " "), width > 11 ? width - 11 : 0).c_str());
        }
    }
    for (const auto& q : q_tasks) {
        const char* c = colour ? "\033[31m" : "";
        std::printf("%s %s %s\n", cli::pad(cli::fit(q.task_id, id_w), id_w).c_str(), cli::pad("-", 4).c_str(),
                    (*c ? std::string(c) + "quarantined\033[0m" : std::string("quarantined")).c_str());
        const std::string where = "kept in " + d.store().path() + ", table quarantine, row " + std::to_string(q.n) + ": " +
                                  q.why + " (kugetsu remove " + q.task_id + " deletes it)";
        std::printf("    %s\n", cli::fit(where, width > 4 ? width - 4 : 0).c_str());
    }
    return ex_ok;
}

/// Waits until `done` returns a status (>= 0), recording the ends of agents if nobody else
/// does (serve_until): with no daemon running, this process runs the reap passes (ends,
/// timeouts, kill graces) itself. With a daemon running it leaves them to the daemon, which
/// wakes for every end, and reads records without the cap lock, so that it never makes the
/// daemon wait for it. A daemon that dies, however it dies, closes its daemon.lock: the
/// IN_CLOSE_WRITE wakes this process, which reaps from then on (nothing recorded in between
/// is missed). No polling interval. `give_up`: `timed_out()` gives the status after then.
template <class Done, class TimedOut = int (*)()>
int until(const globals& g, cli_dispatcher& d, Done done, const std::string& also_watch = {},
          std::optional<timestamp> give_up = std::nullopt, TimedOut timed_out = nullptr) {
    const home_layout h{g.home};
    home_waiter w(h, {.daemon_lock = true, .also = also_watch, .signals = {SIGTERM, SIGINT, SIGHUP}});
    struct host {
        void reaped(const reap_report&) { warn_quarantined(); }
    };
    const auto end = serve_until<int>(
        d, w, [&]() -> std::optional<int> { const int r = done(); return r >= 0 ? std::optional<int>(r) : std::nullopt; },
        [&] { return daemon_running(h.daemon_lock()); }, give_up, host{});
    switch (end.why) {
    case until_end<int>::reason::done: return end.value;
    case until_end<int>::reason::stop: return 128 + w.last_signal();
    case until_end<int>::reason::timed_out: return timed_out();
    case until_end<int>::reason::failed: break;
    }
    return report(end.ec, d.last_error_detail());
}

/// Why start() left a task unstarted, for its message.
std::string not_started(cli_dispatcher& d, const task_spec& spec, start_status st) {
    if (st == start_status::paused) {
        std::error_code ec;
        const auto sc = d.store().get_schedule(ec);
        return !ec && !sc.paused && !spec.group.empty() ? "group \"" + spec.group + "\" is paused (kugetsu resume --group " + spec.group + ")"
                                                        : std::string("the queue is paused (kugetsu resume)");
    }
    std::string why = "no free slot: ";
    std::error_code ec;
    const auto sc = d.store().get_schedule(ec);
    const auto gcap = spec.group.empty() || ec ? std::nullopt : sc.group(spec.group).cap;
    const auto rep_live = d.reap(ec);
    if (gcap && !ec) {
        const auto n = rep_live.group_live.find(spec.group);
        if (n != rep_live.group_live.end() && n->second >= *gcap)
            return why + "group \"" + spec.group + "\" has its cap of " + std::to_string(*gcap) + " live";
    }
    return why + "the cap (" + std::to_string(d.current_limits().cap) + " dev agents) is reached";
}

int cmd_start(const globals& g, const task_flags& f, bool wait) {
    auto d = open_home(g);
    quarantine_guard watch_quarantine(d.store());
    const auto spec = f.spec();
    auto attempt = [&]() -> int {
        std::error_code ec;
        const auto r = d.start(spec, ec);
        if (ec == errc::pm_already_running) {
            if (wait) return -1;
            std::cerr << "kugetsu: no free slot: a PM agent is already running\n";
            return ex_tempfail;
        }
        if (ec) return report(ec, d.last_error_detail());
        if (r.status == start_status::no_slot || r.status == start_status::paused) {
            if (wait) return -1;
            std::cerr << "kugetsu: " << not_started(d, spec, r.status) << "; nothing was started or recorded\n";
            return ex_tempfail;
        }
        warn_notifier(d);
        if (json_out) print_json(task_json(r.item));
        else std::cout << r.item.id << " " << r.item.process.pid << "\n";
        return ex_ok;
    };
    if (!wait) return attempt();
    // --wait: tried again whenever HOME changes (a commit rings the bell, an agent's end closes
    // its slot file); in between it sleeps. Interrupted, it has changed nothing.
    return until(g, d, attempt);
}

/// The status `wait` gives for a final task: 0 completed; the agent's exit code (1-255; 128 +
/// N if a signal N killed it) for one that ended in error by itself; 124 stopped by its
/// timeout; 125 cancelled; 126 never started (every attempt failed before its program ran,
/// or a dependency failed); 127 ended with its exit code unknown (exit_unknown).
int wait_code(const queue_item& it) {
    if (it.state == task_state::completed) return ex_ok;
    if (it.state == task_state::cancelled) return 125;
    if (it.stop_reason == stop_reason::timeout) return 124;
    if (it.exit_code && *it.exit_code > 0) return *it.exit_code;
    if (!it.started_at) return 126;   // never ran: attempts exhausted, start interrupted, dependency_failed
    return 127;
}

int cmd_wait(const globals& g, std::vector<std::string> ids, bool json, const std::string& timeout_text) {
    std::optional<timestamp> give_up;
    if (!timeout_text.empty())
        give_up = std::chrono::time_point_cast<std::chrono::microseconds>(std::chrono::system_clock::now()) +
                  cli::parse_duration("--timeout", timeout_text);
    require_home(g.home);
    auto d = open_home(g);
    quarantine_guard watch_quarantine(d.store());
    std::error_code ec;
    if (ids.empty()) {
        for (auto& it : d.store().list_items(ec)) ids.push_back(it.id);
        if (ec) return report(ec, "queue: " + std::string(d.store().last_error_detail()));
    }
    for (auto& id : ids)
        if (!valid_task_id(id)) return report(errc::invalid_task_id, "\"" + shown_id(id) + "\" is not a task id");
    std::vector<std::optional<queue_item>> final(ids.size());   // a final state never changes: not re-read
    return until(g, d, [&]() -> int {
        for (auto [id, fin] : ranges::views::zip(ids, final)) {
            if (fin) continue;
            std::error_code e;
            auto it = d.store().get_item(id, e);
            if (e) return report(e, "task \"" + id + "\": " + std::string(d.store().last_error_detail()));
            if (!it) return report(errc::unknown_task, no_task(d.store(), id));
            if (!is_final(it->state)) return -1;
            fin = std::move(it);
        }
        // The first task (in the order given) that did not complete gives the status.
        int rc = ex_ok;
        for (const auto& it : final)
            if (rc == ex_ok) rc = wait_code(*it);
        if (json) {
            auto tasks = nlohmann::json::array();
            for (const auto& it : final)
                tasks.push_back({{"id", it->id},
                                 {"state", to_string(it->state)},
                                 {"exit_code", it->exit_code ? nlohmann::json(*it->exit_code) : nlohmann::json(nullptr)},
                                 {"status", wait_code(*it)},
                                 {"run", static_cast<std::int64_t>(it->restarts) + 1},
                                 {"last_error", it->last_error}});
            std::cout << nlohmann::json{{"status", rc}, {"tasks", std::move(tasks)}}.dump(
                             -1, ' ', false, nlohmann::json::error_handler_t::replace)
                      << "\n";
            return rc;
        }
        for (const auto& it : final)
            if (it->state != task_state::completed)
                std::cerr << "kugetsu: task " << it->id << ": " << to_string(it->state)
                          << (it->last_error.empty() ? "" : ": " + it->last_error) << " (status " << wait_code(*it)
                          << ")\n";
        return rc;
    }, {}, give_up, [&]() -> int {
        // Given up: the tasks not yet final, as they stand now.
        std::vector<std::pair<std::string, std::string>> open;
        for (const auto& [id, fin] : ranges::views::zip(ids, final)) {
            if (fin) continue;
            std::error_code e;
            const auto it = d.store().get_item(id, e);
            open.emplace_back(id, e ? "unreadable" : it ? to_string(it->state) : "gone");
        }
        if (json) {
            auto tasks = nlohmann::json::array();
            for (const auto& [id, st] : open) tasks.push_back({{"id", id}, {"state", st}});
            print_json({{"status", ex_tempfail}, {"timed_out", true}, {"open", std::move(tasks)}});
            return ex_tempfail;
        }
        std::string list;
        for (const auto& [id, st] : open) list += (list.empty() ? "" : ", ") + shown_id(id) + " (" + st + ")";
        std::cerr << "kugetsu: wait: gave up after " << timeout_text << ": " << open.size() << " not final: " << list << "\n";
        return ex_tempfail;
    });
}

int cmd_cancel(const globals& g, const std::string& id, bool no_wait) {
    auto d = open_home(g);
    quarantine_guard watch_quarantine(d.store());
    std::error_code ec;
    auto it = d.cancel(id, ec);   // reaps first: an agent that has already ended is recorded as such
    if (ec == errc::unknown_task && valid_task_id(id)) return report(ec, no_task(d.store(), id));
    if (ec) return report(ec, d.last_error_detail());
    if (it.state != task_state::running || no_wait) {
        if (json_out) print_json(task_json(it));
        else std::cout << id << " " << (it.state == task_state::running ? "stopping" : to_string(it.state)) << "\n";
        return ex_ok;
    }
    // Stopping: SIGTERM was sent; wait until its end is recorded, with SIGKILL after the grace.
    return until(g, d, [&]() -> int {
        std::error_code e;
        auto cur = d.store().get_item(id, e);
        if (e) return report(e, d.store().last_error_detail());
        if (!cur || !is_final(cur->state)) return -1;
        if (json_out) print_json(task_json(*cur));
        else std::cout << id << " " << to_string(cur->state) << "\n";
        return ex_ok;
    });
}

/// restart ID... , or retry --failed (`failed`: every task in state error).
int cmd_restart(const globals& g, const std::vector<std::string>& ids, bool failed) {
    if (!failed)
        if (int bad = check_ids(ids)) return bad;
    auto d = open_home(g);
    quarantine_guard watch_quarantine(d.store());
    std::error_code ec;
    const auto items = failed ? d.restart_all(task_state::error, ec) : d.restart(ids, ec);
    if (ec) return report(ec, d.last_error_detail());
    warn_notifier(d);
    if (json_out) {
        auto tasks = nlohmann::json::array();
        for (const auto& it : items) tasks.push_back(task_json(it));
        print_json({{"tasks", std::move(tasks)}});
    } else {
        for (const auto& it : items) std::cout << it.id << " " << to_string(it.state) << " (run " << it.restarts + 1 << ")\n";
    }
    if (failed && items.empty()) std::cerr << "kugetsu: no task in state error\n";
    return ex_ok;
}

/// Deletes the logs of tasks just removed, under the cap lock (a dispatcher's after_commit):
/// no agent of this HOME starts meanwhile, so no new task's log is taken for an old one. A
/// log that cannot be removed is said, and kept. Returns how many were deleted.
int delete_logs(const globals& g, const std::vector<queue_item>& items, bool& failed) {
    const home_layout h{g.home};
    int n = 0;
    for (const auto& it : items) {
        const std::string log = h.logs() + "/" + it.id + ".log";
        if (::unlink(log.c_str()) == 0) ++n;
        else if (errno != ENOENT) {
            std::cerr << "kugetsu: " << log << ": " << std::strerror(errno) << " (the task is removed; its log is kept)\n";
            failed = true;
        }
    }
    return n;
}

int cmd_remove(const globals& g, const std::vector<std::string>& ids) {
    if (int bad = check_ids(ids)) return bad;
    auto d = open_home(g);
    quarantine_guard watch_quarantine(d.store());
    std::error_code ec;
    bool log_failed = false;
    // The tasks are gone (committed): their logs go too, so that a new task of the same id
    // starts a log of its own.
    // Ids that are only in the quarantine (their record failed validation): what was kept of
    // them is deleted, after the other tasks are removed (if any one of those is refused,
    // nothing is deleted).
    std::vector<std::string> tasks, kept;
    for (const auto& id : ids) {
        auto it = d.store().get_item(id, ec);
        if (ec) return report(ec, d.store().last_error_detail());
        bool in_quarantine = false;
        if (!it)
            for (const auto& q : d.store().quarantine_rows(ec))
                in_quarantine = in_quarantine || q.task_id == id;
        (in_quarantine ? kept : tasks).push_back(id);
    }
    std::vector<queue_item> items;
    if (!tasks.empty()) {
        items = d.remove(tasks, ec, [&](const std::vector<queue_item>& removed) { delete_logs(g, removed, log_failed); });
        if (ec) return report(ec, d.last_error_detail());
    }
    for (const auto& id : kept) {
        d.store().remove_quarantined(id, ec);
        if (ec) return report(ec, d.store().last_error_detail());
        queue_item gone;
        gone.id = id;
        items.push_back(gone);
        delete_logs(g, {gone}, log_failed);
    }
    warn_notifier(d);
    if (json_out) {
        auto removed = nlohmann::json::array();
        for (const auto& it : items)
            removed.push_back({{"id", it.id},
                               {"state", std::find(kept.begin(), kept.end(), it.id) != kept.end() ? "quarantined"
                                                                                                     : to_string(it.state)}});
        print_json({{"removed", std::move(removed)}});
    } else {
        for (const auto& it : items)
            std::cout << it.id << " removed (was "
                      << (std::find(kept.begin(), kept.end(), it.id) != kept.end() ? "quarantined" : to_string(it.state))
                      << ")\n";
    }
    return log_failed ? ex_ioerr : ex_ok;
}

int cmd_clean(const globals& g, const std::string& older_than, const std::vector<std::string>& states) {
    const bool json = json_out;
    cli_dispatcher::clean_filter f;
    for (const auto& name : states) {
        const auto st = parse_task_state(name);
        if (!st || !is_final(*st))
            throw cli::usage_error("--state \"" + shown_id(name) + "\": clean removes finished tasks only (completed, error, cancelled)");
        f.states.push_back(*st);
    }
    if (!older_than.empty())
        f.finished_before = std::chrono::time_point_cast<std::chrono::microseconds>(std::chrono::system_clock::now()) -
                            cli::parse_duration("--older-than", older_than);
    require_home(g.home);
    auto d = open_home(g);
    quarantine_guard watch_quarantine(d.store());
    std::error_code ec;
    bool log_failed = false;
    int logs = 0, orphans = 0;
    const home_layout h{g.home};
    const auto removed = d.clean(f, ec, [&](const std::vector<queue_item>& gone) {
        logs = delete_logs(g, gone, log_failed);
        // Logs of tasks that no longer exist (a remove or clean that died before deleting
        // them): still under the lock, so none is a log being started.
        if (DIR* dir = ::opendir(h.logs().c_str())) {
            std::vector<std::string> stale;
            while (const dirent* e = ::readdir(dir)) {
                const std::string name = e->d_name;
                if (name.size() < 5 || name.compare(name.size() - 4, 4, ".log") != 0) continue;
                const std::string id = name.substr(0, name.size() - 4);
                std::error_code gec;
                if (valid_task_id(id) && !d.store().get_item(id, gec) && !gec) stale.push_back(id);
            }
            ::closedir(dir);
            std::vector<queue_item> named(stale.size());
            for (std::size_t i = 0; i < stale.size(); ++i) named[i].id = stale[i];
            orphans = delete_logs(g, named, log_failed);
        }
    });
    if (ec) return report(ec, d.last_error_detail());
    warn_notifier(d);
    // The events file: the lines of tasks that no longer exist go (the last line stays).
    std::set<std::string> live_ids;
    for (auto& it : d.store().list_items(ec)) live_ids.insert(it.id);
    if (ec) return report(ec, "queue: " + std::string(d.store().last_error_detail()));
    jsonl_notifier events(h.events());
    const std::size_t lines = events.compact([&](const event& e) { return !live_ids.count(e.task_id); }, ec);
    if (ec) {
        std::cerr << "kugetsu: " << events.last_error_detail() << " (the tasks are deleted; the events file keeps their lines)\n";
        log_failed = true;
    }
    if (json) {
        auto ids = nlohmann::json::array();
        for (const auto& it : removed) ids.push_back(it.id);
        std::cout << nlohmann::json{{"removed", ids}, {"logs_deleted", logs + orphans}, {"event_lines_pruned", lines}}.dump()
                  << "\n";
    } else {
        std::printf("%zu task%s deleted, %d log%s, %zu line%s of events.jsonl\n", removed.size(), removed.size() == 1 ? "" : "s",
                    logs + orphans, logs + orphans == 1 ? "" : "s", lines, lines == 1 ? "" : "s");
    }
    return log_failed ? ex_ioerr : ex_ok;
}

/// Copies what was appended to `path` since `offset` to stdout.
void copy_new(const std::string& path, off_t& offset) {
    const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC | O_NOFOLLOW | O_NONBLOCK);
    if (fd < 0) return;
    struct stat st{};
    if (::fstat(fd, &st) != 0 || !S_ISREG(st.st_mode)) {   // a FIFO or device planted there: never read
        ::close(fd);
        return;
    }
    char buf[65536];
    for (;;) {
        const ssize_t n = ::pread(fd, buf, sizeof buf, offset);
        if (n < 0 && errno == EINTR) continue;
        if (n <= 0) break;
        std::fwrite(buf, 1, static_cast<std::size_t>(n), stdout);
        offset += n;
    }
    std::fflush(stdout);
    ::close(fd);
}

int cmd_logs(const globals& g, const std::string& id, bool follow) {
    require_home(g.home);
    auto d = open_home(g);
    quarantine_guard watch_quarantine(d.store());
    std::error_code ec;
    if (!valid_task_id(id)) return report(errc::invalid_task_id, "\"" + shown_id(id) + "\" is not a task id");
    auto it = d.store().get_item(id, ec);
    if (ec) return report(ec, d.store().last_error_detail());
    if (!it) return report(errc::unknown_task, no_task(d.store(), id));
    const home_layout h{g.home};
    const std::string path = h.logs() + "/" + id + ".log";
    off_t offset = 0;
    if (!follow) {
        copy_new(path, offset);
        return ex_ok;
    }
    return until(g, d, [&]() -> int {
        copy_new(path, offset);
        std::error_code e;
        auto cur = d.store().get_item(id, e);
        if (e) return report(e, d.store().last_error_detail());
        if (cur && is_final(cur->state)) {
            copy_new(path, offset);
            return ex_ok;
        }
        return -1;
    }, h.logs());
}

int cmd_events(const globals& g, bool follow, const std::string& since_text) {
    require_home(g.home);
    std::uint64_t since = 0;
    if (!since_text.empty()) {
        char* end = nullptr;
        errno = 0;
        const unsigned long long v = std::strtoull(since_text.c_str(), &end, 10);
        if (since_text[0] < '0' || since_text[0] > '9' || errno || *end || v > max_event_seq)
            throw cli::usage_error("--since \"" + shown_id(since_text) + "\" is not an event number");
        since = v;
    }
    auto d = open_home(g, /*expect=*/false);
    quarantine_guard watch_quarantine(d.store());
    std::error_code ec;
    std::optional<watcher> w;
    if (follow) {
        w.emplace();
        w->add(g.home, IN_MODIFY | IN_CREATE, ec, {home_layout::bell_name});
        if (!ec) w->catch_signals({SIGTERM, SIGINT, SIGHUP}, ec);
        if (ec) return report(ec, "inotify on " + g.home + ": " + ec.message());
    }
    for (;;) {
        if (w) w->drain();
        for (;;) {
            const auto batch = d.store().events_after(since, 1024, ec);
            if (ec) return report(ec, "events: " + std::string(d.store().last_error_detail()));
            if (batch.empty()) break;
            for (const auto& e : batch)
                std::cout << nlohmann::json(e).dump(-1, ' ', false, nlohmann::json::error_handler_t::replace) << "\n";
            since = batch.back().seq;
        }
        std::cout.flush();
        if (!std::cout) return ex_ioerr;
        if (!w) return ex_ok;
        if (w->wait(std::nullopt, {}, {}, ec) == watcher::wake::signal) return ex_ok;
    }
}

int cmd_timeline(const globals& g, const std::string& since_text, const std::string& out) {
    const auto now = std::chrono::time_point_cast<std::chrono::microseconds>(std::chrono::system_clock::now());
    std::optional<timestamp> since;
    if (!since_text.empty()) {
        if (auto t = parse_rfc3339(since_text)) since = *t;
        else since = now - cli::parse_duration("--since", since_text);
    }
    require_home(g.home);
    auto d = open_home(g, /*expect=*/false);
    quarantine_guard watch_quarantine(d.store());
    std::error_code ec;
    d.reap(ec);   // ends not yet recorded are drawn as they are
    if (ec) return report(ec, d.last_error_detail());
    const auto items = d.store().list_items(ec);
    if (ec) return report(ec, "queue: " + std::string(d.store().last_error_detail()));
    const auto runs = timeline_runs(items, now, since);
    std::ostringstream svg;
    write_timeline_svg(svg, runs, d.current_limits().cap, "kugetsu " + g.home);
    const std::string text = svg.str();
    if (out == "-") {
        std::cout << text;
        std::cout.flush();
        return std::cout ? ex_ok : ex_ioerr;
    }
    if (const auto wec = replace_file(out, text)) return report(wec, out + ": " + wec.message());
    if (json_out) print_json({{"output", out}, {"runs", runs.size()}});
    else std::printf("%s: %zu runs\n", out.c_str(), runs.size());
    return ex_ok;
}

int cmd_pause(const globals& g, const std::string& group, bool pause) {
    if (!group.empty() && !valid_group_name(group))
        return report(errc::invalid_group, "--group \"" + shown_id(group) + "\": " + make_error_code(errc::invalid_group).message());
    auto d = open_home(g);
    quarantine_guard watch_quarantine(d.store());
    std::error_code ec;
    const auto sc = pause ? d.pause(group, ec) : d.resume(group, ec);
    if (ec) return report(ec, d.last_error_detail());
    const char* verb = pause ? "paused" : "resumed";
    if (json_out) print_json(schedule_json(sc));
    else if (group.empty()) std::printf("queue %s\n", verb);
    else std::printf("group %s %s%s\n", group.c_str(), verb, sc.paused ? " (the whole queue is still paused)" : "");
    return ex_ok;
}

/// The groups of the schedule as `config` prints them: "group G cap N[ paused]".
void print_groups(const queue_schedule& sc) {
    if (sc.paused) std::printf("paused\n");
    for (const auto& [name, p] : sc.groups)
        std::printf("group %s cap %s%s\n", name.c_str(), p.cap ? std::to_string(*p.cap).c_str() : "none",
                    p.paused ? " paused" : "");
}

int cmd_config(const globals& g, const std::vector<std::string>& args) {
    if (!args.empty() && args[0] == "group") {
        if (args.size() != 4 || args[2] != "cap")
            throw cli::usage_error("config group: give a group, \"cap\" and a value: group G cap N|none");
        if (!valid_group_name(args[1]))
            return report(errc::invalid_group, "group \"" + shown_id(args[1]) + "\": " + make_error_code(errc::invalid_group).message());
        std::optional<int> cap;
        if (args[3] != "none") cap = cli::parse_int("group " + args[1] + " cap", args[3], 1, max_cap);
        auto d = open_home(g, /*expect=*/false);
        quarantine_guard watch_quarantine(d.store());
        std::error_code ec;
        const auto sc = d.set_group_cap(args[1], cap, ec);
        if (ec) return report(ec, d.last_error_detail());
        const auto p = sc.group(args[1]);
        if (json_out)
            print_json({{"group", args[1]}, {"cap", p.cap ? nlohmann::json(*p.cap) : nlohmann::json(nullptr)}, {"paused", p.paused}});
        else
            std::printf("group %s cap %s%s\n", args[1].c_str(), p.cap ? std::to_string(*p.cap).c_str() : "none",
                        p.paused ? " paused" : "");
        return ex_ok;
    }
    if (args.empty()) require_home(g.home);
    auto d = open_home(g, /*expect=*/false);
    quarantine_guard watch_quarantine(d.store());
    std::error_code ec;
    auto lim = d.limits(ec);
    if (ec) return report(ec, d.last_error_detail());
    if (!args.empty()) {
        if (args.size() != 2)
            throw cli::usage_error("config: give a setting and a value: cap N | max-attempts N | kill-grace S | group G cap N|none");
        const auto env = [&](const char* name) -> const char* { return name == std::string_view("V") ? args[1].c_str() : nullptr; };
        if (args[0] == "cap") lim.cap = cli::env_int(env, "V", 0, 1, max_cap);
        else if (args[0] == "max-attempts") lim.max_attempts = cli::env_int(env, "V", 0, 1, max_attempts_limit);
        else if (args[0] == "kill-grace") lim.kill_grace = cli::parse_seconds("kill-grace", args[1], /*allow_zero=*/true);
        else throw cli::usage_error("config: unknown setting \"" + shown_id(args[0]) + "\" (cap, max-attempts, kill-grace, group)");
        d.set_limits(lim, ec);
        if (ec) return report(ec, d.last_error_detail());
    }
    const auto sc = d.store().get_schedule(ec);
    if (ec) return report(ec, d.store().last_error_detail());
    if (json_out) {
        auto j = schedule_json(sc);
        j["cap"] = lim.cap;
        j["max_attempts"] = lim.max_attempts;
        j["kill_grace_ms"] = std::chrono::duration_cast<std::chrono::milliseconds>(lim.kill_grace).count();
        print_json(j);
        return ex_ok;
    }
    std::printf("cap %d\nmax-attempts %d\nkill-grace %s\n", lim.cap, lim.max_attempts, seconds_text(lim.kill_grace).c_str());
    print_groups(sc);
    return ex_ok;
}

int cmd_check(const globals& g) {
    require_home(g.home);
    std::error_code ec;
    std::string why;
    // Opened without the dispatcher: a check reads, repairs nothing, and needs no limits.
    sqlite_store store = open_home_store(g.home, ec, why);
    if (ec) return report(ec, why);
    const auto r = store.check(ec);
    if (ec) return report(ec, store.last_error_detail());
    if (json_out) {
        auto q = nlohmann::json::array();
        for (auto& row : store.quarantine_rows(ec))
            q.push_back({{"n", row.n}, {"source", row.source}, {"task_id", row.task_id}, {"why", row.why},
                         {"at", format_rfc3339(row.at)}});
        print_json({{"database", store.path()}, {"ok", r.ok()}, {"tasks", r.tasks}, {"sessions", r.sessions},
                    {"events", r.events}, {"quarantined", r.quarantined}, {"integrity", r.integrity},
                    {"invalid_rows", r.bad_rows}, {"quarantine", std::move(q)}});
        return r.ok() ? ex_ok : ex_dataerr;
    }
    std::printf("%s: %d tasks, %d sessions, %d events, %d quarantined\n", store.path().c_str(), r.tasks, r.sessions,
                r.events, r.quarantined);
    for (auto& l : r.integrity) std::printf("integrity: %s\n", l.c_str());
    for (auto& l : r.bad_rows) std::printf("invalid row: %s\n", l.c_str());
    for (auto& q : store.quarantine_rows(ec))
        std::printf("quarantined %lld: %s: %s\n", static_cast<long long>(q.n), q.source.c_str(), q.why.c_str());
    if (!r.ok()) {
        std::fprintf(stderr, "kugetsu: %s: %s\n", store.path().c_str(),
                     r.integrity.empty() ? "rows fail validation" : "SQLite's integrity check failed");
        return ex_dataerr;
    }
    std::printf("ok\n");
    return ex_ok;
}

} // namespace

int main(int argc, char** argv) {
    cli::command_line cl;
    CLI::App& app = cl.app;
    if (auto bad = cli::unknown_command(app, std::vector<std::string>(argv + 1, argv + argc))) {
        std::cerr << "kugetsu: \"" << shown_id(*bad) << "\" is not a command (commands: " << cli::command_names(app)
                  << ")\nRun 'kugetsu --help'.\n";
        return ex_usage;
    }
    try {
        app.parse(argc, argv);
    } catch (const CLI::CallForVersion& e) {
        return app.exit(e);
    } catch (const CLI::CallForHelp& e) {
        return app.exit(e);
    } catch (const CLI::CallForAllHelp& e) {
        return app.exit(e);
    } catch (const CLI::ParseError& e) {
        std::cerr << "kugetsu: " << e.what() << "\nRun 'kugetsu --help' or 'kugetsu COMMAND --help'.\n";
        return ex_usage;
    }

    try {
        const globals g = load_globals(cl.home);
        json_out = cl.json;
        if (*cl.enqueue) return cmd_enqueue(g, cl.enqueue_flags);
        if (*cl.start) return cmd_start(g, cl.start_flags, cl.start_wait);
        if (*cl.daemon) return cmd_daemon(g, cl.once, cl.verbose);
        if (*cl.status) return cmd_status(g, cl.json, cl.status_ids, cl.status_states, cl.status_groups);
        if (*cl.wait) return cmd_wait(g, cl.wait_ids, cl.json, cl.wait_timeout);
        if (*cl.cancel) return cmd_cancel(g, cl.cancel_id, cl.no_wait);
        if (*cl.logs) return cmd_logs(g, cl.logs_id, cl.follow_logs);
        if (*cl.events) return cmd_events(g, cl.follow_events, cl.events_since);
        if (*cl.reap) return cmd_reap(g, cl.quiet);
        if (*cl.config) return cmd_config(g, cl.config_args);
        if (*cl.check) return cmd_check(g);
        if (*cl.restart) return cmd_restart(g, cl.restart_ids, false);
        if (*cl.retry) return cmd_restart(g, {}, true);
        if (*cl.remove) return cmd_remove(g, cl.remove_ids);
        if (*cl.timeline) return cmd_timeline(g, cl.timeline_since, cl.timeline_out);
        if (*cl.clean) return cmd_clean(g, cl.clean_older_than, cl.clean_states);
        if (*cl.pause) return cmd_pause(g, cl.pause_group, true);
        if (*cl.resume) return cmd_pause(g, cl.resume_group, false);
    } catch (const cli::usage_error& e) {
        std::cerr << "kugetsu: " << e.what() << "\n";
        return ex_usage;
    } catch (const no_home& e) {
        std::cerr << "kugetsu: " << e.what() << "\n";
        return ex_noinput;
    } catch (const kugetsu::error& e) {
        // what() is the detail and ": " + the code's message: said once if the detail says it.
        std::string what = e.what();
        const std::string tail = ": " + e.code().message();
        if (what.size() > 2 * tail.size() && what.ends_with(tail) &&
            std::string_view(what).substr(0, what.size() - tail.size()).ends_with(tail.substr(2)))
            what.resize(what.size() - tail.size());
        else if (e.code() == errc::unsafe_state && what.ends_with(tail) && what.size() > tail.size())
            what.resize(what.size() - tail.size());   // the detail names the file and the test it failed
        return report(e.code(), what);
    } catch (const std::system_error& e) {
        std::cerr << "kugetsu: " << e.what() << "\n";
        return ex_ioerr;
    } catch (const std::exception& e) {
        std::cerr << "kugetsu: internal error: " << e.what() << "\n";
        return ex_software;
    }
    return ex_usage;
}
