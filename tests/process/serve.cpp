// The daemon loop and what it sleeps on, with real files and processes: home_waiter's wake-ups
// (the store's bell, a slot released, daemon.lock closed, a caught signal), the watcher's
// look-again for an agent it cannot watch (the lost wake-up of an orphan that exits before
// pidfd_open), daemon_presence, and serve()/serve_until() over a real HOME: a pass per
// change, none for this process's own commit, one for another process's.
#include <catch2/catch.hpp>

#include <kugetsu/home.hpp>

#include <chrono>
#include <csignal>
#include <fstream>
#include <vector>

#include <sys/stat.h>
#include <sys/wait.h>

#include "support/proc.hpp"

using namespace kugetsu;
using kugetsu::test::fork_child;
using kugetsu::test::temp_dir;
using kugetsu::test::wait_child;

namespace {

timestamp in(std::chrono::milliseconds d) { return system_clock{}.now() + std::chrono::duration_cast<duration>(d); }

process_ref ref_of(int pid) {
    std::error_code ec;
    const auto st = detail::read_proc_stat(pid, ec);
    REQUIRE(st);
    return {pid, st->start_time, detail::boot_id()};
}

void append(const std::string& path, const char* text) {
    std::ofstream f(path, std::ios::app);
    f << text;
}

/// A waiter that tells a test what the loop did, in order ("drain", "wait"), and answers
/// each wait from a script; wake::stop when the script is done.
struct scripted_waiter {
    std::vector<wake> script;
    std::vector<std::string> log;
    std::vector<wake_plan> plans;
    std::function<void(std::size_t)> on_wait;   // before answering wait number i
    void drain() { log.emplace_back("drain"); }
    wake wait(const wake_plan& plan, std::error_code& ec) {
        ec.clear();
        log.emplace_back("wait");
        plans.push_back(plan);
        const std::size_t i = plans.size() - 1;
        if (on_wait) on_wait(i);
        return i < script.size() ? script[i] : wake::stop;
    }
};
static_assert(waiter<scripted_waiter>);

struct counting_host {
    int passes = 0;
    bool pass(const pass_report&, const std::error_code& ec) {
        ++passes;
        return !ec;
    }
};

} // namespace

TEST_CASE("watcher: an agent that is gone before pidfd_open is looked at again, not slept through") {
    // The pass saw it alive; it ended (and was reaped, its slot already released) before the
    // wait: no pidfd, no inotify event will ever come. The wait must still end well before
    // the deadline (the lost wake-up of an earlier release slept until the deadline, or for ever).
    const int pid = fork_child([] { return 0; });
    const process_ref gone = ref_of(pid);
    REQUIRE(wait_child(pid) == 0);   // reaped: pidfd_open now fails with ESRCH
    temp_dir t;
    watcher w;
    std::error_code ec;
    w.add(t.path(), IN_CLOSE_WRITE, ec);
    REQUIRE_FALSE(ec);
    const auto t0 = std::chrono::steady_clock::now();
    const auto why = w.wait(in(std::chrono::seconds(30)), {}, {gone}, ec);
    CHECK_FALSE(ec);
    CHECK(why == watcher::wake::process);
    CHECK(std::chrono::steady_clock::now() - t0 < std::chrono::seconds(20));
}

TEST_CASE("watcher: a live agent's death wakes the wait through its pidfd") {
    kugetsu::test::pipe_pair p;
    const int pid = fork_child([&] {
        p.close_write();
        p.wait_eof();
        return 0;
    });
    p.close_read();
    watcher w;
    temp_dir t;
    std::error_code ec;
    w.add(t.path(), IN_CLOSE_WRITE, ec);
    const process_ref agent = ref_of(pid);
    p.close_write();   // the child exits now; it stays a zombie (our child) until reaped
    const auto why = w.wait(in(std::chrono::seconds(30)), {}, {agent}, ec);
    CHECK(why == watcher::wake::process);
    CHECK(wait_child(pid) == 0);
}

TEST_CASE("home_waiter: the store's bell is wake::store, a slot released is changed, a caught signal is stop") {
    temp_dir t;
    const home_layout h{t / "home"};
    REQUIRE(::mkdir(h.home.c_str(), 0700) == 0);
    home_waiter w(h, {.daemon_lock = true, .also = {}, .signals = {SIGUSR1}});
    std::error_code ec;
    const wake_plan idle{in(std::chrono::seconds(30)), {}, {}};

    w.drain();
    append(h.home + "/" + home_layout::bell_name, "x");
    CHECK(w.wait(idle, ec) == wake::store);

    w.drain();
    append(h.run() + "/1-2.slot", "x");   // the last close of a slot written to
    CHECK(w.wait(idle, ec) == wake::changed);

    w.drain();
    append(h.home + "/" + home_layout::bell_name, "x");
    append(h.run() + "/1-2.slot", "x");
    CHECK(w.wait(idle, ec) == wake::changed);   // not the bell alone: a pass is needed whatever

    w.drain();
    { daemon_presence d; REQUIRE_FALSE(d.hold(h.daemon_lock())); }   // a daemon came and went
    CHECK(w.wait(idle, ec) == wake::changed);

    w.drain();
    append(h.home + "/.state.db-tmp", "x");   // a store's temporary file never wakes
    CHECK(w.wait({in(std::chrono::milliseconds(50)), {}, {}}, ec) == wake::deadline);

    w.drain();
    ::kill(::getpid(), SIGUSR1);   // blocked: delivered to the waiter's signalfd
    CHECK(w.wait(idle, ec) == wake::stop);
    CHECK(w.last_signal() == SIGUSR1);
    sigset_t s;
    ::sigemptyset(&s);
    ::sigaddset(&s, SIGUSR1);
    ::sigprocmask(SIG_UNBLOCK, &s, nullptr);
}

TEST_CASE("home_waiter: a change between drain() and wait() is not lost (level-triggered)") {
    temp_dir t;
    const home_layout h{t / "home"};
    REQUIRE(::mkdir(h.home.c_str(), 0700) == 0);
    home_waiter w(h);
    std::error_code ec;
    w.drain();
    append(h.run() + "/9-9.slot", "x");   // during the "pass"
    CHECK(w.wait({in(std::chrono::seconds(30)), {}, {}}, ec) == wake::changed);
}

TEST_CASE("daemon_presence: held, seen by every asker, let go; unsafe files refused") {
    temp_dir t;
    const std::string lock = t / "daemon.lock";
    CHECK_FALSE(daemon_running(lock));   // no file
    {
        daemon_presence d;
        REQUIRE_FALSE(d.hold(lock));
        CHECK(d.held());
        CHECK(daemon_running(lock));
        // Another process asks too, and sees it.
        CHECK(wait_child(fork_child([&] { return daemon_running(lock) ? 0 : 1; })) == 0);
        daemon_presence second;   // several daemons may hold it at once
        CHECK_FALSE(second.hold(lock));
        d.release();
        CHECK(daemon_running(lock));   // still held by the second
    }
    CHECK_FALSE(daemon_running(lock));

    const std::string fifo = t / "fifo.lock";
    REQUIRE(::mkfifo(fifo.c_str(), 0600) == 0);
    daemon_presence d;
    CHECK(d.hold(fifo) == errc::unsafe_state);
    CHECK(d.detail().find(fifo) != std::string::npos);
    CHECK_FALSE(daemon_running(fifo));

    const std::string open_mode = t / "open.lock";
    append(open_mode, "");
    ::chmod(open_mode.c_str(), 0666);
    CHECK(d.hold(open_mode) == errc::unsafe_state);

    const std::string link = t / "link.lock";
    REQUIRE(::symlink(lock.c_str(), link.c_str()) == 0);
    CHECK(d.hold(link));   // never followed
    CHECK_FALSE(d.held());
}

TEST_CASE("serve: drain before every pass and only then; one pass per wake-up; once; stop") {
    temp_dir t;
    auto d = open_dispatcher(t / "home", {.cap = 2});
    scripted_waiter w;
    w.script = {wake::changed, wake::process, wake::deadline};
    counting_host host;
    const auto end = serve(d, w, {}, host);
    CHECK(end.why == serve_end::reason::stop);
    CHECK(host.passes == 4);
    CHECK(w.log == std::vector<std::string>{"drain", "wait", "drain", "wait", "drain", "wait", "drain", "wait"});

    scripted_waiter once;
    counting_host h1;
    CHECK(serve(d, once, {.once = true}, h1).why == serve_end::reason::once);
    CHECK(h1.passes == 1);
    CHECK(once.log == std::vector<std::string>{"drain"});
}

TEST_CASE("serve: a pass for another process's commit, none for its own, and no drain without a pass") {
    temp_dir t;
    auto d = open_dispatcher(t / "home", {.cap = 2});
    auto other = open_dispatcher(t / "home");
    scripted_waiter w;
    w.script = {wake::store, wake::store, wake::store};
    w.on_wait = [&](std::size_t i) {
        if (i == 1) other.enqueue({"t1", {"true"}});   // another connection commits
    };
    counting_host host;
    serve(d, w, {.once = false, .idle_checkpoint_after = std::chrono::hours(1)}, host);
    // pass 1 (start); wait 0: store, nothing committed by another: no pass, no drain;
    // wait 1: another process committed: pass 2 (which starts t1 and commits itself);
    // wait 2: store, only its own commit since: no pass; wait 3: stop.
    CHECK(host.passes == 2);
    CHECK(w.log == std::vector<std::string>{"drain", "wait", "wait", "drain", "wait", "wait"});
    std::error_code ec;
    CHECK(d.store().get_item("t1", ec)->state != task_state::pending);
}

TEST_CASE("serve: the plan's deadline is a running agent's timeout") {
    temp_dir t;
    auto d = open_dispatcher(t / "home", {.cap = 1});
    task_spec s{"slow", {"sleep", "30"}};
    s.timeout = std::chrono::seconds(5);
    d.enqueue(s);
    scripted_waiter w;
    serve(d, w, {.once = false, .idle_checkpoint_after = std::chrono::hours(1)});
    REQUIRE(w.plans.size() == 1);
    std::error_code ec;
    const auto it = d.store().get_item("slow", ec);
    REQUIRE(it->state == task_state::running);
    REQUIRE(w.plans[0].deadline);
    CHECK(*w.plans[0].deadline == *it->started_at + std::chrono::seconds(5));
    CHECK(w.plans[0].agents.size() == 1);
    d.cancel("slow");
    d.spawner().wait(it->process, ec);
}

TEST_CASE("serve_until: done, given up at its deadline, stopped") {
    temp_dir t;
    auto d = open_dispatcher(t / "home", {.cap = 1});
    int calls = 0;
    scripted_waiter w;
    w.script = {wake::changed, wake::changed};
    auto r = serve_until<int>(d, w, [&]() -> std::optional<int> { return ++calls == 3 ? std::optional<int>(7) : std::nullopt; },
                              [] { return false; });
    CHECK(r.why == until_end<int>::reason::done);
    CHECK(r.value == 7);

    home_waiter hw(home_layout{t / "home"});
    const auto t0 = std::chrono::steady_clock::now();
    auto late = serve_until<int>(d, hw, [] { return std::optional<int>(); }, [] { return true; },
                                 in(std::chrono::milliseconds(200)));
    CHECK(late.why == until_end<int>::reason::timed_out);
    CHECK(std::chrono::steady_clock::now() - t0 >= std::chrono::milliseconds(190));

    scripted_waiter stop;
    CHECK(serve_until<int>(d, stop, [] { return std::optional<int>(); }, [] { return false; }).why ==
          until_end<int>::reason::stop);
}
