// kugetsu-bench-fill: enqueues many tasks into a kugetsu HOME (HOME/state.db) through the
// library, for bench/scale.sh (100,000 `kugetsu enqueue` processes would take minutes).
//
//   kugetsu-bench-fill HOME COUNT [--batch K] [--cap N] [--prefix P] [--from K] -- CMD [ARG...]
//
// Creates COUNT pending dev tasks P<K>, P<K+1>, ... (P defaults to "q", K to 1) with the
// command CMD ARG..., run from the current directory, as `kugetsu enqueue --id ID -- CMD
// ARG...` records them: the same task row and the same task_queued event, then the events
// relayed to HOME/events.jsonl.
//   --batch 1     (what `kugetsu enqueue` does) basic_dispatcher::enqueue(), one unit of work
//                 per task, committed durably (one fdatasync each), relayed after each
//   --batch K     (default 1000) K tasks per unit of work, written straight into the store
//                 (the rows enqueue() writes), one durable commit per K; relayed at the end
//   --cap N       the cap a HOME without limits gets (default 3, as MAX_CONCURRENT_AGENTS)
// The HOME is created (and a kugetsu 0.1 HOME imported) by kugetsu::open_home_store().
// Prints one line:
//   tasks=COUNT seconds=S us_per_task=U batch=K
// Exit status: 0; 64 on a usage error; 74 if a task cannot be enqueued.
#include <kugetsu/home.hpp>
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
    std::cerr << "usage: kugetsu-bench-fill HOME COUNT [--batch K] [--cap N] [--prefix P] [--from K] -- CMD [ARG...]\n";
    std::exit(64);
}
[[noreturn]] void fail(const std::string& what) {
    std::cerr << "kugetsu-bench-fill: " << what << "\n";
    std::exit(74);
}
} // namespace

int main(int argc, char** argv) {
    if (argc < 5) usage();
    const std::string home = argv[1];
    const long count = std::atol(argv[2]);
    if (count < 1) usage();
    long batch = 1000;
    int cap = 3;
    std::string prefix = "q";
    long from = 1;
    std::vector<std::string> cmd;
    for (int i = 3; i < argc; ++i) {
        if (std::strcmp(argv[i], "--batch") == 0 && i + 1 < argc) batch = std::atol(argv[++i]);
        else if (std::strcmp(argv[i], "--cap") == 0 && i + 1 < argc) cap = std::atoi(argv[++i]);
        else if (std::strcmp(argv[i], "--prefix") == 0 && i + 1 < argc) prefix = argv[++i];
        else if (std::strcmp(argv[i], "--from") == 0 && i + 1 < argc) from = std::atol(argv[++i]);
        else if (std::strcmp(argv[i], "--") == 0) {
            cmd.assign(argv + i + 1, argv + argc);
            break;
        } else usage();
    }
    if (cmd.empty() || batch < 1 || cap < 1) usage();

    std::error_code ec;
    std::string why;
    sqlite_store st = open_home_store(home, ec, why);
    if (ec) fail(why);
    const home_layout h{home};
    basic_dispatcher<null_lock, fake_spawner, jsonl_notifier, sqlite_store, system_clock, null_workspace> d(
        null_lock{}, fake_spawner{}, jsonl_notifier(h.events()), std::move(st), system_clock{}, null_workspace{},
        {.cap = cap});
    const kugetsu::limits lim = d.limits(ec);   // writes them into a HOME that has none
    if (ec) fail(d.last_error_detail());
    const std::string cwd = std::filesystem::current_path().string();
    const auto t0 = std::chrono::steady_clock::now();
    if (batch == 1) {
        for (long k = from; k < from + count; ++k) {
            d.enqueue({prefix + std::to_string(k), cmd, role::dev, {}, {}, {}, cwd}, ec);
            if (ec) fail(d.last_error_detail());
        }
    } else {
        // The rows basic_dispatcher::enqueue() writes (make_item, task_queued), K per unit.
        auto& s = d.store();
        system_clock clock;
        for (long k = from; k < from + count;) {
            s.begin(ec);
            if (ec) fail(s.last_error_detail());
            for (long end = std::min(from + count, k + batch); k < end; ++k) {
                queue_item it;
                it.id = prefix + std::to_string(k);
                it.argv = cmd;
                it.role = role::dev;
                it.max_attempts = lim.max_attempts;
                it.workdir = cwd;
                it.enqueued_at = it.updated_at = clock.now();
                s.create_item(it, ec);
                if (ec) fail(s.last_error_detail());
                event e;
                e.type = event_type::task_queued;
                e.task_id = it.id;
                e.time = it.enqueued_at;
                s.append_event(e, ec);
                if (ec) fail(s.last_error_detail());
            }
            s.commit(durability::durable, ec);
            if (ec) fail(s.last_error_detail());
        }
        d.flush_events();   // the events file, as the enqueue processes would have left it
        if (!d.last_notifier_error().empty()) fail(d.last_notifier_error());
    }
    const double sec = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    std::printf("tasks=%ld seconds=%.3f us_per_task=%.1f batch=%ld\n", count, sec, sec * 1e6 / static_cast<double>(count),
                batch);
    return 0;
}
