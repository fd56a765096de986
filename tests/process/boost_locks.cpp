// Real-process tests of the Boost.Interprocess lock models: boost_file_lock (an fcntl record
// lock) and boost_named_mutex_lock (a POSIX named semaphore on Linux).
//
// Every other process is a fork() child that runs a small body and leaves with _exit(); the
// test and its children synchronise through pipes only (one byte per step), never sleeps.
// Where a test asserts a hazard (two objects in one process, a double release), it asserts
// what Boost 1.74 actually does, so that a change of behaviour fails here and the
// documentation (the headers' banners, docs/policies/lock.md) gets revisited.
#if KUGETSU_TEST_BOOST

#include <catch2/catch.hpp>

#include <cerrno>
#include <chrono>
#include <climits>
#include <csignal>
#include <fstream>
#include <functional>
#include <mutex>
#include <string>
#include <system_error>
#include <vector>

#include <dirent.h>
#include <fcntl.h>
#include <sched.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/types.h>
#include <sys/wait.h>
#include <unistd.h>

#include <kugetsu/detail/posix.hpp>
#include <kugetsu/lock/boost_file_lock.hpp>
#include <kugetsu/lock/boost_named_mutex_lock.hpp>

namespace {

using kugetsu::boost_file_lock;
using kugetsu::boost_named_mutex_lock;
using kugetsu::detail::unique_fd;

// One byte per message. EOF (the peer died or closed) reads as '\0'.
void send_byte(int fd, char c) {
    for (;;) {
        if (::write(fd, &c, 1) == 1) return;
        if (errno != EINTR) throw std::system_error(errno, std::system_category(), "write");
    }
}

char recv_byte(int fd) {
    char c = 0;
    for (;;) {
        const ssize_t n = ::read(fd, &c, 1);
        if (n == 1) return c;
        if (n == 0) return '\0';
        if (errno != EINTR) throw std::system_error(errno, std::system_category(), "read");
    }
}

struct pipe_pair {
    unique_fd r, w;
    pipe_pair() {
        int fds[2];
        if (::pipe2(fds, O_CLOEXEC) != 0) throw std::system_error(errno, std::system_category(), "pipe2");
        r.reset(fds[0]);
        w.reset(fds[1]);
    }
};

/// The child's ends of its two pipes.
struct child_io {
    int in;   ///< messages from the test
    int out;  ///< messages to the test
    void send(char c) const { send_byte(out, c); }
    char recv() const { return recv_byte(in); }
};

/// A forked child. The destructor kills and reaps it if the test did not, so a failing
/// assertion never leaves a process behind (or a lock held by one).
class child {
public:
    /// Forks; the child runs body(io) and _exit()s with its result (100 if it threw).
    /// The child never returns into Catch.
    explicit child(const std::function<int(const child_io&)>& body) {
        pipe_pair down, up;
        pid_ = ::fork();
        if (pid_ < 0) throw std::system_error(errno, std::system_category(), "fork");
        if (pid_ == 0) {
            down.w.reset();
            up.r.reset();
            int rc = 100;
            try {
                rc = body(child_io{down.r.get(), up.w.get()});
            } catch (...) {
            }
            ::_exit(rc);
        }
        to_ = std::move(down.w);
        from_ = std::move(up.r);
    }
    child(const child&) = delete;
    child& operator=(const child&) = delete;
    ~child() {
        if (pid_ > 0) {
            ::kill(pid_, SIGKILL);
            (void)wait();
        }
    }

    pid_t pid() const { return pid_; }
    void send(char c) const { send_byte(to_.get(), c); }
    char recv() const { return recv_byte(from_.get()); }

    /// Reaps the child. Returns its exit code, or 128 + the signal that killed it.
    int wait() {
        int status = 0;
        pid_t r;
        do {
            r = ::waitpid(pid_, &status, 0);
        } while (r < 0 && errno == EINTR);
        pid_ = -1;
        if (r < 0) return -1;
        if (WIFEXITED(status)) return WEXITSTATUS(status);
        if (WIFSIGNALED(status)) return 128 + WTERMSIG(status);
        return -1;
    }

    int kill_and_wait(int sig) {
        ::kill(pid_, sig);
        return wait();
    }

private:
    pid_t pid_ = -1;
    unique_fd to_, from_;
};

/// A private directory (mkdtemp) holding the lock file; removed with its contents.
class temp_dir {
public:
    temp_dir() {
        std::string templ = "/tmp/kugetsu-boost-XXXXXX";
        if (!::mkdtemp(templ.data())) throw std::system_error(errno, std::system_category(), "mkdtemp");
        char real[PATH_MAX];
        if (!::realpath(templ.c_str(), real)) throw std::system_error(errno, std::system_category(), "realpath");
        path_ = real;
    }
    temp_dir(const temp_dir&) = delete;
    temp_dir& operator=(const temp_dir&) = delete;
    ~temp_dir() {
        if (DIR* d = ::opendir(path_.c_str())) {
            while (const dirent* e = ::readdir(d)) {
                const std::string n = e->d_name;
                if (n != "." && n != "..") ::unlink((path_ + "/" + n).c_str());
            }
            ::closedir(d);
        }
        ::rmdir(path_.c_str());
    }
    const std::string& path() const { return path_; }
    std::string file(const std::string& name) const { return path_ + "/" + name; }

private:
    std::string path_;
};

/// A semaphore name unique to this process and test; removed at the end of the test.
class unique_mutex_name {
public:
    unique_mutex_name() {
        static int counter = 0;
        name_ = "kugetsu-test-" + std::to_string(::getpid()) + "-" + std::to_string(++counter);
        boost_named_mutex_lock::remove(name_);
    }
    unique_mutex_name(const unique_mutex_name&) = delete;
    unique_mutex_name& operator=(const unique_mutex_name&) = delete;
    ~unique_mutex_name() {
        std::error_code ec;
        boost_named_mutex_lock::remove(name_, ec);
    }
    const std::string& name() const { return name_; }

private:
    std::string name_;
};

// Protocol bytes.
constexpr char held = 'h', unlocked = 'u', yes = 'y', no = 'n', error = 'e', go = 'g';

char try_result(bool got, const std::error_code& ec) { return ec ? error : (got ? yes : no); }

/// Whether another process, with a fresh object of type Lock, could take the lock right
/// now. It releases what it took before answering (a file lock would die with it anyway; a
/// named mutex would not).
template <class Lock>
char probe(const std::string& where) {
    child c([&](const child_io& io) {
        Lock l(where);
        std::error_code ec;
        const bool got = l.try_lock(ec);
        if (got) l.unlock();
        io.send(try_result(got, ec));
        return 0;
    });
    const char r = c.recv();
    c.wait();
    return r;
}

/// A child that takes the lock with lock(ec), reports `held`, then on `unlocked` unlocks and
/// reports `unlocked`, then exits on `go` (so the test can tell unlock from death).
template <class Lock>
int hold_until_told(const std::string& where, const child_io& io) {
    Lock l(where);
    std::error_code ec;
    l.lock(ec);
    if (ec) {
        io.send(error);
        return 1;
    }
    io.send(held);
    if (io.recv() != unlocked) return 2;  // EOF or SIGKILL: never unlock
    l.unlock();
    io.send(unlocked);
    (void)io.recv();
    return 0;
}

/// The descriptors this process has open on `path`, with their FD_CLOEXEC flag.
std::vector<std::pair<int, bool>> descriptors_of(const std::string& path) {
    std::vector<std::pair<int, bool>> out;
    DIR* d = ::opendir("/proc/self/fd");
    if (!d) return out;
    while (const dirent* e = ::readdir(d)) {
        const std::string n = e->d_name;
        if (n == "." || n == "..") continue;
        char target[PATH_MAX];
        const ssize_t len = ::readlink(("/proc/self/fd/" + n).c_str(), target, sizeof target - 1);
        if (len <= 0) continue;
        if (std::string(target, static_cast<std::size_t>(len)) != path) continue;
        const int fd = std::stoi(n);
        const int flags = ::fcntl(fd, F_GETFD);
        if (flags >= 0) out.emplace_back(fd, (flags & FD_CLOEXEC) != 0);
    }
    ::closedir(d);
    return out;
}

/// The number of the system call `pid` is blocked in, -1 if it is running or gone, -2 if
/// /proc/PID/syscall cannot be read (no permission, no /proc).
long blocked_syscall(pid_t pid) {
    std::ifstream f("/proc/" + std::to_string(pid) + "/syscall");
    if (!f) return -2;
    std::string first;
    if (!(f >> first)) return -1;
    if (first == "running") return -1;
    try {
        return std::stol(first);
    } catch (...) {
        return -1;
    }
}

enum class blocked { yes, unknown, never };

/// Waits (spinning on /proc, not sleeping) until `waiter` is blocked in system call `nr`.
/// unknown: /proc cannot tell; never: it exited first, or 30 s passed.
blocked wait_until_blocked_in(const child& waiter, long nr) {
    const auto give_up = std::chrono::steady_clock::now() + std::chrono::seconds(30);
    for (;;) {
        const long now = blocked_syscall(waiter.pid());
        if (now == nr) return blocked::yes;
        if (now == -2) return blocked::unknown;
        if (std::chrono::steady_clock::now() > give_up) return blocked::never;
        siginfo_t info{};  // exited already? (WNOWAIT: leave it to be reaped by child::wait)
        if (::waitid(P_PID, static_cast<id_t>(waiter.pid()), &info, WEXITED | WNOHANG | WNOWAIT) == 0 &&
            info.si_pid != 0)
            return blocked::never;
        ::sched_yield();
    }
}

// Written by the waiter's SIGUSR1 handler, so the test knows the signal arrived while the
// waiter was blocked.
int g_signal_fd = -1;
extern "C" void note_signal(int) {
    const int saved = errno;
    const char c = 's';
    (void)!::write(g_signal_fd, &c, 1);
    errno = saved;
}

/// The common body of the EINTR tests: a holder child holds the lock; a waiter child, with
/// a SIGUSR1 handler installed WITHOUT SA_RESTART, blocks in lock(ec); the test signals it
/// while it is blocked in `blocking_syscall`, waits until the handler has run, then lets
/// the holder unlock. Returns what the waiter reported: `yes` if lock(ec) took the lock
/// after the interruption, `error` if it failed (with EINTR in the next byte as 'I').
template <class Lock>
std::string interrupted_waiter_takes_lock(const std::string& where, long blocking_syscall, bool& skipped) {
    skipped = false;
    child holder([&](const child_io& io) { return hold_until_told<Lock>(where, io); });
    REQUIRE(holder.recv() == held);

    pipe_pair signalled;
    child waiter([&](const child_io& io) {
        g_signal_fd = signalled.w.get();
        struct sigaction sa {};
        sa.sa_handler = note_signal;
        sigemptyset(&sa.sa_mask);
        sa.sa_flags = 0;  // no SA_RESTART: the blocked call fails with EINTR
        if (::sigaction(SIGUSR1, &sa, nullptr) != 0) return 3;
        Lock l(where);
        std::error_code ec;
        l.lock(ec);
        if (ec) {
            io.send(error);
            io.send(ec == std::errc::interrupted ? 'I' : '?');
            return 1;
        }
        io.send(yes);
        l.unlock();
        return 0;
    });
    signalled.w.reset();

    const blocked b = wait_until_blocked_in(waiter, blocking_syscall);
    if (b == blocked::unknown) {
        skipped = true;
        holder.send(unlocked);
        return "";
    }
    REQUIRE(b == blocked::yes);
    REQUIRE(::kill(waiter.pid(), SIGUSR1) == 0);
    REQUIRE(recv_byte(signalled.r.get()) == 's');  // the handler ran: the wait was interrupted

    holder.send(unlocked);
    REQUIRE(holder.recv() == unlocked);
    std::string report(1, waiter.recv());
    if (report[0] == error) report += waiter.recv();
    CHECK(waiter.wait() == (report == std::string(1, yes) ? 0 : 1));
    holder.send(go);
    CHECK(holder.wait() == 0);
    return report;
}

} // namespace

// ---------------------------------------------------------------------------------------
// boost_file_lock
// ---------------------------------------------------------------------------------------

TEST_CASE("boost_file_lock excludes another process until its holder unlocks", "[boost][lock][process]") {
    temp_dir dir;
    const std::string path = dir.file("lock");
    child holder([&](const child_io& io) { return hold_until_told<boost_file_lock>(path, io); });
    REQUIRE(holder.recv() == held);

    boost_file_lock mine(path);
    std::error_code ec;
    CHECK_FALSE(mine.try_lock(ec));
    CHECK_FALSE(ec);
    CHECK_FALSE(mine.owns_lock());

    holder.send(unlocked);
    REQUIRE(holder.recv() == unlocked);  // unlocked, still alive
    CHECK(mine.try_lock(ec));
    CHECK_FALSE(ec);
    CHECK(mine.owns_lock());
    CHECK(probe<boost_file_lock>(path) == no);  // and now we exclude others
    mine.unlock();
    CHECK(probe<boost_file_lock>(path) == yes);

    holder.send(go);
    CHECK(holder.wait() == 0);
}

TEST_CASE("boost_file_lock creates a missing lock file with mode 0600", "[boost][lock]") {
    temp_dir dir;
    const std::string path = dir.file("lock");
    boost_file_lock l(path);
    struct stat st {};
    REQUIRE(::stat(path.c_str(), &st) != 0);  // nothing happens before first use
    std::error_code ec;
    l.lock(ec);
    REQUIRE_FALSE(ec);
    REQUIRE(::stat(path.c_str(), &st) == 0);
    CHECK((st.st_mode & 0777) == 0600);
    l.unlock();
}

TEST_CASE("boost_file_lock is released when its holder is SIGKILLed", "[boost][lock][process]") {
    temp_dir dir;
    const std::string path = dir.file("lock");
    child holder([&](const child_io& io) { return hold_until_told<boost_file_lock>(path, io); });
    REQUIRE(holder.recv() == held);

    boost_file_lock mine(path);
    std::error_code ec;
    REQUIRE_FALSE(mine.try_lock(ec));
    REQUIRE_FALSE(ec);

    CHECK(holder.kill_and_wait(SIGKILL) == 128 + SIGKILL);
    CHECK(mine.try_lock(ec));  // the kernel released it when the holder died
    CHECK_FALSE(ec);
    mine.unlock();
}

TEST_CASE("boost_file_lock is not held by a forked child", "[boost][lock][process]") {
    temp_dir dir;
    const std::string path = dir.file("lock");
    boost_file_lock mine(path);
    std::error_code ec;
    mine.lock(ec);
    REQUIRE_FALSE(ec);

    // The child has a copy of `mine`, and of Boost's descriptor.
    child c([&](const child_io& io) {
        std::error_code cec;
        const bool inherited = mine.try_lock(cec);  // the copy: same descriptor, other process
        io.send(try_result(inherited, cec));
        boost_file_lock fresh(path);
        const bool got = fresh.try_lock(cec);
        io.send(try_result(got, cec));
        (void)io.recv();  // stay alive, descriptor open, until told
        return 0;
    });
    CHECK(c.recv() == no);  // the inherited object does not hold it in the child
    CHECK(c.recv() == no);

    mine.unlock();
    // The child is alive and still has the inherited descriptor open: it does not keep the
    // lock (an flock lock on a shared open file description would be kept).
    CHECK(probe<boost_file_lock>(path) == yes);

    c.send(go);
    CHECK(c.wait() == 0);
}

TEST_CASE("a forked child closing its copy of a held boost_file_lock does not release the parent's lock",
          "[boost][lock][process]") {
    temp_dir dir;
    const std::string path = dir.file("lock");
    boost_file_lock mine(path);
    std::error_code ec;
    mine.lock(ec);
    REQUIRE_FALSE(ec);

    child c([&](const child_io& io) {
        io.send(held);
        (void)io.recv();
        return 0;  // _exit closes the inherited descriptor
    });
    REQUIRE(c.recv() == held);
    c.send(go);
    CHECK(c.wait() == 0);

    CHECK(probe<boost_file_lock>(path) == no);  // still ours: fcntl locks belong to a process
    mine.unlock();
    CHECK(probe<boost_file_lock>(path) == yes);
}

TEST_CASE("two boost_file_lock objects in one process do not exclude each other", "[boost][lock][hazard]") {
    // Documented hazard: an fcntl lock belongs to the process, so a second object (or thread)
    // gets it at once, and closing or unlocking any of them drops it for all.
    temp_dir dir;
    const std::string path = dir.file("lock");
    boost_file_lock a(path);
    std::error_code ec;
    a.lock(ec);
    REQUIRE_FALSE(ec);

    SECTION("both objects take the lock") {
        boost_file_lock b(path);
        CHECK(b.try_lock(ec));
        CHECK_FALSE(ec);
        b.lock(ec);  // would block forever if the objects excluded each other
        CHECK_FALSE(ec);
        CHECK(probe<boost_file_lock>(path) == no);  // other processes are still excluded
    }

    SECTION("destroying the second object releases the first object's lock") {
        {
            boost_file_lock b(path);
            REQUIRE(b.try_lock(ec));
        }  // closes Boost's descriptor of the file
        CHECK(a.owns_lock());                        // a still believes it holds the lock...
        CHECK(probe<boost_file_lock>(path) == yes);  // ...but another process gets it
    }

    SECTION("unlocking the second object releases the first object's lock") {
        boost_file_lock b(path);
        REQUIRE(b.try_lock(ec));
        b.unlock();
        CHECK(a.owns_lock());
        CHECK(probe<boost_file_lock>(path) == yes);
    }

    SECTION("closing any other descriptor of the file releases the lock") {
        const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
        REQUIRE(fd >= 0);
        CHECK(probe<boost_file_lock>(path) == no);
        ::close(fd);
        CHECK(probe<boost_file_lock>(path) == yes);
    }

    SECTION("unlock() on an object that never locked leaves the lock alone") {
        boost_file_lock b(path);
        b.unlock();
        CHECK(probe<boost_file_lock>(path) == no);
    }

    a.unlock();
}

TEST_CASE("boost_file_lock's descriptor is not close-on-exec (a Boost 1.74 limitation)", "[boost][lock]") {
    // Boost opens the file with a plain open(O_RDWR) and does not expose the descriptor.
    // If this fails, Boost changed: update the banner of boost_file_lock.hpp and lock.md.
    temp_dir dir;
    const std::string path = dir.file("lock");
    boost_file_lock l(path);
    std::error_code ec;
    l.lock(ec);
    REQUIRE_FALSE(ec);
    const auto fds = descriptors_of(path);
    REQUIRE(fds.size() == 1);  // kugetsu's own O_CLOEXEC creation descriptor is closed
    CHECK_FALSE(fds[0].second);
    l.unlock();
}

TEST_CASE("boost_file_lock reports a missing directory and a symlink as error codes", "[boost][lock]") {
    temp_dir dir;
    std::error_code ec;

    boost_file_lock missing(dir.file("no-such-dir/lock"));
    missing.lock(ec);
    CHECK(ec == std::errc::no_such_file_or_directory);
    CHECK_FALSE(missing.try_lock(ec));
    CHECK(ec == std::errc::no_such_file_or_directory);

    const std::string target = dir.file("target");
    const std::string link = dir.file("lock");
    REQUIRE(::symlink(target.c_str(), link.c_str()) == 0);
    boost_file_lock through_link(link);
    through_link.lock(ec);
    CHECK(ec == std::errc::too_many_symbolic_link_levels);  // O_NOFOLLOW: ELOOP
    CHECK_FALSE(through_link.owns_lock());
}

TEST_CASE("boost_file_lock::lock retries when a signal interrupts the wait", "[boost][lock][process]") {
    temp_dir dir;
    bool skipped = false;
    const std::string report =
        interrupted_waiter_takes_lock<boost_file_lock>(dir.file("lock"), SYS_fcntl, skipped);
    if (skipped) {
        WARN("cannot read /proc/PID/syscall here: EINTR retry not tested");
        return;
    }
    CHECK(report == std::string(1, yes));
}

// ---------------------------------------------------------------------------------------
// boost_named_mutex_lock
// ---------------------------------------------------------------------------------------

TEST_CASE("boost_named_mutex_lock excludes another process until its holder unlocks", "[boost][lock][process]") {
    unique_mutex_name name;
    child holder([&](const child_io& io) { return hold_until_told<boost_named_mutex_lock>(name.name(), io); });
    REQUIRE(holder.recv() == held);

    boost_named_mutex_lock mine(name.name());
    std::error_code ec;
    CHECK_FALSE(mine.try_lock(ec));
    CHECK_FALSE(ec);
    CHECK_FALSE(mine.try_lock_for(std::chrono::milliseconds(20), ec));
    CHECK_FALSE(ec);

    holder.send(unlocked);
    REQUIRE(holder.recv() == unlocked);  // unlocked, still alive
    CHECK(mine.try_lock(ec));
    CHECK_FALSE(ec);
    CHECK(probe<boost_named_mutex_lock>(name.name()) == no);
    mine.unlock();
    CHECK(probe<boost_named_mutex_lock>(name.name()) == yes);

    holder.send(go);
    CHECK(holder.wait() == 0);
}

TEST_CASE("boost_named_mutex_lock::try_lock_for takes the lock when the holder releases it during the wait",
          "[boost][lock][process]") {
    unique_mutex_name name;
    child holder([&](const child_io& io) { return hold_until_told<boost_named_mutex_lock>(name.name(), io); });
    REQUIRE(holder.recv() == held);

    boost_named_mutex_lock mine(name.name());
    std::error_code ec;
    holder.send(unlocked);  // the holder unlocks while we wait (or before: either way we get it)
    CHECK(mine.try_lock_for(std::chrono::seconds(30), ec));
    CHECK_FALSE(ec);
    CHECK(holder.recv() == unlocked);
    mine.unlock();

    holder.send(go);
    CHECK(holder.wait() == 0);
}

TEST_CASE("two boost_named_mutex_lock objects in one process exclude each other", "[boost][lock]") {
    unique_mutex_name name;
    boost_named_mutex_lock a(name.name()), b(name.name());
    std::error_code ec;
    REQUIRE(a.try_lock(ec));
    CHECK_FALSE(b.try_lock(ec));
    CHECK_FALSE(ec);
    CHECK_FALSE(b.try_lock_for(std::chrono::milliseconds(0), ec));
    b.unlock();  // b does not hold it: a no-op, must not release a's lock
    CHECK_FALSE(b.try_lock(ec));
    a.unlock();
    CHECK(b.try_lock(ec));
    b.unlock();
}

TEST_CASE("boost_named_mutex_lock is released when a held object is destroyed", "[boost][lock]") {
    unique_mutex_name name;
    std::error_code ec;
    {
        boost_named_mutex_lock a(name.name());
        REQUIRE(a.try_lock(ec));
    }
    boost_named_mutex_lock b(name.name());
    CHECK(b.try_lock(ec));
    b.unlock();
}

TEST_CASE("boost_named_mutex_lock stays locked after its holder is SIGKILLed, and remove() recovers it",
          "[boost][lock][process]") {
    unique_mutex_name name;
    child holder([&](const child_io& io) { return hold_until_told<boost_named_mutex_lock>(name.name(), io); });
    REQUIRE(holder.recv() == held);
    CHECK(holder.kill_and_wait(SIGKILL) == 128 + SIGKILL);

    // Nothing released it: every try fails, and a timed wait gives up after its timeout.
    boost_named_mutex_lock old(name.name());
    std::error_code ec;
    CHECK_FALSE(old.try_lock(ec));
    CHECK_FALSE(ec);
    const auto start = std::chrono::steady_clock::now();
    CHECK_FALSE(old.try_lock_for(std::chrono::milliseconds(100), ec));
    CHECK_FALSE(ec);
    CHECK(std::chrono::steady_clock::now() - start >= std::chrono::milliseconds(100));
    CHECK(probe<boost_named_mutex_lock>(name.name()) == no);

    // Recovery: with no process using the name, remove it; the next open creates a fresh one.
    CHECK(boost_named_mutex_lock::remove(name.name(), ec));
    CHECK_FALSE(ec);
    boost_named_mutex_lock fresh(name.name());
    CHECK(fresh.try_lock(ec));
    CHECK_FALSE(ec);
    CHECK(probe<boost_named_mutex_lock>(name.name()) == no);  // the fresh one excludes others

    // Why every process must be stopped first: an object that opened the semaphore before
    // remove() keeps the old, stuck one, and does not see the fresh one.
    CHECK_FALSE(old.try_lock(ec));
    CHECK_FALSE(ec);
    fresh.unlock();
    CHECK_FALSE(old.try_lock(ec));
}

TEST_CASE("a forked child's copy of a held boost_named_mutex_lock releases the parent's lock",
          "[boost][lock][process][hazard]") {
    // Documented hazard: a semaphore has no owner. The child's copy believes it holds the
    // lock; its unlock() frees it under the parent; the parent's unlock() then raises the
    // count to 2 and the mutex admits two holders.
    unique_mutex_name name;
    boost_named_mutex_lock mine(name.name());
    std::error_code ec;
    REQUIRE(mine.try_lock(ec));

    child c([&](const child_io& io) {
        io.send(mine.owns_lock() ? yes : no);
        mine.unlock();
        io.send(unlocked);
        return 0;
    });
    CHECK(c.recv() == yes);
    CHECK(c.recv() == unlocked);
    CHECK(c.wait() == 0);

    CHECK(mine.owns_lock());
    CHECK(probe<boost_named_mutex_lock>(name.name()) == yes);  // released under the parent

    mine.unlock();  // the double release: count 2
    boost_named_mutex_lock a(name.name()), b(name.name());
    CHECK(a.try_lock(ec));
    CHECK(b.try_lock(ec));  // two holders at once
    a.unlock();
    b.unlock();
}

TEST_CASE("boost_named_mutex_lock::remove reports whether there was anything to remove", "[boost][lock]") {
    unique_mutex_name name;
    std::error_code ec;
    CHECK_FALSE(boost_named_mutex_lock::remove(name.name(), ec));
    CHECK_FALSE(ec);
    {
        boost_named_mutex_lock l(name.name());
        REQUIRE(l.try_lock(ec));
    }
    CHECK(boost_named_mutex_lock::remove(name.name()));
    CHECK_FALSE(boost_named_mutex_lock::remove(name.name()));
}

TEST_CASE("boost_named_mutex_lock reports a bad name as an error code", "[boost][lock]") {
    std::error_code ec;
    boost_named_mutex_lock slash("kugetsu/with-a-slash");
    slash.lock(ec);
    CHECK(ec == std::errc::invalid_argument);
    CHECK_FALSE(slash.try_lock(ec));
    CHECK(ec == std::errc::invalid_argument);
    CHECK_FALSE(slash.try_lock_for(std::chrono::milliseconds(10), ec));
    CHECK(ec == std::errc::invalid_argument);
    CHECK_FALSE(slash.owns_lock());

    boost_named_mutex_lock too_long(std::string(300, 'k'));
    too_long.lock(ec);
    CHECK(ec);
    CHECK_FALSE(too_long.owns_lock());
}

TEST_CASE("boost_named_mutex_lock::lock retries when a signal interrupts the wait", "[boost][lock][process]") {
    unique_mutex_name name;
    bool skipped = false;
    const std::string report =
        interrupted_waiter_takes_lock<boost_named_mutex_lock>(name.name(), SYS_futex, skipped);
    if (skipped) {
        WARN("cannot read /proc/PID/syscall here: EINTR retry not tested");
        return;
    }
    CHECK(report == std::string(1, yes));
}

#endif // KUGETSU_TEST_BOOST

TEST_CASE("both Boost lock models are Lockable: std::scoped_lock and std::unique_lock hold them, and an error "
          "throws std::system_error naming it", "[boost][lock]") {
    static_assert(kugetsu::lockable<boost_file_lock> && kugetsu::lockable<boost_named_mutex_lock>);
    temp_dir dir;
    const std::string path = dir.file("lock");
    boost_file_lock file(path);
    {
        std::scoped_lock guard(file);
        CHECK(file.owns_lock());
        CHECK(probe<boost_file_lock>(path) == no);
    }
    CHECK_FALSE(file.owns_lock());
    CHECK(probe<boost_file_lock>(path) == yes);
    {
        std::unique_lock guard(file, std::try_to_lock);
        CHECK(guard.owns_lock());
        CHECK(probe<boost_file_lock>(path) == no);
    }
    CHECK(probe<boost_file_lock>(path) == yes);

    unique_mutex_name name;
    boost_named_mutex_lock mutex(name.name());
    {
        std::scoped_lock guard(mutex);
        CHECK(mutex.owns_lock());
        CHECK(probe<boost_named_mutex_lock>(name.name()) == no);
    }
    CHECK(probe<boost_named_mutex_lock>(name.name()) == yes);

    boost_file_lock missing(dir.file("no-such-dir/lock"));
    try {
        std::scoped_lock guard(missing);
        FAIL("locked a lock file in a missing directory");
    } catch (const std::system_error& e) {
        CHECK(e.code() == std::errc::no_such_file_or_directory);
    }
    CHECK_THROWS_AS(missing.try_lock(), std::system_error);
    CHECK_FALSE(missing.owns_lock());
}
