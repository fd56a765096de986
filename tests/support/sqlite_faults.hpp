// Test support: I/O faults injected under SQLite through its own seams, as SQLite's test
// suite does: a wrapping VFS, and the unix VFS's system-call table.
//
// A sqlite_fault_injector registers the VFS "kugetsu-faults" (sqlite_fault_injector::vfs_name),
// which wraps the default VFS (unix): every sqlite3_file it opens is wrapped, so every file
// method (xRead ... xShmMap, xShmLock, xFetch ...) goes through it and is forwarded. Open a
// database with that VFS (sqlite_store_options::vfs) while the injector lives. The injector
// counts the calls its fault applies to ("eligible" calls) from the moment it is made, and
// changes the k-th one (1-based), or, for storms, every one:
//
//   fault        eligible calls                       what the k-th one does
//   enospc       xWrite, xTruncate                    SQLITE_FULL (errno ENOSPC), nothing written
//   disk_full    xWrite                               writes half the buffer, then SQLITE_FULL; the
//                                                     disk stays full: every later xWrite is
//                                                     SQLITE_FULL too (until disarm())
//   eio          every call that can fail: xOpen,     its I/O error (errno EIO): SQLITE_CANTOPEN,
//                xDelete, xAccess, xRead, xWrite,     IOERR_DELETE, IOERR_ACCESS, IOERR_READ,
//                xTruncate, xSync, xFileSize, xLock,  IOERR_WRITE, IOERR_TRUNCATE, IOERR_FSYNC,
//                xUnlock, xCheckReservedLock,         IOERR_FSTAT, IOERR_LOCK, IOERR_UNLOCK,
//                xShmMap                              IOERR_CHECKRESERVEDLOCK, IOERR_SHMMAP
//   fsync        xSync                                SQLITE_IOERR_FSYNC (errno EIO), not synced
//   short_write  the system calls write, pwrite64     writes 1 byte (SQLite's unixWrite must
//                (the unix VFS's table)               write the rest)
//   eintr        the system calls read, pread64,      it and the next 24 eligible calls fail with
//                write, pwrite64                      EINTR (the unix VFS must retry)
//
// SQLite's xWrite contract has no short writes (a VFS writes all or fails), so short writes
// and EINTR are modelled one level down, through the unix VFS's own seam
// (xSetSystemCall("pwrite64"...): SQLite 3.40 on Linux uses pread64/pwrite64, with read/write
// kept in the table; xNextSystemCall lists them), so the real unix VFS code sees them. With
// `every`, short_write shortens every write call to 1 byte and eintr fails every eligible
// call three times with EINTR before it goes through.
//
// DETERMINISTIC: the same k changes the same call of the same scenario (a scenario that does
// the same thing in a fresh directory). One injector at a time, on one thread. The destructor
// restores everything: the system calls it replaced (to what they were) and the VFS list (it
// unregisters "kugetsu-faults"). A file still open through the VFS keeps working, forwarding
// every call without faults (close it first all the same). disarm() stops injecting and
// counting but keeps the VFS registered.
#pragma once

#include <cerrno>
#include <climits>
#include <cstddef>
#include <cstdlib>
#include <cstdio>
#include <cstring>
#include <map>
#include <string>

#include <sqlite3.h>
#include <sys/types.h>
#include <unistd.h>

namespace kugetsu::test {

enum class sqlite_fault { enospc, disk_full, eio, fsync, short_write, eintr };

inline const char* name_of(sqlite_fault f) {
    switch (f) {
    case sqlite_fault::enospc: return "ENOSPC";
    case sqlite_fault::disk_full: return "disk full mid-write";
    case sqlite_fault::eio: return "EIO";
    case sqlite_fault::fsync: return "fsync failure";
    case sqlite_fault::short_write: return "short write";
    case sqlite_fault::eintr: return "EINTR storm";
    }
    return "?";
}

/// Faults the unix VFS must absorb: the operation succeeds as if nothing happened.
inline bool transparent(sqlite_fault f) { return f == sqlite_fault::short_write || f == sqlite_fault::eintr; }

namespace sqlite_faults_detail {

enum class call {
    x_open, x_delete, x_access, x_read, x_write, x_truncate, x_sync, x_file_size, x_lock, x_unlock,
    x_check_reserved_lock, x_shm_map, sys_read, sys_pread64, sys_write, sys_pwrite64
};

inline const char* name_of(call c) {
    constexpr const char* names[] = {"xOpen",  "xDelete", "xAccess", "xRead",   "xWrite",
                                     "xTruncate", "xSync", "xFileSize", "xLock", "xUnlock",
                                     "xCheckReservedLock", "xShmMap", "read", "pread64", "write", "pwrite64"};
    return names[static_cast<int>(c)];
}

/// The I/O error a method returns for EIO.
inline int ioerr_of(call c) {
    switch (c) {
    case call::x_open: return SQLITE_CANTOPEN;
    case call::x_delete: return SQLITE_IOERR_DELETE;
    case call::x_access: return SQLITE_IOERR_ACCESS;
    case call::x_read: return SQLITE_IOERR_READ;
    case call::x_write: return SQLITE_IOERR_WRITE;
    case call::x_truncate: return SQLITE_IOERR_TRUNCATE;
    case call::x_sync: return SQLITE_IOERR_FSYNC;
    case call::x_file_size: return SQLITE_IOERR_FSTAT;
    case call::x_lock: return SQLITE_IOERR_LOCK;
    case call::x_unlock: return SQLITE_IOERR_UNLOCK;
    case call::x_check_reserved_lock: return SQLITE_IOERR_CHECKRESERVEDLOCK;
    case call::x_shm_map: return SQLITE_IOERR_SHMMAP;
    default: return SQLITE_IOERR;
    }
}

inline bool is_sys(call c) { return c >= call::sys_read; }

struct state {
    sqlite_fault kind{};
    long at = 0;
    bool every = false;
    bool armed = true;
    long seen = 0;        // eligible calls so far
    long changed = 0;     // calls changed
    bool full = false;    // disk_full: the disk has filled up
    std::string first;    // the first call changed: "xWrite /dir/state.db-wal"
    std::map<std::string, long> changed_by_call;
};

inline state*& active() {
    static state* s = nullptr;
    return s;
}

inline bool applies(sqlite_fault f, call c) {
    switch (f) {
    case sqlite_fault::enospc: return c == call::x_write || c == call::x_truncate;
    case sqlite_fault::disk_full: return c == call::x_write;
    case sqlite_fault::eio: return !is_sys(c);
    case sqlite_fault::fsync: return c == call::x_sync;
    case sqlite_fault::short_write: return c == call::sys_write || c == call::sys_pwrite64;
    case sqlite_fault::eintr: return is_sys(c);
    }
    return false;
}

struct action {
    enum { pass, fail, shorten } what = pass;
    int rc = SQLITE_OK;   // VFS calls: the result code; system calls: the errno
    std::size_t len = 0;
};

/// Decides what an eligible call does; `where` names the file for the record.
template <class Where>
action decide(call c, std::size_t n, Where where) {
    state* s = active();
    if (!s || !s->armed || !applies(s->kind, c)) return {};
    const long i = ++s->seen;
    action a;
    switch (s->kind) {
    case sqlite_fault::enospc:
        if (i == s->at) a = {action::fail, SQLITE_FULL, 0};
        break;
    case sqlite_fault::disk_full:
        if (s->full) a = {action::fail, SQLITE_FULL, 0};
        else if (i == s->at) {
            s->full = true;
            a = {action::shorten, SQLITE_FULL, n / 2};
        }
        break;
    case sqlite_fault::eio:
        if (i == s->at) a = {action::fail, ioerr_of(c), 0};
        break;
    case sqlite_fault::fsync:
        if (i == s->at) a = {action::fail, SQLITE_IOERR_FSYNC, 0};
        break;
    case sqlite_fault::short_write:
        if ((s->every || i == s->at) && n > 1) a = {action::shorten, 0, 1};
        break;
    case sqlite_fault::eintr:
        if (s->every ? i % 4 != 0 : (i >= s->at && i < s->at + 25)) a = {action::fail, EINTR, 0};
        break;
    }
    if (a.what == action::pass) return a;
    ++s->changed;
    ++s->changed_by_call[name_of(c)];
    if (s->first.empty()) {
        const int saved = errno;
        s->first = std::string(name_of(c)) + " " + where();
        errno = saved;
    }
    return a;
}

/// The errno a failed VFS call leaves, as the unix VFS would (its xGetLastError is errno).
inline int fail_with(const action& a) {
    errno = a.rc == SQLITE_FULL ? ENOSPC : EIO;
    return a.rc;
}

// ---- the wrapping VFS ---------------------------------------------------------------------

inline sqlite3_vfs*& real_vfs() {
    static sqlite3_vfs* v = nullptr;
    return v;
}

struct file {
    sqlite3_file base;
    sqlite3_file* real;   // the wrapped file, in the same allocation, after this struct
    const char* name;     // SQLite keeps zName valid until xClose
};

inline std::string name_of(sqlite3_file* f) {
    const char* n = reinterpret_cast<file*>(f)->name;
    return n ? n : "(temp file)";
}
inline sqlite3_file* real_of(sqlite3_file* f) { return reinterpret_cast<file*>(f)->real; }

inline int x_close(sqlite3_file* f) {
    sqlite3_file* r = real_of(f);
    return r->pMethods ? r->pMethods->xClose(r) : SQLITE_OK;
}
inline int x_read(sqlite3_file* f, void* b, int n, sqlite3_int64 off) {
    const auto a = decide(call::x_read, static_cast<std::size_t>(n), [&] { return name_of(f); });
    if (a.what == action::fail) return fail_with(a);
    return real_of(f)->pMethods->xRead(real_of(f), b, n, off);
}
inline int x_write(sqlite3_file* f, const void* b, int n, sqlite3_int64 off) {
    const auto a = decide(call::x_write, static_cast<std::size_t>(n), [&] { return name_of(f); });
    if (a.what == action::fail) return fail_with(a);
    if (a.what == action::shorten) {   // the disk fills up in the middle of this write
        if (a.len > 0) real_of(f)->pMethods->xWrite(real_of(f), b, static_cast<int>(a.len), off);
        return fail_with(a);
    }
    return real_of(f)->pMethods->xWrite(real_of(f), b, n, off);
}
inline int x_truncate(sqlite3_file* f, sqlite3_int64 size) {
    const auto a = decide(call::x_truncate, 0, [&] { return name_of(f); });
    if (a.what == action::fail) return fail_with(a);
    return real_of(f)->pMethods->xTruncate(real_of(f), size);
}
inline int x_sync(sqlite3_file* f, int flags) {
    const auto a = decide(call::x_sync, 0, [&] { return name_of(f); });
    if (a.what == action::fail) return fail_with(a);
    return real_of(f)->pMethods->xSync(real_of(f), flags);
}
inline int x_file_size(sqlite3_file* f, sqlite3_int64* size) {
    const auto a = decide(call::x_file_size, 0, [&] { return name_of(f); });
    if (a.what == action::fail) return fail_with(a);
    return real_of(f)->pMethods->xFileSize(real_of(f), size);
}
inline int x_lock(sqlite3_file* f, int level) {
    const auto a = decide(call::x_lock, 0, [&] { return name_of(f); });
    if (a.what == action::fail) return fail_with(a);
    return real_of(f)->pMethods->xLock(real_of(f), level);
}
inline int x_unlock(sqlite3_file* f, int level) {
    const auto a = decide(call::x_unlock, 0, [&] { return name_of(f); });
    if (a.what == action::fail) return fail_with(a);
    return real_of(f)->pMethods->xUnlock(real_of(f), level);
}
inline int x_check_reserved_lock(sqlite3_file* f, int* out) {
    const auto a = decide(call::x_check_reserved_lock, 0, [&] { return name_of(f); });
    if (a.what == action::fail) return fail_with(a);
    return real_of(f)->pMethods->xCheckReservedLock(real_of(f), out);
}
inline int x_file_control(sqlite3_file* f, int op, void* arg) {
    return real_of(f)->pMethods->xFileControl(real_of(f), op, arg);
}
inline int x_sector_size(sqlite3_file* f) { return real_of(f)->pMethods->xSectorSize(real_of(f)); }
inline int x_device_characteristics(sqlite3_file* f) {
    return real_of(f)->pMethods->xDeviceCharacteristics(real_of(f));
}
inline int x_shm_map(sqlite3_file* f, int page, int size, int extend, void volatile** p) {
    const auto a = decide(call::x_shm_map, 0, [&] { return name_of(f) + " (shm)"; });
    if (a.what == action::fail) return fail_with(a);
    return real_of(f)->pMethods->xShmMap(real_of(f), page, size, extend, p);
}
inline int x_shm_lock(sqlite3_file* f, int offset, int n, int flags) {
    return real_of(f)->pMethods->xShmLock(real_of(f), offset, n, flags);
}
inline void x_shm_barrier(sqlite3_file* f) { real_of(f)->pMethods->xShmBarrier(real_of(f)); }
inline int x_shm_unmap(sqlite3_file* f, int del) { return real_of(f)->pMethods->xShmUnmap(real_of(f), del); }
inline int x_fetch(sqlite3_file* f, sqlite3_int64 off, int n, void** p) {
    return real_of(f)->pMethods->xFetch(real_of(f), off, n, p);
}
inline int x_unfetch(sqlite3_file* f, sqlite3_int64 off, void* p) {
    return real_of(f)->pMethods->xUnfetch(real_of(f), off, p);
}

inline const sqlite3_io_methods* io_methods() {
    static const sqlite3_io_methods m = {
        3,           x_close,        x_read,      x_write,          x_truncate,   x_sync,
        x_file_size, x_lock,         x_unlock,    x_check_reserved_lock, x_file_control, x_sector_size,
        x_device_characteristics, x_shm_map, x_shm_lock, x_shm_barrier, x_shm_unmap, x_fetch,
        x_unfetch,
    };
    return &m;
}

inline int v_open(sqlite3_vfs*, sqlite3_filename name, sqlite3_file* f, int flags, int* out_flags) {
    auto* w = reinterpret_cast<file*>(f);
    w->base.pMethods = nullptr;
    w->real = reinterpret_cast<sqlite3_file*>(reinterpret_cast<char*>(f) + ((sizeof(file) + 7) & ~std::size_t{7}));
    w->real->pMethods = nullptr;
    w->name = name;
    const auto a = decide(call::x_open, 0, [&] { return std::string(name ? name : "(temp file)"); });
    if (a.what == action::fail) return fail_with(a);
    const int rc = real_vfs()->xOpen(real_vfs(), name, w->real, flags, out_flags);
    // As the wrapped VFS says: a file whose methods are set is closed by SQLite, even after
    // a failed open.
    if (w->real->pMethods) w->base.pMethods = io_methods();
    return rc;
}
inline int v_delete(sqlite3_vfs*, const char* name, int sync_dir) {
    const auto a = decide(call::x_delete, 0, [&] { return std::string(name); });
    if (a.what == action::fail) return fail_with(a);
    return real_vfs()->xDelete(real_vfs(), name, sync_dir);
}
inline int v_access(sqlite3_vfs*, const char* name, int flags, int* out) {
    const auto a = decide(call::x_access, 0, [&] { return std::string(name); });
    if (a.what == action::fail) return fail_with(a);
    return real_vfs()->xAccess(real_vfs(), name, flags, out);
}
inline int v_full_pathname(sqlite3_vfs*, const char* name, int n, char* out) {
    return real_vfs()->xFullPathname(real_vfs(), name, n, out);
}
inline void* v_dl_open(sqlite3_vfs*, const char* name) { return real_vfs()->xDlOpen(real_vfs(), name); }
inline void v_dl_error(sqlite3_vfs*, int n, char* msg) { real_vfs()->xDlError(real_vfs(), n, msg); }
inline void (*v_dl_sym(sqlite3_vfs*, void* h, const char* sym))(void) { return real_vfs()->xDlSym(real_vfs(), h, sym); }
inline void v_dl_close(sqlite3_vfs*, void* h) { real_vfs()->xDlClose(real_vfs(), h); }
inline int v_randomness(sqlite3_vfs*, int n, char* out) { return real_vfs()->xRandomness(real_vfs(), n, out); }
inline int v_sleep(sqlite3_vfs*, int us) { return real_vfs()->xSleep(real_vfs(), us); }
inline int v_current_time(sqlite3_vfs*, double* t) { return real_vfs()->xCurrentTime(real_vfs(), t); }
inline int v_get_last_error(sqlite3_vfs*, int n, char* msg) { return real_vfs()->xGetLastError(real_vfs(), n, msg); }
inline int v_current_time_int64(sqlite3_vfs*, sqlite3_int64* t) { return real_vfs()->xCurrentTimeInt64(real_vfs(), t); }
inline int v_set_system_call(sqlite3_vfs*, const char* name, sqlite3_syscall_ptr p) {
    return real_vfs()->xSetSystemCall(real_vfs(), name, p);
}
inline sqlite3_syscall_ptr v_get_system_call(sqlite3_vfs*, const char* name) {
    return real_vfs()->xGetSystemCall(real_vfs(), name);
}
inline const char* v_next_system_call(sqlite3_vfs*, const char* name) {
    return real_vfs()->xNextSystemCall(real_vfs(), name);
}

/// The VFS: static storage, so a connection that outlives its registration never points
/// at freed memory.
inline sqlite3_vfs& the_vfs() {
    static sqlite3_vfs v{};
    return v;
}

// ---- the unix VFS's system calls ------------------------------------------------------------

using read_fn = ssize_t (*)(int, void*, std::size_t);
using pread_fn = ssize_t (*)(int, void*, std::size_t, off_t);
using write_fn = ssize_t (*)(int, const void*, std::size_t);
using pwrite_fn = ssize_t (*)(int, const void*, std::size_t, off_t);

struct saved_syscalls {
    sqlite3_syscall_ptr read = nullptr, pread64 = nullptr, write = nullptr, pwrite64 = nullptr;
};
inline saved_syscalls& saved() {
    static saved_syscalls s;
    return s;
}

inline std::string fd_path(int fd) {
    char buf[PATH_MAX];
    const std::string proc = "/proc/self/fd/" + std::to_string(fd);
    const ssize_t n = ::readlink(proc.c_str(), buf, sizeof buf - 1);
    return n > 0 ? std::string(buf, static_cast<std::size_t>(n)) : "fd " + std::to_string(fd);
}

inline ssize_t s_read(int fd, void* b, std::size_t n) {
    const auto a = decide(call::sys_read, n, [&] { return fd_path(fd); });
    if (a.what == action::fail) return errno = a.rc, -1;
    return reinterpret_cast<read_fn>(saved().read)(fd, b, n);
}
inline ssize_t s_pread64(int fd, void* b, std::size_t n, off_t off) {
    const auto a = decide(call::sys_pread64, n, [&] { return fd_path(fd); });
    if (a.what == action::fail) return errno = a.rc, -1;
    return reinterpret_cast<pread_fn>(saved().pread64)(fd, b, n, off);
}
inline ssize_t s_write(int fd, const void* b, std::size_t n) {
    const auto a = decide(call::sys_write, n, [&] { return fd_path(fd); });
    if (a.what == action::fail) return errno = a.rc, -1;
    return reinterpret_cast<write_fn>(saved().write)(fd, b, a.what == action::shorten ? a.len : n);
}
inline ssize_t s_pwrite64(int fd, const void* b, std::size_t n, off_t off) {
    const auto a = decide(call::sys_pwrite64, n, [&] { return fd_path(fd); });
    if (a.what == action::fail) return errno = a.rc, -1;
    return reinterpret_cast<pwrite_fn>(saved().pwrite64)(fd, b, a.what == action::shorten ? a.len : n, off);
}

} // namespace sqlite_faults_detail

/// Installs the fault for its lifetime (see the header comment).
class sqlite_fault_injector {
public:
    static constexpr const char* vfs_name = "kugetsu-faults";

    /// Changes the `at`-th eligible call (1-based); with `every`, every one (storms).
    sqlite_fault_injector(sqlite_fault kind, long at, bool every = false) {
        namespace d = sqlite_faults_detail;
        if (d::active()) std::abort();   // one at a time
        s_.kind = kind;
        s_.at = at;
        s_.every = every;
        sqlite3_initialize();
        sqlite3_vfs* real = sqlite3_vfs_find(nullptr);
        if (!real || real == &d::the_vfs()) std::abort();
        d::real_vfs() = real;
        sqlite3_vfs& v = d::the_vfs();
        v = sqlite3_vfs{};
        v.iVersion = 3;
        v.szOsFile = static_cast<int>(((sizeof(d::file) + 7) & ~std::size_t{7}) + static_cast<std::size_t>(real->szOsFile));
        v.mxPathname = real->mxPathname;
        v.zName = vfs_name;
        v.xOpen = d::v_open;
        v.xDelete = d::v_delete;
        v.xAccess = d::v_access;
        v.xFullPathname = d::v_full_pathname;
        v.xDlOpen = d::v_dl_open;
        v.xDlError = d::v_dl_error;
        v.xDlSym = d::v_dl_sym;
        v.xDlClose = d::v_dl_close;
        v.xRandomness = d::v_randomness;
        v.xSleep = d::v_sleep;
        v.xCurrentTime = d::v_current_time;
        v.xGetLastError = d::v_get_last_error;
        v.xCurrentTimeInt64 = d::v_current_time_int64;
        v.xSetSystemCall = d::v_set_system_call;
        v.xGetSystemCall = d::v_get_system_call;
        v.xNextSystemCall = d::v_next_system_call;
        if (sqlite3_vfs_register(&v, 0) != SQLITE_OK) std::abort();
        // Short writes and EINTR go one level down, into the unix VFS's system-call table.
        auto& sv = d::saved();
        sv.read = real->xGetSystemCall(real, "read");
        sv.pread64 = real->xGetSystemCall(real, "pread64");
        sv.write = real->xGetSystemCall(real, "write");
        sv.pwrite64 = real->xGetSystemCall(real, "pwrite64");
        if (!sv.read || !sv.pread64 || !sv.write || !sv.pwrite64) std::abort();   // not SQLite 3.40's unix VFS
        if (sv.pwrite64 == reinterpret_cast<sqlite3_syscall_ptr>(d::s_pwrite64)) {
            std::fputs("sqlite_fault_injector: an earlier injector did not restore the system calls\n", stderr);
            std::abort();
        }
        if (kind == sqlite_fault::short_write || kind == sqlite_fault::eintr) {
            set("read", reinterpret_cast<sqlite3_syscall_ptr>(d::s_read));
            set("pread64", reinterpret_cast<sqlite3_syscall_ptr>(d::s_pread64));
            set("write", reinterpret_cast<sqlite3_syscall_ptr>(d::s_write));
            set("pwrite64", reinterpret_cast<sqlite3_syscall_ptr>(d::s_pwrite64));
            syscalls_replaced_ = true;
        }
        d::active() = &s_;
    }
    sqlite_fault_injector(const sqlite_fault_injector&) = delete;
    sqlite_fault_injector& operator=(const sqlite_fault_injector&) = delete;

    ~sqlite_fault_injector() { restore(); }

    /// Stops injecting and counting; the VFS stays registered (files opened through it go on
    /// forwarding) until restore() or the destructor.
    void disarm() noexcept { s_.armed = false; }

    /// Puts back the system calls and unregisters the VFS.
    void restore() noexcept {
        namespace d = sqlite_faults_detail;
        if (d::active() != &s_) return;
        disarm();
        if (syscalls_replaced_) {
            auto& sv = d::saved();
            set("read", sv.read);
            set("pread64", sv.pread64);
            set("write", sv.write);
            set("pwrite64", sv.pwrite64);
            syscalls_replaced_ = false;
        }
        sqlite3_vfs_unregister(&d::the_vfs());
        d::active() = nullptr;
    }

    /// Makes the n-th eligible call from now the one changed (instead of the k-th overall).
    void fail_next(long n = 1) noexcept { s_.at = s_.seen + n; }

    bool hit() const noexcept { return s_.changed > 0; }
    long changed() const noexcept { return s_.changed; }
    long eligible_calls() const noexcept { return s_.seen; }
    /// The first call changed and its file ("" if none).
    const std::string& first() const noexcept { return s_.first; }
    /// Calls changed, by method or system call.
    const std::map<std::string, long>& changed_by_call() const noexcept { return s_.changed_by_call; }

private:
    static void set(const char* name, sqlite3_syscall_ptr p) noexcept {
        sqlite3_vfs* real = sqlite_faults_detail::real_vfs();
        real->xSetSystemCall(real, name, p);
    }

    sqlite_faults_detail::state s_;
    bool syscalls_replaced_ = false;
};

} // namespace kugetsu::test
