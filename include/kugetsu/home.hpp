// kugetsu/home.hpp: a state directory (HOME) and the real dispatcher over it: the SQLite
// store in HOME/state.db, the flock on HOME/lock, agents under fork_spawner, events in
// HOME/events.jsonl. Target kugetsu::sqlite.
//
//   kugetsu::dispatcher d = kugetsu::open_dispatcher(home, {.cap = 2});
//
// The layout of HOME is in state_dir.hpp. Waiting for work: home_waiter (below) with
// serve() or serve_until() (serve.hpp).
//
// IMPORT OF A KUGETSU 0.1 HOME. A HOME written by the file store of kugetsu 0.1 (queue/,
// sessions/, pending/, active/, events.jsonl) is imported by the first open_home_store() of
// this release, with HOME/lock held, in one unit of work: every task with its state and
// attempt count, every session (live agents stay counted: their slot files are read as
// before) and every event line (numbered in file order). A record that cannot be read is
// kept in the quarantine table with its text and the reason. The unit also writes
// meta.imported_from_files, so it is done once; the old files are then renamed, left in
// place, to queue.imported/, sessions.imported/, pending.imported/, active.imported/ and
// events.jsonl.imported (a rename cut short by a crash is finished by the next open). A
// kugetsu 0.1 daemon still running on HOME (it holds daemon.lock) makes the import fail with
// errc::invalid_transition: stop it first. quarantine/ of 0.1 stays as it is.
#pragma once

#include <chrono>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include <dirent.h>
#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include "clock/system_clock.hpp"
#include "dispatcher.hpp"
#include "detail/posix.hpp"
#include "json.hpp"
#include "lock/flock_lock.hpp"
#include "notify/jsonl_notifier.hpp"
#include "serve.hpp"
#include "spawn/fork_spawner.hpp"
#include "state_dir.hpp"
#include "watcher.hpp"
#include "store/sqlite_store.hpp"
#include "workspace/git_worktree_workspace.hpp"

namespace kugetsu {

/// The real dispatcher over a state directory (see open_dispatcher).
using dispatcher = basic_dispatcher<flock_lock, fork_spawner, jsonl_notifier, sqlite_store, system_clock,
                                    git_worktree_workspace>;

/// The waiter of a process that serves or waits on HOME (serve.hpp): a watcher of everything
/// in HOME that can change what a pass would do, the plan's processes and deadline, and the
/// signals it is asked to catch (a caught signal is wake::stop).
///   - a commit of any process: the store's bell (HOME/state.db-bell) is written: wake::store;
///   - an agent's end: the last close of its slot file in HOME/run: wake::changed;
///   - with `daemon_lock`: a daemon's end (the last close of HOME/daemon.lock): wake::changed;
///   - with `also`: any file created or written in that directory: wake::changed.
/// Throws std::system_error if inotify cannot watch HOME (HOME/run is created if missing).
class home_waiter {
public:
    struct options {
        bool daemon_lock = false;
        std::string also;                      ///< another directory to watch ("" : none)
        std::vector<int> signals;              ///< blocked, and caught: wake::stop
    };

    explicit home_waiter(const home_layout& h, const options& o) {
        std::error_code ec;
        w_.add(h.home, IN_MODIFY | IN_CLOSE_WRITE | IN_CREATE | IN_MOVED_TO, ec, {home_layout::bell_name});   // watch 0
        if (!ec && o.daemon_lock) w_.add(h.home, IN_CLOSE_WRITE, ec, {home_layout::daemon_lock_name});
        if (ec) throw std::system_error(ec, "inotify on " + h.home);
        w_.add(h.run(), IN_CLOSE_WRITE, ec, {"*"});
        if (ec) throw std::system_error(ec, "inotify on " + h.run());
        if (!o.also.empty()) {
            w_.add(o.also, IN_MODIFY | IN_CREATE, ec);
            if (ec) throw std::system_error(ec, "inotify on " + o.also);
        }
        if (!o.signals.empty()) {
            w_.catch_signals(o.signals, ec);
            if (ec) throw std::system_error(ec, "signalfd");
        }
    }
    explicit home_waiter(const home_layout& h) : home_waiter(h, options{}) {}

    void drain() noexcept { w_.drain(); }

    wake wait(const wake_plan& plan, std::error_code& ec) {
        w_.take_changes();
        switch (w_.wait(plan.deadline, plan.owners, plan.agents, ec)) {
        case watcher::wake::changed: return w_.take_changes() == 1u ? wake::store : wake::changed;
        case watcher::wake::deadline: return wake::deadline;
        case watcher::wake::process: return wake::process;
        case watcher::wake::signal: return wake::stop;
        }
        return wake::changed;
    }

    /// The signal that ended the last wait() with wake::stop.
    int last_signal() const noexcept { return w_.last_signal(); }

private:
    watcher w_;
};

static_assert(waiter<home_waiter>);

/// What import_file_home() did.
struct import_report {
    bool imported = false;   ///< this call imported a kugetsu 0.1 HOME
    int tasks = 0, sessions = 0, events = 0;
    std::vector<std::string> quarantined;   ///< records kept in the quarantine table: source and why
    std::vector<std::string> renamed;       ///< "queue -> queue.imported", ...
};

namespace detail {

inline bool exists_at(int dirfd, const char* name) noexcept {
    struct stat st{};
    return ::fstatat(dirfd, name, &st, AT_SYMLINK_NOFOLLOW) == 0;
}

/// Reads a regular, private file of at most 1 MiB relative to dirfd; `why` says what is wrong.
inline std::optional<std::string> read_record_at(int dirfd, const char* name, std::string& why) {
    std::error_code ec;
    auto fd = open_at(dirfd, name, O_RDONLY | O_NOFOLLOW | O_NONBLOCK, 0, ec);
    if (ec) return why = "cannot be opened: " + ec.message(), std::nullopt;
    struct stat st{};
    if (::fstat(fd.get(), &st) != 0) return why = "fstat: " + last_error().message(), std::nullopt;
    if (!S_ISREG(st.st_mode)) return why = "not a regular file", std::nullopt;
    if (!is_private(st)) return why = "another user's, or writable by others", std::nullopt;
    if (st.st_size > (1 << 20)) return why = "larger than 1 MiB", std::nullopt;
    auto text = read_all(fd.get(), ec, 1 << 20);
    if (ec) return why = "read: " + ec.message(), std::nullopt;
    return text;
}

/// The names in a directory (not "." and ".."), sorted.
inline std::vector<std::string> names_in(int dirfd) {
    std::vector<std::string> v;
    const int dup = ::fcntl(dirfd, F_DUPFD_CLOEXEC, 0);
    if (dup < 0) return v;
    DIR* d = ::fdopendir(dup);
    if (!d) {
        ::close(dup);
        return v;
    }
    while (const dirent* e = ::readdir(d)) {
        const std::string_view n(e->d_name);
        if (n != "." && n != "..") v.emplace_back(n);
    }
    ::closedir(d);
    std::sort(v.begin(), v.end());
    return v;
}

} // namespace detail

/// Imports a kugetsu 0.1 HOME into `store` (see the banner); nothing to do for a HOME without
/// queue/ or sessions/. Call it with HOME/lock held. Errors: the store's, or
/// errc::invalid_transition when a 0.1 daemon runs.
inline import_report import_file_home(const std::string& home, sqlite_store& store, std::error_code& ec) {
    ec.clear();
    import_report rep;
    std::error_code oec;
    auto h = detail::open_path(home, O_RDONLY | O_DIRECTORY | O_NOFOLLOW, 0, oec);
    if (oec) return ec = oec, rep;
    const int hfd = h.get();
    if (!detail::exists_at(hfd, "queue") && !detail::exists_at(hfd, "sessions")) return rep;

    const std::string done = store.get_meta("imported_from_files", ec);
    if (ec) return rep;
    if (done.empty()) {
        // A 0.1 daemon would go on writing the old files.
        if (daemon_running(home_layout{home}.daemon_lock())) {
            ec = errc::invalid_transition;
            return rep;
        }
        store.begin(ec);
        if (ec) return rep;
        detail::scope_exit undo([&] { store.rollback(); });
        if (!store.get_meta("imported_from_files", ec).empty() || ec) return rep;   // another process did it
        auto quarantine = [&](const std::string& source, const std::string& task_id, const std::string& raw,
                              const std::string& why) {
            store.quarantine_raw(source, task_id, raw, why, ec);
            rep.quarantined.push_back(source + ": " + why);
        };
        // Every <id>.json record of a directory: imported, or kept in the quarantine table.
        auto import_dir = [&](const char* dir, auto parse, auto put, int& count, bool task_ids) {
            auto d = detail::open_at(hfd, dir, O_RDONLY | O_DIRECTORY | O_NOFOLLOW, 0, oec);
            if (oec) return;
            for (const auto& name : detail::names_in(d.get())) {
                if (name.front() == '.') continue;   // a temp file of a write cut short: never a record
                std::string why;
                auto text = detail::read_record_at(d.get(), name.c_str(), why);
                decltype(parse(std::string(), why)) rec;
                if (text) {
                    rec = parse(*text, why);
                    if (rec && name != rec->id + ".json") rec.reset(), why = "its name is not <id>.json";
                }
                const std::string id = name.size() > 5 && name.ends_with(".json") ? name.substr(0, name.size() - 5) : "";
                if (!rec) {
                    quarantine(std::string(dir) + "/" + name, task_ids && valid_task_id(id) ? id : "", text.value_or(""), why);
                } else {
                    put(*rec);
                    ++count;
                }
                if (ec) return;
            }
        };
        // Tasks, then sessions (live agents stay counted).
        import_dir("queue", [](const std::string& t, std::string& why) { std::error_code pec; return parse_item(t, pec, why); },
                   [&](const queue_item& it) { store.put_item(it, ec); }, rep.tasks, true);
        if (ec) return rep;
        import_dir("sessions", [](const std::string& t, std::string& why) { std::error_code pec; return parse_session(t, pec, why); },
                   [&](const session& se) { store.put_session(se, ec); }, rep.sessions, false);
        if (ec) return rep;
        // Events, in file order.
        {
            std::string why;
            if (detail::exists_at(hfd, "events.jsonl")) {
                std::error_code rec;
                auto fd = detail::open_at(hfd, "events.jsonl", O_RDONLY | O_NOFOLLOW | O_NONBLOCK, 0, rec);
                std::string text;
                if (!rec) text = detail::read_all(fd.get(), rec, std::size_t{1} << 32);
                if (rec) quarantine("events.jsonl", "", "", "cannot be read: " + rec.message());
                std::size_t line_no = 0, pos = 0;
                while (!rec && pos < text.size()) {
                    const auto nl = text.find('\n', pos);
                    const std::string line = text.substr(pos, nl == std::string::npos ? std::string::npos : nl - pos);
                    pos = nl == std::string::npos ? text.size() : nl + 1;
                    ++line_no;
                    if (line.empty()) continue;
                    std::error_code pec;
                    auto e = parse_event(line, pec, why);
                    if (!e) quarantine("events.jsonl line " + std::to_string(line_no), "", line, why);
                    else {
                        store.append_event(*e, ec);
                        ++rep.events;
                    }
                    if (ec) return rep;
                }
            }
        }
        store.put_meta("imported_from_files", format_rfc3339(std::chrono::time_point_cast<std::chrono::microseconds>(
                                                  std::chrono::system_clock::now())),
                       ec);
        if (ec) return rep;
        undo.release();
        store.commit(durability::durable, ec);
        if (ec) return rep;
        rep.imported = true;
    }
    // Rename the old files, left in place (events.jsonl first: while queue/ or sessions/ is
    // here, no relay has written a new events.jsonl yet).
    for (const char* name : {"events.jsonl", "pending", "active", "sessions", "queue"}) {
        if (!detail::exists_at(hfd, name)) continue;
        std::string to = std::string(name) + ".imported";
        for (int n = 2; detail::exists_at(hfd, to.c_str()); ++n) to = std::string(name) + ".imported." + std::to_string(n);
        if (::renameat(hfd, name, hfd, to.c_str()) != 0) {
            ec = detail::last_error();
            return rep;
        }
        rep.renamed.push_back(std::string(name) + " -> " + to);
    }
    if (!rep.renamed.empty()) detail::fsync_fd(hfd);
    return rep;
}

/// Creates HOME (0700, with missing parents 0755, like mkdir -p) if needed, opens
/// HOME/state.db and imports a kugetsu 0.1 HOME (with HOME/lock held). Errors: ec, with
/// `detail` saying what failed on which file.
inline sqlite_store open_home_store(const std::string& home, std::error_code& ec, std::string& why,
                                    sqlite_store::options o = {}, import_report* report = nullptr) {
    ec.clear();
    for (std::size_t i = 1; i <= home.size(); ++i) {
        if (i < home.size() && home[i] != '/') continue;
        const std::string dir = home.substr(0, i);
        if (::mkdir(dir.c_str(), i == home.size() ? 0700 : 0755) != 0 && errno != EEXIST) {
            ec = detail::last_error();
            why = "mkdir " + dir + ": " + ec.message();
            return sqlite_store(home_layout{home}.db(), o);
        }
    }
    {
        struct stat st{};
        if (::lstat(home.c_str(), &st) == 0 && S_ISLNK(st.st_mode)) {
            ec = errc::unsafe_state;
            why = home + ": a symbolic link, not followed (HOME must be a real directory; give its target instead): refused";
            return sqlite_store(home_layout{home}.db(), o);
        }
    }
    const home_layout h{home};
    sqlite_store store(h.db(), o);
    store.open(ec);
    if (ec) {
        why = store.last_error_detail();
        return store;
    }
    std::error_code probe;
    auto hd = detail::open_path(home, O_RDONLY | O_DIRECTORY | O_NOFOLLOW, 0, probe);
    if (!probe && (detail::exists_at(hd.get(), "queue") || detail::exists_at(hd.get(), "sessions"))) {
        flock_lock lock(h.lock());
        lock.lock(ec);
        if (ec) {
            why = "import: lock " + h.lock() + ": " + std::string(lock.last_error_detail());
            return store;
        }
        auto rep = import_file_home(home, store, ec);
        lock.unlock();
        if (ec) {
            why = ec == errc::invalid_transition
                         ? home + ": a kugetsu 0.1 daemon still runs on it (it holds daemon.lock): stop it, then "
                                  "run kugetsu again to import its state"
                         : "import of " + home + ": " +
                               (store.last_error_detail().empty() ? ec.message() : store.last_error_detail());
            return store;
        }
        if (report) *report = std::move(rep);
    }
    return store;
}

/// A dispatcher over the state directory HOME (see the banner): the lock file HOME/lock,
/// the store HOME/state.db, agent logs in HOME/logs, slot files in HOME/run, events relayed
/// to HOME/events.jsonl, git worktrees under HOME/worktrees. `options` are the limits of a
/// HOME that has none yet. Throws kugetsu::error: invalid options, or HOME cannot be
/// created, opened or imported.
inline dispatcher open_dispatcher(const std::string& home, dispatcher_options options = {}) {
    std::error_code ec;
    std::string why;
    sqlite_store store = open_home_store(home, ec, why);
    if (ec) throw error(ec, why);
    const home_layout h{home};
    return dispatcher(flock_lock(h.lock()), fork_spawner(h.logs(), h.run()), jsonl_notifier(h.events()),
                      std::move(store), system_clock{}, git_worktree_workspace(h.worktrees()), options);
}

} // namespace kugetsu
