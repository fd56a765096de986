// kugetsu-micro-bench: micro-benchmarks of the pieces a dispatcher's time goes to (issues 6
// and 12). Benchmarks, not tests: nothing here asserts a figure.
//
//   BM_lock_acquire_release/<model>       lock(ec) + unlock() of an uncontended lock
//   BM_atomic_write/<disk|tmpfs>/durable:<0|1>
//                                         detail::atomic_write_at of a ~0.5 KiB record: what
//                                         kugetsu 0.1's file store paid per record (reference)
//   BM_commit/<disk|tmpfs>/rows:K/durable:<0|1>
//                                         one sqlite_store unit of work: BEGIN IMMEDIATE, K task
//                                         rows and K events, COMMIT (+ one fdatasync if durable)
//   BM_store_open/<disk|tmpfs>            open_home_store() of an existing HOME and close: what
//                                         every `kugetsu` process pays before its first query
//   BM_start_critical_section/...         basic_dispatcher::start() over sqlite_store with a
//                                         spawner that starts nothing (no process cost)
//   BM_process_queue_pass_*/pending:N     one process_queue() pass with N pending tasks
//   BM_daemon_wake_no_slot/pending:N      what `kugetsu daemon` does per wake-up while the cap
//                                         is full: process_queue() + next_wake()
//   BM_enqueue/<store>                    basic_dispatcher::enqueue()
//
// Flags (besides Google Benchmark's own, e.g. --benchmark_filter=pass --benchmark_min_time=0.01):
//   --dir=PATH        the directory on the normal disk for file benchmarks (default: the build
//                     tree's bench/ directory, i.e. the disk the build lives on)
//   --tmpfs_dir=PATH  the tmpfs directory (default /dev/shm); "" skips the tmpfs variants
//   --sizes=10,1000,100000   the pending-queue sizes of the pass benchmarks
// Each file benchmark's label names the filesystem type it ran on (ext4, tmpfs, ...): the
// cost of a durable commit depends entirely on it.
//
// Fixtures (N pending tasks for the pass benchmarks) are written once per size into a HOME
// under --dir (units of 5,000 tasks), reused by every benchmark of that size, and removed at
// exit. 100,000 tasks take a few seconds to write.
#include <benchmark/benchmark.h>

#include <kugetsu/home.hpp>
#include <kugetsu/kugetsu.hpp>
#if KUGETSU_BENCH_BOOST
#include <kugetsu/lock/boost_file_lock.hpp>
#include <kugetsu/lock/boost_named_mutex_lock.hpp>
#endif

#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <iostream>
#include <map>
#include <memory>
#include <set>
#include <stdexcept>
#include <string>
#include <vector>

#include <fcntl.h>
#include <sys/stat.h>
#include <sys/statfs.h>
#include <unistd.h>

#ifndef KUGETSU_BENCH_DEFAULT_DIR
#define KUGETSU_BENCH_DEFAULT_DIR "/var/tmp"
#endif

namespace fs = std::filesystem;
using namespace kugetsu;

namespace {

// ---- settings and helpers ----------------------------------------------------------------

struct settings {
    std::string dir = KUGETSU_BENCH_DEFAULT_DIR;
    std::string tmpfs_dir = "/dev/shm";
    std::vector<long> sizes = {10, 1000, 100000};
};
settings cfg;

std::string scratch_root;   // mkdtemp under cfg.dir: fixtures and per-benchmark homes
std::string tmpfs_root;     // mkdtemp under cfg.tmpfs_dir

[[noreturn]] void die(const std::string& what) {
    std::cerr << "kugetsu-micro-bench: " << what << "\n";
    std::exit(1);
}

void check(const std::error_code& ec, const std::string& what) {
    if (ec) die(what + ": " + ec.message());
}

std::string make_temp_dir(const std::string& parent) {
    std::string t = parent + "/kugetsu-micro.XXXXXX";
    if (!::mkdtemp(t.data())) die("mkdtemp under " + parent + ": " + std::strerror(errno));
    return t;
}

/// A fresh, private (0700) directory under `root` for one benchmark.
std::string fresh_home(const std::string& root, const std::string& name) {
    static int n = 0;
    const std::string p = root + "/" + name + "." + std::to_string(++n);
    if (::mkdir(p.c_str(), 0700) != 0) die("mkdir " + p + ": " + std::strerror(errno));
    return p;
}

/// The filesystem type of a path, for the label: durable writes cost what the disk makes them.
std::string fs_type(const std::string& path) {
    struct statfs s{};
    if (::statfs(path.c_str(), &s) != 0) return "?";
    switch (static_cast<unsigned long>(s.f_type)) {
    case 0x01021994UL: return "tmpfs";
    case 0xEF53UL: return "ext4";
    case 0x58465342UL: return "xfs";
    case 0x9123683EUL: return "btrfs";
    case 0x794c7630UL: return "overlayfs";
    case 0x2FC12FC1UL: return "zfs";
    default: {
        char b[32];
        std::snprintf(b, sizeof b, "fs 0x%lx", static_cast<unsigned long>(s.f_type));
        return b;
    }
    }
}

timestamp base_time() {
    static const timestamp t = system_clock{}.now() - std::chrono::hours(1);
    return t;
}

/// A realistic pending record: what `kugetsu enqueue --id ID -- /bin/true` writes.
queue_item pending_item(const std::string& id, long order) {
    queue_item it;
    it.id = id;
    it.argv = {"/bin/true"};
    it.workdir = "/tmp";
    it.enqueued_at = it.updated_at = base_time() + std::chrono::microseconds(order);
    return it;
}

std::string pending_id(long i) {
    char b[32];
    std::snprintf(b, sizeof b, "p%07ld", i);
    return b;
}

// ---- a spawner that starts nothing ----------------------------------------------------------

/// spawn() makes up a pid; the "agent" counts as running until end(pid). poll() of an ended
/// pid says exited 0. No process, no pipe, no /proc: the dispatcher's own cost only.
class noop_spawner {
public:
    process_ref spawn(const spawn_request&, std::error_code& ec) {
        ec.clear();
        const int pid = next_pid_++;
        live_.insert(pid);
        return ref(pid);
    }
    void release(const process_ref&, std::error_code& ec) { ec.clear(); }
    void abandon(const process_ref& p) noexcept { live_.erase(p.pid); }
    process_status poll(const process_ref& p, std::error_code& ec) {
        ec.clear();
        if (p == self_ || live_.count(p.pid)) return {process_state::running, -1, false};
        return {process_state::exited, 0, false};
    }
    void signal(const process_ref&, stop_signal, std::error_code& ec) { ec.clear(); }
    process_ref self() { return self_; }

    static process_ref ref(int pid) { return {pid, static_cast<std::uint64_t>(pid) * 10, "bench-boot"}; }
    void add_live(int pid) { live_.insert(pid); }
    void end(int pid) { live_.erase(pid); }

private:
    std::set<int> live_;
    int next_pid_ = 100000;
    process_ref self_{1, 1, "bench-boot"};
};
static_assert(kugetsu::spawner<noop_spawner>);

template <class Lock, class Store, class Notifier = null_notifier>
using bench_dispatcher = basic_dispatcher<Lock, noop_spawner, Notifier, Store, system_clock, null_workspace>;

using sql_dispatcher = bench_dispatcher<flock_lock, sqlite_store>;
using relay_dispatcher = bench_dispatcher<flock_lock, sqlite_store, jsonl_notifier>;
using memory_dispatcher = bench_dispatcher<null_lock, memory_store>;

/// The store of a HOME, as every `kugetsu` process opens it (created if missing).
sqlite_store open_store(const std::string& home) {
    std::error_code ec;
    std::string why;
    sqlite_store st = open_home_store(home, ec, why);
    if (ec) die("open_home_store " + home + ": " + why);
    return st;
}

/// A dispatcher over HOME/state.db and HOME/lock, as the CLI's (no processes, no events file
/// unless Notifier is jsonl_notifier: HOME/events.jsonl, relayed after every unit).
template <class Notifier = null_notifier>
bench_dispatcher<flock_lock, sqlite_store, Notifier> open_sql_dispatcher(const std::string& home, int cap = 3) {
    const home_layout h{home};
    Notifier n = [&] {
        if constexpr (std::is_same_v<Notifier, jsonl_notifier>) return jsonl_notifier(h.events());
        else return Notifier{};
    }();
    return bench_dispatcher<flock_lock, sqlite_store, Notifier>(flock_lock(h.lock()), noop_spawner{}, std::move(n),
                                                                open_store(home), system_clock{}, null_workspace{},
                                                                {.cap = cap});
}

/// Runs f inside one unit of work of `st`, committed without a sync (set-up, not timed).
template <class Store, class F>
void in_unit(Store& st, F&& f) {
    std::error_code ec;
    st.begin(ec);
    check(ec, "begin");
    f(ec);
    check(ec, "set-up write");
    st.commit(durability::visible, ec);
    check(ec, "commit");
}

// ---- BM_lock_acquire_release ---------------------------------------------------------------

template <class Lock>
void lock_loop(benchmark::State& state, Lock& l) {
    std::error_code ec;
    l.lock(ec);   // first use opens or creates the file or semaphore: not measured
    check(ec, "lock");
    l.unlock();
    for (auto _ : state) {
        l.lock(ec);
        benchmark::ClobberMemory();
        l.unlock();
    }
    check(ec, "lock");
}

void BM_lock_flock(benchmark::State& state) {
    flock_lock l(scratch_root + "/flock.lock");
    lock_loop(state, l);
    state.SetLabel(fs_type(scratch_root));
}
void BM_lock_null(benchmark::State& state) {
    null_lock l;
    lock_loop(state, l);
}
#if KUGETSU_BENCH_BOOST
void BM_lock_boost_file(benchmark::State& state) {
    boost_file_lock l(scratch_root + "/boost.lock");
    lock_loop(state, l);
    state.SetLabel(fs_type(scratch_root));
}
void BM_lock_boost_named_mutex(benchmark::State& state) {
    const std::string name = "kugetsu-micro-bench-" + std::to_string(::getpid());
    {
        boost_named_mutex_lock l(name);
        lock_loop(state, l);
    }
    std::error_code ec;
    boost_named_mutex_lock::remove(name, ec);
}
#endif

// ---- BM_atomic_write -----------------------------------------------------------------------

/// The record a running task has: the biggest a pass writes.
std::string sample_record() {
    queue_item it = pending_item("t-20261127T213457-aa5cd953", 0);
    it.state = task_state::running;
    it.attempts = 1;
    it.process = noop_spawner::ref(4242);
    it.started_at = it.updated_at;
    return nlohmann::json(it).dump(2, ' ', false, nlohmann::json::error_handler_t::replace);
}

void BM_atomic_write(benchmark::State& state, const std::string* root, bool durable) {
    const std::string dir = fresh_home(*root, "atomic");
    std::error_code ec;
    auto fd = detail::open_path(dir, O_RDONLY | O_DIRECTORY, 0, ec);
    check(ec, "open " + dir);
    const std::string text = sample_record();
    for (auto _ : state) {
        ec = detail::atomic_write_at(fd.get(), "record.json", text, durable);
        if (ec) break;
    }
    check(ec, "atomic_write_at in " + dir);
    state.SetLabel(fs_type(dir) + ", " + std::to_string(text.size()) + " B");
    state.SetBytesProcessed(static_cast<int64_t>(state.iterations() * text.size()));
}

// ---- BM_commit: one unit of work of sqlite_store -------------------------------------------
//
// BEGIN IMMEDIATE, K task rows rewritten (the JSON records a pass writes) and K events
// appended, COMMIT; durable:1 adds the one fdatasync of the WAL (what a daemon pass that
// starts agents pays once), durable:0 is a `visible` commit (the second commit of such a
// pass, which marks them running).
void BM_commit(benchmark::State& state, const std::string* root) {
    const long rows = state.range(0);
    const bool durable = state.range(1) != 0;
    const std::string home = fresh_home(*root, "commit");
    sqlite_store st = open_store(home);
    std::vector<queue_item> items;
    for (long i = 0; i < rows; ++i) {
        queue_item it = pending_item("t-20261206T040000-" + std::to_string(1000 + i), i);
        it.state = task_state::running;
        it.attempts = 1;
        it.process = noop_spawner::ref(static_cast<int>(4242 + i));
        it.started_at = it.updated_at;
        items.push_back(std::move(it));
    }
    std::error_code ec;
    for (auto _ : state) {
        st.begin(ec);
        for (const auto& it : items) {
            st.put_item(it, ec);
            event e;
            e.type = event_type::task_started;
            e.task_id = it.id;
            e.time = it.updated_at;
            e.attempt = 1;
            e.pid = it.process.pid;
            st.append_event(e, ec);
        }
        st.commit(durable ? durability::durable : durability::visible, ec);
        if (ec) break;
    }
    if (ec) die("commit: " + st.last_error_detail());
    state.SetLabel(fs_type(home));
}

// ---- BM_store_open: what every process pays to open HOME -----------------------------------

void BM_store_open(benchmark::State& state, const std::string* root) {
    const std::string home = fresh_home(*root, "open");
    { open_sql_dispatcher(home).limits(); }   // create, migrate, write the limits: not timed
    for (auto _ : state) {
        sqlite_store st = open_store(home);
        std::error_code ec;
        benchmark::DoNotOptimize(st.get_limits(ec));
        check(ec, "get_limits");
    }
    state.SetLabel(fs_type(home));
}

// ---- BM_start_critical_section -------------------------------------------------------------
//
// One start() of a new task with a free slot, over sqlite_store, flock_lock and the no-op
// spawner: lock; BEGIN; limits; reap (sessions, their tasks, claims); create the task
// (claimed, its attempt counted) and its session; COMMIT + fdatasync; "release"; BEGIN; mark
// it running, task_started; COMMIT (visible); unlock. Between iterations (not timed) the
// agent "ends": its session is removed and its task completed, so every start sees no live
// agent. `history` completed tasks are in the store beforehand.
//   cold:0  one dispatcher (one connection, statements prepared once) for all iterations
//   cold:1  open_home_store() and a new dispatcher per iteration: what every `kugetsu start`
//           process pays, minus exec, the dynamic loader and the spawn
void BM_start_critical_section(benchmark::State& state, const std::string* root) {
    const long history = state.range(0);
    const bool cold = state.range(1) != 0;
    const std::string home = fresh_home(*root, "start");
    {
        auto d = open_sql_dispatcher(home);
        in_unit(d.store(), [&](std::error_code& ec) {
            for (long i = 0; i < history && !ec; ++i) {
                queue_item it = pending_item("h" + std::to_string(i), i);
                it.state = task_state::completed;
                it.attempts = 1;
                it.exit_code = 0;
                it.process = noop_spawner::ref(static_cast<int>(10 + i));
                it.started_at = it.finished_at = it.updated_at;
                d.store().create_item(it, ec);
            }
        });
        d.limits();   // writes the limits
    }
    std::unique_ptr<sql_dispatcher> d;
    if (!cold) d = std::make_unique<sql_dispatcher>(open_sql_dispatcher(home));
    long n = 0;
    for (auto _ : state) {
        if (cold) d = std::make_unique<sql_dispatcher>(open_sql_dispatcher(home));
        task_spec spec{"s" + std::to_string(n++), {"/bin/true"}, role::dev, {}, {}, {}, "/tmp"};
        std::error_code ec;
        const auto r = d->start(spec, ec);
        state.PauseTiming();
        if (ec || r.status != start_status::started) die("start: " + (ec ? d->last_error_detail() : std::string("no slot")));
        d->spawner().end(r.item.process.pid);
        in_unit(d->store(), [&](std::error_code& uec) {
            d->store().remove_session(spec.id, uec);
            queue_item it = r.item;
            it.state = task_state::completed;
            it.exit_code = 0;
            it.finished_at = it.updated_at;
            if (!uec) d->store().put_item(it, uec);
        });
        if (cold) d.reset();
        state.ResumeTiming();
    }
    state.SetLabel(fs_type(home));
}

// ---- the process_queue() pass --------------------------------------------------------------
//
// What a "pass" is: one call of process_queue(), the unit of work of `kugetsu daemon` (which
// then calls next_wake() and sleeps). Its cost has a part that depends on the queue and a
// part that depends on what it does, so two cases are measured at each queue size N:
//
//   no_slot     the cap (3) is full: 3 agents live, N tasks pending. The pass takes the
//               lock, begins a unit, reads the limits, reaps (lists the 3 sessions, polls
//               them, reads their tasks, lists the claimed tasks), counts, finds no free
//               slot, commits a unit that wrote nothing, unlocks. Every iteration sees the
//               same state. This is what a daemon pays on every wake-up that changes nothing
//               (a task enqueued while the cap is full): the queue-size-dependent part.
//   start_one   2 agents live, N pending: the pass that follows an agent's end. As above,
//               then takes the oldest pending task (an index seek), claims it (task row +
//               task_dequeued), "spawns" it, writes its session, commits durably (one
//               fdatasync), "releases" it, marks it running (task row + task_started) and
//               commits again (visible). Between iterations (not timed) the task is put back
//               to pending and its session removed, so the same task is started each time.
//               relay:1 also relays the events to HOME/events.jsonl (jsonl_notifier), as the
//               daemon does after every pass.
//
// The dispatcher lives across iterations, as in a daemon (one connection, prepared
// statements). `cold` instead opens the store and builds a dispatcher per iteration, i.e. the
// first pass of a fresh process (`kugetsu daemon --once`, and the reap inside every `kugetsu
// start`). The _memory variants run the same passes over memory_store and null_lock: the
// dispatcher's own algorithm, without SQLite.

/// N pending tasks (p0000000...) and three running background tasks (bg0..bg2) in a HOME
/// under `root`, written once per (root, N) and shared by the benchmarks of that size.
struct pass_fixture {
    std::string home;
    queue_item first;   // the oldest pending task, as written
};

const pass_fixture& fixture(const std::string& root, long n) {
    static std::map<std::pair<std::string, long>, pass_fixture> all;
    if (auto i = all.find({root, n}); i != all.end()) return i->second;
    pass_fixture f;
    f.home = root + "/pending-" + std::to_string(n);
    const auto t0 = std::chrono::steady_clock::now();
    if (::mkdir(f.home.c_str(), 0700) != 0) die("mkdir " + f.home + ": " + std::strerror(errno));
    auto d = open_sql_dispatcher(f.home);
    d.limits();   // cap 3 into the store
    auto& st = d.store();
    for (long i = 0; i < n;) {
        in_unit(st, [&](std::error_code& ec) {
            for (long end = std::min(n, i + 5000); i < end && !ec; ++i) st.create_item(pending_item(pending_id(i), 1000 + i), ec);
        });
    }
    in_unit(st, [&](std::error_code& ec) {
        for (int k = 0; k < 3 && !ec; ++k) {
            queue_item it = pending_item("bg" + std::to_string(k), k);
            it.state = task_state::running;
            it.attempts = 1;
            it.process = noop_spawner::ref(10 + k);
            it.started_at = it.updated_at;
            st.create_item(it, ec);
        }
    });
    f.first = pending_item(pending_id(0), 1000);
    const double s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    std::fprintf(stderr, "[fixture: %ld pending tasks in %s, written in %.1f s]\n", n, f.home.c_str(), s);
    return all.emplace(std::make_pair(root, n), std::move(f)).first->second;
}

/// Makes exactly bg0..bg(k-1) live sessions (and their spawner's agents) in the fixture,
/// removes any other session, and puts the first pending task back to pending.
template <class D>
void set_background(D& d, int k, const queue_item* first = nullptr) {
    auto& st = d.store();
    in_unit(st, [&](std::error_code& ec) {
        for (const auto& s : st.list_sessions(ec)) {
            if (ec) return;
            st.remove_session(s.id, ec);
        }
        for (int i = 0; i < 3 && !ec; ++i) {
            const std::string id = "bg" + std::to_string(i);
            queue_item it = pending_item(id, i);
            it.attempts = 1;
            it.process = noop_spawner::ref(10 + i);
            it.started_at = it.updated_at;
            it.state = i < k ? task_state::running : task_state::completed;
            st.put_item(it, ec);
            if (ec) return;
            if (i < k) {
                st.put_session({id, role::dev, id, it.process, "", it.updated_at}, ec);
                d.spawner().add_live(10 + i);
            } else {
                d.spawner().end(10 + i);
            }
        }
        if (first && !ec) st.put_item(*first, ec);
    });
}

template <class D>
void run_pass(D& d, benchmark::State& state, int expect_started) {
    std::error_code ec;
    const auto r = d.process_queue(ec);
    if (ec) die("process_queue: " + d.last_error_detail());
    if (r.started != expect_started) state.SkipWithError("the pass did not do what it should (see the fixture)");
}

/// The warm no_slot pass; `wake` adds next_wake(), i.e. one whole daemon wake-up.
void BM_pass_no_slot(benchmark::State& state, bool wake) {
    const auto& f = fixture(scratch_root, state.range(0));
    auto d = open_sql_dispatcher(f.home);
    set_background(d, 3);
    run_pass(d, state, 0);   // warm-up: prepares the statements
    std::error_code ec;
    for (auto _ : state) {
        d.process_queue(ec);
        if (wake) benchmark::DoNotOptimize(d.next_wake(ec));
    }
    check(ec, "pass");
    run_pass(d, state, 0);
    state.SetLabel(fs_type(f.home));
}

void BM_process_queue_pass_no_slot(benchmark::State& state) { BM_pass_no_slot(state, false); }
void BM_daemon_wake_no_slot(benchmark::State& state) { BM_pass_no_slot(state, true); }

void BM_process_queue_pass_no_slot_cold(benchmark::State& state) {
    const auto& f = fixture(scratch_root, state.range(0));
    {
        auto d = open_sql_dispatcher(f.home);
        set_background(d, 3);
    }
    for (auto _ : state) {
        auto d = open_sql_dispatcher(f.home);
        for (int k = 0; k < 3; ++k) d.spawner().add_live(10 + k);
        run_pass(d, state, 0);
        state.PauseTiming();   // closing the connection is not the pass
        { auto gone = std::move(d); }
        state.ResumeTiming();
    }
    state.SetLabel(fs_type(f.home));
}

template <class Notifier>
void start_one_loop(benchmark::State& state, const std::string& root) {
    const auto& f = fixture(root, state.range(0));
    auto d = open_sql_dispatcher<Notifier>(f.home);
    set_background(d, 2, &f.first);
    std::error_code ec;
    d.reap(ec);   // warm-up: prepares the statements (and catches the events file up)
    check(ec, "reap");
    for (auto _ : state) {
        const auto r = d.process_queue(ec);
        state.PauseTiming();
        if (ec || r.started != 1) die("start_one pass: " + (ec ? d.last_error_detail() : std::string("started ") + std::to_string(r.started)));
        // Put the task back: agent ended, session gone, task pending as written.
        in_unit(d.store(), [&](std::error_code& uec) {
            auto it = d.store().get_item(f.first.id, uec);
            if (it) d.spawner().end(it->process.pid);
            d.store().remove_session(f.first.id, uec);
            d.store().put_item(f.first, uec);
        });
        state.ResumeTiming();
    }
    set_background(d, 3);
    state.SetLabel(fs_type(f.home));
}

void BM_process_queue_pass_start_one(benchmark::State& state, const std::string* root) {
    if (state.range(1) != 0) start_one_loop<jsonl_notifier>(state, *root);
    else start_one_loop<null_notifier>(state, *root);
}

/// The same passes over memory_store: the dispatcher's algorithm alone.
struct memory_fixture {
    memory_store st;
    queue_item first;
};
memory_fixture& mem_fixture(long n) {
    static std::map<long, memory_fixture> all;
    if (auto i = all.find(n); i != all.end()) return i->second;
    memory_fixture f;
    std::error_code ec;
    for (long i = 0; i < n; ++i) f.st.create_item(pending_item(pending_id(i), 1000 + i), ec);
    f.first = pending_item(pending_id(0), 1000);
    return all.emplace(n, std::move(f)).first->second;
}

void BM_process_queue_pass_memory(benchmark::State& state) {
    auto& f = mem_fixture(state.range(0));
    const bool start_one = state.range(1) != 0;
    memory_dispatcher d(null_lock{}, noop_spawner{}, null_notifier{}, f.st, system_clock{}, null_workspace{}, {.cap = 3});
    set_background(d, start_one ? 2 : 3);
    std::error_code ec;
    for (auto _ : state) {
        const auto r = d.process_queue(ec);
        if (start_one) {
            state.PauseTiming();
            if (ec || r.started != 1) die("memory start_one pass");
            auto it = d.store().get_item(f.first.id, ec);
            d.spawner().end(it->process.pid);
            d.store().remove_session(f.first.id, ec);
            d.store().put_item(f.first, ec);
            state.ResumeTiming();
        }
    }
    check(ec, "memory pass");
}

// ---- BM_enqueue ----------------------------------------------------------------------------
//
// enqueue() of a new task: validate, BEGIN, the limits, insert the task row and the
// task_queued event, COMMIT + fdatasync (null_notifier here; the CLI then relays the event
// to events.jsonl). The queue grows with the iterations, as it does for users.

template <class D>
void enqueue_loop(benchmark::State& state, D& d) {
    long n = 0;
    std::error_code ec;
    for (auto _ : state) {
        task_spec spec{"e" + std::to_string(n++), {"/bin/true"}, role::dev, {}, {}, {}, "/tmp"};
        d.enqueue(spec, ec);
        if (ec) break;
    }
    if (ec) die("enqueue: " + d.last_error_detail());
}

void BM_enqueue_sqlite(benchmark::State& state, const std::string* root) {
    const std::string home = fresh_home(*root, "enqueue");
    auto d = open_sql_dispatcher(home);
    enqueue_loop(state, d);
    state.SetLabel(fs_type(home));
}

void BM_enqueue_memory(benchmark::State& state) {
    memory_dispatcher d(null_lock{}, noop_spawner{}, null_notifier{}, memory_store{}, system_clock{}, null_workspace{});
    enqueue_loop(state, d);
}

// ---- main ----------------------------------------------------------------------------------

std::vector<long> parse_sizes(const std::string& s) {
    std::vector<long> v;
    std::size_t i = 0;
    while (i < s.size()) {
        std::size_t j = s.find(',', i);
        if (j == std::string::npos) j = s.size();
        const long n = std::atol(s.substr(i, j - i).c_str());
        if (n < 1) die("--sizes: not a list of whole numbers >= 1: " + s);
        v.push_back(n);
        i = j + 1;
    }
    return v;
}

/// Every benchmark is timed, and its iterations chosen, on the wall clock: a durable commit
/// spends its time waiting for the disk, not on the CPU, and Google Benchmark would otherwise
/// run hundreds of 5 ms iterations to gather --benchmark_min_time of CPU time.
benchmark::internal::Benchmark* add(const std::string& name, auto&&... args) {
    return benchmark::RegisterBenchmark(name.c_str(), args...)->UseRealTime();
}

void register_all() {
    add("BM_lock_acquire_release/flock_lock", BM_lock_flock);
#if KUGETSU_BENCH_BOOST
    add("BM_lock_acquire_release/boost_file_lock", BM_lock_boost_file);
    add("BM_lock_acquire_release/boost_named_mutex_lock", BM_lock_boost_named_mutex);
#endif
    add("BM_lock_acquire_release/null_lock", BM_lock_null);

    struct where {
        const char* name;
        const std::string* root;
    };
    std::vector<where> roots = {{"disk", &scratch_root}};
    if (!tmpfs_root.empty()) roots.push_back({"tmpfs", &tmpfs_root});
    for (const auto& w : roots)
        for (bool durable : {false, true})
            add(std::string("BM_atomic_write/") + w.name + "/durable:" + (durable ? "1" : "0"), BM_atomic_write, w.root,
                durable)
                ->Unit(benchmark::kMicrosecond);
    for (const auto& w : roots)
        add(std::string("BM_commit/") + w.name, BM_commit, w.root)
            ->ArgNames({"rows", "durable"})
            ->ArgsProduct({{1, 6}, {0, 1}})
            ->Unit(benchmark::kMicrosecond);
    for (const auto& w : roots) add(std::string("BM_store_open/") + w.name, BM_store_open, w.root)->Unit(benchmark::kMicrosecond);

    add("BM_start_critical_section/disk", BM_start_critical_section, &scratch_root)
        ->ArgNames({"history", "cold"})
        ->ArgsProduct({{0, 1000}, {0, 1}})
        ->Unit(benchmark::kMicrosecond);
    if (!tmpfs_root.empty())
        add("BM_start_critical_section/tmpfs", BM_start_critical_section, &tmpfs_root)
            ->ArgNames({"history", "cold"})
            ->ArgsProduct({{0}, {0, 1}})
            ->Unit(benchmark::kMicrosecond);

    auto sized = [](benchmark::internal::Benchmark* b) {
        for (long n : cfg.sizes) b->Arg(n);
        return b->ArgName("pending")->Unit(benchmark::kMicrosecond);
    };
    sized(add("BM_process_queue_pass_no_slot", BM_process_queue_pass_no_slot));
    sized(add("BM_daemon_wake_no_slot", BM_daemon_wake_no_slot));
    sized(add("BM_process_queue_pass_no_slot_cold", BM_process_queue_pass_no_slot_cold));
    {
        auto* b = add("BM_process_queue_pass_start_one", BM_process_queue_pass_start_one, &scratch_root);
        for (long n : cfg.sizes)
            for (long relay : {0, 1}) b->Args({n, relay});
        b->ArgNames({"pending", "relay"})->Unit(benchmark::kMicrosecond);
    }
    if (!tmpfs_root.empty()) {   // the smallest size only: what is not the disk
        auto* b = add("BM_process_queue_pass_start_one/tmpfs", BM_process_queue_pass_start_one, &tmpfs_root);
        for (long relay : {0, 1}) b->Args({cfg.sizes.front(), relay});
        b->ArgNames({"pending", "relay"})->Unit(benchmark::kMicrosecond);
    }
    {
        auto* b = add("BM_process_queue_pass_memory", BM_process_queue_pass_memory);
        for (long n : cfg.sizes)
            for (long one : {0, 1}) b->Args({n, one});
        b->ArgNames({"pending", "start_one"})->Unit(benchmark::kMicrosecond);
    }

    for (const auto& w : roots)
        add(std::string("BM_enqueue/sqlite_store/") + w.name, BM_enqueue_sqlite, w.root)->Unit(benchmark::kMicrosecond);
    add("BM_enqueue/memory_store", BM_enqueue_memory)->Unit(benchmark::kMicrosecond);
}

void remove_scratch() {
    std::error_code ec;
    if (!scratch_root.empty()) fs::remove_all(scratch_root, ec);
    if (!tmpfs_root.empty()) fs::remove_all(tmpfs_root, ec);
}

} // namespace

int main(int argc, char** argv) {
    benchmark::Initialize(&argc, argv);
    // Our own flags: what Google Benchmark left.
    int out = 1;
    for (int i = 1; i < argc; ++i) {
        const std::string a = argv[i];
        auto value = [&](const char* flag) -> const char* {
            const std::size_t n = std::strlen(flag);
            return a.compare(0, n, flag) == 0 ? argv[i] + n : nullptr;
        };
        if (const char* v = value("--dir=")) cfg.dir = v;
        else if (const char* v = value("--tmpfs_dir=")) cfg.tmpfs_dir = v;
        else if (const char* v = value("--sizes=")) cfg.sizes = parse_sizes(v);
        else argv[out++] = argv[i];
    }
    argc = out;
    if (benchmark::ReportUnrecognizedArguments(argc, argv)) return 64;

    scratch_root = make_temp_dir(cfg.dir);
    if (!cfg.tmpfs_dir.empty() && ::access(cfg.tmpfs_dir.c_str(), W_OK) == 0) tmpfs_root = make_temp_dir(cfg.tmpfs_dir);
    std::atexit(remove_scratch);
    benchmark::AddCustomContext("kugetsu.disk_dir", scratch_root + " (" + fs_type(scratch_root) + ")");
    if (!tmpfs_root.empty()) benchmark::AddCustomContext("kugetsu.tmpfs_dir", tmpfs_root + " (" + fs_type(tmpfs_root) + ")");

    register_all();
    benchmark::RunSpecifiedBenchmarks();
    benchmark::Shutdown();
    return 0;
}
