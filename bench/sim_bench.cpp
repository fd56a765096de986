// Benchmarks of the simulator (not tests): schedules per second under random and PCT
// exploration, and the time and size of the exhaustive search of the six-task race.
//
//   build/dev/bench/kugetsu-bench-sim --benchmark_filter=exhaustive
#include <benchmark/benchmark.h>

#include <kugetsu/sim/explore.hpp>

using namespace kugetsu::sim;

namespace {

void random_schedules(benchmark::State& state, scenario sc, bool pct) {
    std::uint64_t seed = 1, schedules = 0;
    for (auto _ : state) {
        auto ex = explore_random(sc, seed++, 20, pct, 3);
        schedules += ex.schedules;
        benchmark::DoNotOptimize(ex.peak_live);
    }
    state.counters["schedules/s"] = benchmark::Counter(static_cast<double>(schedules), benchmark::Counter::kIsRate);
}

void BM_random_fixed(benchmark::State& s) { random_schedules(s, scenario{}, false); }
void BM_random_legacy(benchmark::State& s) { random_schedules(s, scenario::legacy(), false); }
void BM_pct_fixed(benchmark::State& s) { random_schedules(s, scenario{}, true); }
void BM_random_fixed_with_faults(benchmark::State& s) {
    scenario sc;
    sc.faults.kill = 0.01;
    sc.faults.exec_failure = 0.2;
    sc.faults.agent_crash = 0.1;
    sc.faults.agent_hang = 0.05;
    sc.faults.pid_reuse = true;
    sc.timeout = std::chrono::seconds(20);
    random_schedules(s, sc, false);
}

void BM_exhaustive_six_task_race(benchmark::State& state) {
    scenario sc;
    sc.starters = static_cast<int>(state.range(0));
    exploration ex;
    for (auto _ : state) ex = explore_exhaustive(sc, 1, {.max_states = 5'000'000, .stop_at_violation = false});
    state.counters["states"] = static_cast<double>(ex.states);
    state.counters["schedules"] = static_cast<double>(ex.schedules);
    state.counters["complete"] = ex.complete ? 1 : 0;
    state.counters["states/s"] = benchmark::Counter(static_cast<double>(ex.states) * static_cast<double>(state.iterations()),
                                                    benchmark::Counter::kIsRate);
}

} // namespace

BENCHMARK(BM_random_fixed)->Unit(benchmark::kMillisecond);
BENCHMARK(BM_random_legacy)->Unit(benchmark::kMillisecond);
BENCHMARK(BM_pct_fixed)->Unit(benchmark::kMillisecond);
BENCHMARK(BM_random_fixed_with_faults)->Unit(benchmark::kMillisecond);
BENCHMARK(BM_exhaustive_six_task_race)->DenseRange(0, 3)->Unit(benchmark::kMillisecond)->Iterations(1);

BENCHMARK_MAIN();
