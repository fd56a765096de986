// kugetsu/spawn/fork_spawner.hpp: the real spawner: fork + exec of the agent's argv, no shell.
//
// spawn() forks a child that puts itself in its own process group, resets its signal mask
// and dispositions, takes stdin from /dev/null and sends stdout and stderr to
// LOG_DIR/<task id>.log (appended, 0600), changes to the workspace, and then WAITS on a
// socket for the go-ahead. release() sends it; the child execs the program, and an exec
// failure (or a failed chdir) comes back as errno through an O_CLOEXEC pipe, so release()
// reports "no such program" as an error instead of a child that exits 127. If the spawning
// process dies while a child is held, the child sees end-of-file and exits without running
// the program: no agent ever runs without the session the dispatcher writes in between.
//
// The program is looked up on PATH in the parent (before fork); the child calls only
// async-signal-safe functions, so spawning from a multi-threaded host is safe. The child's
// environment is the parent's plus KUGETSU_TASK_ID=<task id>. Every descriptor kugetsu opens
// is O_CLOEXEC, and the child marks every descriptor above 2 close-on-exec before exec (also
// those a host leaked), so the agent inherits stdin, stdout and stderr only.
//
// Liveness: poll() reaps this object's own children with waitpid(WNOHANG) and so knows
// their exit codes; any other process (started by another dispatcher, or before a restart)
// is checked by identity: /proc/PID/stat start time and the boot id must match the ref, or
// the process is gone (PID reuse is detected). A zombie still counts as running: a slot is
// freed when its agent has been reaped. If the host sets SIGCHLD to SIG_IGN, children are
// reaped by the kernel and their exit codes are lost (poll reports `gone`).
//
// signal() sends to the agent's process group after checking the identity through a pidfd.
//
// Not thread-safe: one fork_spawner per thread (as with the dispatcher that owns it).
#pragma once

#include <algorithm>
#include <cerrno>
#include <csignal>
#include <cstdlib>
#include <map>
#include <set>
#include <string>
#include <utility>
#include <vector>

#include <fcntl.h>
#include <linux/close_range.h>
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

/// What a child that could not exec writes back: which step failed, and errno.
struct child_failure {
    int step;   // 1 = chdir, 2 = exec
    int error;
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

} // namespace detail

class fork_spawner {
public:
    /// Effects: logs go to LOG_DIR/<task id>.log; LOG_DIR is created (0700) when needed.
    explicit fork_spawner(std::string log_dir) : log_dir_(std::move(log_dir)) {}

    fork_spawner(fork_spawner&&) noexcept = default;
    fork_spawner& operator=(fork_spawner&& o) noexcept {
        if (this != &o) {
            abandon_all();
            log_dir_ = std::move(o.log_dir_);
            held_ = std::move(o.held_);
            children_ = std::move(o.children_);
            detail_ = std::move(o.detail_);
        }
        return *this;
    }
    ~fork_spawner() { abandon_all(); }

    /// Creates the child, held before exec. Errors: the program is not found or not
    /// executable (ENOENT, EACCES), the log cannot be opened, fork fails.
    process_ref spawn(const spawn_request& r, std::error_code& ec) {
        ec.clear();
        if (auto e = validate_argv(r.argv)) return fail(ec, e, "invalid argv"), process_ref{};
        if (!valid_task_id(r.task_id)) return fail(ec, errc::invalid_task_id, "invalid task id"), process_ref{};
        const std::string program = detail::resolve_program(r.argv.front(), ec);
        if (ec) return fail(ec, ec, "cannot run \"" + r.argv.front() + "\""), process_ref{};

        if (::mkdir(log_dir_.c_str(), 0700) != 0 && errno != EEXIST)
            return fail(ec, detail::last_error(), "mkdir " + log_dir_), process_ref{};
        const std::string log_path = log_dir_ + "/" + r.task_id + ".log";
        auto log = detail::open_path(log_path, O_WRONLY | O_CREAT | O_APPEND | O_NOFOLLOW, 0600, ec);
        if (ec) return fail(ec, ec, "open " + log_path), process_ref{};
        auto null = detail::open_path("/dev/null", O_RDONLY, 0, ec);
        if (ec) return fail(ec, ec, "open /dev/null"), process_ref{};

        int go[2];
        if (::socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, go) != 0)
            return fail(ec, detail::last_error(), "socketpair"), process_ref{};
        detail::unique_fd go_parent(go[0]), go_child(go[1]);
        int err[2];
        if (::pipe2(err, O_CLOEXEC) != 0) return fail(ec, detail::last_error(), "pipe"), process_ref{};
        detail::unique_fd err_read(err[0]), err_write(err[1]);

        // Everything the child needs, built before fork: the child must not allocate.
        std::vector<char*> argv;
        for (const auto& a : r.argv) argv.push_back(const_cast<char*>(a.c_str()));
        argv.push_back(nullptr);
        const std::string task_env = "KUGETSU_TASK_ID=" + r.task_id;
        std::vector<char*> envp;
        for (char** e = environ; e && *e; ++e)
            if (std::string_view(*e).substr(0, 16) != "KUGETSU_TASK_ID=") envp.push_back(*e);
        envp.push_back(const_cast<char*>(task_env.c_str()));
        envp.push_back(nullptr);
        std::vector<int> foreign;   // other held children's go sockets: the child must not keep them
        for (auto& [pid, h] : held_) foreign.push_back(h.go.get());
        const char* cwd = r.working_dir.empty() ? nullptr : r.working_dir.c_str();

        const pid_t pid = ::fork();
        if (pid < 0) return fail(ec, detail::last_error(), "fork"), process_ref{};
        if (pid == 0) child(program.c_str(), argv.data(), envp.data(), cwd, null.get(), log.get(),
                            go_parent.get(), go_child.get(), err_read.get(), err_write.get(), foreign);

        ::setpgid(pid, pid);   // also in the parent, so the group exists before signal() can run
        go_child.reset();
        err_write.reset();
        process_ref ref{pid, 0, detail::boot_id()};
        if (auto st = detail::read_proc_stat(pid, ec); st) ref.start_time = st->start_time;
        ec.clear();
        held_.emplace(pid, held{std::move(go_parent), std::move(err_read), program, r.working_dir});
        return ref;
    }

    /// Lets a held child exec. Errors: exec or chdir failed in the child (errno, e.g.
    /// ENOENT, EACCES, ENOEXEC); the child is reaped. errc::not_held: no such held child.
    void release(const process_ref& p, std::error_code& ec) {
        ec.clear();
        auto it = held_.find(p.pid);
        if (it == held_.end()) return fail(ec, errc::not_held, "release");
        held h = std::move(it->second);
        held_.erase(it);
        const char go = 'g';
        for (;;) {
            if (::send(h.go.get(), &go, 1, MSG_NOSIGNAL) >= 0 || errno != EINTR) break;
        }
        h.go.reset();
        detail::child_failure f{};
        std::size_t got = 0;
        while (got < sizeof f) {
            const ssize_t n = detail::sys().read(h.err.get(), reinterpret_cast<char*>(&f) + got, sizeof f - got);
            if (n < 0 && errno == EINTR) continue;
            if (n <= 0) break;
            got += static_cast<std::size_t>(n);
        }
        if (got == 0) {   // the pipe closed on exec: the program runs
            children_.insert(p.pid);
            return;
        }
        int status = 0;
        detail::wait_for(p.pid, &status, 0);
        if (got != sizeof f) return fail(ec, errc::spawn_failed, "child died before exec");
        fail(ec, detail::errno_code(f.error),
             f.step == 1 ? "chdir \"" + h.cwd + "\"" : "exec \"" + h.program + "\"");
    }

    /// Discards a held child: it exits without running the program, and is reaped.
    void abandon(const process_ref& p) noexcept {
        auto it = held_.find(p.pid);
        if (it == held_.end()) return;
        held_.erase(it);   // closes the go socket: the child reads end-of-file and exits
        int status = 0;
        detail::wait_for(p.pid, &status, 0);
    }

    /// Never blocks. See the header comment for how liveness is decided.
    process_status poll(const process_ref& p, std::error_code& ec) {
        ec.clear();
        if (!p) return {process_state::gone, -1};
        if (held_.count(p.pid)) return {process_state::running, -1};
        if (children_.count(p.pid)) {
            int status = 0;
            const pid_t r = detail::wait_for(p.pid, &status, WNOHANG);
            if (r == p.pid) {
                children_.erase(p.pid);
                return {process_state::exited, detail::exit_code_of(status)};
            }
            if (r == 0) return {process_state::running, -1};
            children_.erase(p.pid);   // ECHILD: reaped elsewhere (SIGCHLD ignored?)
        }
        if (p.boot_id != detail::boot_id()) return {process_state::gone, -1};
        auto st = detail::read_proc_stat(p.pid, ec);
        if (ec) return {process_state::running, -1};   // cannot tell: never free a slot on doubt
        if (!st || st->start_time != p.start_time) return {process_state::gone, -1};
        return {process_state::running, -1};
    }

    /// Signals the agent's process group; nothing if p no longer denotes that process.
    void signal(const process_ref& p, stop_signal s, std::error_code& ec) {
        ec.clear();
        if (!p || held_.count(p.pid)) return;
        const int sig = s == stop_signal::kill ? SIGKILL : SIGTERM;
        // Hold a pidfd while checking the identity, so the check and the kill are about the
        // same process (a zombie child of ours also keeps its pid until we reap it).
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

    const std::string& log_dir() const noexcept { return log_dir_; }
    /// After a failure: which step failed and on what.
    const std::string& last_error_detail() const noexcept { return detail_; }

private:
    struct held {
        detail::unique_fd go;    // write one byte to let the child exec; close to abandon it
        detail::unique_fd err;   // the child's errno if chdir or exec fails; EOF on exec
        std::string program;
        std::string cwd;
    };

    [[noreturn]] static void child(const char* program, char* const* argv, char* const* envp, const char* cwd,
                                   int null_fd, int log_fd, int go_parent, int go_child, int err_read,
                                   int err_write, const std::vector<int>& foreign) noexcept {
        // Async-signal-safe calls only from here on.
        ::close(go_parent);
        ::close(err_read);
        for (int fd : foreign) ::close(fd);
        // The agent inherits descriptors 0, 1 and 2 only, even ones the host leaked without
        // O_CLOEXEC; the go socket and the error pipe are used before exec and closed by it.
        if (::syscall(SYS_close_range, 3u, ~0u, CLOSE_RANGE_CLOEXEC) != 0)
            for (int fd = 3; fd < 65536; ++fd) ::fcntl(fd, F_SETFD, FD_CLOEXEC);
        ::setpgid(0, 0);
        struct sigaction dfl{};
        dfl.sa_handler = SIG_DFL;
        for (int s = 1; s < NSIG; ++s) ::sigaction(s, &dfl, nullptr);
        sigset_t none;
        ::sigemptyset(&none);
        ::sigprocmask(SIG_SETMASK, &none, nullptr);
        auto report = [&](int step) {
            const detail::child_failure f{step, errno};
            ssize_t n;
            do n = ::write(err_write, &f, sizeof f);
            while (n < 0 && errno == EINTR);
            ::_exit(127);
        };
        if (::dup2(null_fd, 0) < 0 || ::dup2(log_fd, 1) < 0 || ::dup2(log_fd, 2) < 0) report(2);
        if (cwd && ::chdir(cwd) != 0) report(1);
        char go;
        ssize_t n;
        do n = ::read(go_child, &go, 1);
        while (n < 0 && errno == EINTR);
        if (n != 1) ::_exit(127);   // abandoned, or the spawning process died
        ::execve(program, argv, envp);
        report(2);
        ::_exit(127);
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
    std::map<int, held> held_;
    std::set<int> children_;
    process_ref self_;
    std::string detail_;
};

static_assert(kugetsu::spawner<fork_spawner>);

} // namespace kugetsu
