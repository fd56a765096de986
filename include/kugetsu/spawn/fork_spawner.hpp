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
// THE HANDSHAKE (go_ahead.hpp). spawn() waits for the supervisor's hello (the agent is
// held); release() sends the go-ahead and returns once the agent has exec'd or failed to;
// abandon() tells the agent never to run. The supervisor (supervisor.hpp) learns the agent's
// fate from its own pipe, and records an end only for an agent that exec'd.
//
// THE SLOT FILE (slot_file.hpp). RUN_DIR/<agent pid>-<agent start time>.slot, created and
// flock'd by the supervisor before the agent is forked and inherited by the agent (as
// descriptor 5, KUGETSU_SLOT_FD=5): its lock is held exactly while either (or a descendant
// that keeps the descriptor) is alive, and its one record says how far the agent got: held,
// exec, noexec or exit. So poll() from ANY process answers from the lock and the record (see
// slot_file.hpp for the table), and a daemon wakes on the file's last close (IN_CLOSE_WRITE).
// The file stays after the end until forget(); sweep() removes the free ones no session names.
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
#include "../detail/signal_safe.hpp"
#include "../state_dir.hpp"
#include "go_ahead.hpp"
#include "slot_file.hpp"
#include "supervisor.hpp"

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

} // namespace detail

class fork_spawner {
public:
    /// The descriptor through which an agent holds its slot.
    static constexpr int slot_fd = detail::slot_file::agent_fd;

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
        detail::supervisor_plan pl;
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
        const std::string tmp = detail::slot_file::temp_path(run_dir_, ::getpid(), ++counter_);
        pl.slot_tmp = tmp.c_str();
        pl.run_dir = run_dir_.c_str();
        std::string slot_buf(run_dir_.size() + 64, '\0');
        pl.slot_path = slot_buf.data();
        pl.timeout_ms = r.timeout ? std::max<std::int64_t>(1, (r.timeout->count() + 999) / 1000) : -1;
        pl.grace_ms = std::max<std::int64_t>(0, r.kill_grace.count() / 1000);
        pl.fds = {null.get(), log.get(), ctl_child.get(), err_write.get()};

        const pid_t sup = ::fork();
        if (sup < 0) return fail(ec, detail::last_error(), "fork"), launched{};
        if (sup == 0) detail::supervisor::run(pl);
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
        detail::send_go_ahead(h.ctl.get());
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
            detail::send_go_ahead(hs[i]->ctl.get());
        }
        for (std::size_t i = 0; i < refs.size(); ++i) {
            if (!hs[i]) continue;
            exec_result(refs[i], *hs[i], ecs[i]);
            if (ecs[i]) pending_detail_[i] = detail_;
        }
    }

private:
    /// Reads the agent's exec outcome after its go-ahead: end-of-file = it exec'd.
    void exec_result(const process_ref& p, held& h, std::error_code& ec) {
        const auto out = detail::read_exec_outcome(h.err.get());
        if (out.what == detail::exec_outcome::ran) return;   // the pipe closed on exec: the program runs
        // The program never ran: its slot stays, with its noexec record (poll() says never_ran),
        // until forget(). Wait for the supervisor, so that the agent is reaped when this returns.
        wait_supervisor(p.pid);
        const auto& f = out.failure;
        if (out.what == detail::exec_outcome::died) return fail(ec, errc::spawn_failed, "the agent died before exec");
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
        detail::send_abandon(it->second.ctl.get());
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
        return detail::slot_file::path(run_dir_, p.pid, p.start_time);
    }
    const std::string& log_dir() const noexcept { return log_dir_; }
    const std::string& run_dir() const noexcept { return run_dir_; }
    /// After a failure: which step failed and on what.
    const std::string& last_error_detail() const noexcept { return detail_; }

private:

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
            detail::slot_file(fd.get()).write_exit(code, false, detail::realtime_us());
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
            if (detail::slot_file::parse_name(name, pid, start)) {
                if (std::any_of(referenced.begin(), referenced.end(),
                                [&](const process_ref& r) { return r.pid == pid && r.start_time == start; }))
                    continue;
            } else if (detail::slot_file::is_temp_name(name)) {
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
