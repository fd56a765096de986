// kugetsu/detail/signal_safe.hpp: the async-signal-safe helpers a forked child may call
// (the supervisor, and an agent before exec): no allocation, no locks, EINTR retried.
#pragma once

#include <cerrno>
#include <csignal>
#include <cstddef>
#include <cstdint>
#include <ctime>

#include <sys/types.h>
#include <sys/wait.h>
#include <unistd.h>

namespace kugetsu::detail {

/// A wait status as an exit code: the code, 128 + the signal, or -1.
inline int exit_code_of(int status) noexcept {
    if (WIFEXITED(status)) return WEXITSTATUS(status);
    if (WIFSIGNALED(status)) return 128 + WTERMSIG(status);
    return -1;
}

/// Waits until the child `pid` has ended, without reaping it (WNOWAIT): its exit code as
/// exit_code_of() gives it, -1 if waitid fails. The zombie keeps its status for whoever reaps
/// it: if the caller dies before it writes the code down, a subreaper can still read it.
inline int peek_exit_code(pid_t pid) noexcept {
    siginfo_t si{};
    for (;;) {
        if (::waitid(P_PID, static_cast<id_t>(pid), &si, WEXITED | WNOWAIT) == 0) break;
        if (errno != EINTR) return -1;
    }
    if (si.si_code == CLD_EXITED) return si.si_status;
    if (si.si_code == CLD_KILLED || si.si_code == CLD_DUMPED) return 128 + si.si_status;
    return -1;
}

/// waitpid with EINTR retried.
inline pid_t wait_for(pid_t pid, int* status, int flags) noexcept {
    for (;;) {
        const pid_t r = ::waitpid(pid, status, flags);
        if (r >= 0 || errno != EINTR) return r;
    }
}

/// Appends the decimal digits of v at p; returns the end. No allocation.
inline char* put_uint(char* p, std::uint64_t v) noexcept {
    char tmp[24];
    int n = 0;
    do tmp[n++] = static_cast<char>('0' + v % 10);
    while ((v /= 10) != 0);
    while (n) *p++ = tmp[--n];
    return p;
}

/// Appends the NUL-terminated s at p (without its NUL); returns the end.
inline char* put_str(char* p, const char* s) noexcept {
    while (*s) *p++ = *s++;
    return p;
}

inline std::int64_t monotonic_ms() noexcept {
    timespec ts{};
    ::clock_gettime(CLOCK_MONOTONIC, &ts);
    return static_cast<std::int64_t>(ts.tv_sec) * 1000 + ts.tv_nsec / 1000000;
}

/// Microseconds since the epoch (CLOCK_REALTIME), as the slot records carry them.
inline std::int64_t realtime_us() noexcept {
    timespec ts{};
    ::clock_gettime(CLOCK_REALTIME, &ts);
    return static_cast<std::int64_t>(ts.tv_sec) * 1000000 + ts.tv_nsec / 1000;
}

/// Writes all of data; false on an error or a zero-length write.
inline bool write_full(int fd, const void* data, std::size_t len) noexcept {
    const char* p = static_cast<const char*>(data);
    while (len) {
        const ssize_t n = ::write(fd, p, len);
        if (n < 0 && errno == EINTR) continue;
        if (n <= 0) return false;
        p += n;
        len -= static_cast<std::size_t>(n);
    }
    return true;
}

/// Reads exactly len bytes; false on an error or an end of file before them.
inline bool read_full(int fd, void* data, std::size_t len) noexcept {
    char* p = static_cast<char*>(data);
    while (len) {
        const ssize_t n = ::read(fd, p, len);
        if (n < 0 && errno == EINTR) continue;
        if (n <= 0) return false;
        p += n;
        len -= static_cast<std::size_t>(n);
    }
    return true;
}

} // namespace kugetsu::detail
