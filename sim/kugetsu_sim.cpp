// kugetsu-sim: explores the schedules of a simulated scenario, reports what broke, and
// replays a schedule exactly.
//
//   kugetsu-sim --scenario six-task-race --design legacy            # exits 1: the race
//   kugetsu-sim --design fixed --explore exhaustive --json          # exits 0: every state
//   kugetsu-sim --design legacy --replay 0,0,2,1 --trace t.jsonl --svg t.svg
//   kugetsu-sim --explore commit-kills --schedules 20                # exits 0: kills at commits
//
// The run shown by --trace and --svg: the shortest counterexample, replayed (its schedule,
// then the lowest-numbered ready actor until the run ends), if the exploration found one;
// otherwise the exploration's first schedule (random and pct: the chooser seeded with
// mix(seed, 1), as explore_random's first run; exhaustive: always the lowest-numbered ready
// actor). With --replay, the replayed run.
//
// The exhaustive search runs each critical section without interruption (a partial-order
// reduction), so the lock holder's steps inside one are not in its schedules. A counterexample
// that shrink() could not re-express as a plain schedule replays only that way: the replay
// line then carries --atomic-sections, and the JSON counterexample "atomic_sections": true.
//
// Exit status: 0 no invariant broken, 1 an invariant broken, 64 usage error, 74 an output
// file could not be written, 70 an internal error.
#include <algorithm>
#include <array>
#include <charconv>
#include <chrono>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <fstream>
#include <iostream>
#include <map>
#include <optional>
#include <sstream>
#include <stdexcept>
#include <string>
#include <string_view>
#include <vector>

#include <kugetsu/sim/explore.hpp>
#include <range/v3/algorithm/max.hpp>
#include <range/v3/view/iota.hpp>
#include <range/v3/view/map.hpp>
#include <range/v3/view/transform.hpp>
#include <range/v3/view/zip.hpp>
#include <kugetsu/sim/report.hpp>

namespace {

namespace ks = kugetsu::sim;

constexpr int exit_ok = 0, exit_violation = 1, exit_usage = 64, exit_software = 70, exit_cantcreat = 74;

constexpr const char* usage_text = R"(usage: kugetsu-sim [options]

Explores the schedules of a simulated kugetsu scenario and checks its invariants (the cap,
no agent running unrecorded, no duplicate start, no lost task, attempts, exact events, exit
codes, no idle slot).

  --scenario NAME      six-task-race (the default)
  --design D           fixed (the default), legacy, or legacy with some of its four causes
                       fixed: legacy+fix1+fix3 (fix1 start-only spawns, fix2 PM not counted,
                       fix3 the lock, fix4 one pass takes only the free slots); or a
                       deliberately wrong variant of fixed: fixed+release-before-commit
                       (held agents released before their sessions commit),
                       fixed+at-most-once-events (no outbox: a killed process loses events);
                       fixed+scheduling: groups with caps, priorities, dependencies and a
                       pauser, with their invariants (group_cap, dependency, paused,
                       priority); its wrong variants, each caught: +ignore-group-caps,
                       +ignore-pause, +wrong-priority, +ignore-dependencies;
                       fixed+edge-triggered-wait: the daemon loop's waiter forgets what
                       happened during a pass (a lost wake-up, caught as lost_task);
                       fixed+unrecorded-exits: the agents' supervisors never write the
                       exit record (caught as exit_code). fixed+unsupervised: agents are
                       their spawners' children, with no supervisors (earlier releases);
                       fixed+deaf-wait: `kugetsu wait` does not wake for the store's
                       commits (with --waiters: caught as hang);
                       fixed+unheard-restarts: a restart's commit does not wake the
                       daemon (with --restarts: caught as idle_slot, lost_task)
  --seed N             the seed of agent durations, faults and exploration (default 1)
  --explore MODE       random (the default), pct, exhaustive, or commit-kills (for each
                       commit of a random schedule, the committing process killed just
                       before it, and just after it)
  --schedules N        random and pct: schedules to run; commit-kills: base schedules;
                       1..10000000 (default 1000)
  --depth D            pct: the bug depth, 1..64 (default 3)
  --order O            exhaustive: breadth-first (the default; its counterexample is a
                       shortest one, of all schedules) or depth-first (one thread; finds
                       a deep violation sooner, then shrinks it); bfs and dfs for short
  --threads N          worker threads, 0..256 (default 0: one per core); the results
                       are the same for every N (exhaustive depth-first: always one)
  --max-states N       exhaustive: stop after N states, 1..1000000000 (default 2000000)
  --no-reduction, --no-reduce
                       exhaustive: every step of a critical section is a choice point too
                       (no partial-order reduction; far more states). The legacy designs
                       are always searched so (the reduction is not sound for them)
  --fine-states        exhaustive: states also differ by what has no future (a finished
                       actor's history, a waiting daemon's view of its last pass); more
                       states: to check the coarser state against (a test compares the
                       outcomes of both on small configurations)
  --kind K             exhaustive: only violations of invariant K count (cap, unrecorded,
                       duplicate_start, lost_task, hang, attempts, events, exit_code,
                       idle_slot, ...): a schedule that breaks another goes on, and
                       breadth first the counterexample is a shortest one breaking K
  --kills N            exhaustive: in each schedule up to N SIGKILLs, each of any simulated
                       process (enqueuer, starters, PM starter, daemons, the agents'
                       supervisors and their on-exit reaps) at any step, critical
                       sections included, 0..8
                       (default 0). With --replay --atomic-sections: replay a schedule
                       found so
  --early-ends N       exhaustive: in each schedule up to N agents end by a choice, at any
                       step where agents are looked at, before their drawn end (the others
                       at their drawn times); 0..64 (default 1). Random and pct: no bound
  --starters K         concurrent `start` callers, 0..16 (default 3)
  --tasks N            queued tasks, 0..1000 (default 6)
  --cap C              the cap of live dev agents, 1..64 (default 3)
  --no-pm              no PM agent
  --waiters N          fixed design: N clients run `kugetsu wait t1` .. `wait tN` (the
                       library's serve_until: reaping while no daemon runs), 0..16, at
                       most --tasks; each must return (invariant hang). Default 0
  --cancels N          fixed design: N clients run `kugetsu cancel` of the last N queued
                       tasks, 0..16, at most --tasks. Default 0
  --reapers N          fixed design: N clients run `kugetsu reap` once each, 0..16.
                       Default 0
  --restarts N         fixed design: N clients run `kugetsu wait tK && kugetsu restart
                       tK` (K = 1..N): each task run again once final, 0..16, at most
                       --tasks. Default 0
  --enqueue-race       enqueues race with everything else (default: queued first)
  --faults SPEC        comma-separated: kill=P, exec=P, crash=P, hang=P (P in 0..1),
                       pid-reuse, max-kills=N (kills per run; default 3 with a
                       kill chance, else 0); or none, or all
                       (all = kill=0.01,exec=0.2,crash=0.1,hang=0.05,pid-reuse)
  --timeout SECONDS    per-task timeout, 1..86400 (default: none; 20 when hang > 0)
  --replay LIST        replay exactly this schedule (actor ids, a kill as -(id+1), the
                       end of the agent with pid P as 1048576+P; comma-separated) with
                       --seed, instead of exploring
  --atomic-sections    with --replay: run each critical section without interruption,
                       as the exhaustive search does (its replay line says when needed)
  --json               print one JSON object (the summary) instead of text
  --trace FILE         write the trace of the shown run (JSON lines)
  --svg FILE           write the timeline of the shown run (SVG)
  --svg-axis A         the timeline's axis: steps (of the schedule) or time (virtual);
                       default steps for a run that broke an invariant, else time
  --help               this text

The shown run (--trace, --svg) is the shortest counterexample replayed, if one was found,
else the exploration's first schedule; with --replay, the replayed run.
Exit status: 0 no invariant broken, 1 an invariant broken, 64 usage error, 74 an output file
could not be written.
)";

struct usage_error : std::runtime_error {
    using std::runtime_error::runtime_error;
};
struct output_error : std::runtime_error {
    using std::runtime_error::runtime_error;
};

std::uint64_t parse_uint(std::string_view flag, std::string_view text, std::uint64_t lo, std::uint64_t hi) {
    std::uint64_t v = 0;
    const auto [p, ec] = std::from_chars(text.data(), text.data() + text.size(), v);
    if (text.empty() || ec != std::errc{} || p != text.data() + text.size() || v < lo || v > hi)
        throw usage_error(std::string(flag) + ": expected an integer from " + std::to_string(lo) + " to " +
                          std::to_string(hi) + ", got '" + std::string(text) + "'");
    return v;
}

double parse_probability(std::string_view flag, std::string_view text) {
    double v = 0;
    const auto [p, ec] = std::from_chars(text.data(), text.data() + text.size(), v);
    if (text.empty() || ec != std::errc{} || p != text.data() + text.size() || !std::isfinite(v) || v < 0 || v > 1)
        throw usage_error(std::string(flag) + ": expected a probability from 0 to 1, got '" + std::string(text) + "'");
    return v;
}

std::vector<std::string_view> split(std::string_view s, char sep) {
    std::vector<std::string_view> out;
    for (;;) {
        const auto i = s.find(sep);
        out.push_back(s.substr(0, i));
        if (i == std::string_view::npos) return out;
        s.remove_prefix(i + 1);
    }
}

std::array<bool, 4> parse_legacy(std::string_view text) {
    const auto parts = split(text, '+');
    if (parts.front() != "legacy")
        throw usage_error("--design: expected fixed, legacy, legacy+fix1..+fix4, fixed+release-before-commit or "
                          "fixed+at-most-once-events, got '" + std::string(text) + "'");
    std::array<bool, 4> fixed{false, false, false, false};
    for (std::size_t i = 1; i < parts.size(); ++i) {
        const auto p = parts[i];
        if (p.size() != 4 || p.substr(0, 3) != "fix" || p[3] < '1' || p[3] > '4')
            throw usage_error("--design: unknown part '" + std::string(p) + "' in '" + std::string(text) +
                              "' (expected fix1, fix2, fix3 or fix4)");
        auto& f = fixed[static_cast<std::size_t>(p[3] - '1')];
        if (f) throw usage_error("--design: '" + std::string(p) + "' given twice in '" + std::string(text) + "'");
        f = true;
    }
    return fixed;
}

void parse_design(std::string_view text, ks::scenario& sc) {
    const auto parts = split(text, '+');
    if (parts.front() == "fixed") {
        sc.fixed = {true, true, true, true};
        sc.release_before_commit = false;
        sc.outbox = true;
        sc.scheduling = sc.ignore_group_caps = sc.ignore_pause = sc.wrong_priority = sc.ignore_dependencies = false;
        sc.edge_triggered_wait = sc.deaf_wait = sc.unheard_restarts = false;
        sc.supervisors = sc.supervisor_records = true;
        for (std::size_t i = 1; i < parts.size(); ++i) {
            auto once = [&](bool& flag, bool value) {
                if (flag == value) return false;
                flag = value;
                return true;
            };
            const auto p = parts[i];
            const bool ok = (p == "release-before-commit" && once(sc.release_before_commit, true)) ||
                            (p == "at-most-once-events" && once(sc.outbox, false)) ||
                            (p == "scheduling" && once(sc.scheduling, true)) ||
                            (p == "ignore-group-caps" && once(sc.ignore_group_caps, true)) ||
                            (p == "ignore-pause" && once(sc.ignore_pause, true)) ||
                            (p == "wrong-priority" && once(sc.wrong_priority, true)) ||
                            (p == "ignore-dependencies" && once(sc.ignore_dependencies, true)) ||
                            (p == "edge-triggered-wait" && once(sc.edge_triggered_wait, true)) ||
                            (p == "deaf-wait" && once(sc.deaf_wait, true)) ||
                            (p == "unheard-restarts" && once(sc.unheard_restarts, true)) ||
                            (p == "unsupervised" && once(sc.supervisors, false)) ||
                            (p == "unrecorded-exits" && once(sc.supervisor_records, false));
            if (!ok)
                throw usage_error("--design: unknown or repeated part '" + std::string(p) + "' in '" + std::string(text) +
                                  "' (expected release-before-commit, at-most-once-events, scheduling, ignore-group-caps, "
                                  "ignore-pause, wrong-priority, ignore-dependencies, edge-triggered-wait, deaf-wait, "
                                  "unheard-restarts, unsupervised or unrecorded-exits)");
        }
        if (!sc.supervisors && !sc.supervisor_records)
            throw usage_error("--design: unrecorded-exits is a variant of the agents' supervisors, and unsupervised has none");
        if ((sc.ignore_group_caps || sc.ignore_pause || sc.wrong_priority || sc.ignore_dependencies) && !sc.scheduling)
            throw usage_error("--design: ignore-group-caps, ignore-pause, wrong-priority and ignore-dependencies are "
                              "variants of fixed+scheduling");
        return;
    }
    sc.release_before_commit = false;
    sc.outbox = true;
    sc.fixed = parse_legacy(text);
}

ks::fault_plan parse_faults(std::string_view text) {
    ks::fault_plan f;
    for (auto item : split(text, ',')) {
        const auto eq = item.find('=');
        const auto key = item.substr(0, eq);
        const auto val = eq == std::string_view::npos ? std::string_view{} : item.substr(eq + 1);
        const bool has_val = eq != std::string_view::npos;
        const std::string flag = "--faults " + std::string(key);
        auto need_val = [&] {
            if (!has_val) throw usage_error(flag + ": expected " + std::string(key) + "=VALUE");
        };
        if (key == "none" && !has_val) {
            f = ks::fault_plan{};
        } else if (key == "all" && !has_val) {
            f.kill = 0.01;
            f.exec_failure = 0.2;
            f.agent_crash = 0.1;
            f.agent_hang = 0.05;
            f.pid_reuse = true;
        } else if (key == "kill") {
            need_val();
            f.kill = parse_probability(flag, val);
        } else if (key == "exec") {
            need_val();
            f.exec_failure = parse_probability(flag, val);
        } else if (key == "crash") {
            need_val();
            f.agent_crash = parse_probability(flag, val);
        } else if (key == "hang") {
            need_val();
            f.agent_hang = parse_probability(flag, val);
        } else if (key == "pid-reuse" && !has_val) {
            f.pid_reuse = true;
        } else if (key == "max-kills") {
            need_val();
            f.max_kills = static_cast<int>(parse_uint(flag, val, 0, 1000));
        } else {
            throw usage_error("--faults: unknown fault '" + std::string(item) +
                              "' (expected kill=P, exec=P, crash=P, hang=P, pid-reuse, max-kills=N, none or all)");
        }
    }
    return f;
}

std::vector<int> parse_schedule(std::string_view text) {
    std::vector<int> s;
    if (text.empty()) return s;
    for (auto item : split(text, ',')) {
        int v = 0;
        const auto [p, ec] = std::from_chars(item.data(), item.data() + item.size(), v);
        const bool actor = v >= -100000 && v <= 100000;
        const bool agent = v >= ks::world::agent_choice_base && v < ks::world::agent_choice_base + 10'000'000;
        if (item.empty() || ec != std::errc{} || p != item.data() + item.size() || !(actor || agent))
            throw usage_error("--replay: expected comma-separated actor ids (a kill as -(id+1), an agent's end as "
                              "1048576+pid), got '" + std::string(item) + "'");
        s.push_back(v);
    }
    return s;
}

/// The shortest text of a double that reads back as the same value.
std::string shortest(double v) {
    char buf[64];
    const auto [p, ec] = std::to_chars(buf, buf + sizeof buf, v);
    return ec == std::errc{} ? std::string(buf, p) : std::to_string(v);
}

std::string faults_text(const ks::fault_plan& f) {
    std::string s;
    auto add = [&](const std::string& x) { s += (s.empty() ? "" : ",") + x; };
    if (f.kill > 0) add("kill=" + shortest(f.kill));
    if (f.exec_failure > 0) add("exec=" + shortest(f.exec_failure));
    if (f.agent_crash > 0) add("crash=" + shortest(f.agent_crash));
    if (f.agent_hang > 0) add("hang=" + shortest(f.agent_hang));
    if (f.pid_reuse) add("pid-reuse");
    if (f.max_kills) add("max-kills=" + std::to_string(*f.max_kills));
    return s.empty() ? "none" : s;
}

struct options {
    ks::scenario sc;
    std::uint64_t seed = 1;
    std::string explore = "random";
    std::uint64_t schedules = 1000;
    int depth = 3;
    std::uint64_t max_states = 2'000'000;
    bool reduce = true;
    bool fine_states = false;
    std::string kind;
    int early_ends = 1;
    bool early_ends_given = false;
    unsigned threads = 0;
    int kills = 0;
    bool kills_given = false;
    ks::search_order order = ks::search_order::breadth_first;
    bool order_given = false;
    std::optional<std::uint64_t> timeout_s;
    bool json = false;
    std::string svg, trace;
    std::optional<ks::svg_axis> svg_axis;
    std::optional<std::vector<int>> replay;
    bool atomic_sections = false;
    bool help = false;
};

options parse_args(int argc, char** argv) {
    options o;
    std::vector<std::string> args(argv + 1, argv + argc);
    for (std::size_t i = 0; i < args.size(); ++i) {
        std::string flag = args[i];
        std::optional<std::string> inline_val;
        if (flag.rfind("--", 0) == 0)
            if (const auto eq = flag.find('='); eq != std::string::npos) {
                inline_val = flag.substr(eq + 1);
                flag = flag.substr(0, eq);
            }
        auto value = [&]() -> std::string {
            if (inline_val) return *inline_val;
            if (i + 1 >= args.size()) throw usage_error(flag + ": missing value");
            return args[++i];
        };
        auto no_value = [&] {
            if (inline_val) throw usage_error(flag + ": takes no value");
        };
        if (flag == "--help" || flag == "-h") {
            no_value();
            o.help = true;
        } else if (flag == "--scenario") {
            const auto v = value();
            if (v != "six-task-race") throw usage_error("--scenario: unknown scenario '" + v + "' (expected six-task-race)");
            o.sc.name = v;
        } else if (flag == "--design") {
            parse_design(value(), o.sc);
        } else if (flag == "--seed") {
            o.seed = parse_uint(flag, value(), 0, UINT64_MAX);
        } else if (flag == "--explore") {
            o.explore = value();
            if (o.explore != "random" && o.explore != "pct" && o.explore != "exhaustive" && o.explore != "commit-kills")
                throw usage_error("--explore: expected random, pct, exhaustive or commit-kills, got '" + o.explore + "'");
        } else if (flag == "--schedules") {
            o.schedules = parse_uint(flag, value(), 1, 10'000'000);
        } else if (flag == "--order") {
            const std::string v = value();
            if (v == "breadth-first" || v == "bfs") o.order = ks::search_order::breadth_first;
            else if (v == "depth-first" || v == "dfs") o.order = ks::search_order::depth_first;
            else throw usage_error("--order: '" + v + "' is not breadth-first or depth-first");
            o.order_given = true;
        } else if (flag == "--kills") {
            o.kills = static_cast<int>(parse_uint(flag, value(), 0, 8));
            o.kills_given = true;
        } else if (flag == "--threads") {
            o.threads = static_cast<unsigned>(parse_uint(flag, value(), 0, 256));
        } else if (flag == "--depth") {
            o.depth = static_cast<int>(parse_uint(flag, value(), 1, 64));
        } else if (flag == "--max-states") {
            o.max_states = parse_uint(flag, value(), 1, 1'000'000'000);
        } else if (flag == "--no-reduction" || flag == "--no-reduce") {
            no_value();
            o.reduce = false;
        } else if (flag == "--kind") {
            o.kind = value();
            if (std::find(ks::violation_kinds.begin(), ks::violation_kinds.end(), o.kind) == ks::violation_kinds.end())
                throw usage_error("--kind " + o.kind + ": not an invariant (" + [] {
                    std::string all;
                    for (auto k : ks::violation_kinds) all += (all.empty() ? "" : ", ") + std::string(k);
                    return all;
                }() + ")");
        } else if (flag == "--fine-states") {
            no_value();
            o.fine_states = true;
        } else if (flag == "--early-ends") {
            o.early_ends = static_cast<int>(parse_uint(flag, value(), 0, 64));
            o.early_ends_given = true;
        } else if (flag == "--starters") {
            o.sc.starters = static_cast<int>(parse_uint(flag, value(), 0, 16));
        } else if (flag == "--tasks") {
            o.sc.tasks = static_cast<int>(parse_uint(flag, value(), 0, 1000));
        } else if (flag == "--cap") {
            o.sc.cap = static_cast<int>(parse_uint(flag, value(), 1, 64));
        } else if (flag == "--waiters") {
            o.sc.waiters = static_cast<int>(parse_uint(flag, value(), 0, 16));
        } else if (flag == "--cancels") {
            o.sc.cancels = static_cast<int>(parse_uint(flag, value(), 0, 16));
        } else if (flag == "--reapers") {
            o.sc.reapers = static_cast<int>(parse_uint(flag, value(), 0, 16));
        } else if (flag == "--restarts") {
            o.sc.restarts = static_cast<int>(parse_uint(flag, value(), 0, 16));
        } else if (flag == "--no-pm") {
            no_value();
            o.sc.pm = false;
        } else if (flag == "--enqueue-race") {
            no_value();
            o.sc.enqueue_first = false;
        } else if (flag == "--faults") {
            o.sc.faults = parse_faults(value());
        } else if (flag == "--timeout") {
            o.timeout_s = parse_uint(flag, value(), 1, 86400);
        } else if (flag == "--json") {
            no_value();
            o.json = true;
        } else if (flag == "--svg-axis") {
            const std::string v = value();
            if (v == "steps") o.svg_axis = ks::svg_axis::steps;
            else if (v == "time") o.svg_axis = ks::svg_axis::time;
            else throw usage_error("--svg-axis: '" + v + "' is not steps or time");
        } else if (flag == "--svg") {
            o.svg = value();
            if (o.svg.empty()) throw usage_error("--svg: empty file name");
        } else if (flag == "--trace") {
            o.trace = value();
            if (o.trace.empty()) throw usage_error("--trace: empty file name");
        } else if (flag == "--replay") {
            o.replay = parse_schedule(value());
        } else if (flag == "--atomic-sections") {
            no_value();
            o.atomic_sections = true;
        } else {
            throw usage_error("unknown option '" + args[i] + "' (see --help)");
        }
    }
    if (o.atomic_sections && !o.replay) throw usage_error("--atomic-sections: only with --replay");
    if ((o.sc.waiters || o.sc.cancels || o.sc.reapers || o.sc.restarts) && !o.sc.all_fixed())
        throw usage_error("--waiters, --cancels, --reapers, --restarts: only with the fixed design (the legacy tool had "
                          "no wait, cancel, reap or restart)");
    if (o.sc.waiters > o.sc.tasks || o.sc.cancels > o.sc.tasks || o.sc.restarts > o.sc.tasks)
        throw usage_error("--waiters " + std::to_string(o.sc.waiters) + ", --cancels " + std::to_string(o.sc.cancels) +
                          ", --restarts " + std::to_string(o.sc.restarts) + ": each names a queued task, and there are " +
                          std::to_string(o.sc.tasks) + " (--tasks)");
    if (!o.reduce && o.explore != "exhaustive") throw usage_error("--no-reduction: only with --explore exhaustive");
    if (o.fine_states && o.explore != "exhaustive") throw usage_error("--fine-states: only with --explore exhaustive");
    if (!o.kind.empty() && o.explore != "exhaustive") throw usage_error("--kind: only with --explore exhaustive");
    if (o.early_ends_given && o.explore != "exhaustive") throw usage_error("--early-ends: only with --explore exhaustive");
    if (o.order_given && o.explore != "exhaustive") throw usage_error("--order: only with --explore exhaustive");
    if (o.explore == "exhaustive" && o.sc.faults.kill > 0)
        throw usage_error("--faults kill=P: the exhaustive search does not draw kills at random; --kills N branches on "
                          "up to N kills of any simulated process at any step");
    if (o.kills_given && !(o.explore == "exhaustive" || (o.replay && o.atomic_sections)))
        throw usage_error("--kills: only with --explore exhaustive, or with --replay --atomic-sections");
    if (o.kills_given) o.sc.faults.max_kills = o.kills;   // every replay of this run has that budget
    if (o.timeout_s) o.sc.timeout = std::chrono::seconds(*o.timeout_s);
    else if (o.sc.faults.agent_hang > 0) o.sc.timeout = std::chrono::seconds(20);   // hung agents must end
    return o;
}

/// The options that reproduce the scenario: for the replay command line.
std::string scenario_args(const options& o) {
    const ks::scenario& sc = o.sc;
    const ks::scenario def;
    std::string s = "--scenario " + sc.name + " --design " + sc.design();
    if (sc.tasks != def.tasks) s += " --tasks " + std::to_string(sc.tasks);
    if (sc.cap != def.cap) s += " --cap " + std::to_string(sc.cap);
    if (sc.starters != def.starters) s += " --starters " + std::to_string(sc.starters);
    if (!sc.pm) s += " --no-pm";
    if (sc.waiters) s += " --waiters " + std::to_string(sc.waiters);
    if (sc.cancels) s += " --cancels " + std::to_string(sc.cancels);
    if (sc.reapers) s += " --reapers " + std::to_string(sc.reapers);
    if (sc.restarts) s += " --restarts " + std::to_string(sc.restarts);
    if (!sc.enqueue_first) s += " --enqueue-race";
    if (sc.faults.any() || sc.faults.max_kills) s += " --faults " + faults_text(sc.faults);
    if (sc.timeout) s += " --timeout " + std::to_string(std::chrono::duration_cast<std::chrono::seconds>(*sc.timeout).count());
    return s + " --seed " + std::to_string(o.seed);
}

/// The output files, opened before the exploration so that a bad path fails at once.
struct outputs {
    std::string trace_path, svg_path;
    std::ofstream trace, svg;

    std::optional<ks::svg_axis> axis;

    explicit outputs(const options& o) : trace_path(o.trace), svg_path(o.svg), axis(o.svg_axis) {
        open(trace, trace_path, "trace");
        open(svg, svg_path, "SVG");
    }
    void write(const ks::run_result& shown, const std::string& title) {
        if (trace.is_open()) {
            ks::write_trace_jsonl(trace, shown);
            close(trace, trace_path, "trace");
        }
        if (svg.is_open()) {
            // Steps by default for a counterexample: the race is in the order of the steps.
            ks::write_svg(svg, shown, title, axis.value_or(shown.ok() ? ks::svg_axis::time : ks::svg_axis::steps));
            close(svg, svg_path, "SVG");
        }
    }

private:
    static void open(std::ofstream& f, const std::string& path, const char* what) {
        if (path.empty()) return;
        f.open(path, std::ios::binary | std::ios::trunc);
        if (!f) throw output_error("cannot open the " + std::string(what) + " file '" + path + "' for writing");
    }
    static void close(std::ofstream& f, const std::string& path, const char* what) {
        f.close();
        if (!f) throw output_error("cannot write the " + std::string(what) + " file '" + path + "'");
    }
};

std::string describe(const ks::scenario& sc) {
    std::string s = sc.name + ": design " + sc.design() + ", cap " + std::to_string(sc.cap) + ", " +
                    std::to_string(sc.tasks) + " queued tasks, " + std::to_string(sc.starters) + " starters, " +
                    (sc.pm ? "a PM agent" : "no PM");
    if (!sc.enqueue_first) s += ", enqueues racing";
    if (sc.waiters) s += ", " + std::to_string(sc.waiters) + " wait" + (sc.waiters == 1 ? "" : "s");
    if (sc.cancels) s += ", " + std::to_string(sc.cancels) + " cancel" + (sc.cancels == 1 ? "" : "s");
    if (sc.reapers) s += ", " + std::to_string(sc.reapers) + " reap" + (sc.reapers == 1 ? "" : "s");
    if (sc.restarts) s += ", " + std::to_string(sc.restarts) + " restart" + (sc.restarts == 1 ? "" : "s");
    if (sc.faults.any()) s += ", faults " + faults_text(sc.faults);
    if (sc.timeout)
        s += ", timeout " + std::to_string(std::chrono::duration_cast<std::chrono::seconds>(*sc.timeout).count()) + " s";
    return s;
}

std::string seconds_text(double s) {
    char buf[32];
    std::snprintf(buf, sizeof buf, "%.2f s", s);
    return buf;
}

/// The numbered steps of a schedule: "  3. starter-2: store.list_sessions".
void print_steps(std::ostream& os, const options& o, const std::vector<int>& schedule, const std::vector<std::string>& actors,
                 const ks::run_options& opt) {
    const auto ops = ks::step_ops(o.sc, o.seed, schedule, opt);
    const int width = static_cast<int>(std::to_string(schedule.size()).size());
    for (const auto& [n, e, op] : ranges::views::zip(ranges::views::iota(std::size_t{1}), schedule, ops)) {
        const std::string who = ks::detail::schedule_entry_name(e < 0 ? -e - 1 : e, actors);
        char num[32];
        std::snprintf(num, sizeof num, "  %*zu. ", width, n);
        os << num << who << ": " << op << '\n';
    }
}

void print_violations(std::ostream& os, const std::vector<ks::violation>& vs) {
    for (const auto& v : vs) os << "  step " << v.step << ": " << v.kind << ": " << v.detail << '\n';
}

bool breaks(const ks::run_result& r, const std::string& kind) {
    return std::any_of(r.violations.begin(), r.violations.end(), [&](const ks::violation& v) { return v.kind == kind; });
}

/// Whether a counterexample replays only with atomic critical sections: one found by the
/// exhaustive search (which runs critical sections without interruption) records it.
bool replays_atomic(const options&, const ks::counterexample& c) { return c.atomic_sections; }

int run_replay(const options& o, outputs& out) {
    ks::scripted_chooser ch(*o.replay);
    ks::run_options opt;
    opt.atomic_critical_sections = o.atomic_sections;
    opt.kill_points = o.atomic_sections && o.kills > 0;
    ks::run_result r = ks::run(o.sc, o.seed, ch, opt);
    if (ch.diverged)
        std::cerr << "kugetsu-sim: warning: the schedule does not fit this run (an actor it names was not ready); "
                     "the lowest-numbered ready actor ran instead\n";
    ks::exploration ex;
    ex.mode = "replay";
    ks::detail::account(ex, r, o.seed);
    out.write(r, "kugetsu-sim " + o.sc.name + ": replay, seed " + std::to_string(o.seed));
    if (o.json) {
        auto j = ks::summary_json(o.sc, ex, o.seed);
        j["replayed_steps"] = o.replay->size();
        j["steps"] = r.steps;
        j["diverged"] = ch.diverged;
        if (!j["counterexample"].is_null()) j["counterexample"]["atomic_sections"] = o.atomic_sections;
        std::cout << j.dump() << '\n';
    } else {
        std::cout << describe(o.sc) << ", seed " << o.seed << '\n'
                  << "replayed: " << o.replay->size() << " scheduled steps, then the lowest-numbered ready actor; "
                  << r.steps << " steps in all" << (ch.diverged ? " (the schedule diverged)" : "") << '\n'
                  << "peak live dev agents: " << r.peak_live << " (cap " << r.cap << ")\n";
        if (r.violations.empty()) {
            std::cout << "no invariant broken\n";
        } else {
            std::cout << "invariants broken:\n";
            print_violations(std::cout, r.violations);
        }
        std::cout << "lost tasks: " << r.lost << ", duplicate starts: " << r.duplicates << '\n';
        if (r.no_daemon_left)
            std::cout << "no daemon left (killed past the restart budget): " << r.stranded
                      << " unfinished tasks stranded, not counted as lost\n";
        const std::size_t n = std::min<std::size_t>(r.schedule.size(), o.replay->size());
        if (n) {
            std::cout << "the scheduled steps:\n";
            print_steps(std::cout, o, std::vector<int>(r.schedule.begin(), r.schedule.begin() + static_cast<std::ptrdiff_t>(n)),
                        r.actor_names, opt);
        }
    }
    return r.ok() ? exit_ok : exit_violation;
}

int run_explore(options& o, outputs& out) {
    ks::exploration ex;
    if (o.explore == "exhaustive")
        ex = ks::explore_exhaustive(o.sc, o.seed,
                                    {.max_states = o.max_states, .reduce = o.reduce, .early_ends = o.early_ends,
                                     .order = o.order, .threads = o.threads, .kills = o.kills, .fine_states = o.fine_states,
                                     .kind = o.kind});
    else if (o.explore == "commit-kills") ex = ks::explore_commit_kills(o.sc, o.seed, o.schedules, o.threads);
    else ex = ks::explore_random(o.sc, o.seed, o.schedules, o.explore == "pct", o.depth, o.threads);
    // The explorers shrink only the overall shortest counterexample (to one that may break
    // another invariant sooner); shrink each kind's too, with local moves only, so that its
    // replay line is short. shrink() costs about 3n replays of n steps, so long ones (a kind
    // found only at the end of a long run, such as events) are left as found.
    constexpr std::size_t max_shrink_steps = 300;
    ex.seconds += ks::detail::timed([&] {
        if (ex.shortest) ex.shortest_by_kind.try_emplace(ex.shortest->first.kind, *ex.shortest);
        for (auto& [kind, c] : ex.shortest_by_kind) {
            if (ex.shortest && ex.shortest->first.kind == kind) c = *ex.shortest;
            else if (c.schedule.size() <= max_shrink_steps && !c.minimal) c = ks::shrink(o.sc, c, {.max_states = 0});
        }
    });

    // How each counterexample replays (see the banner: exhaustive search and --atomic-sections).
    std::map<std::string, bool> atomic_by_kind;
    for (const auto& [kind, c] : ex.shortest_by_kind) atomic_by_kind[kind] = replays_atomic(o, c);
    const bool atomic = ex.shortest && replays_atomic(o, *ex.shortest);
    ks::run_options shown_opt;
    shown_opt.atomic_critical_sections = atomic;
    shown_opt.kill_points = atomic && ex.shortest && ex.shortest->kill_points > 0;

    // The run to show: the counterexample replayed, or the exploration's first schedule.
    ks::run_result shown;
    std::string which;
    if (ex.shortest) {
        shown = ks::replay(o.sc, ex.shortest->seed, ex.shortest->schedule, shown_opt);
        which = "the shortest counterexample, replayed";
        const auto& c = *ex.shortest;
        if (!breaks(shown, c.first.kind))   // a bug in the simulator: a counterexample must replay
            std::cerr << "kugetsu-sim: warning: the counterexample did not break '" << c.first.kind
                      << "' when replayed\n";
    } else if (o.explore == "exhaustive") {
        shown = ks::replay(o.sc, o.seed, {});
        which = "the schedule that always runs the lowest-numbered ready actor";
    } else if (o.explore == "commit-kills") {
        ks::commit_kill_chooser ch(ks::mix(o.seed, 1), 0, false);
        shown = ks::run(o.sc, o.seed, ch);
        which = "the first base schedule, without kills";
    } else if (o.explore == "pct") {
        ks::pct_chooser ch(ks::mix(o.seed, 1), o.depth, ks::pct_expected_steps(o.sc, o.seed), o.sc.faults.kill);
        shown = ks::run(o.sc, o.seed, ch);
        which = "the first schedule explored";
    } else {
        ks::random_chooser ch(ks::mix(o.seed, 1), o.sc.faults.kill);
        shown = ks::run(o.sc, o.seed, ch);
        which = "the first schedule explored";
    }
    out.write(shown, "kugetsu-sim " + o.sc.name + ": " + which);
    const bool broken = ex.violating > 0;
    ex.example = shown;

    if (o.json) {
        auto j = ks::summary_json(o.sc, ex, o.seed);
        if (ex.shortest) j["counterexample"]["atomic_sections"] = atomic;
        for (const auto& [kind, at] : atomic_by_kind) j["shortest_by_kind"][kind]["atomic_sections"] = at;
        std::cout << j.dump() << '\n';
        return broken ? exit_violation : exit_ok;
    }
    auto& os = std::cout;
    os << describe(o.sc) << ", seed " << o.seed << '\n';
    os << "explored: ";
    if (ex.mode == "exhaustive")
        os << ex.states << " states, " << ex.schedules << " complete schedules (exhaustive "
           << (o.order == ks::search_order::breadth_first ? "breadth-first, " : "depth-first, ")
           << (ex.complete ? "every state reachable with up to " + std::to_string(o.early_ends) +
                                 " agent end(s) by choice and " +
                                 (o.kills ? "up to " + std::to_string(o.kills) + " kill(s) of any simulated process at any step"
                                          : std::string("no kill"))
                           : ex.shortest ? "stopped at the first violation" : "stopped at --max-states")
           << (ex.reduced ? ", critical sections atomic" : ", no reduction")
           << (o.kind.empty() ? "" : ", only a violation of " + o.kind + " ends a path") << ")";
    else if (ex.mode == "commit-kills")
        os << ex.schedules << " schedules (" << o.schedules << " random base schedules, and each with the committing "
           << "process killed just before and just after each of its commits: " << ex.kills << " kills)";
    else
        os << ex.schedules << " schedules (" << ex.mode << (ex.mode == "pct" ? ", depth " + std::to_string(o.depth) : "")
           << ")";
    os << " in " << seconds_text(ex.seconds) << " on " << ex.threads << (ex.threads == 1 ? " thread\n" : " threads\n");
    os << "peak live dev agents: " << ex.peak_live << " (cap " << o.sc.cap << ")\n";
    if (!broken) {
        os << "no invariant broken\n";
    } else {
        os << "invariants broken in " << ex.violating << " of " << ex.schedules << " schedules:\n";
        // (broken: by_kind has an entry)
        const std::size_t w =
            ranges::max(ex.by_kind | ranges::views::keys | ranges::views::transform([](const std::string& k) { return k.size(); }));
        for (const auto& [k, n] : ex.by_kind) os << "  " << k << std::string(w + 2 - k.size(), ' ') << n << '\n';
    }
    os << "lost tasks: " << ex.lost_tasks << ", duplicate starts: " << ex.duplicate_starts << " (summed over schedules)\n";
    if (ex.runs_without_daemon)
        os << "runs with no daemon left (killed past the restart budget): " << ex.runs_without_daemon << ", their "
           << ex.stranded_tasks << " unfinished tasks stranded, not counted as lost\n";
    if (ex.shortest) {
        const auto& c = *ex.shortest;
        os << "counterexample ("
           << (c.minimal && !o.kind.empty() ? "a shortest: no schedule breaks " + o.kind + " in fewer steps, "
               : c.minimal                  ? std::string("a shortest: no schedule breaks an invariant in fewer steps, ")
               : c.shortest_of_its_steps ? "shrunk: no schedule made of at most its own steps breaks one sooner, "
                                         : "the shortest found, ")
           << c.schedule.size() << " steps): " << c.first.kind << ": "
           << c.first.detail << '\n';
        // Named from the replayed run: the same schedule, so the same actors and steps.
        const std::size_t n = std::min(c.schedule.size(), shown.schedule.size());
        print_steps(os, o, std::vector<int>(shown.schedule.begin(), shown.schedule.begin() + static_cast<std::ptrdiff_t>(n)),
                    shown.actor_names, shown_opt);
        if (ex.shortest_by_kind.size() > 1) {
            os << "shortest per kind:";
            bool first = true;
            for (const auto& [k, s] : ex.shortest_by_kind) {
                os << (first ? " " : ", ") << k << " " << s.schedule.size() << " steps";
                first = false;
            }
            os << '\n';
        }
        if (atomic)
            os << "(a schedule of the exhaustive search, whose critical sections run without interruption: "
                  "replay it with --atomic-sections)\n";
        os << "replay: kugetsu-sim " << scenario_args(o) << (atomic ? " --atomic-sections" : "")
           << (shown_opt.kill_points ? " --kills " + std::to_string(o.kills) : "") << " --replay "
           << ks::detail::schedule_text(c.schedule) << '\n';
    }
    if (!o.trace.empty() || !o.svg.empty()) {
        os << "shown run (" << which << "):";
        if (!o.trace.empty()) os << " trace " << o.trace;
        if (!o.svg.empty()) os << (o.trace.empty() ? "" : ",") << " timeline " << o.svg;
        os << '\n';
    }
    return broken ? exit_violation : exit_ok;
}

} // namespace

int main(int argc, char** argv) {
    try {
        options o = parse_args(argc, argv);
        if (o.help) {
            std::cout << usage_text;
            return exit_ok;
        }
        outputs out(o);
        return o.replay ? run_replay(o, out) : run_explore(o, out);
    } catch (const usage_error& e) {
        std::cerr << "kugetsu-sim: " << e.what() << '\n';
        return exit_usage;
    } catch (const output_error& e) {
        std::cerr << "kugetsu-sim: " << e.what() << '\n';
        return exit_cantcreat;
    } catch (const std::exception& e) {
        std::cerr << "kugetsu-sim: internal error: " << e.what() << '\n';
        return exit_software;
    }
}
