// Test support: I/O faults injected through kugetsu's system-call seam (detail::sys()), for
// what writes through it (jsonl_notifier, the workspaces). The store writes through SQLite:
// its faults go through SQLite's own seam, tests/support/sqlite_faults.hpp.
//
// A fault_injector replaces the seam's entries for its lifetime. It counts the calls its
// fault applies to ("eligible" calls) from the moment it is made, and changes the k-th one
// (or, for storms, every one):
//
//   fault        eligible calls                                  what the k-th one does
//   enospc       write, fsync, mkdirat, linkat, renameat,         fails with ENOSPC
//                openat with O_CREAT
//   disk_full    write                                           takes half the buffer; the
//                                                                next write fails ENOSPC
//   eio          every call                                      fails with EIO
//   fsync_eio    fsync                                           fails with EIO
//   short_write  write                                           writes 1 byte
//   eintr        openat, read, pread, write, fsync, close,       it and the next 24 eligible
//                flock, ftruncate                                calls fail with EINTR
//
// A failed close() still closes (as on Linux, where the descriptor is gone whatever close
// returns). With `every`, short_write shortens every write to 1 byte and eintr makes every
// eligible call fail with EINTR three times before it goes through.
#pragma once

#include <cerrno>
#include <climits>
#include <cstddef>
#include <optional>
#include <string>

#include <fcntl.h>
#include <unistd.h>

#include <kugetsu/detail/posix.hpp>

namespace kugetsu::test {

enum class fault { enospc, disk_full, eio, fsync_eio, short_write, eintr };

inline const char* name_of(fault f) {
    switch (f) {
    case fault::enospc: return "ENOSPC";
    case fault::disk_full: return "disk full mid-write";
    case fault::eio: return "EIO";
    case fault::fsync_eio: return "fsync EIO";
    case fault::short_write: return "short write";
    case fault::eintr: return "EINTR storm";
    }
    return "?";
}

/// Faults after which the operation must succeed.
inline bool transparent(fault f) { return f == fault::short_write || f == fault::eintr; }

enum class call { openat, read, write, fsync, close, renameat, unlinkat, mkdirat, flock, linkat, ftruncate, pread };

inline const char* name_of(call c) {
    constexpr const char* names[] = {"openat", "read",   "write",  "fsync",     "close",    "renameat",
                                     "unlinkat", "mkdirat", "flock", "linkat", "ftruncate", "pread"};
    return names[static_cast<int>(c)];
}

/// The first call a fault_injector changed.
struct fault_hit {
    call c{};
    std::string path;        ///< the file (resolved through /proc/self/fd), "" if unknown
    bool writable = false;   ///< fd calls: the descriptor was open for writing
    /// A failure of this call loses or risks data unless the operation reports it: a write,
    /// an fsync, a rename or link, a truncate, the close of a written file, the unlink of a
    /// record (not of a dot-named temp file).
    bool must_surface() const {
        switch (c) {
        case call::write:
        case call::fsync:
        case call::renameat:
        case call::linkat:
        case call::ftruncate: return true;
        case call::close: return writable;
        case call::unlinkat: return base().rfind('.', 0) != 0;
        default: return false;
        }
    }
    std::string base() const { return path.substr(path.rfind('/') + 1); }
};

namespace faults_detail {

struct state {
    fault kind{};
    long at = 0;
    bool every = false;
    long seen = 0;            // eligible calls so far
    long changed = 0;         // calls changed
    long torn_at = -1;        // disk_full: the write after this one fails
    std::optional<fault_hit> first;
};

inline state*& active() {
    static state* s = nullptr;
    return s;
}

inline bool applies(fault f, call c, int open_flags) {
    switch (f) {
    case fault::enospc:
        return c == call::write || c == call::fsync || c == call::mkdirat || c == call::linkat ||
               c == call::renameat || (c == call::openat && (open_flags & O_CREAT));
    case fault::disk_full:
    case fault::short_write: return c == call::write;
    case fault::eio: return true;
    case fault::fsync_eio: return c == call::fsync;
    case fault::eintr:
        return c == call::openat || c == call::read || c == call::pread || c == call::write || c == call::fsync ||
               c == call::close || c == call::flock || c == call::ftruncate;
    }
    return false;
}

inline std::string link_of(int fd) {
    char buf[PATH_MAX];
    const std::string proc = "/proc/self/fd/" + std::to_string(fd);
    const ssize_t n = ::readlink(proc.c_str(), buf, sizeof buf - 1);
    return n > 0 ? std::string(buf, static_cast<std::size_t>(n)) : std::string();
}

inline std::string path_at(int dirfd, const char* p) {
    if (p && p[0] == '/') return p;
    std::string dir;
    if (dirfd == AT_FDCWD) {
        char buf[PATH_MAX];
        if (::getcwd(buf, sizeof buf)) dir = buf;
    } else {
        dir = link_of(dirfd);
    }
    return std::string(p) == "." ? dir : dir + "/" + p;
}

struct action {
    enum { pass, fail, shorten } what = pass;
    int err = 0;
    std::size_t len = 0;
};

/// Decides what eligible call number `seen` does. `where` gives the file for the record.
template <class Where>
action decide(call c, int open_flags, std::size_t n, int fd, Where where) {
    state* s = active();
    if (!s || !applies(s->kind, c, open_flags)) return {};
    const long i = ++s->seen;
    action a;
    switch (s->kind) {
    case fault::eintr:
        if (s->every ? i % 4 != 0 : (i >= s->at && i < s->at + 25)) a = {action::fail, EINTR, 0};
        break;
    case fault::short_write:
        if ((s->every || i == s->at) && n > 1) a = {action::shorten, 0, 1};
        break;
    case fault::disk_full:
        if (i == s->at && n > 1) {
            a = {action::shorten, 0, n / 2};
            s->torn_at = i;
        } else if (i == s->at || (s->torn_at >= 0 && i == s->torn_at + 1)) {
            a = {action::fail, ENOSPC, 0};
        }
        break;
    case fault::enospc:
        if (i == s->at) a = {action::fail, ENOSPC, 0};
        break;
    case fault::eio:
    case fault::fsync_eio:
        if (i == s->at) a = {action::fail, EIO, 0};
        break;
    }
    if (a.what == action::pass) return a;
    ++s->changed;
    if (!s->first) {
        const int saved = errno;
        fault_hit h;
        h.c = c;
        h.path = where();
        if (fd >= 0) {
            const int fl = ::fcntl(fd, F_GETFL);
            h.writable = fl >= 0 && (fl & O_ACCMODE) != O_RDONLY;
        }
        s->first = std::move(h);
        errno = saved;
    }
    return a;
}

inline int w_openat(int d, const char* p, int f, mode_t m) {
    const auto a = decide(call::openat, f, 0, -1, [&] { return path_at(d, p); });
    if (a.what == action::fail) return errno = a.err, -1;
    return ::openat(d, p, f, m);
}
inline ssize_t w_read(int fd, void* b, std::size_t n) {
    const auto a = decide(call::read, 0, n, fd, [&] { return link_of(fd); });
    if (a.what == action::fail) return errno = a.err, -1;
    return ::read(fd, b, n);
}
inline ssize_t w_pread(int fd, void* b, std::size_t n, off_t off) {
    const auto a = decide(call::pread, 0, n, fd, [&] { return link_of(fd); });
    if (a.what == action::fail) return errno = a.err, -1;
    return ::pread(fd, b, n, off);
}
inline ssize_t w_write(int fd, const void* b, std::size_t n) {
    const auto a = decide(call::write, 0, n, fd, [&] { return link_of(fd); });
    if (a.what == action::fail) return errno = a.err, -1;
    return ::write(fd, b, a.what == action::shorten ? a.len : n);
}
inline int w_fsync(int fd) {
    const auto a = decide(call::fsync, 0, 0, fd, [&] { return link_of(fd); });
    if (a.what == action::fail) return errno = a.err, -1;
    return ::fsync(fd);
}
inline int w_close(int fd) {
    const auto a = decide(call::close, 0, 0, fd, [&] { return link_of(fd); });
    const int r = ::close(fd);
    if (a.what == action::fail) return errno = a.err, -1;
    return r;
}
inline int w_renameat(int od, const char* o, int nd, const char* n) {
    const auto a = decide(call::renameat, 0, 0, -1, [&] { return path_at(nd, n); });
    if (a.what == action::fail) return errno = a.err, -1;
    return ::renameat(od, o, nd, n);
}
inline int w_unlinkat(int d, const char* p, int f) {
    const auto a = decide(call::unlinkat, 0, 0, -1, [&] { return path_at(d, p); });
    if (a.what == action::fail) return errno = a.err, -1;
    return ::unlinkat(d, p, f);
}
inline int w_mkdirat(int d, const char* p, mode_t m) {
    const auto a = decide(call::mkdirat, 0, 0, -1, [&] { return path_at(d, p); });
    if (a.what == action::fail) return errno = a.err, -1;
    return ::mkdirat(d, p, m);
}
inline int w_flock(int fd, int op) {
    const auto a = decide(call::flock, 0, 0, fd, [&] { return link_of(fd); });
    if (a.what == action::fail) return errno = a.err, -1;
    return ::flock(fd, op);
}
inline int w_linkat(int od, const char* o, int nd, const char* n, int f) {
    const auto a = decide(call::linkat, 0, 0, -1, [&] { return path_at(nd, n); });
    if (a.what == action::fail) return errno = a.err, -1;
    return ::linkat(od, o, nd, n, f);
}
inline int w_ftruncate(int fd, off_t len) {
    const auto a = decide(call::ftruncate, 0, 0, fd, [&] { return link_of(fd); });
    if (a.what == action::fail) return errno = a.err, -1;
    return ::ftruncate(fd, len);
}

} // namespace faults_detail

/// Installs the fault for its lifetime; the seam is restored by disarm() or the destructor.
class fault_injector {
public:
    /// Changes the `at`-th eligible call (1-based); with `every`, every one (storm modes).
    fault_injector(fault kind, long at, bool every = false) {
        s_.kind = kind;
        s_.at = at;
        s_.every = every;
        faults_detail::active() = &s_;
        auto& t = detail::sys();
        t.openat = faults_detail::w_openat;
        t.read = faults_detail::w_read;
        t.write = faults_detail::w_write;
        t.fsync = faults_detail::w_fsync;
        t.close = faults_detail::w_close;
        t.renameat = faults_detail::w_renameat;
        t.unlinkat = faults_detail::w_unlinkat;
        t.mkdirat = faults_detail::w_mkdirat;
        t.flock = faults_detail::w_flock;
        t.linkat = faults_detail::w_linkat;
        t.ftruncate = faults_detail::w_ftruncate;
        t.pread = faults_detail::w_pread;
    }
    fault_injector(const fault_injector&) = delete;
    fault_injector& operator=(const fault_injector&) = delete;
    ~fault_injector() { disarm(); }

    void disarm() noexcept {
        if (faults_detail::active() == &s_) {
            detail::sys() = detail::default_syscalls();
            faults_detail::active() = nullptr;
        }
    }
    /// True if some call was changed.
    bool hit() const noexcept { return s_.changed > 0; }
    long changed() const noexcept { return s_.changed; }
    long eligible_calls() const noexcept { return s_.seen; }
    const std::optional<fault_hit>& first() const noexcept { return s_.first; }

private:
    faults_detail::state s_;
};

} // namespace kugetsu::test
