// Exhaustive search of the six-task race, determinism and replay.
#include <catch2/catch.hpp>

#include <kugetsu/sim/explore.hpp>

#include <iostream>
#include <sstream>

using namespace kugetsu;
using namespace kugetsu::sim;

namespace {
std::string serialise(const run_result& r) {
    std::ostringstream out;
    for (auto& t : r.trace) out << t.step << ' ' << format_rfc3339(t.time) << ' ' << t.actor << ' ' << t.op << ' ' << t.detail << '\n';
    for (auto& v : r.violations) out << "violation " << v.kind << ' ' << v.detail << ' ' << v.step << '\n';
    return out.str();
}
} // namespace

TEST_CASE("the six-task race is checked exhaustively for the fixed design, with the daemon and up to 3 starters") {
    for (int starters = 0; starters <= 3; ++starters) {
        scenario sc;   // six tasks, cap 3, a PM, the daemon
        sc.starters = starters;
        const auto ex = explore_exhaustive(sc, 1, 5'000'000, /*stop_at_violation=*/false);
        std::cout << "six-task race, fixed, " << starters << " starters: " << ex.states << " states, " << ex.schedules
                  << " complete schedules, " << ex.seconds << " s\n";
        INFO(starters << " starters");
        CHECK(ex.complete);
        CHECK(ex.violating == 0u);
        CHECK(ex.by_kind.empty());
        CHECK(ex.peak_live == 3);
        CHECK(ex.states > 10u);
        CHECK(ex.schedules > 1u);
    }
}

TEST_CASE("the exhaustive search catches the original design and gives a short counterexample that replays") {
    const scenario sc = scenario::legacy();
    const auto ex = explore_exhaustive(sc, 1);
    REQUIRE(ex.violating > 0u);
    REQUIRE(ex.shortest);
    CHECK(ex.shortest->first.kind == "cap");
    const auto r = replay(sc, ex.shortest->seed, ex.shortest->schedule);
    REQUIRE_FALSE(r.violations.empty());
    CHECK(r.violations.front().kind == "cap");
    CHECK(r.violations.front().step <= ex.shortest->schedule.size());
    CHECK(r.peak_live > 3);
}

TEST_CASE("partial-order reduction agrees with the full search on a small configuration") {
    // Without the reduction every step of a unit of work is a choice point (begin, each read
    // and write, commit, each append of a relay): a small configuration keeps it to seconds.
    scenario sc;
    sc.tasks = 2;
    sc.starters = 1;
    sc.pm = false;
    const auto reduced = explore_exhaustive(sc, 1, 5'000'000, false, /*reduce=*/true);
    const auto full = explore_exhaustive(sc, 1, 5'000'000, false, /*reduce=*/false);
    CHECK(reduced.complete);
    CHECK(full.complete);
    CHECK(reduced.violating == 0u);
    CHECK(full.violating == 0u);
    CHECK(reduced.peak_live == full.peak_live);
    CHECK(reduced.peak_live == 3);
    CHECK(reduced.states < full.states);
    std::cout << "partial-order reduction, 2 tasks, 1 starter, no PM: " << reduced.states << " states reduced, "
              << full.states << " full\n";
    // And on a design that breaks, both find it.
    scenario broken = sc;
    broken.fixed = {true, true, false, true};
    broken.starters = 3;
    CHECK(explore_exhaustive(broken, 1, 5'000'000, true, true).violating > 0u);
    CHECK(explore_exhaustive(broken, 1, 5'000'000, true, false).violating > 0u);
}

TEST_CASE("the same seed gives a byte-identical trace; another seed gives another") {
    scenario sc;
    sc.faults.kill = 0.01;
    sc.faults.exec_failure = 0.2;
    sc.faults.agent_crash = 0.1;
    sc.faults.pid_reuse = true;
    random_chooser a(42, sc.faults.kill), b(42, sc.faults.kill), c(43, sc.faults.kill);
    const auto ra = run(sc, 5, a), rb = run(sc, 5, b), rc_ = run(sc, 5, c);
    CHECK(serialise(ra) == serialise(rb));
    CHECK(ra.schedule == rb.schedule);
    CHECK(serialise(ra) != serialise(rc_));
    // Replaying the recorded schedule gives the same trace again.
    const auto rr = replay(sc, 5, ra.schedule);
    CHECK(serialise(rr) == serialise(ra));
}

TEST_CASE("PCT and random exploration both catch the original design; neither flags the fixed one") {
    const auto legacy_pct = explore_random(scenario::legacy(), 3, 50, /*pct=*/true, 3);
    const auto legacy_rnd = explore_random(scenario::legacy(), 3, 50);
    CHECK(legacy_pct.violating > 0u);
    CHECK(legacy_rnd.violating > 0u);
    CHECK(legacy_rnd.peak_live > 3);
    const auto fixed_pct = explore_random(scenario{}, 3, 200, true, 3);
    CHECK(fixed_pct.violating == 0u);
    CHECK(fixed_pct.peak_live == 3);
}
