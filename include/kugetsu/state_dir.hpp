// kugetsu/state_dir.hpp: the files of a state directory (HOME) and the daemon's presence
// in it. No dependency beyond POSIX: the supervisors of fork_spawner ask it after fork.
//
// HOME/                0700, created (with missing parents) by open_home_store()
//   state.db           the store: tasks, sessions, the events outbox, the limits (0600, with
//                      its -wal and -shm files, and -bell: one byte written after every
//                      commit, which waiters watch with inotify)
//   lock               the critical section's flock (flock_lock)
//   daemon.lock        held (a shared OFD lock) by every running daemon (daemon_presence)
//   events.jsonl       every event, one JSON line each, numbered (jsonl_notifier, relayed)
//   logs/<id>.log      each agent's stdout and stderr
//   run/<pid>-<start>.slot   one per agent: held (flock) while it lives, then its exit record
//   worktrees/<id>     git worktrees of tasks with a repository
//
// A DAEMON'S PRESENCE. A daemon holds a read (shared) OFD lock on HOME/daemon.lock while it
// lives; the kernel drops it when the daemon dies, however it dies, and the last close of
// the file wakes an inotify watcher of HOME (IN_CLOSE_WRITE on "daemon.lock"). Anyone asks
// with F_OFD_GETLK for a write lock, which conflicts with every holder and with no other
// asker: daemon_running(). Several daemons may hold it at once; they share the cap lock.
//
//   kugetsu::daemon_presence here;
//   if (auto ec = here.hold(layout.daemon_lock()); ec) ...   // here.detail() says why
//   ... kugetsu::daemon_running(layout.daemon_lock()) is now true, in every process
#pragma once

#include <string>
#include <system_error>

#include <cerrno>
#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include "detail/posix.hpp"
#include "error.hpp"

namespace kugetsu {

/// The files of a state directory HOME (see the banner).
struct home_layout {
    std::string home;
    std::string db() const { return home + "/state.db"; }
    /// Written after every commit: watch it (not the WAL) to wake for changes.
    static constexpr const char* bell_name = "state.db-bell";
    static constexpr const char* daemon_lock_name = "daemon.lock";
    std::string lock() const { return home + "/lock"; }
    std::string logs() const { return home + "/logs"; }
    std::string run() const { return home + "/run"; }
    /// Held (a shared OFD lock) by every running daemon: supervisors skip their on-exit reaper then.
    std::string daemon_lock() const { return home + "/" + daemon_lock_name; }
    std::string events() const { return home + "/events.jsonl"; }
    std::string worktrees() const { return home + "/worktrees"; }
};

/// True if some process holds an OFD lock (fcntl F_OFD_SETLK) on any byte of the file open
/// as `fd`. Only asks (F_OFD_GETLK): concurrent askers never see each other.
/// Async-signal-safe.
inline bool ofd_lock_held(int fd) noexcept {
    struct flock q{};
    q.l_type = F_WRLCK;
    q.l_whence = SEEK_SET;
    return ::fcntl(fd, F_OFD_GETLK, &q) == 0 && q.l_type != F_UNLCK;
}

/// True while a daemon holds `lock_path` (HOME/daemon.lock). A missing file, a FIFO or
/// anything but a regular file: false. Async-signal-safe (open, fstat, fcntl, close).
inline bool daemon_running(const char* lock_path) noexcept {
    const int fd = ::open(lock_path, O_RDONLY | O_NOFOLLOW | O_CLOEXEC | O_NONBLOCK);
    if (fd < 0) return false;
    struct stat st{};
    const bool held = ::fstat(fd, &st) == 0 && S_ISREG(st.st_mode) && ofd_lock_held(fd);
    ::close(fd);
    return held;
}
inline bool daemon_running(const std::string& lock_path) noexcept { return daemon_running(lock_path.c_str()); }

/// A daemon's presence: the shared OFD lock on HOME/daemon.lock, held from hold() until
/// release() or destruction (or the death of the process). Move-only.
class daemon_presence {
public:
    daemon_presence() = default;

    /// Opens (creating it 0600) and read-locks `lock_path`. Refuses, with errc::unsafe_state,
    /// a file that is not a private regular file with one link (a FIFO planted there must not
    /// hang the daemon: opened O_NONBLOCK); a write lock held by some other program is
    /// errc::lock_failed (never waited for). detail() names the file and the reason.
    std::error_code hold(const std::string& lock_path) {
        release();
        detail_.clear();
        std::error_code ec;
        auto fd = detail::open_path(lock_path, O_RDWR | O_CREAT | O_NOFOLLOW | O_NONBLOCK, 0600, ec);
        if (ec) return detail_ = "daemon lock " + lock_path + ": " + ec.message(), ec;
        struct stat st{};
        if (::fstat(fd.get(), &st) != 0) {
            ec = detail::last_error();
            return detail_ = "daemon lock " + lock_path + ": fstat: " + ec.message(), ec;
        }
        if (auto why = detail::why_unsafe_file(st); !why.empty())
            return detail_ = "daemon lock " + lock_path + ": " + why + ": refused", make_error_code(errc::unsafe_state);
        struct flock rd{};
        rd.l_type = F_RDLCK;
        rd.l_whence = SEEK_SET;
        int r;
        while ((r = ::fcntl(fd.get(), F_OFD_SETLK, &rd)) != 0 && errno == EINTR) {}
        if (r != 0) {
            ec = detail::last_error();
            if (ec == std::errc::resource_unavailable_try_again || ec == std::errc::permission_denied)
                return detail_ = "daemon lock " + lock_path + ": write-locked by another program: refused",
                       make_error_code(errc::lock_failed);
            return detail_ = "daemon lock " + lock_path + ": " + ec.message(), ec;
        }
        fd_ = std::move(fd);
        return {};
    }

    /// Lets go of the lock (closing the file wakes the watchers of HOME).
    void release() noexcept { fd_.reset(); }
    bool held() const noexcept { return static_cast<bool>(fd_); }
    /// After a failed hold(): the file and what was wrong with it.
    const std::string& detail() const noexcept { return detail_; }

private:
    detail::unique_fd fd_;
    std::string detail_;
};

} // namespace kugetsu
