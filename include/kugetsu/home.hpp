// kugetsu/home.hpp: a state directory (HOME) and the real dispatcher over it: the SQLite
// store in HOME/state.db, the flock on HOME/lock, agents under fork_spawner, events in
// HOME/events.jsonl. Target kugetsu::sqlite.
//
//   kugetsu::dispatcher d = kugetsu::open_dispatcher(home, {.cap = 2});
//
// HOME/                0700, created (with missing parents) by open_home_store()
//   state.db           the store: tasks, sessions, the events outbox, the limits (0600, with
//                      its -wal and -shm files, and -bell: one byte written after every
//                      commit, which waiters watch with inotify)
//   lock               the critical section's flock (flock_lock)
//   daemon.lock        held (a shared OFD lock) by every running `kugetsu daemon`
//   events.jsonl       every event, one JSON line each, numbered (jsonl_notifier, relayed)
//   logs/<id>.log      each agent's stdout and stderr
//   run/<pid>-<start>.slot   one per agent: held (flock) while it lives, then its exit record
//   worktrees/<id>     git worktrees of tasks with a repository
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
#include "spawn/fork_spawner.hpp"
#include "store/sqlite_store.hpp"
#include "workspace/git_worktree_workspace.hpp"

namespace kugetsu {

/// The files of a state directory HOME.
struct home_layout {
    std::string home;
    std::string db() const { return home + "/state.db"; }
    /// Written after every commit: watch it (not the WAL) to wake for changes.
    static constexpr const char* bell_name = "state.db-bell";
    std::string lock() const { return home + "/lock"; }
    std::string logs() const { return home + "/logs"; }
    std::string run() const { return home + "/run"; }
    /// Held (a shared OFD lock) by every running daemon: supervisors skip their on-exit reaper then.
    std::string daemon_lock() const { return home + "/daemon.lock"; }
    std::string events() const { return home + "/events.jsonl"; }
    std::string worktrees() const { return home + "/worktrees"; }
};

/// The real dispatcher over a state directory (see open_dispatcher).
using dispatcher = basic_dispatcher<flock_lock, fork_spawner, jsonl_notifier, sqlite_store, system_clock,
                                    git_worktree_workspace>;

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
        {
            const std::string dl = home + "/daemon.lock";
            const int fd = ::open(dl.c_str(), O_RDONLY | O_NOFOLLOW | O_CLOEXEC | O_NONBLOCK);
            if (fd >= 0) {
                const bool held = detail::lock_held(fd);
                ::close(fd);
                if (held) {
                    ec = errc::invalid_transition;
                    return rep;
                }
            }
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
