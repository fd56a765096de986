// kugetsu-bench-fill: enqueues many tasks into a kugetsu state directory through the library,
// for bench/scale.sh (100,000 `kugetsu enqueue` processes would take minutes).
//
//   kugetsu-bench-fill HOME COUNT [--durable] [--prefix P] [--from K] -- CMD [ARG...]
//
// Creates COUNT pending dev tasks P<K>, P<K+1>, ... (P defaults to "q", K to 1) with the
// command CMD ARG..., run from the current directory, exactly as `kugetsu enqueue --id ID --
// CMD ARG...` records them: basic_dispatcher::enqueue over file_store, with a task_queued
// line appended to HOME/events.jsonl. Without --durable the records are not fsynced (quick
// to write; a crash could lose them, which a benchmark does not mind). Prints one line:
//   tasks=COUNT seconds=S us_per_task=U durable=0|1
// Exit status: 0; 64 on a usage error; 74 if a task cannot be enqueued.
#include <kugetsu/kugetsu.hpp>

#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <iostream>
#include <string>
#include <vector>

using namespace kugetsu;

namespace {
[[noreturn]] void usage() {
    std::cerr << "usage: kugetsu-bench-fill HOME COUNT [--durable] [--prefix P] [--from K] -- CMD [ARG...]\n";
    std::exit(64);
}
} // namespace

int main(int argc, char** argv) {
    if (argc < 5) usage();
    const std::string home = argv[1];
    const long count = std::atol(argv[2]);
    if (count < 1) usage();
    bool durable = false;
    std::string prefix = "q";
    long from = 1;
    std::vector<std::string> cmd;
    for (int i = 3; i < argc; ++i) {
        if (std::strcmp(argv[i], "--durable") == 0) durable = true;
        else if (std::strcmp(argv[i], "--prefix") == 0 && i + 1 < argc) prefix = argv[++i];
        else if (std::strcmp(argv[i], "--from") == 0 && i + 1 < argc) from = std::atol(argv[++i]);
        else if (std::strcmp(argv[i], "--") == 0) {
            cmd.assign(argv + i + 1, argv + argc);
            break;
        } else usage();
    }
    if (cmd.empty()) usage();

    file_store st(home, {.durable = durable, .quarantine = true});
    std::error_code ec;
    st.open(ec);
    if (ec) {
        std::cerr << "kugetsu-bench-fill: " << st.last_error_detail() << "\n";
        return 74;
    }
    basic_dispatcher<null_lock, fake_spawner, jsonl_notifier, file_store, system_clock, null_workspace> d(
        null_lock{}, fake_spawner{}, jsonl_notifier(home + "/events.jsonl"), std::move(st), system_clock{}, null_workspace{});
    const std::string cwd = std::filesystem::current_path().string();
    const auto t0 = std::chrono::steady_clock::now();
    for (long k = from; k < from + count; ++k) {
        d.enqueue({prefix + std::to_string(k), cmd, role::dev, {}, {}, {}, cwd}, ec);
        if (ec) {
            std::cerr << "kugetsu-bench-fill: " << d.last_error_detail() << "\n";
            return 74;
        }
    }
    const double s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    std::printf("tasks=%ld seconds=%.3f us_per_task=%.1f durable=%d\n", count, s, s * 1e6 / static_cast<double>(count),
                durable ? 1 : 0);
    return 0;
}
