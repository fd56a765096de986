// kugetsu/spawn/supervisor.hpp: the process fork_spawner forks for each agent. It holds the
// agent's slot (slot_file.hpp), forks the agent and holds it before exec until the caller's
// word (go_ahead.hpp), enforces the timeout, writes the exit record, and runs the on-exit
// command when no daemon will record the end. Its steps, in order:
//
//   take_descriptors   0 /dev/null, 1 and 2 the log, 3 ctl, 4 err; every other one closed
//   reset_signals      SIG_DFL everywhere but the ignored ones; nothing blocked
//   create_slot        RUN_DIR/.slot.<pid>.<n>, O_EXCL, flock'd, "kugetsu-held 2"
//   fork the agent     which runs agent_main: its own group, the go-ahead, "exec", execve
//   announce           rename the slot to <pid>-<start>.slot; the hello to the caller
//   await_exec         the agent's "about to exec" then end-of-file, or why it never ran
//   watch              a pidfd until the agent ends; SIGTERM then SIGKILL at the deadline
//   record_end         "kugetsu-exit 2 CODE T US", then reap, then the on-exit command
//
// Every step calls async-signal-safe functions only and allocates nothing: everything it
// needs is in the supervisor_plan, built by the caller before fork. A step that fails before
// the hello tells the caller its errno in the hello (setup_failed); after it, the caller
// learns from its own pipe.
#pragma once

#include <algorithm>
#include <cerrno>
#include <csignal>
#include <cstdint>
#include <vector>

#include <fcntl.h>
#include <linux/close_range.h>
#include <poll.h>
#include <sys/file.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include "../detail/proc.hpp"
#include "../detail/signal_safe.hpp"
#include "../state_dir.hpp"
#include "go_ahead.hpp"
#include "slot_file.hpp"

namespace kugetsu::detail {

/// Everything the supervisor and the agent need, built before fork (they must not allocate).
struct supervisor_plan {
    const char* program = nullptr;            ///< resolved by the caller (no PATH lookup here)
    std::vector<char*> argv, envp, hook;      ///< each ends with nullptr; hook: the on-exit argv
    const char* hook_lock = nullptr;          ///< skip the hook while a daemon holds this file
    const char* cwd = nullptr;                ///< nullptr: the caller's
    const char* slot_tmp = nullptr;           ///< RUN_DIR/.slot.<pid>.<n>
    const char* run_dir = nullptr;
    char* slot_path = nullptr;                ///< room for run_dir + 48: the final name goes here
    std::int64_t timeout_ms = -1;             ///< -1: none
    std::int64_t grace_ms = 0;                ///< SIGTERM to SIGKILL
    struct { int null_fd, log, ctl, err; } fds{};
};

class supervisor {
public:
    /// In the child of fork(): supervises one agent, then exits (or execs the on-exit command).
    [[noreturn]] static void run(const supervisor_plan& pl) noexcept {
        supervisor s(pl);
        s.main();
    }

private:
    static constexpr int ctl = 3, err = 4;
    static constexpr int ignored[] = {SIGPIPE, SIGHUP, SIGINT, SIGQUIT, SIGTSTP, SIGTTIN, SIGTTOU};

    explicit supervisor(const supervisor_plan& pl) noexcept : pl_(pl) {}

    [[noreturn]] void main() noexcept {
        // Its own session: a terminal's ^C or hangup reaches neither it nor the agent.
        ::setsid();
        take_descriptors();
        reset_signals();
        create_slot();
        // sync: the agent's exec failure, to the supervisor. It is also how a held agent learns
        // that its supervisor died: its write end polls POLLERR once no reader is left.
        if (::pipe2(sync_, O_CLOEXEC) != 0) setup_failed(errno);
        agent_ = ::fork();
        if (agent_ < 0) {
            ::unlink(pl_.slot_tmp);
            setup_failed(errno);
        }
        if (agent_ == 0) agent_main();
        ::setpgid(agent_, agent_);   // also here, so the group exists before anyone signals it
        ::close(sync_[1]);
        ::close(err);                // the caller's read end sees EOF once the agent has exec'd
        announce();
        if (!await_exec()) {
            // The caller learns why through its own pipe; there is no end to record and no
            // hook to run (a caller in abandon() waits for this process). The slot stays,
            // saying "noexec" (or "held": killed while held), for whoever committed a session
            // naming the agent: its reap answers never_ran, then forget() (or sweep()) removes
            // it. So does an abandoned one: its session may be visible after all (a commit
            // reported failed after COMMIT: its fsync failed).
            int status;
            wait_for(agent_, &status, 0);
            ::_exit(0);
        }
        ::close(sync_[0]);
        watch();
        record_end();
    }

    /// Keep exactly: 0 /dev/null, 1 and 2 the log, 3 the control socket, 4 the error pipe.
    /// Everything else is closed now (the dispatcher's lock among it), not merely at exec: the
    /// supervisor never execs the agent itself.
    void take_descriptors() noexcept {
        const int src[4] = {pl_.fds.null_fd, pl_.fds.log, pl_.fds.ctl, pl_.fds.err};
        int high[4];
        for (int i = 0; i < 4; ++i)
            if ((high[i] = ::fcntl(src[i], F_DUPFD_CLOEXEC, 16)) < 0) ::_exit(127);
        if (::dup2(high[0], 0) < 0 || ::dup2(high[1], 1) < 0 || ::dup2(high[1], 2) < 0 ||
            ::dup3(high[2], ctl, O_CLOEXEC) < 0 || ::dup3(high[3], err, O_CLOEXEC) < 0)
            ::_exit(127);
        if (::syscall(SYS_close_range, 5u, ~0u, 0u) != 0)
            for (int fd = 5; fd < 65536; ++fd) ::close(fd);
    }

    /// SIG_DFL for every signal but the ignored ones (so no handler of the caller's can run
    /// here or in the held agent), and none blocked.
    void reset_signals() noexcept {
        act_.sa_handler = SIG_DFL;
        for (int s = 1; s < NSIG; ++s) ::sigaction(s, &act_, nullptr);
        act_.sa_handler = SIG_IGN;
        for (int s : ignored) ::sigaction(s, &act_, nullptr);
        sigset_t none;
        ::sigemptyset(&none);
        ::sigprocmask(SIG_SETMASK, &none, nullptr);
    }

    /// Before the hello: the caller learns errno `e` and this process exits.
    [[noreturn]] void setup_failed(int e) noexcept {
        hello_.error = e;
        write_full(ctl, &hello_, sizeof hello_);
        ::_exit(127);
    }

    /// The slot: created and locked before the agent exists, so the agent inherits the lock.
    /// O_EXCL: a file or link planted under this name is never written (the spawn fails and
    /// the next attempt takes the next name). A v2 slot is never empty: "held" until the agent
    /// writes what it did.
    void create_slot() noexcept {
        int fd = ::open(pl_.slot_tmp, O_RDWR | O_CREAT | O_EXCL | O_CLOEXEC | O_NOFOLLOW, 0600);
        if (fd < 0) setup_failed(errno);
        if (fd != slot_file::agent_fd) {
            if (::dup3(fd, slot_file::agent_fd, O_CLOEXEC) < 0) setup_failed(errno);
            ::close(fd);
        }
        while (::flock(slot_.fd(), LOCK_EX) != 0)
            if (errno != EINTR) {
                const int saved = errno;
                ::unlink(pl_.slot_tmp);
                setup_failed(saved);
            }
        errno = 0;
        if (!slot_.write_held()) {
            const int saved = errno ? errno : EIO;
            ::unlink(pl_.slot_tmp);
            setup_failed(saved);
        }
    }

    /// The agent, in the child of the second fork. It keeps the control socket (3,
    /// close-on-exec) while it is held: the caller's word comes to it directly (no relay
    /// through the supervisor): 'g' lets it exec, 'a' abandons it, and end-of-file without a
    /// byte means the caller died. Its dispositions are the supervisor's: the ignored ones
    /// stay ignored while it is held (SIGPIPE among them: a report to a reader that died must
    /// not kill it) and are reset to SIG_DFL just before exec.
    [[noreturn]] void agent_main() noexcept {
        ::close(sync_[0]);
        ::setpgid(0, 0);
        ::fcntl(slot_.fd(), F_SETFD, 0);   // the agent holds its slot across exec
        if (pl_.cwd && ::chdir(pl_.cwd) != 0) never_runs(1);
        // Abandoned, or the caller or the supervisor died: the program never runs.
        const go_ahead word = await_go_ahead(ctl, sync_[1]);
        if (word != go_ahead::go) {
            errno = ECONNABORTED;
            never_runs(word == go_ahead::abandoned ? 4 : 3);
        }
        // The slot says "exec" before the program can run (or no exec: a slot saying "held"
        // must never outlive a program that ran); then the supervisor is told that the exec
        // comes: end-of-file without that means the agent died while held.
        errno = 0;
        if (!slot_.write_exec(realtime_us())) {
            if (errno == 0) errno = EIO;
            never_runs(5);
        }
        const child_failure about_to_exec{0, 0};
        if (!write_full(sync_[1], &about_to_exec, sizeof about_to_exec)) {
            errno = ECONNABORTED;
            never_runs(3);
        }
        act_.sa_handler = SIG_DFL;
        for (int s : ignored) ::sigaction(s, &act_, nullptr);
        ::execve(pl_.program, pl_.argv.data(), pl_.envp.data());
        never_runs(2);
    }

    /// The agent's last word when the program never runs (errno says why): the slot says so
    /// first (replacing "held" or "exec"), then the supervisor and the caller are told.
    [[noreturn]] void never_runs(int step) noexcept {
        const child_failure f{step, errno};
        act_.sa_handler = SIG_IGN;
        ::sigaction(SIGPIPE, &act_, nullptr);
        slot_.write_noexec();
        write_full(sync_[1], &f, sizeof f);
        write_full(err, &f, sizeof f);
        ::_exit(127);
    }

    /// The slot takes its final name and the caller its hello. Held, the agent has not
    /// exec'd (the caller sends the go-ahead only after a hello): if either fails, it is
    /// killed and the program never runs.
    void announce() noexcept {
        hello_.pid = agent_;
        hello_.start_time = start_time_of(agent_);
        slot_file::put_path(pl_.slot_path, pl_.run_dir, agent_, hello_.start_time);
        auto drop_agent = [&] {
            ::kill(agent_, SIGKILL);
            int status;
            wait_for(agent_, &status, 0);
        };
        if (hello_.start_time == 0 || ::rename(pl_.slot_tmp, pl_.slot_path) != 0) {
            const int saved = hello_.start_time == 0 ? ESRCH : errno;
            drop_agent();
            ::unlink(pl_.slot_tmp);
            setup_failed(saved);
        }
        hello_.ok = 1;
        if (!write_full(ctl, &hello_, sizeof hello_)) {
            drop_agent();   // the caller died
            ::unlink(pl_.slot_path);
            ::_exit(0);
        }
        ::close(ctl);   // from here on the agent alone listens to the caller
    }

    /// The agent says "about to exec" once it has the go-ahead, then its exec succeeds
    /// (end-of-file: sync closes on exec) or it reports why it did not run: chdir or exec
    /// failed, it was abandoned ('a'), or the caller died (end-of-file on the control socket).
    /// End-of-file without "about to exec": it died while held (a signal). True: it exec'd.
    bool await_exec() noexcept {
        bool exec_comes = false;
        for (child_failure m{}; read_full(sync_[0], &m, sizeof m);) {
            if (m.step == 0) {
                exec_comes = true;
                continue;
            }
            return false;   // the program never ran
        }
        return exec_comes;
    }

    /// Waits for the agent, enforcing the timeout. Its end is stamped when seen; it is not
    /// reaped here (record_end reaps it once its exit record is written: killed in between,
    /// this process leaves a zombie whose code a subreaper, a daemon, still records).
    void watch() noexcept {
        const int pidfd = static_cast<int>(::syscall(SYS_pidfd_open, agent_, 0));
        std::int64_t deadline = pl_.timeout_ms >= 0 ? monotonic_ms() + pl_.timeout_ms : -1;
        bool term_sent = false;
        for (;;) {
            if (pidfd < 0 || deadline < 0) {
                code_ = peek_exit_code(agent_);
                ended_us_ = realtime_us();
                return;
            }
            const std::int64_t left = std::max<std::int64_t>(0, deadline - monotonic_ms());
            pollfd pf{pidfd, POLLIN, 0};
            const int r = ::poll(&pf, 1, static_cast<int>(std::min<std::int64_t>(left, 1 << 30)));
            if (r < 0 && errno == EINTR) continue;
            if (r > 0) {
                ended_us_ = realtime_us();
                code_ = peek_exit_code(agent_);
                return;
            }
            if (r == 0 && monotonic_ms() >= deadline) {
                if (!term_sent) {
                    ::kill(-agent_, SIGTERM);
                    term_sent = timed_out_ = true;
                    deadline = monotonic_ms() + pl_.grace_ms;
                } else {
                    ::kill(-agent_, SIGKILL);
                    deadline = -1;
                }
            }
        }
    }

    /// The exit record goes into the slot before the lock is let go, and before the reaping;
    /// then the on-exit command, unless a daemon holds its lock (it records the end itself).
    [[noreturn]] void record_end() noexcept {
        slot_.write_exit(code_, timed_out_, ended_us_);
        int status = 0;
        wait_for(agent_, &status, 0);
        if (pl_.hook.size() > 1 && (!pl_.hook_lock || !daemon_running(pl_.hook_lock))) {
            ::close(slot_.fd());   // released before the hook records the end
            ::execve(pl_.hook[0], pl_.hook.data(), pl_.envp.data());
        }
        ::_exit(0);
    }

    const supervisor_plan& pl_;
    struct sigaction act_{};
    supervisor_hello hello_{};
    slot_file slot_{slot_file::agent_fd};
    int sync_[2] = {-1, -1};
    pid_t agent_ = -1;
    int code_ = -1;
    bool timed_out_ = false;
    std::int64_t ended_us_ = 0;
};

} // namespace kugetsu::detail
