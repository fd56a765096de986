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
// start time, sent once the slot is in place). release() sends the go-ahead byte through the
// same control socket, which the held agent reads itself (the supervisor closes its copy
// after the hello), and returns when the error pipe closes on exec: two process wake-ups in
// all, and no polling interval. The supervisor learns the agent's fate from its own pipe:
// "about to exec" then end-of-file (exec'd), or a report of why the program never ran, or
// end-of-file alone (killed while held): it records an end and runs the on-exit command only
// for an agent that exec'd.
//
// THE SLOT FILE. The supervisor creates RUN_DIR/<agent pid>-<agent start time>.slot and takes
// an exclusive flock on it before the agent is forked; the agent inherits that open file (as
// descriptor 5, KUGETSU_SLOT_FD=5), so the lock is held exactly while the supervisor or the
// agent (or a descendant that keeps the descriptor) is alive, and the kernel releases it when
// the last of them dies, however it dies. When the agent ends, the supervisor reaps it and
// writes its exit status into the file before it lets go. So poll() from ANY process answers:
//   lock held                                   -> running (also: a zombie not yet reaped)
//   lock free, exit status written              -> exited, with the code (and timed_out)
//   lock free, no status (supervisor killed)    -> running while the agent's identity
//                                                  (pid, start time, boot id) is alive, else gone
// The slot file's last close is an inotify IN_CLOSE_WRITE on RUN_DIR: a daemon wakes on it.
//
// TIMEOUTS. With spawn_request::timeout set, the supervisor itself sends SIGTERM to the
// agent's process group at the deadline (counted from release()) and SIGKILL kill_grace
// later, and records timed_out: timeouts hold even if no kugetsu process is left.
//
// ON EXIT. After writing the status, the supervisor can exec a command (set_on_exit), such as
// `kugetsu reap`, so that the end is recorded in the store at once even with no daemon
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
// Supervisors that are the caller's children are reaped by poll(), wait() and forget().
//
// Not thread-safe: one fork_spawner per thread (as with the dispatcher that owns it).
#pragma once

#include <algorithm>
#include <cerrno>
#include <csignal>
#include <cstdint>
#include <cstdlib>
#include <ctime>
#include <map>
#include <string>
#include <utility>
#include <vector>

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
    int step;   // 0 = about to exec, 1 = chdir, 2 = exec, 3 = no go-ahead (abandoned, or the caller or the supervisor died)
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

/// A held agent waits here for the caller's go-ahead: one byte on the control socket `ctl`.
/// False if the caller closed its end (abandoned the agent, or died) or if the supervisor died:
/// `supervisor` is the write end of a pipe only the supervisor reads, which polls POLLERR once
/// no reader is left. Checked again after the byte, so that an agent whose supervisor is
/// already gone does not start. Async-signal-safe.
inline bool await_go_ahead(int ctl, int supervisor) noexcept {
    constexpr short gone = POLLERR | POLLHUP | POLLNVAL;
    for (;;) {
        pollfd pf[2] = {{ctl, POLLIN, 0}, {supervisor, 0, 0}};
        const int r = ::poll(pf, 2, -1);
        if (r < 0) {
            if (errno == EINTR) continue;
            return false;
        }
        if (pf[1].revents & gone) return false;
        if (pf[0].revents) break;
    }
    char c;
    ssize_t n;
    while ((n = ::read(ctl, &c, 1)) < 0 && errno == EINTR) {}
    if (n != 1) return false;
    pollfd pf{supervisor, 0, 0};
    int r;
    while ((r = ::poll(&pf, 1, 0)) < 0 && errno == EINTR) {}
    return r == 0 || (r > 0 && !(pf.revents & gone));
}

/// True if some process holds an OFD lock (fcntl F_OFD_SETLK) on any byte of the file. Only
/// asks (F_OFD_GETLK): concurrent askers never see each other. Async-signal-safe.
inline bool lock_held(int fd) noexcept {
    struct flock q{};
    q.l_type = F_WRLCK;
    q.l_whence = SEEK_SET;
    return ::fcntl(fd, F_OFD_GETLK, &q) == 0 && q.l_type != F_UNLCK;
}

/// The exit status line a supervisor writes into a slot: "kugetsu-exit 1 CODE TIMED_OUT\n".
inline bool parse_exit_record(std::string_view s, int& code, bool& timed_out) noexcept {
    constexpr std::string_view head = "kugetsu-exit 1 ";
    if (s.substr(0, head.size()) != head) return false;
    s.remove_prefix(head.size());
    int v = 0, digits = 0;
    while (!s.empty() && s.front() >= '0' && s.front() <= '9' && digits < 4) {
        v = v * 10 + (s.front() - '0');
        s.remove_prefix(1);
        ++digits;
    }
    if (digits == 0 || v > 255 || s.size() != 3 || s[0] != ' ' || (s[1] != '0' && s[1] != '1') || s[2] != '\n')
        return false;
    code = v;
    timed_out = s[1] == '1';
    return true;
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

    /// Creates the supervisor and the agent, held before exec. Errors: the program is not
    /// found or not executable (ENOENT, EACCES), the log or the slot cannot be created,
    /// fork fails.
    process_ref spawn(const spawn_request& r, std::error_code& ec) {
        ec.clear();
        if (auto e = validate_argv(r.argv)) return fail(ec, e, "invalid argv"), process_ref{};
        if (!valid_task_id(r.task_id)) return fail(ec, errc::invalid_task_id, "invalid task id"), process_ref{};
        const std::string program = detail::resolve_program(r.argv.front(), ec);
        if (ec) return fail(ec, ec, "cannot run \"" + r.argv.front() + "\""), process_ref{};

        for (const std::string* dir : {&log_dir_, &run_dir_}) {
            if (::mkdir(dir->c_str(), 0700) != 0 && errno != EEXIST)
                return fail(ec, detail::last_error(), "mkdir " + *dir), process_ref{};
            // Whoever can write here could forge an exit status and free a slot early.
            auto d = detail::open_path(*dir, O_RDONLY | O_DIRECTORY | O_NOFOLLOW, 0, ec);
            if (!ec) ec = detail::check_private(d.get());
            if (ec) return fail(ec, ec, *dir), process_ref{};
        }
        const std::string log_path = log_dir_ + "/" + r.task_id + ".log";
        // O_NONBLOCK: a FIFO planted as the log must not hang the spawn (the dispatcher holds
        // its lock); a hard link would send the agent's output into another file.
        auto log = detail::open_path(log_path, O_WRONLY | O_CREAT | O_APPEND | O_NOFOLLOW | O_NONBLOCK, 0600, ec);
        if (ec) return fail(ec, ec, "open " + log_path), process_ref{};
        {
            struct stat st{};
            if (::fstat(log.get(), &st) != 0) return fail(ec, detail::last_error(), "fstat " + log_path), process_ref{};
            if (!S_ISREG(st.st_mode) || st.st_nlink != 1 || !detail::is_private(st))
                return fail(ec, errc::unsafe_state, log_path + ": not a private regular file with one link"), process_ref{};
            if (::fcntl(log.get(), F_SETFL, O_WRONLY | O_APPEND) != 0)
                return fail(ec, detail::last_error(), "fcntl " + log_path), process_ref{};
        }
        auto null = detail::open_path("/dev/null", O_RDONLY, 0, ec);
        if (ec) return fail(ec, ec, "open /dev/null"), process_ref{};

        int ctl[2];
        if (::socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, ctl) != 0)
            return fail(ec, detail::last_error(), "socketpair"), process_ref{};
        detail::unique_fd ctl_parent(ctl[0]), ctl_child(ctl[1]);
        int err[2];
        if (::pipe2(err, O_CLOEXEC) != 0) return fail(ec, detail::last_error(), "pipe"), process_ref{};
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
        if (sup < 0) return fail(ec, detail::last_error(), "fork"), process_ref{};
        if (sup == 0) supervise(pl);

        ctl_child.reset();
        err_write.reset();
        detail::supervisor_hello hello{};
        if (!detail::read_full(ctl_parent.get(), &hello, sizeof hello) || !hello.ok) {
            int status = 0;
            detail::wait_for(sup, &status, 0);
            if (hello.error) return fail(ec, detail::errno_code(hello.error), "supervisor: slot in " + run_dir_), process_ref{};
            return fail(ec, errc::spawn_failed, "the supervisor died before the agent was held"), process_ref{};
        }
        process_ref ref{hello.pid, hello.start_time, detail::boot_id()};
        supervisors_[hello.pid] = sup;
        held_.emplace(hello.pid, held{std::move(ctl_parent), std::move(err_read), program, r.working_dir});
        return ref;
    }

    /// Lets a held agent exec. Errors: exec or chdir failed (errno, e.g. ENOENT, EACCES,
    /// ENOEXEC). errc::not_held: no such held agent.
    void release(const process_ref& p, std::error_code& ec) {
        ec.clear();
        auto it = held_.find(p.pid);
        if (it == held_.end()) return fail(ec, errc::not_held, "release");
        held h = std::move(it->second);
        held_.erase(it);
        const char go = 'g';
        for (;;) {
            if (::send(h.ctl.get(), &go, 1, MSG_NOSIGNAL) >= 0 || errno != EINTR) break;
        }
        detail::child_failure f{};
        std::size_t got = 0;
        while (got < sizeof f) {
            const ssize_t n = detail::sys().read(h.err.get(), reinterpret_cast<char*>(&f) + got, sizeof f - got);
            if (n < 0 && errno == EINTR) continue;
            if (n <= 0) break;
            got += static_cast<std::size_t>(n);
        }
        if (got == 0) return;   // the pipe closed on exec: the program runs
        // The program never ran: the supervisor removes the slot and exits; wait for it, so
        // that the agent is reaped (and gone) when this returns.
        wait_supervisor(p.pid);
        if (got != sizeof f) return fail(ec, errc::spawn_failed, "the agent died before exec");
        if (f.step == 3) return fail(ec, errc::spawn_failed, "the supervisor died before the agent could start");
        fail(ec, detail::errno_code(f.error),
             f.step == 1 ? "chdir \"" + h.cwd + "\"" : "exec \"" + h.program + "\"");
    }

    /// Discards a held agent: it exits without running the program; its slot is removed.
    void abandon(const process_ref& p) noexcept {
        auto it = held_.find(p.pid);
        if (it == held_.end()) return;
        held_.erase(it);   // closes the control socket: the supervisor lets the agent go
        wait_supervisor(p.pid);
    }

    /// Never blocks. See the header comment for how liveness is decided.
    process_status poll(const process_ref& p, std::error_code& ec) {
        ec.clear();
        reap_supervisors();
        if (!p) return {process_state::gone, -1};
        if (held_.count(p.pid)) return {process_state::running, -1};
        if (p.boot_id != detail::boot_id()) return {process_state::gone, -1};
        return status_of(p, /*block=*/false, ec);
    }

    /// Blocks until the agent's end is recorded (its slot released), then answers as poll().
    process_status wait(const process_ref& p, std::error_code& ec) {
        ec.clear();
        if (!p || held_.count(p.pid)) return poll(p, ec);
        if (p.boot_id != detail::boot_id()) return {process_state::gone, -1};
        auto st = status_of(p, /*block=*/true, ec);
        reap_supervisors();
        return st;
    }

    /// Removes the agent's slot file once its end is recorded.
    void forget(const process_ref& p) noexcept {
        reap_supervisors();
        if (!p || held_.count(p.pid)) return;
        try {
            ::unlink(slot_path(p).c_str());
        } catch (...) {
        }
    }

    /// Signals the agent's process group; nothing if p no longer denotes that process.
    void signal(const process_ref& p, stop_signal s, std::error_code& ec) {
        ec.clear();
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
    struct held {
        detail::unique_fd ctl;   // one byte lets the agent exec; closing it abandons the agent
        detail::unique_fd err;   // the agent's errno if chdir or exec fails; EOF on exec
        std::string program;
        std::string cwd;
    };

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
            if (errno == EWOULDBLOCK) return {process_state::running, -1};
            ec = detail::last_error();
            return {process_state::running, -1};
        }
        char buf[64];
        ssize_t n;
        while ((n = ::pread(fd.get(), buf, sizeof buf, 0)) < 0 && errno == EINTR) {}
        int code = -1;
        bool timed_out = false;
        if (n > 0 && detail::parse_exit_record(std::string_view(buf, static_cast<std::size_t>(n)), code, timed_out))
            return {process_state::exited, code, timed_out};
        fd.reset();
        return identity(p, block, ec);   // the supervisor died before writing: the agent may live on
    }

    static process_status identity(const process_ref& p, bool block, std::error_code& ec) {
        if (block) {
            detail::unique_fd pidfd(static_cast<int>(::syscall(SYS_pidfd_open, p.pid, 0)));
            if (pidfd) {
                auto st = detail::read_proc_stat(p.pid, ec);
                if (!ec && st && st->start_time == p.start_time) {
                    pollfd pf{pidfd.get(), POLLIN, 0};
                    while (::poll(&pf, 1, -1) < 0 && errno == EINTR) {}
                }
            }
        }
        auto st = detail::read_proc_stat(p.pid, ec);
        if (ec) return {process_state::running, -1};   // cannot tell: never free a slot on doubt
        // A zombie here is not our child (the supervisor that was its parent is gone): it
        // has ended, and its new parent reaps it.
        if (!st || st->start_time != p.start_time || st->state == 'Z') return {process_state::gone, -1};
        return {process_state::running, -1};
    }

    /// Blocks until the supervisor of `agent` has exited (it is about to: the agent never ran).
    void wait_supervisor(int agent) noexcept {
        if (auto s = supervisors_.find(agent); s != supervisors_.end()) {
            int status = 0;
            detail::wait_for(s->second, &status, 0);
            supervisors_.erase(s);
        }
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
            if (errno != EINTR) setup_failed(errno);
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
            // caller's go-ahead byte comes to it directly (no relay through the supervisor),
            // and end-of-file on it means the caller abandoned the agent or died.
            ::close(sync[0]);
            ::setpgid(0, 0);
            // Its dispositions are the supervisor's: SIG_DFL for every signal but the ignored
            // ones, so no handler can run here. Those stay ignored while it is held (SIGPIPE
            // among them: a report to a reader that died must not kill it) and are reset to
            // SIG_DFL just before exec.
            ::fcntl(slot, F_SETFD, 0);   // the agent holds its slot across exec
            auto report = [&](int step) {
                const detail::child_failure f{step, errno};
                act.sa_handler = SIG_IGN;
                ::sigaction(SIGPIPE, &act, nullptr);
                detail::write_full(sync[1], &f, sizeof f);
                detail::write_full(err, &f, sizeof f);
                ::_exit(127);
            };
            if (pl.cwd && ::chdir(pl.cwd) != 0) report(1);
            // Abandoned, or the caller or the supervisor died: the program never runs. Else the
            // supervisor is told that the exec comes: end-of-file without that means the agent
            // died while held.
            const detail::child_failure go_ahead{0, 0};
            if (!detail::await_go_ahead(ctl, sync[1]) || !detail::write_full(sync[1], &go_ahead, sizeof go_ahead)) {
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
        // failed, or it was abandoned (the caller closed its end of the control socket, or
        // died). End-of-file without "about to exec": it died while held (a signal).
        bool exec_comes = false;
        for (detail::child_failure m{}; detail::read_full(sync[0], &m, sizeof m);) {
            if (m.step == 0) {
                exec_comes = true;
                continue;
            }
            exec_comes = false;   // the program never ran
            break;
        }
        if (!exec_comes) {
            // The caller learns why through its own pipe and records nothing; there is no end
            // to record and no hook to run (a caller in abandon() waits for this process).
            int status;
            detail::wait_for(agent, &status, 0);
            ::unlink(pl.slot_path);
            ::_exit(0);
        }
        ::close(sync[0]);

        // Supervise: wait for the agent, enforcing the timeout.
        int status = 0;
        bool timed_out = false;
        const int pidfd = static_cast<int>(::syscall(SYS_pidfd_open, agent, 0));
        std::int64_t deadline = pl.timeout_ms >= 0 ? detail::monotonic_ms() + pl.timeout_ms : -1;
        bool term_sent = false;
        for (;;) {
            if (pidfd < 0 || deadline < 0) {
                detail::wait_for(agent, &status, 0);
                break;
            }
            const std::int64_t left = std::max<std::int64_t>(0, deadline - detail::monotonic_ms());
            pollfd pf{pidfd, POLLIN, 0};
            const int r = ::poll(&pf, 1, static_cast<int>(std::min<std::int64_t>(left, 1 << 30)));
            if (r < 0 && errno == EINTR) continue;
            if (r > 0) {
                detail::wait_for(agent, &status, 0);
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
        // The status goes into the slot before the lock is let go.
        char rec[48];
        char* q = detail::put_str(rec, "kugetsu-exit 1 ");
        q = detail::put_uint(q, static_cast<std::uint64_t>(std::clamp(detail::exit_code_of(status), 0, 255)));
        q = detail::put_str(q, timed_out ? " 1\n" : " 0\n");
        ssize_t w;
        while ((w = ::pwrite(slot, rec, static_cast<std::size_t>(q - rec), 0)) < 0 && errno == EINTR) {}
        if (pl.hook.size() > 1) {
            bool skip = false;
            if (pl.hook_lock) {
                const int lk = ::open(pl.hook_lock, O_RDONLY | O_CLOEXEC | O_NOFOLLOW | O_NONBLOCK);
                if (lk >= 0) {
                    skip = detail::lock_held(lk);
                    ::close(lk);
                }
            }
            if (!skip) {
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
    std::map<int, held> held_;
    std::map<int, int> supervisors_;   // agent pid -> supervisor pid (our children)
    process_ref self_;
    std::uint64_t counter_ = 0;
    std::string detail_;
};

static_assert(kugetsu::spawner<fork_spawner>);

} // namespace kugetsu
