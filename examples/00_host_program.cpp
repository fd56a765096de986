// Example 0: the host program shown in the README: queue three tasks, run them at most two at
// a time, print how each ended. The agents are ordinary programs (echo, ls, true), run without
// a shell; their output goes to HOME/logs/<task id>.log, the state to HOME/state.db and the
// events to HOME/events.jsonl.
//
// Expected output:
//   echo completed
//   ls completed
//   true completed
#include <kugetsu/home.hpp>

#include <cstdlib>
#include <iostream>

int main() {
    char home[] = "/tmp/kugetsu-example-XXXXXX";
    if (!::mkdtemp(home)) return 1;
    kugetsu::dispatcher d = kugetsu::open_dispatcher(home, {.cap = 2});
    d.enqueue({"echo", {"echo", "hello"}});
    d.enqueue({"ls", {"ls", "/"}});
    d.enqueue({"true", {"true"}});
    // The daemon's own loop: fill the free slots, sleep until something changes (an agent's
    // end, a commit, a deadline), again; here until a pass finds nothing left to run.
    kugetsu::home_waiter w(kugetsu::home_layout{home});
    struct until_drained {
        kugetsu::dispatcher& d;
        bool pass(const kugetsu::pass_report& r, const std::error_code& ec) { return !ec && (r.taken > 0 || d.live() > 0); }
    };
    kugetsu::serve(d, w, {}, until_drained{d});
    std::error_code ec;
    bool all_completed = true;
    for (const auto& it : d.store().list_items(ec)) {
        std::cout << it.id << " " << kugetsu::to_string(it.state) << "\n";
        all_completed = all_completed && it.state == kugetsu::task_state::completed;
    }
    return all_completed && !ec ? 0 : 1;
}
