// Clients of other processes in the simulator: `kugetsu wait` (the library's serve_until,
// reaping while no daemon runs) and `kugetsu cancel`, beside the daemon, the starters and the
// supervisors; every client must return (invariant hang), and the negative design whose wait
// is deaf to the store's commits is caught.
#include <catch2/catch.hpp>

#include <kugetsu/sim/explore.hpp>

#include <algorithm>
#include <string>

#include "support/sim.hpp"

using namespace kugetsu;
using namespace kugetsu::sim;
using kugetsu::test::describe;

namespace {

scenario with_clients(int waiters, int cancels) {
    scenario sc;
    sc.waiters = waiters;
    sc.cancels = cancels;
    return sc;
}

/// `sc` on a smaller race, for exhaustive search: `tasks` queued tasks, the daemon and the
/// clients, no starter and no PM.
scenario daemon_only(scenario sc, int tasks) {
    sc.tasks = tasks;
    sc.starters = 0;
    sc.pm = false;
    return sc;
}

} // namespace

TEST_CASE("clients: every kugetsu wait returns and every kugetsu cancel ends its task, under random, PCT and exhaustive search") {
    const scenario sc = with_clients(2, 1);
    CHECK(sc.design() == "fixed");
    for (const bool pct : {false, true}) {
        const auto ex = explore_random(sc, 1, 300, pct, 3);
        INFO((pct ? "pct: " : "random: ") << describe(ex));
        CHECK(ex.violating == 0u);
        CHECK(ex.lost_tasks == 0u);
        CHECK(ex.peak_live == 3);
    }
    // The clients ran: each wait saw its task final, and the cancelled task (t6) ended
    // cancelled in some runs (in others it had completed before the cancel came).
    int cancelled = 0, waited = 0;
    for (std::uint64_t seed = 1; seed <= 30; ++seed) {
        random_chooser ch(seed, 0);
        const auto r = run(sc, seed, ch);
        INFO("seed " << seed);
        for (const auto& v : r.violations) FAIL_CHECK(v.kind << ": " << v.detail);
        for (const auto& it : r.items) {
            if (it.id == "t6") cancelled += it.state == task_state::cancelled;
            if (it.id == "t1" || it.id == "t2") CHECK(is_final(it.state));
        }
        waited += std::count_if(r.trace.begin(), r.trace.end(),
                                [](const trace_entry& t) { return t.actor.rfind("wait-", 0) == 0 && t.op == "exit"; }) == 2;
    }
    CHECK(cancelled > 0);
    CHECK(waited == 30);   // both waits returned in every run
    // Exhaustively, on a smaller race: one wait, two tasks, no starter.
    const scenario small = daemon_only(with_clients(1, 0), 2);
    const auto ex = explore_exhaustive(small, 1, {.stop_at_violation = false});
    INFO(describe(ex));
    CHECK(ex.complete);
    CHECK(ex.violating == 0u);
}

TEST_CASE("negative: a kugetsu wait deaf to the store's commits is caught as a hang by random, PCT and exhaustive search") {
    // While a daemon runs, `wait` only reads, and sleeps until the store changes; this one
    // does not wake for commits (only for agents' ends and enqueues), so a task the daemon
    // records final after the last agent's end is never seen, and the wait never returns.
    scenario sc = with_clients(2, 0);
    sc.deaf_wait = true;
    CHECK(sc.design() == "fixed+deaf-wait");
    for (const bool pct : {false, true}) {
        const auto ex = explore_random(sc, 1, 800, pct, 3);
        INFO((pct ? "pct: " : "random: ") << describe(ex));
        CHECK(ex.by_kind.count("hang") == 1u);
        CHECK(ex.by_kind.size() == 1u);   // nothing else breaks
        REQUIRE(ex.shortest);
        const auto r = replay(sc, ex.shortest->seed, ex.shortest->schedule);
        REQUIRE_FALSE(r.violations.empty());
        CHECK(r.violations.front().kind == "hang");
        CHECK(r.violations.front().detail.rfind("wait-", 0) == 0);
    }
    scenario small = daemon_only(sc, 2);
    small.waiters = 1;
    const auto ex = explore_exhaustive(small, 1);
    INFO(describe(ex));
    CHECK(ex.by_kind.count("hang") == 1u);
    // The same scenario with a wait that wakes for commits is clean (the test above).
    scenario right = small;
    right.deaf_wait = false;
    CHECK(explore_exhaustive(right, 1).violating == 0u);
}

TEST_CASE("clients: kugetsu reap from processes of their own, and kugetsu restart of finished tasks, under random, PCT and exhaustive search") {
    scenario sc;
    sc.reapers = 2;
    sc.restarts = 2;
    sc.waiters = 1;
    for (const bool pct : {false, true}) {
        const auto ex = explore_random(sc, 1, 300, pct, 3);
        INFO((pct ? "pct: " : "random: ") << describe(ex));
        CHECK(ex.violating == 0u);
        CHECK(ex.lost_tasks == 0u);
        CHECK(ex.duplicate_starts == 0u);
        CHECK(ex.peak_live == 3);
    }
    // The restarts took effect: each restarted task is final again, keeps its first run, and
    // its program ran once per run (the per-step check allows a second agent only after the
    // restart is committed; the events check splits the task's events into its two runs).
    int rerun = 0;
    for (std::uint64_t seed = 1; seed <= 20; ++seed) {
        random_chooser ch(seed, 0);
        const auto r = run(sc, seed, ch);
        INFO("seed " << seed);
        for (const auto& v : r.violations) FAIL_CHECK(v.kind << ": " << v.detail);
        for (const auto& it : r.items) {
            if (it.id != "t1" && it.id != "t2") continue;
            CHECK(is_final(it.state));
            CHECK(it.restarts == 1);
            REQUIRE(it.runs.size() == 1u);
            const auto ran = std::count_if(r.agents.begin(), r.agents.end(), [&](const proc& p) { return p.task_id == it.id; });
            CHECK(ran == 2);
            rerun += ran == 2;
        }
    }
    CHECK(rerun == 40);
    // Exhaustively, on a smaller race: one task, the daemon, a restart, and then a reap.
    scenario small = daemon_only({}, 1);
    small.restarts = 1;
    auto ex = explore_exhaustive(small, 1, {.stop_at_violation = false});
    INFO(describe(ex));
    CHECK(ex.complete);
    CHECK(ex.violating == 0u);
    small.restarts = 0;
    small.reapers = 1;
    ex = explore_exhaustive(small, 1, {.stop_at_violation = false});
    INFO(describe(ex));
    CHECK(ex.complete);
    CHECK(ex.violating == 0u);
}

TEST_CASE("negative: a daemon that a restart does not wake is caught by random, PCT and exhaustive search") {
    // The real daemon wakes for every commit (the store's bell); this one hears enqueues and
    // agents' ends only, so a task restarted while it sleeps waits with a slot free.
    scenario sc;
    sc.restarts = 2;
    sc.unheard_restarts = true;
    CHECK(sc.design() == "fixed+unheard-restarts");
    for (const bool pct : {false, true}) {
        const auto ex = explore_random(sc, 1, 2000, pct, 3);
        INFO((pct ? "pct: " : "random: ") << describe(ex));
        CHECK(ex.violating > 0u);
        CHECK((ex.by_kind.count("idle_slot") + ex.by_kind.count("lost_task")) == ex.by_kind.size());
        REQUIRE(ex.shortest);
        const auto r = replay(sc, ex.shortest->seed, ex.shortest->schedule);
        CHECK_FALSE(r.violations.empty());
    }
    scenario small = daemon_only(sc, 1);
    small.restarts = 1;
    const auto ex = explore_exhaustive(small, 1);
    INFO(describe(ex));
    CHECK(ex.violating > 0u);
    REQUIRE(ex.shortest);
    CHECK(ex.shortest->minimal);
    // The same race with the real wake-up is clean (the test above).
    small.unheard_restarts = false;
    CHECK(explore_exhaustive(small, 1).violating == 0u);
}
