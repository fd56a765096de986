// kugetsu/spawn/go_ahead.hpp: the go-ahead handshake between a caller (fork_spawner), the
// supervisor it forks and the agent held before exec: the messages, and both ends of each.
//
// THE HANDSHAKE. spawn() waits for one message: the supervisor's hello (the agent's pid and
// start time, sent once the slot is in place). release() sends the go-ahead byte 'g' through
// the same control socket, which the held agent reads itself (the supervisor closes its copy
// after the hello), and returns when the error pipe closes on exec: two process wake-ups in
// all, and no polling interval. abandon() sends 'a' and closes its end; end-of-file without a
// byte means that the caller died. The supervisor learns the agent's fate from its own pipe:
// "about to exec" then end-of-file (exec'd), or a report of why the program never ran
// (abandoned; the caller or the supervisor died; chdir or exec failed), or end-of-file alone
// (killed while held): it records an end and runs the on-exit command only for an agent that
// exec'd. It never removes the slot: forget() or sweep() does.
//
// The channels: `ctl`, a socketpair (the caller's end, and the agent's, which the supervisor
// hands over after its hello); `err`, the agent's O_CLOEXEC pipe to the caller (end-of-file:
// it exec'd); `sync`, the agent's O_CLOEXEC pipe to its supervisor (also how a held agent
// learns that its supervisor died: its write end polls POLLERR once no reader is left).
#pragma once

#include <cerrno>
#include <cstddef>
#include <cstdint>

#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include "../detail/posix.hpp"

namespace kugetsu::detail {

/// What a child that could not exec writes back: which step failed, and errno. To its
/// supervisor, the agent first writes step 0 (about to exec) once it has the go-ahead.
struct child_failure {
    int step;   // 0 = about to exec, 1 = chdir, 2 = exec, 3 = no go-ahead (the caller or the
                // supervisor died), 4 = abandoned (the caller said 'a'), 5 = the exec record
                // could not be written into the slot
    int error;
};

/// What the supervisor tells the caller once the agent is held (or why it is not).
struct supervisor_hello {
    int ok;           // 1: held; 0: setup failed
    int pid;          // the agent
    std::uint64_t start_time;
    int error;        // setup failed: errno
};

/// The caller's word to a held agent: run ('g'). Blocks while the socket is full (it never
/// is: one byte each way); an agent that died is no error here (exec_outcome tells).
inline void send_go_ahead(int ctl) noexcept {
    const char go = 'g';
    while (::send(ctl, &go, 1, MSG_NOSIGNAL) < 0 && errno == EINTR) {}
}

/// The caller's word to a held agent: never run ('a'). The caller then closes its end.
inline void send_abandon(int ctl) noexcept {
    const char a = 'a';
    while (::send(ctl, &a, 1, MSG_NOSIGNAL | MSG_DONTWAIT) < 0 && errno == EINTR) {}
}

/// What a held agent hears: the go-ahead, an abandon, or nothing it may run on.
enum class go_ahead { go, abandoned, lost };

/// A held agent waits here for the caller's word: one byte on the control socket `ctl`, 'g'
/// (run) or 'a' (abandoned). `lost` if the caller closed its end without a byte (it died), if
/// the byte is neither, or if the supervisor died: `supervisor` is the write end of a pipe
/// only the supervisor reads, which polls POLLERR once no reader is left. Checked again after
/// a 'g', so that an agent whose supervisor is already gone does not start. Async-signal-safe.
inline go_ahead await_go_ahead(int ctl, int supervisor) noexcept {
    constexpr short gone = POLLERR | POLLHUP | POLLNVAL;
    for (;;) {
        pollfd pf[2] = {{ctl, POLLIN, 0}, {supervisor, 0, 0}};
        const int r = ::poll(pf, 2, -1);
        if (r < 0) {
            if (errno == EINTR) continue;
            return go_ahead::lost;
        }
        if (pf[1].revents & gone) return go_ahead::lost;
        if (pf[0].revents) break;
    }
    char c;
    ssize_t n;
    while ((n = ::read(ctl, &c, 1)) < 0 && errno == EINTR) {}
    if (n == 1 && c == 'a') return go_ahead::abandoned;
    if (n != 1 || c != 'g') return go_ahead::lost;
    pollfd pf{supervisor, 0, 0};
    int r;
    while ((r = ::poll(&pf, 1, 0)) < 0 && errno == EINTR) {}
    return r == 0 || (r > 0 && !(pf.revents & gone)) ? go_ahead::go : go_ahead::lost;
}

/// What the caller reads on `err` after its go-ahead.
struct exec_outcome {
    /// ran: it exec'd (end-of-file without a byte); failed: a whole report, `failure` says
    /// which step and errno; died: a part of one (it died while writing it).
    enum { ran, died, failed } what;
    child_failure failure{};
};

/// Reads the agent's report from the caller's end of `err` (through sys(), so tests can
/// inject faults): end-of-file without a byte means that it exec'd.
inline exec_outcome read_exec_outcome(int err) noexcept {
    exec_outcome r{exec_outcome::ran};
    std::size_t got = 0;
    while (got < sizeof r.failure) {
        const ssize_t n = sys().read(err, reinterpret_cast<char*>(&r.failure) + got, sizeof r.failure - got);
        if (n < 0 && errno == EINTR) continue;
        if (n <= 0) break;
        got += static_cast<std::size_t>(n);
    }
    if (got == 0) return r;
    r.what = got == sizeof r.failure ? exec_outcome::failed : exec_outcome::died;
    return r;
}

} // namespace kugetsu::detail
