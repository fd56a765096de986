// Units of work under the simulator (issue 12): the commit is a choice point, and a kill just
// before or just after it breaks no invariant; what a unit writes is invisible until its
// commit and lost with a kill before it; no agent runs without a committed session; the
// events outbox loses no event to a kill. And the negative tests: a dispatcher that releases
// its held agents before committing is caught ("unrecorded"), and the old at-most-once event
// delivery is caught ("events") once processes are killed.
#include <catch2/catch.hpp>

#include <kugetsu/sim/explore.hpp>
#include <kugetsu/sim/report.hpp>

#include <algorithm>
#include <iostream>

#include "support/sim.hpp"

using namespace kugetsu;
using namespace kugetsu::sim;
using kugetsu::test::count;
using kugetsu::test::describe;

namespace {



/// The events of one task, in the order the events file holds them.
std::vector<std::string> events_of(const run_result& r, const std::string& task) {
    std::vector<std::string> v;
    for (const auto& e : r.events)
        if (e.task_id == task)
            v.push_back(std::string(to_string(e.type)) + (e.attempt ? "#" + std::to_string(*e.attempt) : std::string()));
    return v;
}

const queue_item* item(const run_result& r, const std::string& id) {
    for (const auto& it : r.items)
        if (it.id == id) return &it;
    return nullptr;
}

/// Three queued tasks, the daemon alone: the first three commits are the enqueues, the fourth
/// is the daemon's first pass's unit (claims, attempts, sessions), the fifth its running marks.
scenario three_tasks_daemon_alone() {
    scenario sc;
    sc.tasks = 3;
    sc.starters = 0;
    sc.pm = false;
    sc.faults.max_kills = 1;   // the choosers below kill once (no kill chance: no budget by default)
    return sc;
}

/// Records, at each step, the op of the actor chosen, the committed state's hash, and that
/// actor's history (what it observed and staged), with state hashing on.
class recording_chooser : public chooser {
public:
    struct step {
        std::string actor, op;
        std::uint64_t store_hash, history;
    };
    int choose(const std::vector<int>& ready, std::uint64_t) override {
        const int who = ready.front();
        const actor& a = running->get(who);
        steps.push_back({a.name, a.next_op.str(), running->store_hash, a.history});
        return who;
    }
    std::vector<step> steps;
};

} // namespace

TEST_CASE("killing the committing process just before or just after any commit breaks no invariant") {
    struct config {
        const char* what;
        scenario sc;
        std::uint64_t bases;
    };
    std::vector<config> configs;
    configs.push_back({"the six-task race", scenario{}, 12});
    {
        scenario sc;
        sc.faults.exec_failure = 0.3;
        sc.faults.agent_crash = 0.2;
        configs.push_back({"the six-task race with exec failures and crashes", sc, 8});
    }
    {
        scenario sc;
        sc.cap = 1;
        sc.tasks = 4;
        configs.push_back({"cap 1, 4 tasks, 3 starters", sc, 8});
    }
    {
        scenario sc;
        sc.enqueue_first = false;
        sc.starters = 2;
        configs.push_back({"enqueues racing with the rest", sc, 8});
    }
    for (const auto& c : configs) {
        const auto ex = explore_commit_kills(c.sc, 1, c.bases);
        INFO(c.what << ": " << describe(ex));
        // Each base schedule, then two kills per commit it made: every one of them landed.
        CHECK(ex.schedules > c.bases * 20);
        CHECK(ex.kills == ex.schedules - c.bases);
        CHECK(ex.violating == 0u);   // cap, unrecorded, duplicate_start, lost_task, attempts, events
        CHECK(ex.by_kind.empty());
        CHECK(ex.peak_live == c.sc.cap);
    }
}

TEST_CASE("a unit of work killed just before its commit leaves none of its writes, and just after it all of them") {
    const scenario sc = three_tasks_daemon_alone();
    commit_kill_chooser base(7, 0, false);
    const auto plain = run(sc, 1, base);
    REQUIRE(plain.ok());
    REQUIRE(base.commits() >= 5);
    // The fourth commit is the daemon's: the claims, the attempts counted and the sessions.
    std::size_t fourth = 0, seen = 0;
    for (std::size_t i = 0; i < plain.ops.size() && !fourth; ++i)
        if (plain.ops[i] == "store.commit" && ++seen == 4) fourth = i;
    REQUIRE(plain.actor_names.at(static_cast<std::size_t>(plain.schedule.at(fourth))) == "daemon");

    SECTION("killed before the commit: the claims and attempts are gone, no held agent ever runs") {
        commit_kill_chooser ch(7, 4, false);
        const auto r = run(sc, 1, ch);
        INFO("replay " << kugetsu::sim::detail::schedule_text(r.schedule));
        CHECK(r.ok());
        CHECK(r.kills == 1);
        // The daemon's three held agents were abandoned: every agent that ran is daemon-2's.
        CHECK(r.agents.size() == 3);
        for (const auto& p : r.agents) CHECK(r.actor_names.at(static_cast<std::size_t>(p.spawner)) == "daemon-2");
        for (const char* t : {"t1", "t2", "t3"}) {
            INFO(t);
            const auto* it = item(r, t);
            REQUIRE(it);
            CHECK(it->state == task_state::completed);
            CHECK(it->attempts == 1);   // the killed unit's attempt was never counted
            CHECK(events_of(r, t) == std::vector<std::string>{"task_queued", "task_dequeued#1", "task_started#1",
                                                              "task_completed#1"});
        }
    }
    SECTION("killed right after the commit: the attempts stand, the held agents never run, the tasks are given back") {
        commit_kill_chooser ch(7, 4, true);
        const auto r = run(sc, 1, ch);
        INFO("replay " << kugetsu::sim::detail::schedule_text(r.schedule));
        CHECK(r.ok());
        CHECK(r.kills == 1);
        CHECK(r.agents.size() == 3);
        for (const auto& p : r.agents) CHECK(r.actor_names.at(static_cast<std::size_t>(p.spawner)) == "daemon-2");
        for (const char* t : {"t1", "t2", "t3"}) {
            INFO(t);
            const auto* it = item(r, t);
            REQUIRE(it);
            CHECK(it->state == task_state::completed);
            CHECK(it->attempts == 2);   // attempt 1 was committed, and never ran (start_interrupted)
            CHECK(events_of(r, t) == std::vector<std::string>{"task_queued", "task_dequeued#1", "task_dequeued#2",
                                                              "task_started#2", "task_completed#2"});
        }
    }
}

TEST_CASE("a unit's staged writes are outside the committed state's hash and inside its writer's history") {
    const scenario sc = three_tasks_daemon_alone();
    recording_chooser ch;
    run_options opt;
    opt.state_hash = true;
    const auto r = run(sc, 1, ch, opt);
    REQUIRE(r.ok());
    // The daemon's first staged write: its claim of t1.
    std::size_t put = 0;
    while (put < ch.steps.size() && !(ch.steps[put].actor == "daemon" && ch.steps[put].op == "store.put t1")) ++put;
    REQUIRE(put + 1 < ch.steps.size());
    REQUIRE(ch.steps[put + 1].actor == "daemon");
    CHECK(ch.steps[put + 1].store_hash == ch.steps[put].store_hash);   // staged: not committed
    CHECK(ch.steps[put + 1].history != ch.steps[put].history);         // but the writer's own
    std::size_t commit = put;
    while (commit < ch.steps.size() && ch.steps[commit].op != "store.commit") ++commit;
    REQUIRE(commit + 1 < ch.steps.size());
    CHECK(ch.steps[commit].store_hash == ch.steps[put].store_hash);      // nothing visible before it
    CHECK(ch.steps[commit + 1].store_hash != ch.steps[commit].store_hash);   // all of it at once
}

TEST_CASE("a relay killed midway leaves what it appended, and a later relay brings the rest once") {
    scenario sc;
    sc.faults.max_kills = 1;   // the chooser kills once (no kill chance: no budget by default)
    op_kill_chooser base("notifier.append", 3, 0, false);
    REQUIRE(run(sc, 1, base).ok());
    const std::uint64_t appends = base.count();
    REQUIRE(appends > 20);
    int killed = 0;
    for (std::uint64_t n = 1; n <= appends; n += 3) {
        op_kill_chooser ch("notifier.append", 3, n, false);
        const auto r = run(sc, 1, ch);
        INFO("append " << n << ", replay " << kugetsu::sim::detail::schedule_text(r.schedule));
        killed += r.kills;
        CHECK(r.ok());   // events: every committed event held, once, per task exactly as implied
        std::set<std::uint64_t> seqs;
        for (const auto& e : r.events) CHECK(seqs.insert(e.seq).second);   // no copy: relays exclude each other
    }
    CHECK(killed == static_cast<int>((appends + 2) / 3));
}

TEST_CASE("negative: a dispatcher that releases its held agents before committing is caught as unrecorded") {
    scenario sc;
    sc.release_before_commit = true;
    const auto ex = explore_random(sc, 1, 20);
    INFO(describe(ex));
    CHECK(count(ex, "unrecorded") > 0u);
    REQUIRE(ex.shortest);
    CHECK(ex.shortest->first.kind == "unrecorded");
    // The counterexample replays, and its last step is the release of an agent.
    const auto ops = step_ops(sc, ex.shortest->seed, ex.shortest->schedule);
    REQUIRE_FALSE(ops.empty());
    CHECK(ops.back().rfind("release ", 0) == 0);
    const auto r = replay(sc, ex.shortest->seed, ex.shortest->schedule);
    CHECK(std::any_of(r.violations.begin(), r.violations.end(), [](auto& v) { return v.kind == "unrecorded"; }));
    // The same schedules with the commit in its place keep every invariant.
    CHECK(explore_random(scenario{}, 1, 20).violating == 0u);
    // Killed between the release and the late commit, the variant forgets a running agent:
    // its slot is given again and its task run twice.
    const auto killed = explore_commit_kills(sc, 1, 2);
    INFO("commit kills: " << describe(killed));
    CHECK(count(killed, "cap") > 0u);
    CHECK(count(killed, "duplicate_start") > 0u);
    CHECK(killed.peak_live > sc.cap);
}

TEST_CASE("negative: at-most-once event delivery loses events to kills, and the events invariant catches it") {
    scenario sc;
    sc.outbox = false;
    const auto calm = explore_random(sc, 1, 100);
    INFO("no kills: " << describe(calm));
    CHECK(calm.violating == 0u);   // without kills, nothing is lost: the check is not failing by itself
    const auto at_commits = explore_commit_kills(sc, 1, 5);
    INFO("commit kills: " << describe(at_commits));
    CHECK(count(at_commits, "events") > 0u);
    sc.faults.kill = 0.02;
    const auto random_kills = explore_random(sc, 1, 300);
    INFO("random kills: " << describe(random_kills));
    CHECK(count(random_kills, "events") > 0u);
    // The outbox, under the same kills, loses nothing.
    scenario durable;
    durable.faults.kill = 0.02;
    CHECK(count(explore_random(durable, 1, 300), "events") == 0u);
    CHECK(count(explore_commit_kills(scenario{}, 1, 5), "events") == 0u);
}
