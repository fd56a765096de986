// Conformance on real processes: one generic lock test run against every lock model, and one
// generic spawner test run against both spawners.
#include <catch2/catch.hpp>

#include <kugetsu/kugetsu.hpp>
#if KUGETSU_TEST_BOOST
#include <kugetsu/lock/boost_file_lock.hpp>
#include <kugetsu/lock/boost_named_mutex_lock.hpp>
#endif

#include <filesystem>
#include <map>

#include <sys/wait.h>

#include "support/proc.hpp"

using namespace kugetsu;
using kugetsu::test::fork_child;
using kugetsu::test::temp_dir;
using kugetsu::test::wait_child;

namespace {

// Each model: how to make two handles on one lock, and whether it excludes other processes.
struct flock_model {
    static constexpr bool excludes = true;
    temp_dir d;
    flock_lock make() { return flock_lock(d / "lock"); }
};
struct null_model {
    static constexpr bool excludes = false;
    null_lock make() { return null_lock{}; }
};
#if KUGETSU_TEST_BOOST
struct boost_file_model {
    static constexpr bool excludes = true;
    temp_dir d;
    boost_file_lock make() { return boost_file_lock(d / "lock"); }
};
struct boost_named_model {
    static constexpr bool excludes = true;
    std::string name = "kugetsu-conf-" + std::to_string(::getpid());
    boost_named_mutex_lock make() { return boost_named_mutex_lock(name); }
    ~boost_named_model() { boost_named_mutex_lock::remove(name); }
};
#define KUGETSU_LOCK_MODELS flock_model, null_model, boost_file_model, boost_named_model
#else
#define KUGETSU_LOCK_MODELS flock_model, null_model
#endif

} // namespace

TEMPLATE_TEST_CASE("lock: lock, unlock and lock again; try_lock on a free lock succeeds", "[lock]",
                   KUGETSU_LOCK_MODELS) {
    TestType m;
    auto l = m.make();
    std::error_code ec;
    for (int i = 0; i < 3; ++i) {
        l.lock(ec);
        REQUIRE_FALSE(ec);
        l.unlock();
    }
    CHECK(l.try_lock(ec));
    CHECK_FALSE(ec);
    l.unlock();
    static_assert(kugetsu::lock<decltype(l)> && kugetsu::try_lock<decltype(l)>);
    static_assert(noexcept(l.unlock()));
}

TEMPLATE_TEST_CASE("lock: a held lock excludes another process exactly when the model says so", "[lock]",
                   KUGETSU_LOCK_MODELS) {
    TestType m;
    auto l = m.make();
    std::error_code ec;
    l.lock(ec);
    REQUIRE_FALSE(ec);
    const int other = wait_child(fork_child([&] {
        auto mine = m.make();
        std::error_code cec;
        const bool got = mine.try_lock(cec);
        if (got) mine.unlock();
        return cec ? 2 : got ? 1 : 0;
    }));
    CHECK(other == (TestType::excludes ? 0 : 1));
    l.unlock();
    const int after = wait_child(fork_child([&] {
        auto mine = m.make();
        std::error_code cec;
        const bool got = mine.try_lock(cec);
        if (got) mine.unlock();
        return cec ? 2 : got ? 1 : 0;
    }));
    CHECK(after == 1);
}

// ---- spawners ----------------------------------------------------------------------------

namespace {

struct fork_model {
    temp_dir d;
    fork_spawner sp{d / "logs"};
    spawn_request req(const std::string& id, int code) {
        return {id, {"/bin/sh", "-c", "exit " + std::to_string(code)}, ""};
    }
    /// Lets the agent end by itself and waits until its end is recorded.
    void finish(const process_ref& p) {
        std::error_code ec;
        sp.wait(p, ec);
    }
    bool ran(const std::string&) { return true; }
};

struct fake_model {
    fake_spawner sp;
    std::map<int, int> codes;
    spawn_request req(const std::string& id, int code) {
        codes[static_cast<int>(sp.requests().size()) + 1000] = code;
        return {id, {"agent"}, ""};
    }
    void finish(const process_ref& p) { sp.exit(p.pid, codes.at(p.pid)); }
};

} // namespace

TEMPLATE_TEST_CASE("spawner: held until released, running until it ends, then its exit code once", "[spawner]",
                   fork_model, fake_model) {
    TestType m;
    std::error_code ec;
    auto p = m.sp.spawn(m.req("t1", 3), ec);
    REQUIRE_FALSE(ec);
    REQUIRE(p);
    CHECK(m.sp.poll(p, ec).state == process_state::running);
    m.sp.release(p, ec);
    REQUIRE_FALSE(ec);
    m.finish(p);
    auto st = m.sp.poll(p, ec);
    CHECK(st.state == process_state::exited);
    CHECK(st.exit_code == 3);
    if constexpr (requires { m.sp.forget(p); }) {
        // The status stays readable (by any process) until the end is recorded and forgotten.
        CHECK(m.sp.poll(p, ec).exit_code == 3);
        m.sp.forget(p);
    }
    CHECK(m.sp.poll(p, ec).state == process_state::gone);   // reaped: its pid may now be reused
    m.sp.release(p, ec);
    CHECK(ec == errc::not_held);
}

TEMPLATE_TEST_CASE("spawner: an abandoned child never runs, and poll says it never ran", "[spawner]", fork_model,
                   fake_model) {
    TestType m;
    std::error_code ec;
    auto p = m.sp.spawn(m.req("t1", 0), ec);
    REQUIRE_FALSE(ec);
    m.sp.abandon(p);
    CHECK(m.sp.poll(p, ec).state == process_state::never_ran);
    m.sp.abandon(p);   // twice is harmless
}

TEMPLATE_TEST_CASE("spawner: self() is a live process and a signal to a stale ref does nothing", "[spawner]",
                   fork_model, fake_model) {
    TestType m;
    std::error_code ec;
    CHECK(m.sp.poll(m.sp.self(), ec).state == process_state::running);
    process_ref stale{m.sp.self().pid, m.sp.self().start_time + 7, m.sp.self().boot_id};
    m.sp.signal(stale, stop_signal::kill, ec);   // would kill this test if it were sent
    CHECK_FALSE(ec);
}
