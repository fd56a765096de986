// Many real processes race start() on one state directory. With flock_lock the agents
// themselves never count more than the cap; with null_lock (and a barrier between counting
// and spawning) the same race runs more: the check can fail, so the test can catch it.
// Synchronised with pipes and FIFOs only: no sleeps.
#include <catch2/catch.hpp>

#include <kugetsu/home.hpp>
#include <kugetsu/kugetsu.hpp>

#include <sys/prctl.h>
#include <sys/stat.h>

#include <map>
#include <sstream>

#include "support/proc.hpp"

using namespace kugetsu;
using kugetsu::test::fork_child;
using kugetsu::test::pipe_pair;
using kugetsu::test::temp_dir;
using kugetsu::test::wait_child;

namespace {

/// A store that stops every caller right after it has listed the sessions (the count) until
/// all racers have counted: the widest possible check-then-act window, made deterministic.
/// Its SQLite store has no units (options::units = false): with them, BEGIN IMMEDIATE would
/// serialise the racers even without a lock, and the window could not open.
class barrier_store {
public:
    barrier_store(sqlite_store inner, int counted_fd, int go_fd) : inner_(std::move(inner)), counted_(counted_fd), go_(go_fd) {}

    std::vector<session> list_sessions(std::error_code& ec) {
        auto v = inner_.list_sessions(ec);
        if (!passed_) {
            passed_ = true;
            while (::write(counted_, "c", 1) < 0 && errno == EINTR) {}
            char c;
            ssize_t n;
            while ((n = ::read(go_, &c, 1)) != 0)
                if (n < 0 && errno != EINTR) break;
        }
        return v;
    }
    void begin(std::error_code& ec) { inner_.begin(ec); }
    void commit(durability d, std::error_code& ec) { inner_.commit(d, ec); }
    void rollback() noexcept { inner_.rollback(); }
    bool in_unit() const noexcept { return inner_.in_unit(); }
    void create_item(const queue_item& it, std::error_code& ec) { inner_.create_item(it, ec); }
    void put_item(const queue_item& it, std::error_code& ec) { inner_.put_item(it, ec); }
    std::optional<queue_item> get_item(std::string_view id, std::error_code& ec) { return inner_.get_item(id, ec); }
    std::vector<queue_item> list_items(std::error_code& ec) { return inner_.list_items(ec); }
    std::vector<queue_item> items_in_state(task_state s, std::size_t n, std::error_code& ec) {
        return inner_.items_in_state(s, n, ec);
    }
    void put_session(const session& s, std::error_code& ec) { inner_.put_session(s, ec); }
    void remove_session(std::string_view id, std::error_code& ec) { inner_.remove_session(id, ec); }
    std::uint64_t append_event(const event& e, std::error_code& ec) { return inner_.append_event(e, ec); }
    std::vector<event> events_after(std::uint64_t seq, std::size_t n, std::error_code& ec) {
        return inner_.events_after(seq, n, ec);
    }
    std::optional<limits> get_limits(std::error_code& ec) { return inner_.get_limits(ec); }
    void put_limits(const limits& l, std::error_code& ec) { inner_.put_limits(l, ec); }
    std::vector<queue_item> runnable(std::size_t n, const std::vector<std::string>& skip, std::error_code& ec) {
        return inner_.runnable(n, skip, ec);
    }
    queue_schedule get_schedule(std::error_code& ec) { return inner_.get_schedule(ec); }
    void put_schedule(const queue_schedule& sc, std::error_code& ec) { inner_.put_schedule(sc, ec); }

private:
    sqlite_store inner_;
    int counted_, go_;
    bool passed_ = false;
};
static_assert(kugetsu::store<barrier_store>);

sqlite_store::options no_units() {
    sqlite_store::options o;
    o.units = false;
    return o;
}

struct counts {
    long live = -1, peak = -1, total = -1;
};

counts read_counter(const std::string& path) {
    counts c;
    std::istringstream in(kugetsu::test::slurp(path));
    in >> c.live >> c.peak >> c.total;
    return c;
}

/// One race: `racers` processes call start() at once (released by closing a pipe); each
/// agent is the probe agent, held alive until every racer is done.
struct race {
    temp_dir dir;
    std::string counter = dir / "counter";
    std::string hold = dir / "hold.fifo";
    std::string ready = dir / "ready.fifo";
    int hold_fd = -1, ready_fd = -1;

    race() {
        REQUIRE(::mkfifo(hold.c_str(), 0600) == 0);
        REQUIRE(::mkfifo(ready.c_str(), 0600) == 0);
        // O_RDWR: opening never blocks, and readers see EOF only when we close it.
        hold_fd = ::open(hold.c_str(), O_RDWR | O_CLOEXEC);
        ready_fd = ::open(ready.c_str(), O_RDWR | O_CLOEXEC);
        REQUIRE(hold_fd >= 0);
        REQUIRE(ready_fd >= 0);
        // Agents outlive the racers that spawned them: make them our children, to reap them.
        REQUIRE(::prctl(PR_SET_CHILD_SUBREAPER, 1) == 0);
    }

    std::vector<std::string> agent_argv() const {
        return {KUGETSU_PROBE_AGENT, counter, "--ready", ready, "--hold", hold};
    }

    /// Waits for `n` agents to have counted themselves in.
    void await_ready(int n) const {
        for (int i = 0; i < n; ++i) {
            char c;
            while (::read(ready_fd, &c, 1) < 0 && errno == EINTR) {}
        }
    }

    /// Lets every agent end, and reaps them all.
    void release_agents() {
        ::close(std::exchange(hold_fd, -1));
        int status;
        while (true) {
            const pid_t p = ::waitpid(-1, &status, 0);
            if (p < 0 && errno == EINTR) continue;
            if (p < 0) break;   // ECHILD: all reaped
        }
    }

    ~race() {
        if (hold_fd >= 0) release_agents();
        ::close(ready_fd);
        ::prctl(PR_SET_CHILD_SUBREAPER, 0);
    }
};

template <class Lock, class Store>
auto make_dispatcher(const std::string& home, Lock lock, Store store, int cap) {
    const home_layout h{home};
    return basic_dispatcher<Lock, fork_spawner, jsonl_notifier, Store, system_clock, null_workspace>(
        std::move(lock), fork_spawner(h.logs()), jsonl_notifier(h.events()), std::move(store), system_clock{},
        null_workspace{}, dispatcher_options{cap, 3, std::chrono::seconds(1)});
}

char outcome(const start_result& r, const std::error_code& ec) {
    if (ec) return 'E';
    return r.status == start_status::started ? 'S' : r.status == start_status::no_slot ? 'N' : 'F';
}

std::map<char, int> collect(pipe_pair& results, std::vector<pid_t>& racers) {
    for (pid_t p : racers) CHECK(wait_child(p) == 0);
    results.close_write();
    std::map<char, int> m;
    while (char c = results.get()) ++m[c];
    return m;
}

/// Every line of the event log is one whole, valid event (no interleaving).
void check_event_log(const std::string& path, int expected_started) {
    std::istringstream in(kugetsu::test::slurp(path));
    int started = 0;
    for (std::string line; std::getline(in, line);) {
        std::error_code ec;
        std::string why;
        auto e = parse_event(line, ec, why);
        INFO(line << " : " << why);
        REQUIRE(e);
        started += e->type == event_type::task_started;
    }
    CHECK(started == expected_started);
}

} // namespace

TEST_CASE("racing start() from many processes with flock_lock never exceeds the cap") {
    constexpr int racers = 8, cap = 3;
    for (int round = 0; round < 3; ++round) {
        race r;
        pipe_pair go, results;
        std::vector<pid_t> pids;
        for (int i = 0; i < racers; ++i)
            pids.push_back(fork_child([&, i] {
                go.close_write();
                auto d = make_dispatcher(r.dir.path(), flock_lock(r.dir / "lock"), sqlite_store(home_layout{r.dir.path()}.db()), cap);
                go.wait_eof();
                std::error_code ec;
                auto res = d.start({"racer-" + std::to_string(i), r.agent_argv()}, ec);
                results.put(outcome(res, ec));
                return 0;
            }));
        go.close_write();   // all racers start now
        auto m = collect(results, pids);
        CHECK(m['S'] == cap);
        CHECK(m['N'] == racers - cap);
        CHECK(m['E'] == 0);
        r.await_ready(m['S']);
        const counts c = read_counter(r.counter);
        CHECK(c.peak <= cap);
        CHECK(c.peak == m['S']);
        CHECK(c.total == m['S']);
        r.release_agents();
        check_event_log(home_layout{r.dir.path()}.events(), cap);
    }
}

TEST_CASE("racing start() with null_lock and a window between count and spawn exceeds the cap") {
    constexpr int racers = 6, cap = 3;
    race r;
    pipe_pair go, counted, barrier, results;
    std::vector<pid_t> pids;
    for (int i = 0; i < racers; ++i)
        pids.push_back(fork_child([&, i] {
            go.close_write();
            barrier.close_write();
            auto d = make_dispatcher(r.dir.path(), null_lock{},
                                     barrier_store(sqlite_store(home_layout{r.dir.path()}.db(), no_units()), counted.w, barrier.r), cap);
            go.wait_eof();
            std::error_code ec;
            auto res = d.start({"racer-" + std::to_string(i), r.agent_argv()}, ec);
            results.put(outcome(res, ec));
            return 0;
        }));
    go.close_write();
    for (int i = 0; i < racers; ++i) CHECK(counted.get() == 'c');   // every racer has counted
    barrier.close_write();                                          // now all of them spawn
    auto m = collect(results, pids);
    r.await_ready(m['S']);
    const counts c = read_counter(r.counter);
    CHECK(m['S'] == racers);
    CHECK(c.peak == racers);
    CHECK(c.peak > cap);   // the race the lock exists to prevent
    r.release_agents();
}

TEST_CASE("two queue daemons and four starters over one state directory start each task once, within the cap") {
    constexpr int cap = 3;
    race r;
    {
        auto d = make_dispatcher(r.dir.path(), flock_lock(r.dir / "lock"), sqlite_store(home_layout{r.dir.path()}.db()), cap);
        for (int i = 0; i < 6; ++i) d.enqueue({"queued-" + std::to_string(i), r.agent_argv()});
    }
    pipe_pair go, results;
    std::vector<pid_t> pids;
    for (int i = 0; i < 6; ++i)
        pids.push_back(fork_child([&, i] {
            go.close_write();
            auto d = make_dispatcher(r.dir.path(), flock_lock(r.dir / "lock"), sqlite_store(home_layout{r.dir.path()}.db()), cap);
            go.wait_eof();
            std::error_code ec;
            if (i < 2) {
                auto rep = d.process_queue(ec);
                for (int k = 0; k < rep.started; ++k) results.put('Q');
                return ec ? 1 : 0;
            }
            auto res = d.start({"direct-" + std::to_string(i), r.agent_argv()}, ec);
            results.put(outcome(res, ec));
            return 0;
        }));
    go.close_write();
    auto m = collect(results, pids);
    CHECK(m['S'] + m['Q'] == cap);
    r.await_ready(m['S'] + m['Q']);
    const counts c = read_counter(r.counter);
    CHECK(c.peak == cap);
    CHECK(c.total == cap);
    // No task is started twice, and the queue holds every task exactly once.
    sqlite_store st(home_layout{r.dir.path()}.db());
    std::error_code ec;
    auto items = st.list_items(ec);
    REQUIRE_FALSE(ec);
    int running = 0;
    for (auto& it : items) {
        running += it.state == task_state::running;
        CHECK(it.attempts <= 1);
        CHECK((it.state == task_state::running || it.state == task_state::pending));
    }
    CHECK(running == cap);
    CHECK(st.list_sessions(ec).size() == static_cast<std::size_t>(cap));
    r.release_agents();
}
