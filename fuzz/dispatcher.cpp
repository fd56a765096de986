// fuzz/dispatcher.cpp: bytes -> a sequence of dispatcher operations, with agents exiting,
// crashing and ignoring SIGTERM, the clock moving, the process restarting, and store and
// spawner faults, on basic_dispatcher over an in-memory store (behind a fault injector), the
// fake spawner (behind a recorder), a manual clock, null_lock, a recording notifier and
// null_workspace.
//
// Input: byte 0 the cap (1-3), byte 1 max_attempts (1-3), byte 2 the kill grace (0-2 s); then
// one operation per byte, each followed by the bytes it needs (see run()).
//
// Checked after every operation, against what really runs (the spawner's processes, not the
// dispatcher's records):
//   - live dev agents <= cap, live PM agents <= 1;
//   - every live agent has its session in the store (it is counted);
//   - no task is run twice (at most one process per task got past release());
//   - no task is lost (an id once in the store stays there) and a final state never changes;
//   - a task is `completed` only if one of its agents exited 0; a PM task is never pending;
//   - every event names a task in the store; until a store fault fires, one task_started
//     event per run and at most one final event (task_completed or task_error) per task.
// At the end, with faults off: agents exit and reap/process_queue run until nothing changes;
// then every task must be final and no session left.
//
// Three more checks, for bugs this target found (fuzz/README.md), fixed since and guarded
// by the strict-*.bin inputs of the corpus (KUGETSU_FUZZ_LENIENT=1 turns them off):
//   - a start_item() that fails on the store gives up its claim like start() and
//     process_queue() do, so the task is not stranded `notified` while this process lives;
//   - after a successful reap(), the task of every live agent is `running` (cancel() of a
//     task whose start was cut short by a store failure used to leave its agent running);
//   - the event checks hold after store faults too (an event was sent for a write that
//     failed, and again when the state was recorded later).
// KUGETSU_FUZZ_TRACE=1 prints each operation and the items after it.
#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <cstddef>
#include <cstdint>
#include <map>
#include <memory>
#include <set>
#include <string>
#include <string_view>
#include <system_error>
#include <vector>

#include <kugetsu/clock/manual_clock.hpp>
#include <kugetsu/dispatcher.hpp>
#include <kugetsu/lock/null_lock.hpp>
#include <kugetsu/notify/callback_notifier.hpp>
#include <kugetsu/spawn/fake_spawner.hpp>
#include <kugetsu/store/memory_store.hpp>
#include <kugetsu/workspace/null_workspace.hpp>

#include "check.hpp"

namespace {

using namespace kugetsu;
using namespace std::chrono_literals;

/// Which store call fails next, and how.
struct fault_plan {
    int countdown = -1;     ///< store calls to let through before failing; -1: none armed
    int burst = 0;          ///< consecutive calls that fail once it fires
    bool applied = false;   ///< a failing write still takes effect (a rename whose fsync failed)
    std::error_code error;
    int fired = 0;
};

/// memory_store behind a fault injector: a failing call reports `error` and, unless
/// `applied`, does nothing.
class faulty_store {
public:
    faulty_store(memory_store inner, std::shared_ptr<fault_plan> plan)
        : inner_(std::move(inner)), plan_(std::move(plan)) {}

    void create_item(const queue_item& it, std::error_code& ec) { write(ec, [&] { inner_.create_item(it, ec); }); }
    void put_item(const queue_item& it, std::error_code& ec) { write(ec, [&] { inner_.put_item(it, ec); }); }
    void put_session(const session& se, std::error_code& ec) { write(ec, [&] { inner_.put_session(se, ec); }); }
    void remove_session(std::string_view id, std::error_code& ec) { write(ec, [&] { inner_.remove_session(id, ec); }); }
    std::optional<queue_item> get_item(std::string_view id, std::error_code& ec) {
        return fails(ec) ? std::nullopt : inner_.get_item(id, ec);
    }
    std::vector<queue_item> list_items(std::error_code& ec) {
        return fails(ec) ? std::vector<queue_item>{} : inner_.list_items(ec);
    }
    std::vector<queue_item> items_in_state(task_state st, std::size_t limit, std::error_code& ec) {
        return fails(ec) ? std::vector<queue_item>{} : inner_.items_in_state(st, limit, ec);
    }
    std::vector<session> list_sessions(std::error_code& ec) {
        return fails(ec) ? std::vector<session>{} : inner_.list_sessions(ec);
    }

private:
    bool fails(std::error_code& ec) {
        ec.clear();
        auto& p = *plan_;
        if (p.countdown < 0) return false;
        if (p.countdown > 0) {
            --p.countdown;
            return false;
        }
        if (--p.burst <= 0) p.countdown = -1;
        ++p.fired;
        ec = p.error;
        return true;
    }
    template <class Op>
    void write(std::error_code& ec, Op op) {
        if (!fails(ec)) return op();
        if (plan_->applied) {
            const auto fault = ec;
            op();
            ec = fault;
        }
    }

    memory_store inner_;
    std::shared_ptr<fault_plan> plan_;
};
static_assert(kugetsu::store<faulty_store>);

/// Every process the dispatcher spawned, and for which task.
struct spawn_log {
    struct entry {
        int pid;
        std::string task_id;
        bool ran = false;     ///< got past release()
        bool ended = false;   ///< no longer running: nothing about it changes any more
        int exit_code = -1;   ///< ended and exited: its code
    };
    std::vector<entry> spawned;
};

/// fake_spawner, remembering what it spawned.
class recording_spawner {
public:
    recording_spawner(fake_spawner inner, std::shared_ptr<spawn_log> log)
        : inner_(std::move(inner)), log_(std::move(log)) {}
    process_ref spawn(const spawn_request& r, std::error_code& ec) {
        auto p = inner_.spawn(r, ec);
        if (!ec) log_->spawned.push_back({p.pid, r.task_id});
        return p;
    }
    void release(const process_ref& p, std::error_code& ec) { inner_.release(p, ec); }
    void abandon(const process_ref& p) noexcept { inner_.abandon(p); }
    process_status poll(const process_ref& p, std::error_code& ec) { return inner_.poll(p, ec); }
    void signal(const process_ref& p, stop_signal s, std::error_code& ec) { inner_.signal(p, s, ec); }
    process_ref self() { return inner_.self(); }

private:
    fake_spawner inner_;
    std::shared_ptr<spawn_log> log_;
};
static_assert(kugetsu::spawner<recording_spawner>);

using fuzz_dispatcher =
    basic_dispatcher<null_lock, recording_spawner, callback_notifier, faulty_store, manual_clock, null_workspace>;

const std::vector<std::string> dev_ids = {"t0", "t1", "t2", "t3", "t4", "t5"};
const std::vector<std::string> pm_ids = {"p0", "p1"};

struct input {
    const std::uint8_t* p;
    std::size_t n;
    std::uint8_t next() {
        if (n == 0) return 0;
        --n;
        return *p++;
    }
};

class harness {
public:
    explicit harness(dispatcher_options o)
        : plan_(std::make_shared<fault_plan>()), log_(std::make_shared<spawn_log>()),
          d_(null_lock{}, recording_spawner(spawner_, log_),
             callback_notifier([ev = events_](const event& e) { ev->push_back(e); }), faulty_store(store_, plan_),
             clock_, null_workspace{}, o),
          opt_(o) {}

    void run(input& in) {
        while (in.n > 0) {
            const std::uint8_t op = in.next();
            step(op % 16, in);
            check("after op " + std::to_string(op % 16) + " (step " + std::to_string(steps_++) + ")");
        }
        drain();
    }

private:
    static bool tracing() {
        static const bool on = std::getenv("KUGETSU_FUZZ_TRACE") != nullptr;
        return on;
    }
    /// The checks for bugs A-C of fuzz/README.md, fixed since; KUGETSU_FUZZ_LENIENT=1 turns
    /// them off (to look for something else in a dispatcher that has them again).
    static bool strict() {
        static const bool on = std::getenv("KUGETSU_FUZZ_LENIENT") == nullptr;
        return on;
    }
    /// With KUGETSU_FUZZ_TRACE set, each operation and its outcome on stderr (to read a failure).
    void trace(const std::string& what, const std::error_code& ec) {
        if (!tracing()) return;
        std::fprintf(stderr, "step %d: %s%s%s\n", steps_, what.c_str(), ec ? " -> " : "",
                     ec ? (ec.message() + ": " + d_.last_error_detail()).c_str() : "");
        std::error_code e;
        for (const auto& it : store_.list_items(e))
            std::fprintf(stderr, "    %s %s attempts %d/%d owner %d pid %d\n", it.id.c_str(),
                         std::string(to_string(it.state)).c_str(), it.attempts, it.max_attempts, it.owner.pid,
                         it.process.pid);
    }

    void step(int op, input& in) {
        std::error_code ec;
        static const char* const names[] = {"enqueue", "start", "start pm", "process_queue", "reap", "cancel",
                                            "an agent exits", "an agent vanishes", "an agent ignores SIGTERM",
                                            "clock advances", "store fault armed", "spawner fault armed",
                                            "start_item", "restart as a new process", "next_wake", "live"};
        std::string what = names[op];
        struct on_exit {
            harness& h;
            std::string& what;
            std::error_code& ec;
            ~on_exit() { h.trace(what, ec); }
        } traced{*this, what, ec};
        switch (op) {
        case 0: {   // enqueue a dev task
            auto spec = dev_spec(in);
            d_.enqueue(spec, ec);
            if (!ec) enqueued_.insert(spec.id);
            break;
        }
        case 1: d_.start(dev_spec(in), ec); break;
        case 2: {
            task_spec pm{pm_ids[in.next() % pm_ids.size()], {"pm-agent-cmd"}, role::pm};
            d_.start(pm, ec);
            break;
        }
        case 3: d_.process_queue(ec); break;
        case 4:
            d_.reap(ec);
            reaped_ = !ec;
            break;
        case 5: d_.cancel(any_id(in.next()), ec); break;
        case 6: {   // an agent exits
            const int pid = live_pid(in.next());
            const std::uint8_t code = in.next();
            if (pid) spawner_.exit(pid, code % 3 == 0 ? 0 : code);
            break;
        }
        case 7:   // an agent crashes or vanishes: no exit code
            if (const int pid = live_pid(in.next())) spawner_.vanish(pid);
            break;
        case 8:
            if (const int pid = live_pid(in.next())) spawner_.ignore_term(pid);
            break;
        case 9: clock_.advance(std::chrono::milliseconds(500) * (in.next() % 40)); break;
        case 10: {   // arm a store fault
            const std::uint8_t a = in.next(), b = in.next();
            plan_->countdown = a % 16;
            plan_->burst = 1 + b % 3;
            plan_->applied = (b & 0x80) != 0;
            static const std::error_code errors[] = {std::make_error_code(std::errc::no_space_on_device),
                                                     std::make_error_code(std::errc::io_error),
                                                     make_error_code(errc::store_corrupt)};
            plan_->error = errors[(b >> 2) % 3];
            break;
        }
        case 11: {   // spawner faults
            const std::uint8_t a = in.next();
            if (a & 1) spawner_.fail_next_releases(a / 2 % 3);
            else spawner_.fail_next_spawns(a / 2 % 3);
            break;
        }
        case 12:
            d_.start_item(any_id(in.next()), ec);
            if (ec && ec != errc::invalid_transition && ec != errc::unknown_task) start_item_failed_ = true;
            break;
        case 13:   // this process dies and another takes over the same store
            spawner_.set_self(process_ref{2 + restarts_++, 7, "fake-boot"}, true);
            break;
        case 14: d_.next_wake(ec); break;
        case 15: d_.live(ec); break;
        }
    }

    task_spec dev_spec(input& in) {
        const std::uint8_t a = in.next();
        task_spec s{dev_ids[a % dev_ids.size()], {"agent", "--work"}, role::dev};
        if (a & 0x40) s.timeout = std::chrono::seconds(1 + (a >> 3) % 8);
        if (a & 0x80) s.max_attempts = 1 + (a >> 3) % 3;
        return s;
    }

    static std::string any_id(std::uint8_t b) {
        return b % 8 < dev_ids.size() ? dev_ids[b % 8] : pm_ids[b % 8 - dev_ids.size()];
    }

    static bool is_pm(const std::string& id) { return std::find(pm_ids.begin(), pm_ids.end(), id) != pm_ids.end(); }

    /// Brings the log up to date with the fake processes (those that ended stay as they were).
    void refresh() {
        for (auto& e : log_->spawned) {
            if (e.ended) continue;
            const auto pr = spawner_.get(e.pid);
            e.ran = pr.ran;
            if (pr.held || pr.state == process_state::running) continue;
            e.ended = true;
            if (pr.state == process_state::exited) e.exit_code = pr.exit_code;
        }
    }
    /// The pids of the agents that run now (past release(), not ended).
    std::vector<int> live_pids() {
        refresh();
        std::vector<int> v;
        for (const auto& e : log_->spawned)
            if (e.ran && !e.ended) v.push_back(e.pid);
        return v;
    }
    int live_pid(std::uint8_t b) {
        const auto v = live_pids();
        return v.empty() ? 0 : v[b % v.size()];
    }

    void check(const std::string& where) {
        std::error_code ec;
        const auto items = store_.list_items(ec);
        const auto sessions = store_.list_sessions(ec);
        std::map<std::string, const queue_item*> by_id;
        for (const auto& it : items) by_id[it.id] = &it;

        // The cap, counted on what really runs.
        int dev_live = 0, pm_live = 0;
        std::map<std::string, int> runs;
        refresh();
        for (const auto& e : log_->spawned) {
            if (e.ran) ++runs[e.task_id];
            if (!e.ran || e.ended) continue;
            ++(is_pm(e.task_id) ? pm_live : dev_live);
            // Counted: its session is in the store.
            const bool counted = std::any_of(sessions.begin(), sessions.end(), [&](const session& s) {
                return s.process.pid == e.pid && s.task_id == e.task_id;
            });
            KUGETSU_FUZZ_CHECK(counted, where + ": the agent of " + e.task_id + " (pid " + std::to_string(e.pid) +
                                            ") runs without a session: it is not counted");
            if (strict() && reaped_) {
                const auto f = by_id.find(e.task_id);
                KUGETSU_FUZZ_CHECK(f != by_id.end() && f->second->state == task_state::running,
                                   where + ": after a reap, the agent of " + e.task_id + " (pid " +
                                       std::to_string(e.pid) + ") runs but its task is " +
                                       (f == by_id.end() ? std::string("missing")
                                                         : std::string(to_string(f->second->state))));
            }
        }
        reaped_ = false;

        // Events: each names a task of the store; one task_started per run and one final event
        // per task, also after store faults (unless KUGETSU_FUZZ_LENIENT).
        const bool exact_events = strict() || plan_->fired == 0;
        for (; events_seen_ < events_->size(); ++events_seen_) {
            const event& e = (*events_)[events_seen_];
            KUGETSU_FUZZ_CHECK(by_id.count(e.task_id), where + ": an event names an unknown task " + e.task_id);
            if (e.type == event_type::task_started) ++started_[e.task_id];
            if (e.type == event_type::task_completed || e.type == event_type::task_error) ++ended_[e.task_id];
        }
        for (const auto& [id, n] : started_)
            KUGETSU_FUZZ_CHECK(!exact_events || n <= std::max(1, runs[id]),
                               where + ": " + std::to_string(n) + " task_started events for " + id);
        for (const auto& [id, n] : ended_)
            KUGETSU_FUZZ_CHECK(!exact_events || n <= 1, where + ": " + std::to_string(n) + " final events for " + id);

        KUGETSU_FUZZ_CHECK(dev_live <= opt_.cap, where + ": " + std::to_string(dev_live) + " dev agents live, cap " +
                                                     std::to_string(opt_.cap));
        KUGETSU_FUZZ_CHECK(pm_live <= 1, where + ": " + std::to_string(pm_live) + " PM agents live");
        for (const auto& [id, n] : runs)
            KUGETSU_FUZZ_CHECK(n <= 1, where + ": task " + id + " was run " + std::to_string(n) + " times");

        // Nothing lost; final is final; completed means an agent exited 0.
        for (const auto& id : enqueued_) seen_.insert(id);
        for (const auto& it : items) seen_.insert(it.id);
        for (const auto& id : seen_)
            KUGETSU_FUZZ_CHECK(by_id.count(id), where + ": task " + id + " was lost");
        for (const auto& it : items) {
            if (auto f = final_.find(it.id); f != final_.end())
                KUGETSU_FUZZ_CHECK(f->second == it.state, where + ": task " + it.id + " left its final state " +
                                                              std::string(to_string(f->second)) + " for " +
                                                              std::string(to_string(it.state)));
            else if (is_final(it.state))
                final_.emplace(it.id, it.state);
            // A PM is started, never queued: nothing would ever take a pending one.
            KUGETSU_FUZZ_CHECK(it.role != role::pm || it.state != task_state::pending,
                               where + ": PM task " + it.id + " is pending");
            if (it.state == task_state::completed) {
                const bool exited_0 = std::any_of(log_->spawned.begin(), log_->spawned.end(), [&](const auto& e) {
                    return e.task_id == it.id && e.ran && e.ended && e.exit_code == 0;
                });
                KUGETSU_FUZZ_CHECK(exited_0, where + ": task " + it.id + " is completed but no agent of it exited 0");
            }
        }
    }

    /// Faults off; agents end; passes run until nothing changes. Then everything is final.
    /// The drain stays in the same process, as a long-running daemon does: a claim (a task
    /// left `notified`) that this process gave up after a store failure must be recovered
    /// without waiting for the process to exit (with KUGETSU_FUZZ_LENIENT, the drain after a
    /// start_item() that failed on the store starts as a new process, as it had to before the fix).
    void drain() {
        plan_->countdown = -1;
        spawner_.fail_next_spawns(0);
        spawner_.fail_next_releases(0);
        if (start_item_failed_ && !strict()) spawner_.set_self(process_ref{2 + restarts_++, 7, "fake-boot"}, true);
        const int rounds = 4 * static_cast<int>(dev_ids.size() + pm_ids.size()) + 8;
        for (int round = 0; round < rounds; ++round) {
            std::error_code ec;
            d_.reap(ec);
            KUGETSU_FUZZ_CHECK(!ec, "drain: reap failed without faults: " + d_.last_error_detail());
            reaped_ = true;
            check("drain round " + std::to_string(round) + ", after reap");
            d_.process_queue(ec);
            KUGETSU_FUZZ_CHECK(!ec, "drain: process_queue failed without faults: " + d_.last_error_detail());
            check("drain round " + std::to_string(round));
            const auto live = live_pids();
            for (const int pid : live) spawner_.exit(pid, 0);
            clock_.advance(opt_.kill_grace + 1s);
            if (live.empty() && all_final()) break;
        }
        std::error_code ec;
        for (const auto& it : store_.list_items(ec))
            KUGETSU_FUZZ_CHECK(is_final(it.state), "drain: task " + it.id + " is still " +
                                                       std::string(to_string(it.state)) + " (attempts " +
                                                       std::to_string(it.attempts) + "/" +
                                                       std::to_string(it.max_attempts) + ", owner pid " +
                                                       std::to_string(it.owner.pid) + ")");
        KUGETSU_FUZZ_CHECK(store_.list_sessions(ec).empty(), "drain: sessions left");
    }

    bool all_final() const {
        std::error_code ec;
        const auto items = store_.list_items(ec);
        return std::all_of(items.begin(), items.end(), [](const queue_item& it) { return is_final(it.state); });
    }

    fake_spawner spawner_;
    memory_store store_;
    manual_clock clock_;
    std::shared_ptr<std::vector<event>> events_ = std::make_shared<std::vector<event>>();
    std::shared_ptr<fault_plan> plan_;
    std::shared_ptr<spawn_log> log_;
    fuzz_dispatcher d_;
    dispatcher_options opt_;
    std::set<std::string> enqueued_, seen_;
    std::map<std::string, task_state> final_;
    std::size_t events_seen_ = 0;
    std::map<std::string, int> started_, ended_;   ///< task_started and final events per task
    int steps_ = 0;
    int restarts_ = 0;
    bool reaped_ = false;   ///< the operation just checked was a successful reap()
    bool start_item_failed_ = false;   ///< a start_item() failed on the store
};

} // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
    input in{data, size};
    dispatcher_options o;
    o.cap = 1 + in.next() % 3;
    o.max_attempts = 1 + in.next() % 3;
    o.kill_grace = std::chrono::seconds(in.next() % 3);
    harness h(o);
    h.run(in);
    return 0;
}
