// kugetsu/detail/posix.hpp: the one seam through which kugetsu calls the system, plus
// unique_fd and the small helpers built on the seam (EINTR retry, full writes, atomic
// file replacement). Not part of the public API.
//
// Every call goes through detail::sys(), a table of function pointers that tests replace
// to inject EINTR, ENOSPC, EIO, short writes or a failing fsync.
#pragma once

#include <atomic>
#include <cerrno>
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <string>
#include <string_view>
#include <system_error>
#include <utility>

#include <fcntl.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <unistd.h>

#include "../error.hpp"

namespace kugetsu::detail {

struct syscall_table {
    int (*openat)(int dirfd, const char* path, int flags, mode_t mode);
    ssize_t (*read)(int fd, void* buf, std::size_t n);
    ssize_t (*write)(int fd, const void* buf, std::size_t n);
    int (*fsync)(int fd);
    int (*close)(int fd);
    int (*renameat)(int olddirfd, const char* oldpath, int newdirfd, const char* newpath);
    int (*unlinkat)(int dirfd, const char* path, int flags);
    int (*mkdirat)(int dirfd, const char* path, mode_t mode);
    int (*flock)(int fd, int op);
    int (*linkat)(int olddirfd, const char* oldpath, int newdirfd, const char* newpath, int flags);
    int (*ftruncate)(int fd, off_t length);
    ssize_t (*pread)(int fd, void* buf, std::size_t n, off_t offset);
};

inline syscall_table default_syscalls() noexcept {
    return {
        [](int d, const char* p, int f, mode_t m) { return ::openat(d, p, f, m); },
        [](int fd, void* b, std::size_t n) { return ::read(fd, b, n); },
        [](int fd, const void* b, std::size_t n) { return ::write(fd, b, n); },
        [](int fd) { return ::fsync(fd); },
        [](int fd) { return ::close(fd); },
        [](int od, const char* o, int nd, const char* n) { return ::renameat(od, o, nd, n); },
        [](int d, const char* p, int f) { return ::unlinkat(d, p, f); },
        [](int d, const char* p, mode_t m) { return ::mkdirat(d, p, m); },
        [](int fd, int op) { return ::flock(fd, op); },
        [](int od, const char* o, int nd, const char* n, int f) { return ::linkat(od, o, nd, n, f); },
        [](int fd, off_t len) { return ::ftruncate(fd, len); },
        [](int fd, void* b, std::size_t n, off_t off) { return ::pread(fd, b, n, off); },
    };
}

/// The table in force. Tests may assign entries; restore with `sys() = default_syscalls()`.
inline syscall_table& sys() noexcept {
    static syscall_table t = default_syscalls();
    return t;
}

inline std::error_code last_error() noexcept { return {errno, std::system_category()}; }

/// Owns a descriptor. close() is never retried on EINTR: on Linux the descriptor is
/// released whatever close returns.
class unique_fd {
public:
    unique_fd() noexcept = default;
    explicit unique_fd(int fd) noexcept : fd_(fd) {}
    unique_fd(unique_fd&& o) noexcept : fd_(std::exchange(o.fd_, -1)) {}
    unique_fd& operator=(unique_fd&& o) noexcept {
        if (this != &o) reset(std::exchange(o.fd_, -1));
        return *this;
    }
    ~unique_fd() { reset(); }
    int get() const noexcept { return fd_; }
    int release() noexcept { return std::exchange(fd_, -1); }
    explicit operator bool() const noexcept { return fd_ >= 0; }
    void reset(int fd = -1) noexcept {
        if (fd_ >= 0) sys().close(fd_);
        fd_ = fd;
    }
    /// Closes and reports the error close gave (EIO on some filesystems means lost data).
    std::error_code close() noexcept {
        if (fd_ < 0) return {};
        const int r = sys().close(std::exchange(fd_, -1));
        return (r < 0 && errno != EINTR) ? last_error() : std::error_code{};
    }

private:
    int fd_ = -1;
};

/// openat with O_CLOEXEC always added, EINTR retried.
inline unique_fd open_at(int dirfd, const char* path, int flags, mode_t mode, std::error_code& ec) noexcept {
    for (;;) {
        const int fd = sys().openat(dirfd, path, flags | O_CLOEXEC, mode);
        if (fd >= 0) {
            ec.clear();
            return unique_fd(fd);
        }
        if (errno != EINTR) {
            ec = last_error();
            return {};
        }
    }
}

inline unique_fd open_path(const std::string& path, int flags, mode_t mode, std::error_code& ec) noexcept {
    return open_at(AT_FDCWD, path.c_str(), flags, mode, ec);
}

/// Writes all of `data`, retrying EINTR and continuing after short writes. `written`, if
/// given, receives how many bytes did reach the file (also on failure: a disk that fills up
/// takes part of a buffer, then fails with ENOSPC).
inline std::error_code write_all(int fd, std::string_view data, std::size_t* written = nullptr) noexcept {
    std::size_t done = 0;
    std::error_code ec;
    while (done < data.size()) {
        const ssize_t n = sys().write(fd, data.data() + done, data.size() - done);
        if (n < 0) {
            if (errno == EINTR) continue;
            ec = last_error();
            break;
        }
        if (n == 0) {
            ec = std::make_error_code(std::errc::io_error);
            break;
        }
        done += static_cast<std::size_t>(n);
    }
    if (written) *written = done;
    return ec;
}

/// Reads to end of file, refusing more than `limit` bytes (EFBIG).
inline std::string read_all(int fd, std::error_code& ec, std::size_t limit = 16u << 20) {
    std::string out;
    char buf[8192];
    for (;;) {
        const ssize_t n = sys().read(fd, buf, sizeof buf);
        if (n < 0) {
            if (errno == EINTR) continue;
            ec = last_error();
            return {};
        }
        if (n == 0) break;
        out.append(buf, static_cast<std::size_t>(n));
        if (out.size() > limit) {
            ec = std::make_error_code(std::errc::file_too_large);
            return {};
        }
    }
    ec.clear();
    return out;
}

inline std::error_code fsync_fd(int fd) noexcept {
    for (;;) {
        if (sys().fsync(fd) == 0) return {};
        if (errno != EINTR) return last_error();
    }
}

/// flock with EINTR retried.
inline std::error_code flock_fd(int fd, int op) noexcept {
    for (;;) {
        if (sys().flock(fd, op) == 0) return {};
        if (errno != EINTR) return last_error();
    }
}

/// Numbers the temp files of this process (tests read it to plant a colliding name).
inline std::atomic<std::uint64_t>& temp_counter() noexcept {
    static std::atomic<std::uint64_t> counter{0};
    return counter;
}

/// Replaces dirfd/name with `content` atomically and durably: write a temp file
/// (".NAME.tmp.PID.N") in the same directory, fsync it, rename it over the name, fsync the
/// directory. On any failure before the rename the old file is untouched and the temp file
/// is removed (if even that unlink fails, the dot-named temp file stays: harmless, readers of
/// the directory skip dot names). `failed_step`, if given, receives which step failed:
/// "create temp file", "write temp file", "fsync temp file", "close temp file",
/// "link temp file", "rename temp file" (the old file is untouched), or "fsync directory":
/// then the NEW content is in place and only its durability is in doubt.
///
/// With `no_replace`, an existing file is left alone and the result is EEXIST (the temp
/// file is linked to the name, which fails if it exists, then unlinked).
///
/// Without `sync_directory` (and with `durable`) the content is fsynced but the rename is
/// not: every process sees the new file at once, and after a power loss the name holds the
/// old file or the whole new one.
///
/// `sync_before_rename`: another directory to fsync after the temp file and before the
/// rename (step "fsync index"): a change made there first is then durable before the new
/// file can be. On a journalling file system the temp file's fsync has usually committed it
/// already, which makes this fsync cheap.
///
/// A temp name that exists already (left by a crashed process whose pid has been reused) is
/// skipped for the next number, never reported: for a new record, EEXIST means "the record
/// exists".
inline std::error_code atomic_write_at(int dirfd, const std::string& name, std::string_view content,
                                       bool durable = true, bool no_replace = false,
                                       const char** failed_step = nullptr, bool sync_directory = true,
                                       int sync_before_rename = -1) noexcept {
    const char* unused = nullptr;
    const char*& step = failed_step ? *failed_step : unused;
    step = nullptr;
    std::string tmp;
    unique_fd fd;
    std::error_code ec;
    for (int tries = 0;; ++tries) {
        try {
            tmp = "." + name + ".tmp." + std::to_string(::getpid()) + "." + std::to_string(++temp_counter());
        } catch (...) {
            step = "create temp file";
            return std::make_error_code(std::errc::not_enough_memory);
        }
        fd = open_at(dirfd, tmp.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW, 0600, ec);
        if (ec != std::errc::file_exists || tries == 99) break;
    }
    if (ec) {
        step = "create temp file";
        return ec;
    }
    // `e` is taken before the unlink, which may change errno.
    auto discard = [&](const char* s, std::error_code e) noexcept {
        step = s;
        fd.reset();
        sys().unlinkat(dirfd, tmp.c_str(), 0);
        return e;
    };
    if ((ec = write_all(fd.get(), content))) return discard("write temp file", ec);
    if (durable && (ec = fsync_fd(fd.get()))) return discard("fsync temp file", ec);
    if ((ec = fd.close())) return discard("close temp file", ec);
    if (durable && sync_before_rename >= 0 && (ec = fsync_fd(sync_before_rename))) return discard("fsync index", ec);
    if (no_replace) {
        if (sys().linkat(dirfd, tmp.c_str(), dirfd, name.c_str(), 0) != 0) return discard("link temp file", last_error());
        sys().unlinkat(dirfd, tmp.c_str(), 0);   // on failure: a second, dot-named link stays
    } else if (sys().renameat(dirfd, tmp.c_str(), dirfd, name.c_str()) != 0) {
        return discard("rename temp file", last_error());
    }
    if (durable && sync_directory && (ec = fsync_fd(dirfd))) {
        step = "fsync directory";
        return ec;
    }
    return {};
}

/// True if the file belongs to the effective user and nobody else may write it: another
/// user's file, or a group- or world-writable one, could be replaced or rewritten under the
/// dispatcher.
inline bool is_private(const struct stat& st) noexcept {
    return st.st_uid == ::geteuid() && !(st.st_mode & (S_IWGRP | S_IWOTH));
}

/// Why a file is not is_private(), naming the test it failed; "" if it is private.
inline std::string why_not_private(const struct stat& st) {
    char buf[128];
    if (st.st_uid != ::geteuid()) {
        std::snprintf(buf, sizeof buf, "owned by uid %u, not by this user (uid %u)", static_cast<unsigned>(st.st_uid),
                      static_cast<unsigned>(::geteuid()));
        return buf;
    }
    const bool group = st.st_mode & S_IWGRP, others = st.st_mode & S_IWOTH;
    if (!group && !others) return {};
    std::snprintf(buf, sizeof buf, "mode %04o: writable by %s", static_cast<unsigned>(st.st_mode & 07777),
                  group && others ? "its group and others" : group ? "its group" : "others");
    return buf;
}

/// Why a file kugetsu keeps state in may not be used, naming the test it failed: not a
/// regular file (a directory, a FIFO...), another hard link (if `one_link`), another user's, or
/// writable by group or others; "" if it may.
inline std::string why_unsafe_file(const struct stat& st, bool one_link = true) {
    if (S_ISDIR(st.st_mode)) return "a directory, not a regular file";
    if (S_ISLNK(st.st_mode)) return "a symbolic link, not followed";
    if (!S_ISREG(st.st_mode)) return "not a regular file (a FIFO, socket or device)";
    if (one_link && st.st_nlink != 1)
        return "it has " + std::to_string(st.st_nlink) + " hard links (another name could change it)";
    return why_not_private(st);
}

/// errc::unsafe_state unless the open file `fd` is_private(); errno if fstat fails.
inline std::error_code check_private(int fd) noexcept {
    struct stat st{};
    if (::fstat(fd, &st) != 0) return last_error();
    return is_private(st) ? std::error_code{} : make_error_code(errc::unsafe_state);
}

/// Runs a callable when the scope ends.
template <class F>
class scope_exit {
public:
    explicit scope_exit(F f) noexcept : f_(std::move(f)) {}
    scope_exit(const scope_exit&) = delete;
    scope_exit& operator=(const scope_exit&) = delete;
    ~scope_exit() {
        if (active_) f_();
    }
    void release() noexcept { active_ = false; }

private:
    F f_;
    bool active_ = true;
};

} // namespace kugetsu::detail
