// fork_spawner on real processes: argv without a shell, process groups, logs, exec failures
// through the CLOEXEC pipe, the held phase, identity that survives PID reuse, signals.
#include <catch2/catch.hpp>

#include <kugetsu/lock/flock_lock.hpp>
#include <kugetsu/spawn/fork_spawner.hpp>

#include <csignal>
#include <cstddef>
#include <filesystem>
#include <fstream>
#include <sstream>

#include <poll.h>
#include <sys/prctl.h>
#include <sys/syscall.h>

#include "support/proc.hpp"

using namespace kugetsu;
using kugetsu::test::fork_child;
using kugetsu::test::pipe_pair;
using kugetsu::test::slurp;
using kugetsu::test::temp_dir;
using kugetsu::test::wait_child;

namespace {

/// Blocks until the agent's end is recorded, then checks that poll() agrees with wait().
process_status run_to_end(fork_spawner& sp, const process_ref& p) {
    std::error_code ec;
    const auto st = sp.wait(p, ec);
    REQUIRE_FALSE(ec);
    const auto polled = sp.poll(p, ec);
    CHECK(polled.state == st.state);
    CHECK(polled.exit_code == st.exit_code);
    return st;
}

/// Blocks until any process (not necessarily a child) has exited.
void await_death(int pid) {
    const int fd = static_cast<int>(::syscall(SYS_pidfd_open, pid, 0));
    if (fd < 0) return;   // already gone
    pollfd p{fd, POLLIN, 0};
    while (::poll(&p, 1, -1) < 0 && errno == EINTR) {}
    ::close(fd);
}

/// Waits until every child of this process (the supervisors) has exited.
void await_supervisors() {
    int status;
    while (::waitpid(-1, &status, 0) > 0 || errno == EINTR) {}
}

bool pending_sigterm(int pid) {
    std::istringstream in(slurp("/proc/" + std::to_string(pid) + "/status"));
    for (std::string line; std::getline(in, line);) {
        if (line.rfind("ShdPnd:", 0) == 0 || line.rfind("SigPnd:", 0) == 0) {
            const auto mask = std::stoull(line.substr(7), nullptr, 16);
            if (mask & (1ull << (SIGTERM - 1))) return true;
        }
    }
    return false;
}

} // namespace

TEST_CASE("fork_spawner runs argv without a shell, in its own process group, logging to the task's log") {
    temp_dir d;
    fork_spawner sp(d / "logs");
    std::error_code ec;
    auto p = sp.spawn({"t1", {"/bin/sh", "-c",
                              "echo out; echo err >&2; echo \"arg=$0\"; "
                              "echo pgid=$(cut -d' ' -f5 /proc/$$/stat); echo task=$KUGETSU_TASK_ID; cat",
                              "$HOME; rm -rf /"},
                       ""},
                      ec);
    REQUIRE_FALSE(ec);
    REQUIRE(p.pid > 0);
    CHECK(p.start_time > 0);
    CHECK(p.boot_id == kugetsu::detail::boot_id());
    sp.release(p, ec);
    REQUIRE_FALSE(ec);
    auto st = run_to_end(sp, p);
    CHECK(st.state == process_state::exited);
    CHECK(st.exit_code == 0);   // `cat` read /dev/null: stdin is not the test's
    const std::string log = slurp(d / "logs/t1.log");
    CHECK(log.find("out\n") != std::string::npos);
    CHECK(log.find("err\n") != std::string::npos);
    CHECK(log.find("arg=$HOME; rm -rf /\n") != std::string::npos);
    CHECK(log.find("pgid=" + std::to_string(p.pid) + "\n") != std::string::npos);
    CHECK(log.find("task=t1\n") != std::string::npos);
    CHECK(std::filesystem::status(d / "logs").permissions() == std::filesystem::perms::owner_all);
}

TEST_CASE("fork_spawner finds programs on PATH and reports a missing one before forking") {
    temp_dir d;
    fork_spawner sp(d / "logs");
    std::error_code ec;
    auto p = sp.spawn({"t1", {"true"}, ""}, ec);
    REQUIRE_FALSE(ec);
    sp.release(p, ec);
    CHECK_FALSE(ec);
    CHECK(run_to_end(sp, p).exit_code == 0);
    sp.spawn({"t2", {"kugetsu-no-such-program-xyz"}, ""}, ec);
    CHECK(ec == std::errc::no_such_file_or_directory);
    CHECK(sp.last_error_detail().find("kugetsu-no-such-program-xyz") != std::string::npos);
}

TEST_CASE("an exec failure comes back from release() as the child's errno") {
    temp_dir d;
    fork_spawner sp(d / "logs");
    std::error_code ec;
    auto p = sp.spawn({"t1", {"/nonexistent/agent"}, ""}, ec);
    REQUIRE_FALSE(ec);
    sp.release(p, ec);
    CHECK(ec == std::errc::no_such_file_or_directory);
    CHECK(sp.last_error_detail().find("exec \"/nonexistent/agent\"") != std::string::npos);
    CHECK(sp.poll(p, ec).state == process_state::gone);   // already reaped
    // A file that is not executable.
    std::ofstream(d / "script") << "not a program\n";
    auto q = sp.spawn({"t2", {d / "script"}, ""}, ec);
    REQUIRE_FALSE(ec);
    sp.release(q, ec);
    CHECK(ec == std::errc::permission_denied);
}

TEST_CASE("a working directory that cannot be entered is reported by release()") {
    temp_dir d;
    fork_spawner sp(d / "logs");
    std::error_code ec;
    auto p = sp.spawn({"t1", {"/bin/true"}, d / "missing"}, ec);
    REQUIRE_FALSE(ec);
    sp.release(p, ec);
    CHECK(ec == std::errc::no_such_file_or_directory);
    CHECK(sp.last_error_detail().find("chdir") != std::string::npos);
}

TEST_CASE("an abandoned held child never runs the program") {
    temp_dir d;
    fork_spawner sp(d / "logs");
    std::error_code ec;
    const std::string marker = d / "ran";
    auto p = sp.spawn({"t1", {"/bin/sh", "-c", "echo ran > " + marker}, ""}, ec);
    REQUIRE_FALSE(ec);
    CHECK(sp.poll(p, ec).state == process_state::running);   // held: counts as live
    sp.abandon(p);
    CHECK_FALSE(std::filesystem::exists(marker));
    CHECK(sp.poll(p, ec).state == process_state::gone);
    sp.release(p, ec);
    CHECK(ec == errc::not_held);
}

TEST_CASE("a held child whose spawning process dies exits without running the program") {
    temp_dir d;
    const std::string marker = d / "ran";
    REQUIRE(::prctl(PR_SET_CHILD_SUBREAPER, 1) == 0);
    pipe_pair out;
    const pid_t spawner_proc = fork_child([&] {
        fork_spawner sp(d / "logs");
        std::error_code ec;
        auto p = sp.spawn({"t1", {"/bin/sh", "-c", "echo ran > " + marker}, ""}, ec);
        if (ec) return 1;
        // The held agent's parent is its supervisor: waited for below by pid, not as "any
        // child", which could be a supervisor left by another test.
        std::ifstream stat("/proc/" + std::to_string(p.pid) + "/stat");
        std::string line;
        std::getline(stat, line);
        int ids[2] = {p.pid, std::atoi(line.substr(line.rfind(')') + 4).c_str())};
        ::write(out.w, ids, sizeof ids);
        ::_exit(0);   // dies with the child held (no destructor runs)
    });
    out.close_write();
    int ids[2] = {};
    REQUIRE(::read(out.r, ids, sizeof ids) == sizeof ids);
    const int held = ids[0];
    REQUIRE(ids[1] > 1);
    CHECK(wait_child(spawner_proc) == 0);
    await_death(held);
    // The supervisor (reparented to us, the subreaper) exits 0 once it has let the agent go.
    int status = 0;
    pid_t sup;
    while ((sup = ::waitpid(ids[1], &status, 0)) < 0 && errno == EINTR) {}
    REQUIRE(sup == ids[1]);
    CHECK(WIFEXITED(status));
    CHECK(WEXITSTATUS(status) == 0);
    CHECK_FALSE(std::filesystem::exists(marker));
    // And it removed the slot: nothing is left in the run directory.
    CHECK(std::filesystem::exists(d / "logs/t1.log"));   // the log stays
    for (auto& f : std::filesystem::directory_iterator(d / "logs"))
        CHECK(f.path().extension() != ".slot");
    ::prctl(PR_SET_CHILD_SUBREAPER, 0);
}

TEST_CASE("poll reports exit codes, and 128+signal for a killed agent") {
    temp_dir d;
    fork_spawner sp(d / "logs");
    std::error_code ec;
    auto p = sp.spawn({"t1", {"/bin/sh", "-c", "exit 7"}, ""}, ec);
    sp.release(p, ec);
    auto st = run_to_end(sp, p);
    CHECK(st.state == process_state::exited);
    CHECK(st.exit_code == 7);
    auto q = sp.spawn({"t2", {"/bin/sleep", "1000"}, ""}, ec);
    sp.release(q, ec);
    CHECK(sp.poll(q, ec).state == process_state::running);
    sp.signal(q, stop_signal::kill, ec);
    CHECK_FALSE(ec);
    st = run_to_end(sp, q);
    CHECK(st.exit_code == 128 + SIGKILL);
}

TEST_CASE("signal reaches the agent's whole process group") {
    temp_dir d;
    fork_spawner sp(d / "logs");
    std::error_code ec;
    const std::string fifo = d / "pid.fifo";
    REQUIRE(::mkfifo(fifo.c_str(), 0600) == 0);
    const int rd = ::open(fifo.c_str(), O_RDWR | O_CLOEXEC);   // O_RDWR: the shell's open never blocks
    auto p = sp.spawn({"t1", {"/bin/sh", "-c", "/bin/sleep 1000 & echo $! > " + fifo + "; wait"}, ""}, ec);
    sp.release(p, ec);
    REQUIRE_FALSE(ec);
    std::string line;
    for (char c = 0; c != '\n';) {   // the shell writes the sleeper's pid once it runs
        if (::read(rd, &c, 1) != 1) break;
        line += c;
    }
    ::close(rd);
    const int sleeper = std::stoi(line);
    sp.signal(p, stop_signal::terminate, ec);
    CHECK_FALSE(ec);
    CHECK(run_to_end(sp, p).exit_code == 128 + SIGTERM);
    await_death(sleeper);   // returns only because the group signal killed it too
    std::error_code pec;
    auto st = kugetsu::detail::read_proc_stat(sleeper, pec);
    CHECK((!st || st->state == 'Z'));
}

TEST_CASE("a process ref survives PID reuse: a wrong start time or boot id means gone, and is never signalled") {
    temp_dir d;
    fork_spawner sp(d / "logs");
    pipe_pair ready, never;
    // A process that is not the spawner's child, leading its own group, with SIGTERM blocked
    // so that a signal sent to it stays visible as pending.
    const pid_t other = fork_child([&] {
        never.close_write();
        ::setpgid(0, 0);
        sigset_t s;
        sigemptyset(&s);
        sigaddset(&s, SIGTERM);
        sigprocmask(SIG_BLOCK, &s, nullptr);
        ready.put('r');
        never.wait_eof();
        return 0;
    });
    REQUIRE(ready.get() == 'r');
    std::error_code ec;
    auto st = kugetsu::detail::read_proc_stat(other, ec);
    REQUIRE(st);
    const process_ref real{other, st->start_time, kugetsu::detail::boot_id()};
    process_ref reused = real;
    reused.start_time += 1;
    process_ref rebooted = real;
    rebooted.boot_id = "another-boot";
    CHECK(sp.poll(real, ec).state == process_state::running);
    CHECK(sp.poll(reused, ec).state == process_state::gone);
    CHECK(sp.poll(rebooted, ec).state == process_state::gone);
    sp.signal(reused, stop_signal::terminate, ec);
    sp.signal(rebooted, stop_signal::terminate, ec);
    CHECK_FALSE(pending_sigterm(other));
    sp.signal(real, stop_signal::terminate, ec);
    CHECK(pending_sigterm(other));
    ::kill(other, SIGKILL);
    wait_child(other);
    CHECK(sp.poll(real, ec).state == process_state::gone);
}

TEST_CASE("self() names the calling process") {
    temp_dir d;
    fork_spawner sp(d / "logs");
    auto me = sp.self();
    CHECK(me.pid == ::getpid());
    std::error_code ec;
    CHECK(sp.poll(me, ec).state == process_state::running);
}

TEST_CASE("an agent inherits only stdin, stdout and stderr, even descriptors the host leaked") {
    temp_dir d;
    fork_spawner sp(d / "logs");
    flock_lock l(d / "lock");
    std::error_code ec;
    l.lock(ec);
    const int leaked = ::open("/dev/null", O_RDONLY);   // no O_CLOEXEC: a careless host
    // The supervisor leaves by _exit, which flushes no stdio buffer it inherited; under
    // ThreadSanitizer _exit is intercepted and does, so the test's own unflushed output
    // would land in the agent's log.
    std::fflush(nullptr);
    auto p = sp.spawn({"t1", {"/bin/ls", "/proc/self/fd"}, ""}, ec);
    ::close(leaked);
    sp.release(p, ec);
    l.unlock();
    REQUIRE(run_to_end(sp, p).exit_code == 0);
    const std::string listing = slurp(d / "logs/t1.log");
    INFO("the agent's descriptors: " << listing);
    std::istringstream in(listing);
    std::vector<std::string> fds;
    for (std::string s; in >> s;) fds.push_back(s);
    // 0, 1, 2, the slot (5), and the descriptor ls itself opened to read the directory.
    REQUIRE(fds.size() == 5);
    CHECK(fds[0] == "0");
    CHECK(fds[1] == "1");
    CHECK(fds[2] == "2");
    CHECK(std::count(fds.begin(), fds.end(), std::to_string(fork_spawner::slot_fd)) == 1);
}

// ---- supervision ---------------------------------------------------------------------------

TEST_CASE("an agent's exit code is recorded by its supervisor and readable by any process after its starter died") {
    temp_dir d;
    pipe_pair out;
    const pid_t starter = fork_child([&] {
        fork_spawner sp(d / "logs", d / "run");
        std::error_code ec;
        auto p = sp.spawn({"t1", {"/bin/sh", "-c", "sleep 0.2; exit 7"}, ""}, ec);
        if (ec) return 1;
        sp.release(p, ec);
        if (ec) return 2;
        ::write(out.w, &p, offsetof(process_ref, boot_id));   // pid and start time
        ::_exit(0);                                           // the starter is gone
    });
    REQUIRE(wait_child(starter) == 0);
    process_ref p{};
    REQUIRE(::read(out.r, &p, offsetof(process_ref, boot_id)) == static_cast<ssize_t>(offsetof(process_ref, boot_id)));
    p.boot_id = kugetsu::detail::boot_id();
    fork_spawner other(d / "logs", d / "run");   // a different spawner, as another process would have
    std::error_code ec;
    auto st = other.wait(p, ec);
    REQUIRE_FALSE(ec);
    CHECK(st.state == process_state::exited);
    CHECK(st.exit_code == 7);
    CHECK_FALSE(st.timed_out);
    CHECK(std::filesystem::exists(other.slot_path(p)));
    other.forget(p);
    CHECK_FALSE(std::filesystem::exists(other.slot_path(p)));
    CHECK(other.poll(p, ec).state == process_state::gone);
}

TEST_CASE("the supervisor enforces a timeout: SIGTERM, then SIGKILL after the grace, recorded as timed out") {
    temp_dir d;
    fork_spawner sp(d / "logs");
    std::error_code ec;
    spawn_request r{"t1", {"/bin/sh", "-c", "sleep 60"}, ""};
    r.timeout = std::chrono::milliseconds(100);
    r.kill_grace = std::chrono::milliseconds(100);
    auto p = sp.spawn(r, ec);
    sp.release(p, ec);
    REQUIRE_FALSE(ec);
    auto st = run_to_end(sp, p);
    CHECK(st.exit_code == 128 + SIGTERM);
    CHECK(st.timed_out);
    // An agent that ignores SIGTERM is killed after the grace.
    r.task_id = "t2";
    r.argv = {"/bin/sh", "-c", "trap '' TERM; sleep 60 & wait; sleep 60"};
    auto q = sp.spawn(r, ec);
    sp.release(q, ec);
    REQUIRE_FALSE(ec);
    st = run_to_end(sp, q);
    CHECK(st.exit_code == 128 + SIGKILL);
    CHECK(st.timed_out);
}

TEST_CASE("an agent whose supervisor is killed keeps its slot while it lives, then is gone") {
    temp_dir d;
    REQUIRE(::mkfifo((d / "hold").c_str(), 0600) == 0);
    REQUIRE(::mkfifo((d / "ready").c_str(), 0600) == 0);
    const int hold = ::open((d / "hold").c_str(), O_RDWR | O_CLOEXEC);
    const int ready = ::open((d / "ready").c_str(), O_RDWR | O_CLOEXEC);
    fork_spawner sp(d / "logs");
    std::error_code ec;
    auto p = sp.spawn({"t1", {KUGETSU_PROBE_AGENT, d / "counter", "--ready", d / "ready", "--hold", d / "hold"}, ""}, ec);
    sp.release(p, ec);
    REQUIRE_FALSE(ec);
    char c;
    REQUIRE(::read(ready, &c, 1) == 1);   // the agent holds the FIFO open: closing ours ends it
    ::close(ready);
    auto st = kugetsu::detail::read_proc_stat(p.pid, ec);
    REQUIRE(st);
    // The supervisor is the agent's parent.
    std::istringstream stat(slurp("/proc/" + std::to_string(p.pid) + "/stat"));
    std::string skip;
    int ppid = 0;
    stat >> skip >> skip >> skip >> ppid;
    REQUIRE(ppid > 0);
    REQUIRE(ppid != ::getpid());
    ::kill(ppid, SIGKILL);
    await_death(ppid);
    CHECK(sp.poll(p, ec).state == process_state::running);   // the agent holds the slot
    ::close(hold);                                             // the agent's read ends
    await_death(p.pid);
    auto end = sp.wait(p, ec);
    CHECK(end.state == process_state::gone);                   // its exit code died with the supervisor
}

TEST_CASE("a held agent whose supervisor dies never runs the program, and release() says so") {
    temp_dir d;
    const std::string marker = d / "ran";
    fork_spawner sp(d / "logs");
    std::error_code ec;
    auto p = sp.spawn({"t1", {"/bin/sh", "-c", "echo ran > " + marker}, ""}, ec);
    REQUIRE_FALSE(ec);
    std::istringstream stat(slurp("/proc/" + std::to_string(p.pid) + "/stat"));
    std::string skip;
    int sup = 0;
    stat >> skip >> skip >> skip >> sup;   // the supervisor is the held agent's parent
    REQUIRE(sup > 1);
    REQUIRE(sup != ::getpid());
    ::kill(sup, SIGKILL);
    await_death(sup);
    sp.release(p, ec);   // the go-ahead reaches the agent, which sees its supervisor gone
    CHECK(ec == errc::spawn_failed);
    await_death(p.pid);
    CHECK_FALSE(std::filesystem::exists(marker));
    await_supervisors();
}

TEST_CASE("a held agent killed by a signal never ran: no exit record, no on-exit command, abandon() returns") {
    temp_dir d;
    const std::string marker = d / "hook-ran";
    fork_spawner sp(d / "logs");
    sp.set_on_exit({"/bin/sh", "-c", "echo hook > " + marker});
    std::error_code ec;
    auto p = sp.spawn({"t1", {"/bin/true"}, ""}, ec);
    REQUIRE_FALSE(ec);
    const std::string slot = sp.slot_path(p);
    REQUIRE(std::filesystem::exists(slot));
    ::kill(p.pid, SIGKILL);
    await_death(p.pid);
    // The supervisor neither records an end nor runs the hook (which, as `kugetsu reap`,
    // would wait for the lock that a dispatcher in abandon() holds): abandon() returns.
    sp.abandon(p);
    CHECK(sp.poll(p, ec).state == process_state::gone);
    CHECK_FALSE(std::filesystem::exists(slot));
    CHECK_FALSE(std::filesystem::exists(marker));
}

TEST_CASE("the on-exit command runs after the status is written, unless its lock file is held") {
    temp_dir d;
    const std::string marker = d / "hook-ran";
    const std::string lockfile = d / "daemon.lock";
    { std::ofstream(lockfile) << ""; }
    fork_spawner sp(d / "logs");
    sp.set_on_exit({"/bin/sh", "-c", "cat " + (d / "logs") + "/*.slot > " + marker}, lockfile);
    std::error_code ec;
    auto p = sp.spawn({"t1", {"/bin/sh", "-c", "exit 3"}, ""}, ec);
    sp.release(p, ec);
    REQUIRE_FALSE(ec);
    CHECK(run_to_end(sp, p).exit_code == 3);
    await_supervisors();   // the hook is the supervisor, exec'd
    CHECK(slurp(marker) == "kugetsu-exit 1 3 0\n");
    // With a read OFD lock held on the file (as daemons hold it), the hook is skipped.
    std::filesystem::remove(marker);
    const int held = ::open(lockfile.c_str(), O_RDONLY | O_CLOEXEC);
    struct flock rd{};
    rd.l_type = F_RDLCK;
    rd.l_whence = SEEK_SET;
    REQUIRE(::fcntl(held, F_OFD_SETLK, &rd) == 0);
    auto q = sp.spawn({"t2", {"/bin/sh", "-c", "exit 4"}, ""}, ec);
    sp.release(q, ec);
    CHECK(run_to_end(sp, q).exit_code == 4);
    await_supervisors();
    CHECK_FALSE(std::filesystem::exists(marker));
    ::close(held);
}

TEST_CASE("fork_spawner refuses a run directory others may write, and trusts no status in a slot others may write") {
    temp_dir d;
    std::error_code ec;
    {
        std::filesystem::create_directory(d / "open-run");
        ::chmod((d / "open-run").c_str(), 0777);
        fork_spawner sp(d / "logs", d / "open-run");
        sp.spawn({"t1", {"/bin/true"}, ""}, ec);
        CHECK(ec == errc::unsafe_state);
        CHECK(sp.last_error_detail().find("open-run") != std::string::npos);
    }
    fork_spawner sp(d / "logs");
    auto p = sp.spawn({"t2", {"/bin/sh", "-c", "exit 0"}, ""}, ec);
    sp.release(p, ec);
    REQUIRE_FALSE(ec);
    REQUIRE(run_to_end(sp, p).exit_code == 0);
    ::chmod(sp.slot_path(p).c_str(), 0666);   // anyone could have written "exited 0" into it
    auto st = sp.poll(p, ec);
    CHECK(ec == errc::unsafe_state);
    CHECK(st.state == process_state::running);   // doubt never frees a slot
    ::chmod(sp.slot_path(p).c_str(), 0600);
    CHECK(sp.poll(p, ec).state == process_state::exited);
}
