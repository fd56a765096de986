// flock_lock on real processes: exclusion, release on SIGKILL, never inherited by an agent.
#include <catch2/catch.hpp>

#include <kugetsu/kugetsu.hpp>

#include <csignal>
#include <filesystem>
#include <fstream>
#include <mutex>

#include <sys/prctl.h>
#include <sys/stat.h>

#include "support/proc.hpp"

using namespace kugetsu;
using kugetsu::test::fork_child;
using kugetsu::test::pipe_pair;
using kugetsu::test::temp_dir;
using kugetsu::test::wait_child;

namespace {
/// In a child process: 1 if a fresh flock_lock on `path` could be taken, 0 if not.
int try_in_child(const std::string& path) {
    return wait_child(fork_child([&] {
        flock_lock l(path);
        std::error_code ec;
        const bool got = l.try_lock(ec);
        return ec ? 2 : got ? 1 : 0;
    }));
}
} // namespace

TEST_CASE("flock_lock excludes another process until it is unlocked") {
    temp_dir d;
    flock_lock l(d / "lock");
    std::error_code ec;
    l.lock(ec);
    REQUIRE_FALSE(ec);
    CHECK(try_in_child(d / "lock") == 0);
    l.unlock();
    CHECK(try_in_child(d / "lock") == 1);
    CHECK(l.try_lock(ec));
    CHECK(try_in_child(d / "lock") == 0);
    l.unlock();
}

TEST_CASE("two flock_lock objects in one process exclude each other") {
    temp_dir d;
    flock_lock a(d / "lock"), b(d / "lock");
    std::error_code ec;
    REQUIRE(a.try_lock(ec));
    CHECK_FALSE(b.try_lock(ec));
    CHECK_FALSE(ec);
    a.unlock();
    CHECK(b.try_lock(ec));
    b.unlock();
}

TEST_CASE("flock_lock is released when its holder is SIGKILLed") {
    temp_dir d;
    pipe_pair locked, never;
    const pid_t holder = fork_child([&] {
        never.close_write();
        flock_lock l(d / "lock");
        std::error_code ec;
        l.lock(ec);
        locked.put(ec ? 'e' : 'L');
        never.wait_eof();   // hold it until killed
        return 0;
    });
    REQUIRE(locked.get() == 'L');
    flock_lock mine(d / "lock");
    std::error_code ec;
    CHECK_FALSE(mine.try_lock(ec));
    ::kill(holder, SIGKILL);
    CHECK(wait_child(holder) == 128 + SIGKILL);
    CHECK(mine.try_lock(ec));
    mine.unlock();
}

TEST_CASE("flock_lock's descriptor is close-on-exec, and a lock file path that is a symlink is refused") {
    temp_dir d;
    flock_lock l(d / "lock");
    std::error_code ec;
    l.lock(ec);
    REQUIRE_FALSE(ec);
    CHECK((::fcntl(l.native_handle(), F_GETFD) & FD_CLOEXEC) != 0);
    l.unlock();
    std::filesystem::create_symlink(d / "elsewhere", d / "link");
    flock_lock bad(d / "link");
    bad.lock(ec);
    CHECK(ec == errc::unsafe_state);
    CHECK(bad.last_error_detail() == (d / "link") + ": a symbolic link, not followed: refused");
    CHECK_FALSE(std::filesystem::exists(d / "elsewhere"));   // nothing made through it
    std::filesystem::create_directory(d / "dir");
    flock_lock dir(d / "dir");
    dir.lock(ec);
    CHECK(ec == errc::unsafe_state);
    CHECK(dir.last_error_detail() == (d / "dir") + ": a directory, not a regular file: refused");
}

TEST_CASE("flock_lock is not held by an agent spawned while it was held") {
    temp_dir d;
    REQUIRE(::mkfifo((d / "hold").c_str(), 0600) == 0);
    REQUIRE(::mkfifo((d / "ready").c_str(), 0600) == 0);
    const int hold = ::open((d / "hold").c_str(), O_RDWR | O_CLOEXEC);
    const int ready = ::open((d / "ready").c_str(), O_RDWR | O_CLOEXEC);
    flock_lock l(d / "lock");
    fork_spawner sp(d / "logs");
    std::error_code ec;
    l.lock(ec);
    REQUIRE_FALSE(ec);
    auto p = sp.spawn({"agent", {KUGETSU_PROBE_AGENT, d / "counter", "--ready", d / "ready", "--hold", d / "hold"}, ""}, ec);
    REQUIRE_FALSE(ec);
    sp.release(p, ec);
    REQUIRE_FALSE(ec);
    l.unlock();
    char c;
    REQUIRE(::read(ready, &c, 1) == 1);   // the agent runs (past exec)
    // The agent is alive, and another process can take the lock.
    CHECK(sp.poll(p, ec).state == process_state::running);
    CHECK(try_in_child(d / "lock") == 1);
    // And none of the agent's descriptors is the lock file.
    const auto lock_ino = std::filesystem::status(d / "lock");
    struct stat lk{};
    ::stat((d / "lock").c_str(), &lk);
    for (auto& fd : std::filesystem::directory_iterator("/proc/" + std::to_string(p.pid) + "/fd")) {
        struct stat st{};
        if (::stat(fd.path().c_str(), &st) == 0) CHECK_FALSE((st.st_ino == lk.st_ino && st.st_dev == lk.st_dev));
    }
    (void)lock_ino;
    ::close(hold);
    auto st = sp.wait(p, ec);
    CHECK(st.state == process_state::exited);
    CHECK(st.exit_code == 0);
    ::close(ready);
}

TEST_CASE("flock_lock refuses a lock file that others may write, or that another user owns") {
    temp_dir d;
    const std::string path = d / "lock";
    { std::ofstream(path) << ""; }
    ::chmod(path.c_str(), 0666);
    flock_lock l(path);
    std::error_code ec;
    l.lock(ec);
    CHECK(ec == errc::unsafe_state);
    ::chmod(path.c_str(), 0600);
    l.lock(ec);
    CHECK_FALSE(ec);
    l.unlock();
    if (::geteuid() == 0) {   // only root can give a file away
        REQUIRE(::chown(path.c_str(), 65534, 65534) == 0);
        flock_lock other(path);
        other.lock(ec);
        CHECK(ec == errc::unsafe_state);
    }
}

TEST_CASE("flock_lock and null_lock are Lockable: std::scoped_lock and std::unique_lock hold them, and a refused "
          "lock file throws std::system_error naming it") {
    static_assert(kugetsu::lockable<flock_lock> && kugetsu::lockable<null_lock>);
    temp_dir d;
    flock_lock l(d / "lock");
    {
        std::scoped_lock guard(l);
        CHECK(try_in_child(d / "lock") == 0);
    }
    CHECK(try_in_child(d / "lock") == 1);
    {
        std::unique_lock guard(l, std::try_to_lock);
        CHECK(guard.owns_lock());
        flock_lock other(d / "lock");
        CHECK_FALSE(other.try_lock());   // held elsewhere: false, no exception
        CHECK(try_in_child(d / "lock") == 0);
    }
    CHECK(try_in_child(d / "lock") == 1);

    null_lock none;
    none.lock();
    CHECK(none.try_lock());
    none.unlock();
    { std::scoped_lock guard(none, l); }   // several at once, deadlock-free (std::lock)

    std::filesystem::create_directory(d / "dir");
    flock_lock dir(d / "dir");
    try {
        std::scoped_lock guard(dir);
        FAIL("locked a directory");
    } catch (const std::system_error& e) {
        CHECK(e.code() == kugetsu::errc::unsafe_state);
        CHECK(std::string(e.what()).find(std::string(d / "dir")) != std::string::npos);
    }
    CHECK_THROWS_AS(dir.try_lock(), std::system_error);
}
