// Test support: temporary directories, pipes and forked children, without sleeps.
#pragma once

#include <csignal>
#include <cstdlib>
#include <filesystem>
#include <string>
#include <utility>

#include <fcntl.h>
#include <sys/wait.h>
#include <unistd.h>

namespace kugetsu::test {

/// A fresh directory under /tmp, removed with its contents at scope exit.
class temp_dir {
public:
    temp_dir() {
        char tmpl[] = "/tmp/kugetsu-test-XXXXXX";
        if (!::mkdtemp(tmpl)) std::abort();
        path_ = tmpl;
    }
    ~temp_dir() {
        std::error_code ec;
        std::filesystem::remove_all(path_, ec);
    }
    temp_dir(const temp_dir&) = delete;
    temp_dir& operator=(const temp_dir&) = delete;
    const std::string& path() const noexcept { return path_; }
    std::string operator/(const std::string& name) const { return path_ + "/" + name; }

private:
    std::string path_;
};

/// A pipe; both ends O_CLOEXEC.
struct pipe_pair {
    int r = -1, w = -1;
    pipe_pair() {
        int fds[2];
        if (::pipe2(fds, O_CLOEXEC) != 0) std::abort();
        r = fds[0];
        w = fds[1];
    }
    ~pipe_pair() {
        close_read();
        close_write();
    }
    void close_read() {
        if (r >= 0) ::close(std::exchange(r, -1));
    }
    void close_write() {
        if (w >= 0) ::close(std::exchange(w, -1));
    }
    void put(char c) const {
        while (::write(w, &c, 1) < 0 && errno == EINTR) {}
    }
    /// One byte, or 0 at end of file.
    char get() const {
        char c = 0;
        ssize_t n;
        while ((n = ::read(r, &c, 1)) < 0 && errno == EINTR) {}
        return n == 1 ? c : 0;
    }
    /// Blocks until every writer has closed.
    void wait_eof() const {
        char c;
        ssize_t n;
        while ((n = ::read(r, &c, 1)) != 0)
            if (n < 0 && errno != EINTR) break;
    }
};

/// Runs f in a forked child, which exits with f's result; never returns into the test framework.
template <class F>
pid_t fork_child(F&& f) {
    const pid_t pid = ::fork();
    if (pid < 0) std::abort();
    if (pid == 0) {
        int code = 99;
        try {
            code = f();
        } catch (...) {
            code = 98;
        }
        ::_exit(code);
    }
    return pid;
}

/// Waits for a child; returns its exit code, or 128+signal.
inline int wait_child(pid_t pid) {
    int status = 0;
    while (::waitpid(pid, &status, 0) < 0)
        if (errno != EINTR) return -1;
    if (WIFEXITED(status)) return WEXITSTATUS(status);
    if (WIFSIGNALED(status)) return 128 + WTERMSIG(status);
    return -1;
}

/// Reads the whole of a small file.
inline std::string slurp(const std::string& path) {
    std::string out;
    const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
    if (fd < 0) return out;
    char buf[4096];
    ssize_t n;
    while ((n = ::read(fd, buf, sizeof buf)) > 0) out.append(buf, static_cast<size_t>(n));
    ::close(fd);
    return out;
}

} // namespace kugetsu::test
