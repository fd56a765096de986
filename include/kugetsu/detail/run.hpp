// kugetsu/detail/run.hpp: run a helper program (git) to completion and collect its output.
// Not part of the public API: the workspace models use it; agents are started by a spawner.
//
// posix_spawnp, never a shell (FACTS: posix_spawn stays ~0.5 ms where fork() of a large
// daemon costs ~17 ms). The child gets stdin from /dev/null, stdout and stderr on one
// O_CLOEXEC pipe, an empty signal mask and default dispositions (a host that ignores
// SIGPIPE or blocks SIGTERM must not pass that on), and no other kugetsu descriptor.
//
// The call blocks until the pipe reaches end-of-file AND the child is reaped: a grandchild
// that keeps stdout open keeps the call waiting. Reaping uses waitpid(pid), so a host that
// sets SIGCHLD to SIG_IGN, or reaps every child with waitpid(-1), makes the exit code
// unknown (ec = ECHILD).
#pragma once

#include <algorithm>
#include <cerrno>
#include <csignal>
#include <cstddef>
#include <string>
#include <string_view>
#include <system_error>
#include <vector>

#include <fcntl.h>
#include <spawn.h>
#include <sys/wait.h>
#include <unistd.h>

#include "../types.hpp"
#include "posix.hpp"

namespace kugetsu::detail {

/// At most this much of a command's output is kept; the rest is read and dropped, so a
/// chatty child never blocks on a full pipe and is never killed by SIGPIPE.
inline constexpr std::size_t max_command_output = 64 * 1024;

struct command_result {
    int exit_code = -1;   ///< 0-255, 128+signal if killed by a signal, -1 if not known
    std::string output;   ///< stdout and stderr interleaved, the first max_command_output bytes
};

// dup2(fd, fd) would leave FD_CLOEXEC set, so the pipe must not sit on 0-2 (a host that
// closed its own stdout gets fd 1 from pipe2).
inline unique_fd move_above_stdio(unique_fd fd, std::error_code& ec) noexcept {
    if (fd.get() > STDERR_FILENO) return fd;
    const int n = ::fcntl(fd.get(), F_DUPFD_CLOEXEC, STDERR_FILENO + 1);
    if (n < 0) {
        ec = last_error();
        return {};
    }
    return unique_fd(n);
}

inline command_result run_command_env(const std::vector<std::string>& argv, const std::string& cwd,
                                      char* const* envp, std::error_code& ec) {
    command_result res;
    ec = validate_argv(argv);
    if (ec) return res;
    if (cwd.find('\0') != std::string::npos) {
        ec = std::make_error_code(std::errc::invalid_argument);
        return res;
    }

    std::vector<char*> args;
    args.reserve(argv.size() + 1);
    for (const auto& a : argv) args.push_back(const_cast<char*>(a.c_str()));
    args.push_back(nullptr);

    int p[2];
    if (::pipe2(p, O_CLOEXEC) != 0) {
        ec = last_error();
        return res;
    }
    unique_fd rd(p[0]);
    unique_fd wr(p[1]);
    rd = move_above_stdio(std::move(rd), ec);
    if (!ec) wr = move_above_stdio(std::move(wr), ec);
    if (ec) return res;

    posix_spawn_file_actions_t fa;
    if (const int e = ::posix_spawn_file_actions_init(&fa)) {
        ec = errno_code(e);
        return res;
    }
    scope_exit destroy_fa([&fa] { ::posix_spawn_file_actions_destroy(&fa); });
    posix_spawnattr_t attr;
    if (const int e = ::posix_spawnattr_init(&attr)) {
        ec = errno_code(e);
        return res;
    }
    scope_exit destroy_attr([&attr] { ::posix_spawnattr_destroy(&attr); });

    sigset_t none, all;
    sigemptyset(&none);
    sigfillset(&all);
    int e = ::posix_spawn_file_actions_addopen(&fa, STDIN_FILENO, "/dev/null", O_RDONLY, 0);
    if (!e) e = ::posix_spawn_file_actions_adddup2(&fa, wr.get(), STDOUT_FILENO);
    if (!e) e = ::posix_spawn_file_actions_adddup2(&fa, wr.get(), STDERR_FILENO);
    // glibc >= 2.29 and musl >= 1.1.24; a failed chdir fails the spawn with its errno.
    // The program gets descriptors 0-2 only, even ones the host leaked without O_CLOEXEC.
    if (!e) e = ::posix_spawn_file_actions_addclosefrom_np(&fa, 3);
    if (!e && !cwd.empty()) e = ::posix_spawn_file_actions_addchdir_np(&fa, cwd.c_str());
    if (!e) e = ::posix_spawnattr_setsigmask(&attr, &none);
    if (!e) e = ::posix_spawnattr_setsigdefault(&attr, &all);
    if (!e) e = ::posix_spawnattr_setflags(&attr, POSIX_SPAWN_SETSIGMASK | POSIX_SPAWN_SETSIGDEF);
    if (e) {
        ec = errno_code(e);
        return res;
    }

    pid_t pid = -1;
    // glibc reports an exec failure (ENOENT, EACCES) here rather than as a child exiting 127.
    e = ::posix_spawnp(&pid, args[0], &fa, &attr, args.data(), envp);
    if (e) {
        ec = errno_code(e);
        return res;
    }
    wr.reset();  // only the child holds the write end now: its exit gives end-of-file

    std::error_code read_ec;
    char buf[8192];
    for (;;) {
        const ssize_t n = sys().read(rd.get(), buf, sizeof buf);
        if (n < 0) {
            if (errno == EINTR) continue;
            read_ec = last_error();
            break;
        }
        if (n == 0) break;
        const std::size_t room = max_command_output - res.output.size();
        res.output.append(buf, std::min(room, static_cast<std::size_t>(n)));
    }
    rd.reset();

    int status = 0;
    for (;;) {
        const pid_t r = ::waitpid(pid, &status, 0);
        if (r == pid) break;
        if (r < 0 && errno == EINTR) continue;
        ec = r < 0 ? last_error() : std::make_error_code(std::errc::no_child_process);
        return res;
    }
    if (WIFEXITED(status))
        res.exit_code = WEXITSTATUS(status);
    else if (WIFSIGNALED(status))
        res.exit_code = 128 + WTERMSIG(status);
    ec = read_ec;
    return res;
}

/// Runs argv[0] (looked up on PATH) with `argv`, in `cwd` ("" = inherit), with the caller's
/// environment, and waits for it. ec is set when the program could not be started (ENOENT,
/// EACCES, a bad cwd; errc::invalid_argv for an empty argv or an argument containing NUL):
/// a program that ran and failed is not an error, its exit_code says so.
inline command_result run_command(const std::vector<std::string>& argv, const std::string& cwd,
                                  std::error_code& ec) {
    return run_command_env(argv, cwd, ::environ, ec);
}

/// The same with an explicit environment ("NAME=value" strings).
inline command_result run_command(const std::vector<std::string>& argv, const std::string& cwd,
                                  const std::vector<std::string>& env, std::error_code& ec) {
    std::vector<char*> envp;
    envp.reserve(env.size() + 1);
    for (const auto& v : env) envp.push_back(const_cast<char*>(v.c_str()));
    envp.push_back(nullptr);
    return run_command_env(argv, cwd, envp.data(), ec);
}

} // namespace kugetsu::detail
