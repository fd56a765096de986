// kugetsu/spawn/fork_spawner.hpp: the real spawner: each agent runs under a small supervisor
// process that records its end, whatever happens to the process that started it.
//
// spawn() forks a SUPERVISOR, which forks the AGENT and holds it before exec:
//
//   caller ──fork──> supervisor (own session; stdio: /dev/null and the task's log)
//                      │ holds RUN_DIR/<pid>-<start>.slot, flock'd (shared with the agent)
//                      └──fork──> agent (own process group; waits for the go-ahead, then execs)
//
// The agent's stdin is /dev/null and its stdout and stderr are appended to
// LOG_DIR/<task id>.log (0600, O_NOFOLLOW). release() lets it exec; an exec failure (or a
// failed chdir) comes back as errno through an O_CLOEXEC pipe, so release() reports "no such
// program" as an error instead of an agent that exits 127. If the caller dies or calls
// abandon() while the agent is held, the agent exits without running the program: no agent
// ever runs without the session the dispatcher writes in between; nor does one whose
// supervisor died while it was held.
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
// THE SLOT FILE. The supervisor creates RUN_DIR/<agent pid>-<agent start time>.slot and takes
// an exclusive flock on it before the agent is forked; the agent inherits that open file (as
// descriptor 5, KUGETSU_SLOT_FD=5), so the lock is held exactly while the supervisor or the
// agent (or a descendant that keeps the descriptor) is alive, and the kernel releases it when
// the last of them dies, however it dies. The file holds one record: a line at offset 0 that
// replaces the one before (bytes after the first newline are left-overs, and ignored):
//   kugetsu-held 2\n            by the supervisor, before it forks the agent (never empty)
//   kugetsu-exec 2 US\n         by the agent, once it has the go-ahead, just before execve
//   kugetsu-noexec 2\n          by the agent, as it exits without running the program
//   kugetsu-exit 2 CODE T US\n  by the supervisor, once the agent has ended and before it
//                               reaps it (killed in between, it leaves a zombie whose code a
//                               subreaper records, see ORPHANS): CODE, T = timed
//                               out (0|1), US = when the end was seen (realtime microseconds)
//   kugetsu-exit 1 CODE T\n     by a kugetsu 0.1 supervisor (whose slot is empty before it)
// So poll() from ANY process answers:
//   lock held                            -> running (also: a zombie not yet reaped); with a
//                                           held or noexec record, running with `held` set
//                                           (not released: not to be adopted as started)
//   lock free, exit record               -> exited, with the code, timed_out and (v2) end time
//   lock free, held or noexec            -> never_ran (the agent is dead: alive, it holds the lock)
//   lock free, exec (supervisor killed)  -> running while the agent's identity (pid, start time,
//                                           boot id) is alive, or while it is a zombie whose
//                                           parent is a live process other than init (a
//                                           subreaper that records it: ORPHANS); else gone
//   lock free, empty (0.1), or no file   -> running while the identity is alive, else gone
// The slot file's last close is an inotify IN_CLOSE_WRITE on RUN_DIR: a daemon wakes on it.
// The file stays after the end (the caller may have committed a session naming the agent)
// until forget(), which the dispatcher calls once it has committed what happened (or for an
// agent it abandoned). sweep() removes the free ones no session names, and
// the temporary ones (.slot.<pid>.<n>) that supervisors killed during setup left behind.
//
// ORPHANS. An agent whose supervisor is killed is given by the kernel to the nearest child
// subreaper (prctl PR_SET_CHILD_SUBREAPER) among its ancestors, or else to init, which reaps it
// and loses its exit code. A host that is a subreaper (the kugetsu daemon) says so with
// adopt_orphans(true): poll(), wait(), forget() and sweep() then reap every child of the host,
// and write the exit record (end time: when it was seen) of an orphan whose slot holds an exec
// record before they reap it. An agent started by a process that is not a subreaper (`kugetsu
// start`, which exits) loses its exit code if its supervisor is killed: it ends gone.
//
// TIMEOUTS. With spawn_request::timeout set, the supervisor itself sends SIGTERM to the
// agent's process group at the deadline (counted from release()) and SIGKILL kill_grace
// later, and records timed_out: timeouts hold even if no kugetsu process is left.
//
// ON EXIT. After writing the exit record, the supervisor can exec a command (set_on_exit),
// such as `kugetsu reap`, so that the end is recorded in the store at once even with no daemon
// running; it skips the command while some process holds an OFD lock on `unless_locked` (a
// daemon that will reap anyway).
//
// The program is looked up on PATH in the caller (before fork); supervisor and agent call
// only async-signal-safe functions, so spawning from a multi-threaded host is safe. The
// supervisor closes every descriptor it does not need (also those a host leaked, and the
// dispatcher's lock), so the agent inherits stdin, stdout, stderr and the slot only.
// The environment is the caller's plus KUGETSU_TASK_ID=<task id> and KUGETSU_SLOT_FD=5.
//
// signal() sends to the agent's process group after checking its identity through a pidfd.
// wait() blocks until an agent's end is recorded (a blocking shared flock on its slot).
// Supervisors that are the caller's children are reaped by poll(), wait(), forget() and
// sweep(); other children only with adopt_orphans(true) (never waitpid(-1) otherwise: a host's
// other children are not ours).
//
// Not thread-safe: one fork_spawner per thread (as with the dispatcher that owns it).
#pragma once

#include <algorithm>
#include <cstdio>
#include <cerrno>
#include <csignal>
#include <cstdint>
#include <cstdlib>
#include <ctime>
#include <map>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include <dirent.h>
#include <fcntl.h>
#include <linux/close_range.h>
#include <poll.h>
#include <sys/file.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include "../concepts.hpp"
#include "../detail/posix.hpp"
#include "../detail/proc.hpp"
#include "../state_dir.hpp"

extern char** environ;

namespace kugetsu {

namespace detail {

/// Finds argv0 on PATH like execvp would, in the parent, so that the child needs no lookup.
inline std::string resolve_program(const std::string& argv0, std::error_code& ec) {
    ec.clear();
    if (argv0.find('/') != std::string::npos) return argv0;
    const char* path = std::getenv("PATH");
    std::string_view dirs = (path && *path) ? path : "/usr/local/bin:/usr/bin:/bin";
    int first_error = ENOENT;
    while (true) {
        const auto colon = dirs.find(':');
        std::string dir(dirs.substr(0, colon));
        if (dir.empty()) dir = ".";
        std::string candidate;
        candidate.append(dir).append(1, '/').append(argv0);
        struct stat st{};
        if (::stat(candidate.c_str(), &st) == 0 && S_ISREG(st.st_mode)) {
            if (::access(candidate.c_str(), X_OK) == 0) return candidate;
            first_error = EACCES;
        }
        if (colon == std::string_view::npos) break;
        dirs.remove_prefix(colon + 1);
    }
    ec = errno_code(first_error);
    return {};
}

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

// ---- async-signal-safe helpers for the supervisor ------------------------------------------

/// Appends the decimal digits of v at p; returns the end. No allocation.
inline char* put_uint(char* p, std::uint64_t v) noexcept {
    char tmp[24];
    int n = 0;
    do tmp[n++] = static_cast<char>('0' + v % 10);
    while ((v /= 10) != 0);
    while (n) *p++ = tmp[--n];
    return p;
}

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

/// Writes a slot record at offset 0, EINTR retried; false unless all of it was written.
inline bool put_record(int fd, const char* rec, std::size_t len) noexcept {
    ssize_t w;
    while ((w = ::pwrite(fd, rec, len, 0)) < 0 && errno == EINTR) {}
    return w == static_cast<ssize_t>(len);
}

inline constexpr char held_record[] = "kugetsu-held 2\n";
inline constexpr char noexec_record[] = "kugetsu-noexec 2\n";

/// "kugetsu-exec 2 US\n" into buf (at least 64 bytes); returns its length.
inline std::size_t exec_record(char* buf, std::int64_t us) noexcept {
    char* q = put_str(buf, "kugetsu-exec 2 ");
    q = put_uint(q, static_cast<std::uint64_t>(std::max<std::int64_t>(0, us)));
    q = put_str(q, "\n");
    return static_cast<std::size_t>(q - buf);
}

/// "kugetsu-exit 2 CODE T US\n" into buf (at least 64 bytes); returns its length.
inline std::size_t exit_record(char* buf, int code, bool timed_out, std::int64_t us) noexcept {
    char* q = put_str(buf, "kugetsu-exit 2 ");
    q = put_uint(q, static_cast<std::uint64_t>(std::clamp(code, 0, 255)));
    q = put_str(q, timed_out ? " 1 " : " 0 ");
    q = put_uint(q, static_cast<std::uint64_t>(std::max<std::int64_t>(0, us)));
    q = put_str(q, "\n");
    return static_cast<std::size_t>(q - buf);
}

/// /proc/PID/stat field 22 without allocating; 0 on failure.
inline std::uint64_t start_time_of(int pid) noexcept {
    char path[64];
    char* e = put_str(path, "/proc/");
    e = put_uint(e, static_cast<std::uint64_t>(pid));
    e = put_str(e, "/stat");
    *e = '\0';
    const int fd = ::open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) return 0;
    char buf[2048];
    std::size_t got = 0;
    for (;;) {
        const ssize_t n = ::read(fd, buf + got, sizeof buf - 1 - got);
        if (n < 0 && errno == EINTR) continue;
        if (n <= 0) break;
        got += static_cast<std::size_t>(n);
        if (got == sizeof buf - 1) break;
    }
    ::close(fd);
    buf[got] = '\0';
    const char* p = nullptr;
    for (std::size_t i = 0; i < got; ++i)
        if (buf[i] == ')') p = buf + i;
    if (!p) return 0;
    p += 2;   // state
    for (int field = 3; field < 22; ++field) {
        while (*p && *p != ' ') ++p;
        if (!*p) return 0;
        ++p;
    }
    std::uint64_t v = 0;
    while (*p >= '0' && *p <= '9') v = v * 10 + static_cast<std::uint64_t>(*p++ - '0');
    return v;
}

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

/// A slot file's record (its first line), as parse_slot_record reads it.
struct slot_record {
    enum class kind {
        none,     ///< empty (a kugetsu 0.1 slot before its end), incomplete, or not a record
        held,     ///< "kugetsu-held 2": the agent was forked and held
        exec,     ///< "kugetsu-exec 2 US": the agent had the go-ahead and was about to exec
        noexec,   ///< "kugetsu-noexec 2": the agent exited without running the program
        exited,   ///< "kugetsu-exit 2 CODE T US" or (0.1) "kugetsu-exit 1 CODE T"
    };
    kind what = kind::none;
    int version = 0;
    int exit_code = -1;                ///< exited: 0-255
    bool timed_out = false;            ///< exited: the supervisor stopped it at its timeout
    std::optional<timestamp> at{};     ///< exec: when; exited (version 2): when it ended
};

/// Reads the record on the first line of `s` (up to its newline: what follows is ignored).
/// Strict: anything else, including a line without its newline, is kind::none. Never
/// allocates, never throws, whatever the bytes.
inline slot_record parse_slot_record(std::string_view s) noexcept {
    slot_record r;
    const auto nl = s.find('\n');
    if (nl == std::string_view::npos) return r;
    std::string_view line = s.substr(0, nl);
    auto eat = [&](std::string_view w) {
        if (line.substr(0, w.size()) != w) return false;
        line.remove_prefix(w.size());
        return true;
    };
    // Decimal digits, at most `max_digits` of them and then no other digit.
    auto number = [&](int max_digits, std::uint64_t& v) {
        v = 0;
        int digits = 0;
        while (!line.empty() && line.front() >= '0' && line.front() <= '9') {
            if (++digits > max_digits) return false;
            v = v * 10 + static_cast<std::uint64_t>(line.front() - '0');
            line.remove_prefix(1);
        }
        return digits > 0;
    };
    std::uint64_t v = 0;
    if (line == "kugetsu-held 2") {
        r.what = slot_record::kind::held;
        r.version = 2;
    } else if (line == "kugetsu-noexec 2") {
        r.what = slot_record::kind::noexec;
        r.version = 2;
    } else if (eat("kugetsu-exec 2 ")) {
        if (!number(18, v) || !line.empty()) return r;
        r.what = slot_record::kind::exec;
        r.version = 2;
        r.at = timestamp(duration(static_cast<std::int64_t>(v)));
    } else if (eat("kugetsu-exit ")) {
        const int version = eat("1 ") ? 1 : eat("2 ") ? 2 : 0;
        if (version == 0 || !number(3, v) || v > 255 || !eat(" ") || line.empty() ||
            (line.front() != '0' && line.front() != '1'))
            return r;
        const int code = static_cast<int>(v);
        const bool timed_out = line.front() == '1';
        line.remove_prefix(1);
        std::optional<timestamp> at;
        if (version == 2) {
            if (!eat(" ") || !number(18, v)) return r;
            at = timestamp(duration(static_cast<std::int64_t>(v)));
        }
        if (!line.empty()) return r;
        r.what = slot_record::kind::exited;
        r.version = version;
        r.exit_code = code;
        r.timed_out = timed_out;
        r.at = at;
    }
    return r;
}

/// Reads the record of the slot file open as `fd` (pread at offset 0, EINTR retried).
inline slot_record read_slot_record(int fd) noexcept {
    char buf[64];
    ssize_t n;
    while ((n = ::pread(fd, buf, sizeof buf, 0)) < 0 && errno == EINTR) {}
    return n > 0 ? parse_slot_record(std::string_view(buf, static_cast<std::size_t>(n))) : slot_record{};
}

} // namespace detail

class fork_spawner {
public:
    /// The descriptor through which an agent holds its slot.
    static constexpr int slot_fd = 5;

    /// Effects: logs go to LOG_DIR/<task id>.log, slot files to RUN_DIR (default: LOG_DIR);
    /// both are created (0700) when needed.
    explicit fork_spawner(std::string log_dir, std::string run_dir = {})
        : log_dir_(std::move(log_dir)), run_dir_(run_dir.empty() ? log_dir_ : std::move(run_dir)) {}

    fork_spawner(fork_spawner&&) noexcept = default;
    fork_spawner& operator=(fork_spawner&& o) noexcept {
        if (this != &o) {
            abandon_all();
            log_dir_ = std::move(o.log_dir_);
            run_dir_ = std::move(o.run_dir_);
            on_exit_ = std::move(o.on_exit_);
            on_exit_unless_locked_ = std::move(o.on_exit_unless_locked_);
            adopt_orphans_ = o.adopt_orphans_;
            held_ = std::move(o.held_);
            supervisors_ = std::move(o.supervisors_);
            detail_ = std::move(o.detail_);
        }
        return *this;
    }
    ~fork_spawner() { abandon_all(); }

    /// After recording an agent's exit status, its supervisor execs argv (argv[0] a path, no
    /// PATH lookup), unless some process holds an OFD lock (fcntl F_OFD_SETLK, any type) on
    /// the file `unless_locked` ("" = always): a daemon that will record the end. The
    /// supervisor's stdout and stderr are the task's log. Empty argv: none.
    void set_on_exit(std::vector<std::string> argv, std::string unless_locked = {}) {
        on_exit_ = std::move(argv);
        on_exit_unless_locked_ = std::move(unless_locked);
    }

    /// Tells the spawner that the calling process is a child subreaper (it has called
    /// prctl(PR_SET_CHILD_SUBREAPER, 1)), so that the agents of supervisors that die become
    /// its children. With it on, poll(), wait(), forget() and sweep() reap every child of the
    /// process (without it, only its supervisors): an orphan whose slot holds an exec record
    /// gets its exit record (exit code, end time = when it was seen) before it is reaped, and
    /// any other child is just reaped. A host that turns it on must not wait for children of
    /// its own by pid at the same time. Default: off.
    void adopt_orphans(bool on) noexcept { adopt_orphans_ = on; }

    /// Creates the supervisor and the agent, held before exec. Errors: the program is not
    /// found or not executable (ENOENT, EACCES), the log or the slot cannot be created,
    /// fork fails.
    process_ref spawn(const spawn_request& r, std::error_code& ec) {
        ec.clear();
        detail_.clear();   // the detail describes this operation only
        if (!check_dirs(ec)) return {};
        auto pending = launch(r, ec);
        if (ec) return {};
        return await_hello(pending, ec);
    }

    /// spawn() of several agents at once: every supervisor is forked first, then their
    /// hellos are read, so the k supervisors fork and hold their agents in parallel (a daemon's
    /// pass spawns k agents this way). ecs[i] says how request i failed (its ref is then empty).
    std::vector<process_ref> spawn_many(const std::vector<spawn_request>& rs, std::vector<std::error_code>& ecs) {
        std::vector<process_ref> refs(rs.size());
        ecs.assign(rs.size(), {});
        pending_detail_.assign(rs.size(), {});
        detail_.clear();
        std::error_code dec;
        if (!check_dirs(dec)) {
            for (auto& e : ecs) e = dec;
            return refs;
        }
        std::vector<launched> pending(rs.size());
        for (std::size_t i = 0; i < rs.size(); ++i) {
            pending[i] = launch(rs[i], ecs[i]);
            if (ecs[i]) pending_detail_[i] = detail_;
        }
        for (std::size_t i = 0; i < rs.size(); ++i) {
            if (ecs[i]) continue;
            refs[i] = await_hello(pending[i], ecs[i]);
            if (ecs[i]) pending_detail_[i] = detail_;
        }
        return refs;
    }

    /// After spawn_many() or release_many(): why request i failed ("" if it did not).
    std::string_view detail_of(std::size_t i) const noexcept {
        return i < pending_detail_.size() ? std::string_view(pending_detail_[i]) : std::string_view();
    }

private:
    /// An agent held before exec, waiting for its go-ahead.
    struct held {
        detail::unique_fd ctl;   // one byte lets the agent exec; closing it abandons the agent
        detail::unique_fd err;   // the agent's errno if chdir or exec fails; EOF on exec
        std::string program;
        std::string cwd;
        std::string log;         // the task's log, which is told why the program did not run
    };

    /// A supervisor forked, its hello not yet read.
    struct launched {
        pid_t sup = -1;
        detail::unique_fd ctl;   // the caller's end of the control socket
        detail::unique_fd err;   // the read end of the agent's exec-error pipe
        std::string program;
        std::string cwd;
        std::string log;
    };


    /// Everything of spawn() up to the fork of the supervisor.
    launched launch(const spawn_request& r, std::error_code& ec) {
        ec.clear();
        if (auto e = validate_argv(r.argv)) return fail(ec, e, "invalid argv"), launched{};
        if (!valid_task_id(r.task_id)) return fail(ec, errc::invalid_task_id, "invalid task id"), launched{};
        const std::string log_path = log_dir_ + "/" + r.task_id + ".log";
        const std::string program = detail::resolve_program(r.argv.front(), ec);
        if (ec) return cannot_run(ec, ec, "cannot run \"" + r.argv.front() + "\"", log_path), launched{};
        // O_NONBLOCK: a FIFO planted as the log must not hang the spawn (the dispatcher holds
        // its lock); a hard link would send the agent's output into another file.
        auto log = detail::open_path(log_path, O_WRONLY | O_CREAT | O_APPEND | O_NOFOLLOW | O_NONBLOCK, 0600, ec);
        if (ec) return fail(ec, ec, "open " + log_path), launched{};
        {
            struct stat st{};
            if (::fstat(log.get(), &st) != 0) return fail(ec, detail::last_error(), "fstat " + log_path), launched{};
            if (!S_ISREG(st.st_mode) || st.st_nlink != 1 || !detail::is_private(st))
                return fail(ec, errc::unsafe_state, log_path + ": not a private regular file with one link"), launched{};
            if (::fcntl(log.get(), F_SETFL, O_WRONLY | O_APPEND) != 0)
                return fail(ec, detail::last_error(), "fcntl " + log_path), launched{};
        }
        auto null = detail::open_path("/dev/null", O_RDONLY, 0, ec);
        if (ec) return fail(ec, ec, "open /dev/null"), launched{};

        int ctl[2];
        if (::socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, ctl) != 0)
            return fail(ec, detail::last_error(), "socketpair"), launched{};
        detail::unique_fd ctl_parent(ctl[0]), ctl_child(ctl[1]);
        int err[2];
        if (::pipe2(err, O_CLOEXEC) != 0) return fail(ec, detail::last_error(), "pipe"), launched{};
        detail::unique_fd err_read(err[0]), err_write(err[1]);

        // Everything the supervisor and the agent need, built before fork: they must not allocate.
        plan pl;
        pl.program = program.c_str();
        for (const auto& a : r.argv) pl.argv.push_back(const_cast<char*>(a.c_str()));
        pl.argv.push_back(nullptr);
        const std::string task_env = "KUGETSU_TASK_ID=" + r.task_id;
        const std::string slot_env = "KUGETSU_SLOT_FD=" + std::to_string(slot_fd);
        for (char** e = environ; e && *e; ++e) {
            const std::string_view v(*e);
            if (v.substr(0, 16) != "KUGETSU_TASK_ID=" && v.substr(0, 16) != "KUGETSU_SLOT_FD=") pl.envp.push_back(*e);
        }
        pl.envp.push_back(const_cast<char*>(task_env.c_str()));
        pl.envp.push_back(const_cast<char*>(slot_env.c_str()));
        pl.envp.push_back(nullptr);
        for (const auto& a : on_exit_) pl.hook.push_back(const_cast<char*>(a.c_str()));
        pl.hook.push_back(nullptr);
        pl.hook_lock = on_exit_unless_locked_.empty() ? nullptr : on_exit_unless_locked_.c_str();
        pl.cwd = r.working_dir.empty() ? nullptr : r.working_dir.c_str();
        const std::string tmp = run_dir_ + "/.slot." + std::to_string(::getpid()) + "." + std::to_string(++counter_);
        pl.slot_tmp = tmp.c_str();
        pl.run_dir = run_dir_.c_str();
        std::string slot_buf(run_dir_.size() + 64, '\0');
        pl.slot_path = slot_buf.data();
        pl.timeout_ms = r.timeout ? std::max<std::int64_t>(1, (r.timeout->count() + 999) / 1000) : -1;
        pl.grace_ms = std::max<std::int64_t>(0, r.kill_grace.count() / 1000);
        pl.fds = {null.get(), log.get(), ctl_child.get(), err_write.get()};

        const pid_t sup = ::fork();
        if (sup < 0) return fail(ec, detail::last_error(), "fork"), launched{};
        if (sup == 0) supervise(pl);
        return {sup, std::move(ctl_parent), std::move(err_read), program, r.working_dir, log_path};
    }

    /// Reads a launched supervisor's hello: the agent is held.
    process_ref await_hello(launched& l, std::error_code& ec) {
        ec.clear();
        detail::supervisor_hello hello{};
        if (!detail::read_full(l.ctl.get(), &hello, sizeof hello) || !hello.ok) {
            int status = 0;
            detail::wait_for(l.sup, &status, 0);
            if (hello.error) return fail(ec, detail::errno_code(hello.error), "supervisor: slot in " + run_dir_), process_ref{};
            return fail(ec, errc::spawn_failed, "the supervisor died before the agent was held"), process_ref{};
        }
        process_ref ref{hello.pid, hello.start_time, detail::boot_id()};
        supervisors_[hello.pid] = l.sup;
        held_.emplace(hello.pid, held{std::move(l.ctl), std::move(l.err), std::move(l.program), std::move(l.cwd),
                                      std::move(l.log)});
        return ref;
    }

public:

    /// The log and run directories exist (made 0700 if missing), are directories and are
    /// private: whoever can write there could forge an exit status and free a slot. Checked
    /// by every spawn; a caller checks it first to refuse before it records anything.
    /// Errors: errc::unsafe_state (last_error_detail() names the directory and the test it
    /// failed: its owner or its mode), errno.
    bool check_dirs(std::error_code& ec) {
        ec.clear();
        for (const std::string* dir : {&log_dir_, &run_dir_}) {
            if (::mkdir(dir->c_str(), 0700) != 0 && errno != EEXIST)
                return fail(ec, detail::last_error(), "mkdir " + *dir), false;
            auto d = detail::open_path(*dir, O_RDONLY | O_DIRECTORY | O_NOFOLLOW, 0, ec);
            if (ec) return fail(ec, ec, *dir), false;
            struct stat st{};
            if (::fstat(d.get(), &st) != 0) return fail(ec, detail::last_error(), "fstat " + *dir), false;
            if (auto why = detail::why_not_private(st); !why.empty()) {
                ec = errc::unsafe_state;
                detail_ = *dir + ": " + why + " (kugetsu refuses it: whoever may write there could forge an agent's end)";
                return false;
            }
        }
        return true;
    }

    /// Lets a held agent exec. Errors: exec or chdir failed (errno, e.g. ENOENT, EACCES,
    /// ENOEXEC). errc::not_held: no such held agent.
    void release(const process_ref& p, std::error_code& ec) {
        ec.clear();
        detail_.clear();   // the detail describes this operation only
        auto it = held_.find(p.pid);
        if (it == held_.end()) return fail(ec, errc::not_held, "release");
        held h = std::move(it->second);
        held_.erase(it);
        go_ahead(h);
        exec_result(p, h, ec);
    }

    /// release() of several agents at once: every go-ahead is sent first, then each exec's
    /// outcome is read, so the agents exec in parallel. ecs[i] as release()'s ec for refs[i].
    void release_many(const std::vector<process_ref>& refs, std::vector<std::error_code>& ecs) {
        ecs.assign(refs.size(), {});
        pending_detail_.assign(refs.size(), {});
        detail_.clear();
        std::vector<std::optional<held>> hs(refs.size());
        for (std::size_t i = 0; i < refs.size(); ++i) {
            auto it = held_.find(refs[i].pid);
            if (it == held_.end()) {
                fail(ecs[i], errc::not_held, "release");
                pending_detail_[i] = detail_;
                continue;
            }
            hs[i].emplace(std::move(it->second));
            held_.erase(it);
            go_ahead(*hs[i]);
        }
        for (std::size_t i = 0; i < refs.size(); ++i) {
            if (!hs[i]) continue;
            exec_result(refs[i], *hs[i], ecs[i]);
            if (ecs[i]) pending_detail_[i] = detail_;
        }
    }

private:
    static void go_ahead(held& h) noexcept {
        const char go = 'g';
        for (;;) {
            if (::send(h.ctl.get(), &go, 1, MSG_NOSIGNAL) >= 0 || errno != EINTR) break;
        }
    }

    /// Reads the agent's exec outcome after its go-ahead: end-of-file = it exec'd.
    void exec_result(const process_ref& p, held& h, std::error_code& ec) {
        detail::child_failure f{};
        std::size_t got = 0;
        while (got < sizeof f) {
            const ssize_t n = detail::sys().read(h.err.get(), reinterpret_cast<char*>(&f) + got, sizeof f - got);
            if (n < 0 && errno == EINTR) continue;
            if (n <= 0) break;
            got += static_cast<std::size_t>(n);
        }
        if (got == 0) return;   // the pipe closed on exec: the program runs
        // The program never ran: its slot stays, with its noexec record (poll() says never_ran),
        // until forget(). Wait for the supervisor, so that the agent is reaped when this returns.
        wait_supervisor(p.pid);
        if (got != sizeof f) return fail(ec, errc::spawn_failed, "the agent died before exec");
        if (f.step == 3) return fail(ec, errc::spawn_failed, "the supervisor died before the agent could start");
        if (f.step == 5) return fail(ec, detail::errno_code(f.error), "write the slot of the agent");
        cannot_run(ec, detail::errno_code(f.error), f.step == 1 ? "chdir \"" + h.cwd + "\"" : "exec \"" + h.program + "\"",
                   h.log);
    }

    /// The program cannot be run (not found, not executable, its directory missing): the
    /// attempt fails, and the task's log says why (`kugetsu logs` shows it beside the record's
    /// last_error). When the cause is in the file system, the reason says that another attempt
    /// fails the same way unless it changes: the attempt is still counted.
    void cannot_run(std::error_code& ec, std::error_code e, const std::string& what, const std::string& log) {
        fail(ec, e, what);
        if (e == std::errc::no_such_file_or_directory || e == std::errc::permission_denied ||
            e == std::errc::executable_format_error || e == std::errc::not_a_directory)
            detail_ += " (a retry fails the same way until that is fixed)";
        note_in_log(log, detail_);
    }

    /// Appends "kugetsu: LINE" to a task's log. Best effort (the record says it anyway): a log
    /// that cannot be opened, or is not a private regular file with one link, is left alone.
    static void note_in_log(const std::string& path, const std::string& line) noexcept {
        const int fd = ::open(path.c_str(), O_WRONLY | O_CREAT | O_APPEND | O_NOFOLLOW | O_NONBLOCK | O_CLOEXEC, 0600);
        if (fd < 0) return;
        struct stat st{};
        if (::fstat(fd, &st) == 0 && S_ISREG(st.st_mode) && st.st_nlink == 1 && detail::is_private(st)) {
            char buf[1024];
            int n = std::snprintf(buf, sizeof buf, "kugetsu: %s\n", line.c_str());
            if (n >= static_cast<int>(sizeof buf)) {   // cut, and still one whole line
                n = static_cast<int>(sizeof buf) - 1;
                buf[n - 1] = '\n';
            }
            if (n > 0) detail::write_full(fd, buf, static_cast<std::size_t>(n));
        }
        ::close(fd);
    }

public:

    /// Discards a held agent: it exits without running the program. Its slot stays, saying
    /// `noexec` (poll() answers never_ran), until forget() or a sweep() that finds no session
    /// naming it: a caller may abandon an agent whose session a failed commit made visible
    /// all the same (its fsync failed after COMMIT), and that session must then find it never
    /// ran, not an unknown end.
    void abandon(const process_ref& p) noexcept {
        auto it = held_.find(p.pid);
        if (it == held_.end()) return;
        const char a = 'a';
        while (::send(it->second.ctl.get(), &a, 1, MSG_NOSIGNAL | MSG_DONTWAIT) < 0 && errno == EINTR) {}
        held_.erase(it);   // closes the control socket and the error pipe
        wait_supervisor(p.pid);
    }

    /// Never blocks. See the header comment for how liveness is decided.
    process_status poll(const process_ref& p, std::error_code& ec) {
        ec.clear();
        detail_.clear();   // the detail describes this operation only
        reap();
        if (!p) return {process_state::gone, -1};
        if (held_.count(p.pid)) return {process_state::running, -1};
        if (p.boot_id != detail::boot_id()) return {process_state::gone, -1};
        return status_of(p, /*block=*/false, ec);
    }

    /// Blocks until the agent's end is recorded (its slot released), then answers as poll().
    process_status wait(const process_ref& p, std::error_code& ec) {
        ec.clear();
        detail_.clear();   // the detail describes this operation only
        if (!p || held_.count(p.pid)) return poll(p, ec);
        if (p.boot_id != detail::boot_id()) return {process_state::gone, -1};
        reap();
        auto st = status_of(p, /*block=*/true, ec);
        reap();
        return st;
    }

    /// Removes the agent's slot file once its end (or that it never ran) is recorded.
    void forget(const process_ref& p) noexcept {
        reap();
        if (!p || held_.count(p.pid)) return;
        try {
            ::unlink(slot_path(p).c_str());
        } catch (...) {
        }
    }

    /// Removes from RUN_DIR every slot file <pid>-<start>.slot that no ref in `referenced`
    /// names (pid and start time) and whose flock is free (its supervisor and its agent are
    /// both dead), and every temporary slot .slot.<pid>.<n> that is free and was last written
    /// more than 10 s ago (a younger one may be between its creation and its flock). Skips
    /// anything that is not a private regular file with one link, never follows a symlink,
    /// ignores errors. One readdir; a free slot costs an open, an flock and an unlink.
    void sweep(const std::vector<process_ref>& referenced) noexcept {
        reap();
        try {
            sweep_run_dir(referenced);
        } catch (...) {   // out of memory: the next sweep
        }
    }

    /// Signals the agent's process group; nothing if p no longer denotes that process.
    void signal(const process_ref& p, stop_signal s, std::error_code& ec) {
        ec.clear();
        detail_.clear();   // the detail describes this operation only
        if (!p || held_.count(p.pid)) return;
        const int sig = s == stop_signal::kill ? SIGKILL : SIGTERM;
        // Hold a pidfd while checking the identity, so the check and the kill are about the
        // same process (a zombie also keeps its pid until it is reaped).
        detail::unique_fd pidfd(static_cast<int>(::syscall(SYS_pidfd_open, p.pid, 0)));
        if (!pidfd && errno == ESRCH) return;
        if (p.boot_id != detail::boot_id()) return;
        auto st = detail::read_proc_stat(p.pid, ec);
        if (ec || !st || st->start_time != p.start_time) return;
        if (::kill(-p.pid, sig) != 0) {
            if (errno != ESRCH) return fail(ec, detail::last_error(), "kill");
            if (pidfd) ::syscall(SYS_pidfd_send_signal, pidfd.get(), sig, nullptr, 0);
            else ::kill(p.pid, sig);
        }
    }

    /// The calling process.
    process_ref self() {
        const int pid = ::getpid();
        if (self_.pid != pid) {
            std::error_code ec;
            auto st = detail::read_proc_stat(pid, ec);
            self_ = {pid, st ? st->start_time : 0, detail::boot_id()};
        }
        return self_;
    }

    /// RUN_DIR/<pid>-<start time>.slot: where the agent p's slot is.
    std::string slot_path(const process_ref& p) const {
        return run_dir_ + "/" + std::to_string(p.pid) + "-" + std::to_string(p.start_time) + ".slot";
    }
    const std::string& log_dir() const noexcept { return log_dir_; }
    const std::string& run_dir() const noexcept { return run_dir_; }
    /// After a failure: which step failed and on what.
    const std::string& last_error_detail() const noexcept { return detail_; }

private:

    struct plan {
        const char* program = nullptr;
        std::vector<char*> argv, envp, hook;
        const char* hook_lock = nullptr;
        const char* cwd = nullptr;
        const char* slot_tmp = nullptr;
        const char* run_dir = nullptr;
        char* slot_path = nullptr;
        std::int64_t timeout_ms = -1;
        std::int64_t grace_ms = 0;
        struct { int null_fd, log, ctl, err; } fds{};
    };

    process_status status_of(const process_ref& p, bool block, std::error_code& ec) {
        const std::string path = slot_path(p);
        detail::unique_fd fd = detail::open_path(path, O_RDONLY | O_NOFOLLOW | O_NONBLOCK, 0, ec);
        if (ec) {
            if (ec != std::errc::no_such_file_or_directory) return {process_state::running, -1};   // doubt: keep the slot
            ec.clear();
            return identity(p, block, ec);   // no slot (removed, or not ours): identity only
        }
        // A slot someone else could write may hold a forged status: trust it for nothing.
        if ((ec = detail::check_private(fd.get()))) {
            fail(ec, ec, path);
            return {process_state::running, -1};
        }
        for (;;) {
            if (::flock(fd.get(), LOCK_SH | (block ? 0 : LOCK_NB)) == 0) break;
            if (errno == EINTR) continue;
            if (errno == EWOULDBLOCK) {
                // Alive. Still "held" (or "noexec": exiting) in its record: not released, and,
                // seen by another process than its caller, never to be (its caller died).
                const auto rec = detail::read_slot_record(fd.get());
                process_status st{process_state::running, -1};
                st.held = rec.what == detail::slot_record::kind::held || rec.what == detail::slot_record::kind::noexec;
                return st;
            }
            ec = detail::last_error();
            return {process_state::running, -1};
        }
        const auto rec = detail::read_slot_record(fd.get());
        switch (rec.what) {
        case detail::slot_record::kind::exited:
            return exited(rec);
        case detail::slot_record::kind::held:
        case detail::slot_record::kind::noexec: {
            // Alive, the agent would hold the lock: it is dead, and never ran the program.
            // (Checked all the same: never_ran gives the task to another attempt.)
            const auto l = probe(p, ec);
            if (l.what == liveness::unknown || l.what == liveness::alive) return {process_state::running, -1};
            return {process_state::never_ran, -1};
        }
        case detail::slot_record::kind::exec:
            return after_exec(p, fd.get(), block, ec);
        case detail::slot_record::kind::none:
            break;
        }
        // Empty (a kugetsu 0.1 supervisor died before writing), or unreadable: identity only.
        fd.reset();
        return identity(p, block, ec);
    }

    static process_status exited(const detail::slot_record& rec) {
        return {process_state::exited, rec.exit_code, rec.timed_out, rec.at};
    }

    struct liveness {
        enum { alive, zombie, dead, unknown } what;
        int ppid = 0;   // zombie: its parent
    };

    /// Whether the process p is alive, a zombie (ended, not yet reaped), dead (or another
    /// process now), or unknown (ec: /proc cannot be read).
    static liveness probe(const process_ref& p, std::error_code& ec) {
        auto st = detail::read_proc_stat(p.pid, ec);
        if (ec) return {liveness::unknown};
        if (!st || st->start_time != p.start_time || st->state == 'X') return {liveness::dead};
        if (st->state == 'Z') return {liveness::zombie, st->ppid};
        return {liveness::alive};
    }

    /// Blocks until the process p has ended (it may then be a zombie), if pidfd_open works.
    static void await_end(const process_ref& p) {
        detail::unique_fd pidfd(static_cast<int>(::syscall(SYS_pidfd_open, p.pid, 0)));
        if (!pidfd) return;
        std::error_code ec;
        auto st = detail::read_proc_stat(p.pid, ec);
        if (ec || !st || st->start_time != p.start_time) return;
        pollfd pf{pidfd.get(), POLLIN, 0};
        while (::poll(&pf, 1, -1) < 0 && errno == EINTR) {}
    }

    /// No usable record (no slot, an empty one): running while p is alive, else gone. A
    /// zombie here is not our child (the supervisor that was its parent is gone): it has
    /// ended, and its new parent reaps it.
    static process_status identity(const process_ref& p, bool block, std::error_code& ec) {
        if (block) await_end(p);
        const auto l = probe(p, ec);
        // Alive, or doubt (/proc unreadable): never free a slot.
        if (l.what == liveness::unknown || l.what == liveness::alive) return {process_state::running, -1};
        return {process_state::gone, -1};
    }

    /// The agent exec'd, and its supervisor died before writing its end (the lock is free and
    /// the record is still "exec", read through fd, held shared).
    process_status after_exec(const process_ref& p, int fd, bool block, std::error_code& ec) {
        for (;;) {
            if (block) await_end(p);
            const auto l = probe(p, ec);
            if (l.what == liveness::unknown) return {process_state::running, -1};
            if (l.what == liveness::alive && !block) return {process_state::running, -1};
            // Its record says "exec": the program ran, whatever its end.
            process_status ran_gone{process_state::gone, -1};
            ran_gone.ran = true;
            if (l.what == liveness::dead) {
                // Reaped: a subreaper that records ends wrote its record before it reaped it.
                const auto rec = detail::read_slot_record(fd);
                if (rec.what == detail::slot_record::kind::exited) return exited(rec);
                return ran_gone;
            }
            if (l.what == liveness::zombie) {
                if (l.ppid == ::getpid()) {
                    // Ours: with adopt_orphans, record it and reap it now; else nobody will.
                    if (adopt_orphans_) reap();
                    const auto rec = detail::read_slot_record(fd);
                    if (rec.what == detail::slot_record::kind::exited) return exited(rec);
                    return ran_gone;
                }
                // Init reaps it and its exit code is lost (0: a parent outside our pid namespace).
                if (l.ppid <= 1) return ran_gone;
                // Another live process is its parent: a child subreaper (a kugetsu daemon, which
                // records the end before it reaps it). Not reaped yet: it holds its slot.
                if (!block) return {process_state::running, -1};
            }
            // wait(): the record comes before the reaping; look again shortly (or no pidfd).
            const auto rec = detail::read_slot_record(fd);
            if (rec.what == detail::slot_record::kind::exited) return exited(rec);
            timespec ts{0, 5 * 1000 * 1000};
            ::nanosleep(&ts, nullptr);
        }
    }

    /// Blocks until the supervisor of `agent` has exited (it is about to: the agent never ran).
    /// Returns at once if it has been reaped already.
    void wait_supervisor(int agent) noexcept {
        if (auto s = supervisors_.find(agent); s != supervisors_.end()) {
            int status = 0;
            detail::wait_for(s->second, &status, 0);
            supervisors_.erase(s);
        }
    }

    /// Reaps the supervisors that have exited, and with adopt_orphans every child.
    void reap() noexcept {
        if (adopt_orphans_) reap_children();
        else reap_supervisors();
    }

    void reap_supervisors() noexcept {
        for (auto it = supervisors_.begin(); it != supervisors_.end();) {
            if (held_.count(it->first)) {
                ++it;
                continue;
            }
            int status = 0;
            const pid_t r = detail::wait_for(it->second, &status, WNOHANG);
            if (r == 0) ++it;
            else it = supervisors_.erase(it);   // reaped, or ECHILD (SIGCHLD ignored)
        }
    }

    /// Every zombie child, peeked at (WNOWAIT) then reaped: a supervisor (held ones too:
    /// wait_supervisor then returns at once), or an orphan, whose end is recorded first.
    void reap_children() noexcept {
        for (int guard = 0; guard < 65536; ++guard) {
            siginfo_t si{};
            if (::waitid(P_ALL, 0, &si, WEXITED | WNOHANG | WNOWAIT) != 0) {
                if (errno == EINTR) continue;
                return;   // ECHILD: no children
            }
            const int pid = si.si_pid;
            if (pid <= 0) return;   // none has exited
            const auto sup = std::find_if(supervisors_.begin(), supervisors_.end(),
                                          [&](const auto& s) { return s.second == pid; });
            if (sup != supervisors_.end()) {
                supervisors_.erase(sup);
            } else {
                const int code = si.si_code == CLD_EXITED ? si.si_status : 128 + si.si_status;
                record_orphan(pid, code);
            }
            int status = 0;
            if (detail::wait_for(pid, &status, WNOHANG) <= 0) return;   // someone else reaped it
        }
    }

    /// An orphan `pid` (a zombie child, not a supervisor) ended with `code`: if it is an agent
    /// whose slot says it exec'd, writes its exit record (end time: now). Does not wait for
    /// the lock, which a descendant of the agent may hold (readers read once it is free); takes
    /// it if it is free, so that no reader sees half a record.
    void record_orphan(int pid, int code) noexcept {
        try {
            std::error_code ec;
            auto st = detail::read_proc_stat(pid, ec);   // readable while it is a zombie
            if (ec || !st) return;
            const std::string path = slot_path(process_ref{pid, st->start_time, {}});
            auto fd = detail::open_path(path, O_RDWR | O_NOFOLLOW | O_NONBLOCK, 0, ec);
            if (ec) return;   // no slot: not an agent (a grandchild of one, say)
            struct stat sb{};
            if (::fstat(fd.get(), &sb) != 0 || !S_ISREG(sb.st_mode) || sb.st_nlink != 1 || !detail::is_private(sb))
                return;
            // held, noexec: it never ran, and says so; exited: recorded; none: not ours to write.
            if (detail::read_slot_record(fd.get()).what != detail::slot_record::kind::exec) return;
            ::flock(fd.get(), LOCK_EX | LOCK_NB);
            char rec[64];
            detail::put_record(fd.get(), rec, detail::exit_record(rec, code, false, detail::realtime_us()));
        } catch (...) {   // out of memory: the end is gone
        }
    }

    void sweep_run_dir(const std::vector<process_ref>& referenced) {
        std::error_code ec;
        auto dirfd = detail::open_path(run_dir_, O_RDONLY | O_DIRECTORY | O_NOFOLLOW, 0, ec);
        if (ec || detail::check_private(dirfd.get())) return;
        const int dfd = ::fcntl(dirfd.get(), F_DUPFD_CLOEXEC, 0);   // fdopendir takes it
        if (dfd < 0) return;
        DIR* dir = ::fdopendir(dfd);
        if (!dir) {
            ::close(dfd);
            return;
        }
        detail::scope_exit close_dir([&] { ::closedir(dir); });
        timespec now{};
        ::clock_gettime(CLOCK_REALTIME, &now);
        for (dirent* de; (de = ::readdir(dir)) != nullptr;) {
            const std::string_view name(de->d_name);
            int pid = 0;
            std::uint64_t start = 0;
            bool temp = false;
            if (parse_slot_name(name, pid, start)) {
                if (std::any_of(referenced.begin(), referenced.end(),
                                [&](const process_ref& r) { return r.pid == pid && r.start_time == start; }))
                    continue;
            } else if (is_temp_slot_name(name)) {
                temp = true;
            } else {
                continue;
            }
            struct stat st{};
            if (::fstatat(dirfd.get(), de->d_name, &st, AT_SYMLINK_NOFOLLOW) != 0) continue;
            if (!S_ISREG(st.st_mode) || st.st_nlink != 1 || !detail::is_private(st)) continue;
            if (temp && st.st_mtim.tv_sec + 10 > now.tv_sec) continue;   // may be about to be locked
            detail::unique_fd fd = detail::open_at(dirfd.get(), de->d_name, O_RDONLY | O_NOFOLLOW | O_NONBLOCK, 0, ec);
            if (ec) continue;
            struct stat fs{};
            if (::fstat(fd.get(), &fs) != 0 || fs.st_dev != st.st_dev || fs.st_ino != st.st_ino) continue;
            if (::flock(fd.get(), LOCK_EX | LOCK_NB) != 0) continue;   // held: someone is alive
            // Still the file we locked under that name (not replaced meanwhile)?
            struct stat again{};
            if (::fstatat(dirfd.get(), de->d_name, &again, AT_SYMLINK_NOFOLLOW) != 0 || again.st_dev != fs.st_dev ||
                again.st_ino != fs.st_ino)
                continue;
            ::unlinkat(dirfd.get(), de->d_name, 0);
        }
    }

    /// "<pid>-<start time>.slot", both decimal.
    static bool parse_slot_name(std::string_view name, int& pid, std::uint64_t& start) noexcept {
        constexpr std::string_view ext = ".slot";
        if (name.size() <= ext.size() || name.substr(name.size() - ext.size()) != ext) return false;
        name.remove_suffix(ext.size());
        const auto dash = name.find('-');
        if (dash == std::string_view::npos) return false;
        std::uint64_t p = 0;
        if (!digits(name.substr(0, dash), 10, p) || p == 0 || p > 0x7fffffff) return false;
        if (!digits(name.substr(dash + 1), 20, start)) return false;
        pid = static_cast<int>(p);
        return true;
    }

    /// ".slot.<pid>.<n>", as spawn() names a slot before its supervisor renames it.
    static bool is_temp_slot_name(std::string_view name) noexcept {
        constexpr std::string_view head = ".slot.";
        if (name.substr(0, head.size()) != head) return false;
        name.remove_prefix(head.size());
        const auto dot = name.find('.');
        std::uint64_t v = 0;
        return dot != std::string_view::npos && digits(name.substr(0, dot), 10, v) && digits(name.substr(dot + 1), 20, v);
    }

    static bool digits(std::string_view s, std::size_t max, std::uint64_t& v) noexcept {
        if (s.empty() || s.size() > max) return false;
        v = 0;
        for (char c : s) {
            if (c < '0' || c > '9') return false;
            const std::uint64_t d = static_cast<std::uint64_t>(c - '0');
            if (v > (~std::uint64_t{0} - d) / 10) return false;
            v = v * 10 + d;
        }
        return true;
    }

    /// The supervisor. Async-signal-safe calls only.
    [[noreturn]] static void supervise(const plan& pl) noexcept {
        // Its own session: a terminal's ^C or hangup reaches neither it nor the agent.
        ::setsid();
        // Keep exactly: 0 /dev/null, 1 and 2 the log, 3 the control socket, 4 the error pipe.
        // Everything else is closed now (the dispatcher's lock among it), not merely at exec:
        // the supervisor never execs the agent itself.
        const int src[4] = {pl.fds.null_fd, pl.fds.log, pl.fds.ctl, pl.fds.err};
        int high[4];
        for (int i = 0; i < 4; ++i)
            if ((high[i] = ::fcntl(src[i], F_DUPFD_CLOEXEC, 16)) < 0) ::_exit(127);
        if (::dup2(high[0], 0) < 0 || ::dup2(high[1], 1) < 0 || ::dup2(high[1], 2) < 0 ||
            ::dup3(high[2], 3, O_CLOEXEC) < 0 || ::dup3(high[3], 4, O_CLOEXEC) < 0)
            ::_exit(127);
        if (::syscall(SYS_close_range, 5u, ~0u, 0u) != 0)
            for (int fd = 5; fd < 65536; ++fd) ::close(fd);
        const int ctl = 3, err = 4;
        struct sigaction act{};
        act.sa_handler = SIG_DFL;
        for (int s = 1; s < NSIG; ++s) ::sigaction(s, &act, nullptr);
        act.sa_handler = SIG_IGN;
        static constexpr int ignored[] = {SIGPIPE, SIGHUP, SIGINT, SIGQUIT, SIGTSTP, SIGTTIN, SIGTTOU};
        for (int s : ignored) ::sigaction(s, &act, nullptr);
        sigset_t none;
        ::sigemptyset(&none);
        ::sigprocmask(SIG_SETMASK, &none, nullptr);

        detail::supervisor_hello hello{};
        auto setup_failed = [&](int e) {
            hello.error = e;
            detail::write_full(ctl, &hello, sizeof hello);
            ::_exit(127);
        };
        // The slot: created and locked before the agent exists, so the agent inherits the lock.
        // O_EXCL: a file or link planted under this name is never written (the spawn fails
        // and the next attempt takes the next name).
        int slot = ::open(pl.slot_tmp, O_RDWR | O_CREAT | O_EXCL | O_CLOEXEC | O_NOFOLLOW, 0600);
        if (slot < 0) setup_failed(errno);
        if (slot != fork_spawner::slot_fd) {
            if (::dup3(slot, fork_spawner::slot_fd, O_CLOEXEC) < 0) setup_failed(errno);
            ::close(slot);
            slot = fork_spawner::slot_fd;
        }
        while (::flock(slot, LOCK_EX) != 0)
            if (errno != EINTR) {
                const int saved = errno;
                ::unlink(pl.slot_tmp);
                setup_failed(saved);
            }
        // A v2 slot is never empty: "held" until the agent writes what it did.
        errno = 0;
        if (!detail::put_record(slot, detail::held_record, sizeof detail::held_record - 1)) {
            const int saved = errno ? errno : EIO;
            ::unlink(pl.slot_tmp);
            setup_failed(saved);
        }
        // sync: the agent's exec failure, to the supervisor. It is also how a held agent learns
        // that its supervisor died: its write end polls POLLERR once no reader is left.
        int sync[2];
        if (::pipe2(sync, O_CLOEXEC) != 0) setup_failed(errno);

        const pid_t agent = ::fork();
        if (agent < 0) {
            ::unlink(pl.slot_tmp);
            setup_failed(errno);
        }
        if (agent == 0) {
            // The agent keeps the control socket (3, close-on-exec) while it is held: the
            // caller's word comes to it directly (no relay through the supervisor): 'g' lets it
            // exec, 'a' abandons it, and end-of-file without a byte means the caller died.
            ::close(sync[0]);
            ::setpgid(0, 0);
            // Its dispositions are the supervisor's: SIG_DFL for every signal but the ignored
            // ones, so no handler can run here. Those stay ignored while it is held (SIGPIPE
            // among them: a report to a reader that died must not kill it) and are reset to
            // SIG_DFL just before exec.
            ::fcntl(slot, F_SETFD, 0);   // the agent holds its slot across exec
            // The program never runs: the slot says so first (its last word, which replaces
            // "held" or "exec"), then the supervisor and the caller are told why.
            auto report = [&](int step) {
                const detail::child_failure f{step, errno};
                act.sa_handler = SIG_IGN;
                ::sigaction(SIGPIPE, &act, nullptr);
                detail::put_record(slot, detail::noexec_record, sizeof detail::noexec_record - 1);
                detail::write_full(sync[1], &f, sizeof f);
                detail::write_full(err, &f, sizeof f);
                ::_exit(127);
            };
            if (pl.cwd && ::chdir(pl.cwd) != 0) report(1);
            // Abandoned, or the caller or the supervisor died: the program never runs.
            const detail::go_ahead word = detail::await_go_ahead(ctl, sync[1]);
            if (word != detail::go_ahead::go) {
                errno = ECONNABORTED;
                report(word == detail::go_ahead::abandoned ? 4 : 3);
            }
            // The slot says "exec" before the program can run (or no exec: a slot saying
            // "held" must never outlive a program that ran); then the supervisor is told that
            // the exec comes: end-of-file without that means the agent died while held.
            char rec[64];
            errno = 0;
            if (!detail::put_record(slot, rec, detail::exec_record(rec, detail::realtime_us()))) {
                if (errno == 0) errno = EIO;
                report(5);
            }
            const detail::child_failure go_ahead{0, 0};
            if (!detail::write_full(sync[1], &go_ahead, sizeof go_ahead)) {
                errno = ECONNABORTED;
                report(3);
            }
            act.sa_handler = SIG_DFL;
            for (int s : ignored) ::sigaction(s, &act, nullptr);
            ::execve(pl.program, pl.argv.data(), pl.envp.data());
            report(2);
        }
        ::setpgid(agent, agent);   // also here, so the group exists before anyone signals it
        ::close(sync[1]);
        ::close(err);              // the caller's read end sees EOF once the agent has exec'd
        hello.pid = agent;
        hello.start_time = detail::start_time_of(agent);
        char* e = detail::put_str(pl.slot_path, pl.run_dir);
        e = detail::put_str(e, "/");
        e = detail::put_uint(e, static_cast<std::uint64_t>(agent));
        e = detail::put_str(e, "-");
        e = detail::put_uint(e, hello.start_time);
        e = detail::put_str(e, ".slot");
        *e = '\0';
        auto drop_agent = [&] {
            // Held, so it has not exec'd (the caller sends the go-ahead only after a hello):
            // the program never runs.
            ::kill(agent, SIGKILL);
            int status;
            detail::wait_for(agent, &status, 0);
        };
        if (hello.start_time == 0 || ::rename(pl.slot_tmp, pl.slot_path) != 0) {
            const int saved = hello.start_time == 0 ? ESRCH : errno;
            drop_agent();
            ::unlink(pl.slot_tmp);
            setup_failed(saved);
        }
        hello.ok = 1;
        if (!detail::write_full(ctl, &hello, sizeof hello)) {
            drop_agent();   // the caller died
            ::unlink(pl.slot_path);
            ::_exit(0);
        }
        ::close(ctl);   // from here on the agent alone listens to the caller
        // The agent says "about to exec" once it has the go-ahead, then its exec succeeds
        // (end-of-file: sync closes on exec) or it reports why it did not run: chdir or exec
        // failed, it was abandoned ('a'), or the caller died (end-of-file on the control
        // socket). End-of-file without "about to exec": it died while held (a signal).
        bool exec_comes = false, abandoned = false;
        for (detail::child_failure m{}; detail::read_full(sync[0], &m, sizeof m);) {
            if (m.step == 0) {
                exec_comes = true;
                continue;
            }
            exec_comes = false;   // the program never ran
            abandoned = m.step == 4;
            break;
        }
        if (!exec_comes) {
            // The caller learns why through its own pipe; there is no end to record and no hook
            // to run (a caller in abandon() waits for this process). The slot stays, saying
            // "noexec" (or "held": killed while held), for whoever committed a session naming
            // the agent: its reap answers never_ran, then forget() (or sweep()) removes it. So
            // does an abandoned one: its session may be visible after all (a commit reported
            // failed after COMMIT: its fsync failed).
            int status;
            detail::wait_for(agent, &status, 0);
            (void)abandoned;
            ::_exit(0);
        }
        ::close(sync[0]);

        // Supervise: wait for the agent, enforcing the timeout. Its end is stamped when seen.
        // It is reaped only once its exit record is written: killed in between, this process
        // leaves a zombie whose code a subreaper (a daemon) still records (record_orphan).
        int code = -1;
        bool timed_out = false;
        std::int64_t ended_us = 0;
        const int pidfd = static_cast<int>(::syscall(SYS_pidfd_open, agent, 0));
        std::int64_t deadline = pl.timeout_ms >= 0 ? detail::monotonic_ms() + pl.timeout_ms : -1;
        bool term_sent = false;
        for (;;) {
            if (pidfd < 0 || deadline < 0) {
                code = detail::peek_exit_code(agent);
                ended_us = detail::realtime_us();
                break;
            }
            const std::int64_t left = std::max<std::int64_t>(0, deadline - detail::monotonic_ms());
            pollfd pf{pidfd, POLLIN, 0};
            const int r = ::poll(&pf, 1, static_cast<int>(std::min<std::int64_t>(left, 1 << 30)));
            if (r < 0 && errno == EINTR) continue;
            if (r > 0) {
                ended_us = detail::realtime_us();
                code = detail::peek_exit_code(agent);
                break;
            }
            if (r == 0 && detail::monotonic_ms() >= deadline) {
                if (!term_sent) {
                    ::kill(-agent, SIGTERM);
                    term_sent = timed_out = true;
                    deadline = detail::monotonic_ms() + pl.grace_ms;
                } else {
                    ::kill(-agent, SIGKILL);
                    deadline = -1;
                }
            }
        }
        // The exit record goes into the slot before the lock is let go, and before the reaping.
        char rec[64];
        detail::put_record(slot, rec, detail::exit_record(rec, code, timed_out, ended_us));
        int status = 0;
        detail::wait_for(agent, &status, 0);
        if (pl.hook.size() > 1) {
            // A daemon holds the lock: it records the end itself.
            if (!pl.hook_lock || !daemon_running(pl.hook_lock)) {
                ::close(slot);   // released before the hook records the end
                ::execve(pl.hook[0], pl.hook.data(), pl.envp.data());
            }
        }
        ::_exit(0);
    }

    void fail(std::error_code& ec, std::error_code e, const std::string& what) {
        ec = e;
        detail_ = what + ": " + e.message();
    }

    void abandon_all() noexcept {
        while (!held_.empty()) {
            const int pid = held_.begin()->first;
            abandon(process_ref{pid, 0, {}});
        }
    }

    std::string log_dir_;
    std::string run_dir_;
    std::vector<std::string> on_exit_;
    std::string on_exit_unless_locked_;
    bool adopt_orphans_ = false;       // the host is a child subreaper: reap (and record) orphans
    std::map<int, held> held_;
    std::map<int, int> supervisors_;   // agent pid -> supervisor pid (our children)
    process_ref self_;
    std::uint64_t counter_ = 0;
    std::string detail_;
    std::vector<std::string> pending_detail_;   // spawn_many / release_many: per request
};

static_assert(kugetsu::spawner<fork_spawner>);
static_assert(kugetsu::spawner_with_forget<fork_spawner> && kugetsu::spawner_with_sweep<fork_spawner> &&
              kugetsu::spawner_with_batches<fork_spawner> && kugetsu::with_error_detail<fork_spawner>);

} // namespace kugetsu
