// fork_spawner on real processes: argv without a shell, process groups, logs, exec failures
// through the CLOEXEC pipe, the held phase, identity that survives PID reuse, signals, the
// slot records (held, exec, noexec, exit with its end time), orphans adopted by a child
// subreaper, and the sweep of slots no session names.
#include <catch2/catch.hpp>

#include <kugetsu/lock/flock_lock.hpp>
#include <kugetsu/spawn/fork_spawner.hpp>

#include <chrono>
#include <csignal>
#include <cstddef>
#include <filesystem>
#include <fstream>
#include <random>
#include <sstream>
#include <thread>
#include <utility>

#include <poll.h>
#include <sys/file.h>
#include <sys/prctl.h>
#include <sys/stat.h>
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

/// The record in a slot file, read without its lock.
kugetsu::detail::slot_record record_of(const std::string& path) {
    return kugetsu::detail::parse_slot_record(slurp(path));
}

using record_kind = kugetsu::detail::slot_record::kind;

/// The agent's parent: its supervisor while that lives.
int parent_of(int pid) {
    std::error_code ec;
    auto st = kugetsu::detail::read_proc_stat(pid, ec);
    return st ? st->ppid : 0;
}

timestamp now_us() {
    return std::chrono::time_point_cast<duration>(std::chrono::system_clock::now());
}

/// Creates a private file (0600) holding `content`.
void put_file(const std::string& path, const std::string& content, mode_t mode = 0600) {
    const int fd = ::open(path.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
    REQUIRE(fd >= 0);
    REQUIRE(::write(fd, content.data(), content.size()) == static_cast<ssize_t>(content.size()));
    ::close(fd);
    REQUIRE(::chmod(path.c_str(), mode) == 0);
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
    // The agent is reaped; its slot stays, saying that the program never ran, until the
    // dispatcher has recorded the failure and forgets it.
    CHECK(record_of(sp.slot_path(p)).what == record_kind::noexec);
    CHECK(sp.poll(p, ec).state == process_state::never_ran);
    CHECK_FALSE(ec);
    sp.forget(p);
    CHECK_FALSE(std::filesystem::exists(sp.slot_path(p)));
    CHECK(sp.poll(p, ec).state == process_state::gone);
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
    CHECK(sp.poll(p, ec).state == process_state::never_ran);
}

TEST_CASE("an abandoned held child never runs the program; its slot says so until a sweep finds no session naming it") {
    temp_dir d;
    fork_spawner sp(d / "logs");
    std::error_code ec;
    const std::string marker = d / "ran";
    auto p = sp.spawn({"t1", {"/bin/sh", "-c", "echo ran > " + marker}, ""}, ec);
    REQUIRE_FALSE(ec);
    CHECK(sp.poll(p, ec).state == process_state::running);   // held: counts as live
    REQUIRE(std::filesystem::exists(sp.slot_path(p)));
    CHECK(record_of(sp.slot_path(p)).what == record_kind::held);
    sp.abandon(p);
    CHECK_FALSE(std::filesystem::exists(marker));
    CHECK(kugetsu::detail::read_proc_stat(p.pid, ec) == std::nullopt);   // reaped
    // A session made visible by a commit reported failed may name it: it never ran.
    REQUIRE(std::filesystem::exists(sp.slot_path(p)));
    CHECK(record_of(sp.slot_path(p)).what == record_kind::noexec);
    CHECK(sp.poll(p, ec).state == process_state::never_ran);
    sp.sweep({p});   // named by a session: kept
    CHECK(std::filesystem::exists(sp.slot_path(p)));
    sp.sweep({});    // named by none: removed
    CHECK_FALSE(std::filesystem::exists(sp.slot_path(p)));
    sp.release(p, ec);
    CHECK(ec == errc::not_held);
}

TEST_CASE("a held child whose spawning process dies exits without running the program, and its slot stays saying so") {
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
        ::write(out.w, &p.start_time, sizeof p.start_time);
        ::_exit(0);   // dies with the child held (no destructor runs)
    });
    out.close_write();
    int ids[2] = {};
    REQUIRE(::read(out.r, ids, sizeof ids) == sizeof ids);
    const int held = ids[0];
    std::uint64_t start_time = 0;
    REQUIRE(::read(out.r, &start_time, sizeof start_time) == sizeof start_time);
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
    ::prctl(PR_SET_CHILD_SUBREAPER, 0);
    CHECK(std::filesystem::exists(d / "logs/t1.log"));   // the log stays
    // The slot stays too (its caller may have committed a session naming the agent), and
    // says that the program never ran: any process polling it learns never_ran.
    const process_ref p{held, start_time, kugetsu::detail::boot_id()};
    fork_spawner other(d / "logs");
    REQUIRE(std::filesystem::exists(other.slot_path(p)));
    CHECK(slurp(other.slot_path(p)).rfind("kugetsu-noexec 2\n", 0) == 0);
    std::error_code ec;
    CHECK(other.poll(p, ec).state == process_state::never_ran);
    CHECK(other.wait(p, ec).state == process_state::never_ran);
    // A sweep keeps it while a session names it, and removes it once none does.
    other.sweep({p});
    CHECK(std::filesystem::exists(other.slot_path(p)));
    other.sweep({});
    CHECK_FALSE(std::filesystem::exists(other.slot_path(p)));
    for (auto& f : std::filesystem::directory_iterator(d / "logs"))
        CHECK(f.path().extension() != ".slot");
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
    CHECK(record_of(sp.slot_path(p)).what == record_kind::exec);   // it runs the program
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
    CHECK(record_of(sp.slot_path(p)).what == record_kind::noexec);
    CHECK(sp.poll(p, ec).state == process_state::never_ran);
}

TEST_CASE("a held agent killed by a signal never ran: no exit record, no on-exit command, abandon() returns, poll says never_ran") {
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
    CHECK_FALSE(std::filesystem::exists(marker));
    // The agent could not say it was abandoned: its slot stays, still saying "held".
    REQUIRE(std::filesystem::exists(slot));
    CHECK(slurp(slot) == "kugetsu-held 2\n");
    CHECK(sp.poll(p, ec).state == process_state::never_ran);
    CHECK_FALSE(ec);
    fork_spawner other(d / "logs");   // any process learns the same
    CHECK(other.poll(p, ec).state == process_state::never_ran);
    sp.forget(p);
    CHECK_FALSE(std::filesystem::exists(slot));
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
    const auto rec = kugetsu::detail::parse_slot_record(slurp(marker));   // what the hook saw
    CHECK(rec.what == record_kind::exited);
    CHECK(rec.version == 2);
    CHECK(rec.exit_code == 3);
    CHECK(rec.at.has_value());
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

// ---- slot records, orphans, the sweep -----------------------------------------------------

TEST_CASE("a released agent's exit record carries the time it ended, stamped by its supervisor") {
    temp_dir d;
    fork_spawner sp(d / "logs");
    std::error_code ec;
    const std::string stamp = d / "ended";
    // The agent's last act is to write the time (microseconds since the epoch).
    auto p = sp.spawn({"t1", {"/bin/sh", "-c", "date +%s%6N > " + stamp}, ""}, ec);
    REQUIRE_FALSE(ec);
    sp.release(p, ec);
    REQUIRE_FALSE(ec);
    REQUIRE(sp.wait(p, ec).state == process_state::exited);
    // Poll well after the end: a time taken by poll() itself would be this late.
    std::this_thread::sleep_for(std::chrono::milliseconds(400));
    const timestamp polled_at = now_us();
    const auto st = sp.poll(p, ec);
    REQUIRE(st.state == process_state::exited);
    CHECK(st.exit_code == 0);
    REQUIRE(st.ended_at.has_value());
    const timestamp agent_end{duration(std::stoll(slurp(stamp)))};
    INFO("agent's own end " << agent_end.time_since_epoch().count() << " us, recorded "
                            << st.ended_at->time_since_epoch().count() << " us, polled at "
                            << polled_at.time_since_epoch().count() << " us");
    CHECK(*st.ended_at >= agent_end);
    CHECK(*st.ended_at - agent_end < std::chrono::milliseconds(250));   // a few ms, unless the host is loaded
    CHECK(polled_at - *st.ended_at > std::chrono::milliseconds(300));
    CHECK(record_of(sp.slot_path(p)).at == st.ended_at);
}

TEST_CASE("an agent whose supervisor is killed after exec keeps its exit code and end time when its host is a subreaper that adopts orphans, and is gone when it is not") {
    temp_dir d;
    REQUIRE(::mkfifo((d / "hold").c_str(), 0600) == 0);
    REQUIRE(::mkfifo((d / "ready").c_str(), 0600) == 0);
    // Runs in a forked child (so that the test process is not made a subreaper); the result
    // is an exit code: 0 = as expected, others say which step failed.
    auto scenario = [&](bool subreaper) {
        return fork_child([&]() -> int {
            if (subreaper && ::prctl(PR_SET_CHILD_SUBREAPER, 1) != 0) return 10;
            const int hold = ::open((d / "hold").c_str(), O_RDWR | O_CLOEXEC);
            const int ready = ::open((d / "ready").c_str(), O_RDWR | O_CLOEXEC);
            fork_spawner sp(d / "logs", d / "run");
            sp.adopt_orphans(true);
            std::error_code ec;
            auto p = sp.spawn({"t1", {KUGETSU_PROBE_AGENT, d / "counter", "--ready", d / "ready", "--hold", d / "hold",
                                      "--exit", "7"},
                               ""},
                              ec);
            if (ec) return 11;
            sp.release(p, ec);
            if (ec) return 12;
            char c;
            if (::read(ready, &c, 1) != 1) return 13;
            ::close(ready);
            const int sup = parent_of(p.pid);
            if (sup <= 1 || sup == ::getpid()) return 14;
            ::kill(sup, SIGKILL);
            await_death(sup);
            if (sp.poll(p, ec).state != process_state::running) return 15;   // it holds its slot
            if (subreaper && parent_of(p.pid) != ::getpid()) return 16;       // adopted by this process
            if (!subreaper && parent_of(p.pid) == ::getpid()) return 17;
            const timestamp before_end = now_us();
            ::close(hold);   // the agent ends, exiting 7
            await_death(p.pid);
            const auto st = sp.wait(p, ec);
            const timestamp after = now_us();
            if (ec) return 18;
            if (!subreaper) {
                if (st.state != process_state::gone) return 19;   // init reaped it: the code is lost
                return record_of(sp.slot_path(p)).what == record_kind::exec ? 0 : 20;
            }
            if (st.state != process_state::exited) return 21;
            if (st.exit_code != 7 || st.timed_out) return 22;
            if (!st.ended_at || *st.ended_at < before_end || *st.ended_at > after) return 23;
            if (kugetsu::detail::read_proc_stat(p.pid, ec)) return 24;   // reaped
            // Any process reads the same from the slot (no adoption needed).
            fork_spawner other(d / "logs", d / "run");
            const auto seen = other.poll(p, ec);
            if (seen.state != process_state::exited || seen.exit_code != 7 || seen.ended_at != st.ended_at) return 25;
            return 0;
        });
    };
    CHECK(wait_child(scenario(true)) == 0);
    CHECK(wait_child(scenario(false)) == 0);
}

TEST_CASE("with adopt_orphans, a poll records an orphan zombie child that exec'd, leaves one that never ran alone, and reaps the others") {
    temp_dir d;
    std::filesystem::create_directory(d / "run");
    ::chmod((d / "run").c_str(), 0700);
    // In a forked child: adopt_orphans reaps every child of its process.
    const pid_t host = fork_child([&]() -> int {
        fork_spawner sp(d / "logs", d / "run");
        sp.adopt_orphans(true);
        std::error_code ec;
        auto zombie = [&](int code) {
            const pid_t z = ::fork();
            if (z == 0) ::_exit(code);
            const auto st = kugetsu::detail::read_proc_stat(z, ec);
            return process_ref{z, st ? st->start_time : 0, kugetsu::detail::boot_id()};
        };
        const auto ran = zombie(9), held = zombie(127), plain = zombie(3);
        put_file(sp.slot_path(ran), "kugetsu-exec 2 1000\n");
        put_file(sp.slot_path(held), "kugetsu-noexec 2\n");
        for (const auto& z : {ran, held, plain}) await_death(z.pid);
        const timestamp before = now_us();
        sp.poll(sp.self(), ec);   // any poll reaps
        const timestamp after = now_us();
        for (const auto& z : {ran, held, plain})
            if (kugetsu::detail::read_proc_stat(z.pid, ec)) return 10;   // all reaped
        const auto rec = record_of(sp.slot_path(ran));
        if (rec.what != record_kind::exited || rec.exit_code != 9 || !rec.at || *rec.at < before || *rec.at > after)
            return 11;
        if (slurp(sp.slot_path(held)) != "kugetsu-noexec 2\n") return 12;   // never turned into an exit
        if (sp.poll(held, ec).state != process_state::never_ran) return 13;
        if (sp.poll(ran, ec).state != process_state::exited) return 14;
        return 0;
    });
    CHECK(wait_child(host) == 0);
}

TEST_CASE("a zombie agent whose parent is another live process counts running until that parent reaps it") {
    temp_dir d;
    fork_spawner sp(d / "logs", d / "run");
    std::filesystem::create_directory(d / "run");
    ::chmod((d / "run").c_str(), 0700);
    pipe_pair out, go;
    // The parent: a stand-in for a kugetsu daemon that is the agent's subreaper. Its agent has
    // exited at once; it reaps (and records) it only when told to.
    const pid_t parent = fork_child([&]() -> int {
        out.close_read();
        go.close_write();
        fork_spawner host(d / "logs", d / "run");
        host.adopt_orphans(true);
        const pid_t z = ::fork();
        if (z == 0) ::_exit(5);
        ::write(out.w, &z, sizeof z);
        if (go.get() != 'r') return 1;
        std::error_code ec;
        host.poll(host.self(), ec);   // records and reaps it
        out.put('d');
        go.wait_eof();
        return 0;
    });
    out.close_write();
    go.close_read();
    pid_t z = 0;
    REQUIRE(::read(out.r, &z, sizeof z) == sizeof z);
    await_death(z);
    std::error_code ec;
    const auto st = kugetsu::detail::read_proc_stat(z, ec);
    REQUIRE(st);
    REQUIRE(st->state == 'Z');
    REQUIRE(st->ppid == parent);
    const process_ref p{z, st->start_time, kugetsu::detail::boot_id()};
    const std::string slot = sp.slot_path(p);
    // It exec'd (its supervisor died): not reaped yet, so it counts, whatever the parent.
    put_file(slot, "kugetsu-exec 2 1000\n");
    CHECK(sp.poll(p, ec).state == process_state::running);
    CHECK_FALSE(ec);
    // The same zombie with a slot saying it never ran: never_ran; with an empty (0.1) slot, or
    // none: as before, a zombie that is not ours has ended.
    put_file(slot, "kugetsu-noexec 2\n");
    CHECK(sp.poll(p, ec).state == process_state::never_ran);
    put_file(slot, "");
    CHECK(sp.poll(p, ec).state == process_state::gone);
    std::filesystem::remove(slot);
    CHECK(sp.poll(p, ec).state == process_state::gone);
    // Back to "exec": the parent records the exit and reaps it; then it has exited 5.
    put_file(slot, "kugetsu-exec 2 1000\n");
    CHECK(sp.poll(p, ec).state == process_state::running);
    go.put('r');
    REQUIRE(out.get() == 'd');
    const auto end = sp.poll(p, ec);
    CHECK(end.state == process_state::exited);
    CHECK(end.exit_code == 5);
    CHECK(end.ended_at.has_value());
    go.close_write();
    CHECK(wait_child(parent) == 0);
}

TEST_CASE("a zombie agent whose parent is init is gone, and one whose parent is this process without adopt_orphans is gone") {
    temp_dir d;
    fork_spawner sp(d / "logs", d / "run");
    std::filesystem::create_directory(d / "run");
    ::chmod((d / "run").c_str(), 0700);
    std::error_code ec;
    // Our own child, left a zombie: this spawner does not adopt orphans, so nobody will record it.
    const pid_t z = ::fork();
    if (z == 0) ::_exit(4);
    await_death(z);
    const auto st = kugetsu::detail::read_proc_stat(z, ec);
    REQUIRE(st);
    REQUIRE(st->state == 'Z');
    const process_ref p{z, st->start_time, kugetsu::detail::boot_id()};
    put_file(sp.slot_path(p), "kugetsu-exec 2 1000\n");
    CHECK(sp.poll(p, ec).state == process_state::gone);
    CHECK(kugetsu::detail::read_proc_stat(z, ec).has_value());   // and it was not reaped: not ours to reap
    wait_child(z);
}

TEST_CASE("sweep removes free slots no session names and stale temporary slots, and nothing else") {
    temp_dir d;
    fork_spawner sp(d / "logs", d / "run");
    std::error_code ec;
    // A real agent that ran and ended, and one still held: their slots are made by spawn().
    auto ended = sp.spawn({"t1", {"/bin/true"}, ""}, ec);
    REQUIRE_FALSE(ec);
    sp.release(ended, ec);
    REQUIRE(sp.wait(ended, ec).state == process_state::exited);
    auto held = sp.spawn({"t2", {"/bin/true"}, ""}, ec);
    REQUIRE_FALSE(ec);
    const std::string run = d / "run";
    auto at = [&](const std::string& name) { return run + "/" + name; };
    put_file(at("100-200.slot"), "kugetsu-exit 2 0 0 1000\n");   // free, unreferenced: goes
    put_file(at("101-201.slot"), "kugetsu-exit 2 0 0 1000\n");   // free, referenced: stays
    put_file(at("102-202.slot"), "kugetsu-held 2\n");            // locked: stays
    put_file(at("103-203.slot"), "");                            // group-writable: not ours to judge
    ::chmod(at("103-203.slot").c_str(), 0620);
    put_file(at("104-204.slot"), "");                            // another user's (if we can chown)
    const bool can_chown = ::geteuid() == 0 && ::chown(at("104-204.slot").c_str(), 65534, 65534) == 0;
    put_file(d / "victim", "keep me\n");
    std::filesystem::create_symlink(d / "victim", at("105-205.slot"));   // never followed
    put_file(at("106-206.slot"), "");
    std::filesystem::create_hard_link(at("106-206.slot"), d / "second-link");   // two links: stays
    std::filesystem::create_directory(at("107-207.slot"));
    put_file(at("1x-200.slot"), "");                             // not a slot name
    put_file(at(".slot.999.1"), "kugetsu-held 2\n");             // temporary, free, stale: goes
    put_file(at(".slot.999.2"), "");                             // temporary, free, fresh: stays
    put_file(at(".slot.999.3"), "");                             // temporary, locked, stale: stays
    const timespec old[2] = {{0, UTIME_OMIT}, {::time(nullptr) - 60, 0}};
    REQUIRE(::utimensat(AT_FDCWD, at(".slot.999.1").c_str(), old, AT_SYMLINK_NOFOLLOW) == 0);
    REQUIRE(::utimensat(AT_FDCWD, at(".slot.999.3").c_str(), old, AT_SYMLINK_NOFOLLOW) == 0);
    const int lock1 = ::open(at("102-202.slot").c_str(), O_RDONLY | O_CLOEXEC);
    const int lock2 = ::open(at(".slot.999.3").c_str(), O_RDONLY | O_CLOEXEC);
    REQUIRE(::flock(lock1, LOCK_SH) == 0);
    REQUIRE(::flock(lock2, LOCK_SH) == 0);

    sp.sweep({process_ref{101, 201, kugetsu::detail::boot_id()}, held});

    CHECK_FALSE(std::filesystem::exists(sp.slot_path(ended)));
    CHECK_FALSE(std::filesystem::exists(at("100-200.slot")));
    CHECK_FALSE(std::filesystem::exists(at(".slot.999.1")));
    CHECK(std::filesystem::exists(sp.slot_path(held)));
    CHECK(std::filesystem::exists(at("101-201.slot")));
    CHECK(std::filesystem::exists(at("102-202.slot")));
    CHECK(std::filesystem::exists(at("103-203.slot")));
    if (can_chown) CHECK(std::filesystem::exists(at("104-204.slot")));
    CHECK(std::filesystem::is_symlink(at("105-205.slot")));
    CHECK(slurp(d / "victim") == "keep me\n");
    CHECK(std::filesystem::exists(at("106-206.slot")));
    CHECK(std::filesystem::is_directory(at("107-207.slot")));
    CHECK(std::filesystem::exists(at("1x-200.slot")));
    CHECK(std::filesystem::exists(at(".slot.999.2")));
    CHECK(std::filesystem::exists(at(".slot.999.3")));
    // Unlocked, the locked ones go too (102 is named by no session).
    ::close(lock1);
    ::close(lock2);
    sp.sweep({held});
    CHECK_FALSE(std::filesystem::exists(at("102-202.slot")));
    CHECK_FALSE(std::filesystem::exists(at(".slot.999.3")));
    CHECK_FALSE(std::filesystem::exists(at("101-201.slot")));
    CHECK(std::filesystem::exists(sp.slot_path(held)));
    sp.abandon(held);   // never ran: its slot says so until no session names it
    CHECK(std::filesystem::exists(sp.slot_path(held)));
    sp.sweep({});
    CHECK_FALSE(std::filesystem::exists(sp.slot_path(held)));
}

TEST_CASE("a kugetsu 0.1 exit record still reads as exited, with no end time") {
    using kugetsu::detail::parse_slot_record;
    auto v1 = parse_slot_record("kugetsu-exit 1 3 0\n");
    CHECK(v1.what == record_kind::exited);
    CHECK(v1.version == 1);
    CHECK(v1.exit_code == 3);
    CHECK_FALSE(v1.timed_out);
    CHECK_FALSE(v1.at.has_value());
    // Through poll(), from a slot file as a 0.1 supervisor left it (for a dead process).
    temp_dir d;
    fork_spawner sp(d / "logs", d / "run");
    std::filesystem::create_directory(d / "run");
    ::chmod((d / "run").c_str(), 0700);
    const pid_t z = fork_child([] { return 0; });
    std::error_code ec;
    const auto st = kugetsu::detail::read_proc_stat(z, ec);
    REQUIRE(st);
    const process_ref p{z, st->start_time, kugetsu::detail::boot_id()};
    wait_child(z);
    put_file(sp.slot_path(p), "kugetsu-exit 1 3 1\n");
    const auto polled = sp.poll(p, ec);
    CHECK(polled.state == process_state::exited);
    CHECK(polled.exit_code == 3);
    CHECK(polled.timed_out);
    CHECK_FALSE(polled.ended_at.has_value());
    // A 0.1 slot with no record (its supervisor died): identity only, never never_ran.
    put_file(sp.slot_path(p), "");
    CHECK(sp.poll(p, ec).state == process_state::gone);
}

TEST_CASE("slot records parse strictly: the first line only, and nothing else") {
    using kugetsu::detail::parse_slot_record;
    auto r = parse_slot_record("kugetsu-exit 2 137 1 1700000000123456\nleft-over bytes of an older, longer record");
    CHECK(r.what == record_kind::exited);
    CHECK(r.version == 2);
    CHECK(r.exit_code == 137);
    CHECK(r.timed_out);
    REQUIRE(r.at.has_value());
    CHECK(r.at->time_since_epoch().count() == 1700000000123456);
    CHECK(parse_slot_record("kugetsu-held 2\n").what == record_kind::held);
    CHECK(parse_slot_record("kugetsu-noexec 2\n1700000000123456\n").what == record_kind::noexec);
    r = parse_slot_record("kugetsu-exec 2 42\n");
    CHECK(r.what == record_kind::exec);
    CHECK(r.at == timestamp(duration(42)));
    for (const char* bad : {"", "\n", "kugetsu-held 2", "kugetsu-held 1\n", "kugetsu-held 2 \n", "kugetsu-noexec 2 0\n",
                            "kugetsu-exec 2\n", "kugetsu-exec 2 \n", "kugetsu-exec 2 12x\n",
                            "kugetsu-exec 2 1234567890123456789\n", "kugetsu-exit 1 3 0", "kugetsu-exit 1 256 0\n",
                            "kugetsu-exit 1 3 2\n", "kugetsu-exit 1 -3 0\n", "kugetsu-exit 1 0003 0\n",
                            "kugetsu-exit 1 3 0 5\n", "kugetsu-exit 2 3 0\n", "kugetsu-exit 2 3 0 \n",
                            "kugetsu-exit 3 3 0 5\n", "kugetsu-exit 2 3 0 5 \n", " kugetsu-exit 1 3 0\n",
                            "kugetsu-exit 1 3 0\r\n", "KUGETSU-EXIT 1 3 0\n"}) {
        INFO("record: \"" << bad << "\"");
        CHECK(parse_slot_record(bad).what == record_kind::none);
    }
}

TEST_CASE("the slot record parser never crashes on garbage, and what it accepts is well-formed") {
    using kugetsu::detail::parse_slot_record;
    std::mt19937 rng(20261206);
    const std::string seeds[] = {"kugetsu-exit 2 3 1 1700000000123456\n", "kugetsu-exit 1 255 0\n",
                                 "kugetsu-exec 2 1700000000123456\n", "kugetsu-held 2\n", "kugetsu-noexec 2\n"};
    int accepted = 0;
    for (int i = 0; i < 200000; ++i) {
        std::string s;
        if (i % 2) {
            s.resize(rng() % 80);
            for (char& c : s) c = static_cast<char>(rng() % 4 ? rng() % 256 : " 0123456789\n-"[rng() % 13]);
        } else {
            s = seeds[rng() % std::size(seeds)];
            for (int k = rng() % 4; k > 0 && !s.empty(); --k) {   // flip, insert or delete bytes
                const std::size_t at = rng() % s.size();
                const char c = static_cast<char>(rng() % 3 ? "0123456789 \n"[rng() % 12] : rng() % 256);
                switch (rng() % 3) {
                case 0: s[at] = c; break;
                case 1: s.insert(s.begin() + static_cast<std::ptrdiff_t>(at), c); break;
                default: s.erase(at, 1); break;
                }
            }
        }
        const auto r = parse_slot_record(s);
        if (r.what == record_kind::none) continue;
        ++accepted;
        const bool ok = r.what != record_kind::exited ||
                        (r.exit_code >= 0 && r.exit_code <= 255 && (r.version == 1) == !r.at.has_value());
        if (!ok) FAIL("accepted a malformed record: \"" << s << "\"");
        if (r.at && r.at->time_since_epoch().count() < 0) FAIL("negative time in \"" << s << "\"");
    }
    CHECK(accepted > 1000);   // the mutations do reach the accepting paths
}

TEST_CASE("one parser of /proc/PID/stat: a comm with spaces and parentheses, truncated text refused, and both readers agree") {
    using kugetsu::detail::parse_proc_stat;
    // Field 22 is the start time; comm "a) b (c" holds the characters that fool a naive split.
    std::string line = "4242 (a) b (c) S 17";
    for (int field = 5; field <= 21; ++field) line += " " + std::to_string(field * 10);
    line += " 987654321 18 19\n";
    const auto st = parse_proc_stat(line);
    REQUIRE(st);
    CHECK(st->state == 'S');
    CHECK(st->ppid == 17);
    CHECK(st->start_time == 987654321u);
    // Cut anywhere before field 22: no stat (field 22 must have a separator before it).
    const auto field22 = line.find(" 987654321");
    for (std::size_t cut : {std::size_t{0}, std::size_t{5}, line.find(')'), line.rfind(')') + 1, field22})
        CHECK_FALSE(parse_proc_stat(std::string_view(line).substr(0, cut)));
    CHECK_FALSE(parse_proc_stat("no parenthesis at all 1 2 3"));

    // This process, through the allocating reader and the async-signal-safe one.
    std::error_code ec;
    const auto self = kugetsu::detail::read_proc_stat(::getpid(), ec);
    REQUIRE_FALSE(ec);
    REQUIRE(self);
    CHECK(self->start_time != 0);
    CHECK(self->ppid == ::getppid());
    CHECK(kugetsu::detail::start_time_of(::getpid()) == self->start_time);
    CHECK(kugetsu::detail::start_time_of(0x7ffffffe) == 0);   // no such process
}

TEST_CASE("slot file names: the allocating and the async-signal-safe writers agree, and the parser reads back only what they write") {
    using kugetsu::detail::slot_file;
    const std::string run = "/some/run";
    for (const auto& [pid, start] : {std::pair{1, std::uint64_t{0}}, std::pair{0x7fffffff, ~std::uint64_t{0}},
                                     std::pair{4242, std::uint64_t{123456789}}}) {
        const std::string path = slot_file::path(run, pid, start);
        char buf[128];
        slot_file::put_path(buf, run.c_str(), pid, start);
        CHECK(path == buf);
        const std::string name = path.substr(run.size() + 1);
        int p = 0;
        std::uint64_t s = 0;
        REQUIRE(slot_file::parse_name(name, p, s));
        CHECK(p == pid);
        CHECK(s == start);
        CHECK_FALSE(slot_file::is_temp_name(name));
    }
    const std::string temp = slot_file::temp_path(run, 77, 3);
    CHECK(temp == "/some/run/.slot.77.3");
    CHECK(slot_file::is_temp_name(temp.substr(run.size() + 1)));
    int p = 0;
    std::uint64_t s = 0;
    for (const char* bad : {"", ".slot", "1-2", "-2.slot", "1-.slot", "0-5.slot", "2147483648-1.slot",
                            "1-18446744073709551616.slot", "1-2.slot.", "a-2.slot", "1-2-3.slot", "../1-2.slot"})
        CHECK_FALSE(slot_file::parse_name(bad, p, s));
    for (const char* bad : {".slot.", ".slot.1", ".slot.1.", ".slot..1", ".slot.x.1", "slot.1.2"})
        CHECK_FALSE(slot_file::is_temp_name(bad));
}
