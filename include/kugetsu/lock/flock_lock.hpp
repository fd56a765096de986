// kugetsu/lock/flock_lock.hpp: the default lock: ::flock(LOCK_EX) on a lock file.
//
// Use it whenever dispatchers on one machine share a state directory: processes, or threads
// with one flock_lock object each (a flock lock belongs to the open file description, and
// each object opens its own). The descriptor is opened O_CLOEXEC, so an agent never inherits
// the lock: if it did, the cap would collapse to 1 while that agent lives. The kernel
// releases the lock when its holder dies, whatever the way.
//
//   scope              | forked child holds it          | released when holder dies | timed
//   machine (one host) | until exec (O_CLOEXEC), shared | yes (kernel)              | no (try_lock)
//
// Not on NFS. Not recursive: lock() twice on one object is a no-op the second time (flock
// converts the lock it already holds) but unlock() releases it once for all.
#pragma once

#include <string>
#include <system_error>
#include <utility>

#include <fcntl.h>
#include <sys/file.h>
#include <sys/stat.h>

#include "../concepts.hpp"
#include "../detail/posix.hpp"

namespace kugetsu {

class flock_lock {
public:
    /// Effects: remembers the path; the file is created (0600) on first use.
    explicit flock_lock(std::string path) : path_(std::move(path)) {}

    flock_lock(flock_lock&&) noexcept = default;
    flock_lock& operator=(flock_lock&&) noexcept = default;

    /// Blocks until the lock is held. EINTR is retried. Errors: opening the file (ELOOP if
    /// the path is a symbolic link: it is never followed); errc::unsafe_state if it is not a
    /// regular file (a FIFO planted there never blocks the open), has another hard link (the
    /// lock would be taken on some other file), belongs to another user or others may write
    /// it (whoever can open it for writing could hold the lock forever, or replace the
    /// file). last_error_detail() names the file and the step.
    void lock(std::error_code& ec) noexcept { take(LOCK_EX, ec); }

    /// Returns true if the lock was free and is now held.
    bool try_lock(std::error_code& ec) noexcept {
        take(LOCK_EX | LOCK_NB, ec);
        if (ec == std::errc::resource_unavailable_try_again || ec == std::errc::operation_would_block) {
            ec.clear();
            return false;
        }
        return !ec;
    }

    void unlock() noexcept {
        if (fd_) detail::flock_fd(fd_.get(), LOCK_UN);
    }

    /// BasicLockable and Lockable (see concepts.hpp): lock(ec) and try_lock(ec) that throw
    /// std::system_error instead, for `std::scoped_lock guard(l);`.
    void lock() { lock_or_throw(*this); }
    bool try_lock() { return try_lock_or_throw(*this); }

    const std::string& path() const noexcept { return path_; }
    /// After a failed lock() or try_lock(): the file, the step and the error. Empty after
    /// one that succeeded (each operation clears it first).
    const std::string& last_error_detail() const noexcept { return detail_; }
    /// The descriptor, or -1 before first use (for tests that check O_CLOEXEC).
    int native_handle() const noexcept { return fd_.get(); }

private:
    void take(int op, std::error_code& ec) noexcept {
        ec.clear();
        detail_.clear();   // a detail describes the last operation only
        const char* step = "open";
        const char* why = nullptr;   // a refusal: what is wrong with the file
        std::string unsafe;   // names the test the file failed
        if (!fd_) {
            struct stat st{};
            // Whatever is at the path is looked at first: a directory or a link planted there
            // is refused as such (an open would only say EISDIR or ELOOP).
            if (::lstat(path_.c_str(), &st) == 0 && !(unsafe = safe_describe(st)).empty()) {
                ec = make_error_code(errc::unsafe_state);
            } else {
                // O_NONBLOCK: a FIFO planted at the path must not block the open.
                auto fd = detail::open_path(path_, O_RDWR | O_CREAT | O_NOFOLLOW | O_NONBLOCK, 0600, ec);
                if (ec == std::errc::too_many_symbolic_link_levels) why = "a symbolic link, not followed";
                if (!ec && ::fstat(fd.get(), &st) != 0) {
                    ec = detail::last_error();
                    step = "fstat";
                } else if (!ec && !(unsafe = safe_describe(st)).empty()) {
                    // Another user could hold it forever; a hard link would lock some other file.
                    ec = make_error_code(errc::unsafe_state);
                }
                if (!ec) fd_ = std::move(fd);
            }
            if (!unsafe.empty()) {
                try {
                    detail_ = path_ + ": " + unsafe + ": refused";
                } catch (...) {
                }
                return;
            }
        }
        if (!ec) {
            step = "flock";
            ec = detail::flock_fd(fd_.get(), op);
        }
        if (ec && ec != std::errc::resource_unavailable_try_again) try {
                detail_ = path_ + ": " + step + ": " + (why ? std::string(why) : ec.message());
            } catch (...) {
            }
    }

    static std::string safe_describe(const struct stat& st) noexcept {
        try {
            return detail::why_unsafe_file(st);
        } catch (...) {
            return "not a private regular file";
        }
    }

    std::string path_;
    detail::unique_fd fd_;
    std::string detail_;
};

static_assert(kugetsu::try_lock<flock_lock> && kugetsu::lockable<flock_lock> && kugetsu::with_error_detail<flock_lock>);

} // namespace kugetsu
