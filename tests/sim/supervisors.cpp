// The agents' supervisors in the simulator: exit records, orphans adopted by the daemon or
// lost to init, the on-exit reap while no daemon runs, and the negative design whose
// supervisors never record an exit.
#include <catch2/catch.hpp>

#include <kugetsu/sim/explore.hpp>

#include <string>

#include "support/sim.hpp"

using namespace kugetsu;
using namespace kugetsu::sim;
using kugetsu::test::count;
using kugetsu::test::describe;

TEST_CASE("supervisors: each agent's supervisor writes its exit record, and the store has exactly its code") {
    scenario sc;
    sc.faults.agent_crash = 0.3;   // some codes are 1
    int supervised = 0, recorded = 0, crashed = 0;
    for (std::uint64_t seed = 1; seed <= 40; ++seed) {
        random_chooser ch(seed, 0);
        const auto r = run(sc, seed, ch);
        INFO("seed " << seed);
        for (const auto& v : r.violations) FAIL_CHECK(v.kind << ": " << v.detail);
        for (const auto& p : r.agents) {
            CHECK(p.sup >= 0);   // every agent of the fixed design runs under a supervisor
            CHECK(r.actor_names.at(static_cast<std::size_t>(p.sup)).rfind("sup-" + p.task_id + "#", 0) == 0);
            ++supervised;
            if (p.status == proc_status::reaped) {
                CHECK(p.recorded);   // nobody was killed: every end has its record
                recorded += p.recorded;
                crashed += p.exit_code != 0;
            }
        }
        for (const auto& it : r.items)
            if (it.state == task_state::completed) CHECK(it.exit_code == 0);
    }
    CHECK(supervised > 100);
    CHECK(recorded > 100);
    CHECK(crashed > 0);
}

TEST_CASE("supervisors: a killed supervisor's agent is adopted by the daemon that started it (its code kept) or lost "
          "to init (no code claimed), and nothing else changes") {
    scenario sc;
    sc.faults.kill = 0.03;
    sc.faults.max_kills = 4;
    int adopted = 0, lost_to_init = 0, runs_with_sup_kills = 0;
    for (std::uint64_t seed = 1; seed <= 400 && (adopted == 0 || lost_to_init == 0); ++seed) {
        random_chooser ch(seed, sc.faults.kill);
        const auto r = run(sc, seed, ch);
        INFO("seed " << seed);
        for (const auto& v : r.violations) FAIL_CHECK(v.kind << ": " << v.detail);
        bool any = false;
        for (const auto& p : r.agents) {
            if (!p.sup_killed || p.status != proc_status::reaped) continue;
            any = true;
            if (p.adopted) {
                ++adopted;
                // Only a daemon adopts: the agent's spawner was one.
                CHECK(r.actor_names.at(static_cast<std::size_t>(p.spawner)).rfind("daemon", 0) == 0);
            } else if (!p.recorded) {   // (else its supervisor wrote the record, then was killed)
                ++lost_to_init;
            }
        }
        runs_with_sup_kills += any;
    }
    INFO(runs_with_sup_kills << " runs killed a supervisor whose agent then ended");
    CHECK(adopted > 0);
    CHECK(lost_to_init > 0);
}

TEST_CASE("supervisors: with no daemon left, the on-exit reap of a supervisor records its agent's end") {
    // The daemon is killed and not restarted: the tasks whose agents were running end all
    // the same, recorded by their supervisors' `kugetsu reap` (daemon.lock is free).
    scenario sc;
    sc.faults.kill = 0.02;
    sc.faults.max_kills = 1;
    sc.max_daemon_restarts = 0;
    int reaped_by_supervisor = 0, runs_without_daemon = 0;
    for (std::uint64_t seed = 1; seed <= 600 && reaped_by_supervisor < 3; ++seed) {
        random_chooser ch(seed, sc.faults.kill);
        const auto r = run(sc, seed, ch);
        if (!r.no_daemon_left) continue;
        ++runs_without_daemon;
        INFO("seed " << seed);
        for (const auto& v : r.violations) FAIL_CHECK(v.kind << ": " << v.detail);
        for (const auto& t : r.trace)
            if (t.actor.rfind("sup-", 0) == 0 && t.op == "put_item" && t.detail.ends_with(" completed")) ++reaped_by_supervisor;
    }
    INFO(runs_without_daemon << " runs lost their daemon");
    CHECK(runs_without_daemon > 0);
    CHECK(reaped_by_supervisor >= 3);
}

TEST_CASE("negative: supervisors that never write the exit record are caught (exit_code), by random, PCT and "
          "exhaustive search") {
    scenario sc;
    sc.supervisor_records = false;
    CHECK(sc.design() == "fixed+unrecorded-exits");
    const auto random = explore_random(sc, 1, 50);
    INFO(describe(random));
    CHECK(count(random, "exit_code") > 0u);
    const auto pct = explore_random(sc, 1, 50, /*pct=*/true);
    CHECK(count(pct, "exit_code") > 0u);
    sc.starters = 0;
    const auto ex = explore_exhaustive(sc, 1, {.early_ends = 0});
    CHECK(count(ex, "exit_code") > 0u);
    // The right supervisors, on the same runs: nothing.
    scenario right;
    CHECK(explore_random(right, 1, 50).by_kind.empty());
}
