// kugetsu/lock/boost_named_mutex_lock.hpp: a lock backed by boost::interprocess::named_mutex
// (open_or_create, mode 0600). On Linux, Boost 1.74 implements named_mutex as a POSIX named
// semaphore with an initial count of 1 (sem_open("/NAME"), visible as /dev/shm/sem.NAME).
//
// Use it only where no lock file can be shared (no common state directory) but the
// dispatchers share /dev/shm. Prefer flock_lock: NOTHING releases this lock when its holder
// dies. Needs the kugetsu::boost CMake target (Boost 1.74 headers).
//
//   scope                  | forked child holds it      | released when holder dies | timed
//   machine (/dev/shm);    | no owner: its copy of a    | NO: stays locked until    | try_lock_for
//   objects and threads    | held object can release    | remove() (see Recovery)   | (polling)
//   exclude each other too | it, until exec             |                           |
//
// A semaphore has no owner: the kernel does not know who "holds" it, so
// - when the holder dies without unlock() (SIGKILL, crash, _exit, a leaked object), the count
//   stays 0: lock() in every process blocks forever, try_lock() returns false forever and
//   try_lock_for() returns false after its timeout. Destroying a held object unlocks it, but
//   no destructor runs on those paths.
// - a forked child's copy of a held object believes it holds the lock, and its unlock() (or
//   its destructor, if the child returns instead of calling _exit) releases the lock that
//   the parent is still using. exec drops the mapping, so an exec'd agent can neither hold
//   nor release it. A double release (child and parent both unlocking) leaves the count at
//   2, after which the mutex admits two holders at once until it is removed.
// - Not recursive: lock() on a held object would wait for itself forever (asserted).
//
// Detecting a stuck lock: try_lock_for(timeout, ec) polls try_lock with short sleeps (1 ms,
// doubling to max_poll_interval) on the steady clock and returns false when the timeout
// passes. Boost 1.74 has no std::chrono timed locking: its timed_lock takes an absolute
// boost::posix_time::ptime on the wall clock (sem_timedwait), which moves when the clock is
// set, and throws on EINTR. A false result means only "held for longer than the timeout": a
// slow but live holder looks exactly like a dead one. Polling is not fair: a waiter may keep
// losing to others, and it notices a release up to max_poll_interval late.
//
// Recovery (also in docs/policies/lock.md):
//   1. stop every process that uses this name (dispatchers and anything waiting in lock());
//      check that none is left: the lock cannot tell you.
//   2. run boost_named_mutex_lock::remove(name) (sem_unlink; `rm /dev/shm/sem.NAME` is the same).
//   3. start the processes again: the first lock() creates a fresh, unlocked semaphore.
// Removing while a process still runs is unsafe: remove() only unlinks the name. A process
// that already opened the semaphore keeps using the old, stuck one (a waiter in lock() stays
// blocked forever), while every later open creates a new one, so the two groups no longer
// exclude each other; a live holder and a new process would both hold "the" lock.
//
// Errors: Boost throws boost::interprocess::interprocess_exception; every operation here
// catches it and reports std::error_code: the native errno when Boost has one (EINVAL or
// ENAMETOOLONG for a bad name, EACCES for another user's semaphore, ...), else
// kugetsu::errc::lock_failed. EINTR from sem_wait is retried (Boost 1.74 does not).
#pragma once

#include <algorithm>
#include <cassert>
#include <cerrno>
#include <chrono>
#include <memory>
#include <new>
#include <string>
#include <system_error>
#include <thread>
#include <utility>

#include <boost/interprocess/creation_tags.hpp>
#include <boost/interprocess/exceptions.hpp>
#include <boost/interprocess/permissions.hpp>
#include <boost/interprocess/sync/named_mutex.hpp>

#include "../concepts.hpp"
#include "../detail/ipc.hpp"
#include "../error.hpp"

namespace kugetsu {

/// A named, machine-wide mutex that is NOT released when its holder dies (see the banner for
/// the recovery). `name` is a semaphore name: 1 to 251 characters, no '/' except one
/// optional leading '/' (Boost adds it when missing); "x" and "/x" are the same mutex.
///
/// States: unopened -> open, not held <-> held. The semaphore is opened (or created, 0600,
/// subject to the umask) on the first lock(), try_lock() or try_lock_for(), so construction
/// never fails. Destruction unlocks if held, then closes the semaphore; it never removes it.
class boost_named_mutex_lock {
public:
    /// Longest sleep between two tries in try_lock_for(): the most a waiter can lag behind
    /// a release.
    static constexpr std::chrono::milliseconds max_poll_interval{50};

    /// Effects: remembers the name; nothing is opened until first use.
    explicit boost_named_mutex_lock(std::string name) noexcept : name_(std::move(name)) {}

    boost_named_mutex_lock(boost_named_mutex_lock&& o) noexcept
        : name_(std::move(o.name_)), mutex_(std::move(o.mutex_)), held_(std::exchange(o.held_, false)) {}
    boost_named_mutex_lock& operator=(boost_named_mutex_lock&& o) noexcept {
        if (this != &o) {
            unlock();
            name_ = std::move(o.name_);
            mutex_ = std::move(o.mutex_);
            held_ = std::exchange(o.held_, false);
        }
        return *this;
    }
    boost_named_mutex_lock(const boost_named_mutex_lock&) = delete;
    boost_named_mutex_lock& operator=(const boost_named_mutex_lock&) = delete;
    ~boost_named_mutex_lock() { unlock(); }

    /// Requires: this object does not hold the lock.
    /// Effects: blocks until the lock is free, then holds it; EINTR is retried. Blocks
    /// FOREVER if a holder died: use try_lock_for() where that must be detected.
    /// Errors (ec set, not held): opening the semaphore (errno), sem_wait (errno), or
    /// errc::lock_failed.
    void lock(std::error_code& ec) noexcept {
        assert(!held_ && "boost_named_mutex_lock is not recursive");
        if (!open(ec)) return;
        if (detail::ipc_call([&] { mutex_->lock(); return true; }, ec)) held_ = true;
    }

    /// Requires: this object does not hold the lock.
    /// Returns: true if the lock was free and is now held; false (ec clear) if it is held,
    /// by anyone, alive or dead. Errors as for lock(), returning false.
    bool try_lock(std::error_code& ec) noexcept {
        assert(!held_ && "boost_named_mutex_lock is not recursive");
        if (!open(ec)) return false;
        held_ = detail::ipc_call([&] { return mutex_->try_lock(); }, ec).value_or(false);
        return held_;
    }

    /// Requires: this object does not hold the lock.
    /// Effects: tries at once, then again after sleeps of 1 ms, 2 ms, ... up to
    /// max_poll_interval, never sleeping past the deadline (steady clock), with a last try at
    /// the deadline. A zero or negative timeout tries once.
    /// Returns: true if the lock is now held; false (ec clear) if it was still held when the
    /// timeout passed, which is how a waiter detects a holder that died (or is just slow).
    /// Errors as for lock(), returning false.
    template <class Rep, class Period>
    bool try_lock_for(const std::chrono::duration<Rep, Period>& timeout, std::error_code& ec) noexcept {
        namespace chr = std::chrono;  // kugetsu::duration (types.hpp) would shadow a using-directive
        using steady = chr::steady_clock;
        // Clamp to [0, 100 years] so that duration::min()/max() cannot overflow the deadline.
        using seconds = chr::duration<double>;
        constexpr seconds cap = chr::hours(24 * 365 * 100);
        const seconds wanted = std::clamp(seconds(timeout), seconds::zero(), cap);
        const auto deadline = steady::now() + chr::duration_cast<steady::duration>(wanted);
        steady::duration pause = chr::milliseconds(1);
        for (;;) {
            if (try_lock(ec)) return true;
            if (ec) return false;
            const auto now = steady::now();
            if (now >= deadline) return false;
            std::this_thread::sleep_for(std::min(pause, deadline - now));
            pause = std::min<steady::duration>(pause * 2, max_poll_interval);
        }
    }

    /// Effects: if this object holds the lock, releases it (sem_post). A no-op otherwise: an
    /// unlock() without a matching lock would raise the count to 2 and let two holders in.
    /// Never throws; a failing sem_post (EOVERFLOW) is ignored.
    void unlock() noexcept {
        if (!held_) return;
        held_ = false;
        try {
            mutex_->unlock();
        } catch (...) {
        }
    }

    /// BasicLockable and Lockable (see concepts.hpp): lock(ec) and try_lock(ec) that throw
    /// std::system_error instead, for `std::scoped_lock guard(l);`.
    void lock() { lock_or_throw(*this); }
    bool try_lock() { return try_lock_or_throw(*this); }

    /// Effects: removes the name (sem_unlink). Run it only when no process uses the name
    /// (see the banner): processes that opened the semaphore keep the old one.
    /// Returns: true if a semaphore was removed, false (ec clear) if there was none.
    /// Errors: errno (e.g. EACCES, EINVAL), or errc::lock_failed.
    static bool remove(const std::string& name, std::error_code& ec) noexcept {
        try {
            errno = 0;
            if (boost::interprocess::named_mutex::remove(name.c_str())) {
                ec.clear();
                return true;
            }
        } catch (...) {
        }
        const int e = errno;
        if (e == ENOENT) {
            ec.clear();
        } else if (e != 0) {
            ec = std::error_code(e, std::system_category());
        } else {
            ec = make_error_code(errc::lock_failed);
        }
        return false;
    }

    /// As remove(name, ec), throwing kugetsu::error instead.
    static bool remove(const std::string& name) {
        std::error_code ec;
        const bool removed = remove(name, ec);
        if (ec) throw kugetsu::error(ec, "cannot remove named mutex '" + name + "'");
        return removed;
    }

    const std::string& name() const noexcept { return name_; }
    /// Whether this object took the lock and has not released it. Not a query of the
    /// semaphore: the semaphore does not know who holds it.
    bool owns_lock() const noexcept { return held_; }

private:
    bool open(std::error_code& ec) noexcept {
        if (mutex_) {
            ec.clear();
            return true;
        }
        return detail::ipc_call([&] {
                   mutex_ = std::make_unique<boost::interprocess::named_mutex>(
                       boost::interprocess::open_or_create, name_.c_str(), boost::interprocess::permissions(0600));
                   return true;
               }, ec).has_value();
    }

    std::string name_;
    std::unique_ptr<boost::interprocess::named_mutex> mutex_;
    bool held_ = false;
};

static_assert(kugetsu::try_lock<boost_named_mutex_lock> && kugetsu::lockable<boost_named_mutex_lock>);

} // namespace kugetsu
