// kugetsu/lock/boost_file_lock.hpp: a lock backed by boost::interprocess::file_lock, an
// fcntl() record lock (F_SETLKW / F_SETLK on the whole file) on a lock file.
//
// Use it only where each dispatcher is its own process and must interoperate with other
// programs that take fcntl/POSIX record locks on the same file; otherwise prefer flock_lock,
// which has none of the per-process hazards below. Needs the kugetsu::boost CMake target
// (Boost 1.74 headers).
//
//   scope                 | forked child holds it | released when holder dies | timed
//   per process (one host)| no                    | yes (kernel)              | no (try_lock)
//
// What "per process" means, and the hazards that follow from it:
// - An fcntl lock belongs to the (process, file) pair, not to this object or its descriptor.
//   Two boost_file_lock objects for one file in ONE process do NOT exclude each other: both
//   lock() calls succeed at once. Neither do two threads. Use one object per process.
// - Closing ANY descriptor of that file in the process drops the lock: destroying a second
//   boost_file_lock for the same path, or any code that opens and closes the lock file
//   (a store, a log reader, another flock_lock on that path), silently releases it while
//   this object still believes it holds it. Keep the lock file private to this object.
// - unlock() on one object releases the process's lock for every object on that file.
// - Not recursive: lock() on a held object (or on any object for that file in this process)
//   succeeds at once; one unlock() releases it.
// - A forked child does not hold the lock (fcntl locks are never inherited): its copy of a
//   held object cannot keep the lock once the parent releases it, and its try_lock() fails
//   while the parent holds it. A child closing the inherited descriptor, or exiting, does
//   not affect the parent's lock.
// - The kernel releases the lock when the holder dies, whatever the way.
//
// Descriptor limitation (Boost 1.74): file_lock opens the file itself with a plain
// ::open(path, O_RDWR), without O_CLOEXEC or O_NOFOLLOW, and keeps the descriptor private
// (no native_handle()). kugetsu therefore cannot make it close-on-exec: an agent started
// with fork+exec inherits an open descriptor of the lock file. This does NOT let the agent
// hold or release the dispatcher's lock (see above), but it leaks a read-write descriptor of
// the lock file into the agent. kugetsu creates the file first with
// O_CREAT|O_NOFOLLOW|O_CLOEXEC, mode 0600, so a symlink in place of the lock file is refused
// (ELOOP); a symlink swapped in between that check and Boost's open would still be followed.
//
// Errors: Boost throws boost::interprocess::interprocess_exception; every operation here
// catches it and reports std::error_code: the native errno when Boost has one (EDEADLK from
// the kernel's deadlock detection, EBADF, ENOLCK, ...), else kugetsu::errc::lock_failed.
// EINTR is retried (Boost 1.74 does not). Over NFS it depends on the server's lock manager: untested.
#pragma once

#include <new>
#include <optional>
#include <string>
#include <system_error>
#include <utility>

#include <fcntl.h>

#include <boost/interprocess/exceptions.hpp>
#include <boost/interprocess/sync/file_lock.hpp>

#include "../concepts.hpp"
#include "../detail/ipc.hpp"
#include "../detail/posix.hpp"
#include "../error.hpp"

namespace kugetsu {

/// An fcntl record lock through Boost.Interprocess. Scope: per process (see the banner).
///
/// States: unopened (no descriptor) -> open, not held <-> held. The file is created and
/// Boost's file_lock constructed on the first lock() or try_lock(), so construction never
/// fails. Destruction closes Boost's descriptor, which releases the lock if held (and, per
/// the banner, any lock this process holds on the file through another object).
class boost_file_lock {
public:
    /// Effects: remembers the path; nothing is opened until the first lock() or try_lock().
    explicit boost_file_lock(std::string path) noexcept : path_(std::move(path)) {}

    boost_file_lock(boost_file_lock&& o) noexcept
        : path_(std::move(o.path_)), lock_(std::move(o.lock_)), held_(std::exchange(o.held_, false)) {
        o.lock_.reset();
    }
    boost_file_lock& operator=(boost_file_lock&& o) noexcept {
        if (this != &o) {
            path_ = std::move(o.path_);
            lock_ = std::move(o.lock_);  // closes our old descriptor, releasing our lock
            held_ = std::exchange(o.held_, false);
            o.lock_.reset();
        }
        return *this;
    }
    boost_file_lock(const boost_file_lock&) = delete;
    boost_file_lock& operator=(const boost_file_lock&) = delete;
    ~boost_file_lock() = default;

    /// Effects: blocks until no OTHER process holds the lock, then holds it. EINTR is retried.
    /// Errors (ec set, not held): creating or opening the file (errno), the fcntl call
    /// (errno, e.g. EDEADLK), or errc::lock_failed.
    void lock(std::error_code& ec) noexcept {
        if (!open(ec)) return;
        if (detail::ipc_call([&] { lock_->lock(); return true; }, ec)) held_ = true;
    }

    /// Returns: true if no other process held the lock and this process now holds it;
    /// false (ec clear) if another process holds it. Errors as for lock(), returning false.
    bool try_lock(std::error_code& ec) noexcept {
        if (!open(ec)) return false;
        const bool got = detail::ipc_call([&] { return lock_->try_lock(); }, ec).value_or(false);
        held_ = held_ || got;
        return got;
    }

    /// Effects: if this object took the lock, releases it (for the whole process). A no-op
    /// otherwise, so an unlock() on an object that never locked cannot release another
    /// object's lock. Never throws; an fcntl failure here is ignored (the lock is released
    /// at the latest when the descriptor is closed).
    void unlock() noexcept {
        if (!held_) return;
        held_ = false;
        try {
            lock_->unlock();
        } catch (...) {
        }
    }

    /// BasicLockable and Lockable (see concepts.hpp): lock(ec) and try_lock(ec) that throw
    /// std::system_error instead, for `std::scoped_lock guard(l);`.
    void lock() { lock_or_throw(*this); }
    bool try_lock() { return try_lock_or_throw(*this); }

    const std::string& path() const noexcept { return path_; }
    /// Whether this object believes it holds the lock. A closed descriptor elsewhere in the
    /// process may have released it since (see the banner): this is not a kernel query.
    bool owns_lock() const noexcept { return held_; }

private:
    // Creates the file (0600, O_NOFOLLOW, O_CLOEXEC) if missing, then lets Boost open it.
    // Our descriptor is closed straight away: this object holds no lock yet, and keeping it
    // would only add a second descriptor whose close drops the lock.
    bool open(std::error_code& ec) noexcept {
        if (lock_) {
            ec.clear();
            return true;
        }
        {
            detail::unique_fd fd = detail::open_path(path_, O_RDWR | O_CREAT | O_NOFOLLOW, 0600, ec);
            if (ec) return false;
        }
        if (detail::ipc_call([&] { return &lock_.emplace(path_.c_str()); }, ec)) return true;
        lock_.reset();
        return false;
    }

    std::string path_;
    std::optional<boost::interprocess::file_lock> lock_;
    bool held_ = false;
};

static_assert(kugetsu::try_lock<boost_file_lock> && kugetsu::lockable<boost_file_lock>);

} // namespace kugetsu
