// Example 1: six real tasks, cap 3: the queue never runs more than three agents.
//
// The agents are this program itself, run with --agent: each one records, in a counter file
// that it locks with flock, how many agents are live, so the peak below is measured by the
// agents, not by the dispatcher. The dispatcher wakes when a child exits (waitid), never on a
// timer.
//
// Expected output (pids and times vary):
//   kugetsu example 1: 6 tasks, cap 3, state in /tmp/kugetsu-example-XXXXXX
//   t1 completed   t2 completed   t3 completed   t4 completed   t5 completed   t6 completed
//   peak of live agents, as the agents counted: 3 (cap 3)
//   events written: 24
#include <kugetsu/home.hpp>

#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <iostream>
#include <string>

#include <fcntl.h>
#include <sys/file.h>
#include <sys/wait.h>
#include <unistd.h>

namespace {

// --agent COUNTER: live += 1 (peak updated), work, live -= 1. The "work" is to wait until
// the peak reaches 3, so the first three agents overlap however slow the machine is (at
// most 10 s); later ones find it reached and end at once.
int agent(const char* counter) {
    long peak = 0;
    auto update = [&](int delta) {
        const int fd = ::open(counter, O_RDWR | O_CREAT | O_CLOEXEC, 0600);
        if (fd < 0 || ::flock(fd, LOCK_EX) != 0) return false;
        char buf[64] = {};
        if (::pread(fd, buf, sizeof buf - 1, 0) < 0) return false;
        long live = 0;
        peak = 0;
        std::sscanf(buf, "%ld %ld", &live, &peak);
        live += delta;
        peak = std::max(peak, live);
        const int n = std::snprintf(buf, sizeof buf, "%ld %ld\n", live, peak);
        const bool ok = ::ftruncate(fd, 0) == 0 && ::pwrite(fd, buf, static_cast<size_t>(n), 0) == n;
        ::close(fd);
        return ok;
    };
    if (!update(+1)) return 1;
    for (int i = 0; i < 1000 && peak < 3; ++i) {
        ::usleep(10 * 1000);
        if (!update(0)) return 1;
    }
    return update(-1) ? 0 : 1;
}

} // namespace

int main(int argc, char** argv) {
    if (argc == 3 && std::string(argv[1]) == "--agent") return agent(argv[2]);

    char tmpl[] = "/tmp/kugetsu-example-XXXXXX";
    const std::string home = ::mkdtemp(tmpl);
    const std::string counter = home + "/live-counter";
    std::cout << "kugetsu example 1: 6 tasks, cap 3, state in " << home << "\n";

    kugetsu::dispatcher d = kugetsu::open_dispatcher(home, {.cap = 3});
    char self[4096] = {};
    if (::readlink("/proc/self/exe", self, sizeof self - 1) <= 0) return 1;
    for (int i = 1; i <= 6; ++i)
        d.enqueue({"t" + std::to_string(i), {self, "--agent", counter}});

    // The daemon loop: fill free slots, then sleep until some agent exits.
    for (;;) {
        d.process_queue();
        std::error_code ec;
        auto pending = d.store().items_in_state(kugetsu::task_state::pending, 1, ec);
        if (pending.empty() && d.live() == 0) break;
        siginfo_t info{};
        ::waitid(P_ALL, 0, &info, WEXITED | WNOWAIT);   // wake on exit; process_queue reaps it
    }

    std::error_code ec;
    for (const auto& it : d.store().list_items(ec))
        std::cout << it.id << " " << kugetsu::to_string(it.state) << "   ";
    std::ifstream in(counter);
    long live = -1, peak = -1;
    in >> live >> peak;
    std::cout << "\npeak of live agents, as the agents counted: " << peak << " (cap 3)\n";
    std::ifstream events(home + "/events.jsonl");
    int lines = 0;
    for (std::string line; std::getline(events, line);) ++lines;
    std::cout << "events written: " << lines << "\n";
    return peak == 3 ? 0 : 1;
}
