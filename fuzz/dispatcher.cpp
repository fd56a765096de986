// fuzz/dispatcher.cpp: bytes -> a sequence of dispatcher operations, with agents exiting,
// crashing and ignoring SIGTERM, the clock moving, processes dying (before or after a commit,
// before the release of held agents) and restarting, a second process sharing the store, the
// limits changing, and store, commit, spawner, workspace and notifier faults; on
// basic_dispatcher over memory_store (behind a fault injector), the fake spawner (behind a
// recorder), a manual clock, null_lock, a durable in-memory notifier and a workspace with
// effects for some tasks. Everything is in memory: no file, no fsync, no thread.
//
// Input: byte 0 the cap (1-3; bit 7: the store starts with limits of its own, which win over
// the options), byte 1 max_attempts (1-3), byte 2 the kill grace (0-2 s); then one operation
// per byte (byte % 22, see step()), each followed by the bytes it needs. At most max_ops
// operations are read: bugs of this kind show within a few dozen steps, and short runs keep
// the target fast.
//
// A CRASH is a `crash` exception thrown by a policy (at a commit, before or after it takes
// effect, or at the release of a held agent), as the simulator models a SIGKILL: the
// dispatcher unwinds (its unit is rolled back unless it committed), sends no event, and is
// dropped; a new object (a new process, with a new identity; the dead one's identity polls
// `gone`) is made over the same store. Agents it held are not abandoned (a dead process
// sends nothing): they stay held until "held agents notice" (op 18) ends them `never_ran`.
//
// Checked after every operation, against what really runs (the recorder's mirror of the fake
// processes, not the dispatcher's records) and what is committed (read through a handle of
// the store outside any unit):
//   - a dev agent starts only below the cap in force (the store's): after an operation that
//     started one, live dev agents <= cap; live PM agents <= 1;
//   - every live agent has its session; every release is of a held agent whose session, claim
//     (notified, owned by the releasing process) and attempt count are committed, with no
//     unit open; no agent is left held (neither released nor abandoned) unless its process died;
//   - no task is run twice; no task is lost; a final state never changes; `completed` only
//     after an exit 0; a PM task is never pending; an agent's end time (fake exit with a time)
//     is the task's finished_at; no unit is left open between operations;
//   - events: the outbox numbers them 1, 2, 3...; every event names a task of the store; per
//     task they follow  task_queued? task_dequeued* task_started? end  (task_queued first if
//     enqueue() created it; task_started names an agent of the task that ran; one end, and
//     nothing after it); a task is final exactly when its end event is committed, of the
//     matching type; the plain notify() stream is numbered, growing, never repeated, and is
//     the whole outbox when no fault and no crash happened; the durable notifier's relay
//     hands each event in order with no gap, kept exactly once, received again only after a
//     keep that failed (at least once), and at the end it has kept the whole outbox;
//   - after a successful set_limits() the store has the new limits; after a successful pass
//     the dispatcher uses the store's limits.
// At the end, with faults off: held agents of dead processes end, agents exit, and every live
// process reaps and runs the queue until nothing changes; then every task is final with one
// end event, no session is left, and the notifier has every event.
//
// Two more checks, for bugs this target found (fuzz/README.md), fixed since (the strict-* and
// bug-* inputs of the corpus exercise them; KUGETSU_FUZZ_LENIENT=1 turns them off):
//   - a claim that an operation gave up after a store failure (start_item(), start(),
//     process_queue(), whatever failed, even its last commit) is recovered by the next reap
//     of the same live process: the drain stays in the processes it has, so a task stranded
//     `notified` by a live process fails it;
//   - after a successful reap(), the task of every live agent is `running`.
// KUGETSU_FUZZ_TRACE=1 prints each operation and the items after it.
#include <algorithm>
#include <array>
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <optional>
#include <string>
#include <string_view>
#include <system_error>
#include <utility>
#include <vector>

#include <kugetsu/clock/manual_clock.hpp>
#include <kugetsu/dispatcher.hpp>
#include <kugetsu/lock/null_lock.hpp>
#include <kugetsu/spawn/fake_spawner.hpp>
#include <kugetsu/store/memory_store.hpp>

#include "check.hpp"

namespace {

using namespace kugetsu;
using namespace std::chrono_literals;

constexpr int max_ops = 80;
constexpr int dev_tasks = 6, task_count = 8;   // t0-t5 (dev), p0-p1 (PM)
constexpr std::string_view task_names[task_count] = {"t0", "t1", "t2", "t3", "t4", "t5", "p0", "p1"};
constexpr int first_agent_pid = 1000;          // fake_spawner's first pid

/// t0..t5 -> 0..5, p0..p1 -> 6..7, anything else -> -1.
int task_index(std::string_view id) noexcept {
    if (id.size() != 2) return -1;
    const int d = id[1] - '0';
    if (id[0] == 't' && d >= 0 && d < dev_tasks) return d;
    if (id[0] == 'p' && d >= 0 && d < task_count - dev_tasks) return dev_tasks + d;
    return -1;
}
bool is_pm(int t) noexcept { return t >= dev_tasks; }

/// Thrown by a policy: the process dies here (what the simulator does for a SIGKILL).
struct crash {};

enum class commit_fault { fail, fail_applied, crash_before, crash_after };

/// One spawned process, as the recorder mirrors the fake one.
struct agent {
    int task = -1;
    int starter = 0;          ///< pid of the (fake) kugetsu process that spawned it
    bool held = true;         ///< spawned, neither released nor abandoned
    bool released = false;    ///< release() was called (the program ran, or its exec failed)
    bool ran = false;         ///< released: the program ran
    bool ended = false;       ///< no longer running (never changes back)
    bool orphan = false;      ///< held when its starter died
    bool ignore_term = false;
    int exit_code = -1;       ///< ended by an exit: its code
    std::optional<timestamp> ended_at;
};

/// Everything that outlives a (fake) kugetsu process: the store, the agents, the clock, the
/// notifier's kept events, the fault plans, and what the checks remember.
struct world {
    fake_spawner spawner;
    memory_store store;   ///< the harness's own handle: outside any unit, it reads what is committed
    manual_clock clock;

    // Store faults: any call (countdown calls let through, then `burst` fail).
    int countdown = -1, burst = 0;
    bool applied = false;   ///< a failing write still takes effect (in its unit)
    std::error_code error;
    // Commit faults: the commit after `commit_countdown` commits.
    int commit_countdown = -1;
    commit_fault commit_mode = commit_fault::fail;
    int release_crash = -1;   ///< the process dies before the release after this many
    int keep_fault = -1;      ///< the relay keeps this many more events, then fails to keep one
    int workspace_fails = 0;
    bool crashing = false;    ///< a crash unwinds: a dead process abandons nothing
    int faults = 0, crashes = 0, keep_faults = 0;
    /// What commits changed since the checks last read the store (they re-read only that):
    /// a bit per task, then sessions, limits, events.
    std::uint32_t changed = ~0u;
    static constexpr std::uint32_t sessions_bit = 1u << task_count, limits_bit = sessions_bit << 1,
                                   events_bit = limits_bit << 1;

    std::vector<agent> agents;   ///< index: pid - first_agent_pid
    std::vector<bool> alive;     ///< by pid of the kugetsu processes (2, 3, ...)
    int dev_started = 0;         ///< dev agents released in the current operation

    // The notifier's durable state.
    std::uint64_t kept = 0;          ///< highest sequence number kept
    std::vector<std::uint64_t> lost; ///< received but not kept (a failed keep): may come again
    std::uint64_t received_max = 0;
    std::uint64_t notified_last = 0; ///< notify(): the last sequence number
    std::size_t notified = 0;

    int step = 0;
    const char* op = "start";

    std::string where() const { return "step " + std::to_string(step) + " (" + op + ")"; }
    agent& agent_of(int pid) {
        KUGETSU_FUZZ_CHECK(pid >= first_agent_pid && pid < first_agent_pid + static_cast<int>(agents.size()),
                           where() + ": pid " + std::to_string(pid) + " is no agent");
        return agents[static_cast<std::size_t>(pid - first_agent_pid)];
    }
};

/// memory_store behind a fault injector. A failing call reports `error` and, unless `applied`,
/// does nothing; a failing commit leaves nothing of its unit (rolled back), or all of it
/// (fail_applied: the sync failed after the commit); a crash throws, before or after the
/// commit takes effect.
class faulty_store {
public:
    faulty_store(memory_store inner, world* w) : inner_(std::move(inner)), w_(w) {}

    void begin(std::error_code& ec) {
        if (!fails(ec)) inner_.begin(ec);
        dirty_ = 0;
    }
    void commit(durability d, std::error_code& ec) {
        w_->changed |= dirty_;   // (also when it fails: a check reads the truth again)
        dirty_ = 0;
        if (fails(ec)) {
            const auto fault = ec;
            if (w_->applied) inner_.commit(d, ec);
            else inner_.rollback();
            ec = fault;
            return;
        }
        if (w_->commit_countdown >= 0 && w_->commit_countdown-- == 0) {
            switch (w_->commit_mode) {
            case commit_fault::fail:
                inner_.rollback();
                ++w_->faults;
                ec = std::make_error_code(std::errc::io_error);
                return;
            case commit_fault::fail_applied:
                inner_.commit(d, ec);
                ++w_->faults;
                ec = std::make_error_code(std::errc::io_error);
                return;
            case commit_fault::crash_before: w_->crashing = true; throw crash{};
            case commit_fault::crash_after:
                inner_.commit(d, ec);
                w_->crashing = true;
                throw crash{};
            }
        }
        inner_.commit(d, ec);
    }
    void rollback() noexcept {
        inner_.rollback();
        dirty_ = 0;
    }
    bool in_unit() const noexcept { return inner_.in_unit(); }

    void create_item(const queue_item& it, std::error_code& ec) { write(ec, task_bit(it.id), [&] { inner_.create_item(it, ec); }); }
    void put_item(const queue_item& it, std::error_code& ec) { write(ec, task_bit(it.id), [&] { inner_.put_item(it, ec); }); }
    void put_session(const session& se, std::error_code& ec) { write(ec, world::sessions_bit, [&] { inner_.put_session(se, ec); }); }
    void remove_session(std::string_view id, std::error_code& ec) { write(ec, world::sessions_bit, [&] { inner_.remove_session(id, ec); }); }
    void put_limits(const limits& l, std::error_code& ec) { write(ec, world::limits_bit, [&] { inner_.put_limits(l, ec); }); }
    std::uint64_t append_event(const event& e, std::error_code& ec) {
        std::uint64_t seq = 0;
        write(ec, world::events_bit, [&] { seq = inner_.append_event(e, ec); });
        return ec ? 0 : seq;
    }
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
    std::vector<event> events_after(std::uint64_t seq, std::size_t limit, std::error_code& ec) {
        return fails(ec) ? std::vector<event>{} : inner_.events_after(seq, limit, ec);
    }
    std::optional<limits> get_limits(std::error_code& ec) { return fails(ec) ? std::nullopt : inner_.get_limits(ec); }
    std::vector<queue_item> runnable(std::size_t limit, const std::vector<std::string>& skip, std::error_code& ec) {
        return fails(ec) ? std::vector<queue_item>{} : inner_.runnable(limit, skip, ec);
    }
    queue_schedule get_schedule(std::error_code& ec) { return fails(ec) ? queue_schedule{} : inner_.get_schedule(ec); }
    void put_schedule(const queue_schedule& sc, std::error_code& ec) { write(ec, world::limits_bit, [&] { inner_.put_schedule(sc, ec); }); }

private:
    bool fails(std::error_code& ec) {
        ec.clear();
        auto& w = *w_;
        if (w.countdown < 0) return false;
        if (w.countdown > 0) {
            --w.countdown;
            return false;
        }
        if (--w.burst <= 0) w.countdown = -1;
        ++w.faults;
        ec = w.error;
        return true;
    }
    static std::uint32_t task_bit(std::string_view id) noexcept {
        const int t = task_index(id);
        return t < 0 ? ~0u : 1u << t;
    }
    template <class Op>
    void write(std::error_code& ec, std::uint32_t what, Op op) {
        if (inner_.in_unit()) dirty_ |= what;
        else w_->changed |= what;   // a unit of its own
        if (!fails(ec)) return op();
        if (w_->applied) {
            const auto fault = ec;
            op();
            ec = fault;
        }
    }

    memory_store inner_;
    world* w_;
    std::uint32_t dirty_ = 0;   ///< what the open unit wrote (world::changed bits)
};
static_assert(kugetsu::store<faulty_store>);

/// fake_spawner as one kugetsu process sees it: its own identity, the identities of the
/// others (alive or dead), `held` reported for agents neither released nor abandoned, and a
/// mirror of every agent's fate in the world. Checks each release.
class recording_spawner {
public:
    recording_spawner(fake_spawner inner, world* w, process_ref me) : inner_(std::move(inner)), w_(w), me_(std::move(me)) {}

    process_ref spawn(const spawn_request& r, std::error_code& ec) {
        auto p = inner_.spawn(r, ec);
        if (ec) return p;
        agent a;
        a.task = task_index(r.task_id);
        a.starter = me_.pid;
        KUGETSU_FUZZ_CHECK(a.task >= 0, w_->where() + ": spawned an unknown task " + r.task_id);
        w_->agents.push_back(a);
        KUGETSU_FUZZ_CHECK(p.pid == first_agent_pid + static_cast<int>(w_->agents.size()) - 1, w_->where() + ": pid");
        return p;
    }

    void release(const process_ref& p, std::error_code& ec) {
        if (w_->release_crash >= 0 && w_->release_crash-- == 0) {   // the starter dies before this release
            w_->crashing = true;
            throw crash{};
        }
        agent& a = w_->agent_of(p.pid);
        const auto name = task_names[a.task];
        KUGETSU_FUZZ_CHECK(a.held, w_->where() + ": released the agent of " + std::string(name) + " (pid " +
                                       std::to_string(p.pid) + "), which is not held (abandoned?)");
        // No agent runs unrecorded: its session, its claim and its attempt are committed.
        std::error_code rec;
        const auto sessions = w_->store.list_sessions(rec);
        const bool recorded = std::any_of(sessions.begin(), sessions.end(), [&](const session& s) {
            return s.process == p && s.task_id == name;
        });
        KUGETSU_FUZZ_CHECK(recorded, w_->where() + ": released the agent of " + std::string(name) + " (pid " +
                                         std::to_string(p.pid) + ") before its session was committed");
        const auto it = w_->store.get_item(name, rec);
        int releases = 0;
        for (const auto& b : w_->agents) releases += b.task == a.task && b.released;
        KUGETSU_FUZZ_CHECK(it && it->state == task_state::notified && it->owner == me_ && it->attempts > releases,
                           w_->where() + ": released the agent of " + std::string(name) +
                               " before its claim and attempt were committed: " +
                               (it ? std::string(to_string(it->state)) + " attempts " + std::to_string(it->attempts) +
                                         " owner " + std::to_string(it->owner.pid)
                                   : std::string("no task")));
        inner_.release(p, ec);
        a.held = false;
        a.released = true;
        if (ec) {
            a.ended = true;   // its exec failed
        } else {
            a.ran = true;
            if (!is_pm(a.task)) ++w_->dev_started;
        }
    }

    void abandon(const process_ref& p) noexcept {
        if (w_->crashing) return;   // a dead process abandons nothing: its held agents notice later
        agent& a = w_->agent_of(p.pid);
        inner_.abandon(p);
        if (a.held) {
            a.held = false;
            a.ended = true;
        }
    }

    process_status poll(const process_ref& p, std::error_code& ec) {
        ec.clear();
        if (p.pid < first_agent_pid) {   // a kugetsu process
            const bool alive = p.boot_id == me_.boot_id && p.start_time == static_cast<std::uint64_t>(p.pid) * 10 &&
                               static_cast<std::size_t>(p.pid) < w_->alive.size() && w_->alive[static_cast<std::size_t>(p.pid)];
            return {alive ? process_state::running : process_state::gone, -1};
        }
        auto st = inner_.poll(p, ec);
        if (st.state == process_state::running && p.pid < first_agent_pid + static_cast<int>(w_->agents.size()))
            st.held = w_->agent_of(p.pid).held;
        return st;
    }

    void signal(const process_ref& p, stop_signal s, std::error_code& ec) {
        inner_.signal(p, s, ec);
        if (p.pid < first_agent_pid || p.pid >= first_agent_pid + static_cast<int>(w_->agents.size())) return;
        agent& a = w_->agent_of(p.pid);
        if (a.ended || (s == stop_signal::terminate && a.ignore_term)) return;
        a.ended = true;   // as fake_spawner: 128 + the signal
        a.held = false;
        a.exit_code = s == stop_signal::kill ? 128 + 9 : 128 + 15;
    }

    process_ref self() { return me_; }

private:
    fake_spawner inner_;
    world* w_;
    process_ref me_;
};
static_assert(kugetsu::spawner<recording_spawner>);

/// A durable notifier in memory (it survives the crashes of the processes that relay to it):
/// notify() checks the plain stream; relay() keeps the outbox in order, and can be made to
/// fail to keep an event (it was received, then lost: the next relay gives it again).
class fuzz_notifier {
public:
    explicit fuzz_notifier(world* w) : w_(w) {}

    void notify(const event& e) noexcept {
        auto& w = *w_;
        KUGETSU_FUZZ_CHECK(e.seq > w.notified_last, w.where() + ": notify() of event " + std::to_string(e.seq) +
                                                        " after " + std::to_string(w.notified_last));
        std::error_code ec;
        const auto stored = w.store.events_after(e.seq - 1, 1, ec);
        KUGETSU_FUZZ_CHECK(!stored.empty() && stored.front().seq == e.seq && stored.front().type == e.type &&
                               stored.front().task_id == e.task_id,
                           w.where() + ": notify() of event " + std::to_string(e.seq) + " (" +
                               std::string(to_string(e.type)) + " " + e.task_id + "), which is not the committed one");
        w.notified_last = e.seq;
        ++w.notified;
    }

    std::uint64_t relay(const event_source& source, std::error_code& ec) {
        auto& w = *w_;
        ec.clear();
        for (;;) {
            auto batch = source(w.kept, ec);
            if (ec || batch.empty()) return w.kept;
            for (const auto& e : batch) {
                const bool again = e.seq <= w.received_max;
                KUGETSU_FUZZ_CHECK(!again || std::find(w.lost.begin(), w.lost.end(), e.seq) != w.lost.end(),
                                   w.where() + ": event " + std::to_string(e.seq) + " relayed twice");
                w.received_max = std::max(w.received_max, e.seq);
                KUGETSU_FUZZ_CHECK(e.seq == w.kept + 1, w.where() + ": relay gave event " + std::to_string(e.seq) +
                                                            " after " + std::to_string(w.kept) + " (a gap or a copy)");
                if (w.keep_fault >= 0 && w.keep_fault-- == 0) {   // received, but the write to keep it failed
                    ++w.keep_faults;
                    w.lost.push_back(e.seq);
                    ec = std::make_error_code(std::errc::no_space_on_device);
                    return w.kept;
                }
                w.kept = e.seq;
            }
        }
    }

private:
    world* w_;
};
static_assert(kugetsu::durable_notifier<fuzz_notifier>);

/// Prepares nothing; t4 and t5 have lasting effects (the claim is committed before their
/// prepare); prepare fails when told to.
class fuzz_workspace {
public:
    explicit fuzz_workspace(world* w) : w_(w) {}
    std::string prepare(const queue_item&, std::error_code& ec) {
        ec.clear();
        if (w_->workspace_fails > 0) {
            --w_->workspace_fails;
            ec = std::make_error_code(std::errc::no_space_on_device);
        }
        return {};
    }
    void remove(const queue_item&, std::error_code& ec) { ec.clear(); }
    bool has_effects(const queue_item& it) const noexcept {
        const int t = task_index(it.id);
        return t == 4 || t == 5;
    }

private:
    world* w_;
};
static_assert(kugetsu::workspace_with_effects<fuzz_workspace>);

using fuzz_dispatcher =
    basic_dispatcher<null_lock, recording_spawner, fuzz_notifier, faulty_store, manual_clock, fuzz_workspace>;

struct input {
    const std::uint8_t* p;
    std::size_t n;
    std::uint8_t next() noexcept {
        if (n == 0) return 0;
        --n;
        return *p++;
    }
};

enum op_code : int {
    op_enqueue, op_start, op_start_pm, op_process_queue, op_reap, op_cancel, op_exit, op_vanish, op_ignore_term,
    op_clock, op_store_fault, op_spawn_fault, op_start_item, op_restart, op_next_wake, op_live, op_commit_fault,
    op_release_crash, op_orphans_end, op_set_limits, op_keep_fault, op_switch, op_count
};
constexpr const char* op_names[op_count] = {
    "enqueue", "start", "start pm", "process_queue", "reap", "cancel", "an agent exits", "an agent vanishes",
    "an agent ignores SIGTERM", "clock advances", "store fault armed", "spawn/release/workspace fault armed",
    "start_item", "restart as a new process", "next_wake", "live", "commit fault armed",
    "starter dies before a release (armed)", "held agents of dead processes end", "set_limits",
    "notifier keep fault armed", "the other process"};

class harness {
public:
    explicit harness(input& in) {
        const std::uint8_t a = in.next(), b = in.next(), c = in.next();
        opt_.cap = 1 + a % 3;
        opt_.max_attempts = 1 + b % 3;
        opt_.kill_grace = std::chrono::seconds(c % 3);
        if (a & 0x80) {   // the store has limits of its own: they win over any process's options
            std::error_code ec;
            w_.store.put_limits({1 + (b >> 4) % 3, 1 + (c >> 4) % 3, std::chrono::seconds((a >> 4) % 3)}, ec);
        }
        w_.alive.assign(2, false);
        spawn_process(0);
    }

    void run(input& in) {
        for (int ops = 0; in.n > 0 && ops < max_ops; ++ops) {
            const int op = in.next() % op_count;
            w_.op = op_names[op];
            w_.dev_started = 0;
            std::error_code ec;
            try {
                step(op, in, ec);
            } catch (const crash&) {
                ++w_.crashes;
                kill(cur_);
                ec = std::make_error_code(std::errc::owner_dead);
            }
            trace(ec);
            check();
            ++w_.step;
        }
        drain();
    }

private:
    static bool tracing() {
        static const bool on = std::getenv("KUGETSU_FUZZ_TRACE") != nullptr;
        return on;
    }
    /// The checks for the bugs of fuzz/README.md, fixed since; KUGETSU_FUZZ_LENIENT=1 turns
    /// them off (to look for something else in a dispatcher that has them again).
    static bool strict() {
        static const bool on = std::getenv("KUGETSU_FUZZ_LENIENT") == nullptr;
        return on;
    }
    void trace(const std::error_code& ec) {
        if (!tracing()) return;
        std::fprintf(stderr, "step %d, process %d: %s%s%s\n", w_.step, self_[cur_].pid, w_.op, ec ? " -> " : "",
                     ec ? (ec.message() + (d_[cur_] ? ": " + d_[cur_]->last_error_detail() : std::string())).c_str() : "");
        std::error_code e;
        for (const auto& it : w_.store.list_items(e))
            std::fprintf(stderr, "    %s %s attempts %d/%d owner %d pid %d\n", it.id.c_str(),
                         std::string(to_string(it.state)).c_str(), it.attempts, it.max_attempts, it.owner.pid,
                         it.process.pid);
    }

    // ---- processes ------------------------------------------------------------------------

    /// A new kugetsu process in slot `s`, with an identity never used before.
    void spawn_process(int s) {
        const int pid = static_cast<int>(w_.alive.size());
        w_.alive.push_back(true);
        self_[s] = process_ref{pid, static_cast<std::uint64_t>(pid) * 10, "fake-boot"};
        auto o = opt_;
        if (s == 1) o.cap = 1 + opt_.cap % 3;   // another process, other options: the store's limits win
        d_[s].emplace(null_lock{}, recording_spawner(w_.spawner, &w_, self_[s]), fuzz_notifier(&w_),
                      faulty_store(w_.store, &w_), w_.clock, fuzz_workspace(&w_), o);
    }
    /// The process of slot `s` dies (its object is dropped: its open unit is rolled back); its
    /// agents still held become orphans. Then a new process takes the slot.
    void kill(int s) {
        d_[s].reset();
        w_.crashing = false;
        w_.alive[static_cast<std::size_t>(self_[s].pid)] = false;
        for (auto& a : w_.agents)
            if (a.held && a.starter == self_[s].pid) a.orphan = true;
        spawn_process(s);
    }
    fuzz_dispatcher& d() { return *d_[cur_]; }

    // ---- operations -----------------------------------------------------------------------

    void step(int op, input& in, std::error_code& ec) {
        switch (op) {
        case op_enqueue: {
            const auto spec = dev_spec(in);
            const auto it = d().enqueue(spec, ec);
            const int t = task_index(spec.id);
            if (!ec) {
                seen_[t] = by_enqueue_[t] = true;
                std::error_code e;
                const auto lim = w_.store.get_limits(e);
                KUGETSU_FUZZ_CHECK(lim && it.max_attempts == spec.max_attempts.value_or(lim->max_attempts),
                                   w_.where() + ": " + spec.id + " has max_attempts " + std::to_string(it.max_attempts) +
                                       ", not the spec's or the store's");
            }
            break;
        }
        case op_start: d().start(dev_spec(in), ec); break;
        case op_start_pm: {
            const task_spec pm{std::string(task_names[dev_tasks + in.next() % (task_count - dev_tasks)]),
                               {"pm-agent-cmd"}, role::pm};
            d().start(pm, ec);
            break;
        }
        case op_process_queue:
            d().process_queue(ec);
            if (!ec) limits_in_use();
            break;
        case op_reap:
            d().reap(ec);
            reaped_ = !ec;
            if (!ec) limits_in_use();
            break;
        case op_cancel: d().cancel(task_names[in.next() % task_count], ec); break;
        case op_exit: {
            const int pid = live_pid(in.next());
            const std::uint8_t code = in.next(), when = in.next();
            if (!pid) break;
            std::optional<timestamp> at;
            if (when & 0x80) at = w_.clock.now() - std::chrono::milliseconds(10) * (when & 0x7f);
            end_agent(pid, code % 3 == 0 ? 0 : code, at);
            break;
        }
        case op_vanish:   // an agent crashes or vanishes: no exit code
            if (const int pid = live_pid(in.next())) {
                w_.spawner.vanish(pid);
                w_.agent_of(pid).ended = true;
            }
            break;
        case op_ignore_term:
            if (const int pid = live_pid(in.next())) {
                w_.spawner.ignore_term(pid);
                w_.agent_of(pid).ignore_term = true;
            }
            break;
        case op_clock: w_.clock.advance(std::chrono::milliseconds(500) * (in.next() % 40)); break;
        case op_store_fault: {
            const std::uint8_t a = in.next(), b = in.next();
            w_.countdown = a % 16;
            w_.burst = 1 + b % 3;
            w_.applied = (b & 0x80) != 0;
            static const std::error_code errors[] = {std::make_error_code(std::errc::no_space_on_device),
                                                     std::make_error_code(std::errc::io_error),
                                                     make_error_code(errc::store_corrupt)};
            w_.error = errors[(b >> 2) % 3];
            break;
        }
        case op_spawn_fault: {
            const std::uint8_t a = in.next();
            const int n = (a >> 2) % 3;
            switch (a & 3) {
            case 0: w_.spawner.fail_next_spawns(n); break;
            case 1: w_.spawner.fail_next_releases(n); break;
            default: w_.workspace_fails = n; break;
            }
            break;
        }
        case op_start_item:
            d().start_item(task_names[in.next() % task_count], ec);
            if (ec && ec != errc::invalid_transition && ec != errc::unknown_task) start_item_failed_ = true;
            break;
        case op_restart: kill(cur_); break;   // this process dies between operations
        case op_next_wake: d().next_wake(ec); break;
        case op_live: d().live(ec); break;
        case op_commit_fault: {
            const std::uint8_t a = in.next();
            w_.commit_countdown = a & 3;
            w_.commit_mode = static_cast<commit_fault>((a >> 2) % 4);
            break;
        }
        case op_release_crash: w_.release_crash = in.next() % 3; break;
        case op_orphans_end:
            for (std::size_t i = 0; i < w_.agents.size(); ++i) {
                auto& a = w_.agents[i];
                if (!a.orphan || !a.held) continue;
                w_.spawner.never_ran(first_agent_pid + static_cast<int>(i));
                a.held = false;
                a.ended = true;
            }
            break;
        case op_set_limits: {
            const std::uint8_t a = in.next();
            const limits l{1 + a % 3, 1 + (a >> 2) % 3, std::chrono::seconds((a >> 4) % 3)};
            d().set_limits(l, ec);
            if (!ec) {
                std::error_code e;
                KUGETSU_FUZZ_CHECK(w_.store.get_limits(e) == l, w_.where() + ": set_limits() succeeded, the store disagrees");
            }
            break;
        }
        case op_keep_fault: w_.keep_fault = in.next() % 4; break;
        case op_switch:
            cur_ ^= 1;
            if (!d_[cur_]) spawn_process(cur_);
            break;
        }
    }

    task_spec dev_spec(input& in) {
        const std::uint8_t a = in.next();
        task_spec s{std::string(task_names[a % dev_tasks]), {"agent", "--work"}, role::dev};
        if (a & 0x40) s.timeout = std::chrono::seconds(1 + (a >> 3) % 8);
        if (a & 0x80) s.max_attempts = 1 + (a >> 3) % 3;
        return s;
    }

    void end_agent(int pid, int code, std::optional<timestamp> at) {
        w_.spawner.exit(pid, code, at);
        auto& a = w_.agent_of(pid);
        a.ended = true;
        a.exit_code = code;
        a.ended_at = at;
        if (code == 0) exited_0_[a.task] = true;
    }

    /// The pids of the agents that run now (released, not ended).
    int live_pid(std::uint8_t b) const {
        int n = 0;
        for (const auto& a : w_.agents) n += a.ran && !a.ended;
        if (n == 0) return 0;
        int k = b % n;
        for (std::size_t i = 0; i < w_.agents.size(); ++i)
            if (w_.agents[i].ran && !w_.agents[i].ended && k-- == 0) return first_agent_pid + static_cast<int>(i);
        return 0;
    }

    /// After a successful pass: the dispatcher works under the store's limits.
    void limits_in_use() {
        std::error_code e;
        const auto lim = w_.store.get_limits(e);
        KUGETSU_FUZZ_CHECK(lim && *lim == d().current_limits(),
                           w_.where() + ": the dispatcher's limits are not the store's");
    }

    // ---- checks ---------------------------------------------------------------------------

    enum grammar : std::uint8_t { g_none, g_queued, g_dequeued, g_started, g_ended };

    void check() {
        auto& w = w_;
        std::error_code ec;
        // The committed state, read again only after a commit (most operations commit nothing).
        const std::uint32_t changed = std::exchange(w.changed, 0);
        for (int t = 0; t < task_count; ++t)
            if (changed & (1u << t)) items_[static_cast<std::size_t>(t)] = w.store.get_item(task_names[t], ec);
        if (changed & world::sessions_bit) sessions_ = w.store.list_sessions(ec);
        if (changed & world::limits_bit) lim_ = w.store.get_limits(ec);
        const auto& sessions = sessions_;
        const auto& lim = lim_;
        std::array<const queue_item*, task_count> by_task{};
        for (std::size_t t = 0; t < by_task.size(); ++t) by_task[t] = items_[t] ? &*items_[t] : nullptr;
        for (int s = 0; s < 2; ++s)
            KUGETSU_FUZZ_CHECK(!d_[s] || !d_[s]->store().in_unit(), w.where() + ": a unit left open");

        // What runs: the cap, sessions, runs.
        int dev_live = 0, pm_live = 0;
        std::array<int, task_count> runs{};
        for (std::size_t i = 0; i < w.agents.size(); ++i) {
            const auto& a = w.agents[i];
            const int pid = first_agent_pid + static_cast<int>(i);
            const std::string_view name = task_names[a.task];
            KUGETSU_FUZZ_CHECK(!a.held || a.orphan, w.where() + ": the agent of " + std::string(name) + " (pid " +
                                                        std::to_string(pid) + ") is left held, neither released nor abandoned");
            if (a.ran) ++runs[static_cast<std::size_t>(a.task)];
            if (!a.ran || a.ended) continue;
            ++(is_pm(a.task) ? pm_live : dev_live);
            const bool counted = std::any_of(sessions.begin(), sessions.end(), [&](const session& s) {
                return s.process.pid == pid && s.task_id == name;
            });
            KUGETSU_FUZZ_CHECK(counted, w.where() + ": the agent of " + std::string(name) + " (pid " +
                                            std::to_string(pid) + ") runs without a session: it is not counted");
            if (strict() && reaped_) {
                const auto* it = by_task[static_cast<std::size_t>(a.task)];
                KUGETSU_FUZZ_CHECK(it && it->state == task_state::running,
                                   w.where() + ": after a reap, the agent of " + std::string(name) + " (pid " +
                                       std::to_string(pid) + ") runs but its task is " +
                                       (it ? std::string(to_string(it->state)) : std::string("missing")));
            }
        }
        reaped_ = false;
        KUGETSU_FUZZ_CHECK(w.dev_started == 0 || (lim && dev_live <= lim->cap),
                           w.where() + ": an agent started and " + std::to_string(dev_live) + " dev agents are live, cap " +
                               (lim ? std::to_string(lim->cap) : std::string("none")));
        KUGETSU_FUZZ_CHECK(pm_live <= 1, w.where() + ": " + std::to_string(pm_live) + " PM agents live");
        for (int t = 0; t < task_count; ++t)
            KUGETSU_FUZZ_CHECK(runs[static_cast<std::size_t>(t)] <= 1,
                               w.where() + ": task " + std::string(task_names[t]) + " was run " +
                                   std::to_string(runs[static_cast<std::size_t>(t)]) + " times");

        // The events committed since the last check: numbered 1, 2, 3...; per task, the grammar.
        if (changed & world::events_bit)
        for (const auto& e : w.store.events_after(outbox_, static_cast<std::size_t>(-1), ec)) {
            KUGETSU_FUZZ_CHECK(e.seq == outbox_ + 1, w.where() + ": outbox event " + std::to_string(e.seq) +
                                                         " after " + std::to_string(outbox_));
            outbox_ = e.seq;
            const int t = task_index(e.task_id);
            KUGETSU_FUZZ_CHECK(t >= 0 && by_task[static_cast<std::size_t>(t)],
                               w.where() + ": an event names an unknown task " + e.task_id);
            on_event(t, e);
        }

        // Tasks: never lost; final is final and has its one end event; completed means exit 0.
        for (int t = 0; t < task_count; ++t) {
            const auto ut = static_cast<std::size_t>(t);
            const auto* it = by_task[ut];
            const std::string name(task_names[t]);
            if (!it) {
                KUGETSU_FUZZ_CHECK(!seen_[ut], w.where() + ": task " + name + " was lost");
                continue;
            }
            seen_[ut] = true;
            KUGETSU_FUZZ_CHECK(is_final(it->state) == (grammar_[ut] == g_ended),
                               w.where() + ": task " + name + " is " + std::string(to_string(it->state)) +
                                   (grammar_[ut] == g_ended ? " with" : " without") + " its end event");
            if (final_[ut]) {
                KUGETSU_FUZZ_CHECK(*final_[ut] == it->state, w.where() + ": task " + name + " left its final state " +
                                                                 std::string(to_string(*final_[ut])) + " for " +
                                                                 std::string(to_string(it->state)));
            } else if (is_final(it->state)) {
                final_[ut] = it->state;
                const bool completed = it->state == task_state::completed;
                KUGETSU_FUZZ_CHECK(completed == (end_type_[ut] == event_type::task_completed),
                                   w.where() + ": task " + name + " is " + std::string(to_string(it->state)) +
                                       " but its end event is " + std::string(to_string(end_type_[ut])));
                KUGETSU_FUZZ_CHECK(!completed || exited_0_[ut],
                                   w.where() + ": task " + name + " is completed but no agent of it exited 0");
                // Its agent's end time, when the spawner knew it, is the task's finished_at.
                if (it->process && it->exit_code && it->process.pid >= first_agent_pid &&
                    it->process.pid < first_agent_pid + static_cast<int>(w.agents.size())) {
                    const auto& a = w.agent_of(it->process.pid);
                    if (a.task == t && a.ended_at && a.exit_code == *it->exit_code)
                        KUGETSU_FUZZ_CHECK(it->finished_at == a.ended_at,
                                           w.where() + ": task " + name + " finished_at is not its agent's end time");
                }
            }
            // A PM is started, never queued: nothing would ever take a pending one.
            KUGETSU_FUZZ_CHECK(it->role != role::pm || it->state != task_state::pending,
                               w.where() + ": PM task " + name + " is pending");
        }
    }

    /// task_queued? task_dequeued* task_started? end, with task_queued first for a task
    /// enqueue() made, and task_started naming an agent of the task that ran.
    void on_event(int t, const event& e) {
        const auto ut = static_cast<std::size_t>(t);
        auto& g = grammar_[ut];
        auto what = [&] { return "event " + std::to_string(e.seq) + " " + std::string(to_string(e.type)) + " of " + e.task_id; };
        KUGETSU_FUZZ_CHECK(g != g_none || !by_enqueue_[ut] || e.type == event_type::task_queued,
                           w_.where() + ": " + what() + " comes before its task_queued");
        switch (e.type) {
        case event_type::task_queued:
            KUGETSU_FUZZ_CHECK(g == g_none, w_.where() + ": " + what() + " is not its first");
            g = g_queued;
            break;
        case event_type::task_dequeued:
            KUGETSU_FUZZ_CHECK(g <= g_dequeued, w_.where() + ": " + what() + " after it started or ended");
            g = g_dequeued;
            break;
        case event_type::task_started: {
            KUGETSU_FUZZ_CHECK(g <= g_dequeued, w_.where() + ": " + what() + ": a second start, or after its end");
            const bool ran = e.pid && *e.pid >= first_agent_pid &&
                             *e.pid < first_agent_pid + static_cast<int>(w_.agents.size()) &&
                             w_.agent_of(*e.pid).task == t && w_.agent_of(*e.pid).ran;
            KUGETSU_FUZZ_CHECK(ran, w_.where() + ": " + what() + " names pid " + std::to_string(e.pid.value_or(0)) +
                                        ", no agent of it that ran");
            g = g_started;
            break;
        }
        case event_type::task_completed:
        case event_type::task_error:
            KUGETSU_FUZZ_CHECK(g != g_ended, w_.where() + ": " + what() + ": a second end");
            g = g_ended;
            end_type_[ut] = e.type;
            break;
        case event_type::task_removed:
            KUGETSU_FUZZ_CHECK(false, w_.where() + ": " + what() + ": task_removed, and nothing removes a task");
            break;
        }
    }

    /// Faults off; held agents of dead processes end; agents exit; every live process reaps
    /// and runs the queue until nothing changes. Then everything is final and told. The drain
    /// keeps the processes as they are, as a long-running daemon does: a claim (a task left
    /// `notified`) that a process gave up after a store failure must be recovered without
    /// waiting for it to exit (with KUGETSU_FUZZ_LENIENT, the drain after a start_item() that
    /// failed on the store starts as a new process, as it had to before the fix).
    void drain() {
        w_.op = "drain";
        w_.countdown = w_.commit_countdown = w_.release_crash = w_.keep_fault = -1;
        w_.workspace_fails = 0;
        w_.spawner.fail_next_spawns(0);
        w_.spawner.fail_next_releases(0);
        std::error_code ec;
        if (start_item_failed_ && !strict()) kill(cur_);
        const int rounds = 4 * task_count + 8;
        for (int round = 0; round < rounds; ++round) {
            w_.dev_started = 0;
            // Every agent ends (held ones of dead processes without running), then the live
            // processes reap and run the queue; until nothing runs and everything is final.
            for (std::size_t i = 0; i < w_.agents.size(); ++i) {
                auto& a = w_.agents[i];
                const int pid = first_agent_pid + static_cast<int>(i);
                if (a.orphan && a.held) {
                    w_.spawner.never_ran(pid);
                    a.held = false;
                    a.ended = true;
                } else if (a.ran && !a.ended) {
                    end_agent(pid, 0, (i & 1) ? std::optional(w_.clock.now()) : std::nullopt);
                }
            }
            w_.clock.advance(3s);
            for (int s = 0; s < 2; ++s) {
                if (!d_[s]) continue;
                d_[s]->reap(ec);
                KUGETSU_FUZZ_CHECK(!ec, "drain: reap failed without faults: " + d_[s]->last_error_detail());
            }
            reaped_ = true;
            check();
            d().process_queue(ec);
            KUGETSU_FUZZ_CHECK(!ec, "drain: process_queue failed without faults: " + d().last_error_detail());
            limits_in_use();
            check();
            ++w_.step;
            const bool live = std::any_of(w_.agents.begin(), w_.agents.end(), [](const agent& a) { return a.ran && !a.ended; });
            if (!live && all_final()) break;
        }
        for (const auto& it : w_.store.list_items(ec))
            KUGETSU_FUZZ_CHECK(is_final(it.state), "drain: task " + it.id + " is still " +
                                                       std::string(to_string(it.state)) + " (attempts " +
                                                       std::to_string(it.attempts) + "/" +
                                                       std::to_string(it.max_attempts) + ", owner pid " +
                                                       std::to_string(it.owner.pid) + ")");
        KUGETSU_FUZZ_CHECK(w_.store.list_sessions(ec).empty(), "drain: sessions left");
        // Every event told: the durable notifier kept them all; the plain stream too, unless a
        // fault or a crash cut a delivery short.
        KUGETSU_FUZZ_CHECK(w_.kept == outbox_, "drain: the notifier kept " + std::to_string(w_.kept) + " of " +
                                                   std::to_string(outbox_) + " events");
        KUGETSU_FUZZ_CHECK(w_.faults + w_.crashes > 0 || w_.notified == outbox_,
                           "drain: notify() was given " + std::to_string(w_.notified) + " of " +
                               std::to_string(outbox_) + " events, without a fault");
        KUGETSU_FUZZ_CHECK(w_.keep_faults > 0 || w_.lost.empty(), "drain: events lost without a fault");
    }

    /// Every task final, as the last check read the store.
    bool all_final() const {
        return std::all_of(items_.begin(), items_.end(), [](const auto& it) { return !it || is_final(it->state); });
    }

    world w_;
    dispatcher_options opt_;
    std::optional<fuzz_dispatcher> d_[2];
    process_ref self_[2];
    int cur_ = 0;
    std::array<bool, task_count> seen_{}, by_enqueue_{}, exited_0_{};
    std::array<std::optional<task_state>, task_count> final_{};
    std::array<grammar, task_count> grammar_{};
    std::array<event_type, task_count> end_type_{};
    std::uint64_t outbox_ = 0;   ///< events of the outbox checked
    std::array<std::optional<queue_item>, task_count> items_;
    std::vector<session> sessions_;
    std::optional<limits> lim_;
    bool reaped_ = false;        ///< the operation just checked was a successful reap()
    bool start_item_failed_ = false;
};

} // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
    input in{data, size};
    harness h(in);
    h.run(in);
    return 0;
}
